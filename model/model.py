"""The matting networks: `MattingBase` (low resolution) and `MattingRefine` (base + refiner)."""
from typing import Optional, Tuple, Union

import torch
from torch import nn
from torch.nn import functional as F

from .decoder import ASPP, Decoder
from .graphs import CUDAGraphs
from .mobilenet import MobileNetV2Encoder, MobileNetV3Encoder
from .refiner import Refiner
from .resnet import ResNetEncoder

BACKBONES = ('resnet50', 'resnet101', 'mobilenetv2', 'mobilenetv3')

# The settings of a MattingRefine by the names of its arguments (and of the scripts' --model-* options),
# with the attribute each is kept in. The first five may change between calls (on the model, on the
# result of model.optimize, and at the top level of a TorchScript file of export_torchscript.py); the
# others are fixed when the model is built.
RUNTIME_SETTINGS = {'backbone_scale': 'backbone_scale', 'refine_mode': 'refiner.mode',
                    'refine_sample_pixels': 'refiner.sample_pixels', 'refine_threshold': 'refiner.threshold',
                    'refine_prevent_oversampling': 'refiner.prevent_oversampling'}
# The settings that may be 'auto', and the attribute (of the model) saying that they are; a TorchScript
# file of export_torchscript.py holds 'auto' as a value that no number takes (so setting one turns it off).
AUTO_FLAGS = {'backbone_scale': 'auto_backbone_scale', 'refine_sample_pixels': 'auto_sample_pixels'}
AUTO_SENTINELS = {'backbone_scale': 0.0, 'refine_sample_pixels': -1}
BUILD_SETTINGS = {'refine_kernel_size': 'refiner.kernel_size', 'refine_patch_crop_method': 'refiner.patch_crop_method',
                  'refine_patch_replace_method': 'refiner.patch_replace_method'}


# 'auto' settings follow the paper's working size: HD (1920x1080) at backbone scale 0.25 and 4K at 0.125
# give the base network a long side of 480 px; 80,000 refined pixels at HD and 320,000 at 4K are the
# same share of the frame, 1 / 25.92.
# (The numbers are written out in the functions, which TorchScript compiles: it reads no globals.)
AUTO = 'auto'


def auto_backbone_scale(height: int, width: int) -> float:
    """The backbone scale that gives the base network a long side of 480 pixels, within (0, 1/2] and
    large enough that the short side keeps 16 pixels (the backbone's output stride)."""
    return min(max(480.0 / float(max(height, width)), 16.0 / float(min(height, width))), 0.5)


def auto_sample_pixels(height: int, width: int) -> int:
    """The paper's share of refined pixels, 1 / 25.92 of the frame (80,000 of 1920 x 1080), for a frame of
    height x width: a whole number of 4x4 patches."""
    return int(round(float(height * width) / 25.92 / 16.0)) * 16


def is_auto(value) -> bool:
    return value is None or value == AUTO


def fix_auto_settings(model: nn.Module, height: int, width: int) -> dict:
    """Replaces the 'auto' settings of `model` by their values for frames of height x width (for a file
    that holds one backbone scale, an ONNX graph). Returns the settings written, by argument name."""
    settings = {}
    if getattr(model, 'auto_backbone_scale', False):
        settings['backbone_scale'] = auto_backbone_scale(height, width)
    if getattr(model, 'auto_sample_pixels', False):
        settings['refine_sample_pixels'] = auto_sample_pixels(height, width)
    set_refine_settings(model, **settings)
    return settings


def refine_settings(model: nn.Module) -> dict:
    """The settings of a MattingRefine (or of its optimized form) by argument name; {} for a MattingBase.
    A TorchScript file of export_torchscript.py gives the runtime settings it holds at its top level."""
    if hasattr(model, 'refine_mode'):  # a TorchScript file, its settings hoisted to the top level
        return {name: getattr(model, name) for name in RUNTIME_SETTINGS}
    if not hasattr(model, 'refiner'):
        return {}
    return {name: _get(model, path) for name, path in {**RUNTIME_SETTINGS, **BUILD_SETTINGS}.items()}


