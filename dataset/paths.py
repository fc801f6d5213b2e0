"""Where the data sets live: one root folder, each data set's standard layout under it, overrides.

    --data-root DIR            or env BGM_DATA_ROOT: the folder holding the data sets, each under
                               its standard name (e.g. DIR/VideoMatte240K_JPEG_SD, DIR/BG-20k).
    --data-path NAME=DIR       or env BGM_DATA_<NAME> (e.g. BGM_DATA_VIDEOMATTE240K): data set NAME
                               lives in DIR instead (repeatable).
    --data-path custom.fgr=DIR --data-path custom.pha=DIR
                               any pair of folders whose files match by relative name.

A flag beats the environment; an override beats the root. Resolving a data set checks its layout
and raises DataPathError naming the folder and showing the expected tree. Data sets without a
validation split on disk hold out 10 % of their samples (whole clips for nested folders), chosen by
a hash of the name, so the split is deterministic; split 'all' takes everything.

`python data_path.py --data-root /data videomatte240k bg20k` checks where data sets resolve.
"""
import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

from .files import DataPathError, ForegroundFile, holdout, list_images, pair_folders, rgba_files

ROOT_ENV = 'BGM_DATA_ROOT'
VALID_FRACTION = 0.1


@dataclass(frozen=True)
class Folders:
    """One foreground folder pair, relative to the data set folder."""
    fgr: str
    pha: Optional[str] = None  # None: RGBA images, alpha in the fourth channel
    optional: bool = False     # skipped when absent


@dataclass(frozen=True)
class Split:
    folders: tuple             # Folders for foreground sets, folder names for background sets
    holdout: Optional[str] = None  # 'train' / 'valid': that side of the deterministic hold-out


@dataclass(frozen=True)
class Layout:
    names: Tuple[str, ...]     # standard folder names under the root, the first that exists wins
    splits: Dict[str, Split]
    tree: str                  # the expected layout, for error messages and the README
    source: str = ''           # how to get it, for `python data_path.py`


def _held_out(*folders) -> Dict[str, Split]:
    return {'train': Split(folders, 'train'), 'valid': Split(folders, 'valid'), 'all': Split(folders)}


