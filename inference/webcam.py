"""Live matting of a camera, a stream or a video file: a window, a virtual camera and a video file out
(the work of `inference_webcam.py`, `run`)."""
import argparse
import os
import time
from fractions import Fraction
from typing import Optional

import cv2
import numpy as np

from inference_utils import load_model_or_exit

from .cli import InputError, parse_size
from .files import check_not_existing, prepare_output_dir
from .matting import COMPOSITE, Matting, Throughput
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
    window = writer = output = camera = None
    try:
        window = None if args.headless else Window(WINDOW_TITLE, show_fps=not args.hide_fps)
        camera = open_virtual_camera(pyvirtualcam, *capture.size, capture.frame_rate) if pyvirtualcam else None
        if args.output:
            # A live source drops frames: its frames are timed by the clock, a file's by its frame rate.
            writer = VideoWriter(args.output, capture.frame_rate,
                                 time_base=Fraction(1, 1000) if capture.live else None)
            output = WorkerThread(lambda item: writer.write(*item), queue_size=4, name='output')
        plate, first_frames, matted, start = None, [], 0, None
        while args.max_frames is None or matted < args.max_frames:
            frame = capture.read()
            if frame is None:
                break
            if plate is None and len(first_frames) < plate_frames:  # these frames make the plate, unmatted
                first_frames.append(frame)
                if len(first_frames) == plate_frames:
                    plate = median_plate(first_frames)
                shown, status = frame, 'taking the clean plate'
            elif plate is None:
                shown, status = frame, 'step out of view and press B to take the clean plate'
            else:
                start = start or time.perf_counter()
                shown = matting(frame[None], plate, background.frame(capture.size), label='frame')[COMPOSITE]
                if output:
                    elapsed = time.perf_counter() - start
                    output.put((shown, [round(elapsed * 1000) if capture.live else matted]))
                shown, status = shown[0], 'B: new clean plate, Q: quit'
                if camera:
                    camera.send(shown)
                matted += 1
            key = window.show(shown, status) if window else ''
            if key == 'b':
                plate = frame
            elif key == 'q':
                break
        if plate is None and args.headless:
            raise InputError(f"--source {args.source} ended before the clean plate was taken")
        if output:
            output.close()
            if matted:
                writer.close()
                print(f"wrote {args.output}")
            else:  # quit before the plate was taken: nothing to keep
                writer.abort()
    except BaseException:
        if output:
            output.cancel()
        if writer:
            writer.abort()
        raise
    finally:
        capture.close()
        background.close()
        if window:
            window.close()
        if camera:
            camera.close()
    if matted:
        print(Throughput(matted, time.perf_counter() - start, matting.model_seconds))
