"""The video readers and writers checked against FFmpeg's own tools (ffmpeg, ffprobe) on clips made
with the ffmpeg command line: decoding, colour description, timing, audio tracks."""
import numpy as np
import pytest

from ffmpeg_tools import ffmpeg_rgb, make_clip, needs_ffmpeg
from inference_utils import VideoReader

pytestmark = needs_ffmpeg

X265 = ['-c:v', 'libx265', '-x265-params', 'log-level=error']
BT709_TAGS = ['-colorspace', 'bt709', '-color_primaries', 'bt709', '-color_trc', 'bt709']

DECODE_CASES = {
    'h264 10-bit': ['-c:v', 'libx264', '-pix_fmt', 'yuv420p10le'],
    'hevc 10-bit, BT.709': [*X265, '-pix_fmt', 'yuv420p10le', *BT709_TAGS],
    'h264 10-bit, full range': ['-c:v', 'libx264', '-pix_fmt', 'yuv420p10le', '-color_range', 'pc'],
    'h264 10-bit 4:2:2': ['-c:v', 'libx264', '-pix_fmt', 'yuv422p10le'],
    'ffv1 8-bit, odd height': ['-vf', 'format=rgb24,crop=322:181:0:0', '-c:v', 'ffv1', '-pix_fmt', 'yuv420p'],
    'h264 8-bit, BT.709': ['-c:v', 'libx264', '-pix_fmt', 'yuv420p', *BT709_TAGS],
    'mjpeg full range': ['-c:v', 'mjpeg', '-q:v', '3'],
    'prores 4:2:2 10-bit': ['-c:v', 'prores_ks'],
    'ffv1 gray': ['-c:v', 'ffv1', '-pix_fmt', 'gray'],
}


@pytest.mark.parametrize('case', DECODE_CASES)
def test_every_format_decodes_as_ffmpeg_does(tmp_path, case):
    # testsrc2's one-pixel coloured lines on sharp colour edges are where chroma interpolation shows.
    size = '322x182' if 'odd' in case else '128x72'
    path = make_clip(tmp_path / ('clip.mov' if 'prores' in case else 'clip.mkv'), *DECODE_CASES[case],
                     size=size, frames=4)
    with VideoReader(str(path)) as reader:
        ours = np.stack([frame.image for frame in reader]).astype(int)
    theirs = ffmpeg_rgb(path)
    assert ours.shape == theirs.shape
    difference = np.abs(ours - theirs)
    worst, mean = int(difference.max()), float(difference.mean())
    assert worst <= 2, f"{case}: up to {worst} levels off FFmpeg's decode ({mean:.2f} on average)"
