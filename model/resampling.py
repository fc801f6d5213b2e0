"""Resizing, cropping and writing back patches with the values of the eager model's operations, with less
memory traffic (used by `optimize`)."""
from typing import List, Optional, Tuple

import torch
import torchvision
from torch.nn import functional as F

__all__ = ['bilinear', 'bilinear_rows', 'bilinear_phases', 'whole_factor', 'interpolation_weights', 'interpolation_table', 'rows_view',
           'resample_windows', 'crop_windows', 'crop_pixels', 'sample_windows', 'window_mask', 'replace_patches',
           'tile_grid']


def bilinear(x: torch.Tensor, size: Optional[Tuple[int, int]] = None,
             scale_factor: Optional[float] = None) -> torch.Tensor:
    """`F.interpolate(x, size or scale_factor, mode='bilinear', align_corners=False)` (a scale factor with
    recompute_scale_factor, as the eager model), the same values on PyTorch's fastest path: one image
    expanded over the batch (a shared clean plate) is resized once, and a contiguous image as a batch of
    one-channel images (3 ~ 15x faster on CPU than PyTorch's loop over channels).

    Input: (B, C, H, W). Output: (B, C, h, w), contiguous where x is (or channels-last where x is).
    """
    if x.size(0) > 1 and x.stride(0) == 0:
        return bilinear(x[:1], size, scale_factor).expand(x.size(0), -1, -1, -1)
    B, C, H, W = x.shape
    planes = C > 1 and x.is_contiguous() and not x.is_contiguous(memory_format=torch.channels_last)
    if planes:
        x = x.view(B * C, 1, H, W)
    x = F.interpolate(x, size, scale_factor, mode='bilinear', align_corners=False,
                      recompute_scale_factor=True if scale_factor is not None else None)
    return x.view(B, C, x.size(2), x.size(3)) if planes else x


def bilinear_rows(x: torch.Tensor, factor: int, top: int, bottom: int) -> torch.Tensor:
    """Rows [top, bottom) of `F.interpolate(x, scale_factor=factor, mode='bilinear', align_corners=False)`,
    computed from the rows of x that they read (and one more on either side, so that the slice's edges
    clamp nothing that the image's do not). `factor`: a power of two, so that the source coordinates of
    the slice and of the image differ by whole rows exactly; the values are the same up to float32
    rounding (PyTorch's kernel may order its sums differently for another size).

    Input: (B, C, h, w). Output: (B, C, bottom - top, factor * w).
    """
    h = x.size(2)
    # Output row o reads rows floor((o + 0.5) / factor - 0.5) and the next: from one row before the first
    # of top's to one row after the second of (bottom - 1)'s.
    low = max(int((top + 0.5) / factor - 0.5) - 1, 0)
    high = min(int((bottom - 0.5) / factor - 0.5) + 3, h)
    rows = F.interpolate(x[:, :, low:high], scale_factor=float(factor), mode='bilinear', align_corners=False)
    return rows[:, :, top - factor * low:bottom - factor * low]


def bilinear_phases(factor: int, dtype: torch.dtype, device) -> torch.Tensor:
    """Bilinear upsampling by a whole `factor` (align_corners=False) as a convolution: output pixel
    (factor * i + ky, factor * j + kx) is channel factor * ky + kx of a 3x3 convolution, unpadded, of the
    input with its edges replicated (which is how upsampling clamps at the edges), at (i, j).

    Output: (factor ** 2, 1, 3, 3) weights; products of the 1-D weights, exact in any float type where
    factor is a power of two.
    """
    taps = torch.zeros(factor, 3, dtype=torch.float64)
    for k in range(factor):
        # Output pixel factor * i + k samples the input at i + offset.
        offset = (k + 0.5) / factor - 0.5
        if offset < 0:
            taps[k, 0], taps[k, 1] = -offset, 1 + offset
        else:
            taps[k, 1], taps[k, 2] = 1 - offset, offset
    return torch.einsum('ya,xb->yxab', taps, taps).reshape(factor * factor, 1, 3, 3).to(device, dtype)