def set_refine_settings(model: nn.Module, **settings) -> None:
    """Sets runtime settings (RUNTIME_SETTINGS names) on a MattingRefine, its optimized form or a
    TorchScript file of one; a MattingBase has none, and takes none."""
    unknown = set(settings) - set(RUNTIME_SETTINGS)
    if unknown:
        raise ValueError(f"not runtime refine settings: {', '.join(sorted(unknown))}")
    if isinstance(model, CUDAGraphs):
        model = model.module
    for name, value in settings.items():
        if hasattr(model, 'refine_mode'):  # TorchScript: hoisted to the top level, 'auto' as its sentinel
            setattr(model, name, AUTO_SENTINELS[name] if name in AUTO_SENTINELS and is_auto(value) else value)
        elif hasattr(model, 'refiner'):
            if name in AUTO_FLAGS:  # 'auto' (or None) sets the flag; a number clears it
                setattr(model, AUTO_FLAGS[name], is_auto(value))
                if is_auto(value):
                    continue
            owner, _, attribute = RUNTIME_SETTINGS[name].rpartition('.')
            setattr(_get(model, owner) if owner else model, attribute, value)


def _get(obj, path: str):
    for part in path.split('.'):
        obj = getattr(obj, part)
    return obj


def build_backbone(backbone: str, in_channels: int) -> nn.Module:
    if backbone in ('resnet50', 'resnet101'):
        return ResNetEncoder(in_channels, variant=backbone)
    if backbone == 'mobilenetv2':
        return MobileNetV2Encoder(in_channels)
    if backbone == 'mobilenetv3':
        return MobileNetV3Encoder(in_channels)
    raise ValueError(f"backbone must be one of {', '.join(BACKBONES)}; got {backbone!r}")


class Base(nn.Module):
    """Encoder (backbone), ASPP (atrous rates 3, 6, 9) and decoder.

    Channel counts of the pyramid fed to the decoder ([x4] / [x3, x2, x1]):
        resnet50, resnet101: 2048 / 512, 256, 64
        mobilenetv2:          320 / 32, 24, 16
        mobilenetv3:          960 / 40, 24, 16

    Input:
        x: (B, in_channels, H, W)
    Output:
        x: (B, out_channels, H, W), raw prediction.
    """

    def __init__(self, backbone: str, in_channels: int, out_channels: int):
        super().__init__()
        self.backbone = build_backbone(backbone, in_channels)
        self.aspp = ASPP(self.backbone.out_channels, [3, 6, 9])
        self.decoder = Decoder([256, 128, 64, 48, out_channels],
                               self.backbone.shortcut_channels + [in_channels])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x4, x3, x2, x1, x0 = self.backbone(x)
        return self.decoder(self.aspp(x4), x3, x2, x1, x0)

    def load_pretrained_deeplabv3_state_dict(self, state_dict, print_stats: bool = True):
        """Loads DeepLabV3 weights (VainF/DeepLabV3Plus-Pytorch format) where names and shapes match."""
        from .checkpoint import load_deeplabv3_state_dict
        return load_deeplabv3_state_dict(self, state_dict, print_stats)


