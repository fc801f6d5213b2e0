"""Reading and loading weights: one place for every script.

Accepted files:
    - an official BGMv2 checkpoint (`pytorch_resnet50.pth`, ...): a plain state_dict of MattingRefine;
    - a plain state_dict saved by this project (`torch.save(model.state_dict(), path)`);
    - a training checkpoint of this project: a dict holding the weights under `model`
      (`state_dict` and `model_state` are accepted too).
Weights saved from DistributedDataParallel (`module.`) or torch.compile (`_orig_mod.`) are unwrapped.
Everything is read with `map_location`, so GPU checkpoints load on CPU-only machines.

Every file is checked before it is loaded (`check_weight_file`): torch does not check the CRC-32 that
a zip archive (torch.save, torch.jit.save) stores for each entry, so a flipped bit in the tensor data
would load as a wrong weight. The files this project ships are checked against their sha256 as well.
"""
import hashlib
import mmap
import os
import re
import struct
import zipfile
import zlib
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from numpy._core.multiarray import scalar as numpy_scalar  # the name pickles of numpy scalars refer to
from torch import nn

from common.files import save_torch

WEIGHT_KEYS = ('model', 'state_dict', 'model_state')
WRAPPER_PREFIXES = ('module.', '_orig_mod.')


class CheckpointError(ValueError):
    """A weight file that cannot be used for the requested model."""


