"""inference_video.py and convert_video end to end, on clips made by the tests with PyAV or with the
ffmpeg command line; the outputs are read with FFmpeg's own ffprobe and ffmpeg where those are the
reference (tests marked `needs_ffmpeg`)."""
import os
import re
import signal
import subprocess
import sys
import time
from fractions import Fraction

import numpy as np
import pytest
import torch
from PIL import Image

import inference_video
from ffmpeg_tools import ffmpeg, ffmpeg_rgb, frame_times, make_clip, needs_ffmpeg, packet_times, probe, video_stream
from inference_utils import DEMO_CHECKPOINT, ImageSequenceWriter, small_input_warning
from inference_video import convert_video
from model import MattingRefine
from test_inference_utils import NTSC, clip_frames, leftovers, model_args, read_video, save_png, write_video

FRAMES = 8
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The bundled model: a matte of 0 where the frame is its clean plate, so a composite shows the background.
DEMO_MODEL = ['--model-checkpoint', DEMO_CHECKPOINT, '--device', 'cpu']
BT709 = dict(color_space='bt709', color_primaries='bt709', color_transfer='bt709', color_range='tv')
BT601 = dict(color_space='smpte170m', color_primaries='smpte170m', color_transfer='smpte170m', color_range='tv')


@pytest.fixture(scope='module')
def clip(tmp_path_factory):
    """take.mp4 (H.264 with an AAC track, 30000/1001 fps, 160x96) and its clean plate plate.png."""
    folder = tmp_path_factory.mktemp('clip')
    plate, frames = clip_frames(FRAMES)
    write_video(folder / 'take.mp4', frames)
    save_png(folder / 'plate.png', plate)
    return folder


def run(*argv):
    """Runs the script in this process; returns its exit status (0 when it returned)."""
    try:
        inference_video.main([str(a) for a in argv])
    except SystemExit as exit:
        return exit.code
    return 0


def matte(take, out, checkpoint, *extra):
    """Mattes a clip with its first frame as the plate into out/pha.mp4; returns the exit status."""
    return run('--video-src', take, '--bgr-first-frames', '1', '--output-dir', out, '--output-types', 'pha',
               '--disable-progress', *extra, *model_args(checkpoint))


def decoded_audio_end(path, track=0):
    """Where a file's audio track ends as ffprobe decodes it: the last frame's time plus its duration
    (Matroska's decoders drop the padding the file marks)."""
    last = probe(path, 'frame=pts_time,pkt_duration_time,duration_time', f'a:{track}')['frames'][-1]
    return float(last['pts_time']) + float(last.get('pkt_duration_time', last.get('duration_time')))


def stated_audio_end(path, track=0):
    """Where an MP4 file's audio track ends as ffprobe reads its header: start plus duration (its edit
    list's), the padding the track's end holds excluded."""
    stream = probe(path, 'stream=start_time,duration', f'a:{track}')['streams'][0]
    return float(stream['start_time']) + float(stream['duration'])


def read_pngs(folder):
    return [np.asarray(Image.open(os.path.join(folder, name))) for name in sorted(os.listdir(folder))]


def test_videos_keep_frame_count_exact_frame_rate_and_audio(clip, checkpoint, tmp_path, capsys):
    out = tmp_path / 'out'
    assert run('--video-src', clip / 'take.mp4', '--video-bgr', clip / 'plate.png', '--output-dir', out,
               '--output-types', 'com', 'pha', 'fgr', 'err', 'ref', '--seq-chunk', '3', '--disable-progress',
               *model_args(checkpoint)) == 0
    assert re.search(r'8 frames in .* s: model only .* fps, end to end .* fps', capsys.readouterr().out)
    assert sorted(os.listdir(out)) == ['com.mp4', 'err.mp4', 'fgr.mp4', 'pha.mp4', 'ref.mp4']
    for name in os.listdir(out):
        frames, facts, audio = read_video(out / name)
        assert len(frames) == FRAMES and frames[0].shape == (96, 160, 3), name
        assert facts['rate'] == NTSC and audio == ['aac'], name