FOREGROUND_SETS: Dict[str, Layout] = {
    'videomatte240k': Layout(
        ('VideoMatte240K_JPEG_SD', 'VideoMatte240K_JPEG_HD', 'VideoMatte240K'),
        {'train': Split((Folders('train/fgr', 'train/pha'),)),
         'valid': Split((Folders('test/fgr', 'test/pha'),))},
        'VideoMatte240K_JPEG_SD/  (or VideoMatte240K_JPEG_HD/)\n'
        '  train/fgr/<clip>/<frame>.jpg\n'
        '  train/pha/<clip>/<frame>.jpg    alpha, grayscale JPEG\n'
        '  test/{fgr,pha}/<clip>/<frame>.jpg    (split "valid")',
        'download: https://grail.cs.washington.edu/projects/background-matting-v2/#/datasets'),
    'photomatte85': Layout(
        ('PhotoMatte85',), _held_out(Folders('.')),
        'PhotoMatte85/\n'
        '  <name>.png    RGBA, alpha in the fourth channel',
        'download: https://grail.cs.washington.edu/projects/background-matting-v2/#/datasets'),
    'p3m10k': Layout(
        ('P3M-10k', 'P3M10k'),
        {'train': Split((Folders('train/blurred_image', 'train/mask'),)),
         'valid': Split((Folders('validation/P3M-500-P/blurred_image', 'validation/P3M-500-P/mask'),)),
         'valid_np': Split((Folders('validation/P3M-500-NP/original_image', 'validation/P3M-500-NP/mask'),))},
        'P3M-10k/\n'
        '  train/blurred_image/<name>.jpg\n'
        '  train/mask/<name>.png    alpha, grayscale\n'
        '  validation/P3M-500-P/{blurred_image,mask,trimap}/    (split "valid")\n'
        '  validation/P3M-500-NP/{original_image,mask,trimap}/    (split "valid_np")',
        'download: https://github.com/JizhiziLi/P3M (terms of use to accept)'),
    'distinctions646': Layout(
        ('Distinctions-646', 'Distinctions646'),
        {'train': Split((Folders('Train/FG', 'Train/GT'),)),
         'valid': Split((Folders('Test/FG', 'Test/GT'),))},
        'Distinctions-646/\n'
        '  Train/FG/<name>.png    foreground\n'
        '  Train/GT/<name>.png    alpha\n'
        '  Test/{FG,GT}/    (split "valid")',
        'on request from its authors: https://github.com/yuhaoliu7456/CVPR2020-HAttMatting'),
    'adobe': Layout(
        ('Combined_Dataset', 'Adobe_Deep_Matting_Dataset/Combined_Dataset'),
        {'train': Split((Folders('Training_set/Adobe-licensed images/fg', 'Training_set/Adobe-licensed images/alpha'),
                         Folders('Training_set/Other/fg', 'Training_set/Other/alpha', optional=True))),
         'valid': Split((Folders('Test_set/Adobe-licensed images/fg', 'Test_set/Adobe-licensed images/alpha'),))},
        'Combined_Dataset/\n'
        '  Training_set/Adobe-licensed images/{fg,alpha}/<name>.jpg\n'
        '  Training_set/Other/{fg,alpha}/<name>.png    (optional)\n'
        '  Test_set/Adobe-licensed images/{fg,alpha}/    (split "valid")',
        'on request from Adobe: https://sites.google.com/view/deepimagematting'),
    'synthetic': Layout(
        ('synthetic',), _held_out(Folders('fgr', 'pha')),
        'synthetic/    (python -m dataset.synthetic --out DIR)\n'
        '  fgr/<name>.png\n'
        '  pha/<name>.png    alpha, grayscale',
        'make it: python -m dataset.synthetic --out DIR/synthetic'),
    'custom': Layout(
        ('custom',), _held_out(Folders('fgr', 'pha')),
        'custom/    (or --data-path custom.fgr=DIR --data-path custom.pha=DIR)\n'
        '  fgr/<any/relative/name>.{jpg,png}\n'
        '  pha/<any/relative/name>.{jpg,png}    alpha, grayscale, same relative names',
        'your own foregrounds and alphas'),
}

BACKGROUND_SETS: Dict[str, Layout] = {
    'backgrounds': Layout(
        ('Backgrounds',), {'train': Split(('train',)), 'valid': Split(('valid',))},
        'Backgrounds/\n'
        '  train/<name>.jpg\n'
        '  valid/<name>.jpg',
        'your own photos of scenes without people (or use bg20k)'),
    'bg20k': Layout(
        ('BG-20k', 'BG20k'), {'train': Split(('train',)), 'valid': Split(('testval',))},
        'BG-20k/\n'
        '  train/<name>.jpg\n'
        '  testval/<name>.jpg    (split "valid")',
        'download: https://github.com/JizhiziLi/GFM (BG-20k)'),
    'synthetic': Layout(
        ('synthetic',), _held_out('bgr'),
        'synthetic/    (python -m dataset.synthetic --out DIR)\n'
        '  bgr/<name>.png',
        'make it: python -m dataset.synthetic --out DIR/synthetic'),
}

# Keys that name a single folder rather than a data set.
FOLDER_KEYS = ('custom.fgr', 'custom.pha')


@dataclass(frozen=True)
class ResolvedForegrounds:
    name: str
    split: str
    folder: Path
    files: List[ForegroundFile] = field(repr=False)

    def __len__(self):
        return len(self.files)


@dataclass(frozen=True)
class ResolvedBackgrounds:
    name: str
    split: str
    folder: Path
    files: List[Path] = field(repr=False)

    def __len__(self):
        return len(self.files)


def env_name(key: str) -> str:
    return 'BGM_DATA_' + key.upper().replace('.', '_')


def _known_keys() -> List[str]:
    return sorted({*FOREGROUND_SETS, *BACKGROUND_SETS, *FOLDER_KEYS})


def _check_key(key: str, given: str) -> str:
    key = key.strip().lower()
    if key not in _known_keys():
        raise DataPathError(f'Data path {given!r}: unknown data set {key!r}; known: {", ".join(_known_keys())}')
    return key


