"""How the inference scripts describe a model on the command line and load it: the model options
(`add_model_arguments`), the bundled demonstration model as the default checkpoint, and `load_model`:
the weights of any kind of file, on the device and in the precision asked for, optimized
(`model.optimize`) unless --eager."""
import argparse
import os
import warnings
from typing import Optional, Tuple

import torch
from torch import nn

from common.devices import PRECISIONS, check_device_name, inference_dtype, resolve_device
from common.errors import UserError, exit_with_error
from model import CheckpointError, MattingBase, MattingRefine, load_checkpoint, optimize
from model.checkpoint import describe_load_error, detect_backbone, is_torchscript_archive, read_state_dict
from model.downloads import local_checkpoint
from model.graphs import CUDAGraphs
from model.model import AUTO, BACKBONES, RUNTIME_SETTINGS, set_refine_settings
from model.refiner import PATCH_CROP_METHODS, PATCH_REPLACE_METHODS, REFINE_MODES


def add_model_arguments(parser: argparse.ArgumentParser, checkpoint_required: bool = True,
                        channels_last: bool = True) -> None:
    """The model options of every inference script (names as in the original scripts).

    `channels_last`: also the options of how the model runs in this process, `--channels-last` and
    `--eager`; the exports, whose files keep neither, leave them out (and load the eager model).
    """
    group = parser.add_argument_group('model')
    group.add_argument('--model-type', choices=['mattingbase', 'mattingrefine'], default='mattingrefine')
    group.add_argument('--model-backbone', choices=BACKBONES, default=None,
                       help="default: the checkpoint's, read from its weights (mobilenetv2 without a checkpoint); "
                            'ignored for TorchScript files, which carry their architecture')
    group.add_argument('--model-checkpoint', required=checkpoint_required,
                       help='official BGMv2 .pth, a state_dict or training checkpoint of this project, '
                            'a TorchScript file from export_torchscript.py, or an https:// URL of one '
                            '(downloaded once into torch.hub\'s cache, verified by #sha256=<hex> at its end)')
    group.add_argument('--model-backbone-scale', type=scale_or_auto, default=AUTO,
                       help="resolution of the base network relative to the frame, in (0, 0.5]; 'auto' (default): "
                            "480 px on its long side, the paper's 0.25 at HD and 0.125 at 4K, for each frame size")
    group.add_argument('--model-refine-mode', choices=REFINE_MODES, default='sampling')
    group.add_argument('--model-refine-sample-pixels', type=pixels_or_auto, default=AUTO,
                       help="pixels refined per frame in sampling mode; 'auto' (default): the paper's share of "
                            "the frame, 80,000 at HD and 320,000 at 4K")
    group.add_argument('--model-refine-threshold', type=float, default=0.7)
    group.add_argument('--model-refine-kernel-size', type=int, choices=[1, 3], default=3)
    group.add_argument('--model-refine-prevent-oversampling', action=argparse.BooleanOptionalAction, default=True,
                       help='sampling mode: skip selected patches whose predicted error is 0')
    group.add_argument('--model-refine-patch-crop-method', choices=PATCH_CROP_METHODS, default='unfold')
    group.add_argument('--model-refine-patch-replace-method', choices=PATCH_REPLACE_METHODS, default='scatter_nd')
    group.add_argument('--device', default='auto', type=check_device_name,
                       help="'auto' (CUDA when present), 'cpu', 'cuda', 'cuda:1', ...")
    group.add_argument('--precision', choices=sorted(PRECISIONS), default='fp32',
                       help='fp16/bf16 fall back to fp32 with a warning where the device cannot run them')
    if channels_last:
        group.add_argument('--channels-last', action='store_true',
                           help='store the weights channels-last (the frames already are): the same model, '
                                'often faster, e.g. on CPU; the optimized model always is')
        group.add_argument('--eager', action='store_true',
                           help='run the model as written (the reference) instead of its optimized form '
                                '(model.optimize: the same mattes, faster; README, Speed)')
        group.add_argument('--cuda-graphs', action='store_true',
                           help='on CUDA, replay each frame size as one captured CUDA graph (model.graphs): '
                                'the optimized model in sampling or full refine mode, or MattingBase')


def scale_or_auto(text: str):
    """argparse type of --model-backbone-scale: 'auto' or a number."""
    return AUTO if text == AUTO else float(text)


def pixels_or_auto(text: str):
    """argparse type of --model-refine-sample-pixels: 'auto' or a whole number."""
    return AUTO if text == AUTO else int(text)


REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The bundled demonstration model (see the README), what the scripts run without --model-checkpoint.
DEMO_CHECKPOINT = os.path.join(REPOSITORY, 'weights', 'mattingrefine_mobilenetv2_synthetic_fp16.pth')
DEMO_BACKBONE = 'mobilenetv2'


