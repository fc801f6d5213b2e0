"""Finding, matching and reading the images an evaluation compares.

Files are matched by their path relative to their folder WITHOUT the extension, so a ground truth
`true/0000.jpg` matches a prediction `pred/0000.png` (inference_images.py always writes PNG).
Names are sorted naturally: `frame2` comes before `frame10`.

A folder or file that cannot be used raises UserError, whose message names the option or file and
what was expected; the evaluation script prints it as it is.
"""

from pathlib import Path

import numpy as np

from common.errors import UserError
from common.files import IMAGE_EXTENSIONS, is_image_file, list_images, names_by_stem, natural_key
from common.images import open_image

__all__ = ['IMAGE_EXTENSIONS', 'natural_key', 'find_images', 'misnamed_files', 'match_names', 'require_names',
           'load_alpha', 'load_foreground', 'load_trimap']

# How many unmatched names an error message lists before it gives a count.
_SHOWN_NAMES = 5


def _listing(names):
    names = sorted(names, key=natural_key)
    shown = ', '.join(names[:_SHOWN_NAMES])
    more = len(names) - _SHOWN_NAMES
    return shown + (f' ... and {more} more' if more > 0 else '')


def find_images(folder, argument):
    """All images under `folder`, keyed by relative path without extension ('clip/0001').

    folder: path of a folder; argument: how the user named it (e.g. '--pred'), for messages.
    Hidden files and folders (names starting with '.') are skipped.
    Returns {name: Path}. Raises UserError if the folder does not exist, holds no image, or two of
    its images differ only in extension.
    """
    root = Path(folder)
    if not root.is_dir():
        raise UserError(f'{argument} {folder}: no such folder')
    names = names_by_stem(list_images(str(root)), f'{argument} {folder}')
    if not names:
        raise UserError(f'{argument} {folder}: no images ({", ".join(IMAGE_EXTENSIONS)}) found')
    return {name: root / relative for name, relative in names.items()}


def misnamed_files(folder, names):
    """{name: UserError} for the files under `folder` named as one of `names` (relative path without
    extension) whose extension is not an image's: those `find_images` does not list, named."""
    wanted, found = set(names), {}
    if not wanted:
        return found
    root = Path(folder)
    for path in sorted(root.rglob('*')):
        relative = path.relative_to(root)
        if path.is_file() and not any(part.startswith('.') for part in relative.parts) \
                and not is_image_file(path.name) and relative.with_suffix('').as_posix() in wanted:
            found.setdefault(relative.with_suffix('').as_posix(), UserError(
                f'{path}: {path.suffix or "no extension"} is not an image extension read here '
                f'({", ".join(IMAGE_EXTENSIONS)}); rename it if it is an image'))
    return found


def match_names(pred, true, pred_argument, true_argument):
    """The names present in both folders, naturally sorted; an error if any name is in one only.

    pred, true: {name: Path} from `find_images`; the arguments name the folders in messages.
    """
    missing = true.keys() - pred.keys()
    extra = pred.keys() - true.keys()
    if missing or extra:
        lines = [f'{pred_argument} and {true_argument} must hold the same images '
                 f'(matched by relative path without extension):']
        if missing:
            lines.append(f'  {len(missing)} of {len(true)} in {true_argument} have no prediction: '
                         f'{_listing(missing)}')
        if extra:
            lines.append(f'  {len(extra)} of {len(pred)} in {pred_argument} have no ground truth: '
                         f'{_listing(extra)}')
        raise UserError('\n'.join(lines))
    return sorted(true, key=natural_key)


def require_names(found, names, argument, reference_argument):
    """Check that `found` ({name: Path}) covers `names`; extra images in `found` are ignored."""
    missing = set(names) - found.keys()
    if missing:
        raise UserError(f'{argument}: {len(missing)} of the {len(names)} images in '
                         f'{reference_argument} have no counterpart here: {_listing(missing)}')


def _open(path):
    image = open_image(str(path))
    try:
        image.load()
    except (OSError, ValueError, SyntaxError) as error:
        raise UserError(f'{path}: cannot read the image ({error})') from error
    return image


def load_alpha(path):
    """An alpha matte file -> (H, W) float64, 0 ~ 1.

    Accepts 8-bit and 16-bit grayscale (divided by 255 or 65535), 32-bit float grayscale (taken as
    0 ~ 1), and RGB whose three channels are equal. Anything else raises UserError.
    """
    image = _open(path)
    if image.mode in ('L', '1'):
        return np.asarray(image.convert('L'), dtype=np.float64) / 255
    if image.mode.startswith('I;16') or image.mode == 'I':
        return np.asarray(image, dtype=np.float64) / 65535
    if image.mode == 'F':
        alpha = np.asarray(image, dtype=np.float64)
        if alpha.min() < 0 or alpha.max() > 1:
            raise UserError(f'{path}: a float alpha matte must hold values in 0 ~ 1')
        return alpha
    if image.mode == 'RGB':
        rgb = np.asarray(image)
        if (rgb == rgb[..., :1]).all():
            return rgb[..., 0].astype(np.float64) / 255
        raise UserError(f'{path}: expected a grayscale alpha matte, got an RGB image whose '
                         f'channels differ (a foreground or composite?)')
    raise UserError(f'{path}: expected a single-channel (grayscale) alpha matte, got an image '
                     f'of mode {image.mode}')


def load_foreground(path):
    """A foreground file -> (H, W, 3) float64 RGB, 0 ~ 1 (an alpha channel is ignored)."""
    image = _open(path)
    if image.mode not in ('RGB', 'RGBA', 'L'):
        raise UserError(f'{path}: expected an 8-bit RGB foreground, got an image of mode '
                         f'{image.mode}')
    return np.asarray(image.convert('RGB'), dtype=np.float64) / 255


def load_trimap(path):
    """A trimap file -> (H, W) uint8 holding 0, 128, 255 (checked by `metrics.unknown_region`)."""
    image = _open(path)
    if image.mode != 'L':
        raise UserError(f'{path}: expected an 8-bit grayscale trimap (0, 128, 255), got an image '
                         f'of mode {image.mode}')
    return np.asarray(image)
