"""The layer the inference scripts share: pairing, plate checks, alignment, readers, writers, pipeline.

The helpers at the top make the synthetic captures, videos and checkpoint that the tests of the
three inference scripts use too.
"""
import os
import threading
from fractions import Fraction

import av
import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from inference_utils import (ImageSequenceReader, InputError, Matting, ReplacementBackground, VideoReader,
                             VideoWriter, align_plate, check_plate, pair_images, parse_colour, run_pipeline)
from model import MattingBase, MattingRefine

NTSC = Fraction(30000, 1001)


# --------------------------------------------------------------------------- helpers for all inference tests

def textured_plate(width, height, seed=0, rectangles=60):
    """(H, W, 3) uint8: a smooth gradient with random coloured rectangles, a scene with corners."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    plate = np.stack([80 + 100 * x / width, 60 + 120 * y / height, np.full(x.shape, 140.0)], axis=2)
    for _ in range(rectangles):
        x0, y0 = rng.integers(0, width), rng.integers(0, height)
        w, h = rng.integers(4, max(5, width // 6)), rng.integers(4, max(5, height // 6))
        plate[y0:y0 + h, x0:x0 + w] = rng.integers(0, 256, 3)
    return cv2.GaussianBlur(plate.astype(np.uint8), (3, 3), 0)


def composite_subject(plate, centre_x=0.5):
    """The plate with a soft-edged ellipse 'subject' in front: (src (H, W, 3) uint8, pha (H, W) float)."""
    height, width = plate.shape[:2]
    y, x = np.mgrid[0:height, 0:width]
    distance = ((x - centre_x * width) / (0.18 * width)) ** 2 + ((y - 0.6 * height) / (0.35 * height)) ** 2
    pha = np.clip((1.2 - distance) / 0.4, 0, 1)
    fgr = np.stack([200 + 40 * np.sin(x / 5), 90 + 30 * np.cos(y / 7), np.full(x.shape, 60.0)], axis=2)
    src = pha[:, :, None] * fgr + (1 - pha[:, :, None]) * plate
    return src.round().astype(np.uint8), pha


def save_png(path, image):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    Image.fromarray(image).save(path)


def image_pair_folders(tmp_path, names, spread=0.02):
    """Source and plate PNGs for `names` in tmp_path/src and tmp_path/bgr (the subject moving from name to
    name), and random MattingRefine (MobileNetV2) weights; returns the weights' path."""
    plate = textured_plate(64, 64)
    for index, name in enumerate(names):
        save_png(tmp_path / 'src' / f'{name}.png', composite_subject(plate, 0.3 + spread * index)[0])
        save_png(tmp_path / 'bgr' / f'{name}.png', plate)
    torch.manual_seed(0)
    checkpoint = str(tmp_path / 'weights.pth')
    torch.save(MattingRefine('mobilenetv2').state_dict(), checkpoint)
    return checkpoint


def clip_frames(count, width=160, height=96, seed=0):
    """A clean plate and `count` frames of a subject moving across it, (H, W, 3) uint8 each."""
    plate = textured_plate(width, height, seed)
    return plate, [composite_subject(plate, 0.3 + 0.4 * i / max(1, count - 1))[0] for i in range(count)]


def write_video(path, frames, rate=NTSC, codec='libx264', audio=True, rotation=0):
    """Encodes RGB frames with PyAV, optionally with an AAC sine track as long as the video and a
    display rotation (degrees counter-clockwise)."""
    height, width = frames[0].shape[:2]
    with av.open(str(path), 'w') as container:
        video = container.add_stream(codec, rate=rate)
        video.width, video.height = width, height
        if codec == 'libx264':
            video.pix_fmt, video.options = 'yuv420p', {'crf': '12'}
        else:
            video.pix_fmt = 'bgr0'
        if rotation:
            video.set_display_rotation(rotation)
        sound = container.add_stream('aac', rate=44100) if audio else None
        for index, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format='rgb24')
            frame.pts = index
            container.mux(video.encode(frame))
        container.mux(video.encode())
        if sound:
            samples = int(44100 * len(frames) / rate)
            wave = (0.2 * np.sin(2 * np.pi * 440 * np.arange(samples) / 44100)).astype(np.float32)[None]
            for start in range(0, samples, 1024):
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave[:, start:start + 1024]),
                                                   format='fltp', layout='mono')
                frame.sample_rate, frame.pts = 44100, start
                container.mux(sound.encode(frame))
            container.mux(sound.encode())


