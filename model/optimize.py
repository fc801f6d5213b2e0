"""Fast inference: `optimize(model)` computes what a MattingBase or MattingRefine computes, faster.

    from model import MattingRefine, optimize
    model = MattingRefine('mobilenetv2', backbone_scale=0.25, refine_sample_pixels=80_000).eval()
    fast = optimize(model)                   # `model` itself is left as it is
    pha, fgr, pha_sm, fgr_sm, err_sm, ref_sm = fast(src, bgr)

Two variants compute the same outputs: `optimize(model, device_type='cpu')` for the CPU and
`device_type='cuda'` for GPUs (default: the model's device). The CUDA variant runs on CPU tensors too, so
that it can be run and counted on any machine; it issues fewer operations than the model as written, on
static shapes, with no host sync in 'sampling' mode (one per frame in 'thresholding' mode), so that a
frame can be captured as one CUDA graph (`model.graphs.CUDAGraphs`).

What it changes, each measured (README, "Speed"):
- BatchNorm folded into the convolution before it; weights and activations channels-last.
- The decoder's convolutions over concatenations split in two (`SplitDecoder`); in the CPU variant its
  last stage in bands of rows, and every convolution fused with its activation or residual addition into
  one oneDNN call with its weight reordered once (`fusion.fuse_convolutions`).
- The refiner resamples only its patches (`FastRefiner`): each is cropped at the coarse resolution with
  the margin that bilinear interpolation reads and upsampled on its own, instead of upsampling whole
  images first; in the CPU variant clustered patches are refined as tiles, in the CUDA variant every
  selected patch at once, at the positions `topk` gives (a count fixed by the frame size).
- The full-resolution outputs are upsampled once, the refined patches written in, src added and the
  result clamped in place.
"""
import copy
from typing import List, Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from .decoder import Decoder
from .fast_refiner import FastRefiner
from .fusion import FusedConv2d, fold_batchnorms, fuse_convolutions
from .model import (MattingBase, MattingRefine, auto_backbone_scale, auto_sample_pixels, check_and_pad_inputs,
                    check_inputs)
from .resampling import bilinear, bilinear_rows, whole_factor

__all__ = ['optimize', 'OptimizedMattingBase', 'OptimizedMattingRefine']

# The base network's output channels, reordered (see build_network) so that what the refiner reads,
# in the order of its first convolution's input (hid, pha, fgr residual), is one slice: FEATURES.
HID, PHA, FGR, ERR, FEATURES = slice(0, 32), slice(32, 33), slice(33, 36), slice(36, 37), slice(0, 36)
# Where MattingBase has them (pha, fgr, err, hid): the order above is ORDER of these.
ORDER = list(range(5, 37)) + [0, 1, 2, 3, 4]
# Output rows of the decoder's last stage computed at once on the CPU (see SplitDecoder.last_stage).
BAND_ROWS = 32
DEVICE_TYPES = ('cpu', 'cuda')


def optimize(model: nn.Module, device_type: Optional[str] = None) -> nn.Module:
    """A module that computes what `model` computes, faster; `model` is left untouched.

    Args:
        model: a MattingBase or MattingRefine (any backbone and refine settings), on any device and in
            any dtype; it is run in eval mode (BatchNorm uses its running statistics). A model optimized
            already for `device_type` is returned as it is.
        device_type: 'cpu' or 'cuda', the variant to build (see above); None: the model's device's
            ('cuda' for any device other than the CPU).
    Returns:
        an `OptimizedMattingBase` or `OptimizedMattingRefine` on the model's device and dtype, called as
        the model is, with the same outputs. The refine settings stay settable as on the model:
        `fast.backbone_scale`, `fast.refiner.mode`, `.sample_pixels`, `.threshold`,
        `.prevent_oversampling`.
    """
    if device_type is None:
        device_type = 'cpu' if next(model.parameters()).device.type == 'cpu' else 'cuda'
    if device_type not in DEVICE_TYPES:
        raise ValueError(f"device_type must be one of {', '.join(map(repr, DEVICE_TYPES))} or None, got {device_type!r}")
    if isinstance(model, (OptimizedMattingBase, OptimizedMattingRefine)):
        if model.device_type != device_type:
            raise ValueError(f"the model is optimized for {model.device_type!r} already; optimize the model as "
                             f"written for {device_type!r}")
        return model
    if isinstance(model, MattingRefine):
        return OptimizedMattingRefine(model, device_type)
    if isinstance(model, MattingBase):
        return OptimizedMattingBase(model, device_type)
    raise TypeError(f"optimize takes a MattingBase or MattingRefine, got {type(model).__name__}")