class DamagedCheckpointError(CheckpointError):
    """A weight file whose bytes are not those that were written (a bad copy or download). `reason`
    says what is wrong, without the file's name."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"cannot read checkpoint {path!r}: {reason}")
        self.path, self.reason = path, reason


# The sha256 of the weight files this project ships, by file name: a file of that name with another
# digest is a damaged copy. (The official BGMv2 checkpoints' digests are not known here: their entries'
# CRC-32s are checked, as every archive's.) A new release of a file changes its digest here.
KNOWN_SHA256 = {
    'mattingrefine_mobilenetv2_synthetic_fp16.pth': '640eb15c308ea1aadcd6cf189b2235839442538008ba9764d8255f59f52fe34c',
}
COPY_AGAIN = 'the file is damaged (a bad copy or download?); copy it again'
_checked = set()  # (real path, size, modification time) of the files that passed `check_weight_file`


# Training checkpoints of other projects hold numpy scalars beside the weights (VainF's DeepLabV3
# files store `best_score` as numpy.float64): plain data, safe to unpickle.
NUMPY_SCALAR_GLOBALS = [numpy_scalar, np.dtype, *(type(np.dtype(t)) for t in ('f8', 'f4', 'i8', 'i4', 'bool'))]


def load_weights_file(path: str, map_location='cpu'):
    """`torch.load` with `weights_only=True` (no arbitrary code), also accepting numpy scalars, of a
    file that passed `check_weight_file` (else DamagedCheckpointError)."""
    check_weight_file(path)
    with torch.serialization.safe_globals(NUMPY_SCALAR_GLOBALS):
        return torch.load(path, map_location=map_location, weights_only=True)


def check_weight_file(path: str) -> None:
    """Raises DamagedCheckpointError, naming the file, when its bytes are not those written: a known
    file (`KNOWN_SHA256`) of another sha256, or a zip archive whose directory cannot be read or one
    of whose entries does not match its stored CRC-32. Other files (the legacy pickle format) hold
    nothing to check. A file that passed is not read again while it is unchanged."""
    stat = os.stat(path)
    key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
    if key in _checked:
        return
    problem = weight_file_damage(path)
    if problem:
        raise DamagedCheckpointError(path, problem)
    _checked.add(key)


def weight_file_damage(path: str) -> Optional[str]:
    """Why the bytes of `path` are not those written (see `check_weight_file`), or None."""
    with open(path, 'rb') as file:
        if os.fstat(file.fileno()).st_size == 0:
            return None  # nothing was written: `weight_file_format_problem` says so
        with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
            expected = KNOWN_SHA256.get(os.path.basename(path))
            if expected:
                digest = hashlib.sha256(data).hexdigest()
                if digest != expected:
                    return (f"its sha256 is {digest[:12]}..., not that of the released {os.path.basename(path)} "
                            f"({expected[:12]}...): {COPY_AGAIN}")
                return None  # the very bytes released
            if data[:2] != b'PK' and not zipfile.is_zipfile(file):  # the legacy format: a pickle stream
                return None
            return zip_damage(file, data)


def zip_damage(file, data: mmap.mmap) -> Optional[str]:
    """Why a zip archive (`file`, also mapped as `data`) is damaged: its directory cannot be read, or
    an entry is not where the directory places it or does not match its CRC-32 (None if intact)."""
    try:
        archive = zipfile.ZipFile(file)
    except Exception as error:  # BadZipFile, or a name that is not UTF-8, a size that does not fit, ...
        return f"the file is truncated or corrupt: its zip directory cannot be read ({error}); copy it again"
    with archive, memoryview(data) as view:
        for entry in archive.infolist():
            start = entry.header_offset
            header = bytes(view[start:start + 30])
            if len(header) < 30 or header[:4] != b'PK\x03\x04':
                return f"entry {entry.filename!r} is not where the zip directory places it: {COPY_AGAIN}"
            name_length, extra_length = struct.unpack('<HH', header[26:30])
            start += 30 + name_length + extra_length
            if start + entry.compress_size > len(view):
                return f"the file is truncated or corrupt: entry {entry.filename!r} ends past its end; copy it again"
            if entry.compress_type == zipfile.ZIP_STORED:  # torch.save stores its tensors uncompressed
                if entry.file_size != entry.compress_size:
                    return f"entry {entry.filename!r} has two sizes: {COPY_AGAIN}"
                crc = zlib.crc32(view[start:start + entry.compress_size])
            else:  # the compressed code of TorchScript: zipfile checks the CRC as it inflates
                try:
                    with archive.open(entry) as member:
                        while member.read(1 << 20):
                            pass
                    continue
                except Exception:  # BadZipFile (a wrong CRC), zlib.error, EOFError
                    crc = None
            if crc != entry.CRC:
                return f"entry {entry.filename!r} does not match its CRC-32: {COPY_AGAIN}"
    return None


def is_torchscript_archive(path: str) -> bool:
    """True if `path` is an intact archive written by `torch.jit.save` (a zip archive with compiled
    code). A damaged or unreadable file is not taken for one: loaded as weights, it is named with
    what is wrong (`read_state_dict`)."""
    try:
        if not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except Exception:  # a damaged zip directory: BadZipFile, a name that is not UTF-8, ...
        return False
    if not any(name.endswith('constants.pkl') or '/code/' in name for name in names):
        return False
    try:
        check_weight_file(path)  # torch.jit.load does not check the CRC-32s either
    except (CheckpointError, OSError):
        return False
    return True


def weight_file_format_problem(path: str) -> Optional[str]:
    """Why `path` cannot be a file of torch.save, judged from its first bytes (None if it may be one)."""
    with open(path, 'rb') as file:
        head = file.read(4)
    if not head:
        return 'is empty: expected weights written by torch.save'
    # torch.save writes a zip archive, or before PyTorch 1.6 a pickle stream (protocol 2: 0x80 0x02).
    if head[:2] != b'PK' and head[:1] != b'\x80':
        return ('is not a PyTorch weight file (torch.save writes a zip archive, or in its legacy format a '
                'pickle stream; this file is neither)')
    return None


def describe_load_error(error: BaseException) -> str:
    """One line on why torch.load or torch.jit.load failed, for a user who cannot act on its internals.

    Never suggests loading with weights_only=False: a file refused by the safe loader is not run."""
    if isinstance(error, DamagedCheckpointError):
        return error.reason
    text = str(error)
    if 'central directory' in text or 'miniz' in text or 'unexpected eof' in text.lower() \
            or 'Unexpected end' in text or 'truncated' in text.lower():
        return 'the file is truncated or corrupt (an incomplete copy or download?); copy it again'
    if 'Weights only load failed' in text or 'weights_only' in text:
        found = re.search(r'GLOBAL ([\w.]+)', text)
        what = f' ({found.group(1)})' if found else ''
        return (f'it holds Python objects other than tensors and plain data{what}, which are not loaded because '
                'unpickling them could run code; weights saved with torch.save(model.state_dict(), path) load')
    text = re.sub(r'\s*\(Could this error message be improved\?.*', '', text, flags=re.S)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f"the file is damaged ({lines[0][:200] if lines else type(error).__name__})"


def read_state_dict(path: str, map_location='cpu') -> Tuple[Dict[str, torch.Tensor], str]:
    """Reads the weights of any accepted file.

    Returns:
        state_dict: parameter and buffer tensors by name, wrapper prefixes removed.
        kind: 'state_dict' or 'training checkpoint'.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    problem = weight_file_format_problem(path)
    if problem:
        raise CheckpointError(f"{path!r} {problem}")
    check_weight_file(path)
    if is_torchscript_archive(path):
        raise CheckpointError(
            f"{path!r} is a TorchScript archive (written by torch.jit.save), not a state_dict or a training "
            "checkpoint. Load it with torch.jit.load; the inference scripts take it as --model-checkpoint as it is.")
    try:
        obj = load_weights_file(path, map_location)
    except Exception as error:
        raise CheckpointError(f"cannot read checkpoint {path!r}: {describe_load_error(error)}") from error

    kind = 'state_dict'
    if isinstance(obj, dict):
        for key in WEIGHT_KEYS:
            if isinstance(obj.get(key), dict):
                obj, kind = obj[key], 'training checkpoint'
                break
    if not isinstance(obj, dict) or not obj or not all(torch.is_tensor(v) for v in obj.values()):
        raise CheckpointError(
            f"{path!r} holds no state_dict: expected a dict of tensors, or a training checkpoint with the "
            f"weights under one of {WEIGHT_KEYS}")
    return strip_wrapper_prefixes(obj), kind