def test_a_millisecond_time_base_keeps_the_exact_frame_rate(clip, checkpoint, tmp_path):
    # Matroska stores times in milliseconds: 30000/1001 fps frames are 33 or 34 ms apart there.
    _, frames = clip_frames(FRAMES)
    write_video(tmp_path / 'take.mkv', frames)
    assert read_video(tmp_path / 'take.mkv')[1]['time_base'] == Fraction(1, 1000)
    assert run('--video-src', tmp_path / 'take.mkv', '--video-bgr', clip / 'plate.png', '--output-dir',
               tmp_path / 'out', '--output-types', 'pha', '--disable-progress', *model_args(checkpoint)) == 0
    written, facts, audio = read_video(tmp_path / 'out' / 'pha.mp4')
    assert len(written) == FRAMES and facts['rate'] == NTSC and audio == ['aac']


def test_image_sequence_run_matches_the_video_run_frame_by_frame(tmp_path, checkpoint):
    plate, frames = clip_frames(6, seed=1)
    for index, frame in enumerate(frames):
        save_png(tmp_path / 'frames' / f'{index:04d}.png', frame)
    save_png(tmp_path / 'plate.png', plate)
    write_video(tmp_path / 'lossless.mkv', frames, codec='ffv1', audio=False)
    assert all(np.array_equal(a, b) for a, b in zip(read_video(tmp_path / 'lossless.mkv')[0], frames))

    model = MattingRefine('mobilenetv2', backbone_scale=0.5, refine_sample_pixels=2000).eval()
    model.load_state_dict(torch.load(checkpoint, weights_only=True))
    common = dict(clean_plate=str(tmp_path / 'plate.png'), output_types=('com', 'pha', 'fgr'), progress=False)
    convert_video(model, str(tmp_path / 'frames'), str(tmp_path / 'seq'), output_format='png', seq_chunk=4, **common)
    convert_video(model, str(tmp_path / 'lossless.mkv'), str(tmp_path / 'vid'), output_format='png', **common)
    convert_video(model, str(tmp_path / 'lossless.mkv'), str(tmp_path / 'mp4'), crf=0, **common)

    assert os.listdir(tmp_path / 'seq' / 'pha') and sorted(os.listdir(tmp_path / 'seq' / 'pha'))[0] == '0000.png'
    for output_type in ['com', 'pha', 'fgr']:
        sequence, video = read_pngs(tmp_path / 'seq' / output_type), read_pngs(tmp_path / 'vid' / output_type)
        assert len(sequence) == len(video) == 6
        for a, b in zip(sequence, video):  # chunks of 4 and of 1 frame: equal up to rounding
            assert a.shape == b.shape and np.abs(a.astype(int) - b).max() <= 1, output_type
    encoded = [frame[:, :, 0] for frame in read_video(tmp_path / 'mp4' / 'pha.mp4')[0]]
    assert len(encoded) == 6
    for a, b in zip(read_pngs(tmp_path / 'vid' / 'pha'), encoded):
        assert np.abs(a.astype(int) - b).mean() < 1


def test_plate_from_first_frames_and_a_looping_background_video(tmp_path, checkpoint, capsys):
    plate, frames = clip_frames(5)
    write_video(tmp_path / 'take.mp4', [plate, plate] + frames, audio=False)
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    write_video(tmp_path / 'backdrop.mkv', [np.full((50, 80, 3), c, np.uint8) for c in colours],
                codec='ffv1', audio=False)
    out = tmp_path / 'out'
    assert run('--video-src', tmp_path / 'take.mp4', '--bgr-first-frames', '2', '--output-dir', out,
               '--output-format', 'png', '--output-types', 'pha', '--video-target-bgr', tmp_path / 'backdrop.mkv',
               '--disable-progress', *model_args(checkpoint)) == 0
    assert 'nearly identical' not in capsys.readouterr().err  # the first frames are the plate, by design
    phas, composites = read_pngs(out / 'pha'), read_pngs(out / 'composite')
    assert len(phas) == len(composites) == 7
    for index, (pha, composite) in enumerate(zip(phas, composites)):
        assert (composite[pha == 0] == colours[index % 3]).all(), index


