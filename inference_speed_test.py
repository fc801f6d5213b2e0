"""Measure the latency of a matting model with PyTorch, TorchScript or ONNX Runtime.

Example, the paper's setting (HD, MattingRefine sampling 80,000 pixels):

    python inference_speed_test.py \
        --backend pytorch \
        --model-type mattingrefine \
        --model-backbone mobilenetv2 \
        --model-backbone-scale 0.25 \
        --model-refine-mode sampling \
        --model-refine-sample-pixels 80000 \
        --resolution 1920 1080 \
        --batch-size 1 \
        --precision fp32 \
        --device cuda

    # An exported file on a real image pair, as one JSON record:
    python inference_speed_test.py --backend onnx --model-checkpoint model.onnx --src src.png --bgr bgr.png --json

With a random input (`--resolution`) the work is fixed: sampling mode always refines
sample_pixels // 16 patches per image (oversampling prevention is off, as the paper measured). With
`--src/--bgr` the model runs as configured. Without --model-checkpoint the weights are random; the
torchscript and onnx backends then script or export the model first (a .pth checkpoint, likewise).
"""
import argparse
import sys
from typing import Optional, Sequence

from common.memory import retain_freed_memory
from inference.model import add_model_arguments
from inference.speed import BACKENDS, run


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description='Inference speed test.')
    parser.add_argument('--backend', choices=BACKENDS, required=True)
    add_model_arguments(parser, checkpoint_required=False)
    group = parser.add_argument_group('input')
    group.add_argument('--resolution', type=int, nargs=2, metavar=('WIDTH', 'HEIGHT'),
                       help='random input of this size (default 1920 1080)')
    group.add_argument('--src', help='a source image (with --bgr) instead of a random input')
    group.add_argument('--bgr', help='the clean plate of --src')
    group.add_argument('--batch-size', type=int, default=1)
    group = parser.add_argument_group('measurement')
    group.add_argument('--warmup', type=int, default=5, help='untimed calls first')
    group.add_argument('--iterations', type=int, default=50, help='timed calls')
    group.add_argument('--threads', type=int, help='CPU threads of PyTorch and ONNX Runtime (default: theirs)')
    group.add_argument('--json', action='store_true', help='print one JSON record instead of text')
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if bool(args.src) != bool(args.bgr):
        parser.error("--src and --bgr go together")
    if args.src and args.resolution:
        parser.error("give either --resolution or --src/--bgr")
    args.resolution = args.resolution or [1920, 1080]
    for option, value in (('--batch-size', args.batch_size), ('--iterations', args.iterations),
                          ('--resolution', min(args.resolution))):
        if value < 1:
            parser.error(f"{option} must be at least 1, got {value}")
    if args.warmup < 0:
        parser.error(f"--warmup must be at least 0, got {args.warmup}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    if args.model_checkpoint and args.model_checkpoint.endswith('.onnx') and args.backend != 'onnx':
        parser.error(f"--model-checkpoint {args.model_checkpoint} is ONNX: use --backend onnx")
    if args.channels_last and args.backend == 'onnx':
        parser.error("--channels-last is for the pytorch and torchscript backends (ONNX Runtime picks its "
                     "own layouts)")


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = get_args_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    run(args, parser)


if __name__ == '__main__':
    retain_freed_memory()  # the same large tensors every frame: no fresh pages for each
    main(sys.argv[1:])
