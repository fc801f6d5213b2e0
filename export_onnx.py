"""Export MattingBase or MattingRefine to ONNX, and check the file against PyTorch with ONNX Runtime.

Example:

    python export_onnx.py \
        --model-type mattingrefine \
        --model-backbone mobilenetv2 \
        --model-checkpoint pytorch_mobilenetv2.pth \
        --model-backbone-scale 0.25 \
        --model-refine-mode sampling \
        --model-refine-sample-pixels 80000 \
        --model-refine-patch-crop-method roi_align \
        --model-refine-patch-replace-method scatter_nd \
        --precision fp32 \
        --output bgmv2_mobilenetv2_fp32.onnx \
        --validate

The file takes `src` and `bgr` of any batch size, height and width (only --batch-size x --resolution
with --fixed-shape); backbone scale, refine mode, sample pixels and threshold are fixed in it and
recorded in its metadata (`bgmv2`). Inputs and outputs are those of MattingBase / MattingRefine.

The graph exported is that of the optimized model (`model.optimize`), which ONNX Runtime runs faster
(README, "Speed"); its refiner samples its patches with RoiAlign whatever the crop method. `--eager`
exports the model as written (its crop and replace methods as chosen). Either file is validated against
the eager model.

Exporter: the TorchScript-based `torch.onnx.export(..., dynamo=False)`. The refiner picks its patches
with topk and nonzero, so how many there are depends on the data; torch.export (`dynamo=True`) stops at
the branch on that count (GuardOnDataDependentSymNode) and takes about a minute for the base network
alone, while the tracer exports the data-dependent shapes as ONNX TopK/NonZero outputs. A trace records
only the Python branches taken, which shapes what is traced below (see `trace_size`).
"""
import argparse
import os
import sys
from typing import Optional, Sequence

from export.onnx import (DEFAULT_OPSET, TOLERANCE, check_size, compare_selections, create_session, export,
                         read_metadata, run, validate)
from inference.model import add_model_arguments
from model.checkpoint import is_torchscript_archive

# The import path of earlier versions for the functions of export.onnx.
__all__ = ['DEFAULT_OPSET', 'TOLERANCE', 'check_size', 'compare_selections', 'create_session', 'export',
           'read_metadata', 'validate', 'get_args_parser', 'main']


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description='Export a matting model to ONNX.')
    add_model_arguments(parser, channels_last=False)
    parser.set_defaults(model_refine_patch_crop_method='roi_align')  # unfold has no ONNX export
    group = parser.add_argument_group('onnx')
    group.add_argument('--output', required=True, help='the .onnx file to write')
    group.add_argument('--eager', action='store_true',
                       help='export the model as written (with its patch crop and replace methods) instead of '
                            'its optimized graph, which ONNX Runtime runs faster')
    group.add_argument('--onnx-opset-version', type=int, default=DEFAULT_OPSET, choices=range(11, 21),
                       metavar='{11..20}')
    group.add_argument('--resolution', type=int, nargs=2, default=[1920, 1080], metavar=('WIDTH', 'HEIGHT'),
                       help='size of the example input traced; with --fixed-shape the only size the file takes')
    group.add_argument('--batch-size', type=int, default=1, help='with --fixed-shape the only batch size')
    group.add_argument('--fixed-shape', action='store_true',
                       help='static input and output shapes (TensorRT, OpenCV DNN, ...)')
    group.add_argument('--validate', action='store_true',
                       help='compare every output with PyTorch in ONNX Runtime; exit 1 beyond the tolerance')
    group.add_argument('--validate-resolution', type=int, nargs=2, metavar=('WIDTH', 'HEIGHT'),
                       help='default: 64 pixels wider and higher than --resolution, batch 2 '
                            '(--fixed-shape: its own shape)')
    group.add_argument('--validate-tolerance', type=float,
                       help=f"largest allowed absolute difference (default {TOLERANCE['fp32']:g} for fp32, "
                            f"{TOLERANCE['fp16']:g} for fp16)")
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.precision not in TOLERANCE:
        parser.error(f"--precision {args.precision}: ONNX export supports {' and '.join(TOLERANCE)}")
    if args.model_type == 'mattingrefine' and args.model_refine_patch_crop_method == 'unfold':
        parser.error("--model-refine-patch-crop-method unfold cannot be exported to ONNX; use roi_align or gather")
    if os.path.isfile(args.model_checkpoint) and is_torchscript_archive(args.model_checkpoint):
        parser.error(f"--model-checkpoint {args.model_checkpoint} is TorchScript; give the state_dict or "
                     "training checkpoint it was made from")
    if args.batch_size < 1 or min(args.resolution) < 1:
        parser.error("--batch-size and --resolution must be positive")
    if args.fixed_shape and args.validate_resolution and args.validate_resolution != args.resolution:
        parser.error("--validate-resolution must equal --resolution with --fixed-shape")


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = get_args_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    run(args, parser)


if __name__ == '__main__':
    main(sys.argv[1:])
