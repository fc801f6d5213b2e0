"""Training checkpoints: everything needed to continue exactly, written atomically by rank 0.

A checkpoint is a dict of tensors and plain Python values only, so that it loads with
`torch.load(weights_only=True)`:
    model, optimizer, scaler: state_dicts (model without DDP's `module.` prefix)
    epoch, step, step_in_epoch: where the run stands (step counts optimizer steps, skipped ones too)
    nonfinite_steps: steps skipped so far because the loss was not finite
    checkpoints: the weight files the run wrote and its best validation (training.checkpoint_keeping)
    args: the command line options as a dict
    rng: one entry per rank with the Python, NumPy, torch and CUDA generator states

Beside it, plain weights (a state_dict, as the inference scripts load) are written on a schedule:
`epoch-E-iter-S.pth` after step S, `epoch-E.pth` after the last step of epoch E (the last few kept), and
`best.pth` at the best validation.

Also here: an optimizer step that the device undoes where it must be skipped (`step_unless`), so that the
host need not wait to decide.
"""
import os
import random
import re
from typing import Any, Dict, List, Optional

import numpy as np
import torch
import torch.distributed as dist

from common.errors import UserError, first_line
from common.files import save_torch
from model.checkpoint import describe_load_error, detect_backbone

TRAINING_STATE = 'last.pth'
# What a write leaves behind when it is killed, for the names a trainer writes only: `.<name>.<random>.partial.pth`
# (common.files.temporary_path), and `<name>.tmp.<pid>` or `<name>.tmp`, the names of earlier versions.
TEMPORARY = re.compile(r'(last|epoch-\d+|epoch-\d+-iter-\d+)\.pth\.tmp(\.\d+)?'
                       r'|\.(last|best|epoch-\d+|epoch-\d+-iter-\d+)\.[0-9a-f]{8}\.partial\.pth')


def rng_state() -> Dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, python_state, gauss = random.getstate()
    return {
        'python': [version, list(python_state), gauss],
        'numpy': [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        'torch': torch.get_rng_state(),
        'cuda': torch.cuda.get_rng_state() if torch.cuda.is_available() and torch.cuda.is_initialized() else None,
    }


def set_rng_state(state: Dict[str, Any]) -> None:
    version, python_state, gauss = state['python']
    random.setstate((version, tuple(python_state), gauss))
    kind, keys, pos, has_gauss, cached = state['numpy']
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state['torch'])
    if state['cuda'] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state['cuda'])


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> Dict[tuple, torch.Tensor]:
    """What an optimizer step changes on the device, by (parameter number, name): the parameters that have a
    gradient, and their optimizer state of their shape (Adam's moments; not its step counts)."""
    tensors = {}
    for i, p in enumerate(p for group in optimizer.param_groups for p in group['params']):
        if p.grad is not None:
            tensors[i, 'param'] = p
            tensors.update(((i, name), t) for name, t in optimizer.state.get(p, {}).items()
                           if torch.is_tensor(t) and t.shape == p.shape and t.device == p.device)
    return tensors


@torch.no_grad()
def step_unless(optimizer: torch.optim.Optimizer, skip: torch.Tensor, saved: Dict[tuple, torch.Tensor]) -> None:
    """optimizer.step(), undone on the device where `skip` (a bool tensor) is true: the optimizer's tensors
    get their values from before it back (from `saved`, copies kept between calls: for Adam three times the
    parameters' memory), or zeros where the step made them. torch.optim keeps its step counts on the host:
    a skipped step advances them until `uncount_steps` takes it off."""
    before = optimizer_tensors(optimizer)
    for key, tensor in before.items():
        if key not in saved:
            saved[key] = torch.empty_like(tensor)
    torch._foreach_copy_([saved[key] for key in before], list(before.values()))
    optimizer.step()
    for key, tensor in optimizer_tensors(optimizer).items():
        if key in before:
            torch.where(skip, saved[key], tensor, out=tensor)
        else:
            tensor.masked_fill_(skip, 0)


def uncount_steps(optimizer: torch.optim.Optimizer, skipped: int) -> None:
    """Takes `skipped` steps that step_unless undid off the optimizer's step counts (Adam's bias correction
    of the steps in between had a count that many too large)."""
    for state in optimizer.state.values():
        if skipped and 'step' in state:
            state['step'] -= skipped


def gather_rng_states(world_size: int) -> List[Dict[str, Any]]:
    """Every rank's generator states, in rank order (a collective call: all ranks must call it)."""
    own = rng_state()
    if world_size == 1:
        return [own]
    states = [None] * world_size
    dist.all_gather_object(states, own)
    return states


def atomic_save(obj, path: str) -> None:
    """torch.save, atomically: a crash never leaves a truncated file, and a failed write leaves neither a
    temporary nor a change to `path`. Raises UserError naming `path` when it cannot be written."""
    try:
        save_torch(obj, path)
    except UserError as error:
        cause = error.__cause__
        reason = getattr(cause, 'strerror', None) or first_line(cause or error)
        raise UserError(f'cannot write checkpoint {path}: {reason}') from cause