def test_rotation_metadata_is_honoured(tmp_path, checkpoint):
    plate, frames = clip_frames(3)
    write_video(tmp_path / 'phone.mp4', frames, rotation=90, audio=False)
    save_png(tmp_path / 'plate.png', np.rot90(plate).copy())  # the plate as the phone's gallery shows it
    assert run('--video-src', tmp_path / 'phone.mp4', '--video-bgr', tmp_path / 'plate.png', '--output-dir',
               tmp_path / 'out', '--output-types', 'pha', '--disable-progress', *model_args(checkpoint)) == 0
    frames, _, _ = read_video(tmp_path / 'out' / 'pha.mp4')
    assert len(frames) == 3 and frames[0].shape == (160, 96, 3)


def test_bad_inputs_end_with_a_clear_message(clip, checkpoint, tmp_path, capsys):
    plate, frames = clip_frames(3)
    save_png(tmp_path / 'small_plate.png', plate[:64, :128])
    write_video(tmp_path / 'short_plate.mp4', [plate] * 3, audio=False)
    (tmp_path / 'broken.mp4').write_bytes(b'not a video')
    (tmp_path / 'taken').mkdir()
    (tmp_path / 'taken' / 'pha.mp4').write_bytes(b'earlier result')
    source = ['--video-src', clip / 'take.mp4']
    cases = [
        (['--video-src', tmp_path / 'nowhere.mp4', '--video-bgr', clip / 'plate.png'], 2, 'nowhere.mp4: no such file'),
        ([*source, '--video-bgr', tmp_path / 'small_plate.png'], 1, 'is 128x64 but --video-src .* is 160x96'),
        ([*source, '--video-bgr', tmp_path / 'short_plate.mp4'], 1, 'has 3 frames but --video-src .* has 8'),
        (['--video-src', tmp_path / 'broken.mp4', '--video-bgr', clip / 'plate.png'], 1, 'cannot open it as a video'),
        ([*source, '--video-bgr', clip / 'plate.png', '--output-dir', tmp_path / 'taken'], 1,
         'taken/pha.mp4 already exists'),
    ]
    for argv, status, message in cases:
        if '--output-dir' not in argv:
            argv = [*argv, '--output-dir', tmp_path / 'out']
        assert run(*argv, '--output-types', 'pha', '--disable-progress', *model_args(checkpoint)) == status, argv
        err = capsys.readouterr().err
        assert re.search(message, err) and 'Traceback' not in err, err
    assert (tmp_path / 'taken' / 'pha.mp4').read_bytes() == b'earlier result'
    assert not (tmp_path / 'out').exists() or os.listdir(tmp_path / 'out') == []
    assert not leftovers(tmp_path)


@needs_ffmpeg
@pytest.mark.parametrize('size, tags, expected', [
    ('128x72', ['-colorspace', 'bt709', '-color_primaries', 'bt709', '-color_trc', 'bt709'], BT709),
    ('1280x720', [], BT709),   # untagged HD: what players assume
    ('128x72', [], BT601),     # untagged SD: what players assume, and the matrix FFmpeg decodes it with
], ids=['BT.709-tagged', 'untagged HD', 'untagged SD'])
def test_outputs_carry_the_colour_description_they_are_encoded_with(tmp_path, size, tags, expected):
    take = make_clip(tmp_path / 'take.mp4', '-c:v', 'libx264', '-pix_fmt', 'yuv420p', *tags, size=size, frames=2,
                     source='smptebars')
    out = tmp_path / 'out'
    assert run('--video-src', take, '--bgr-first-frames', '1', '--output-dir', out, '--output-types', 'com', 'pha',
               '--disable-progress', *DEMO_MODEL) == 0
    for name in ('com.mp4', 'pha.mp4'):
        stream = video_stream(out / name)
        assert {key: stream.get(key) for key in expected} == expected, name
    # The frames are their plate: the composite is the default green, as FFmpeg decodes it.
    green = np.median(ffmpeg_rgb(out / 'com.mp4').reshape(-1, 3), axis=0)
    assert np.abs(green - (120, 255, 155)).max() <= 2, green


