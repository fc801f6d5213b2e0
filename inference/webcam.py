"""Live matting of a camera, a stream or a video file: a window, a virtual camera and a video file out
(the work of `inference_webcam.py`, `run`)."""
import argparse
import os
import time
from fractions import Fraction
from typing import Optional

import cv2
import numpy as np

from common.devices import cudnn_autotuning

from .cli import InputError, parse_size
from .files import check_not_existing, prepare_output_dir
from .matting import COMPOSITE, Matting, Throughput
from .model import load_model_or_exit
from .pipeline import WorkerThread
from .plates import median_plate
from .readers import Capture, ReplacementBackground
from .writers import VideoWriter


WINDOW_TITLE = 'Background Matting V2'


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
    plate_frames = args.bgr_first_frames if args.bgr_first_frames is not None else (1 if args.headless else 0)
    if plate_frames < 0 or (args.headless and plate_frames == 0):
        parser.error('--bgr-first-frames must be at least 1 (with --headless the plate cannot come from the B key)')
    if args.output:
        if not args.overwrite:
            check_not_existing([args.output], 'pass --overwrite to replace it')
        prepare_output_dir(os.path.dirname(os.path.abspath(args.output)), option='--output')
    pyvirtualcam = import_pyvirtualcam() if args.virtual_camera else None
    background = ReplacementBackground(args.replacement_background)
    model, device, dtype = load_model_or_exit(parser, args)
    matting = Matting(model, device, dtype, [COMPOSITE])
    capture = Capture(args.source, parse_size(args.resolution, '--resolution'))
    live = LiveMatting(matting, capture, background, plate_frames)
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


class LiveMatting:
    """The live loop: frames from `capture`, the clean plate from the first `plate_frames` of them (or the
    B key), the composite over `background` shown, sent to a virtual camera and written to a video."""

    def __init__(self, matting: Matting, capture: Capture, background: ReplacementBackground, plate_frames: int):
        self.matting, self.capture, self.background, self.plate_frames = matting, capture, background, plate_frames
        self.window = self.camera = self.writer = self.output = None
        self.plate: Optional[np.ndarray] = None
        self.first_frames, self.matted, self.start = [], 0, None

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
            if key == 'b':
                self.plate = frame
            elif key == 'q':
                return

    def step(self, frame: np.ndarray):
        """One frame: (the image to show, the status line)."""
        if self.plate is None and len(self.first_frames) < self.plate_frames:  # they make the plate, unmatted
            self.first_frames.append(frame)
            if len(self.first_frames) == self.plate_frames:
                self.plate = median_plate(self.first_frames)
            return frame, 'taking the clean plate'
        if self.plate is None:
            return frame, 'step out of view and press B to take the clean plate'
        self.start = self.start or time.perf_counter()
        composite = self.matting(frame[None], self.plate, self.background.frame(self.capture.size),
                                 label='frame')[COMPOSITE]
        if self.output:
            elapsed = time.perf_counter() - self.start
            self.output.put((composite, [round(elapsed * 1000) if self.capture.live else self.matted]))
        if self.camera:
            self.camera.send(composite[0])
        self.matted += 1
        return composite[0], 'B: new clean plate, Q: quit'

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
