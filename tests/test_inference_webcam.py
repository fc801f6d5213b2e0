"""inference_webcam.py without a display: --headless on a video file made by the test."""
import importlib.util
import re

import cv2
import numpy as np
import pytest
import torch

import inference_webcam
from test_inference_utils import NTSC, clip_frames, leftovers, model_args, read_video, textured_plate, write_video


@pytest.fixture(scope='module')
def camera_file(tmp_path_factory):
    """A 'camera' recording: the empty scene first, then the subject walking in (8 frames, 160x96)."""
    plate, frames = clip_frames(7)
    path = tmp_path_factory.mktemp('webcam') / 'camera.mp4'
    write_video(path, [plate] + frames, audio=False)
    return path


def run(*argv):
    try:
        inference_webcam.main([str(a) for a in argv])
    except SystemExit as exit:
        return exit.code
    return 0


def test_headless_run_on_a_video_file_writes_the_composite(camera_file, checkpoint, tmp_path, capsys):
    output = tmp_path / 'webcam.mp4'
    assert run('--source', camera_file, '--headless', '--max-frames', '5', '--output', output,
               '--replacement-background', '#0000ff', *model_args(checkpoint)) == 0
    assert re.search(r'5 frames in .* s: model only .* fps, end to end .* fps', capsys.readouterr().out)
    frames, facts, _ = read_video(output)
    assert len(frames) == 5 and frames[0].shape == (96, 160, 3) and facts['rate'] == NTSC
    # Random weights give almost no alpha: the composite is mostly the blue background.
    assert np.median(frames[0].reshape(-1, 3), axis=0)[2] > 200

    # A file ending before --max-frames ends the run: the plate frame and 7 matted ones.
    assert run('--source', camera_file, '--headless', '--max-frames', '100', '--output', output, '--overwrite',
               *model_args(checkpoint)) == 0
    assert len(read_video(output)[0]) == 7
    assert not leftovers(tmp_path)


@pytest.mark.skipif(importlib.util.find_spec('pyvirtualcam') is not None, reason='pyvirtualcam is installed')
def test_missing_pyvirtualcam_is_named(camera_file, checkpoint, capsys):
    assert run('--source', camera_file, '--headless', '--virtual-camera', *model_args(checkpoint)) == 1
    assert 'needs the pyvirtualcam package' in capsys.readouterr().err


def test_bad_source_and_existing_output_end_with_a_clear_message(camera_file, checkpoint, tmp_path, capsys):
    assert run('--source', tmp_path / 'nothing.mp4', '--headless', *model_args(checkpoint)) == 1
    assert 'nothing.mp4: not a camera index, a stream URL or an existing video file' in capsys.readouterr().err
    (tmp_path / 'taken.mp4').write_bytes(b'earlier')
    assert run('--source', camera_file, '--headless', '--output', tmp_path / 'taken.mp4',
               *model_args(checkpoint)) == 1
    assert 'taken.mp4 already exists' in capsys.readouterr().err
    assert (tmp_path / 'taken.mp4').read_bytes() == b'earlier'


# --------------------------------------------------------------------------- the model, the plate, progress

def test_without_a_checkpoint_the_bundled_model_is_used(camera_file, capsys):
    """It required --model-checkpoint; the other scripts default to the bundled model."""
    assert run('--source', camera_file, '--headless', '--max-frames', '2', '--device', 'cpu') == 0
    assert 'Using the bundled demonstration model' in capsys.readouterr().out


def test_a_clean_plate_file_is_used_from_the_first_frame(camera_file, checkpoint, tmp_path, capsys):
    plate, _ = clip_frames(7)
    cv2.imwrite(str(tmp_path / 'plate.png'), cv2.resize(plate, (320, 192))[:, :, ::-1])   # same framing, 2x
    output = tmp_path / 'webcam.mp4'
    assert run('--source', camera_file, '--headless', '--bgr', tmp_path / 'plate.png', '--output', output,
               *model_args(checkpoint)) == 0
    assert len(read_video(output)[0]) == 8          # every frame matted: none went into the plate
    assert 'clean plate' not in capsys.readouterr().err
    cv2.imwrite(str(tmp_path / 'square.png'), plate[:, :96])
    assert run('--source', camera_file, '--headless', '--bgr', tmp_path / 'square.png', *model_args(checkpoint)) == 1
    assert 'square.png is 96x96 but the source gives 160x96 frames' in capsys.readouterr().err
    cv2.imwrite(str(tmp_path / 'other.png'), textured_plate(160, 96, seed=7)[::-1])
    assert run('--source', camera_file, '--headless', '--bgr', tmp_path / 'other.png', '--max-frames', '2',
               *model_args(checkpoint)) == 0
    assert '--bgr: the clean plate differs from the source' in capsys.readouterr().err