@needs_ffmpeg
@pytest.mark.parametrize('resize, expected', [([], '4:3'), (['--video-resize', '96', '72'], '16:9')])
def test_anamorphic_sources_keep_their_pixel_shape(tmp_path, checkpoint, resize, expected):
    take = make_clip(tmp_path / 'dv.mkv', '-vf', 'setsar=4/3', '-c:v', 'libx264', frames=2)
    assert video_stream(take)['sample_aspect_ratio'] == '4:3'
    out = tmp_path / 'out'
    assert run('--video-src', take, '--bgr-first-frames', '1', '--output-dir', out, '--output-types', 'pha',
               '--disable-progress', *resize, *model_args(checkpoint)) == 0
    assert video_stream(out / 'pha.mp4')['sample_aspect_ratio'] == expected


@needs_ffmpeg
def test_odd_sizes_stay_yuv420p_padded_by_a_pixel_unless_yuv444_is_asked(tmp_path, checkpoint):
    take = make_clip(tmp_path / 'odd.mkv', '-vf', 'format=rgb24,crop=321:181:0:0', '-c:v', 'ffv1',
                     '-pix_fmt', 'yuv444p', size='322x182', frames=2)
    outputs = {}
    for name, extra in (('default', []), ('yuv444', ['--yuv444'])):
        assert run('--video-src', take, '--bgr-first-frames', '1', '--output-dir', tmp_path / name, '--output-types',
                   'fgr', '--disable-progress', *extra, *model_args(checkpoint)) == 0
        outputs[name] = tmp_path / name / 'fgr.mp4'
    stream = video_stream(outputs['default'])
    assert (stream['pix_fmt'], stream['profile'], stream['width'], stream['height']) == ('yuv420p', 'High', 322, 182)
    stream = video_stream(outputs['yuv444'])
    assert (stream['pix_fmt'], stream['width'], stream['height']) == ('yuv444p', 321, 181)
    padded, exact = ffmpeg_rgb(outputs['default']).astype(int), ffmpeg_rgb(outputs['yuv444']).astype(int)
    # Every pixel where it was (lossy H.264 and 4:2:0 chroma apart), the last column and row repeated.
    assert np.abs(padded[:, :181, :321] - exact).mean() < 3
    assert np.abs(padded[:, :, 321] - padded[:, :, 320]).mean() < 3
    assert np.abs(padded[:, 181] - padded[:, 180]).mean() < 3


@needs_ffmpeg
def test_timestamps_equal_the_sources(tmp_path, checkpoint):
    # B-frames and no edit list: the first frame is shown after the reorder delay, 0.066733 s.
    bframes = make_clip(tmp_path / 'bframes.mp4', '-c:v', 'libx264', '-bf', '2', '-use_editlist', '0',
                        rate='30000/1001', frames=6)
    assert frame_times(bframes, 'v:0')[0] == '0.066733'
    # MPEG-TS: times in 1/90000 s from 1.4 s, the audio ahead of the video.
    ts = make_clip(tmp_path / 'take.ts', '-c:v', 'libx264', '-c:a', 'aac', audio='sine=sample_rate=48000:duration=0.5')
    for take in (bframes, ts):
        assert matte(take, tmp_path / take.stem, checkpoint) == 0
        assert frame_times(tmp_path / take.stem / 'pha.mp4', 'v:0') == frame_times(take, 'v:0'), take.name
    assert packet_times(tmp_path / 'take' / 'pha.mp4', 'a:0') == packet_times(ts, 'a:0')