def strip_wrapper_prefixes(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    for prefix in WRAPPER_PREFIXES:
        if all(k.startswith(prefix) for k in state_dict):
            state_dict = {k[len(prefix):]: v for k, v in state_dict.items()}
    return state_dict


def detect_backbone(state_dict: Dict[str, torch.Tensor]) -> Optional[str]:
    """Names the backbone that weights belong to, read from their keys and shapes (None if unknown)."""
    first_conv = state_dict.get('backbone.features.0.0.weight')
    if first_conv is not None:
        return {32: 'mobilenetv2', 16: 'mobilenetv3'}.get(first_conv.shape[0])
    if 'backbone.layer3.22.conv1.weight' in state_dict:
        return 'resnet101'
    if 'backbone.layer3.5.conv1.weight' in state_dict:
        return 'resnet50'
    return None


def model_backbone(model: nn.Module) -> Optional[str]:
    return detect_backbone({k: v for k, v in model.state_dict().items() if k.startswith('backbone.')})


def load_checkpoint(model: nn.Module, path: str, map_location='cpu', allow_missing_refiner: bool = False) -> str:
    """Loads a weight file into a MattingBase or MattingRefine, strictly.

    The base part of a MattingRefine checkpoint is a complete MattingBase, so `refiner.*` weights are
    dropped when loading into a MattingBase. A MattingBase checkpoint loads into a MattingRefine only
    with `allow_missing_refiner=True` (the refine training stage starts that way).

    Returns:
        kind: 'state_dict' or 'training checkpoint'.
    """
    state_dict, kind = read_state_dict(path, map_location)
    expected, found = model_backbone(model), detect_backbone(state_dict)
    if found is None:
        raise CheckpointError(f"{path!r} does not hold BGMv2 matting weights (no known backbone keys)")
    if expected is not None and found != expected:
        raise CheckpointError(
            f"{path!r} holds weights of a {found} backbone, but the model was built with {expected}: "
            f"pass --model-backbone {found} (or build the model with backbone={found!r})")

    has_refiner = any(k.startswith('refiner.') for k in model.state_dict())
    if not has_refiner:
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith('refiner.')}
    elif not any(k.startswith('refiner.') for k in state_dict):
        if not allow_missing_refiner:
            raise CheckpointError(
                f"{path!r} holds MattingBase weights (no refiner) but the model is a MattingRefine: "
                "train the refiner with train_refine.py, or build a MattingBase")
        state_dict = {**{k: v for k, v in model.state_dict().items() if k.startswith('refiner.')}, **state_dict}

    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"{path!r} does not fit the model: {error}") from error
    return kind


