"""Turns any weight file (a training checkpoint, a state_dict) into plain inference weights, optionally
in float16: half the size, and what weights/ holds. The model loader casts them back to float32.

    python scripts/release_weights.py checkpoint/demo-refine/last.pth \
        weights/mattingrefine_mobilenetv2_synthetic_fp16.pth --fp16

With --refiner-from, the refiner of another MattingRefine file joins a MattingBase checkpoint: a base
fine-tuned further by train_base.py goes on to train_refine.py with the refiner it already had.

    python scripts/release_weights.py checkpoint/demo-base-3/last.pth checkpoint/demo-base-3/refine.pth \
        --refiner-from weights/mattingrefine_mobilenetv2_synthetic_fp16.pth
"""
import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from model.checkpoint import CheckpointError, detect_backbone, read_state_dict, save_state_dict  # noqa: E402


def with_refiner_of(parser, state_dict, backbone, path):
    """state_dict without its refiner.* tensors, plus those of the MattingRefine weights in `path`."""
    try:
        other, _ = read_state_dict(path)
    except (FileNotFoundError, CheckpointError) as error:
        parser.error(str(error))
    refiner = {k: v for k, v in other.items() if k.startswith('refiner.')}
    if not refiner:
        parser.error(f'--refiner-from {path}: holds no refiner.* tensors (expected MattingRefine weights)')
    if detect_backbone(other) != backbone:
        parser.error(f'--refiner-from {path}: its backbone is {detect_backbone(other)}, not {backbone}')
    return {**{k: v for k, v in state_dict.items() if not k.startswith('refiner.')}, **refiner}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('checkpoint', help='a training checkpoint or state_dict of this project, or official weights')
    parser.add_argument('output', help='the plain state_dict to write (not overwritten without --overwrite)')
    parser.add_argument('--fp16', action='store_true', help='store floating tensors as float16')
    parser.add_argument('--refiner-from', metavar='FILE',
                        help="replace the refiner.* tensors with those of FILE (a MattingRefine of the same backbone)")
    parser.add_argument('--overwrite', action='store_true')
    args = parser.parse_args(argv)
    if os.path.exists(args.output) and not args.overwrite:
        parser.error(f'{args.output} exists; pass --overwrite to replace it')
    try:
        state_dict, kind = read_state_dict(args.checkpoint)
    except (FileNotFoundError, CheckpointError) as error:
        parser.error(str(error))
    backbone = detect_backbone(state_dict)
    if backbone is None:
        parser.error(f'{args.checkpoint} does not hold BGMv2 matting weights (no known backbone keys)')
    if args.refiner_from:
        state_dict = with_refiner_of(parser, state_dict, backbone, args.refiner_from)
    save_state_dict(state_dict, args.output, torch.float16 if args.fp16 else None)
    model = 'MattingRefine' if any(k.startswith('refiner.') for k in state_dict) else 'MattingBase'
    size = os.path.getsize(args.output) / 2 ** 20
    print(f'{model} ({backbone}) weights from a {kind} written to {args.output} ({size:.1f} MiB)')


if __name__ == '__main__':
    main()
