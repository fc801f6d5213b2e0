"""Validation of a training run on its fixed sample: the loss, and the SAD and MSE of alpha.

    pha_sad: sum of |alpha error| over the image / 1000, the mean over the images
    pha_mse: mean of the squared alpha error over the image, the mean over the images
    loss:    the stage's total loss, the mean over the images

The model runs in eval mode, as inference does: its BatchNorm layers normalise with their running
statistics, which start at mean 0 and variance 1 and move 10 % of the way to each training batch's
(momentum 0.1). A model trained from scratch has layers whose activations vary far less than that (the
depthwise convolutions of MobileNetV2: a variance of about 4e-4 after 30 steps on the synthetic data,
measured), and until the initial variance has faded, 0.9^steps below theirs (some 75 steps there), eval
mode shrinks those activations: every predicted alpha comes out as 0 (clamped), and pha_sad stays at that
of an empty matte, the same at every validation. `describe` says so when it happens.
"""
import math
from dataclasses import dataclass
from typing import Callable, Dict, Optional

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset


@dataclass
class Validation:
    metrics: Dict[str, float]          # 'loss', 'pha_sad', 'pha_mse': means over the samples
    samples: int
    constant_alpha: Optional[float]    # the value of every predicted alpha where they all have one, else None
    initial_share: Optional[float]     # the weight of BatchNorm's initial statistics in its running ones


@torch.no_grad()
def validate(model: nn.Module, valid_set: Dataset, forward: Callable, batch_size: int, device: torch.device,
             memory_format=torch.contiguous_format) -> Validation:
    """Runs `forward(model, src, bgr, true_pha, true_fgr) -> (terms, outputs)` over `valid_set` (items
    (pha, fgr, bgr), composited here without augmentation), `model` in eval mode, then back in train mode."""
    model.eval()
    totals, count, low, high = {}, 0, math.inf, -math.inf
    try:
        for true_pha, true_fgr, true_bgr in DataLoader(valid_set, batch_size=batch_size, num_workers=0):
            true_pha, true_fgr, true_bgr = (t.to(device) for t in (true_pha, true_fgr, true_bgr))
            true_src = (true_fgr * true_pha + true_bgr * (1 - true_pha)).contiguous(memory_format=memory_format)
            true_bgr = true_bgr.contiguous(memory_format=memory_format)
            terms, outputs = forward(model, true_src, true_bgr, true_pha, true_fgr)
            pha = outputs['pha'].float()
            error = pha - true_pha
            batch = {'loss': terms['total'].float() * true_pha.size(0),
                     'pha_sad': error.abs().sum(dim=(1, 2, 3)).sum() / 1000,
                     'pha_mse': error.pow(2).mean(dim=(1, 2, 3)).sum()}
            for name, value in batch.items():
                totals[name] = totals.get(name, 0.0) + float(value)
            low, high = min(low, float(pha.min())), max(high, float(pha.max()))
            count += true_pha.size(0)
    finally:
        model.train()
    metrics = {name: value / max(count, 1) for name, value in totals.items()}
    return Validation(metrics, count, low if count and low == high else None, batchnorm_initial_share(model))


def batchnorm_initial_share(model: nn.Module) -> Optional[float]:
    """How much of their initial values (mean 0, variance 1) the running statistics of the model's
    BatchNorm layers still hold: (1 - momentum) ^ updates. None without BatchNorm or with cumulative ones."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            if module.momentum is None:
                return None
            return (1 - module.momentum) ** int(module.num_batches_tracked)
    return None


class Validator:
    """Validates a model on `valid_set` (`validate`) and words the result for the log (`describe`), the
    explanation of a constant prediction in full the first time only."""

    def __init__(self, valid_set: Dataset, batch_size: int, device: torch.device,
                 memory_format=torch.contiguous_format):
        self.valid_set, self.batch_size, self.device, self.memory_format = valid_set, batch_size, device, memory_format
        self.explained = False

    def __call__(self, model: nn.Module, forward: Callable, step: int):
        """(metrics by name, the log line) of a validation of `model` at `step`."""
        result = validate(model, self.valid_set, forward, self.batch_size, self.device, self.memory_format)
        line = describe(result, step, explain=not self.explained)
        self.explained = self.explained or result.constant_alpha is not None
        return result.metrics, line


def describe(result: Validation, step: int, explain: bool = True) -> str:
    """The log line of a validation at `step`, and why where the prediction is constant."""
    values = ', '.join(f'{name} {result.metrics[name]:.4g}' for name in ('loss', 'pha_sad', 'pha_mse'))
    line = f"step {step}: validation on {result.samples} sample{'s' if result.samples != 1 else ''}: {values}"
    if result.constant_alpha is None:
        return line
    line += f'; every predicted alpha is {result.constant_alpha:g}'
    if not explain:
        return line + ' (see above)'
    line += ', a constant matte, whose pha_sad stays put while it lasts'
    share = result.initial_share
    if share is not None and share > 1e-6:
        return line + (f': expected early in a run from scratch, as eval mode normalises with BatchNorm running '
                       f'statistics that still hold {100 * share:.2g} % of their initial variance of 1 '
                       "(0.9 ^ steps), more than some layers' activations vary")
    return line + ': the model has collapsed (lower the learning rates, or check the data and its alphas)'
