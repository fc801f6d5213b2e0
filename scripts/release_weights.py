"""Turns any weight file (a training checkpoint, a state_dict) into plain inference weights, optionally
in float16: half the size, and what weights/ holds. The model loader casts them back to float32.

    python -m scripts.release_weights checkpoint/demo-refine/last.pth \
        weights/mattingrefine_mobilenetv2_synthetic_fp16.pth --fp16

Several checkpoints are averaged, tensor by tensor (stochastic weight averaging): the last few
checkpoints of a run at a constant learning rate average into weights better than any one of them.

    python -m scripts.release_weights checkpoint/demo-refine-4/epoch-*-iter-{900,1000,1100}.pth \
        weights/mattingrefine_mobilenetv2_synthetic_fp16.pth --fp16 --overwrite

With --refiner-from, the refiner of another MattingRefine file joins a MattingBase checkpoint: a base
fine-tuned further by train_base.py goes on to train_refine.py with the refiner it already had.

    python -m scripts.release_weights checkpoint/demo-base-3/last.pth checkpoint/demo-base-3/refine.pth \
        --refiner-from weights/mattingrefine_mobilenetv2_synthetic_fp16.pth
"""
import argparse
import os

import torch

from model.checkpoint import CheckpointError, detect_backbone, read_state_dict, save_state_dict


def with_refiner_of(parser, state_dict, backbone, path):
    """state_dict without its refiner.* tensors, plus those of the MattingRefine weights in `path`."""
    other, _ = read(parser, path)
    refiner = {k: v for k, v in other.items() if k.startswith('refiner.')}
    if not refiner:
        parser.error(f'--refiner-from {path}: holds no refiner.* tensors (expected MattingRefine weights)')
    if detect_backbone(other) != backbone:
        parser.error(f'--refiner-from {path}: its backbone is {detect_backbone(other)}, not {backbone}')
    return {**{k: v for k, v in state_dict.items() if not k.startswith('refiner.')}, **refiner}


def read(parser, path):
    try:
        return read_state_dict(path)
    except (FileNotFoundError, CheckpointError) as error:
        parser.error(str(error))


def average(parser, paths):
    """The mean of the weights in `paths`, floating tensors in float32 and back to their dtype;
    integer buffers (BatchNorm's num_batches_tracked) from the last file. Returns it and its kind."""
    state_dicts = [read(parser, path) for path in paths]
    first, kind = state_dicts[0]
    for path, (state_dict, _) in zip(paths[1:], state_dicts[1:]):
        if state_dict.keys() != first.keys() or any(state_dict[k].shape != first[k].shape for k in first):
            parser.error(f'{path} does not hold the same tensors as {paths[0]}: only weights of one model average')
    mean = {}
    for key, value in first.items():
        if value.is_floating_point():
            mean[key] = (sum(sd[key].float() for sd, _ in state_dicts) / len(state_dicts)).to(value.dtype)
        else:
            mean[key] = state_dicts[-1][0][key]
    return mean, kind


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('checkpoints', nargs='+', metavar='checkpoint',
                        help='a training checkpoint or state_dict of this project, or official weights; '
                             'several are averaged')
    parser.add_argument('output', help='the plain state_dict to write (not overwritten without --overwrite)')
    parser.add_argument('--fp16', action='store_true', help='store floating tensors as float16')
    parser.add_argument('--refiner-from', metavar='FILE',
                        help="replace the refiner.* tensors with those of FILE (a MattingRefine of the same backbone)")
    parser.add_argument('--overwrite', action='store_true')
    args = parser.parse_args(argv)
    if os.path.exists(args.output) and not args.overwrite:
        parser.error(f'{args.output} exists; pass --overwrite to replace it')
    state_dict, kind = average(parser, args.checkpoints)
    backbone = detect_backbone(state_dict)
    if backbone is None:
        parser.error(f'{args.checkpoints[0]} does not hold BGMv2 matting weights (no known backbone keys)')
    if args.refiner_from:
        state_dict = with_refiner_of(parser, state_dict, backbone, args.refiner_from)
    save_state_dict(state_dict, args.output, torch.float16 if args.fp16 else None)
    model = 'MattingRefine' if any(k.startswith('refiner.') for k in state_dict) else 'MattingBase'
    size = os.path.getsize(args.output) / 2 ** 20
    source = f'the average of {len(args.checkpoints)} {kind}s' if len(args.checkpoints) > 1 else f'a {kind}'
    print(f'{model} ({backbone}) weights from {source} written to {args.output} ({size:.1f} MiB)')


if __name__ == '__main__':
    main()
