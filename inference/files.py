"""Which files an image run reads and writes: sources paired with their clean plates by name, and
output folders checked before anything is computed."""
import os
import uuid
from typing import Iterable, List, NamedTuple


from common.files import IMAGE_EXTENSIONS, keep_folder, list_images, names_by_stem

from .cli import InputError


class Pair(NamedTuple):
    src: str   # path of the source image
    bgr: str   # path of its clean plate
    name: str  # relative path of the source without extension: outputs are OUT/<type>/<name>.png


class Pairing(NamedTuple):
    pairs: List[Pair]
    unpaired_src: List[str]  # sources without a plate (relative paths)
    unpaired_bgr: List[str]  # plates without a source (relative paths)


def pair_images(src: str, bgr: str) -> Pairing:
    """Pairs sources with clean plates.

    src and bgr may be two image files, a folder and one plate shared by all its images, or two
    folders, searched recursively and paired by relative path without extension (`a/1.jpg` with
    `a/1.png`), never by sort order.
    """
    for option, path in (('--src', src), ('--bgr', bgr)):
        if not os.path.exists(path):
            raise InputError(f"{option} {path}: no such file or folder")
    if os.path.isfile(src):
        if not os.path.isfile(bgr):
            raise InputError(f"--bgr {bgr} is a folder but --src {src} is a file: give the plate of that image")
        return Pairing([Pair(src, bgr, os.path.splitext(os.path.basename(src))[0])], [], [])

    sources = names_by_stem(list_images(src), f'--src {src}')
    if not sources:
        raise InputError(f"--src {src}: no images found (extensions {', '.join(IMAGE_EXTENSIONS)})")
    if os.path.isfile(bgr):
        return Pairing([Pair(os.path.join(src, rel), bgr, name) for name, rel in sources.items()], [], [])
    plates = names_by_stem(list_images(bgr), f'--bgr {bgr}')
    pairs = [Pair(os.path.join(src, rel), os.path.join(bgr, plates[name]), name)
             for name, rel in sources.items() if name in plates]
    return Pairing(pairs, [rel for name, rel in sources.items() if name not in plates],
                   [rel for name, rel in plates.items() if name not in sources])


def prepare_output_dir(path: str, option: str = '--output-dir') -> None:
    """Creates the output folder if needed and checks that files can be written in it. An existing
    folder is kept as it is: nothing in it is deleted; one the run's OutputLock made stays too."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise InputError(f"{option} {path}: is a file, not a folder")
    try:
        os.makedirs(path, exist_ok=True)
        keep_folder(path)
        probe = os.path.join(path, f".write-test-{uuid.uuid4().hex[:8]}")
        with open(probe, 'wb'):
            pass
        os.remove(probe)
    except OSError as error:
        raise InputError(f"{option} {path}: cannot write there ({error.strerror or error})") from error


def check_not_existing(paths: Iterable[str], hint: str) -> None:
    """Refuses to overwrite: names the first of `paths` that exists, with `hint` on what to do."""
    existing = [path for path in paths if os.path.lexists(path)]
    if existing:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ''
        raise InputError(f"{existing[0]} already exists{more}; {hint}")
