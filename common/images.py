"""Opening image files: one place for the pixel limit and for sample depths other than 8 bits.

Pillow refuses images of more than `MAX_IMAGE_PIXELS` pixels (by their header) as decompression bombs:
a small file that would take gigabytes to decode. The default is Pillow's limit (2 x 89,478,485
pixels, about 13,000 x 13,000); set the environment variable BGM_MAX_IMAGE_PIXELS to another number of
pixels, or 0 for no limit, to change it for every script and data set of the project.
"""
import os
import warnings
from typing import Tuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import UserError

MAX_PIXELS_VARIABLE = 'BGM_MAX_IMAGE_PIXELS'
# Our limit is where Pillow refuses; below it, Pillow's warning about half that size is noise.
warnings.filterwarnings('ignore', category=Image.DecompressionBombWarning)
SIXTEEN_BIT_MODES = ('I;16', 'I;16L', 'I;16B', 'I;16N', 'I')  # 'I': how older Pillow opens 16-bit PNG


def max_image_pixels() -> int:
    """The largest image, in pixels, that is opened (0: no limit)."""
    text = os.environ.get(MAX_PIXELS_VARIABLE)
    if text is None:
        return 2 * 89_478_485
    try:
        value = int(text.replace('_', '').replace(',', ''))
    except ValueError:
        raise UserError(f"{MAX_PIXELS_VARIABLE}={text!r}: expected a number of pixels, or 0 for no limit")
    return max(0, value)


def open_image(path: str) -> Image.Image:
    """Opens an image file and reads its header (not its pixels yet).

    Raises UserError naming the file when it is not an image or is larger than the pixel limit.
    """
    limit = max_image_pixels()
    # Pillow refuses above twice its MAX_IMAGE_PIXELS (and warns above it, silenced below): ours is the limit.
    Image.MAX_IMAGE_PIXELS = limit // 2 if limit else None
    try:
        image = Image.open(path)
    except Image.DecompressionBombError:
        with open(path, 'rb') as file:  # the size from the header, without Pillow's check
            size = header_size(file)
        raise UserError(f"{path}: {size} is above the limit of {limit:,} pixels that guards against "
                        f"decompression bombs; to open it, set {MAX_PIXELS_VARIABLE} to a larger number of "
                        "pixels (0: no limit)") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise UserError(f"{path}: not a readable image ({error})") from error
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
                gray = np.asarray(image).astype(np.float64)
                gray = np.clip(np.rint(gray / 257), 0, 255).astype(np.uint8)
                return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
            if mode == 'F':
                raise UserError(f"{path}: a floating-point image (Pillow mode F), whose range is not defined; "
                                "expected 8- or 16-bit samples")
            return np.array(image.convert('RGB'))
        except (OSError, ValueError, SyntaxError) as error:
            raise UserError(f"{path}: not a readable image ({error})") from error
