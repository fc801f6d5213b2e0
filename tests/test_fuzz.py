"""A seeded fuzz of every reader (issue 28): checkpoints, image pairs, videos and evaluation folders,
each mutated a few dozen ways (`broken_files.mutations`: truncations, flipped bits, swapped blocks,
zeroed headers, empty files). Every mutation must end in a clean one-line error naming the file, or in
a correct output, with a warning naming the file where the output is not all of the input: never a
traceback, a hang, a partial file or a silently wrong output. (The model runs as written, --eager: the
readers are what is tested, and the optimized model's set-up is slower than these tiny clips.)
"""
import contextlib
import csv
import io
import os
import re
import signal
import subprocess
from collections import Counter

import av
import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

import evaluate
import inference_images
import inference_video
from broken_files import mutations
from ffmpeg_tools import make_clip, needs_ffmpeg
from model.checkpoint import CheckpointError, is_torchscript_archive, read_state_dict
from test_inference_utils import composite_subject, leftovers, model_args, save_png, textured_plate


@pytest.fixture(autouse=True)
def one_thread():
    """The clips are tiny: one thread does the model's work without waiting on a second core that other
    tests may be using."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@contextlib.contextmanager
def deadline(seconds, what):
    """Fails `what` if it runs longer than `seconds` (a hang), instead of waiting for it forever."""
    def expire(signum, frame):
        raise TimeoutError(f'{what}: still running after {seconds} s')
    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def run_script(module, argv):
    """Runs a script's main in this process: its exit status (0 when it returned)."""
    try:
        module.main([str(a) for a in argv])
    except SystemExit as exit:
        return exit.code
    return 0


def errors(err):
    """The lines of stderr that are not warnings (a clean failure has exactly one)."""
    return [line for line in err.splitlines() if line.strip() and not line.startswith('warning:')]


def decodes(path):
    """The size of an image as shown, or None if Pillow cannot decode all of it: the reference of which
    mutated images are readable."""
    try:
        with Image.open(path) as image:
            image.load()
            return ImageOps.exif_transpose(image).size
    except Exception:
        return None


def label_file(label, suffix):
    return label.replace(' ', '-') + suffix


def test_checkpoints(tmp_path):
    torch.manual_seed(28)
    weights = {f'layer{i}.weight': torch.randn(32, 4 * (i + 1)) for i in range(12)}
    good = tmp_path / 'weights.pth'
    torch.save(weights, good)
    script = tmp_path / 'script.pt'
    torch.jit.save(torch.jit.script(torch.nn.Linear(16, 16)), script)
    scripted = torch.jit.load(script).state_dict()
    outcomes = Counter()
    for source, count, seed in ((good, 40, 1), (script, 15, 2)):
        for label, data in mutations(source.read_bytes(), count, seed):
            path = tmp_path / label_file(label, source.suffix)
            path.write_bytes(data)
            with deadline(30, label):
                if is_torchscript_archive(str(path)):  # only an intact one (which never raises)
                    loaded = torch.jit.load(path).state_dict()
                    assert all(torch.equal(loaded[k], scripted[k]) for k in scripted), label
                    outcomes['intact TorchScript'] += 1
                    continue
                try:
                    loaded, _ = read_state_dict(str(path))
                except CheckpointError as error:
                    text = str(error)
                    assert path.name in text and '\n' not in text, (label, text)
                    outcomes['refused'] += 1
                    continue
            # Loaded: only where the weights are the very ones saved (a flip in padding, say).
            assert source == good and loaded.keys() == weights.keys(), label
            assert all(torch.equal(loaded[k], weights[k]) for k in weights), f'{label}: loaded other weights'
            outcomes['same weights'] += 1
    assert outcomes['refused'] >= 40, outcomes


def image_bytes(image, fmt):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt, **({'quality': 90} if fmt == 'JPEG' else {}))
    return buffer.getvalue()


def test_image_pairs(tmp_path, checkpoint, capsys):
    names = [f'{index:04d}' for index in range(32)]
    (tmp_path / 'src').mkdir()
    for index, name in enumerate(names):
        fmt, suffix = ('PNG', '.png') if index % 2 else ('JPEG', '.jpg')
        plate = textured_plate(64, 48, seed=index)
        save_png(tmp_path / 'bgr' / f'{name}.png', plate)
        (tmp_path / 'src' / f'{name}{suffix}').write_bytes(image_bytes(composite_subject(plate)[0], fmt))
    # 24 of the 32 pairs damaged: the source of 12 (JPEG and PNG), the plate of 12.
    damaged = [next((tmp_path / 'src').glob(f'{name}.*')) for name in names[:12]] + \
        [tmp_path / 'bgr' / f'{name}.png' for name in names[12:24]]
    for index, path in enumerate(damaged):
        path.write_bytes(mutations(path.read_bytes(), 5, index)[index % 5][1])
    readable = set()
    for name in names:
        src = decodes(next((tmp_path / 'src').glob(f'{name}.*')))
        if src is not None and src == decodes(tmp_path / 'bgr' / f'{name}.png'):
            readable.add(name)
    out = tmp_path / 'out'
    with deadline(120, 'inference_images.py over damaged pairs'):
        status = run_script(inference_images, ['--src', tmp_path / 'src', '--bgr', tmp_path / 'bgr', '--output-dir',
                                               out, '--output-types', 'pha', '--disable-progress', '--eager',
                                               *model_args(checkpoint)])
    err = capsys.readouterr().err
    assert 'Traceback' not in err, err
    skipped = {m.group(1) for m in re.finditer(r'^warning: skipped (\d{4}): ', err, re.M)}
    written = {os.path.splitext(f)[0] for f in os.listdir(out / 'pha')} if (out / 'pha').exists() else set()
    assert written == readable and skipped == set(names) - readable, (sorted(written), sorted(skipped))
    for name in written:  # complete, at the source's size
        assert decodes(out / 'pha' / f'{name}.png') == (64, 48), name
    assert not leftovers(tmp_path)
    assert status == (1 if skipped else 0) and len(errors(err)) == (1 if skipped else 0), err
    if skipped:
        assert errors(err)[0].startswith(f'inference_images.py: error: {len(written)} of 32 image pairs matted; '
                                         f'{len(skipped)} skipped'), err