def read_video(path):
    """(frames as (H, W, 3) uint8, video stream facts, audio codec names) of a video file."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        facts = dict(rate=stream.average_rate, time_base=stream.time_base)
        frames = [frame.to_ndarray(format='rgb24') for frame in container.decode(stream)]
        audio = [s.codec_context.name for s in container.streams.audio]
    return frames, facts, audio


def model_args(checkpoint):
    """Small and fast: backbone at half resolution, few refined pixels."""
    return ['--model-checkpoint', checkpoint, '--model-backbone', 'mobilenetv2', '--model-backbone-scale', '0.5',
            '--model-refine-sample-pixels', '2000', '--device', 'cpu']


def leftovers(folder):
    """Temporary files left anywhere under `folder`."""
    return [os.path.join(root, f) for root, _, files in os.walk(folder) for f in files if '.partial' in f]


# --------------------------------------------------------------------------- tests

def test_pairs_by_relative_path_not_by_sort_order(tmp_path):
    image = textured_plate(64, 64)
    for rel in ['src/x/1.jpg', 'src/x/2.png', 'src/z.png', 'bgr/x/1.png', 'bgr/x/2.png', 'bgr/y.png']:
        save_png(tmp_path / rel, image)
    pairing = pair_images(str(tmp_path / 'src'), str(tmp_path / 'bgr'))
    assert [(os.path.relpath(p.src, tmp_path), os.path.relpath(p.bgr, tmp_path), p.name) for p in pairing.pairs] == [
        ('src/x/1.jpg', 'bgr/x/1.png', 'x/1'), ('src/x/2.png', 'bgr/x/2.png', 'x/2')]
    assert pairing.unpaired_src == ['z.png'] and pairing.unpaired_bgr == ['y.png']
    with pytest.raises(InputError, match='--bgr .*missing'):
        pair_images(str(tmp_path / 'src'), str(tmp_path / 'missing'))


def test_alignment_recovers_a_known_shift(tmp_path):
    canvas = textured_plate(300, 200, seed=3, rectangles=150)
    dx, dy = 7, 4
    bgr = canvas[20:164, 20:276]
    src, pha = composite_subject(canvas[20 + dy:164 + dy, 20 + dx:276 + dx])
    alignment = align_plate(src, bgr)
    assert alignment.failure is None
    assert alignment.homography[0, 2] == pytest.approx(-dx, abs=0.5)
    assert alignment.homography[1, 2] == pytest.approx(-dy, abs=0.5)
    background = (pha == 0)
    background[:12], background[-12:], background[:, :12], background[:, -12:] = False, False, False, False
    before = np.abs(src.astype(int) - bgr)[background].mean()
    after = np.abs(src.astype(int) - alignment.plate)[background].mean()
    assert after < 2 and before > 10 * after


def test_alignment_falls_back_on_a_featureless_plate():
    bgr = np.full((96, 160, 3), 120, np.uint8)
    src, _ = composite_subject(bgr)
    alignment = align_plate(src, bgr)
    assert alignment.homography is None and 'features' in alignment.failure
    assert alignment.plate is bgr


def test_plate_check_flags_a_missing_subject_and_a_wrong_scene():
    plate = textured_plate(160, 96, seed=1)
    src, _ = composite_subject(plate)
    assert check_plate(src, plate) is None
    assert 'nearly identical' in check_plate(plate, plate)
    assert 'differs' in check_plate(src, textured_plate(160, 96, seed=2)[::-1].copy())


def test_video_reader_applies_rotation_and_keeps_the_exact_rate(tmp_path):
    _, frames = clip_frames(3)
    write_video(tmp_path / 'phone.mp4', frames, rotation=90, audio=False)
    with VideoReader(str(tmp_path / 'phone.mp4')) as reader:
        assert reader.rotation == 90 and reader.size == (96, 160) and reader.frame_rate == NTSC
        upright = [frame.image for frame in reader]
    assert len(upright) == 3 and upright[0].shape == (160, 96, 3)
    # As players show it: the stored frame turned a quarter counter-clockwise, not clockwise.
    error = np.abs(upright[0].astype(int) - np.rot90(frames[0], 1)).mean()
    assert error < 8 and np.abs(upright[0].astype(int) - np.rot90(frames[0], -1)).mean() > 5 * error


def test_video_writer_copies_audio_and_timestamps_and_aborts_cleanly(tmp_path):
    _, frames = clip_frames(6)
    write_video(tmp_path / 'in.mp4', frames)
    with VideoReader(str(tmp_path / 'in.mp4')) as reader:
        decoded = list(reader)
        writer = VideoWriter(str(tmp_path / 'out.mp4'), reader.frame_rate, reader.time_base,
                             audio_source=str(tmp_path / 'in.mp4'))
    writer.write(np.stack([f.image for f in decoded]), [f.pts for f in decoded])
    writer.close()
    out, facts, audio = read_video(tmp_path / 'out.mp4')
    assert len(out) == 6 and facts['rate'] == NTSC and audio == ['aac']

    aborted = VideoWriter(str(tmp_path / 'aborted.mp4'), NTSC)
    aborted.write(np.stack([f.image for f in decoded[:2]]), [0, 1])
    aborted.abort()
    assert sorted(os.listdir(tmp_path)) == ['in.mp4', 'out.mp4']


def test_pipeline_stops_and_raises_when_a_writer_fails():
    read = []

    def source():
        for i in range(1000):
            read.append(i)
            yield i

    def failing_sink(item):
        if item == 3:
            raise OSError('disk full')

    threads_before = threading.active_count()
    with pytest.raises(OSError, match='disk full'):
        run_pipeline(source(), lambda item: {'ok': item, 'bad': item}, {'ok': lambda item: None, 'bad': failing_sink},
                     queue_size=2)
    assert len(read) < 50  # the reader stopped instead of decoding everything
    assert threading.active_count() == threads_before


def test_replacement_background_accepts_colours_and_names_a_bad_one(tmp_path):
    assert parse_colour('white') == (255, 255, 255)
    assert parse_colour('#78ff9b') == (120, 255, 155) == parse_colour('120, 255, 155')
    colour = ReplacementBackground('#ff0000')
    assert colour.frame((160, 96)).tolist() == [[[255, 0, 0]]]
    save_png(tmp_path / 'beach.png', textured_plate(300, 100))
    image = ReplacementBackground(str(tmp_path / 'beach.png'))
    assert image.frame((160, 96)).shape == (96, 160, 3) and image.frame((160, 96)) is image.frame((160, 96))
    with pytest.raises(InputError, match="--replacement-background beach.jpg: no such file, and not a colour"):
        ReplacementBackground('beach.jpg')


def test_matting_outputs_and_a_static_plate_uploaded_once():
    torch.manual_seed(0)
    model = MattingRefine('mobilenetv2', backbone_scale=0.5, refine_sample_pixels=2000).eval()
    matting = Matting(model, torch.device('cpu'), torch.float32, ['com', 'pha', 'fgr', 'err', 'ref', 'composite'])
    plate, frames = clip_frames(2, width=150, height=90)  # sides not multiples of 4
    blue = np.array([[[0, 0, 255]]], np.uint8)
    images = matting(np.stack(frames), plate, blue)
    channels = dict(com=4, pha=1, fgr=3, err=1, ref=1, composite=3)
    assert {k: (v.shape, v.dtype) for k, v in images.items()} == {
        k: ((2, 90, 150, c), np.uint8) for k, c in channels.items()}
    uploaded = matting._uploads['bgr'][1]
    matting(np.stack(frames[:1]), plate, blue)
    assert matting._uploads['bgr'][1] is uploaded and matting.frames == 3
    with pytest.raises(InputError, match="'ref'.*MattingRefine"):
        Matting(MattingBase('mobilenetv2'), torch.device('cpu'), torch.float32, ['ref'])


def test_two_images_of_one_name_are_refused(tmp_path):
    for name in ('0001.png', '0002.png', '0002.jpg'):
        Image.new('RGB', (8, 8)).save(tmp_path / name)
    with pytest.raises(InputError, match=r"0002.jpg and 0002.png|0002.png and 0002.jpg"):
        ImageSequenceReader(str(tmp_path))
    with pytest.raises(InputError, match=r"--src .*0002.(jpg|png) have the same name without extension"):
        pair_images(str(tmp_path), str(tmp_path))
    os.remove(tmp_path / '0002.jpg')
    assert ImageSequenceReader(str(tmp_path)).num_frames == 2


def test_the_small_frame_warning_does_not_say_the_bundled_model_was_loaded():
    """It spoke of 'the bundled model's matte' whatever checkpoint the user gave."""
    from inference_utils import small_input_warning
    message = small_input_warning(MattingRefine('mobilenetv2', backbone_scale=0.25), 96, 160)
    assert "the bundled model's matte" not in message
    assert ('give the base network 40x24 pixels; below 120 on the short side its matte misses part of the subject '
            '(measured with the bundled model, which misses most of it below 30)') in message
