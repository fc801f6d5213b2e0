"""Fast inference: `optimize(model)` computes what a MattingBase or MattingRefine computes, faster.

    from model import MattingRefine, optimize
    model = MattingRefine('mobilenetv2', backbone_scale=0.25, refine_sample_pixels=80_000).eval()
    fast = optimize(model)                   # `model` itself is left as it is
    pha, fgr, pha_sm, fgr_sm, err_sm, ref_sm = fast(src, bgr)

What it changes, each measured (README, "Speed"):
- BatchNorm folded into the convolution before it; weights and activations channels-last.
- The refiner resamples only its patches: each one is cropped at the coarse resolution with the margin
  that bilinear interpolation reads and upsampled on its own, instead of upsampling whole images first.
- The full-resolution outputs are upsampled once, the refined patches written in, src added and the
  result clamped in place.
"""
import copy
from typing import Dict, Tuple

import torch
from torch import fx, nn
from torch.nn import functional as F

from .model import MattingBase, MattingRefine, check_inputs
from .refiner import Refiner

__all__ = ['optimize', 'OptimizedMattingBase', 'OptimizedMattingRefine', 'FastRefiner']


def optimize(model: nn.Module) -> nn.Module:
    """A module that computes what `model` computes, faster; `model` is left untouched.

    Args:
        model: a MattingBase or MattingRefine (any backbone and refine settings), on any device and in
            any dtype; it is run in eval mode (BatchNorm uses its running statistics).
    Returns:
        an `OptimizedMattingBase` or `OptimizedMattingRefine` on the model's device and dtype, called as
        the model is, with the same outputs. The refine settings stay settable as on the model:
        `fast.backbone_scale`, `fast.refiner.mode`, `.sample_pixels`, `.threshold`,
        `.prevent_oversampling`.
    """
    if isinstance(model, MattingRefine):
        return OptimizedMattingRefine(model)
    if isinstance(model, MattingBase):
        return OptimizedMattingBase(model)
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


def fold_batchnorms(network: nn.Module) -> nn.Module:
    """Folds, in place, every BatchNorm2d whose only input is a Conv2d used nowhere else into that
    convolution, and replaces it by an identity. The pairs are found by tracing the network (torch.fx),
    so any backbone works. Returns `network`."""
    graph = fx.symbolic_trace(network).graph
    modules = dict(network.named_modules())
    calls: Dict[str, int] = {}
    for node in graph.nodes:
        if node.op == 'call_module':
            calls[node.target] = calls.get(node.target, 0) + 1
    for node in graph.nodes:
        if node.op != 'call_module' or not isinstance(modules[node.target], nn.BatchNorm2d):
            continue
        source = node.args[0]
        if (isinstance(source, fx.Node) and source.op == 'call_module'
                and isinstance(modules[source.target], nn.Conv2d) and len(source.users) == 1
                and calls[source.target] == 1 and calls[node.target] == 1):
            fold_batchnorm(modules[source.target], modules[node.target])
            network.set_submodule(node.target, nn.Identity())
    return network