@needs_ffmpeg
@pytest.mark.parametrize('name, encode, rate', [
    ('take.webm', ['-c:v', 'libvpx-vp9', '-deadline', 'realtime', '-cpu-used', '8', '-c:a', 'libopus'], 48000),
    ('take.mkv', ['-c:v', 'libx264', '-c:a', 'libmp3lame'], 44100),
])
def test_copied_audio_keeps_its_times_and_trimmed_end(tmp_path, checkpoint, name, encode, rate):
    # The encoders' padding at the end is marked to be dropped (Matroska's DiscardPadding).
    take = make_clip(tmp_path / name, *encode, audio=f'sine=sample_rate={rate}:duration=0.5')
    assert matte(take, tmp_path / 'out', checkpoint) == 0
    ours, theirs = packet_times(tmp_path / 'out' / 'pha.mp4', 'a:0'), packet_times(take, 'a:0')
    assert len(ours) == len(theirs)
    # The source's times are in milliseconds; ours in samples.
    assert max(abs(float(a[0]) - float(b[0])) for a, b in zip(ours, theirs)) <= 0.001
    assert stated_audio_end(tmp_path / 'out' / 'pha.mp4') == pytest.approx(decoded_audio_end(take), abs=0.0015)


@needs_ffmpeg
def test_every_audio_track_is_kept_and_re_encoded_where_mp4_cannot_hold_it(tmp_path, checkpoint):
    two_tracks = make_clip(tmp_path / 'two.mkv', '-c:v', 'libx264', '-c:a:0', 'pcm_s16le', '-ac:a:0', '2',
                           '-c:a:1', 'flac', audio=['sine=sample_rate=48000:duration=0.5',
                                                    'sine=frequency=660:sample_rate=44100:duration=0.5'])
    camera = make_clip(tmp_path / 'camera.avi', '-c:v', 'mjpeg', '-c:a', 'pcm_u8',
                       audio='sine=sample_rate=22050:duration=0.5')
    expected = {two_tracks: [('aac', '48000', 2), ('flac', '44100', 1)], camera: [('aac', '22050', 1)]}
    for take, tracks in expected.items():
        out = tmp_path / take.stem
        assert matte(take, out, checkpoint) == 0
        streams = probe(out / 'pha.mp4', select='a')['streams']
        assert [(s['codec_name'], s['sample_rate'], s['channels']) for s in streams] == tracks, take.name
        for track in range(len(tracks)):  # as long as the source's, within an AAC frame's rounding
            assert stated_audio_end(out / 'pha.mp4', track) == pytest.approx(decoded_audio_end(take, track), abs=0.002)
    assert not leftovers(tmp_path)