def test_a_plate_taken_with_the_subject_in_view_is_warned_about(checkpoint, tmp_path, capsys):
    """Frame 0 as the plate with the subject in it: said, where it was taken silently."""
    _, frames = clip_frames(8)
    write_video(tmp_path / 'subject.mp4', frames, audio=False)
    assert run('--source', tmp_path / 'subject.mp4', '--headless', *model_args(checkpoint)) == 0
    err = capsys.readouterr().err
    assert 'the clean plate may show the subject: the frames around it differ from it in' in err
    assert 'give a clean plate with --bgr FILE' in err


class FakeCapture:
    live, frame_rate = False, NTSC

    def __init__(self, frames):
        self.frames, self.size = list(frames), (frames[0].shape[1], frames[0].shape[0])

    def read(self):
        return self.frames.pop(0) if self.frames else None

    def close(self):
        pass


class FakeWindow:
    """Presses `keys[i]` on the i-th frame shown; keeps the status lines."""

    def __init__(self, keys):
        self.keys, self.statuses = dict(keys), []

    def show(self, image, status):
        self.statuses.append(status)
        return self.keys.get(len(self.statuses) - 1, '')

    def close(self):
        pass


def live_matting(frames, keys):
    from inference.matting import COMPOSITE, Matting
    from inference.readers import ReplacementBackground
    from inference.webcam import LiveMatting
    from model import MattingRefine
    model = MattingRefine('mobilenetv2', backbone_scale=0.5, refine_sample_pixels=2000).eval()
    live = LiveMatting(Matting(model, torch.device('cpu'), torch.float32, [COMPOSITE]), FakeCapture(frames),
                       ReplacementBackground('white'), plate_frames=0)
    live.window = FakeWindow(keys)
    live.loop(None)
    return live


def test_the_b_key_takes_the_plate_again_and_checks_it(capsys):
    plate, frames = clip_frames(8)
    # Out of view at B (frame 2), walking in right after: the plate matches the frames before it: silent.
    live = live_matting([plate] * 3 + frames, {2: 'b'})
    assert live.plate is not None and live.matted == len(frames)
    assert 'clean plate' not in capsys.readouterr().err
    assert live.window.statuses[0] == 'step out of view and press B to take the clean plate'
    assert live.window.statuses[-1] == 'B: new clean plate, Q: quit'
    # B again with the subject in view (and moving): the new plate is taken, and said to show the subject.
    live = live_matting([plate] * 3 + frames, {2: 'b', 5: 'b'})
    assert live.plate is frames[2] and live.matted == len(frames)
    assert 'the clean plate may show the subject: the frames around it differ' in capsys.readouterr().err
    assert live.window.statuses[-1] == 'the plate may show the subject: step out of view, press B'


def test_headless_progress_is_a_line_every_few_seconds(camera_file, checkpoint, capsys, monkeypatch):
    import io
    from inference import webcam
    now = [0.0]
    out = io.StringIO()
    progress = webcam.ProgressLine(5.0, clock=lambda: now[0], out=out)
    for second in range(13):                        # 10 frames a second for 12 s
        now[0] = float(second)
        progress.update(10 * second)
    assert out.getvalue().splitlines() == ['50 frames matted, 10.0 frames/s', '100 frames matted, 10.0 frames/s']
    monkeypatch.setattr(webcam, 'PROGRESS_SECONDS', 0.0)   # the headless loop prints them
    assert run('--source', camera_file, '--headless', '--max-frames', '4', *model_args(checkpoint)) == 0
    lines = re.findall(r'^(\d+) frames matted, [\d.]+ frames/s$', capsys.readouterr().out, re.M)
    assert lines == ['1', '2', '3', '4']   # one after each frame matted (the first made the plate)