def load_matched_state_dict(model: nn.Module, state_dict: Dict[str, torch.Tensor],
                            print_stats: bool = True) -> Tuple[int, int]:
    """Loads only the tensors whose name and shape match the model; leaves the rest as they are.

    Returns:
        (loaded, total): how many of the model's tensors were loaded, out of how many.
    """
    own = model.state_dict()
    matched = {k: v for k, v in state_dict.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(matched, strict=False)
    if print_stats:
        print(f"Loaded state_dict: {len(matched)}/{len(own)} matched")
    return len(matched), len(own)


def load_deeplabv3_state_dict(model: nn.Module, state_dict, print_stats: bool = True) -> Tuple[int, int]:
    """Loads DeepLabV3 weights as published by VainF/DeepLabV3Plus-Pytorch, where they match.

    Accepts the file path or the loaded object (weights under `model_state`). The ASPP head
    `classifier.classifier.0.*` becomes `aspp.*`; for MobileNetV2, `backbone.low_level_features.N` and
    `backbone.high_level_features.M` are features N and M + 4 of our backbone.
    """
    if isinstance(state_dict, str):
        if not os.path.isfile(state_dict):
            raise FileNotFoundError(f"DeepLabV3 checkpoint {state_dict!r} does not exist")
        state_dict = load_weights_file(state_dict)
    if isinstance(state_dict, dict) and isinstance(state_dict.get('model_state'), dict):
        state_dict = state_dict['model_state']
    state_dict = strip_wrapper_prefixes(state_dict)

    renamed = {}
    for key, value in state_dict.items():
        key = key.replace('classifier.classifier.0.', 'aspp.')
        if key.startswith('backbone.low_level_features.'):
            index, rest = key[len('backbone.low_level_features.'):].split('.', 1)
            key = f'backbone.features.{int(index)}.{rest}'
        elif key.startswith('backbone.high_level_features.'):
            index, rest = key[len('backbone.high_level_features.'):].split('.', 1)
            key = f'backbone.features.{int(index) + 4}.{rest}'
        renamed[key] = value
    return load_matched_state_dict(model, renamed, print_stats)


def load_imagenet_backbone(model: nn.Module, path: str, print_stats: bool = True) -> Tuple[int, int]:
    """Initialises the backbone from a local torchvision ImageNet weight file (nothing is downloaded).

    E.g. `resnet50-11ad3fa6.pth`, `mobilenet_v2-7ebf99e0.pth`, `mobilenet_v3_large-5c1a4163.pth` from
    torchvision's model zoo, copied to the machine by the user. The 3-channel first convolution
    initialises both the src and the bgr half of our 6-channel one, each halved, so that an input with
    src == bgr gives the ImageNet activations. The classifier is ignored.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"ImageNet weights {path!r} do not exist; download torchvision's weight file for the backbone "
            "on a machine with internet access and pass its path")
    state_dict = load_weights_file(path)
    state_dict = {'backbone.' + k: v for k, v in strip_wrapper_prefixes(state_dict).items()}
    first_conv = 'backbone.conv1.weight' if 'backbone.conv1.weight' in state_dict else 'backbone.features.0.0.weight'
    if first_conv not in state_dict:
        raise CheckpointError(f"{path!r} is not a torchvision ResNet or MobileNet weight file")
    weight = state_dict[first_conv]
    if weight.shape[1] == 3:
        state_dict[first_conv] = torch.cat([weight, weight], dim=1) / 2
    return load_matched_state_dict(model, state_dict, print_stats)


def save_weights(model: nn.Module, path: str) -> None:
    """Saves a model's plain state_dict for inference (unwrapped from DDP), atomically."""
    save_state_dict(getattr(model, 'module', model).state_dict(), path)


def save_state_dict(state_dict: Dict[str, torch.Tensor], path: str,
                    dtype: Optional[torch.dtype] = None) -> None:
    """Saves weights atomically; with `dtype`, floating tensors are cast to it (e.g. float16 halves the
    file; `load_checkpoint` casts them back to the model's dtype)."""
    if dtype is not None:
        state_dict = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state_dict.items()}
    save_torch(state_dict, path)