# --------------------------------------------------------------------------- the base network

class BaseNetwork(nn.Module):
    """Backbone, ASPP and decoder of a MattingBase, run as one network.

    Input:
        x: (B, 6, h, w), src and bgr concatenated, 0 ~ 1.
    Output:
        x: (B, 37, h, w), the raw prediction: pha, fgr residual, err, hid (not yet activated).
    """

    def __init__(self, backbone: nn.Module, aspp: nn.Module, decoder: nn.Module):
        super().__init__()
        self.backbone, self.aspp, self.decoder = backbone, aspp, decoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x4, x3, x2, x1, x0 = self.backbone(x)
        return self.decoder(self.aspp(x4), x3, x2, x1, x0)


def build_network(model: MattingBase, device_type: str) -> nn.Module:
    """A copy of the model's base network for inference: BatchNorm folded, the decoder's convolutions
    split (`SplitDecoder`) and its output channels reordered (ORDER), weights channels-last; in the CPU
    variant, convolutions fused with their activation (`fuse_convolutions`) and the decoder's last stage in
    bands.

    Input: (B, 6, h, w) src and bgr, channels-last. Output: (B, 37, h, w) raw, channels as HID ... ERR.
    """
    network = BaseNetwork(*(copy.deepcopy(m) for m in (model.backbone, model.aspp, model.decoder)))
    network = fold_batchnorms(network.eval().requires_grad_(False))
    network.decoder = SplitDecoder(network.decoder, model.backbone.shortcut_channels + [6], ORDER,
                                   banded=device_type == 'cpu')
    network = network.to(memory_format=torch.channels_last)
    if device_type == 'cpu':
        network = fuse_convolutions(network, leaves=(SplitDecoder,))
    return network


