"""The clean plate checked through a clip (inference.plates.PlateWatch), not against its first frame only:
a panning camera is caught, with the frame; a fade from black, dark and flat frames raise no false alarm."""
import cv2
import numpy as np
import pytest

import inference_video
from inference.plates import PlateWatch, compare_plate
from test_inference_utils import composite_subject, model_args, write_video

WIDTH, HEIGHT, RATE = 160, 96, 30


def canvas(width, seed=0):
    """(HEIGHT, width, 3) uint8: a scene textured everywhere, so that a shift of a few pixels shows."""
    noise = np.random.default_rng(seed).integers(0, 256, (HEIGHT, width, 3)).astype(np.uint8)
    blurred = cv2.GaussianBlur(noise, (0, 0), 1.5).astype(np.float32)
    return np.clip((blurred - 128) * 3.5 + 128, 0, 255).astype(np.uint8)   # contrast of a real scene


def panning_clip(frames, start_panning, speed=1):
    """A plate and frames of a subject in front of a camera that stands still, then pans `speed` px a frame."""
    scene = canvas(WIDTH + frames * speed)
    plate = scene[:, :WIDTH]
    images = []
    for index in range(frames):
        x = max(0, index - start_panning) * speed
        images.append(composite_subject(np.ascontiguousarray(scene[:, x:x + WIDTH]), 0.5)[0])
    return plate, images


def fade_in(plate, frames, length):
    """A subject before the plate's scene, faded in from black over the first `length` frames."""
    src = composite_subject(plate, 0.4)[0].astype(np.float32)
    return [np.round(src * min(1.0, index / length)).astype(np.uint8) for index in range(frames)]


def warnings_of(watch, frames, plate):
    return [(index, problem) for index, frame in enumerate(frames)
            if (problem := watch.check(index, frame, plate)) is not None]


def test_a_pan_is_caught_once_with_its_frame():
    plate, frames = panning_clip(200, start_panning=70)
    found = warnings_of(PlateWatch(RATE), frames, plate)
    # Judged at 0, 60, 120 (2 s at 30 fps): matching at 60, 50 px off at 120; said once.
    assert len(found) == 1 and found[0][0] == 120, found
    assert found[0][1].startswith('frame 120 (4.0 s): the clean plate no longer matches the source: the picture '
                                  'moved by -50, +0 pixels against it (it matched at frame 60): a camera pan')
    assert warnings_of(PlateWatch(RATE), panning_clip(200, start_panning=1000)[1], plate) == []   # no pan


def test_a_fade_from_black_and_dark_or_flat_frames_are_not_judged():
    plate = canvas(WIDTH)
    frames = fade_in(plate, 150, length=45)   # 1.5 s from black
    assert compare_plate(frames[0], plate) is None and compare_plate(frames[5], plate) is None
    assert warnings_of(PlateWatch(RATE), frames, plate) == []
    # Mid-fade, judged: the plate's brightness is matched to the frame's, so the scene is the same.
    match = compare_plate(frames[30], plate)
    assert match.changed < 0.5 and max(map(abs, match.shift)) < 0.5
    # Flat frames (a title card) say nothing; the next frame due is judged instead.
    flat = [np.full((HEIGHT, WIDTH, 3), 200, np.uint8)] * 70 + fade_in(plate, 80, length=1)
    watch = PlateWatch(RATE)
    assert warnings_of(watch, flat, plate) == [] and watch.judged == 120
    # Another scene from the start is still said at once, at the first frame that can be judged.
    other = canvas(WIDTH, seed=5)
    found = warnings_of(PlateWatch(RATE), [np.zeros_like(other)] * 10 + [other] * 100, plate)
    assert len(found) == 1 and found[0][1].startswith('frame 60 (2.0 s): the clean plate differs from the source')


def test_a_plate_from_the_first_frames_is_not_said_to_miss_the_subject():
    plate = canvas(WIDTH)
    assert 'nearly identical' in warnings_of(PlateWatch(RATE), [plate] * 10, plate)[0][1]
    assert warnings_of(PlateWatch(RATE, first=False), [plate] * 10, plate) == []


@pytest.mark.parametrize('clip, expected', [('fade', None), ('pan', 'frame 40 (4.0 s): the clean plate no longer')])
def test_inference_video_checks_the_plate_through_the_clip(tmp_path, checkpoint, capsys, clip, expected):
    """A clip fading in from black warned that the plate 'differs from the source in 100% of the
    picture'; a panning clip drifted away from its plate unnoticed. (10 fps: a frame judged every 20.)"""
    if clip == 'fade':
        plate = canvas(WIDTH)
        frames = fade_in(plate, 25, length=10)
    else:
        plate, frames = panning_clip(45, start_panning=25)
    cv2.imwrite(str(tmp_path / 'plate.png'), plate[:, :, ::-1])
    write_video(tmp_path / 'take.mp4', frames, rate=10, audio=False)
    assert inference_video.main([str(a) for a in (
        '--video-src', tmp_path / 'take.mp4', '--video-bgr', tmp_path / 'plate.png', '--output-dir', tmp_path / 'out',
        '--output-types', 'pha', '--disable-progress', *model_args(checkpoint))]) is None
    warnings = [line for line in capsys.readouterr().err.splitlines() if 'clean plate' in line]
    if expected is None:
        assert warnings == []
    else:
        assert len(warnings) == 1 and f'take.mp4, {expected}' in warnings[0], warnings
