"""Exporting MattingBase or MattingRefine as TorchScript that needs nothing but PyTorch to run: the
runtime refine settings hoisted to the file's top level (`HoistedMattingRefine`), the architecture in
its metadata; the work of export_torchscript.py (`export_file`).
"""
import argparse
import io
import json
import os
import warnings
import zipfile
from typing import Tuple

import torch
from torch import nn

from common.devices import PRECISIONS
from common.errors import UserError
from common.files import check_output_file, write_bytes
from inference.model import load_model
from model import MattingRefine
from model.checkpoint import is_torchscript_archive
from model.model import AUTO_SENTINELS, RUNTIME_SETTINGS


METADATA_NAME = 'bgmv2.json'


class HoistedMattingRefine(nn.Module):
    """MattingRefine with its tunable settings at the top level, so that they can be set on the loaded
    TorchScript module (`model.refine_sample_pixels = 80_000`); `forward` copies them into the model.

    Inputs and outputs are those of MattingRefine:
        src, bgr: (B, 3, H, W), 0 ~ 1.
        -> pha (B, 1, H, W), fgr (B, 3, H, W), pha_sm, fgr_sm, err_sm (B, C, Hc, Wc), ref_sm (B, 1, H/4, W/4).
    """

    def __init__(self, model: MattingRefine):
        super().__init__()
        # TorchScript types attributes from their values: make them float/int/bool whatever was passed.
        model.backbone_scale = float(model.backbone_scale)
        model.refiner.sample_pixels = int(model.refiner.sample_pixels)
        model.refiner.threshold = float(model.refiner.threshold)
        model.refiner.prevent_oversampling = bool(model.refiner.prevent_oversampling)
        self.model = model
        self.backbone_scale = model.backbone_scale
        self.refine_mode = model.refiner.mode
        self.refine_sample_pixels = model.refiner.sample_pixels
        self.refine_threshold = model.refiner.threshold
        self.refine_prevent_oversampling = model.refiner.prevent_oversampling
        # 'auto' is held as its sentinel (AUTO_SENTINELS): setting a number turns it off.
        if model.auto_backbone_scale:
            self.backbone_scale = AUTO_SENTINELS['backbone_scale']
        if model.auto_sample_pixels:
            self.refine_sample_pixels = AUTO_SENTINELS['refine_sample_pixels']

    def forward(self, src: torch.Tensor, bgr: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                    torch.Tensor, torch.Tensor, torch.Tensor]:
        self.model.auto_backbone_scale = self.backbone_scale <= 0.0
        if not self.model.auto_backbone_scale:
            self.model.backbone_scale = self.backbone_scale
        self.model.auto_sample_pixels = self.refine_sample_pixels < 0
        if not self.model.auto_sample_pixels:
            self.model.refiner.sample_pixels = self.refine_sample_pixels
        self.model.refiner.mode = self.refine_mode
        self.model.refiner.threshold = self.refine_threshold
        self.model.refiner.prevent_oversampling = self.refine_prevent_oversampling
        return self.model(src, bgr)


def script_model(model: nn.Module, freeze: bool = False) -> torch.jit.ScriptModule:
    """Scripts an eager MattingBase or MattingRefine (on its device, in its dtype, in eval mode).

    A MattingRefine is wrapped in `HoistedMattingRefine`. `freeze` inlines the weights as constants
    (`torch.jit.freeze`), keeping the hoisted settings settable.
    """
    if isinstance(model, MattingRefine):
        model = HoistedMattingRefine(model)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', FutureWarning)  # torch.jit is deprecated, still the way to do this
        scripted = torch.jit.script(model.eval())
        if freeze:
            preserved = [name for name in RUNTIME_SETTINGS if hasattr(scripted, name)]
            scripted = torch.jit.freeze(scripted, preserved_attrs=preserved)
    return scripted


def save(scripted: torch.jit.ScriptModule, path: str, metadata: dict) -> None:
    """Writes the file atomically; `metadata` is stored as bgmv2.json. Serialised in memory first, so
    that a failed write is the OSError naming the file, not an internal error of the archive writer."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', FutureWarning)
        torch.jit.save(scripted, buffer, _extra_files={METADATA_NAME: json.dumps(metadata)})
    write_bytes(path, buffer.getvalue())


def read_metadata(path: str) -> dict:
    """What export_torchscript.py recorded about a TorchScript file ({} for other files)."""
    with zipfile.ZipFile(path) as archive:
        names = [name for name in archive.namelist() if name.endswith('/extra/' + METADATA_NAME)]
        return json.loads(archive.read(names[0])) if names else {}


def model_metadata(args: argparse.Namespace, **extra) -> dict:
    """The architecture facts of the model options, for the file's metadata."""
    metadata = dict(model_type=args.model_type, backbone=args.model_backbone, precision=args.precision)
    if args.model_type == 'mattingrefine':
        metadata.update(refine_kernel_size=args.model_refine_kernel_size,
                        refine_patch_crop_method=args.model_refine_patch_crop_method,
                        refine_patch_replace_method=args.model_refine_patch_replace_method)
    return {**metadata, **extra}


def export_file(args: argparse.Namespace) -> None:
    """Loads the model the options describe and writes it as TorchScript to args.output."""
    check_output_file(args.output)  # before the model is loaded and scripted
    if os.path.isfile(args.model_checkpoint) and is_torchscript_archive(args.model_checkpoint):
        raise UserError(f"--model-checkpoint {args.model_checkpoint} is already TorchScript; "
                        "give the state_dict or training checkpoint it was made from")
    model, device, dtype = load_model(args, slow_fallback=False)
    if dtype != PRECISIONS[args.precision]:
        raise UserError(f"--precision {args.precision} cannot run on {device}; export on a device that supports it")
    scripted = script_model(model, freeze=args.freeze)
    save(scripted, args.output, model_metadata(args, frozen=args.freeze))
    print(f"Saved {args.output} ({args.model_type}, {args.model_backbone}, {args.precision}"
          f"{', frozen' if args.freeze else ''})")