@needs_ffmpeg
def test_a_truncated_video_is_matted_with_a_warning_naming_both_counts(tmp_path, checkpoint, capsys):
    whole = make_clip(tmp_path / 'whole.mp4', '-c:v', 'libx264', '-movflags', '+faststart', rate='24', frames=48)
    data = whole.read_bytes()
    (tmp_path / 'cut.mp4').write_bytes(data[:len(data) // 2])  # the header, which declares 48 frames, and half the rest
    capsys.readouterr()
    assert matte(tmp_path / 'cut.mp4', tmp_path / 'out', checkpoint) == 0
    written = len(frame_times(tmp_path / 'out' / 'pha.mp4', 'v:0'))
    assert 0 < written < 48
    err = capsys.readouterr().err
    assert re.search(rf"cut\.mp4: .*declares 48 frames but only {written} could be decoded", err), err


def test_overwriting_a_frame_folder_leaves_no_stale_frames(tmp_path, checkpoint):
    _, frames = clip_frames(6)
    write_video(tmp_path / 'long.mp4', frames, audio=False)
    write_video(tmp_path / 'short.mp4', frames[:3], audio=False)
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'notes.txt').write_text('mine')
    common = ['--output-dir', out, '--output-format', 'png', '--output-types', 'pha', '--bgr-first-frames', '1',
              '--disable-progress', *model_args(checkpoint)]
    assert run('--video-src', tmp_path / 'long.mp4', *common) == 0
    assert len(os.listdir(out / 'pha')) == 6
    assert run('--video-src', tmp_path / 'short.mp4', *common, '--overwrite') == 0
    assert sorted(os.listdir(out / 'pha')) == ['00000.png', '00001.png', '00002.png']
    # A run stopped half-way leaves the folder as it was, and nothing beside it.
    writer = ImageSequenceWriter(str(out / 'pha'), overwrite=True)
    writer.write(np.zeros((2, 96, 160, 1), np.uint8), ['00000', '00001'])
    writer.abort()
    assert sorted(os.listdir(out / 'pha')) == ['00000.png', '00001.png', '00002.png']
    assert sorted(os.listdir(out)) == ['notes.txt', 'pha'] and (out / 'notes.txt').read_text() == 'mine'


def test_sigterm_removes_unfinished_outputs_and_exits_non_zero(tmp_path, checkpoint):
    # What `kill` and Slurm send: the run stops as after Ctrl-C, its writers removing their files.
    plate, frames = clip_frames(2, width=64, height=48)
    write_video(tmp_path / 'long.mp4', frames * 150, audio=False)
    save_png(tmp_path / 'plate.png', plate)
    out = tmp_path / 'out'
    process = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, 'inference_video.py'), '--video-src', tmp_path / 'long.mp4', '--video-bgr',
         tmp_path / 'plate.png', '--output-dir', out, '--output-types', 'com', 'pha', '--disable-progress',
         *model_args(checkpoint)], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not leftovers(tmp_path) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert leftovers(tmp_path), 'the run wrote no partial file before it ended'
        process.send_signal(signal.SIGTERM)
        err = process.communicate(timeout=60)[1]
    finally:
        process.kill()
    assert process.returncode == 128 + signal.SIGTERM, err
    assert 'terminated' in err and 'Traceback' not in err, err
    assert not leftovers(tmp_path) and os.listdir(out) == []


def test_the_bundled_model_is_the_default_checkpoint(tmp_path, capsys):
    plate, frames = clip_frames(2)
    write_video(tmp_path / 'take.mp4', frames, audio=False)
    save_png(tmp_path / 'plate.png', plate)
    common = ['--video-src', tmp_path / 'take.mp4', '--video-bgr', tmp_path / 'plate.png', '--output-types', 'pha',
              '--disable-progress', '--device', 'cpu']
    assert run(*common, '--output-dir', tmp_path / 'out') == 0
    assert 'bundled demonstration model' in capsys.readouterr().out
    assert len(read_video(tmp_path / 'out' / 'pha.mp4')[0]) == 2
    assert run(*common, '--output-dir', tmp_path / 'other', '--model-backbone', 'resnet50') == 2
    assert '--model-checkpoint is required with --model-backbone resnet50' in capsys.readouterr().err


def test_frames_too_small_for_the_backbone_scale_are_warned_about_once(clip, checkpoint, tmp_path, capsys):
    # 160x96 at the default scale 0.25: the base network sees 40x24, where the bundled model's matte
    # holds 3 % of the subject (scripts/base_input_sizes.py).
    args = model_args(checkpoint)
    args[args.index('--model-backbone-scale') + 1] = '0.25'
    assert run('--video-src', clip / 'take.mp4', '--video-bgr', clip / 'plate.png', '--output-dir', tmp_path / 'out',
               '--output-types', 'pha', '--disable-progress', *args) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if 'base network' in line]
    assert len(warnings) == 1 and '160x96' in warnings[0] and '--model-backbone-scale 0.5' in warnings[0], warnings
    hd = MattingRefine('mobilenetv2', backbone_scale=0.25)
    assert small_input_warning(hd, 720, 1280) is None and small_input_warning(hd, 1280, 720) is None
    assert 'larger frames' in small_input_warning(MattingRefine('mobilenetv2', backbone_scale=0.5), 96, 160)


