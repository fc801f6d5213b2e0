"""inference_webcam.py without a display: --headless on a video file made by the test."""
import importlib.util
import re

import numpy as np
import pytest

import inference_webcam
from test_inference_utils import NTSC, clip_frames, leftovers, model_args, read_video, write_video


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
