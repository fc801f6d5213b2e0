"""Decoding images, and surviving the odd corrupt file in a data set of hundreds of thousands.

Images are opened through `common.images`, so the pixel limit of BGM_MAX_IMAGE_PIXELS holds for
training as for inference, and samples are read at their value: an alpha of 8 bits is a PIL 'L'
image, one of 16 bits (grayscale 'I;16', or the fourth channel of a 16-bit RGBA PNG) a `PreciseAlpha`,
a PIL 'F' image of 0 ~ 1 floats that keeps all 16 bits through the augmentation; a 16-bit grayscale
foreground or background is scaled to 8-bit RGB (65535 -> 255), never clipped.

A training data set skips an unreadable file with a warning and counts it; once a large share of
the files it tried failed, it stops with CorruptDataError instead of training on garbage.
"""
import contextlib
import os
import signal
import warnings
from pathlib import Path
from typing import Sequence, Tuple

import numpy as np
from PIL import Image, ImageFilter

from common.errors import UserError
from common.images import (SIXTEEN_BIT_MODES, ImageError, eight_bits, open_image, refuse_floating_point,
                           sixteen_bit_alpha, sixteen_bit_gray, stored_bits)

# What PIL raises for truncated, malformed or absurdly large files, and common.images for what it refuses.
DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError, ImageError)


class PreciseAlpha(Image.Image):
    """An alpha matte of more than 8 bits: a PIL 'F' image of 0 ~ 1 floats.

    It goes through the augmentation as an 'L' alpha does (every operation keeps the class), and
    also takes the filters that PIL runs on 8-bit images only: `ImageFilter.BoxBlur` and kernels such
    as `SHARPEN` run here in floating point, as PIL computes them less its rounding (clipped to 0 ~ 1
    as PIL clips to 0 ~ 255); any other filter runs on an 8-bit copy. `F.to_tensor` returns its
    values as they are: (1, H, W) float32, 0 ~ 1, like an 'L' alpha divided by 255.
    """

    @classmethod
    def from_array(cls, values: np.ndarray) -> 'PreciseAlpha':
        """values: (H, W), 0 ~ 1."""
        return cls._adopt(Image.fromarray(np.ascontiguousarray(values, dtype=np.float32)))

    @classmethod
    def _adopt(cls, image: Image.Image) -> Image.Image:
        if image.mode == 'F':
            image.__class__ = cls
        return image

    def _new(self, im):  # what crop, resize, reduce, transpose, filter, copy ... return
        return self._adopt(super()._new(im))

    def transform(self, *args, **kwargs):  # PIL makes its result with Image.new, not _new
        return self._adopt(super().transform(*args, **kwargs))

    def filter(self, filter):
        if self.mode != 'F':
            return super().filter(filter)
        filter = filter() if isinstance(filter, type) else filter
        values = np.asarray(self, dtype=np.float32)
        if isinstance(filter, ImageFilter.BoxBlur):
            return self.from_array(box_blur(values, filter.radius))
        if isinstance(filter, ImageFilter.BuiltinFilter):  # Kernel, and SHARPEN, SMOOTH ... (kernels too)
            return self.from_array(kernel_filter(values, *filter.filterargs))
        eight = Image.fromarray(eight_bits(values)).filter(filter)
        return self.from_array(np.asarray(eight, dtype=np.float32) / 255)


def box_blur(values: np.ndarray, radius) -> np.ndarray:
    """PIL's BoxBlur on (H, W) floats: a box of 2r + 1 pixels (the outer two weighted by the fraction of
    a fractional radius) along x, then along y, the edge pixels repeated."""
    import cv2
    rx, ry = (radius, radius) if isinstance(radius, (int, float)) else radius
    if rx == 0 and ry == 0:
        return values.copy()

    def weights(r):
        whole, part = int(r), r - int(r)
        taps = [part] + [1.0] * (2 * whole + 1) + [part] if part else [1.0] * (2 * whole + 1)
        return np.array(taps, np.float64) / (2 * r + 1)
    return cv2.sepFilter2D(values, -1, weights(rx), weights(ry), borderType=cv2.BORDER_REPLICATE).clip(0, 1)


def kernel_filter(values: np.ndarray, size, scale, offset, kernel) -> np.ndarray:
    """PIL's Kernel filter on (H, W) floats of 0 ~ 1: the kernel flipped vertically, divided by `scale`,
    `offset` (in 8-bit levels) added; the border that the kernel does not cover kept as it is."""
    import cv2
    width, height = size
    taps = np.array(kernel, np.float64).reshape(height, width)[::-1] / scale
    out = cv2.filter2D(values, -1, taps, borderType=cv2.BORDER_REPLICATE) + offset / 255
    mx, my = width // 2, height // 2
    result = values.copy()
    result[my:values.shape[0] - my, mx:values.shape[1] - mx] = out[my:values.shape[0] - my, mx:values.shape[1] - mx]
    return result.clip(0, 1)


class CorruptImageWarning(UserWarning):
    """An image could not be read and was skipped."""