def test_several_sources_in_shards_each_with_its_plate(tmp_path, checkpoint, capsys, monkeypatch):
    """--video-src A B C D: each clip into OUT/<name>/ with the plate of its name; --shard splits the list
    (disjoint, complete); --skip-existing resumes; @FILE reads the list from a file."""
    names = ['take1', 'take2', 'take3', 'take4', 'take5', 'take6']
    (tmp_path / 'src').mkdir()
    for index, name in enumerate(names):
        plate, frames = clip_frames(3, seed=index)
        write_video(tmp_path / 'src' / f'{name}.mp4', frames, audio=False)
        save_png(tmp_path / 'plates' / f'{name}.png', plate)
    (tmp_path / 'list.txt').write_text(''.join(f"{tmp_path / 'src' / name}.mp4\n" for name in names))
    out = tmp_path / 'out'
    common = ['--video-bgr', tmp_path / 'plates', '--output-dir', out, '--output-types', 'pha',
              '--disable-progress', *model_args(checkpoint)]
    counts = []
    for index in (1, 2):
        assert run('--video-src', f"@{tmp_path / 'list.txt'}", *common, '--shard', f'{index}/2') == 0
        counts.append(int(re.search(r'shard \d/2: (\d+) of 6', capsys.readouterr().out).group(1)))
    assert sorted(os.listdir(out)) == names and sum(counts) == 6 and all(counts), counts
    assert all(os.path.isfile(out / name / 'pha.mp4') for name in names)
    # Each clip was matted with its own plate: a matte of the right length for each.
    assert all(len(read_video(out / name / 'pha.mp4')[0]) == 3 for name in names)

    for variable, value in (('SLURM_ARRAY_TASK_ID', '4'), ('SLURM_ARRAY_TASK_MIN', '3'),
                            ('SLURM_ARRAY_TASK_MAX', '4'), ('SLURM_ARRAY_TASK_COUNT', '2')):
        monkeypatch.setenv(variable, value)
    os.remove(out / 'take2' / 'pha.mp4')
    sources = [tmp_path / 'src' / f'{name}.mp4' for name in names]
    assert run('--video-src', *sources, *common, '--shard', 'auto', '--skip-existing') == 0
    printed = capsys.readouterr().out
    assert f'shard 2/2: {counts[1]} of 6' in printed and 'already done' in printed
    assert os.path.isfile(out / 'take2' / 'pha.mp4') == ('take2' in printed)

    os.remove(tmp_path / 'plates' / 'take3.png')
    assert run('--video-src', *sources, *common) == 1
    assert 'no plate named after take3' in capsys.readouterr().err