class SplitDecoder(nn.Module):
    """The decoder (`Decoder`, its BatchNorm folded) with each convolution over a concatenation computed
    as the sum of two convolutions, one per part: the same result without the concatenated tensor (the
    last one has 54 channels at the base network's full resolution) and with channel counts that suit
    the CPU's vector width better (48 + 6 instead of 54). The convolutions are `FusedConv2d`s: on the
    CPU the sum and the ReLU are part of the second convolution, and the last stage runs in bands of
    rows (`last_stage`).

    Args:
        decoder: the decoder, BatchNorm folded (see `fold_batchnorms`).
        shortcut_channels: channels of x3, x2, x1 and x0.
        order: output channel i is the decoder's channel order[i].
        banded: the last stage in bands of rows on CPU tensors (the CPU variant).
    Inputs and output: as `Decoder`.
    """

    def __init__(self, decoder: Decoder, shortcut_channels: List[int], order: List[int], banded: bool = True):
        super().__init__()
        self.banded = banded
        self.upsampled, self.shortcuts = nn.ModuleList(), nn.ModuleList()
        for index, channels in enumerate(shortcut_channels, start=1):
            conv = getattr(decoder, f'conv{index}')
            if not isinstance(getattr(decoder, f'bn{index}', nn.Identity()), nn.Identity):
                raise ValueError('SplitDecoder takes a decoder whose BatchNorm is folded (see fold_batchnorms)')
            split = conv.in_channels - channels
            weight, bias = conv.weight, conv.bias
            if index == len(shortcut_channels):
                weight, bias = weight[order], bias[order]
            last = index == len(shortcut_channels)
            for part, weight, bias, activation in ((self.upsampled, weight[:, :split], bias, None if last else 'relu'),
                                                   (self.shortcuts, weight[:, split:], None, None)):
                part_conv = nn.Conv2d(weight.shape[1], conv.out_channels, conv.kernel_size, padding=conv.padding,
                                      bias=bias is not None).to(weight).requires_grad_(False)
                part_conv.weight.copy_(weight)
                if bias is not None:
                    part_conv.bias.copy_(bias)
                part.append(FusedConv2d(part_conv, activation, onednn=banded))

    def forward(self, x4: torch.Tensor, x3: torch.Tensor, x2: torch.Tensor,
                x1: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        x = x4
        for index, shortcut in enumerate((x3, x2, x1)):
            x = F.interpolate(x, size=shortcut.shape[2:], mode='bilinear', align_corners=False)
            x = self.upsampled[index](x, self.shortcuts[index](shortcut))  # relu(conv(x) + conv(shortcut))
        return self.last_stage(x, x0)

    def last_stage(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """conv(upsample(x)) + conv(x0) at the base network's full resolution (B, 37, H, W).

        On the CPU, where x is exactly half the size of x0, in bands of rows: the upsampled band (with the
        rows that the 3x3 convolution reads around it, as upsampling the whole image gives them, see
        `bilinear_rows`) stays in the cache, and its convolution is added into the output in place, instead
        of writing and reading back a 48-channel image the size of the output.
        """
        H, W = x0.shape[2], x0.shape[3]
        upsampled, shortcut = self.upsampled[3], self.shortcuts[3]
        if not (self.banded and x.device.type == 'cpu' and x.dtype in (torch.float32, torch.bfloat16)
                and whole_factor(x.size(2), H) == 2 and whole_factor(x.size(3), W) == 2
                and upsampled.conv.kernel_size == (3, 3) and not torch.jit.is_tracing()):
            return upsampled(F.interpolate(x, size=(H, W), mode='bilinear', align_corners=False), shortcut(x0))
        out = shortcut(x0)
        conv = upsampled.conv
        for top in range(0, H, BAND_ROWS):
            bottom = min(top + BAND_ROWS, H)
            # The band's upsampled rows and the one above and below that the convolution reads (zero outside
            # the image, as its padding).
            band = bilinear_rows(x, 2, max(top - 1, 0), min(bottom + 1, H))
            band = F.pad(band, (0, 0, int(top == 0), int(bottom == H))).contiguous(memory_format=torch.channels_last)
            weight = upsampled.packed_weight(band)
            for i in range(out.size(0)):  # in place into the output's rows, image by image
                torch.ops.mkldnn._convolution_pointwise_.binary(
                    out[i:i + 1, :, top:bottom], band[i:i + 1], weight, conv.bias, [0, 1], [1, 1], [1, 1], 1,
                    'add', None, None, [], None)
        return out


class Activation(nn.Module):
    """The activations of MattingBase, in place on the reordered output (B, 37, h, w) of the base network:
    hid >= 0, pha and err 0 ~ 1, the foreground residual as it is. One clamp, its bounds buffers (moved
    and cast with the module, never made per call)."""

    def __init__(self):
        super().__init__()
        bounds = torch.tensor([[0., float('inf')]] * 32 + [[0., 1.]] + [[-float('inf'), float('inf')]] * 3 + [[0., 1.]])
        self.register_buffer('lower', bounds[:, 0].view(1, 37, 1, 1).clone(), persistent=False)
        self.register_buffer('upper', bounds[:, 1].view(1, 37, 1, 1).clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp_(self.lower, self.upper)


# --------------------------------------------------------------------------- MattingBase

class OptimizedMattingBase(nn.Module):
    """MattingBase, optimized (see `optimize`).

    Inputs:
        src, bgr: (B, 3, H, W) source and clean plate, 0 ~ 1, in the model's dtype.
    Outputs:
        pha (B, 1, H, W), fgr (B, 3, H, W), err (B, 1, H, W), all 0 ~ 1; hid (B, 32, H, W), >= 0.
    """

    def __init__(self, model: MattingBase, device_type: str = 'cpu'):
        super().__init__()
        self.device_type = device_type
        self.network = build_network(model, device_type)
        self.activation = Activation().to(next(self.network.parameters()))
        self.eval()

    @property
    def capturable(self) -> bool:
        """Whether a call can be captured as a CUDA graph (`model.graphs`): the CUDA variant's can."""
        return self.device_type == 'cuda'

    def forward(self, src: torch.Tensor, bgr: torch.Tensor
                ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        check_inputs(src, bgr)
        x = self.activation(self.network(torch.cat([src, bgr], dim=1).contiguous(memory_format=torch.channels_last)))
        fgr = x[:, FGR].add(src).clamp_(0., 1.)
        return x[:, PHA].contiguous(), fgr, x[:, ERR].contiguous(), x[:, HID]


# --------------------------------------------------------------------------- MattingRefine

class OptimizedMattingRefine(nn.Module):
    """MattingRefine, optimized (see `optimize`). Inputs and outputs are MattingRefine's.

    Attributes:
        device_type: the variant, 'cpu' or 'cuda' (see `optimize`).
        backbone_scale: settable, as on MattingRefine.
        refiner: a `FastRefiner`, whose refine settings are settable as on `Refiner`.
    """

    def __init__(self, model: MattingRefine, device_type: str = 'cpu'):
        super().__init__()
        self.device_type = device_type
        self.backbone_scale = model.backbone_scale
        self.auto_backbone_scale, self.auto_sample_pixels = model.auto_backbone_scale, model.auto_sample_pixels
        self.network = build_network(model, device_type)
        self.activation = Activation().to(next(self.network.parameters()))
        self.refiner = FastRefiner(model.refiner, device_type)
        self.eval()

    @property
    def capturable(self) -> bool:
        """Whether a call can be captured as a CUDA graph (`model.graphs`): the CUDA variant's, unless in
        'thresholding' mode (a patch count that the data gives)."""
        return self.device_type == 'cuda' and self.refiner.mode != 'thresholding'

    def graph_settings(self) -> Tuple:
        """The settings a captured call depends on (a change needs a new capture)."""
        refiner = self.refiner
        return (self.backbone_scale, refiner.mode, refiner.sample_pixels, refiner.threshold,
                refiner.prevent_oversampling, self.auto_backbone_scale, self.auto_sample_pixels)

    def forward(self, src: torch.Tensor, bgr: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                    torch.Tensor, torch.Tensor, torch.Tensor]:
        H, W = src.shape[2], src.shape[3]
        if self.auto_backbone_scale:
            self.backbone_scale = auto_backbone_scale(H, W)
        if self.auto_sample_pixels:
            self.refiner.sample_pixels = auto_sample_pixels(H, W)
        src, bgr = check_and_pad_inputs(src, bgr, self.backbone_scale)

        src_sm = bilinear(src, scale_factor=self.backbone_scale)
        bgr_sm = bilinear(bgr, scale_factor=self.backbone_scale)
        x = self.network(torch.cat([src_sm, bgr_sm], dim=1).contiguous(memory_format=torch.channels_last))

        x = self.activation(x)
        pha_sm, err_sm = x[:, PHA].contiguous(), x[:, ERR].contiguous()
        pha, fgr, ref_sm = self.refiner(src, bgr, x[:, FEATURES], err_sm)
        fgr_sm = src_sm.add(x[:, FGR]).clamp_(0., 1.)
        if src.shape[2] != H or src.shape[3] != W:
            pha = pha[:, :, :H, :W]
            fgr = fgr[:, :, :H, :W]
        return pha, fgr, pha_sm, fgr_sm, err_sm, ref_sm