class CorruptDataError(UserError):
    """Too many images of a data set could not be read: a user's data at fault, which the trainers
    report as one line (`prog: error: ...`) and exit status 1."""

    def __init__(self, message: str):
        # A DataLoader worker's error is raised again in the main process as this class made from
        # 'Caught CorruptDataError in DataLoader worker ... Original Traceback ...': keep the message,
        # the traceback's last line, not the worker's traceback.
        if message.startswith('Caught ') and '\nOriginal Traceback' in message:
            last = message.rstrip().splitlines()[-1]
            message = last.split(f'{type(self).__name__}: ', 1)[-1]
        super().__init__(message)


class UnreadableImage(ImageError):
    """An image file that failed to decode; `path` is the file (of a pair, the one at fault), and the
    message starts with it."""

    def __init__(self, path, error: object):
        message = str(error)
        super().__init__(message if message.startswith(str(path)) else f'{path}: {message}')
        self.path = str(path)

    def __reduce__(self):
        return type(self), (self.path, self.args[0])


@contextlib.contextmanager
def reading(path):
    """Names `path` in what decoding it raises (an `UnreadableImage`), so that a skipped sample's
    warning, and the folder a data set gives up on, are those of the file at fault."""
    try:
        yield
    except UnreadableImage:
        raise
    except DECODE_ERRORS as error:
        raise UnreadableImage(path, error) from error


def load_colour(path) -> Image.Image:
    """An image file as a PIL 'RGB' image, decoded fully (so corrupt data fails here, not later): 16-bit
    grayscale scaled to 8 bits (65535 -> 255), 16-bit RGB as Pillow reads it (its 8 high bits)."""
    with reading(path), open_image(str(path)) as image:
        image.load()
        if image.mode in SIXTEEN_BIT_MODES:
            return Image.fromarray(eight_bits(sixteen_bit_gray(image))).convert('RGB')
        refuse_floating_point(image, str(path))
        return image.convert('RGB')


def load_alpha(path) -> Image.Image:
    """An alpha matte file, decoded fully: 'L' (0 ~ 255) from 8-bit files, a `PreciseAlpha` (0 ~ 1) from
    16-bit grayscale ones; colour files are converted to their luma, at 8 bits."""
    with reading(path), open_image(str(path)) as image:
        image.load()
        if image.mode in SIXTEEN_BIT_MODES:
            return PreciseAlpha.from_array(sixteen_bit_gray(image))
        refuse_floating_point(image, str(path))
        return image.convert('L')


def load_rgba(path) -> Tuple[Image.Image, Image.Image]:
    """An RGBA file as (pha, fgr 'RGB'), the alpha taken from the fourth channel: 'L', or a `PreciseAlpha`
    for a file of 16 bits per channel."""
    with reading(path), open_image(str(path)) as image:
        if 'A' not in image.getbands():
            raise ValueError(f'{path} has no alpha channel (bands {image.getbands()}); expected RGBA')
        bits = stored_bits(image)
        image.load()
        rgba = image.convert('RGBA')
    with reading(path):
        alpha = sixteen_bit_alpha(str(path), rgba.size) if bits == 16 else None
    pha = rgba.getchannel('A') if alpha is None else PreciseAlpha.from_array(alpha)
    return pha, rgba.convert('RGB')


class FailureTracker:
    """Counts load attempts and failures of one data set (per process: each DataLoader worker has its own).

    max_fraction: the share of failed attempts tolerated ...
    min_attempts: ... once at least this many attempts were made (a few early failures in a large
                  data set are not yet a verdict).
    """

    def __init__(self, max_fraction: float = 0.1, min_attempts: int = 20):
        self.max_fraction = max_fraction
        self.min_attempts = min_attempts
        self.attempts = 0
        self.failures = 0
        self.failed_paths = []

    def success(self):
        self.attempts += 1

    def failure(self, paths: Sequence, error: Exception):
        """Warns about the failed sample, naming the file at fault (the pair where neither alone is:
        sizes that differ), and raises CorruptDataError when too many failed."""
        self.attempts += 1
        self.failures += 1
        culprit = error.path if isinstance(error, UnreadableImage) else None
        self.failed_paths.append(culprit or paths[0])
        what = error if culprit else f"{' + '.join(str(path) for path in paths)}: {error}"
        warnings.warn(f'Skipping unreadable image {what}', CorruptImageWarning, stacklevel=3)
        if self.attempts >= self.min_attempts and self.failures > self.max_fraction * self.attempts:
            end_with_the_run()
            raise CorruptDataError(
                f'{self.failures} of {self.attempts} images could not be read '
                f'(more than {self.max_fraction:.0%}) under {common_folder(self.failed_paths)}; '
                f'check the copy of that data set.')

    def give_up(self, paths: Sequence, tries: int):
        end_with_the_run()
        raise CorruptDataError(f'{tries} images in a row could not be read, the last {self.failed_paths[-1]}, '
                               f'under {common_folder(self.failed_paths)}; check the copy of that data set.')


def end_with_the_run() -> None:
    """Before a CorruptDataError, which ends the run: in a DataLoader worker, lets SIGTERM end it again.
    The trainers' workers ignore stop signals (training.stopping) to outlive a Ctrl-C until the trainer
    saved; the error's traceback keeps the loader alive while the trainer exits, and multiprocessing's
    exit then stops the workers with SIGTERM and waits for them: ignored, it would wait forever."""
    from torch.utils.data import get_worker_info
    if get_worker_info() is not None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def common_folder(paths) -> str:
    folders = [str(Path(path).parent) for path in paths]
    return os.path.commonpath(folders) if folders else '?'