@needs_ffmpeg
def test_skip_existing_redoes_clips_whose_outputs_are_cut_short(tmp_path, checkpoint, capsys):
    """--skip-existing keeps a clip only when each output has as many frames as its source (counted with
    ffprobe here); a truncated pha.mp4, or one of fewer frames, is redone."""
    names = ['kept', 'truncated', 'short']
    (tmp_path / 'src').mkdir()
    for index, name in enumerate(names):
        plate, frames = clip_frames(4, seed=index)
        write_video(tmp_path / 'src' / f'{name}.mp4', frames, audio=False)
        save_png(tmp_path / 'plates' / f'{name}.png', plate)
    out = tmp_path / 'out'
    args = ['--video-src', *[tmp_path / 'src' / f'{name}.mp4' for name in names], '--video-bgr',
            tmp_path / 'plates', '--output-dir', out, '--output-types', 'pha', '--disable-progress',
            *model_args(checkpoint)]
    assert run(*args) == 0
    truncated = (out / 'truncated' / 'pha.mp4').read_bytes()
    (out / 'truncated' / 'pha.mp4').write_bytes(truncated[:len(truncated) // 2])
    write_video(out / 'short' / 'pha.mp4', clip_frames(2)[1], audio=False)
    os.utime(out / 'kept' / 'pha.mp4', (0, 0))
    capsys.readouterr()

    assert run(*args, '--skip-existing') == 0
    assert '1 clip(s) already done' in capsys.readouterr().out
    assert os.stat(out / 'kept' / 'pha.mp4').st_mtime == 0
    for name in names:
        assert len(packet_times(out / name / 'pha.mp4', 'v:0')) == 4, name


@needs_ffmpeg
def test_paths_with_a_colon_are_files_not_ffmpeg_protocols(clip, checkpoint, tmp_path, monkeypatch):
    """'take:1.mp4' in a folder 'res:1', matted into 'out:1' (relative paths, as typed): read and
    written as files, its audio kept."""
    monkeypatch.chdir(tmp_path)
    os.mkdir('res:1')
    with open(clip / 'take.mp4', 'rb') as source, open('res:1/take:1.mp4', 'wb') as copy:
        copy.write(source.read())
    assert run('--video-src', 'res:1/take:1.mp4', '--bgr-first-frames', '1', '--output-dir', 'out:1',
               '--output-types', 'pha', 'com', '--replacement-background', 'res:1/take:1.mp4',
               '--disable-progress', *model_args(checkpoint)) == 0
    for name in ('pha.mp4', 'com.mp4'):
        path = f"file:{tmp_path / 'out:1' / name}"
        assert len(frame_times(path, 'v:0')) == FRAMES
        assert [s['codec_type'] for s in probe(path)['streams']] == ['video', 'audio']


@needs_ffmpeg
@pytest.mark.parametrize('maps', [['-map', '0:a', '-map', '0:v'], ['-map', '0:v', '-map', '0:v', '-map', '0:a']],
                         ids=['audio-first', 'a-second-video-before-the-audio'])
def test_audio_tracks_are_copied_whatever_the_stream_order(clip, checkpoint, tmp_path, maps):
    """The copied audio track equals FFmpeg's own copy (`-map 0:a -c copy`): packets and duration,
    wherever the source stores it among its streams."""
    source, reference = tmp_path / 'source.mp4', tmp_path / 'reference.mp4'
    ffmpeg('-i', clip / 'take.mp4', *maps, '-c', 'copy', source)
    ffmpeg('-i', source, '-map', '0:a', '-c', 'copy', reference)
    assert matte(source, tmp_path / 'out', checkpoint) == 0
    output = tmp_path / 'out' / 'pha.mp4'
    assert [s['codec_type'] for s in probe(output)['streams']] == ['video', 'audio']
    assert len(packet_times(output, 'a:0')) == len(packet_times(reference, 'a:0'))
    assert stated_audio_end(output) == pytest.approx(stated_audio_end(reference), abs=1e-3)


def test_a_backdrop_video_follows_the_sources_clock():
    """A 25 fps backdrop under a 29.97 fps source keeps its own speed, looping by time: at source time t
    it shows its frame nearest to t modulo its length (it played 1.2 times fast, frame by frame)."""
    import tempfile
    from fractions import Fraction

    from inference.readers import ReplacementBackground
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, 'backdrop.mp4')
        levels = [20 * i + 20 for i in range(10)]  # frame i a flat grey of its own: 0.4 s at 25 fps
        write_video(path, [np.full((32, 32, 3), level, np.uint8) for level in levels], rate=Fraction(25), audio=False)
        background = ReplacementBackground(path)
        try:
            shown = []
            for k in range(40):  # 40 source frames at 30000/1001 fps: 1.33 s, more than three loops
                image = background.frame((32, 32), time=k * 1001 / 30000)
                shown.append(int(np.argmin([abs(int(image.mean()) - level) for level in levels])))
        finally:
            background.close()
    assert shown == [int(k * 1001 / 30000 * 25 + 0.5) % 10 for k in range(40)], shown  # the nearest frame
