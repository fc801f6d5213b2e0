"""Live matting of a camera, a stream or a video file: a window, a virtual camera and a video file out
(the work of `inference_webcam.py`, `run`).

The clean plate comes from a file (--bgr), the B key, or the first frames. A plate taken on the spot is
compared with the frames just before and after it (`PlateCapture`): a scene with nobody in view is
still, so a plate that differs from its neighbours in a large region most likely shows the subject
(or something else that moves), and that is said. Without a window, a line of progress (frames/s)
is printed every few seconds."""
import argparse
import collections
import os
import sys
import time
from fractions import Fraction
from typing import Callable, List, Optional, Sequence

import cv2
import numpy as np

from common.devices import cudnn_autotuning

from .cli import InputError, parse_size, warn
from .files import check_not_existing, prepare_output_dir
from .matting import COMPOSITE, Matting, Throughput
from .model import load_model_or_exit
from .pipeline import WorkerThread
from .plates import PLATE_DIFFERENT_FRACTION, changed_fraction, median_plate, plate_problem
from .readers import Capture, ReplacementBackground, read_image, resize_image
from .writers import VideoWriter


WINDOW_TITLE = 'Background Matting V2'
# A plate taken on the spot is compared with this many frames before it (B key) and after it.
PLATE_CAPTURE_FRAMES = 4
# ... and said to show something that moves when it differs from both (the median of the frames
# before, and that of the frames after) in more than this share of the picture: camera noise stays far
# below it (see plates.PLATE_CHANGE_LEVEL), a person in view, never quite still, above.
PLATE_MOVING_FRACTION = 0.01
PROGRESS_SECONDS = 5.0  # a line of progress every this many seconds without a window


class PlateCapture:
    """The check of a plate taken from the live frames: `add(frame)` for each frame after it; once
    PLATE_CAPTURE_FRAMES came, the warning (a str) if the plate looks like it shows the subject, else None.

    before: the frames just before the plate was taken (none for a plate from the first frames). A
        scene that only changes after the plate (the subject walking in once it is taken) matches the
        frames before; one with the subject in it matches neither.
    """

    def __init__(self, plate: np.ndarray, before: Sequence[np.ndarray] = ()):
        self.plate, self.after = plate, []
        self.before = float(np.median([changed_fraction(f, plate) for f in before])) if before else None

    def add(self, frame: np.ndarray) -> Optional[str]:
        if len(self.after) >= PLATE_CAPTURE_FRAMES:
            return None
        self.after.append(changed_fraction(frame, self.plate))
        if len(self.after) < PLATE_CAPTURE_FRAMES:
            return None
        moving = float(np.median(self.after))
        if self.before is not None:
            moving = min(moving, self.before)
        if moving <= PLATE_MOVING_FRACTION:
            return None
        return (f"the clean plate may show the subject: the frames around it differ from it in {moving:.0%} of "
                "the picture, where a scene with nobody in view stays still")


class ProgressLine:
    """A line of progress every `interval` seconds (for runs without a window: logs, servers)."""

    def __init__(self, interval: float = PROGRESS_SECONDS, clock: Callable[[], float] = time.perf_counter,
                 out=None):
        self.interval, self.clock, self.out = interval, clock, out
        self.since, self.frames = None, 0

    def update(self, frames: int) -> None:
        """frames: the frames matted so far."""
        now = self.clock()
        if self.since is None:
            self.since, self.frames = now, frames
        elif now - self.since >= self.interval:
            rate = (frames - self.frames) / (now - self.since)
            print(f"{frames} frames matted, {rate:.1f} frames/s", file=self.out or sys.stdout, flush=True)
            self.since, self.frames = now, frames


class FPSCounter:
    """Frames per second as an exponential moving average of the time between ticks."""

    def __init__(self, smoothing: float = 0.9):
        self.smoothing, self.fps, self._last = smoothing, None, None

    def tick(self) -> Optional[float]:
        now = time.perf_counter()
        if self._last is not None and now > self._last:
            rate = 1 / (now - self._last)
            self.fps = rate if self.fps is None else self.smoothing * self.fps + (1 - self.smoothing) * rate
        self._last = now
        return self.fps