def parse_overrides(items) -> Dict[str, str]:
    """['videomatte240k=/big/disk/VM', ...] -> {'videomatte240k': '/big/disk/VM', ...}"""
    overrides = {}
    for item in items or ():
        key, sep, path = item.partition('=')
        if not sep or not path:
            raise DataPathError(f'--data-path expects NAME=DIR, got {item!r}')
        overrides[_check_key(key, item)] = path
    return overrides


class DataPaths:
    """Resolves data set names to validated file lists.

    root:      the data root (None: only overrides and environment variables).
    overrides: {name: folder}, as from --data-path.
    environ:   where BGM_DATA_* variables are read (default os.environ; {} ignores them).
    """

    def __init__(self, root=None, overrides: Optional[Mapping[str, str]] = None,
                 environ: Optional[Mapping[str, str]] = None):
        environ = os.environ if environ is None else environ
        self.root = Path(root) if root else (Path(environ[ROOT_ENV]) if environ.get(ROOT_ENV) else None)
        self.overrides = {key: environ[env_name(key)] for key in _known_keys() if environ.get(env_name(key))}
        self.overrides.update({_check_key(key, key): path for key, path in (overrides or {}).items()})

    @classmethod
    def from_args(cls, args: argparse.Namespace, environ=None) -> 'DataPaths':
        return cls(getattr(args, 'data_root', None), parse_overrides(getattr(args, 'data_path', None)), environ)

    def folder(self, name: str, layout: Layout) -> Path:
        """The folder of data set `name`: its override, else the first standard name under the root."""
        if name in self.overrides:
            return Path(self.overrides[name])
        if self.root is None:
            raise DataPathError(
                f'No location for data set {name!r}: pass --data-root DIR (or set {ROOT_ENV}) with the data set in '
                f'DIR/{layout.names[0]}, or --data-path {name}=DIR (or set {env_name(name)}). Expected layout:\n'
                f'{layout.tree}')
        candidates = [self.root / n for n in layout.names]
        return next((c for c in candidates if c.is_dir()), candidates[0])

    def foregrounds(self, name: str, split: str) -> ResolvedForegrounds:
        layout, spec = _lookup(FOREGROUND_SETS, name, split, 'foreground')
        if name == 'custom' and any(key in self.overrides for key in FOLDER_KEYS):
            folder, pairs = self._custom_folders()
        else:
            folder = self.folder(name, layout)
            _check_folder(folder, name, layout)
            pairs = [(folder / f.fgr, folder / f.pha if f.pha else None) for f in spec.folders
                     if not (f.optional and not (folder / f.fgr).exists())]
        files = []
        for fgr, pha in pairs:
            for path in (fgr, pha):
                if path is not None and not path.is_dir():
                    raise _layout_error(f'Data set {name!r} is missing the folder {path}.', layout)
            try:
                files += rgba_files(fgr) if pha is None else pair_folders(fgr, pha)
            except DataPathError as error:
                raise _layout_error(str(error), layout) from None
        files = _split(files, [f.group for f in files], spec, name, folder)
        return ResolvedForegrounds(name, split, folder, files)

    def backgrounds(self, name: str, split: str) -> ResolvedBackgrounds:
        layout, spec = _lookup(BACKGROUND_SETS, name, split, 'background')
        folder = self.folder(name, layout)
        _check_folder(folder, name, layout)
        files = []
        for sub in spec.folders:
            if not (folder / sub).is_dir():
                raise _layout_error(f'Background set {name!r} is missing the folder {folder / sub}.', layout)
            images = list_images(folder / sub)
            if not images:
                raise _layout_error(f'Background folder {folder / sub} contains no images.', layout)
            files += images
        files = _split(files, [p.stem for p in files], spec, name, folder)
        return ResolvedBackgrounds(name, split, folder, files)

    def _custom_folders(self):
        missing = [key for key in FOLDER_KEYS if key not in self.overrides]
        if missing:
            raise DataPathError(f'Data set "custom" needs both --data-path custom.fgr=DIR and custom.pha=DIR; '
                                f'{" and ".join(missing)} missing.')
        fgr, pha = Path(self.overrides['custom.fgr']), Path(self.overrides['custom.pha'])
        return fgr.parent, [(fgr, pha)]


