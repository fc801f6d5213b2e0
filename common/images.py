"""Opening image files: one place for the pixel limit and for sample depths other than 8 bits.

Pillow refuses images of more than `MAX_IMAGE_PIXELS` pixels (by their header) as decompression bombs:
a small file that would take gigabytes to decode. The default is Pillow's limit (2 x 89,478,485
pixels, about 13,000 x 13,000); set the environment variable BGM_MAX_IMAGE_PIXELS to another number of
pixels, or 0 for no limit, to change it for every script and data set of the project (inference, evaluation
and the training data sets read it here; unset or empty: the default). Anything else (a negative number,
a word) is a UserError naming the variable, not a silent "no limit".

Samples of 16 bits (grayscale 'I;16' PNG and TIFF, or RGB / RGBA PNG of 16 bits per channel) are read at
their value: `sixteen_bit_gray` gives a grayscale one as 0 ~ 1 floats, `sixteen_bit_alpha` the alpha
channel of an RGBA or gray + alpha one (which Pillow reads at 8 bits), and 8-bit views are scaled, never
clipped (65535 -> 255).
"""
import os
import warnings
from typing import Optional, Tuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import UserError

MAX_PIXELS_VARIABLE = 'BGM_MAX_IMAGE_PIXELS'
DEFAULT_MAX_PIXELS = 2 * 89_478_485  # where Pillow refuses by default
# Our limit is where Pillow refuses; below it, Pillow's warning about half that size is noise.
warnings.filterwarnings('ignore', category=Image.DecompressionBombWarning)
SIXTEEN_BIT_MODES = ('I;16', 'I;16L', 'I;16B', 'I;16N', 'I')  # 'I': how older Pillow opens 16-bit PNG


class ImageError(UserError):
    """An image file that cannot be used: not an image, damaged, of an unsupported kind, or above the
    pixel limit. Scripts stop with its message; the training data sets skip the file with a warning."""


def max_image_pixels() -> int:
    """The largest image, in pixels, that is opened (0: no limit), from BGM_MAX_IMAGE_PIXELS.

    Raises UserError naming the variable when it holds anything but a whole number >= 0.
    """
    text = os.environ.get(MAX_PIXELS_VARIABLE, '').strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(text.replace('_', '').replace(',', ''))
    except ValueError:
        value = -1
    if value < 0:
        raise UserError(f"{MAX_PIXELS_VARIABLE}={text!r}: expected a whole number of pixels (e.g. 400000000), "
                        "or 0 for no limit")
    return value


def open_image(path: str) -> Image.Image:
    """Opens an image file and reads its header (not its pixels yet).

    Raises UserError naming the file when it is not an image or is larger than the pixel limit.
    """
    limit = max_image_pixels()
    # Pillow refuses above twice its MAX_IMAGE_PIXELS (and warns above it, silenced below): ours is the limit.
    Image.MAX_IMAGE_PIXELS = limit / 2 if limit else None
    try:
        image = Image.open(path)
    except Image.DecompressionBombError:
        with open(path, 'rb') as file:  # the size from the header, without Pillow's check
            size = header_size(file)
        raise ImageError(f"{path}: {size} is above the limit of {limit:,} pixels that guards against "
                        f"decompression bombs; to open it, set {MAX_PIXELS_VARIABLE} to a larger number of "
                        "pixels (0: no limit)") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise ImageError(f"{path}: not a readable image ({error})") from error
    return image


def header_size(file) -> str:
    """'W x H is N pixels' from an image header, for the error message; Pillow's check switched off."""
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(file) as image:
            width, height = image.size
    finally:
        Image.MAX_IMAGE_PIXELS = saved
    return f"{width}x{height} ({width * height:,} pixels)"


def image_size(path: str) -> Tuple[int, int]:
    """(W, H) of an image as shown (EXIF orientation applied), read from its header only."""
    with open_image(path) as image:
        width, height = image.size
        try:
            orientation = image.getexif().get(0x0112, 1)
        except (OSError, ValueError, SyntaxError):
            orientation = 1
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)  # a quarter turn swaps sides


def read_rgb(path: str) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB, 0 ~ 255, upright (EXIF orientation applied).

    8-bit files are taken as they are (gray, palette and alpha channels converted by Pillow: alpha is
    dropped). 16-bit grayscale is scaled to 8 bits (65535 -> 255); 16-bit RGB is read as 8 bits by
    Pillow. Floating-point images, whose range is not defined, are refused.
    """
    with open_image(path) as image:
        try:
            image.load()
            image = ImageOps.exif_transpose(image)
            mode = image.mode
            if mode in SIXTEEN_BIT_MODES:
                gray = eight_bits(sixteen_bit_gray(image))
                return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
            refuse_floating_point(image, path)
            return np.array(image.convert('RGB'))
        except (OSError, ValueError, SyntaxError) as error:
            raise ImageError(f"{path}: not a readable image ({error})") from error


def refuse_floating_point(image: Image.Image, path: str) -> None:
    if image.mode == 'F':
        raise ImageError(f"{path}: a floating-point image (Pillow mode F), whose range is not defined; "
                         "expected 8- or 16-bit samples")


def sixteen_bit_gray(image: Image.Image) -> np.ndarray:
    """A loaded grayscale image of a mode in SIXTEEN_BIT_MODES as (H, W) float32, 0 ~ 1 (65535 -> 1)."""
    return (np.asarray(image, dtype=np.float64) / 65535).clip(0, 1).astype(np.float32)


def eight_bits(values: np.ndarray) -> np.ndarray:
    """0 ~ 1 floats as uint8, 0 ~ 255, rounded to the nearest level."""
    return np.rint(np.clip(values, 0, 1) * 255).astype(np.uint8)


def stored_bits(image: Image.Image) -> int:
    """Bits per sample as stored in the file (16 for RGB and RGBA PNG of 16 bits, which Pillow reads at
    8), from its header; 8 where the header says nothing else."""
    if image.mode in SIXTEEN_BIT_MODES:
        return 16
    for tile in getattr(image, 'tile', None) or ():
        args = tile[3] if len(tile) > 3 else None
        rawmode = args if isinstance(args, str) else (args[0] if isinstance(args, tuple) and args and
                                                      isinstance(args[0], str) else '')
        if ';16' in rawmode:
            return 16
    return 8


def sixteen_bit_alpha(path: str, size: Tuple[int, int]) -> Optional[np.ndarray]:
    """The alpha channel of a 16-bit RGBA or gray + alpha file as (H, W) float32, 0 ~ 1, decoded by OpenCV
    (Pillow keeps 8 bits of it); None when OpenCV reads no alpha of 16 bits and `size` (W, H) from it.
    Call it after `open_image`, which applies the pixel limit."""
    import cv2  # here: the many users of this module that never meet such a file do not load OpenCV
    try:
        data = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except (OSError, cv2.error) as error:
        raise ImageError(f"{path}: not a readable image ({error})") from error
    if data is None or data.dtype != np.uint16 or data.ndim != 3 or data.shape[2] not in (2, 4) \
            or (data.shape[1], data.shape[0]) != tuple(size):
        return None
    return data[:, :, -1].astype(np.float32) / 65535