def default_to_demo_checkpoint(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Without --model-checkpoint, the bundled demonstration model, said on stdout; other backbones
    than its own need a checkpoint (an argparse error, exit status 2)."""
    if args.model_checkpoint is not None:
        return
    if args.model_backbone not in (None, DEMO_BACKBONE):
        parser.error(f'--model-checkpoint is required with --model-backbone {args.model_backbone} (the '
                     f'bundled demonstration model has a {DEMO_BACKBONE} backbone)')
    args.model_checkpoint = DEMO_CHECKPOINT
    print(f"Using the bundled demonstration model {os.path.relpath(DEMO_CHECKPOINT)} (trained on synthetic "
          "data only; pass --model-checkpoint with official BGMv2 weights for real photos)")


def build_model(args: argparse.Namespace) -> nn.Module:
    """A MattingBase or MattingRefine as the model options describe, with random weights."""
    resolve_backbone(args)
    if args.model_type == 'mattingbase':
        return MattingBase(args.model_backbone)
    return MattingRefine(args.model_backbone,
                         backbone_scale=args.model_backbone_scale,
                         refine_mode=args.model_refine_mode,
                         refine_sample_pixels=args.model_refine_sample_pixels,
                         refine_threshold=args.model_refine_threshold,
                         refine_kernel_size=args.model_refine_kernel_size,
                         refine_prevent_oversampling=args.model_refine_prevent_oversampling,
                         refine_patch_crop_method=args.model_refine_patch_crop_method,
                         refine_patch_replace_method=args.model_refine_patch_replace_method)


def resolve_backbone(args: argparse.Namespace) -> None:
    """Without --model-backbone, the checkpoint's backbone, read from its weights (mobilenetv2 without a
    checkpoint, and for TorchScript files, which carry theirs); an unreadable file is left for loading to
    name."""
    if args.model_backbone is not None:
        return
    args.model_backbone = DEMO_BACKBONE
    if args.model_checkpoint and os.path.isfile(args.model_checkpoint) \
            and not is_torchscript_archive(args.model_checkpoint):
        try:
            args.model_backbone = detect_backbone(read_state_dict(args.model_checkpoint)[0]) or DEMO_BACKBONE
        except (CheckpointError, OSError, RuntimeError):
            pass


def load_model(args: argparse.Namespace, device: Optional[torch.device] = None, slow_fallback: bool = True,
               optimized: Optional[bool] = None) -> Tuple[nn.Module, torch.device, torch.dtype]:
    """Builds and loads the model the options describe, in eval mode, on its device and dtype
    (`slow_fallback`: see `common.devices.inference_dtype`; exports turn it off to write the precision asked for).

    `optimized`: whether to return `model.optimize(model)` rather than the model as written; by default
    as the options say (see `is_optimized`). A TorchScript file is loaded as it is; the refine settings
    given on the command line are applied to the attributes it exposes (see export_torchscript.py).

    Returns:
        model: called as `model(src, bgr)`; outputs as MattingBase / MattingRefine.
        device, dtype: where and in which precision inputs must be given.
    """
    if args.model_checkpoint:  # an https:// URL: the verified file in torch.hub's cache
        args.model_checkpoint = local_checkpoint(args.model_checkpoint, progress=True)
    resolve_backbone(args)
    device = device or resolve_device(args.device)
    dtype = inference_dtype(args.precision, device, slow_fallback)
    if args.model_checkpoint and is_torchscript_archive(args.model_checkpoint):
        try:
            model = torch.jit.load(args.model_checkpoint, map_location=device)
        except RuntimeError as error:
            raise CheckpointError(f'{args.model_checkpoint}: looks like a TorchScript archive but cannot be '
                                  f'loaded: {describe_load_error(error)}') from None
        set_refine_settings(model, **{name: getattr(args, f'model_{name}') for name in RUNTIME_SETTINGS})
    else:
        model = build_model(args)
        if args.model_checkpoint:
            load_checkpoint(model, args.model_checkpoint, map_location='cpu')
    model = model.to(device, dtype).eval()
    if getattr(args, 'channels_last', False):
        model = model.to(memory_format=torch.channels_last)
    if (is_optimized(args) if optimized is None else optimized) and isinstance(model, MattingBase):
        model = optimize(model)
    if getattr(args, 'cuda_graphs', False):
        model = with_cuda_graphs(model, device)
    return model, device, dtype


def with_cuda_graphs(model: nn.Module, device: torch.device) -> nn.Module:
    """`model` replayed as CUDA graphs (`model.graphs.CUDAGraphs`) where it can be; else `model`, with a
    warning saying why."""
    if device.type != 'cuda':
        warnings.warn(f'--cuda-graphs needs a CUDA device; running on {device} without')
        return model
    if not getattr(model, 'capturable', False):
        warnings.warn('--cuda-graphs needs the optimized model (no --eager, no TorchScript file) and a refine '
                      "mode other than 'thresholding' (whose patch count the data gives); running without")
        return model
    return CUDAGraphs(model, copy_outputs=False)  # the inference code uses each output before the next call


def is_optimized(args: argparse.Namespace) -> bool:
    """Whether `load_model` runs the model of these options optimized by default: unless --eager is
    given, or the script has no such option (the exports), or the model is a TorchScript file (which
    runs as it is)."""
    return (getattr(args, 'eager', True) is False
            and not (args.model_checkpoint and is_torchscript_archive(args.model_checkpoint)))


def load_model_or_exit(parser: argparse.ArgumentParser, args: argparse.Namespace
                       ) -> Tuple[nn.Module, torch.device, torch.dtype]:
    """`load_model` for a command line: a missing or unusable checkpoint, or a device that does not
    exist, ends the script with one line naming it (exit status 1, no traceback)."""
    try:
        return load_model(args)
    except (UserError, ValueError, OSError) as error:  # CheckpointError is a ValueError
        # One line, as the other errors; no usage block: the options parsed, a file was at fault.
        exit_with_error(parser.prog, error)