class Window:
    """An OpenCV window showing RGB frames, with a status line; `show` returns the key pressed, lower case."""

    def __init__(self, title: str, show_fps: bool):
        self.title, self.show_fps, self.fps = title, show_fps, FPSCounter()
        try:
            cv2.namedWindow(title, cv2.WINDOW_NORMAL)
        except cv2.error as error:
            raise InputError(f"cannot open a window ({error.msg.strip()}); is there a display? "
                             "Use --headless to run without one") from error

    def show(self, image: np.ndarray, status: str) -> str:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        fps = self.fps.tick()
        text = f"{fps:.1f} fps | {status}" if self.show_fps and fps else status
        cv2.putText(image, text, (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(image, text, (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 1, cv2.LINE_AA)
        cv2.imshow(self.title, image)
        key = cv2.waitKey(1) & 0xFF
        return 'q' if key == 27 else chr(key).lower()

    def close(self) -> None:
        cv2.destroyWindow(self.title)


def import_pyvirtualcam():
    """The optional pyvirtualcam module, imported only when --virtual-camera asks for it."""
    try:
        import pyvirtualcam
    except ImportError:
        raise InputError("--virtual-camera needs the pyvirtualcam package (pip install pyvirtualcam) and a virtual "
                         "camera driver (v4l2loopback on Linux, OBS on Windows and macOS)") from None
    return pyvirtualcam


def open_virtual_camera(pyvirtualcam, width: int, height: int, frame_rate: Fraction):
    try:
        return pyvirtualcam.Camera(width=width, height=height, fps=float(frame_rate))
    except RuntimeError as error:
        raise InputError(f"--virtual-camera: {error}") from error


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """The work of inference_webcam.py: options checked, then the model, then the live loop."""
    if args.max_frames is not None and args.max_frames < 1:
        parser.error('--max-frames must be at least 1')
    if args.bgr and args.bgr_first_frames is not None:
        parser.error('give the clean plate as --bgr FILE or --bgr-first-frames N, not both')
    plate_frames = args.bgr_first_frames if args.bgr_first_frames is not None else \
        (1 if args.headless and not args.bgr else 0)
    if plate_frames < 0 or (args.headless and plate_frames == 0 and not args.bgr):
        parser.error('--bgr-first-frames must be at least 1 (with --headless the plate cannot come from the B key)')
    if args.bgr and not os.path.isfile(args.bgr):
        parser.error(f'--bgr {args.bgr}: no such file')
    if args.output:
        if not args.overwrite:
            check_not_existing([args.output], 'pass --overwrite to replace it')
        prepare_output_dir(os.path.dirname(os.path.abspath(args.output)), option='--output')
    pyvirtualcam = import_pyvirtualcam() if args.virtual_camera else None
    plate = read_image(args.bgr) if args.bgr else None
    background = ReplacementBackground(args.replacement_background)
    model, device, dtype = load_model_or_exit(parser, args)
    matting = Matting(model, device, dtype, [COMPOSITE])
    capture = Capture(args.source, parse_size(args.resolution, '--resolution'))
    try:
        plate = None if plate is None else fit_plate(plate, capture.size, args.bgr)
    except BaseException:
        capture.close()
        raise
    live = LiveMatting(matting, capture, background, plate_frames, plate)
    live.progress = ProgressLine(PROGRESS_SECONDS) if args.headless else None
    try:
        live.open_outputs(None if args.headless else Window(WINDOW_TITLE, show_fps=not args.hide_fps),
                          pyvirtualcam, args.output)
        with cudnn_autotuning(device):  # a camera gives frames of one size
            live.loop(args.max_frames)
        if live.plate is None and args.headless:
            raise InputError(f"--source {args.source} ended before the clean plate was taken")
        live.finish(args.output)
    except BaseException:
        live.abort()
        raise
    finally:
        live.close()
    if live.matted:
        print(Throughput(live.matted, time.perf_counter() - live.start, matting.model_seconds))


def fit_plate(plate: np.ndarray, size, path: str) -> np.ndarray:
    """The clean plate of --bgr at the capture's size (W, H): resized when only its resolution differs."""
    height, width = plate.shape[:2]
    if (width, height) != tuple(size):
        if abs(width / height - size[0] / size[1]) > 0.01:
            raise InputError(f"--bgr {path} is {width}x{height} but the source gives {size[0]}x{size[1]} frames: "
                             "shoot the plate with the same camera and framing")
        plate = resize_image(plate, size)
    return plate


class LiveMatting:
    """The live loop: frames from `capture`, the clean plate given (--bgr), from the first `plate_frames`
    of them or from the B key (checked, see PlateCapture), the composite over `background` shown, sent
    to a virtual camera and written to a video."""

    def __init__(self, matting: Matting, capture: Capture, background: ReplacementBackground, plate_frames: int,
                 plate: Optional[np.ndarray] = None):
        self.matting, self.capture, self.background, self.plate_frames = matting, capture, background, plate_frames
        self.window = self.camera = self.writer = self.output = self.progress = None
        self.plate: Optional[np.ndarray] = plate
        self.plate_given = plate is not None   # checked against the first frame, as a file's plate is
        self.plate_check: Optional[PlateCapture] = None
        self.recent = collections.deque(maxlen=PLATE_CAPTURE_FRAMES)  # the frames before a B key
        self.notice = ''
        self.first_frames: List[np.ndarray] = []
        self.matted, self.start = 0, None

    def take_plate(self, plate: np.ndarray, before: Sequence[np.ndarray] = ()) -> None:
        """A new clean plate from the live frames, checked on the next ones (see PlateCapture)."""
        self.plate, self.plate_check, self.notice = plate, PlateCapture(plate, before), ''

    def open_outputs(self, window: Optional[Window], pyvirtualcam, path: Optional[str]) -> None:
        self.window = window
        if pyvirtualcam:
            self.camera = open_virtual_camera(pyvirtualcam, *self.capture.size, self.capture.frame_rate)
        if path:
            # A live source drops frames: its frames are timed by the clock, a file's by its frame rate.
            self.writer = VideoWriter(path, self.capture.frame_rate,
                                      time_base=Fraction(1, 1000) if self.capture.live else None)
            self.output = WorkerThread(lambda item: self.writer.write(*item), queue_size=4, name='output')

    def loop(self, max_frames: Optional[int]) -> None:
        while max_frames is None or self.matted < max_frames:
            frame = self.capture.read()
            if frame is None:
                return
            shown, status = self.step(frame)
            key = self.window.show(shown, status) if self.window else ''
            if self.progress:
                self.progress.update(self.matted)
            if key == 'b':
                self.take_plate(frame, list(self.recent)[:-1])  # before: the frames before this one
            elif key == 'q':
                return

    def step(self, frame: np.ndarray):
        """One frame: (the image to show, the status line)."""
        self.recent.append(frame)
        if self.plate is None and len(self.first_frames) < self.plate_frames:  # they make the plate, unmatted
            self.first_frames.append(frame)
            if len(self.first_frames) == self.plate_frames:
                self.take_plate(median_plate(self.first_frames))
            return frame, 'taking the clean plate'
        if self.plate is None:
            return frame, 'step out of view and press B to take the clean plate'
        self.check_plate(frame)
        self.start = self.start or time.perf_counter()
        composite = self.matting(frame[None], self.plate, self.background.frame(self.capture.size),
                                 label='frame')[COMPOSITE]
        if self.output:
            elapsed = time.perf_counter() - self.start
            self.output.put((composite, [round(elapsed * 1000) if self.capture.live else self.matted]))
        if self.camera:
            self.camera.send(composite[0])
        self.matted += 1
        return composite[0], self.notice or 'B: new clean plate, Q: quit'

    def check_plate(self, frame: np.ndarray) -> None:
        """Warns, once a plate, when a plate taken here looks like it shows the subject, or when the plate
        given does not fit the scene (nobody in view at the start is no fault of it)."""
        if self.plate_given:
            self.plate_given = False
            changed = changed_fraction(frame, self.plate)
            if changed > PLATE_DIFFERENT_FRACTION:
                warn(f"--bgr: {plate_problem(changed)}")
                self.notice = 'the plate does not fit the scene: press B to take one'
        elif self.plate_check is not None:
            problem = self.plate_check.add(frame)
            if problem:
                warn(problem + ('; step out of view and press B to take it again' if self.window else
                                '; start with nobody in view, or give a clean plate with --bgr FILE'))
                self.notice = 'the plate may show the subject: step out of view, press B'

    def finish(self, path: Optional[str]) -> None:
        if self.output:
            self.output.close()
            if self.matted:
                self.writer.close()
                print(f"wrote {path}")
            else:  # quit before the plate was taken: nothing to keep
                self.writer.abort()

    def abort(self) -> None:
        if self.output:
            self.output.cancel()
        if self.writer:
            self.writer.abort()

    def close(self) -> None:
        self.capture.close()
        self.background.close()
        if self.window:
            self.window.close()
        if self.camera:
            self.camera.close()