def remove_stale_temporaries(folder: str) -> List[str]:
    """Removes what killed writes left in a run's checkpoint folder (names matching TEMPORARY only).

    Returns the names removed.
    """
    if not os.path.isdir(folder):
        return []
    stale = sorted(name for name in os.listdir(folder) if TEMPORARY.fullmatch(name))
    for name in stale:
        os.remove(os.path.join(folder, name))
    return stale


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, 'module', model)


def save_weights(model: torch.nn.Module, path: str) -> None:
    """The model's state_dict alone (what inference and --model-last-checkpoint load), atomically."""
    atomic_save(unwrap(model).state_dict(), path)


def save_training_state(path: str, model, optimizer, scaler, epoch: int, step: int, step_in_epoch: int,
                        nonfinite_steps: int, args, rng: List[Dict[str, Any]],
                        checkpoints: Optional[Dict[str, Any]] = None) -> None:
    atomic_save({
        'model': unwrap(model).state_dict(),
        'optimizer': optimizer.state_dict(),
        'scaler': scaler.state_dict(),
        'epoch': epoch,
        'step': step,
        'step_in_epoch': step_in_epoch,
        'nonfinite_steps': nonfinite_steps,
        'checkpoints': checkpoints or {},
        'args': {k: (str(v) if isinstance(v, os.PathLike) else v) for k, v in vars(args).items()},
        'rng': rng,
    }, path)


def scheduled_weights(epoch: int, step: int, epoch_finished: bool, checkpoint_interval: int,
                      max_steps: Optional[int]) -> List[str]:
    """The weight files due once optimizer step `step` (counted from 1) of epoch `epoch` is done:
    `epoch-E-iter-S.pth` every `checkpoint_interval` steps and at `max_steps`, and `epoch-E.pth`
    when the step was the last of its epoch."""
    names = []
    if step > 0 and (step % checkpoint_interval == 0 or step == max_steps):
        names.append(f'epoch-{epoch}-iter-{step}.pth')
    if epoch_finished:
        names.append(f'epoch-{epoch}.pth')
    return names


def find_resume_path(resume: Optional[str], checkpoint_dir: str) -> Optional[str]:
    """--resume PATH: that file (it must exist). --resume auto: the run's last state if there is one."""
    if resume is None:
        return None
    if resume == 'auto':
        path = os.path.join(checkpoint_dir, TRAINING_STATE)
        return path if os.path.isfile(path) else None
    if not os.path.isfile(resume):
        raise UserError(f"--resume {resume}: no such file (expected a training checkpoint such as "
                        f"{os.path.join(checkpoint_dir, TRAINING_STATE)}, or 'auto')")
    return resume


def load_training_state(path: str, map_location) -> Dict[str, Any]:
    """Reads a training checkpoint; UserError naming `path` if it is unreadable or of another kind."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # a damaged file fails anywhere in the unpickler, with any exception
        raise UserError(f'--resume {path}: cannot read it as a training checkpoint: '
                        f'{describe_load_error(error)}') from error
    if not isinstance(state, dict):
        raise UserError(f'--resume {path}: not a training checkpoint of this project (it holds a '
                        f'{type(state).__name__}, not a dict)')
    missing = {'model', 'optimizer', 'scaler', 'epoch', 'step', 'step_in_epoch'} - set(state)
    if missing:
        raise UserError(f"--resume {path}: not a training checkpoint of this project (missing {sorted(missing)}); "
                        "plain weights are loaded with --model-last-checkpoint instead")
    return state


def describe_mismatch(model: torch.nn.Module, state_dict: Dict[str, torch.Tensor], args) -> str:
    """Why a training checkpoint's weights do not load into the model of this run, in one line."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    reshaped = [k for k in own if k in state_dict and own[k].shape != state_dict[k].shape]
    found = detect_backbone(state_dict)
    if found is not None and found != args.model_backbone:
        return (f'it holds a {found} model but this run builds --model-backbone {args.model_backbone}; '
                f'pass --model-backbone {found}, or another --model-name for a new run')
    if missing and all(k.startswith('refiner.') for k in missing) and not unexpected and not reshaped:
        return ('it holds the training state of a MattingBase (no refiner): start the refine stage from its '
                'weights with --model-last-checkpoint instead')
    if unexpected and all(k.startswith('refiner.') for k in unexpected) and not missing and not reshaped:
        return 'it holds the training state of a MattingRefine, not of this MattingBase'
    parts = [f'{len(keys)} {what} (e.g. {keys[0]})' for keys, what in
             ((missing, 'missing'), (unexpected, 'unexpected'), (reshaped, 'of other shapes')) if keys]
    if not parts:
        return "its optimizer or scaler state does not fit this run's: it is the checkpoint of another kind of run"
    return (f'its weights do not fit this {type(model).__name__} ({", ".join(parts)}): it is the checkpoint of '
            'another kind of run')
