"""The video readers and writers checked against FFmpeg's own tools (ffmpeg, ffprobe) on clips made
with the ffmpeg command line: decoding, colour description, timing, audio tracks, and files damaged as
the fuzz of issue 28 found them."""
import random
import re
import subprocess

import av
import numpy as np
import pytest

from broken_files import flip_bits, matroska_blocks
from ffmpeg_tools import ffmpeg_rgb, frame_times, make_clip, needs_ffmpeg
from inference_utils import InputError, VideoReader, VideoWriter
from test_inference_utils import NTSC, clip_frames, leftovers, write_video
from test_inference_video import matte

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


def damaged_matroska(data, kind):
    """A Matroska file (video track 1: H.264, 15 frames; audio track 2: FLAC) damaged as the fuzz of issue 28
    found files damaged, each the same way every time."""
    blocks = matroska_blocks(data)
    video = [block for block in blocks if block[0] == 1]
    audio = [block for block in blocks if block[0] == 2]
    if kind == 'unknown audio codec':
        return data.replace(b'A_FLAC', b'A_FLAQ')
    if kind == 'audio time jump':  # the third audio block timed 32.767 s after its cluster
        start = audio[2][1] + 1
        return data[:start] + b'\x7f\xff' + data[start + 2:]
    if kind == 'undecodable video packet':
        _, start, end = video[5]
        return data[:start + 4] + b'\xff' * (end - start - 4) + data[end:]
    if kind == 'damaged audio':
        return flip_bits(data, 10, random.Random(4), [(start + 4, end) for _, start, end in audio])
    if kind == 'damaged mid-stream':  # the ID and size of the 6th video block zeroed: the demuxer stops there
        start = video[5][1]
        return data[:start - 2] + b'\x00\x00' + data[start:]
    raise ValueError(kind)


@pytest.mark.parametrize('kind, frames, message', [
    ('unknown audio codec', 15, r'audio stream #1 \(unknown codec\): its codec is unknown .*left out of the outputs'),
    ('audio time jump', 15, r'audio stream #1 \(flac\) is damaged: 1 packet with impossible times; the first error '
                            r'at 0\.\d\d s \(a packet timed at 32\.77 s\); the packets with impossible times are '
                            r'left out of the outputs'),
    ('undecodable video packet', 14, r'14 frames decoded; video stream #0 \(h264\) is damaged: 1 of 15 packets did '
                                     r'not decode; the first error at 0\.20 s \(Invalid data found'),
    ('damaged audio', 15, r'audio stream #1 \(flac\) is damaged: \d of 7 packets did not decode; the first error at '
                          r'[\d.]+ s .*copied into the outputs as they are, damage and all'),
    ('damaged mid-stream', 5, r'its header gives a duration of 0\.60 s \(about 15 frames\) but only 5 frames could be '
                              r'decoded, up to 0\.20 s: is the file truncated or damaged\?'),
])
def test_a_damaged_matroska_file_is_matted_as_far_as_it_decodes_and_named_with_its_stream(
        tmp_path, checkpoint, capsys, kind, frames, message):
    # Issue 28: these gave a traceback (AttributeError in SourceAudio), an error naming the hidden temporary
    # output ('.pha.<hex>.partial.mp4 returned 22') or no file ('avcodec_send_packet()'), or exited 0 with
    # fewer frames or undecodable audio and no word.
    clip = make_clip(tmp_path / 'clip.mkv', '-c:v', 'libx264', '-c:a', 'flac', size='64x48', frames=15,
                     audio='sine=sample_rate=48000:duration=0.6')
    damaged = tmp_path / 'damaged.mkv'
    damaged.write_bytes(damaged_matroska(clip.read_bytes(), kind))
    capsys.readouterr()
    assert matte(damaged, tmp_path / 'out', checkpoint, '--eager') == 0
    err = capsys.readouterr().err
    assert 'Traceback' not in err and re.search(rf'warning: .*damaged\.mkv: {message}', err), err
    assert len(frame_times(tmp_path / 'out' / 'pha.mp4', 'v:0')) == frames
    assert not leftovers(tmp_path)
    decoded = subprocess.run(['ffmpeg', '-v', 'error', '-i', tmp_path / 'out' / 'pha.mp4', '-f', 'null', '-'],
                             capture_output=True, text=True)
    if kind != 'damaged audio':  # the damaged packets are copied, said so; nothing else fails to decode
        assert decoded.returncode == 0 and not decoded.stderr, decoded.stderr


class RefusingMuxer:
    """An output container whose muxer refuses every packet, as FFmpeg's does packets it cannot place."""

    def __init__(self, container, path):
        self.container, self.path = container, path

    def mux(self, packets):
        raise av.error.ArgumentError(22, 'Invalid argument', self.path)

    def close(self):
        self.container.close()


def test_a_muxing_error_names_the_output_and_the_source_audio_not_the_temporary_file(tmp_path):
    # FFmpeg's own message named the hidden temporary file: "Invalid argument: '.pha.<hex>.partial.mp4' returned 22".
    _, frames = clip_frames(3)
    write_video(tmp_path / 'in.mp4', frames)
    writer = VideoWriter(str(tmp_path / 'pha.mp4'), NTSC, audio_source=str(tmp_path / 'in.mp4'))
    writer.container = RefusingMuxer(writer.container, writer.temporary)
    with pytest.raises(InputError) as error:
        writer.write(np.stack(frames), [0, 1, 2])
    writer.abort()
    text = str(error.value)
    assert re.fullmatch(r'.*/pha\.mp4: FFmpeg cannot write it with the audio of .*/in\.mp4 \(audio stream #1 '
                        r'\(aac\)\), which may be damaged \(--no-audio leaves it out\): Invalid argument', text), text
    assert 'partial' not in text and not leftovers(tmp_path)
