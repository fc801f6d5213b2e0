"""Writing files safely: a file is complete or absent, and a failure names the file.

Every writer of the project (images, videos, checkpoints, exports, results) writes under a hidden
temporary name beside its target and renames it when complete, so no reader ever sees a half-written
file and no crash leaves one under the real name; the temporary is removed on failure.
"""
import os
import re
import uuid
from typing import Callable, Dict, List, Optional, Sequence

from .errors import UserError

TEMPORARY_MARK = '.partial'
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')


# --------------------------------------------------------------------------- finding images

def is_image_file(path: str) -> bool:
    """An image by its extension, not hidden: hidden files are macOS resource forks ('._x.jpg') and the
    temporaries of our own writers."""
    name = os.path.basename(path)
    return not name.startswith('.') and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def natural_key(text: str) -> list:
    """Sort key that compares runs of digits as numbers: 'frame2' before 'frame10'."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r'(\d+)', text)]


def list_images(folder: str, recursive: bool = True, key: Callable[[str], object] = natural_key) -> List[str]:
    """The images in `folder` as paths relative to it ('/'-separated), sorted by `key` (natural order by
    default); hidden files and folders are skipped, symbolic links followed."""
    found = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith('.')] if recursive else []
        relative = os.path.relpath(root, folder)
        found += [f if relative == '.' else f'{relative}/{f}'.replace(os.sep, '/') for f in files if is_image_file(f)]
    return sorted(found, key=key)


def stem(path: str) -> str:
    """The name that pairs files across folders: the relative path without its extension."""
    return os.path.splitext(path)[0]


def names_by_stem(files: Sequence[str], where: str) -> Dict[str, str]:
    """{relative path without extension: relative path}. Files pair, and outputs are named, by stem,
    so two files of one stem (`a/1.jpg` and `a/1.png`) are a UserError naming both and `where` they are."""
    names: Dict[str, str] = {}
    for file in files:
        name = stem(file)
        if name in names:
            raise UserError(f"{where}: {names[name]} and {file} have the same name without extension; "
                            "keep one of them")
        names[name] = file
    return names


# --------------------------------------------------------------------------- writing


def temporary_path(path: str) -> str:
    """A hidden name beside `path` to write it under before renaming it to `path`: `.<stem>.<random>.partial<ext>`.
    It keeps the extension, from which writers guess the format."""
    folder, base = os.path.split(path)
    stem, extension = os.path.splitext(base)
    return os.path.join(folder, f".{stem}.{uuid.uuid4().hex[:8]}{TEMPORARY_MARK}{extension}")


def remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """Calls `write(temporary)` to write the file under a temporary name beside `path` (its folder is
    created), then renames it to `path`. The temporary never outlives the call; an OSError (a full disk,
    no permission) becomes a UserError naming `path`."""
    folder = os.path.dirname(os.path.abspath(path))
    temporary = temporary_path(path)
    try:
        os.makedirs(folder, exist_ok=True)
        write(temporary)
        os.replace(temporary, path)
    except OSError as error:
        raise UserError(f"{path}: cannot write it ({error.strerror or error})") from error
    finally:
        remove_quietly(temporary)


def write_bytes(path: str, data: bytes) -> None:
    """Writes `data` to `path` atomically, synced to disk before the rename."""
    def write(temporary: str) -> None:
        with open(temporary, 'wb') as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
    atomic_write(path, write)


class _RecordingWriter:
    """A file that remembers the first OSError of its writes: torch.save reports a failed write (a full
    disk, a file size limit) as a RuntimeError without the reason ('unexpected pos')."""

    def __init__(self, file):
        self.file = file
        self.error: Optional[OSError] = None

    def write(self, data) -> int:
        try:
            return self.file.write(data)
        except OSError as error:
            self.error = self.error or error
            raise

    def flush(self) -> None:
        self.file.flush()


def save_torch(obj, path: str) -> None:
    """`torch.save(obj, path)`, atomically and synced to disk before the rename. Streamed (a training
    state of a large model is not held twice in memory); a failed write raises UserError naming `path`
    with its reason."""
    import torch

    def write(temporary: str) -> None:
        with open(temporary, 'wb') as file:
            writer = _RecordingWriter(file)
            try:
                torch.save(obj, writer)
            except RuntimeError as error:
                if writer.error is None:
                    raise
                raise writer.error from error
            file.flush()
            os.fsync(file.fileno())
    atomic_write(path, write)


def folder_problem(path: str) -> Optional[str]:
    """Why no file can be written in folder `path`, creating nothing (None when one can): its nearest
    existing ancestor must be a folder we may write in."""
    existing = os.path.abspath(path)
    while not os.path.lexists(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        return f"{existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"no permission to write in {existing}"
    return None


def check_folder_can_be_made(path: str, option: str = '--output-dir') -> None:
    """Checks, creating nothing, that `path` is a folder files can be written in, or can be made one:
    its nearest existing ancestor is a writable folder. For checks before anything is computed."""
    if os.path.lexists(path) and not os.path.isdir(path):
        raise UserError(f"{option} {path}: is a file, not a folder")
    problem = folder_problem(path)
    if problem:
        raise UserError(f"{option} {path}: cannot write there ({problem})")


def check_output_file(path: str, option: str = '--output') -> None:
    """Checks, creating nothing, that a file can be written at `path` (not a folder; its folder writable
    or makeable)."""
    if os.path.isdir(path):
        raise UserError(f"{option} {path}: is a folder; expected the name of a file to write")
    if os.path.lexists(path) and not os.access(path, os.W_OK):
        raise UserError(f"{option} {path}: cannot replace it (no permission)")
    problem = folder_problem(os.path.dirname(os.path.abspath(path)))
    if problem:
        raise UserError(f"{option} {path}: cannot write there ({problem})")
