"""Decoding images, and surviving the odd corrupt file in a data set of hundreds of thousands.

A training data set skips an unreadable file with a warning and counts it; once a large share of
the files it tried failed, it stops with CorruptDataError instead of training on garbage.
"""
import os
import warnings
from pathlib import Path
from typing import Sequence

from PIL import Image

# What PIL raises for truncated, malformed or absurdly large files.
DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


class CorruptImageWarning(UserWarning):
    """An image could not be read and was skipped."""


class CorruptDataError(RuntimeError):
    """Too many images of a data set could not be read."""


def load_image(path, mode: str) -> Image.Image:
    """Decodes `path` fully (so corrupt data fails here, not later) and converts it to `mode`."""
    with Image.open(path) as img:
        return img.convert(mode)


def load_rgba(path):
    """An RGBA file as (pha 'L', fgr 'RGB'), the alpha taken from the fourth channel."""
    with Image.open(path) as img:
        if 'A' not in img.getbands():
            raise ValueError(f'{path} has no alpha channel (bands {img.getbands()}); expected RGBA')
        img = img.convert('RGBA')
    return img.getchannel('A'), img.convert('RGB')


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
        """Warns about the failed sample and raises CorruptDataError when too many failed."""
        self.attempts += 1
        self.failures += 1
        self.failed_paths.append(paths[0])
        names = ' + '.join(str(path) for path in paths)
        warnings.warn(f'Skipping unreadable image {names}: {error}', CorruptImageWarning, stacklevel=3)
        if self.attempts >= self.min_attempts and self.failures > self.max_fraction * self.attempts:
            raise CorruptDataError(
                f'{self.failures} of {self.attempts} images could not be read '
                f'(more than {self.max_fraction:.0%}) under {common_folder(self.failed_paths)}; '
                f'check the copy of that data set.')

    def give_up(self, paths: Sequence, tries: int):
        raise CorruptDataError(f'{tries} images in a row could not be read, the last {paths[0]}, '
                               f'under {common_folder(self.failed_paths)}; check the copy of that data set.')


def common_folder(paths) -> str:
    folders = [str(Path(path).parent) for path in paths]
    return os.path.commonpath(folders) if folders else '?'