def whole_factor(small: int, large: int) -> int:
    """large / small where that is a power of two (at least 2), else 0."""
    factor = large // small
    return factor if factor >= 2 and factor * small == large and factor & (factor - 1) == 0 else 0


def interpolation_weights(coarse, fine, first: torch.Tensor, size: int, width: int
                          ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Bilinear upsampling (align_corners=False) from `coarse` to `fine` pixels along one axis, for windows
    only: window n covers the fine pixels first[n] + [0, size), zero outside [0, fine) (the eager refiner
    pads its half-resolution features with zeros). Sizes may be traced values (ONNX export).

    Returns:
        start: (N,) int64, the first of the `width` coarse pixels that window n reads: start[n] + k is
            inside the image wherever weights[n, :, k] is not all 0.
        weights: (N, size, width) float32: fine pixel i of window n = sum_k weights[n, i, k] * coarse[start[n] + k].
    """
    pixels = first.view(-1, 1) + torch.arange(size, device=first.device)
    inside = (pixels >= 0) & (pixels < fine)
    pixels = pixels.clamp(min=0)
    pixels = torch.minimum(pixels, torch.as_tensor(fine - 1, device=first.device))
    # The source coordinate as PyTorch's upsampling computes it, in float32.
    scale = torch.as_tensor(coarse, dtype=torch.float32, device=first.device) / fine
    source = ((pixels.float() + 0.5) * scale - 0.5).clamp(min=0)
    last = torch.as_tensor(coarse - 1, device=first.device)
    low = torch.minimum(source.long(), last)
    high = torch.minimum(low + 1, last)
    frac = source - low
    start = torch.minimum(low[:, 0], last + 1 - width).clamp(min=0)
    k = torch.arange(width, device=first.device)
    weights = (((low - start.view(-1, 1)).unsqueeze(2) == k) * (1 - frac).unsqueeze(2)
               + ((high - start.view(-1, 1)).unsqueeze(2) == k) * frac.unsqueeze(2))
    return start, weights * inside.unsqueeze(2)


def interpolation_table(coarse: int, fine: int, stride: int, margin: int, size: int, device: torch.device
                        ) -> Tuple[torch.Tensor, torch.Tensor]:
    """`interpolation_weights` of the windows n * stride - margin, n < ceil(fine / stride), with the
    narrowest width that holds every window."""
    first = torch.arange(-(-fine // stride)) * stride - margin
    span = interpolation_weights(coarse, fine, first, size, coarse)[1].sum(1) > 0  # (N, coarse)
    positions = torch.arange(coarse)
    width = int(((positions * span).max(1).values - torch.where(span, positions, coarse).min(1).values).max()) + 1
    start, weights = interpolation_weights(coarse, fine, first, size, width)
    return start.to(device), weights.to(device)


def rows_view(x: torch.Tensor, length: int) -> torch.Tensor:
    """A (N, length) view of x's memory whose row n holds the `length` elements from x's first element
    plus n on: `index_select` on it copies runs of consecutive elements, a fast whole-row copy each."""
    available = x.untyped_storage().nbytes() // x.element_size() - x.storage_offset()
    return x.as_strided((available - length + 1, length), (1, 1))


def resample_windows(x: torch.Tensor, b: torch.Tensor, rows: Tuple[torch.Tensor, torch.Tensor],
                     cols: Tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Upsamples windows of `x`: what upsampling all of x and cropping the windows gives, computed on the
    windows alone.

    Inputs:
        x: (B, C, h, w) coarse image, channels-last (the channels of a pixel consecutive in memory).
        b: (P,) batch of each window.
        rows, cols: (start (P,), weights (P, S, K or L)) of each window along each axis (see
            `interpolation_weights`).
    Output:
        (P, S, S, C), contiguous (channels-last patches), in x's dtype.
    """
    row_start, row_weights = rows
    col_start, col_weights = cols
    C = x.size(1)
    K, L = row_weights.shape[2], col_weights.shape[2]
    P, S = b.size(0), row_weights.shape[1]
    stride_b, stride_c, stride_h, stride_w = x.stride()
    assert stride_c == 1, 'x must be channels-last'
    # A window row is L pixels, consecutive in memory: K copies of L * stride_w elements each.
    first = b * stride_b + row_start * stride_h + col_start * stride_w
    offsets = first.view(-1, 1) + torch.arange(K, device=x.device) * stride_h
    window = rows_view(x, L * stride_w).index_select(0, offsets.view(-1)).view(P * K, L, stride_w)[..., :C]
    # Columns, then rows, as batched matrix products.
    t = torch.bmm(col_weights.to(x.dtype).unsqueeze(1).expand(P, K, S, L).reshape(P * K, S, L), window)
    return torch.bmm(row_weights.to(x.dtype), t.view(P, K, S * C)).view(P, S, S, C)


def crop_windows(image: torch.Tensor, b: torch.Tensor, top: torch.Tensor, left: torch.Tensor,
                 size: int) -> torch.Tensor:
    """Crops size x size windows from an image, zero outside it.

    Inputs:
        image: (B, C, H, W), any strides (one image expanded over the batch too).
        b, top, left: (P,) batch, first row and first column of each window (may lie outside the image).
    Output:
        (P, size, size, C), channels last (not necessarily contiguous).
    """
    B, C, H, W = image.shape
    if size > H or size > W:
        return crop_pixels(image, b, top, left, size)
    offsets = torch.arange(size, device=b.device)
    rows = (top.view(-1, 1) + offsets).clamp(0, H - 1)  # (P, size)
    first = left.clamp(0, W - size)
    stride_b, stride_c, stride_h, stride_w = image.stride()
    # Copy runs of consecutive elements: a window row of whole pixels where the image is channels-last,
    # else a window row of one channel.
    if stride_c == 1 and stride_w == C:
        starts = b.view(-1, 1) * stride_b + rows * stride_h + first.view(-1, 1) * stride_w
        crops = rows_view(image, size * C).index_select(0, starts.view(-1)).view(-1, size, size, C)
    else:
        if stride_w != 1:
            image = image.contiguous()
            stride_b, stride_c, stride_h, stride_w = image.stride()
        channels = torch.arange(C, device=b.device).view(1, C, 1) * stride_c
        starts = (b.view(-1, 1, 1) * stride_b + channels + rows.view(-1, 1, size) * stride_h
                  + first.view(-1, 1, 1))
        crops = rows_view(image, size).index_select(0, starts.view(-1)).view(-1, C, size, size).permute(0, 2, 3, 1)
    # Windows that reach past the image (rare): cropped again pixel by pixel, zero outside.
    border = torch.nonzero((top < 0) | (top > H - size) | (left < 0) | (left > W - size)).view(-1)
    if border.size(0) > 0:
        crops[border] = crop_pixels(image, b[border], top[border], left[border], size)
    return crops


def crop_pixels(image, b: torch.Tensor, top: torch.Tensor, left: torch.Tensor, size: int) -> torch.Tensor:
    """`crop_windows`, pixel by pixel: (P, size, size, C), zero outside the image. `image` may also be a
    tuple of images of one size: their windows at the same positions, channels concatenated."""
    images = image if isinstance(image, tuple) else (image,)
    B, C, H, W = images[0].shape
    offsets = torch.arange(size, device=b.device)
    y = top.view(-1, 1) + offsets
    z = left.view(-1, 1) + offsets
    if torch.jit.is_tracing():  # the sizes are traced values (the ONNX file takes any size)
        inside = ((y >= 0) & (y < H)).view(-1, size, 1, 1) & ((z >= 0) & (z < W)).view(-1, 1, size, 1)
        y = torch.minimum(y.clamp(min=0), torch.as_tensor(H - 1, device=y.device))
        z = torch.minimum(z.clamp(min=0), torch.as_tensor(W - 1, device=z.device))
    else:  # no tensor made from Python numbers (an upload on a GPU); inside where clamping changes nothing
        y_inside, z_inside = y.clamp(0, H - 1), z.clamp(0, W - 1)
        inside = y_inside.eq(y).view(-1, size, 1, 1) & z_inside.eq(z).view(-1, 1, size, 1)
        y, z = y_inside, z_inside
    b, y, z = b.view(-1, 1, 1), y.view(-1, size, 1), z.view(-1, 1, size)
    crops = [x.permute(0, 2, 3, 1)[b, y, z] for x in images]
    return (crops[0] if len(crops) == 1 else torch.cat(crops, dim=3)) * inside


def sample_windows(x: torch.Tensor, b: torch.Tensor, top: torch.Tensor, left: torch.Tensor, step: float,
                   size: int) -> torch.Tensor:
    """Bilinear samples of x on size x size grids, with one RoiAlign, for a trace (ONNX export): window p
    samples rows top[p] + step * i and columns left[p] + step * j (pixel centres at whole numbers),
    clamped below 0 and past the last pixel as upsampling clamps.

    Inputs:
        x: (B, C, H, W); b: (P,) batch; top, left: (P,) float coordinates.
    Output:
        (P, C, size, size).
    """
    # RoiAlign (aligned, one sample per bin) samples y1 - 0.5 + (i + 0.5) * bin.
    y1, x1 = top + 0.5 - 0.5 * step, left + 0.5 - 0.5 * step
    boxes = torch.stack([b.to(y1.dtype), x1, y1, x1 + size * step, y1 + size * step], dim=1).to(x.dtype)
    return torchvision.ops.roi_align(x, boxes, size, sampling_ratio=1, aligned=True)


def window_mask(top: torch.Tensor, left: torch.Tensor, size: int, height, width) -> torch.Tensor:
    """(P, 1, size, size): 1 where the window of size x size pixels from (top, left) lies on the image of
    height x width pixels, else 0."""
    offsets = torch.arange(size, device=top.device)
    rows, cols = top.view(-1, 1) + offsets, left.view(-1, 1) + offsets
    return (((rows >= 0) & (rows < height)).view(-1, 1, size, 1)
            & ((cols >= 0) & (cols < width)).view(-1, 1, 1, size))


def replace_patches(x: torch.Tensor, patches: torch.Tensor, b: torch.Tensor, r: torch.Tensor,
                    c: torch.Tensor) -> torch.Tensor:
    """Writes patches into x, in place.

    Inputs:
        x: (B, C, H, W) contiguous, H and W multiples of the patch side s.
        patches: (P, C, s, s).
        b, r, c: (P,) batch, row and column of each patch on the grid of stride s.
    Output:
        x, with the patches written (returned so that a trace, for ONNX export, records the write).
    """
    B, C, H, W = x.shape
    s = patches.size(2)
    if torch.jit.is_tracing():  # scattered at flat indices: no transposes of the whole image in ONNX
        offsets = torch.arange(s, device=b.device)
        index = (((b.view(-1, 1, 1, 1) * C + torch.arange(C, device=b.device).view(1, -1, 1, 1)) * H
                  + (r * s).view(-1, 1, 1, 1) + offsets.view(1, 1, -1, 1)) * W
                 + (c * s).view(-1, 1, 1, 1) + offsets.view(1, 1, 1, -1))
        return x.reshape(-1).scatter(0, index.reshape(-1), patches.to(x.dtype).reshape(-1)).reshape(B, C, H, W)
    grid = x.view(B, C, H // s, s, W // s, s).permute(0, 2, 4, 1, 3, 5)
    grid[b, r, c] = patches.to(x.dtype)
    return grid.permute(0, 3, 1, 4, 2, 5).reshape(B, C, H, W)


def tile_grid(selected: torch.Tensor, tile: int) -> List[torch.Tensor]:
    """The tiles of tile x tile positions holding at least one selected position.

    Input:
        selected: (B, 1, h, w), 1 selected, else 0.
    Output:
        b, r, c: (N,) batch, row and column of each such tile on the grid of stride `tile`.
    """
    if tile > 1:
        selected = F.max_pool2d(selected, tile, ceil_mode=True)
    return list(torch.nonzero(selected.squeeze(1), as_tuple=True))
