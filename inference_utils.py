"""What the inference scripts share: how a model is described on the command line and loaded,
the device and precision it runs in, and (below) the readers and writers of images and videos."""
import argparse
import warnings
from typing import Optional, Tuple

import torch
from torch import nn

from model import MattingBase, MattingRefine, load_checkpoint
from model.checkpoint import is_torchscript_archive
from model.model import BACKBONES
from model.refiner import PATCH_CROP_METHODS, PATCH_REPLACE_METHODS, REFINE_MODES

PRECISIONS = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}
# Attributes that TorchScript files exported by export_torchscript.py expose at their top level.
TORCHSCRIPT_SETTINGS = ('backbone_scale', 'refine_mode', 'refine_sample_pixels', 'refine_threshold',
                        'refine_prevent_oversampling')


# --------------------------------------------------------------------------- model

def add_model_arguments(parser: argparse.ArgumentParser, checkpoint_required: bool = True) -> None:
    """The model options of every inference script (names as in the original scripts)."""
    group = parser.add_argument_group('model')
    group.add_argument('--model-type', choices=['mattingbase', 'mattingrefine'], default='mattingrefine')
    group.add_argument('--model-backbone', choices=BACKBONES, default='mobilenetv2',
                       help='ignored for TorchScript files, which carry their architecture')
    group.add_argument('--model-checkpoint', required=checkpoint_required,
                       help='official BGMv2 .pth, a state_dict or training checkpoint of this project, '
                            'or a TorchScript file from export_torchscript.py')
    group.add_argument('--model-backbone-scale', type=float, default=0.25,
                       help='0.25 for HD, 0.125 for 4K')
    group.add_argument('--model-refine-mode', choices=REFINE_MODES, default='sampling')
    group.add_argument('--model-refine-sample-pixels', type=int, default=80_000,
                       help='80,000 for HD, 320,000 for 4K')
    group.add_argument('--model-refine-threshold', type=float, default=0.7)
    group.add_argument('--model-refine-kernel-size', type=int, choices=[1, 3], default=3)
    group.add_argument('--model-refine-patch-crop-method', choices=PATCH_CROP_METHODS, default='unfold')
    group.add_argument('--model-refine-patch-replace-method', choices=PATCH_REPLACE_METHODS, default='scatter_nd')
    group.add_argument('--device', default='auto', help="'auto' (CUDA when present), 'cpu', 'cuda', 'cuda:1', ...")
    group.add_argument('--precision', choices=sorted(PRECISIONS), default='fp32',
                       help='fp16/bf16 fall back to fp32 with a warning where the device cannot run them')


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present; an explicit device that does not exist is an error."""
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"--device {name!r} is not a device name (expected auto, cpu, cuda, cuda:N)") from error
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine (use --device cpu or auto)")
    return device


def resolve_precision(name: str, device: torch.device) -> torch.dtype:
    """The dtype to run in: the requested one if a convolution works in it on `device`, else float32."""
    dtype = PRECISIONS[name]
    if dtype == torch.float32:
        return dtype
    try:
        conv = nn.Conv2d(3, 4, 3, padding=1).to(device, dtype)
        with torch.no_grad():
            conv(torch.rand(1, 3, 8, 8, device=device, dtype=dtype))
    except (RuntimeError, TypeError) as error:
        warnings.warn(f"--precision {name} is not supported on {device} ({error}); running in fp32")
        return torch.float32
    return dtype


def build_model(args: argparse.Namespace) -> nn.Module:
    """A MattingBase or MattingRefine as the model options describe, with random weights."""
    if args.model_type == 'mattingbase':
        return MattingBase(args.model_backbone)
    return MattingRefine(args.model_backbone,
                         backbone_scale=args.model_backbone_scale,
                         refine_mode=args.model_refine_mode,
                         refine_sample_pixels=args.model_refine_sample_pixels,
                         refine_threshold=args.model_refine_threshold,
                         refine_kernel_size=args.model_refine_kernel_size,
                         refine_patch_crop_method=args.model_refine_patch_crop_method,
                         refine_patch_replace_method=args.model_refine_patch_replace_method)


def load_model(args: argparse.Namespace, device: Optional[torch.device] = None
               ) -> Tuple[nn.Module, torch.device, torch.dtype]:
    """Builds and loads the model the options describe, in eval mode, on its device and dtype.

    A TorchScript file is loaded as it is; the refine settings given on the command line are applied
    to the attributes it exposes (see export_torchscript.py).

    Returns:
        model: called as `model(src, bgr)`; outputs as MattingBase / MattingRefine.
        device, dtype: where and in which precision inputs must be given.
    """
    device = device or resolve_device(args.device)
    dtype = resolve_precision(args.precision, device)
    if args.model_checkpoint and is_torchscript_archive(args.model_checkpoint):
        model = torch.jit.load(args.model_checkpoint, map_location=device)
        settings = dict(backbone_scale=args.model_backbone_scale, refine_mode=args.model_refine_mode,
                        refine_sample_pixels=args.model_refine_sample_pixels,
                        refine_threshold=args.model_refine_threshold)
        for name, value in settings.items():
            if hasattr(model, name):
                setattr(model, name, value)
    else:
        model = build_model(args)
        if args.model_checkpoint:
            load_checkpoint(model, args.model_checkpoint, map_location='cpu')
    return model.to(device, dtype).eval(), device, dtype
