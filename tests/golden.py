"""The small golden file, tests/data/golden_small.npz: outputs of the original BGMv2 code for weights and
inputs that need not be stored, because a formula makes them (not a random generator, whose stream may
change between torch versions).

    python tests/golden.py --original ~/src/BackgroundMattingV2       # writes tests/data/golden_small.npz

How the file was made: the original repository (github.com/PeterL1n/BackgroundMattingV2, at commit
a8e82df) was fetched and its `model` package imported beside ours (`scripts.benchmark_inference.
import_original`); for each backbone the original's MattingRefine was built with `formula_weights` and
run in eval mode, float32, on the CPU, on `formula_inputs`, in each refine mode, and its MattingBase with
the same weights; every output was stored in float32 (numpy's compressed npz, no pickle). Nothing of the
original is stored. tests/test_golden.py compares this project's models with it.
"""
import argparse
import math
import os
import sys
import zlib
from typing import Dict, Tuple

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PATH = os.path.join(ROOT, 'tests', 'data', 'golden_small.npz')
BACKBONES = ('mobilenetv2', 'resnet50', 'resnet101')  # the original's
MODES = ('sampling', 'thresholding', 'full')
SIZE = (96, 128)  # (H, W) of the inputs
# MattingRefine's settings: the base network at 48x64, a budget of 1,200 pixels (75 patches).
CONFIG = dict(backbone_scale=0.5, refine_sample_pixels=1_200, refine_threshold=0.1, refine_kernel_size=3)
REFINE_NAMES = ('pha', 'fgr', 'pha_sm', 'fgr_sm', 'err_sm', 'ref_sm')
BASE_NAMES = ('pha', 'fgr', 'err', 'hid')
HID_CHANNELS = 8  # of hid's 32, stored (the file stays small)
GOLDEN_RATIO = (math.sqrt(5) - 1) / 2


def wave(name: str, count: int) -> torch.Tensor:
    """`count` values in [-1, 1], spread like noise: sin(2 pi (i * golden ratio + phase)), the phase given by
    the name's CRC-32 (the same on every machine), in float64."""
    phase = zlib.crc32(name.encode()) / 2 ** 32
    i = torch.arange(count, dtype=torch.float64)
    return torch.sin(2 * math.pi * torch.frac(i * GOLDEN_RATIO + phase))


def formula_weights(shapes: Dict[str, Tuple[Tuple[int, ...], torch.dtype]]) -> Dict[str, torch.Tensor]:
    """Weights for every state_dict entry, by name and shape: convolutions He-initialised, BatchNorm
    scaling up (running variances of 0.25 ~ 0.375) so that what the deepest layers compute reaches the
    outputs, biases small; alpha's and the error prediction's biases positive (the refiner has work)."""
    weights = {}
    for name, (shape, dtype) in shapes.items():
        count = math.prod(shape)
        values = wave(name, count).view(shape)
        if not dtype.is_floating_point:  # num_batches_tracked
            weights[name] = torch.zeros(shape, dtype=dtype)
            continue
        leaf = name.rsplit('.', 1)[-1]
        if leaf == 'running_var':  # below 1: BatchNorm amplifies, so that the deep features reach the outputs
            values = 0.25 + 0.0625 * (values + 1)
        elif leaf == 'running_mean':
            values = 0.1 * values
        elif len(shape) == 1 and leaf == 'weight':  # BatchNorm's scale
            values = 1.0 + 0.1 * values
        elif leaf == 'bias':
            values = 0.05 * values
        else:
            fan_in = count // shape[0]
            values = values * math.sqrt(4.0 / fan_in)  # variance 2 / fan_in (He), sin's being 1 / 2
        weights[name] = values.float()
    if 'decoder.conv4.bias' in weights:
        weights['decoder.conv4.bias'][0] += 0.3  # alpha away from 0
        weights['decoder.conv4.bias'][4] += 0.3  # err, so that the refiner has work
    return weights


def formula_inputs() -> Tuple[torch.Tensor, torch.Tensor]:
    """src and bgr (1, 3, H, W), 0 ~ 1: a smooth background and, in src, a disc over it."""
    H, W = SIZE
    y = torch.linspace(0, 1, H, dtype=torch.float64).view(H, 1)
    x = torch.linspace(0, 1, W, dtype=torch.float64).view(1, W)
    channels = torch.arange(3, dtype=torch.float64).view(3, 1, 1)
    bgr = 0.5 + 0.3 * torch.sin(6 * x + 4 * y + 2 * channels) * torch.cos(3 * y - channels)
    disc = (((x - 0.45) ** 2 + (y - 0.55) ** 2).sqrt() < 0.28).double()
    subject = 0.5 + 0.4 * torch.sin(20 * x * (channels + 1)) * torch.sin(15 * y)
    src = bgr * (1 - disc) + subject * disc
    return src[None].float(), bgr[None].float()


def model_outputs(package, backbone: str, weights: Dict[str, torch.Tensor], src, bgr) -> Dict[str, np.ndarray]:
    """Every output of `package`'s MattingRefine in each mode and of its MattingBase, by 'backbone/mode/name'."""
    outputs = {}
    for mode in MODES:
        model = package.MattingRefine(backbone, refine_mode=mode, **CONFIG).eval()
        model.load_state_dict(weights, strict=True)
        with torch.no_grad():
            for name, value in zip(REFINE_NAMES, model(src, bgr)):
                outputs[f'{backbone}/{mode}/{name}'] = value.numpy()
    base = package.MattingBase(backbone).eval()
    base.load_state_dict({k: v for k, v in weights.items() if not k.startswith('refiner.')}, strict=True)
    with torch.no_grad():
        for name, value in zip(BASE_NAMES, base(src, bgr)):
            outputs[f'{backbone}/base/{name}'] = value[:, :HID_CHANNELS].numpy()
    return outputs


def shapes_of(model: torch.nn.Module) -> Dict[str, Tuple[Tuple[int, ...], torch.dtype]]:
    return {name: (tuple(t.shape), t.dtype) for name, t in model.state_dict().items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description='Writes tests/data/golden_small.npz with the original code.')
    parser.add_argument('--original', required=True, help='a checkout of PeterL1n/BackgroundMattingV2')
    parser.add_argument('--output', default=PATH)
    args = parser.parse_args(argv)
    sys.path.insert(0, ROOT)
    from scripts.benchmark_inference import import_original
    package = import_original(args.original)
    torch.set_num_threads(1)  # one summation order
    src, bgr = formula_inputs()
    outputs = {}
    for backbone in BACKBONES:
        weights = formula_weights(shapes_of(package.MattingRefine(backbone, **CONFIG)))
        outputs.update(model_outputs(package, backbone, weights, src, bgr))
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    temporary = args.output + '.partial.npz'
    np.savez_compressed(temporary, **outputs)
    os.replace(temporary, args.output)
    print(f'{args.output}: {len(outputs)} arrays, {os.path.getsize(args.output) / 1e6:.2f} MB')
    for backbone in BACKBONES:
        pha = outputs[f'{backbone}/sampling/pha']
        refined = outputs[f'{backbone}/sampling/ref_sm'].mean()
        print(f'  {backbone}: alpha strictly between 0 and 1 at {((pha > 0) & (pha < 1)).mean():.0%} of pixels, '
              f'{refined:.0%} of patches refined in sampling mode')


if __name__ == '__main__':
    main()
