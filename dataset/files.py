"""Finding images on disk, pairing foregrounds with their alphas, and holding out a validation split.

Nothing here decodes an image: these helpers only look at names, so a training run can check its
data layout in seconds before it starts.
"""
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Optional, Sequence

from common import files as common_files
from common.errors import UserError
from common.files import IMAGE_EXTENSIONS


class DataPathError(UserError, ValueError):
    """A data folder is missing, holds no images, or its files do not pair up."""


@dataclass(frozen=True)
class ForegroundFile:
    """One foreground sample on disk.

    fgr:   the foreground colour image (for RGBA files, also the alpha).
    pha:   the alpha matte image, or None when the alpha is the fourth channel of `fgr`.
    group: samples that must stay on the same side of a train/validation split, e.g. the frames of
           one video clip; for flat folders each sample is its own group.
    """
    fgr: Path
    pha: Optional[Path]
    group: str


def list_images(folder) -> List[Path]:
    """All images below `folder` (recursive, symlinks followed, hidden files skipped), sorted by
    relative path: the order that the data sets index, and that seeds reproduce."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataPathError(f'Image folder {folder} does not exist or is not a folder.')
    return [folder / relative for relative in common_files.list_images(str(folder), key=str)]


def relative_key(path: Path, folder: Path) -> str:
    """The name that pairs files across folders: the relative path without its extension."""
    return path.relative_to(folder).with_suffix('').as_posix()


def group_of(key: str) -> str:
    """Nested files (`<clip>/<frame>`) are grouped by their first folder; flat files stand alone."""
    return key.split('/', 1)[0] if '/' in key else key


def _index_by_key(folder: Path) -> dict:
    files = list_images(folder)
    if not files:
        raise DataPathError(f'Image folder {folder} contains no images ({", ".join(IMAGE_EXTENSIONS)}).')
    index = {}
    for path in files:
        key = relative_key(path, folder)
        if key in index:
            raise DataPathError(f'Image folder {folder} holds two images named {key}: '
                                f'{index[key].name} and {path.name}; keep one.')
        index[key] = path
    return index


def _examples(keys: Iterable[str], limit: int = 5) -> str:
    keys = sorted(keys)
    shown = ', '.join(keys[:limit])
    return shown + (f', ... ({len(keys)} in all)' if len(keys) > limit else '')


def pair_folders(fgr_folder, pha_folder) -> List[ForegroundFile]:
    """Pairs every image in `fgr_folder` with the image of the same relative name in `pha_folder`.

    Extensions may differ (`fgr/a/0001.jpg` pairs with `pha/a/0001.png`). Every file must find its
    partner: a stray file usually means a broken copy, and training on a shifted pairing is silent
    garbage, so mismatches raise DataPathError with examples.
    """
    fgr_folder, pha_folder = Path(fgr_folder), Path(pha_folder)
    fgr, pha = _index_by_key(fgr_folder), _index_by_key(pha_folder)
    only_fgr, only_pha = fgr.keys() - pha.keys(), pha.keys() - fgr.keys()
    if only_fgr or only_pha:
        lines = [f'Foreground folder {fgr_folder} and alpha folder {pha_folder} do not pair up '
                 f'(files pair by relative name without extension).']
        if only_fgr:
            lines.append(f'  only in {fgr_folder}: {_examples(only_fgr)}')
        if only_pha:
            lines.append(f'  only in {pha_folder}: {_examples(only_pha)}')
        raise DataPathError('\n'.join(lines))
    return [ForegroundFile(fgr[key], pha[key], group_of(key)) for key in sorted(fgr)]


def rgba_files(folder) -> List[ForegroundFile]:
    """Foregrounds stored as RGBA images with the alpha in the fourth channel (e.g. PhotoMatte85)."""
    folder = Path(folder)
    files = list_images(folder)
    if not files:
        raise DataPathError(f'Image folder {folder} contains no images ({", ".join(IMAGE_EXTENSIONS)}).')
    return [ForegroundFile(path, None, group_of(relative_key(path, folder))) for path in files]


def _stable_rank(group: str) -> str:
    # A hash of the group's name decides, not the listing order or the machine.
    return hashlib.md5(group.encode('utf-8')).hexdigest()


def holdout(items: Sequence, groups: Sequence[str], part: str, fraction: float = 0.1) -> list:
    """Splits `items` into train and validation parts by whole groups, deterministically.

    items:    anything, one per sample.
    groups:   the group of each item (a video clip, or the file's own name).
    part:     'train' or 'valid', which side to return.
    fraction: the share of groups held out for validation (at least one group, and at least one
              group is always left for training).
    """
    if part not in ('train', 'valid'):
        raise ValueError(f"holdout part must be 'train' or 'valid', got {part!r}")
    unique = sorted(set(groups), key=_stable_rank)
    if len(unique) < 2:
        raise DataPathError(f'Cannot hold out a validation split from {len(unique)} sample group(s); '
                            f'at least 2 are needed.')
    held = set(unique[:min(len(unique) - 1, max(1, round(fraction * len(unique))))])
    keep_valid = part == 'valid'
    return [item for item, group in zip(items, groups) if (group in held) == keep_valid]