def read_frames(path):
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


@needs_ffmpeg
def test_videos(tmp_path, checkpoint, capsys):
    audio = 'sine=sample_rate=48000:duration=0.6'
    clips = [make_clip(tmp_path / 'clip.mkv', '-c:v', 'libx264', '-c:a', 'flac', size='64x48', frames=15, audio=audio),
             make_clip(tmp_path / 'clip.webm', '-c:v', 'libvpx-vp9', '-deadline', 'realtime', '-c:a', 'libopus',
                       size='64x48', frames=15, audio=audio),
             make_clip(tmp_path / 'clip.mp4', '-c:v', 'libx264', '-c:a', 'aac', size='64x48', frames=15, audio=audio)]
    outcomes = Counter()
    for seed, clip in enumerate(clips):
        for label, data in mutations(clip.read_bytes(), 8, 10 + seed):
            source = tmp_path / label_file(f'{clip.stem}-{label}', clip.suffix)
            source.write_bytes(data)
            out = tmp_path / f'out-{source.name}'
            with deadline(60, f'inference_video.py {source.name}'):
                status = run_script(inference_video, ['--video-src', source, '--bgr-first-frames', '1', '--output-dir',
                                                      out, '--output-types', 'pha', '--disable-progress',
                                                      '--eager', *model_args(checkpoint)])
            err = capsys.readouterr().err
            warned = [line for line in err.splitlines() if line.startswith('warning:') and source.name in line
                      and 'frames of' not in line]
            assert 'Traceback' not in err and not leftovers(tmp_path), (source.name, err)
            if status != 0:
                assert status == 1 and len(errors(err)) == 1 and source.name in errors(err)[0], (source.name, err)
                assert not (out / 'pha.mp4').exists(), source.name
                outcomes['refused'] += 1
                continue
            frames = read_frames(out / 'pha.mp4')
            audio_errors = subprocess.run(['ffmpeg', '-v', 'error', '-i', out / 'pha.mp4', '-map', '0:a?', '-f', 'null',
                                           '-'], capture_output=True, text=True).stderr.strip()
            # What FFmpeg's own decoders find wrong in the source (the demuxer's complaints about elements
            # that hold nothing the output needs aside).
            source_errors = [line for line in subprocess.run(
                ['ffmpeg', '-v', 'error', '-i', source, '-f', 'null', '-'], capture_output=True, text=True
            ).stderr.splitlines() if not re.match(r'\[(matroska|mov|NULL)', line)]
            if frames < 14 or audio_errors or source_errors:
                assert warned, (source.name, frames, audio_errors, source_errors, err)
                outcomes['matted with a warning'] += 1
            else:
                outcomes['matted'] += 1
    assert outcomes['matted with a warning'] >= 3 and outcomes['refused'] >= 3, outcomes


def save_gray(path, alpha):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round(alpha * 255).astype(np.uint8)).save(path)


def test_evaluation_folders(tmp_path, capsys):
    rng = np.random.default_rng(28)
    pred, true = tmp_path / 'pred', tmp_path / 'true'
    names = [f'{index:04d}' for index in range(36)]
    for name in names:
        alpha = (rng.random((24, 32)) > 0.5).astype(float)
        save_gray(true / f'{name}.png', alpha)
        save_gray(pred / f'{name}.png', np.clip(alpha + rng.normal(0, 0.1, alpha.shape), 0, 1))
    damaged = [pred / f'{name}.png' for name in names[:20]] + [true / f'{name}.png' for name in names[20:32]]
    for index, path in enumerate(damaged):
        path.write_bytes(mutations(path.read_bytes(), 5, index)[index % 5][1])
    readable = {name for name in names
                if decodes(pred / f'{name}.png') is not None and decodes(pred / f'{name}.png') == decodes(
                    true / f'{name}.png')}
    with deadline(60, 'evaluate.py over damaged folders'):
        status = run_script(evaluate, ['--pred', pred, '--true', true, '--mode', 'frame', '--out', tmp_path / 'out'])
    err = capsys.readouterr().err
    assert 'Traceback' not in err, err
    skipped = {m.group(1) for m in re.finditer(r'^warning: skipped (\d{4}): ', err, re.M)}
    assert skipped == set(names) - readable, err
    assert status == (1 if skipped else 0) and len(errors(err)) == (1 if skipped else 0), err
    with open(tmp_path / 'out' / 'per_file.csv') as file:
        rows = {row['file']: float(row['MSE(x1e3)']) for row in csv.DictReader(file)}
    assert set(rows) == readable
    for name, value in rows.items():  # each from its own files, as they decode
        p, t = (np.asarray(Image.open(folder / f'{name}.png'), dtype=np.float64) / 255 for folder in (pred, true))
        assert value == pytest.approx(np.mean((p - t) ** 2) * 1e3, rel=1e-6), name
