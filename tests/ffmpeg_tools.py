"""FFmpeg's own command-line tools as the reference for the video tests: clips made with `ffmpeg`,
facts read with `ffprobe`, frames decoded with `ffmpeg -pix_fmt rgb24`.

Tests that use them carry `needs_ffmpeg`, which skips them, saying why, where the tools are absent
(CI installs them: `.ci/run`).
"""
import json
import shutil
import subprocess
from fractions import Fraction

import numpy as np
import pytest

needs_ffmpeg = pytest.mark.skipif(
    not (shutil.which('ffmpeg') and shutil.which('ffprobe')),
    reason="FFmpeg's ffmpeg and ffprobe are the reference here and are not installed (apt-get install ffmpeg)")


def ffmpeg(*args) -> None:
    """Runs ffmpeg quietly, overwriting its output; raises with ffmpeg's message if it fails."""
    result = subprocess.run(['ffmpeg', '-nostdin', '-v', 'error', '-y', *map(str, args)],
                            capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"ffmpeg {' '.join(map(str, args))} failed: {result.stderr}")


def make_clip(path, *encode, size='128x72', rate='25', frames=12, source='testsrc2', audio=None):
    """A test clip of `frames` frames of lavfi `source` (testsrc2: thin coloured lines and sharp colour
    edges), encoded with the ffmpeg output options `encode`; `audio`: lavfi audio sources, one track
    each (e.g. 'sine=sample_rate=48000:duration=0.5')."""
    duration = (frames - 0.5) / float(Fraction(rate))  # the source ends by itself: -frames:v would cut the audio
    inputs = ['-f', 'lavfi', '-i', f'{source}=size={size}:rate={rate}:duration={duration:.6f}']
    for spec in ([audio] if isinstance(audio, str) else audio or []):
        inputs += ['-f', 'lavfi', '-i', spec]
    maps = [arg for i in range(len(inputs) // 4) for arg in ('-map', str(i))]
    ffmpeg(*inputs, *maps, *encode, path)
    return path


def probe(path, entries='stream', select=None) -> dict:
    """ffprobe's JSON answer for `-show_entries entries` (e.g. 'stream', 'frame=pts_time')."""
    command = ['ffprobe', '-v', 'error', '-of', 'json', '-show_entries', entries]
    if select:
        command += ['-select_streams', select]
    return json.loads(subprocess.run([*command, str(path)], capture_output=True, text=True, check=True).stdout)


def video_stream(path) -> dict:
    return probe(path, select='v:0')['streams'][0]


def ffmpeg_rgb(path) -> np.ndarray:
    """(T, H, W, 3) uint8: every frame as `ffmpeg -f rawvideo -pix_fmt rgb24` gives it."""
    stream = video_stream(path)
    raw = subprocess.run(['ffmpeg', '-nostdin', '-v', 'error', '-i', str(path), '-f', 'rawvideo', '-pix_fmt', 'rgb24',
                          '-'], capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, stream['height'], stream['width'], 3)


def frame_times(path, select) -> list:
    """ffprobe's pts_time of every decoded frame of a stream ('v:0', 'a:0'), as printed."""
    return [frame['pts_time'] for frame in probe(path, 'frame=pts_time', select)['frames']]


def packet_times(path, select) -> list:
    return [(packet['pts_time'], packet.get('duration_time')) for packet in
            probe(path, 'packet=pts_time,duration_time', select)['packets']]