def _lookup(sets: Dict[str, Layout], name: str, split: str, kind: str):
    if name not in sets:
        raise DataPathError(f'Unknown {kind} data set {name!r}; known: {", ".join(sorted(sets))}')
    layout = sets[name]
    if split not in layout.splits:
        raise DataPathError(f'{kind.capitalize()} data set {name!r} has no split {split!r}; '
                            f'it has: {", ".join(layout.splits)}')
    return layout, layout.splits[split]


def _check_folder(folder: Path, name: str, layout: Layout):
    if not folder.is_dir():
        raise _layout_error(f'Data set {name!r}: folder {folder} does not exist.', layout)


def _layout_error(message: str, layout: Layout) -> DataPathError:
    return DataPathError(f'{message}\nExpected layout:\n{layout.tree}')


def _split(items: list, groups: List[str], spec: Split, name: str, folder: Path) -> list:
    if spec.holdout is None:
        return items
    try:
        return holdout(items, groups, spec.holdout, VALID_FRACTION)
    except DataPathError as error:
        raise DataPathError(f'Data set {name!r} in {folder}: {error}') from None


@dataclass(frozen=True)
class SplitStatus:
    """Where one split of a data set stands, for `python data_path.py`."""
    kind: str                  # 'foreground' or 'background'
    name: str
    split: str
    state: str                 # 'found', 'missing' (no folder), 'no location' (no root, no override), 'broken'
    files: int                 # found: how many samples
    folder: Optional[Path]     # where it was looked for (None: nowhere to look)
    problem: str = ''          # broken / missing: the first line of the error


def data_set_status(paths: DataPaths, names=()) -> List[SplitStatus]:
    """Every split of every data set (or of `names`): found with its sample count, or why not."""
    rows = []
    for kind, sets in (('foreground', FOREGROUND_SETS), ('background', BACKGROUND_SETS)):
        resolve = paths.foregrounds if kind == 'foreground' else paths.backgrounds
        for name, layout in sets.items():
            if names and name not in names:
                continue
            try:
                folder = paths.folder(name, layout)
            except DataPathError:
                folder = None
                if not (name == 'custom' and any(key in paths.overrides for key in FOLDER_KEYS)):
                    rows += [SplitStatus(kind, name, split, 'no location', 0, None) for split in layout.splits]
                    continue
            for split in layout.splits:
                try:
                    resolved = resolve(name, split)
                    rows.append(SplitStatus(kind, name, split, 'found', len(resolved), resolved.folder))
                except DataPathError as error:
                    state = 'missing' if folder is not None and not folder.is_dir() else 'broken'
                    rows.append(SplitStatus(kind, name, split, state, 0, folder, str(error).splitlines()[0]))
    return rows


def add_data_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds --data-root and --data-path to a trainer's (or any script's) parser."""
    group = parser.add_argument_group('data location')
    group.add_argument('--data-root', default=None, metavar='DIR',
                       help=f'folder holding the data sets under their standard names (default: ${ROOT_ENV})')
    group.add_argument('--data-path', action='append', default=[], metavar='NAME=DIR',
                       help='where data set NAME lives, overriding the root (repeatable); also env BGM_DATA_<NAME>. '
                            f'Names: {", ".join(_known_keys())}')
    return parser


def resolve_dataset(name: str, split: str, args: Optional[argparse.Namespace] = None) -> ResolvedForegrounds:
    """The validated foreground files of data set `name`, split 'train' / 'valid' (/ 'all', 'valid_np')."""
    paths = DataPaths.from_args(args) if args is not None else DataPaths()
    return paths.foregrounds(name, split)


def resolve_backgrounds(name: str, split: str, args: Optional[argparse.Namespace] = None) -> ResolvedBackgrounds:
    """The validated background files of background set `name`, split 'train' / 'valid'."""
    paths = DataPaths.from_args(args) if args is not None else DataPaths()
    return paths.backgrounds(name, split)
