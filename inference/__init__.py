"""Inference: what the three inference scripts are made of, one idea a module.

- `cli`: one-line errors and exit statuses, SIGTERM like Ctrl-C, warnings, argument types.
- `matting`: `Matting`, uint8 frames in and the uint8 images to write out, the model on its device.
- `files`: sources paired with their clean plates by name; output folders checked before the work.
- `plates`: checking, aligning and making clean plates.
- `colour`: how video colours are described, and what outputs are tagged with.
- `readers`: images, frame folders, videos, cameras, replacement backgrounds; `decoding`: video
  decoded past damaged packets, as FFmpeg does, with a warning.
- `writers`: PNG files, frame folders, H.264 videos; `audio`: the source's audio tracks, copied or
  re-encoded.
- `demo`: the demo page of app.py (Gradio, its own requirements).
- `pipeline`: reading, computing and writing at the same time.

`inference_utils` re-exports all of it for code written against earlier versions.
"""


