"""Live matting of a webcam, a stream or a video file, with a clean plate taken on the spot.

The window first shows the camera: step out of view and press B to take the clean plate; matting
starts. B takes the plate again, Q (or Esc) quits. An FPS counter is overlaid (--hide-fps hides it).
--bgr FILE starts with a clean plate shot before (B still replaces it). A plate taken on the spot that
differs from the frames around it in a large region (someone was in view) is warned about. Without
--model-checkpoint, the bundled demonstration model is used.

Example:

    python inference_webcam.py \\
        --model-type mattingrefine \\
        --model-backbone resnet50 \\
        --model-checkpoint pytorch_resnet50.pth \\
        --source 0 \\
        --resolution 1280 720 \\
        --replacement-background beach.jpg \\
        --virtual-camera

Without a display (servers, tests), the plate is --bgr FILE or the median of the first frame(s), and
a line of progress (frames/s) is printed every few seconds:

    python inference_webcam.py --model-checkpoint model.pth --source clip.mp4 \\
        --headless --max-frames 100 --output out/webcam.mp4

A camera or stream drops frames the model has no time for; a video file is matted frame by frame.
--output writes the composite (H.264; the file appears once complete); --virtual-camera sends it to
a virtual camera for video calls (needs the optional `pyvirtualcam` package).
"""
import argparse
import os

from common.memory import retain_freed_memory
from inference.cli import exit_on_user_error
from inference.model import add_model_arguments, default_to_demo_checkpoint
from inference.webcam import run


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=os.path.basename(__file__),
                                     description='Live matting of a webcam (BGMv2).',
                                     epilog=__doc__.split('\n\n', 2)[2],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser, checkpoint_required=False)
    group = parser.add_argument_group('input')
    group.add_argument('--source', '--video-device-id', '--video_device_id', dest='source', default='0',
                       help='a camera index, a stream URL or a video file (default 0, the first camera)')
    group.add_argument('--resolution', type=int, nargs=2, metavar=('W', 'H'), help='resolution to ask the camera for')
    group.add_argument('--bgr', metavar='FILE',
                       help='the clean plate: an image of the scene without the subject, shot with the same camera '
                            '(resized to the frames when only the resolution differs); B replaces it')
    group.add_argument('--bgr-first-frames', type=int, metavar='N',
                       help='take the clean plate from the first N frames instead of the B key (default 1 with '
                            '--headless and no --bgr)')
    group = parser.add_argument_group('output')
    group.add_argument('--replacement-background', default='white', metavar='COLOUR|IMAGE|VIDEO',
                       help="behind the subject: a colour ('white', '#78ff9b', '120,255,155'), an image or a "
                            "video (looped); default white")
    group.add_argument('--output', metavar='FILE', help='also write the composite to this video file (.mp4)')
    group.add_argument('--overwrite', action='store_true', help='replace an existing --output file')
    group.add_argument('--virtual-camera', action='store_true',
                       help='also send the composite to a virtual camera (needs pyvirtualcam)')
    group.add_argument('--headless', action='store_true', help='no window: for servers and tests')
    group.add_argument('--max-frames', type=int, metavar='N', help='stop after matting N frames')
    group.add_argument('--hide-fps', action='store_true', help='no FPS counter in the window')
    return parser


def main(argv=None) -> None:
    parser = get_args_parser()
    args = parser.parse_args(argv)
    default_to_demo_checkpoint(args, parser)
    exit_on_user_error(parser.prog, lambda: run(args, parser))


if __name__ == '__main__':
    retain_freed_memory()  # the same large tensors every frame: no fresh pages for each
    main()
