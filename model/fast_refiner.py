"""`FastRefiner`: what the refiner (`Refiner`) computes, with less memory traffic and, where the selected
patches cluster, fewer multiplications (used by `optimize`)."""
import copy
import math
from typing import Dict, Tuple

import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from .fusion import FusedConv2d, fold_batchnorm
from .refiner import Refiner
from .resampling import (bilinear, bilinear_phases, crop_pixels, crop_windows, interpolation_table, interpolation_weights,
                         replace_patches, resample_windows, sample_windows, tile_grid, whole_factor, window_mask)

__all__ = ['FastRefiner']

# Patches refined at once (fewer in larger tiles): their intermediate tensors, about 30 kB a patch, then
# stay under 32 MB, which the allocator reuses from call to call instead of mapping fresh pages, and mostly
# in the CPU's cache; the memory used is bounded whatever the number of patches (measured on 2 cores at
# 1920x1080, 5,000 patches one by one: 267 ms a frame against 343 ms in one chunk, 1 thread).
CHUNK_PATCHES = 1024
# Patches refined at once by the CUDA variant: its intermediate tensors stay under about 1 GB; a frame
# refines ceil(patches / CUDA_CHUNK_PATCHES) chunks, a count given by the frame size and the settings
# ('sampling' mode), never by the data.
CUDA_CHUNK_PATCHES = 1 << 15
# Tile sides tried, in patches (see FastRefiner.tile_side).
TILE_SIDES = (1, 2, 4)


