"""Writing files safely: a file is complete or absent, and a failure names the file.

Every writer of the project (images, videos, checkpoints, exports, results) writes under a hidden
temporary name beside its target and renames it when complete, so no reader ever sees a half-written
file and no crash leaves one under the real name; the temporary is removed on failure. `OutputLock`
keeps a second run out of an output folder that a first one is writing into.
"""
import json
import os
import re
import socket
import sys
import time
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


# --------------------------------------------------------------------------- one run per output folder

LOCK_NAME = '.bgm-output.lock'  # hidden: listings of images and frames skip it


class FolderTaken(UserError):
    """`OutputLock(..., new=True)`: the folder came to exist before this run could make it."""


# Folders an OutputLock made, and which it removes on release if they are still empty, unless the
# run took them as its output folders meanwhile (`keep_folder`): {absolute path: the lock}.
_MADE_BY_LOCKS: Dict[str, 'OutputLock'] = {}


def keep_folder(path: str) -> None:
    """The run writes into `path` now: it (and the folders above it) stays, empty or not, as a folder the
    run made itself would (see OutputLock)."""
    folder = os.path.abspath(path)
    while True:
        lock = _MADE_BY_LOCKS.pop(folder, None)
        if lock is not None and folder in lock.created:
            lock.created.remove(folder)
        if os.path.dirname(folder) == folder:
            return
        folder = os.path.dirname(folder)


