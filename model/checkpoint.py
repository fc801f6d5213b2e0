"""Reading and loading weights: one place for every script.

Accepted files:
    - an official BGMv2 checkpoint (`pytorch_resnet50.pth`, ...): a plain state_dict of MattingRefine;
    - a plain state_dict saved by this project (`torch.save(model.state_dict(), path)`);
    - a training checkpoint of this project: a dict holding the weights under `model`
      (`state_dict` and `model_state` are accepted too).
Weights saved from DistributedDataParallel (`module.`) or torch.compile (`_orig_mod.`) are unwrapped.
Everything is read with `map_location`, so GPU checkpoints load on CPU-only machines.
"""
import os
import re
import zipfile
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


# Training checkpoints of other projects hold numpy scalars beside the weights (VainF's DeepLabV3
# files store `best_score` as numpy.float64): plain data, safe to unpickle.
NUMPY_SCALAR_GLOBALS = [numpy_scalar, np.dtype, *(type(np.dtype(t)) for t in ('f8', 'f4', 'i8', 'i4', 'bool'))]


def load_weights_file(path: str, map_location='cpu'):
    """`torch.load` with `weights_only=True` (no arbitrary code), also accepting numpy scalars."""
    with torch.serialization.safe_globals(NUMPY_SCALAR_GLOBALS):
        return torch.load(path, map_location=map_location, weights_only=True)


def is_torchscript_archive(path: str) -> bool:
    """True if `path` was written by `torch.jit.save` (a zip archive with compiled code)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith('constants.pkl') or '/code/' in name for name in archive.namelist())


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
    if is_torchscript_archive(path):
        raise CheckpointError(
            f"{path!r} is a TorchScript archive (written by torch.jit.save), not a state_dict or a training "
            "checkpoint. Load it with torch.jit.load; the inference scripts take it as --model-checkpoint as it is.")
    problem = weight_file_format_problem(path)
    if problem:
        raise CheckpointError(f"{path!r} {problem}")
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