class FastRefiner(nn.Module):
    """The refiner of a MattingRefine, computing what `Refiner` computes:

    - Only the windows that the selected patches read are upsampled: each is cropped from the coarse
      features with the margin that bilinear interpolation reads and resampled on its own, where the
      eager refiner upsamples the whole image to half resolution first.
    - src and bgr are cropped once at full resolution for both of the refiner's resolutions (the
      half-resolution image is the 2x2 mean of the full one).
    - Selected patches that cluster are refined together as tiles of 2x2 or 4x4 patches (each tile one
      image through the convolutions, its overlapping margins computed once), where that takes fewer
      multiplications; the patches that were not selected in a tile are not written.
    - The convolutions run with BatchNorm folded, channels-last, fused with their ReLU on the CPU.
    - The outputs are made in one pass over the frame (upsampled, src added, clamped; on the CPU in bands
      of rows that stay in the cache), and the refined patches, finished alike, written into them.

    The CUDA variant (`device_type='cuda'`, see `refine_selected`) keeps the shapes static and the host out
    of the loop: every selected patch refined in one pass, at the positions `topk` gives, no tiles.

    Settable as on `Refiner`: mode, sample_pixels, threshold, prevent_oversampling. Fixed: kernel_size,
    device_type.

    Inputs:
        src, bgr: (B, 3, H, W) source and clean plate at full resolution, 0 ~ 1; H, W multiples of 4.
        features: (B, 36, Hc, Wc) channels-last: hidden features (32, >= 0), coarse alpha (1, 0 ~ 1) and
            coarse foreground residual (3), in this order (that of the refiner's first convolution).
        err: (B, 1, Hc, Wc) coarse error prediction, 0 ~ 1.
    Outputs (MattingRefine's, at full resolution):
        pha: (B, 1, H, W) refined alpha, 0 ~ 1.
        fgr: (B, 3, H, W) refined foreground, 0 ~ 1 (the residual added to src).
        ref: (B, 1, H/4, W/4) refinement regions: 1 where a 4x4 patch was refined, else 0.
    """

    def __init__(self, refiner: Refiner, device_type: str = 'cpu'):
        super().__init__()
        self.device_type = device_type
        self.mode = refiner.mode
        self.sample_pixels = refiner.sample_pixels
        self.threshold = refiner.threshold
        self.prevent_oversampling = refiner.prevent_oversampling
        self.kernel_size = refiner.kernel_size
        # Settings that only choose among implementations of the same result, kept for the record.
        self.patch_crop_method = refiner.patch_crop_method
        self.patch_replace_method = refiner.patch_replace_method

        convs = []
        for index in range(1, 5):
            conv = copy.deepcopy(getattr(refiner, f'conv{index}')).requires_grad_(False)
            if index < 4:
                fold_batchnorm(conv, getattr(refiner, f'bn{index}'))
            convs.append(conv.to(memory_format=torch.channels_last))
        conv1, conv2, conv3, conv4 = convs
        # The first convolution in two parts, its 36 feature channels and its 6 image channels (src, bgr),
        # which are cropped separately: their sum saves concatenating them.
        self.conv1_images = nn.Conv2d(6, 24, self.kernel_size, bias=False).requires_grad_(False)
        self.conv1_images.weight.copy_(conv1.weight[:, 36:])
        self.conv1_images.to(conv1.weight.device, conv1.weight.dtype, memory_format=torch.channels_last)
        conv1.weight = nn.Parameter(conv1.weight[:, :36].contiguous(memory_format=torch.channels_last),
                                    requires_grad=False)
        conv1.in_channels = 36
        onednn = device_type == 'cpu'
        self.conv1 = FusedConv2d(conv1, 'relu', onednn)
        self.conv1_images = FusedConv2d(self.conv1_images, onednn=onednn)
        self.conv2 = FusedConv2d(conv2, 'relu', onednn)
        self.conv3 = FusedConv2d(conv3, 'relu', onednn)
        self.conv4 = FusedConv2d(conv4, onednn=onednn)
        # A patch is 4x4 pixels at full resolution and 2x2 at half resolution, plus the margin that the
        # unpadded 3x3 convolutions consume: 3 pixels at half and 2 at full resolution.
        self.half_margin = 3 if self.kernel_size == 3 else 0
        self.full_margin = 2 if self.kernel_size == 3 else 0
        self.tile_sides = TILE_SIDES
        self._tables: Dict[Tuple, Tuple[torch.Tensor, torch.Tensor]] = {}

    def forward(self, src: torch.Tensor, bgr: torch.Tensor, features: torch.Tensor,
                err: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        H, W = src.shape[2], src.shape[3]
        if self.mode == 'full':
            return self.refine_everything(src, bgr, features)

        err = F.interpolate(err, (H // 4, W // 4), mode='bilinear', align_corners=False)
        if self.device_type == 'cuda' and not torch.jit.is_tracing():
            return self.refine_selected(src, bgr, features, err)
        ref = Refiner.select_refinement_regions(self, err)  # the eager selection, with these settings
        b, r, c = torch.nonzero(ref.squeeze(1), as_tuple=True)

        pha, fgr = finish_outputs(features[:, 32:36], src)
        if not torch.jit.is_tracing() and b.size(0) == 0:
            return pha, fgr, ref

        if torch.jit.is_tracing():  # (ONNX export) one pass over single patches, whatever their number,
            # and one more, dropped: ONNX Runtime's blocked-layout convolutions fail on an empty batch.
            side, extra = 1, torch.zeros(1, dtype=b.dtype, device=b.device)
            patches = self.refine_tiles(src, bgr, features, torch.cat([b, extra]), torch.cat([r, extra]),
                                        torch.cat([c, extra]), side)[:-1]
        else:
            side = self.tile_side(ref, b.size(0))
            tiles = tile_grid(ref, side)
            chunk = max(1, CHUNK_PATCHES // (side * side))
            patches = torch.cat([self.refine_tiles(src, bgr, features, *(t[start:start + chunk] for t in tiles), side)
                                 for start in range(0, len(tiles[0]), chunk)])  # (N, 4, 4 * side, 4 * side)
        if side > 1:  # the selected patches of the tiles
            index = torch.full((src.size(0), -(-ref.size(2) // side), -(-ref.size(3) // side)), -1,
                               dtype=torch.long, device=src.device)
            index[tiles[0], tiles[1], tiles[2]] = torch.arange(len(tiles[0]), device=src.device)
            tile = index[b, torch.div(r, side, rounding_mode='floor'), torch.div(c, side, rounding_mode='floor')]
            patches = patches.view(-1, 4, side, 4, side, 4).permute(0, 2, 4, 1, 3, 5).reshape(-1, 4, 4, 4)
            patches = patches.index_select(0, (tile * side + r % side) * side + c % side)
        return replace_patches(pha, patches[:, :1], b, r, c), replace_patches(fgr, patches[:, 1:], b, r, c), ref

    def refine_selected(self, src: torch.Tensor, bgr: torch.Tensor, features: torch.Tensor, err: torch.Tensor
                        ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`forward` of the CUDA variant, from the error at quarter resolution (B, 1, H/4, W/4).

        'sampling': the `sample_pixels // 16` positions of `topk`, a count given by the settings and the
        frame size, so that every shape is static and no operation waits for the data (no host sync; a
        frame can be captured as a CUDA graph). With `prevent_oversampling`, every one of them is refined
        and those whose error is 0, which the eager model leaves out, keep their unrefined values: the same
        outputs. 'thresholding': the positions over the threshold, found with one host sync.
        All patches are refined at once (in chunks of CUDA_CHUNK_PATCHES) and written with one scatter.
        """
        B, h, w = err.size(0), err.size(2), err.size(3)
        keep = None
        if self.mode == 'sampling':
            k = min(self.sample_pixels // 16, h * w)
            flat = err.view(B, h * w)
            position = flat.topk(k, dim=1, sorted=False).indices  # (B, k)
            ref = torch.zeros_like(flat).scatter_(1, position, 1.)
            if self.prevent_oversampling:
                ref.mul_(flat.gt(0).to(flat.dtype))
                keep = flat.gather(1, position).gt(0).view(-1, 1, 1, 1)
            ref = ref.view(B, 1, h, w)
            b = torch.arange(B, device=err.device).view(B, 1).expand(B, k).reshape(-1)
            position = position.view(-1)
            r, c = torch.div(position, w, rounding_mode='floor'), position.remainder(w)
        else:
            ref = err.gt(self.threshold).to(err.dtype)
            b, r, c = torch.nonzero(ref.squeeze(1), as_tuple=True)  # the one host sync
        out = upsample_outputs(features[:, 32:36], src)  # (B, 4, H, W): pha, fgr
        N = b.size(0)  # known to the host without a sync: from the settings, or after the nonzero
        if N > 0:
            if N <= CUDA_CHUNK_PATCHES:
                patches = self.refine_patches(src, bgr, features, b, r, c)
            else:
                patches = torch.cat([self.refine_patches(src, bgr, features, *(t[start:start + CUDA_CHUNK_PATCHES]
                                                                              for t in (b, r, c)))
                                     for start in range(0, N, CUDA_CHUNK_PATCHES)])
            grid = out.view(B, 4, h, 4, w, 4).permute(0, 2, 4, 1, 3, 5)  # (B, h, w, 4, 4, 4)
            if keep is not None:
                patches = torch.where(keep, patches, grid[b, r, c])
            grid[b, r, c] = patches
        return out[:, :1], out[:, 1:], ref

    def refine_patches(self, src: torch.Tensor, bgr: torch.Tensor, features: torch.Tensor, b: torch.Tensor,
                       r: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """`refine_tiles` of single patches in few operations (the CUDA variant): src and bgr cropped
        together at one set of positions, their half resolution as 2x2 means in one reduction.

        Output: (N, 4, 4, 4) alpha and foreground of the patches, finished, in features' dtype.
        """
        H, W = src.shape[2], src.shape[3]
        N, dtype = b.size(0), features.dtype
        half = 2 + 2 * self.half_margin  # a patch and its margin at half resolution
        full = 4 + 2 * self.full_margin  # and at full resolution
        offset = 2 * self.half_margin - self.full_margin
        top, left = 4 * r - 2 * self.half_margin, 4 * c - 2 * self.half_margin
        x = resample_windows(features, b, self.windows(features.size(2), H // 2, r, 1),
                             self.windows(features.size(3), W // 2, c, 1))
        # src and bgr (6 channels) over the half-resolution window at full resolution, zero outside the image.
        window = crop_pixels((src, bgr), b, top, left, 2 * half)
        window = window if window.dtype == dtype else window.to(dtype)
        y_half = window.view(N, half, 2, half, 2, 6).mean((2, 4))
        x = self.conv2(self.conv1(x.permute(0, 3, 1, 2), self.conv1_images(y_half.permute(0, 3, 1, 2))))
        y = torch.empty(N, full, full, 22, device=src.device, dtype=dtype)
        y[..., 16:] = window[:, offset:offset + full, offset:offset + full]
        # Nearest upsampling to full resolution, written straight into the third convolution's input.
        y[..., :16].view(N, full // 2, 2, full // 2, 2, 16).copy_(
            x.permute(0, 2, 3, 1).view(N, full // 2, 1, full // 2, 1, 16).expand(-1, -1, 2, -1, 2, -1))
        x = self.conv4(self.conv3(y.permute(0, 3, 1, 2)))  # a fresh tensor: finished in place
        inner = slice(self.full_margin, self.full_margin + 4)
        x[:, 1:].add_(y[:, inner, inner, 16:19].permute(0, 3, 1, 2))
        return x.clamp_(0., 1.)

    def tile_side(self, ref: torch.Tensor, patches: int) -> int:
        """The tile side, in patches, of `tile_sides` that refines the selection `ref` with the fewest
        multiplications."""
        def work(side: int) -> int:
            tiles = patches if side == 1 else int(F.max_pool2d(ref.float(), side, ceil_mode=True).sum())
            return tiles * self.tile_multiplications(side)
        return min(self.tile_sides, key=work)

    def tile_multiplications(self, side: int) -> int:
        """Multiply-accumulates of the convolutions for one tile of side x side patches."""
        k = self.kernel_size
        half = 2 * side + 2 * self.half_margin - (k - 1)  # conv1's output side
        full = 4 * side + 2 * self.full_margin - (k - 1)  # conv3's
        total = 0
        for conv, out in ((self.conv1, half), (self.conv1_images, half), (self.conv2, half - k + 1),
                          (self.conv3, full), (self.conv4, full - k + 1)):
            conv = conv.conv
            total += out * out * conv.in_channels * conv.out_channels * k * k
        return total

    def refine_tiles(self, src: torch.Tensor, bgr: torch.Tensor, features: torch.Tensor, b: torch.Tensor,
                     r: torch.Tensor, c: torch.Tensor, side: int) -> torch.Tensor:
        """
        Inputs:
            src, bgr, features: as in `forward`.
            b, r, c: (N,) batch, row and column of tiles of side x side patches, on their grid.
        Output:
            (N, 4, 4 * side, 4 * side) alpha and foreground of the tiles at full resolution, finished
            (`finish_patches`), channels-last.
        """
        H, W = src.shape[2], src.shape[3]
        N, dtype = b.size(0), features.dtype
        half = 2 * side + 2 * self.half_margin  # a tile and its margin at half resolution
        full = 4 * side + 2 * self.full_margin  # and at full resolution

        top, left = 4 * side * r - 2 * self.half_margin, 4 * side * c - 2 * self.half_margin
        offset = 2 * self.half_margin - self.full_margin
        if torch.jit.is_tracing():  # the same, channels first, with RoiAlign (ONNX export)
            return self.refine_tiles_traced(src, bgr, features, b, top, left, half, full, offset)

        rows = self.windows(features.size(2), H // 2, r, side)
        cols = self.windows(features.size(3), W // 2, c, side)
        # The coarse features over each tile, upsampled to half resolution on the tile alone.
        x = resample_windows(features, b, rows, cols)
        # src and bgr over the tile's half-resolution window at full resolution, zero outside the image (as
        # the eager refiner pads): their 2x2 means are the half-resolution crop, the centre the full one.
        windows = [crop_windows(image, b, top, left, 2 * half).to(dtype) for image in (src, bgr)]
        y_half = torch.empty(N, half, half, 6, device=src.device, dtype=dtype)
        y = torch.empty(N, full, full, 22, device=src.device, dtype=dtype)
        for i, window in enumerate(windows):
            pairs = window[:, 0::2] + window[:, 1::2]
            torch.add(pairs[:, :, 0::2], pairs[:, :, 1::2], out=y_half[..., 3 * i:3 * i + 3]).mul_(0.25)
            y[..., 16 + 3 * i:19 + 3 * i] = window[:, offset:offset + full, offset:offset + full]
        x = self.conv2(self.conv1(x.permute(0, 3, 1, 2), self.conv1_images(y_half.permute(0, 3, 1, 2))))
        # Nearest upsampling to full resolution, written straight into the third convolution's input.
        y[..., :16].view(N, full // 2, 2, full // 2, 2, 16).copy_(
            x.permute(0, 2, 3, 1).view(N, full // 2, 1, full // 2, 1, 16).expand(-1, -1, 2, -1, 2, -1))
        x = self.conv4(self.conv3(y.permute(0, 3, 1, 2)))
        inner = slice(self.full_margin, self.full_margin + 4 * side)  # the tiles' own pixels in y
        return finish_patches(x, y[:, inner, inner, 16:19].permute(0, 3, 1, 2))

    def refine_tiles_traced(self, src: torch.Tensor, bgr: torch.Tensor, features: torch.Tensor, b: torch.Tensor,
                            top: torch.Tensor, left: torch.Tensor, half: int, full: int, offset: int) -> torch.Tensor:
        """`refine_tiles` for a trace (ONNX export) of single patches: the half-resolution features and images
        sampled with RoiAlign (bilinear at the half-resolution pixels' coordinates; the 2x2 mean of the full
        resolution is its sample at their centre), zero outside the image, channels first."""
        H, W = src.shape[2], src.shape[3]
        dtype = features.dtype
        # Half-resolution pixel o lies at (o + 0.5) * ratio - 0.5 on the coarse grid.
        first_row, first_col = torch.div(top, 2, rounding_mode='floor'), torch.div(left, 2, rounding_mode='floor')
        ratio_h = torch.as_tensor(features.size(2), dtype=torch.float32, device=b.device) / (H // 2)
        ratio_w = torch.as_tensor(features.size(3), dtype=torch.float32, device=b.device) / (W // 2)
        x = torchvision.ops.roi_align(features, torch.stack(
            [b.float(), first_col * ratio_w, first_row * ratio_h, (first_col + half) * ratio_w,
             (first_row + half) * ratio_h], dim=1).to(dtype), half, sampling_ratio=1, aligned=True)
        x = x * window_mask(first_row, first_col, half, H // 2, W // 2).to(dtype)
        images = [image.to(dtype) for image in (src, bgr)]
        y_half = torch.cat([sample_windows(image, b, top.float() + 0.5, left.float() + 0.5, 2., half)
                            for image in images], dim=1) * window_mask(first_row, first_col, half, H // 2, W // 2)
        top, left = top + offset, left + offset
        y_full = torch.cat([sample_windows(image, b, top.float(), left.float(), 1., full) for image in images],
                           dim=1) * window_mask(top, left, full, H, W)
        x = F.interpolate(self.conv2(self.conv1(x, self.conv1_images(y_half))), scale_factor=2., mode='nearest')
        x = self.conv4(self.conv3(torch.cat([x, y_full], dim=1)))
        inner = slice(self.full_margin, full - self.full_margin)  # the patches' own pixels
        return finish_patches(x, y_full[:, :3, inner, inner])

    def windows(self, coarse: int, half: int, positions: torch.Tensor, side: int
                ) -> Tuple[torch.Tensor, torch.Tensor]:
        """How the tiles at `positions` (N,) along one axis read the coarse image when upsampled to half
        resolution: (start (N,), weights (N, S, K)), see `interpolation_weights`."""
        size = 2 * side + 2 * self.half_margin
        if torch.jit.is_tracing():
            # The sizes are traced (the file takes any size): weights computed for these tiles, as wide as
            # a tile at any size needs (the ratio coarse / half varies by less than 1 / half with the size).
            width = math.ceil((size - 1) * float(coarse) / float(half)) + 3
            return interpolation_weights(coarse, half, positions * 2 * side - self.half_margin, size, width)
        key = (coarse, half, side, str(positions.device))
        if key not in self._tables:  # cached per size
            self._tables[key] = interpolation_table(coarse, half, 2 * side, self.half_margin, size, positions.device)
        start, weights = self._tables[key]
        return start[positions], weights[positions]

    def refine_everything(self, src: torch.Tensor, bgr: torch.Tensor, features: torch.Tensor
                          ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """'full' mode, as the eager refiner computes it (every pixel: nothing to crop)."""
        H, W = src.shape[2], src.shape[3]
        pad = [self.half_margin] * 4
        channels_last = torch.channels_last
        x = F.pad(bilinear(features, size=(H // 2, W // 2)), pad).contiguous(memory_format=channels_last)
        y = torch.cat([bilinear(src, size=(H // 2, W // 2)), bilinear(bgr, size=(H // 2, W // 2))], dim=1)
        y = F.pad(y.to(x.dtype), pad).contiguous(memory_format=channels_last)
        x = self.conv2(self.conv1(x, self.conv1_images(y)))
        x = F.interpolate(x, (H + 2 * self.full_margin, W + 2 * self.full_margin), mode='nearest')
        y = F.pad(torch.cat([src, bgr], dim=1).to(x.dtype), [self.full_margin] * 4)
        x = self.conv4(self.conv3(torch.cat([x, y], dim=1).contiguous(memory_format=channels_last)))
        ref = torch.ones((src.size(0), 1, H // 4, W // 4), device=src.device, dtype=src.dtype)
        return x[:, :1].clamp(0., 1.), x[:, 1:].add(src).clamp_(0., 1.), ref


# Rows of the frame made at once on the CPU by finish_outputs.
OUTPUT_ROWS = 64


def finish_outputs(coarse: torch.Tensor, src: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """MattingRefine's full-resolution outputs before the refined patches: the coarse alpha and foreground
    residual upsampled, src added to the residual, both clamped.

    On the CPU, where the frame is a power-of-two multiple of the coarse size, in bands of rows: each band
    is upsampled as one convolution that makes every output phase at once (`bilinear_phases`; PyTorch's
    upsampling kernel is 2 ~ 4 times slower) and rearranged into a buffer that stays in the cache while src
    is added and the result clamped, so that the output is written once (1920x1080, 2 cores: 8.4 -> 6.5 ms;
    3840x2160 from a quarter of 1920x1080: 36 -> 18.5 ms).

    Inputs:
        coarse: (B, 4, h, w) coarse alpha (0 ~ 1) and foreground residual.
        src: (B, 3, H, W).
    Outputs:
        pha (B, 1, H, W), fgr (B, 3, H, W), contiguous, 0 ~ 1.
    """
    B, H, W = src.size(0), src.size(2), src.size(3)
    h, w = coarse.size(2), coarse.size(3)
    factor = whole_factor(h, H)
    if not (src.device.type == 'cpu' and factor and factor == whole_factor(w, W) and not torch.jit.is_tracing()):
        upsampled = bilinear(coarse.contiguous(), size=(H, W))
        return upsampled[:, :1].clamp(0., 1.), upsampled[:, 1:].add(src).clamp_(0., 1.)
    # The planes with their edges replicated (upsampling clamps its source coordinates to the image).
    planes = F.pad(coarse.contiguous().view(B * 4, 1, h, w), (1, 1, 1, 1), mode='replicate')
    weight = bilinear_phases(factor, coarse.dtype, coarse.device)
    pha = torch.empty(B, 1, H, W, dtype=coarse.dtype, device=src.device)
    fgr = torch.empty(B, 3, H, W, dtype=coarse.dtype, device=src.device)
    step = max(OUTPUT_ROWS // factor, 1)  # coarse rows a band
    band = torch.empty(B, 4, step * factor, W, dtype=coarse.dtype, device=src.device)
    for first in range(0, h, step):
        rows = min(step, h - first)
        top, bottom = factor * first, factor * (first + rows)
        phases = F.conv2d(planes[:, :, first:first + rows + 2], weight)  # (B * 4, factor ** 2, rows, w)
        upsampled = band[:, :, :bottom - top]
        upsampled.view(B, 4, rows, factor, w, factor).copy_(
            phases.view(B, 4, factor, factor, rows, w).permute(0, 1, 4, 2, 5, 3))
        torch.clamp(upsampled[:, :1], 0., 1., out=pha[:, :, top:bottom])
        torch.add(upsampled[:, 1:], src[:, :, top:bottom], out=fgr[:, :, top:bottom]).clamp_(0., 1.)
    return pha, fgr


def upsample_outputs(coarse: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """`finish_outputs` in one (B, 4, H, W) tensor, pha then fgr, in three operations (the CUDA variant)."""
    out = bilinear(coarse.contiguous(), size=(src.size(2), src.size(3)))
    out[:, 1:].add_(src)
    return out.clamp_(0., 1.)


def finish_patches(patches: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """Refined patches (N, 4, s, s), alpha and foreground residual, finished as the outputs are: alpha
    clamped, src (N, 3, s, s) added to the residual and clamped."""
    return torch.cat([patches[:, :1].clamp(0., 1.), patches[:, 1:].add(src).clamp(0., 1.)], dim=1)