def _process_start(pid: int) -> Optional[str]:
    """When process `pid` started (clock ticks since boot, Linux), to tell it from a later one given its pid."""
    try:
        with open(f'/proc/{pid}/stat') as file:
            return file.read().rsplit(')', 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _running_here(holder: dict) -> bool:
    """Whether the process that wrote `holder` (a lock of this host) still runs."""
    pid = holder.get('pid')
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    started = holder.get('pid_start')
    return started is None or _process_start(pid) in (None, started)


class OutputLock:
    """Keeps two runs from writing into one output folder at once: a context manager.

    On entry it makes the folder if needed and creates FOLDER/.bgm-output.lock (FOLDER/.bgm-output.lock.
    shard-I-of-N for a shard), which names the holder: pid, host, command and start time. A second run
    is refused with a UserError naming the holder: one holding the whole folder, the same shard, or a
    shard of another count (their items overlap); the shards of one job array (I/N, N the same) share
    the folder. A lock whose process is gone (on this host) is taken over with a note on stderr; one of
    another host is trusted, and the message says which file to delete if that run is over. The lock
    file is created complete (written aside, then hard-linked into place), so it is never seen half
    written. On exit the lock is removed, and so are the folders it made if they stayed empty and the
    run did not take them as its own (`keep_folder`, which `prepare_output_dir` calls): a run that
    fails early leaves nothing behind, and one stopped later keeps its output folder as it would
    have without the lock.

    new: the folder must not exist yet (a default output folder chosen as a fresh one): FolderTaken
    when another run made it first, so that the caller can choose the next name.
    """

    def __init__(self, folder: str, shard=None, option: str = '--output-dir', new: bool = False):
        self.folder, self.option, self.new = folder, option, new
        self.name = LOCK_NAME if shard is None else f'{LOCK_NAME}.shard-{shard.index}-of-{shard.count}'
        self.path = os.path.join(folder, self.name)
        self.record: Optional[dict] = None
        self.created: List[str] = []

    def acquire(self) -> 'OutputLock':
        """Takes the lock, or raises UserError naming its holder (FolderTaken: see `new`)."""
        check_folder_can_be_made(self.folder, self.option)
        try:
            self._make_folder()
            self._acquire()
        except BaseException:
            self._remove_made_folders()
            raise
        return self

    def release(self) -> None:
        if self.record is not None and self._read(self.path) == self.record:
            remove_quietly(self.path)
        self.record = None
        self._remove_made_folders()

    def __enter__(self) -> 'OutputLock':
        return self if self.record is not None else self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    # ------------------------------------------------------------------ inside

    def _make_folder(self) -> None:
        missing, folder = [], os.path.abspath(self.folder)
        while not os.path.isdir(folder):
            missing.append(folder)
            folder = os.path.dirname(folder)
        for folder in reversed(missing):
            try:
                os.mkdir(folder)
            except FileExistsError:
                if self.new and folder == missing[0]:
                    raise FolderTaken(f"{self.option} {self.folder}: made by another run meanwhile") from None
                continue
            except OSError as error:
                raise UserError(f"{self.option} {self.folder}: cannot write there ({error.strerror or error})") \
                    from error
            self.created.append(folder)
            _MADE_BY_LOCKS[folder] = self
        if self.new and not self.created:
            raise FolderTaken(f"{self.option} {self.folder}: exists already")

    def _remove_made_folders(self) -> None:
        for folder in reversed(self.created):
            _MADE_BY_LOCKS.pop(folder, None)
            try:
                os.rmdir(folder)  # only if empty
            except OSError:
                break
        self.created = []

    def _acquire(self) -> None:
        record = dict(pid=os.getpid(), host=socket.gethostname(), command=' '.join([sys.executable, *sys.argv]),
                      started=time.strftime('%Y-%m-%d %H:%M:%S %z'), pid_start=_process_start(os.getpid()),
                      nonce=uuid.uuid4().hex)
        for _ in range(10):  # each turn removes a stale lock, or ends
            if not self._create(json.dumps(record, indent=1) + '\n'):
                holder = self._read(self.path)
                if self._stale(holder):
                    self._take_over(self.path, holder)
                    continue
                raise self._refusal(self.path, holder)
            self.record = record
            for name in sorted(os.listdir(self.folder)):
                other = os.path.join(self.folder, name)
                if name == self.name or not name.startswith(LOCK_NAME) or name.endswith('.stale') \
                        or not self._conflicts(name):
                    continue
                holder = self._read(other)
                if holder is None and not os.path.exists(other):
                    continue
                if self._stale(holder):
                    self._take_over(other, holder)
                    continue
                self.release()
                raise self._refusal(other, holder)
            return
        raise UserError(f"{self.option} {self.folder}: could not take its lock {self.path}; try again")

    def _create(self, text: str) -> bool:
        """Creates the lock file with `text`, all at once; False when it exists."""
        aside = os.path.join(self.folder, f'.{self.name}.{uuid.uuid4().hex[:8]}.aside')
        try:
            with open(aside, 'w') as file:
                file.write(text)
            try:
                os.link(aside, self.path)
            except FileExistsError:
                return False
            except OSError:  # a file system without hard links: exclusive creation instead
                try:
                    descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                except FileExistsError:
                    return False
                with os.fdopen(descriptor, 'w') as file:
                    file.write(text)
            return True
        except OSError as error:
            raise UserError(f"{self.option} {self.folder}: cannot write there ({error.strerror or error})") \
                from error
        finally:
            remove_quietly(aside)

    def _conflicts(self, name: str) -> bool:
        """Whether the run holding lock file `name` may write what this run writes: not when both hold
        distinct shards of one count."""
        mine, theirs = (re.fullmatch(r'\.shard-(\d+)-of-(\d+)', n[len(LOCK_NAME):]) for n in (self.name, name))
        return not (mine and theirs and mine.group(2) == theirs.group(2) and mine.group(1) != theirs.group(1))

    @staticmethod
    def _read(path: str) -> Optional[dict]:
        try:
            with open(path) as file:
                holder = json.load(file)
        except (OSError, ValueError):
            return None
        return holder if isinstance(holder, dict) else None

    @staticmethod
    def _stale(holder: Optional[dict]) -> bool:
        return holder is not None and holder.get('host') == socket.gethostname() and not _running_here(holder)

    def _take_over(self, path: str, holder: dict) -> None:
        """Removes the stale lock `path` unless another run replaced it meanwhile (then it is put back)."""
        grave = f'{path}.{uuid.uuid4().hex[:8]}.stale'
        try:
            os.rename(path, grave)
        except FileNotFoundError:
            return  # another run removed it first
        if self._read(grave) != holder:  # a fresh lock of a run that took over before us
            try:
                os.link(grave, path)
            except OSError:
                pass
        else:
            print(f"warning: {self.option} {self.folder}: taking over the lock of a run that is no longer "
                  f"running ({describe_holder(holder)})", file=sys.stderr, flush=True)
        remove_quietly(grave)

    def _refusal(self, path: str, holder: Optional[dict]) -> UserError:
        who = describe_holder(holder) if holder else f"its lock file {path} cannot be read"
        return UserError(f"{self.option} {self.folder}: another run is writing there ({who}); wait for it to end "
                         f"or choose another folder; if that run is over, delete {path}")


def describe_holder(holder: dict) -> str:
    """'pid 123 on host, started 2025-01-01 10:00:00 +0000: python inference_images.py ...'"""
    return (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started {holder.get('started', '?')}: "
            f"{holder.get('command', '?')}")