@torch.no_grad()
def fold_batchnorm(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> None:
    """conv's weight and bias become those of norm(conv(x)) with norm's running statistics (in float64,
    then conv's dtype)."""
    dtype = conv.weight.dtype
    scale = norm.weight.double() / (norm.running_var.double() + norm.eps).sqrt()
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    conv.weight.copy_((conv.weight.double() * scale.view(-1, 1, 1, 1)).to(dtype))
    conv.bias = nn.Parameter(((bias - norm.running_mean.double()) * scale + norm.bias.double()).to(dtype),
                             requires_grad=False)


def build_network(model: MattingBase) -> BaseNetwork:
    """A copy of the model's base network with BatchNorm folded, weights channels-last, in eval mode."""
    network = BaseNetwork(*(copy.deepcopy(m) for m in (model.backbone, model.aspp, model.decoder))).eval()
    fold_batchnorms(network)
    return network.to(memory_format=torch.channels_last).requires_grad_(False)


# --------------------------------------------------------------------------- MattingBase

class OptimizedMattingBase(nn.Module):
    """MattingBase, optimized (see `optimize`).

    Inputs:
        src, bgr: (B, 3, H, W) source and clean plate, 0 ~ 1, in the model's dtype.
    Outputs:
        pha (B, 1, H, W), fgr (B, 3, H, W), err (B, 1, H, W), all 0 ~ 1; hid (B, 32, H, W), >= 0.
    """

    def __init__(self, model: MattingBase):
        super().__init__()
        self.network = build_network(model)
        self.eval()

    def forward(self, src: torch.Tensor, bgr: torch.Tensor
                ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        check_inputs(src, bgr)
        x = self.network(torch.cat([src, bgr], dim=1).contiguous(memory_format=torch.channels_last))
        pha = x[:, 0:1].clamp(0., 1.)
        fgr = x[:, 1:4].add(src).clamp(0., 1.)
        err = x[:, 4:5].clamp(0., 1.)
        hid = x[:, 5:].relu()
        return pha, fgr, err, hid


# --------------------------------------------------------------------------- MattingRefine

class OptimizedMattingRefine(nn.Module):
    """MattingRefine, optimized (see `optimize`). Inputs and outputs are MattingRefine's.

    Attributes:
        backbone_scale: settable, as on MattingRefine.
        refiner: a `FastRefiner`, whose refine settings are settable as on `Refiner`.
    """

    def __init__(self, model: MattingRefine):
        super().__init__()
        self.backbone_scale = model.backbone_scale
        self.network = build_network(model)
        self.refiner = FastRefiner(model.refiner)
        self.eval()

    def forward(self, src: torch.Tensor, bgr: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                    torch.Tensor, torch.Tensor, torch.Tensor]:
        check_inputs(src, bgr)
        H, W = src.shape[2], src.shape[3]
        min_side = int(16 / self.backbone_scale + 0.5)
        if H < min_side or W < min_side:
            raise ValueError('src is ' + str(H) + 'x' + str(W) + ' (HxW); with backbone_scale '
                             + str(self.backbone_scale) + ' both sides must be at least ' + str(min_side))
        pad_h, pad_w = (4 - H % 4) % 4, (4 - W % 4) % 4
        if pad_h > 0 or pad_w > 0:
            src = F.pad(src, (0, pad_w, 0, pad_h), mode='replicate')
            bgr = F.pad(bgr, (0, pad_w, 0, pad_h), mode='replicate')

        src_sm = F.interpolate(src, scale_factor=self.backbone_scale, mode='bilinear',
                               align_corners=False, recompute_scale_factor=True)
        bgr_sm = F.interpolate(bgr, scale_factor=self.backbone_scale, mode='bilinear',
                               align_corners=False, recompute_scale_factor=True)
        x = self.network(torch.cat([src_sm, bgr_sm], dim=1).contiguous(memory_format=torch.channels_last))

        pha_sm = x[:, 0:1].clamp(0., 1.)
        err_sm = x[:, 4:5].clamp(0., 1.)
        # What the refiner reads, in the order of its first convolution's input: hid, pha, fgr residual.
        features = torch.cat([x[:, 5:].relu(), pha_sm, x[:, 1:4]], dim=1)
        pha, fgr, ref_sm = self.refiner(src, bgr, features, err_sm)

        pha = pha.clamp_(0., 1.)
        fgr = fgr.add_(src).clamp_(0., 1.)
        fgr_sm = src_sm.add(x[:, 1:4]).clamp(0., 1.)
        if pad_h > 0 or pad_w > 0:
            pha = pha[:, :, :H, :W]
            fgr = fgr[:, :, :H, :W]
        return pha, fgr, pha_sm, fgr_sm, err_sm, ref_sm


class FastRefiner(nn.Module):
    """The refiner of a MattingRefine (`Refiner`), computing the same result with less memory traffic:
    each selected patch is cropped from the coarse features with the margin that bilinear interpolation
    reads and upsampled on its own, and src and bgr are cropped once at full resolution for both of
    the refiner's resolutions (the half-resolution image is the 2x2 mean of the full one).

    Settable as on `Refiner`: mode, sample_pixels, threshold, prevent_oversampling. Fixed: kernel_size.

    Inputs:
        src, bgr: (B, 3, H, W) source and clean plate at full resolution, 0 ~ 1; H, W multiples of 4.
        features: (B, 36, Hc, Wc) hidden features (32, >= 0), coarse alpha (1, 0 ~ 1) and coarse
            foreground residual (3), in this order.
        err: (B, 1, Hc, Wc) coarse error prediction, 0 ~ 1.
    Outputs:
        pha: (B, 1, H, W) refined alpha, not yet clamped.
        fgr: (B, 3, H, W) refined foreground residual, not yet added to src or clamped.
        ref: (B, 1, H/4, W/4) refinement regions: 1 where a 4x4 patch was refined, else 0.
    """

    def __init__(self, refiner: Refiner):
        super().__init__()
        self.mode = refiner.mode
        self.sample_pixels = refiner.sample_pixels
        self.threshold = refiner.threshold
        self.prevent_oversampling = refiner.prevent_oversampling
        self.kernel_size = refiner.kernel_size
        # Settings that only choose among equivalent implementations, kept for the record (metadata).
        self.patch_crop_method = refiner.patch_crop_method
        self.patch_replace_method = refiner.patch_replace_method
        convs = []
        for index in range(1, 5):
            conv = copy.deepcopy(getattr(refiner, f'conv{index}'))
            if index < 4:
                fold_batchnorm(conv, getattr(refiner, f'bn{index}'))
            convs.append(conv.to(memory_format=torch.channels_last).requires_grad_(False))
        self.conv1, self.conv2, self.conv3, self.conv4 = convs
        # Patch geometry: a patch is 4x4 pixels at full resolution, 2x2 at half resolution, plus the
        # margin that the unpadded 3x3 convolutions consume (3 at half, 2 at full resolution).
        self.half_margin = 3 if self.kernel_size == 3 else 0
        self.full_margin = 2 if self.kernel_size == 3 else 0
        self._tables: Dict[Tuple, Tuple[torch.Tensor, torch.Tensor]] = {}

    def forward(self, src: torch.Tensor, bgr: torch.Tensor, features: torch.Tensor,
                err: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        H, W = src.shape[2], src.shape[3]
        if self.mode == 'full':
            return self.refine_everything(src, bgr, features)

        err = F.interpolate(err, (H // 4, W // 4), mode='bilinear', align_corners=False)
        ref = Refiner.select_refinement_regions(self, err)  # the eager selection, on these settings
        b, r, c = torch.nonzero(ref.squeeze(1), as_tuple=True)

        pha = F.interpolate(features[:, 32:33], (H, W), mode='bilinear', align_corners=False)
        fgr = F.interpolate(features[:, 33:36], (H, W), mode='bilinear', align_corners=False)
        if torch.jit.is_tracing() or b.size(0) > 0:
            patches = self.refine_patches(src, bgr, features, b, r, c)
            replace_patches(pha, patches[:, :1], b, r, c)
            replace_patches(fgr, patches[:, 1:], b, r, c)
        return pha, fgr, ref

    def refine_patches(self, src: torch.Tensor, bgr: torch.Tensor, features: torch.Tensor,
                       b: torch.Tensor, r: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """
        Inputs:
            src, bgr, features: as in `forward`.
            b, r, c: (P,) batch, row and column of the selected patches on the quarter-resolution grid.
        Output:
            (P, 4, 4, 4) alpha and foreground residual of the patches at full resolution, channels-last.
        """
        H, W = src.shape[2], src.shape[3]
        P, dtype = b.size(0), features.dtype
        half_size = 2 + 2 * self.half_margin  # side of a patch with its margin at half resolution
        full_size = 4 + 2 * self.full_margin

        # The first convolution's input, channels last: the coarse features of each patch upsampled to
        # half resolution on the patch alone, then src and bgr at half resolution.
        x = torch.empty(P, half_size, half_size, 42, device=features.device, dtype=dtype)
        resample_patches(features, b, r, c, self.table(features.shape[2], H // 2, features.device),
                         self.table(features.shape[3], W // 2, features.device), out=x[..., :36])
        # src and bgr over the patch's half-resolution window at full resolution, zero outside the image
        # (as the eager refiner pads): their 2x2 means are the half-resolution crop, the centre the full one.
        y = torch.empty(P, full_size, full_size, 22, device=features.device, dtype=dtype)
        offset = 2 * self.half_margin - self.full_margin
        for i, image in enumerate((src, bgr)):
            window = crop_patches(image, b, 4 * r - 2 * self.half_margin, 4 * c - 2 * self.half_margin,
                                  2 * half_size).to(dtype)  # (P, 2s, 2s, 3)
            pairs = window[:, 0::2] + window[:, 1::2]
            torch.add(pairs[:, :, 0::2], pairs[:, :, 1::2], out=x[..., 36 + 3 * i:39 + 3 * i]).mul_(0.25)
            y[..., 16 + 3 * i:19 + 3 * i] = window[:, offset:offset + full_size, offset:offset + full_size]

        x = self.conv1(x.permute(0, 3, 1, 2)).relu_()
        x = self.conv2(x).relu_()
        # Nearest upsampling to full resolution, straight into the third convolution's input.
        y[..., :16].view(P, full_size // 2, 2, full_size // 2, 2, 16).copy_(
            x.permute(0, 2, 3, 1).view(P, full_size // 2, 1, full_size // 2, 1, 16).expand(-1, -1, 2, -1, 2, -1))
        x = self.conv3(y.permute(0, 3, 1, 2)).relu_()
        return self.conv4(x)

    def table(self, coarse: int, half: int, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
        """How each patch row (or column) of the half-resolution grid reads the coarse image, cached per
        size: see `interpolation_table`."""
        key = (coarse, half, str(device))
        if key not in self._tables:
            self._tables[key] = interpolation_table(coarse, half, 2, self.half_margin, 2 + 2 * self.half_margin,
                                                    device)
        return self._tables[key]

    def refine_everything(self, src: torch.Tensor, bgr: torch.Tensor, features: torch.Tensor
                          ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """'full' mode, as the eager refiner computes it (every pixel; nothing to crop)."""
        H, W = src.shape[2], src.shape[3]
        src_bgr = torch.cat([src, bgr], dim=1)
        x = F.interpolate(features, (H // 2, W // 2), mode='bilinear', align_corners=False)
        y = F.interpolate(src_bgr, (H // 2, W // 2), mode='bilinear', align_corners=False)
        x = torch.cat([x, y], dim=1).contiguous(memory_format=torch.channels_last)
        if self.kernel_size == 3:
            x = F.pad(x, (3, 3, 3, 3))
        x = self.conv1(x).relu_()
        x = self.conv2(x).relu_()
        if self.kernel_size == 3:
            x = F.interpolate(x, (H + 4, W + 4), mode='nearest')
            y = F.pad(src_bgr, (2, 2, 2, 2))
        else:
            x = F.interpolate(x, (H, W), mode='nearest')
            y = src_bgr
        x = self.conv3(torch.cat([x, y], dim=1)).relu_()
        x = self.conv4(x)
        ref = torch.ones((src.size(0), 1, H // 4, W // 4), device=src.device, dtype=src.dtype)
        return x[:, :1], x[:, 1:], ref


def interpolation_table(coarse: int, fine: int, stride: int, margin: int, size: int, device: torch.device
                        ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Bilinear upsampling (align_corners=False) from `coarse` to `fine` pixels along one axis, restricted
    to windows: window n covers the fine pixels n * stride - margin + [0, size), zero outside [0, fine)
    (the eager refiner pads its half-resolution features with zeros).

    Returns:
        start: (N,) int64, the first of the K coarse pixels that window n reads, N = fine // stride;
            the K pixels always lie inside the image.
        weights: (N, size, K) float32: fine pixel i of window n = sum_k weights[n, i, k] * coarse[start[n] + k].
    """
    # The source coordinate as PyTorch's upsampling computes it, in float32.
    scale = torch.tensor(coarse / fine, dtype=torch.float32)
    source = ((torch.arange(fine, dtype=torch.float32) + 0.5) * scale - 0.5).clamp(min=0)
    low = source.long().clamp(max=coarse - 1)
    high = (low + 1).clamp(max=coarse - 1)
    frac = source - low

    count = fine // stride
    pixels = torch.arange(count).view(-1, 1) * stride - margin + torch.arange(size)  # (N, size)
    inside = (pixels >= 0) & (pixels < fine)
    pixels = pixels.clamp(0, fine - 1)
    width = min(int((high[pixels[:, -1]] - low[pixels[:, 0]]).max()) + 1, coarse)
    start = low[pixels[:, 0]].clamp(max=coarse - width)
    weights = torch.zeros(count, size, width)
    weights.scatter_add_(2, (low[pixels] - start.view(-1, 1)).unsqueeze(2), (1 - frac[pixels]).unsqueeze(2))
    weights.scatter_add_(2, (high[pixels] - start.view(-1, 1)).unsqueeze(2), frac[pixels].unsqueeze(2))
    weights *= inside.unsqueeze(2)
    return start.to(device), weights.to(device)


def rows_view(x: torch.Tensor, length: int) -> torch.Tensor:
    """A (N, length) view of x's memory whose row n holds the `length` elements from element n on, for
    reading runs of consecutive elements with `index_select` (which copies whole rows, fast)."""
    span = 1 + sum((size - 1) * stride for size, stride in zip(x.shape, x.stride()))
    return x.as_strided((span - length + 1, length), (1, 1))


def resample_patches(x: torch.Tensor, b: torch.Tensor, r: torch.Tensor, c: torch.Tensor,
                     rows: Tuple[torch.Tensor, torch.Tensor], cols: Tuple[torch.Tensor, torch.Tensor],
                     out: torch.Tensor) -> None:
    """Upsamples the windows of `x` that the selected patches read.

    Inputs:
        x: (B, C, h, w) coarse image, channels-last.
        b, r, c: (P,) batch, row and column of each patch.
        rows, cols: `interpolation_table`s of the two axes.
    Output, written:
        out: (P, S, S, C) the patches, channels last.
    """
    row_start, row_weights = rows
    col_start, col_weights = cols
    B, C, h, w = x.shape
    K, L = row_weights.shape[2], col_weights.shape[2]
    P, S = b.size(0), row_weights.shape[1]
    # Each window row is L * C consecutive elements of the channels-last image.
    first = ((b * h + row_start[r]) * w + col_start[c]) * C
    offsets = first.view(-1, 1) + torch.arange(K, device=x.device) * (w * C)
    window = rows_view(x, L * C).index_select(0, offsets.view(-1)).view(P * K, L, C)
    # Columns, then rows.
    t = torch.bmm(col_weights[c].to(x.dtype).unsqueeze(1).expand(P, K, S, L).reshape(P * K, S, L), window)
    out.copy_(torch.bmm(row_weights[r].to(x.dtype), t.view(P, K, S * C)).view(P, S, S, C))


def crop_patches(image: torch.Tensor, b: torch.Tensor, top: torch.Tensor, left: torch.Tensor,
                 size: int) -> torch.Tensor:
    """Crops size x size windows from a full-resolution image, zero outside it.

    Inputs:
        image: (B, 3, H, W), any strides.
        b, top, left: (P,) batch, first row and first column of each window (may lie outside the image).
    Output:
        (P, size, size, 3), channels last.
    """
    B, C, H, W = image.shape
    offsets = torch.arange(size, device=b.device)
    y = top.view(-1, 1) + offsets
    z = left.view(-1, 1) + offsets
    inside = ((y >= 0) & (y < H)).view(-1, size, 1, 1) & ((z >= 0) & (z < W)).view(-1, 1, size, 1)
    y, z = y.clamp(0, H - 1).view(-1, size, 1), z.clamp(0, W - 1).view(-1, 1, size)
    return image.permute(0, 2, 3, 1)[b.view(-1, 1, 1), y, z] * inside



def replace_patches(x: torch.Tensor, patches: torch.Tensor, b: torch.Tensor, r: torch.Tensor,
                    c: torch.Tensor) -> None:
    """Writes (P, C, 4, 4) patches into x (B, C, H, W) in place at the quarter-resolution positions."""
    B, C, H, W = x.shape
    x.view(B, C, H // 4, 4, W // 4, 4).permute(0, 2, 4, 1, 3, 5)[b, r, c] = patches.to(x.dtype)