class MattingBase(Base):
    """The base network, run at the resolution it is given.

    Args:
        backbone: 'resnet50', 'resnet101', 'mobilenetv2' or 'mobilenetv3'.

    Inputs:
        src: (B, 3, H, W) source image, 0 ~ 1.
        bgr: (B, 3, H, W) clean plate (background without the subject), 0 ~ 1.
    Outputs:
        pha: (B, 1, H, W) alpha, 0 ~ 1.
        fgr: (B, 3, H, W) foreground, 0 ~ 1.
        err: (B, 1, H, W) predicted error of pha, 0 ~ 1.
        hid: (B, 32, H, W) hidden features for the refiner, >= 0.
    """

    def __init__(self, backbone: str):
        super().__init__(backbone, in_channels=6, out_channels=(1 + 3 + 1 + 32))

    def forward(self, src: torch.Tensor,
                bgr: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        check_inputs(src, bgr)
        x4, x3, x2, x1, x0 = self.backbone(torch.cat([src, bgr], dim=1))
        x = self.decoder(self.aspp(x4), x3, x2, x1, x0)
        pha = x[:, 0:1].clamp(0., 1.)
        fgr = x[:, 1:4].add(src).clamp(0., 1.)
        err = x[:, 4:5].clamp(0., 1.)
        hid = x[:, 5:].relu()
        return pha, fgr, err, hid


class MattingRefine(MattingBase):
    """The base network at `backbone_scale` of the input resolution, then the refiner at full resolution.

    Args:
        backbone: 'resnet50', 'resnet101', 'mobilenetv2' or 'mobilenetv3'.
        backbone_scale: resolution of the base network relative to the input, <= 1/2.
            Recommended: 1/4 for HD, 1/8 for 4K. 'auto' (or None): chosen at each call from the input
            size (`auto_backbone_scale`: the paper's values at HD and 4K).
        refine_mode, refine_sample_pixels, refine_threshold, refine_kernel_size,
        refine_prevent_oversampling, refine_patch_crop_method, refine_patch_replace_method:
            see `Refiner`. Recommended sample pixels: 80,000 for HD, 320,000 for 4K; 'auto' (or None):
            chosen at each call from the input size (`auto_sample_pixels`, the same share of the frame).
    Attributes:
        auto_backbone_scale, auto_sample_pixels: whether those settings are 'auto'; at each call they
            are then written into `backbone_scale` and `refiner.sample_pixels` (which then tell what ran).

    Inputs:
        src: (B, 3, H, W) source image, 0 ~ 1. Any H and W: inputs whose sides are not multiples of 4
            are padded internally (replicating the border) and the full-resolution outputs cropped back.
        bgr: (B, 3, H, W) clean plate, 0 ~ 1.
    Outputs:
        pha: (B, 1, H, W) alpha, 0 ~ 1.
        fgr: (B, 3, H, W) foreground, 0 ~ 1.
        pha_sm: (B, 1, Hc, Wc) coarse alpha of the base network, 0 ~ 1.
        fgr_sm: (B, 3, Hc, Wc) coarse foreground, 0 ~ 1.
        err_sm: (B, 1, Hc, Wc) coarse error prediction, 0 ~ 1.
        ref_sm: (B, 1, H4 / 4, W4 / 4) refinement regions, 1 refined, 0 not.
        (Hc, Wc) = backbone_scale * (H4, W4), where (H4, W4) is (H, W) rounded up to multiples of 4.
    """

    def __init__(self,
                 backbone: str,
                 backbone_scale: Union[float, str, None] = 1 / 4,
                 refine_mode: str = 'sampling',
                 refine_sample_pixels: Union[int, str, None] = 80_000,
                 refine_threshold: float = 0.1,
                 refine_kernel_size: int = 3,
                 refine_prevent_oversampling: bool = True,
                 refine_patch_crop_method: str = 'unfold',
                 refine_patch_replace_method: str = 'scatter_nd'):
        auto_scale, auto_pixels = is_auto(backbone_scale), is_auto(refine_sample_pixels)
        if auto_scale:
            backbone_scale = 1 / 4  # until the first call
        if auto_pixels:
            refine_sample_pixels = 80_000
        if not 0 < backbone_scale <= 1 / 2:
            raise ValueError(f"backbone_scale must be in (0, 1/2] or 'auto', got {backbone_scale}")
        super().__init__(backbone)
        self.backbone_scale = float(backbone_scale)
        self.auto_backbone_scale, self.auto_sample_pixels = auto_scale, auto_pixels
        self.refiner = Refiner(refine_mode,
                               int(refine_sample_pixels),
                               refine_threshold,
                               refine_kernel_size,
                               refine_prevent_oversampling,
                               refine_patch_crop_method,
                               refine_patch_replace_method)

    def forward(self, src: torch.Tensor, bgr: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                    torch.Tensor, torch.Tensor, torch.Tensor]:
        H, W = src.shape[2], src.shape[3]
        if self.auto_backbone_scale:
            self.backbone_scale = auto_backbone_scale(H, W)
        if self.auto_sample_pixels:
            self.refiner.sample_pixels = auto_sample_pixels(H, W)
        src, bgr = check_and_pad_inputs(src, bgr, self.backbone_scale)

        src_sm = F.interpolate(src, scale_factor=self.backbone_scale, mode='bilinear',
                               align_corners=False, recompute_scale_factor=True)
        bgr_sm = F.interpolate(bgr, scale_factor=self.backbone_scale, mode='bilinear',
                               align_corners=False, recompute_scale_factor=True)

        x4, x3, x2, x1, x0 = self.backbone(torch.cat([src_sm, bgr_sm], dim=1))
        x = self.decoder(self.aspp(x4), x3, x2, x1, x0)
        pha_sm = x[:, 0:1].clamp(0., 1.)
        fgr_sm = x[:, 1:4]
        err_sm = x[:, 4:5].clamp(0., 1.)
        hid_sm = x[:, 5:].relu()

        pha, fgr, ref_sm = self.refiner(src, bgr, pha_sm, fgr_sm, err_sm, hid_sm)

        pha = pha.clamp(0., 1.)
        fgr = fgr.add(src).clamp(0., 1.)
        fgr_sm = src_sm.add(fgr_sm).clamp(0., 1.)
        if src.shape[2] != H or src.shape[3] != W:
            pha = pha[:, :, :H, :W]
            fgr = fgr[:, :, :H, :W]
        return pha, fgr, pha_sm, fgr_sm, err_sm, ref_sm


def check_and_pad_inputs(src: torch.Tensor, bgr: torch.Tensor, backbone_scale: float
                         ) -> Tuple[torch.Tensor, torch.Tensor]:
    """MattingRefine's inputs checked (`check_inputs`, and large enough for `backbone_scale`) and padded
    by replication to sides that are multiples of 4, the refiner's patch size (the outputs are cropped
    back to H x W)."""
    check_inputs(src, bgr)
    H, W = src.shape[2], src.shape[3]
    # The backbone must see at least one pixel at its output stride of 16.
    min_side = int(16 / backbone_scale + 0.5)
    if H < min_side or W < min_side:
        raise ValueError('src is ' + str(H) + 'x' + str(W) + ' (HxW); with backbone_scale '
                         + str(backbone_scale) + ' both sides must be at least ' + str(min_side))
    pad_h, pad_w = (4 - H % 4) % 4, (4 - W % 4) % 4
    if pad_h > 0 or pad_w > 0:
        src = F.pad(src, (0, pad_w, 0, pad_h), mode='replicate')
        bgr = F.pad(bgr, (0, pad_w, 0, pad_h), mode='replicate')
    return src, bgr


def check_inputs(src: torch.Tensor, bgr: torch.Tensor) -> None:
    if src.dim() != 4 or src.size(1) != 3:
        raise ValueError('src must have shape (B, 3, H, W), got ' + str(list(src.shape)))
    if src.shape != bgr.shape:
        raise ValueError('src and bgr must have the same shape, got ' + str(list(src.shape))
                         + ' and ' + str(list(bgr.shape)))
    if not src.is_floating_point() or src.dtype != bgr.dtype:
        raise ValueError('src and bgr must be floating point images of one dtype (the weights\' dtype), '
                         '0 ~ 1, got ' + str(src.dtype) + ' and ' + str(bgr.dtype))
