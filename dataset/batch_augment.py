"""Per-batch augmentation on the training device, shared by both trainers.

The original trainers did this inline: crop/resize the batch to a random training resolution, cast
a shadow of the subject onto the background, composite, add sensor noise, and disturb the captured
background (colour jitter, a slight misalignment) so the network learns not to trust it blindly.

Random parameters are drawn on the CPU from one torch.Generator (or torch's global RNG), and noise
from a device generator seeded from it, so a seeded run is reproducible on a given device. Give each
DDP rank its own seed (e.g. seed + rank), or all ranks draw the same crops.
"""
import math
from typing import Optional, Sequence, Tuple

import torch
from kornia.enhance import (adjust_brightness_accumulative, adjust_contrast_with_mean_subtraction, adjust_hue,
                            adjust_saturation_with_gray_subtraction)
from kornia.filters import box_blur
from kornia.geometry.transform import get_affine_matrix2d, warp_affine
from torch.nn import functional as F

Tensor = torch.Tensor


def _uniform(n: int, low: float, high: float, generator) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def _randint(low: int, high: int, generator) -> int:
    return int(torch.randint(low, high, (1,), generator=generator))


def _pick(batch: int, p: float, generator) -> Tensor:
    """Indices of the samples that get an augmentation of probability p."""
    return (torch.rand(batch, generator=generator) < p).nonzero().squeeze(1)


def random_crop(tensors: Sequence[Tensor], size_range: Tuple[int, int], multiple: int, generator) -> list:
    """Resizes all tensors alike to cover a random (h, w) and centre crops them to it.

    tensors:    (B, C, H, W) each, the same H, W.
    size_range: h and w are each drawn from range(low, high), ...
    multiple:   ... then rounded down to a multiple of this (the refine stage needs 4).
    Returns the tensors as (B, C, h, w), aspect ratio kept.
    """
    h = max(multiple, _randint(*size_range, generator) // multiple * multiple)
    w = max(multiple, _randint(*size_range, generator) // multiple * multiple)
    src_h, src_w = tensors[0].shape[-2:]
    scale = max(h / src_h, w / src_w)
    # Rounding up guarantees the resized image still covers the crop.
    new_h, new_w = max(h, math.ceil(src_h * scale - 1e-6)), max(w, math.ceil(src_w * scale - 1e-6))
    top, left = (new_h - h) // 2, (new_w - w) // 2
    out = []
    for t in tensors:
        if (new_h, new_w) != (src_h, src_w):
            # PyTorch's antialiased bilinear resize: exact area weights, faster than a Gaussian pre-blur.
            t = F.interpolate(t, (new_h, new_w), mode='bilinear', align_corners=False, antialias=True)
        out.append(t[..., top:top + h, left:left + w])
    return out


def random_affine(x: Tensor, generator, degrees=(0., 0.), translate=(0., 0.), scale=(1., 1.), shear=(0., 0.),
                  padding_mode: str = 'zeros') -> Tensor:
    """A random affine warp per sample, about the image centre.

    x: (B, C, H, W). degrees, shear: ranges in degrees; translate: (fx, fy) maximal shift as a
    fraction of W and H; scale: range. Returns (B, C, H, W).
    """
    b, _, h, w = x.shape
    angle = _uniform(b, *degrees, generator)
    shift = torch.stack([_uniform(b, -1, 1, generator) * translate[0] * w,
                         _uniform(b, -1, 1, generator) * translate[1] * h], dim=1)
    zoom = _uniform(b, *scale, generator).unsqueeze(1).expand(b, 2)
    sx = torch.deg2rad(_uniform(b, *shear, generator))
    center = torch.tensor([[(w - 1) / 2, (h - 1) / 2]]).expand(b, 2)
    params = [p.to(x.device, x.dtype) for p in (shift, center, zoom, angle, sx)]
    matrix = get_affine_matrix2d(*params, sy=torch.zeros_like(params[4]))
    return warp_affine(x, matrix[:, :2], (h, w), padding_mode=padding_mode)


def color_jitter(x: Tensor, generator, brightness: float, contrast: float, saturation: float, hue: float) -> Tensor:
    """torchvision's ColorJitter formulas with per-sample factors (kornia.enhance), one random order.

    x: (B, 3, H, W), 0 ~ 1. Returns (B, 3, H, W), 0 ~ 1.
    """
    b = x.shape[0]
    factors = [_uniform(b, max(0., 1 - v), 1 + v, generator) for v in (brightness, contrast, saturation)]
    factors.append(_uniform(b, -hue, hue, generator) * 2 * math.pi)  # kornia's hue is in radians
    steps = (adjust_brightness_accumulative, adjust_contrast_with_mean_subtraction,
             adjust_saturation_with_gray_subtraction, adjust_hue)
    for i in torch.randperm(4, generator=generator).tolist():
        x = steps[i](x, factors[i].to(x.device, x.dtype))
    return x.clamp(0, 1)


def _device_generator(device: torch.device, generator) -> torch.Generator:
    seed = int(torch.randint(2 ** 62, (1,), generator=generator))
    return torch.Generator(device=device).manual_seed(seed)


class BatchAugment:
    """Builds training inputs from a batch of foregrounds and backgrounds, on their device.

    crop_range:    training resolution: h and w each drawn from range(low, high); None: no crop.
    crop_multiple: round the crop down to a multiple of this.
    shadow_p, noise_p, jitter_p, misalign_p: per-sample probabilities of each augmentation.
    shadow_blur:   box blur kernel drawn from range(low, high), at most a quarter of the crop's
                   smaller side, so small CPU crops still get a shadow rather than a grey smear.
    generator:     CPU torch.Generator for every draw; None uses torch's global RNG.

    Call with
        true_pha: (B, 1, H, W) alpha, 0 ~ 1
        true_fgr: (B, 3, H, W) foreground, 0 ~ 1
        true_bgr: (B, 3, H, W) background, 0 ~ 1
    on any device. Returns (true_src, true_pha, true_fgr, true_bgr), each (B, C, h, w), 0 ~ 1:
    true_src is the composite (with shadow and noise) and true_bgr the captured background the
    model receives (with noise, colour jitter and misalignment); pha and fgr are only cropped.
    """

    def __init__(self, crop_range: Optional[Tuple[int, int]] = (256, 512), crop_multiple: int = 1,
                 shadow_p: float = 0.3, noise_p: float = 0.4, jitter_p: float = 0.8, misalign_p: float = 0.3,
                 shadow_blur: Tuple[int, int] = (20, 40), generator: Optional[torch.Generator] = None):
        if crop_range is not None and not 0 < crop_range[0] < crop_range[1]:
            raise ValueError(f'crop_range must be (low, high) with 0 < low < high, got {crop_range}')
        self.crop_range = crop_range
        self.crop_multiple = crop_multiple
        self.shadow_p, self.noise_p, self.jitter_p, self.misalign_p = shadow_p, noise_p, jitter_p, misalign_p
        self.shadow_blur = shadow_blur
        self.generator = generator

    @classmethod
    def base(cls, crop_range=(256, 512), **kwargs) -> 'BatchAugment':
        """The base stage recipe (paper: 512 px samples cropped to 256 ~ 511)."""
        return cls(crop_range=crop_range, crop_multiple=1, **kwargs)

    @classmethod
    def refine(cls, crop_range=(1024, 2048), **kwargs) -> 'BatchAugment':
        """The refine stage recipe (paper: 2048 px samples cropped to 1024 ~ 2044, multiples of 4)."""
        return cls(crop_range=crop_range, crop_multiple=4, **kwargs)

    def __call__(self, true_pha: Tensor, true_fgr: Tensor, true_bgr: Tensor):
        g = self.generator
        if self.crop_range is not None:
            true_pha, true_fgr, true_bgr = random_crop((true_pha, true_fgr, true_bgr), self.crop_range,
                                                       self.crop_multiple, g)
        true_src = self.cast_shadow(true_bgr, true_pha)
        true_src = true_fgr * true_pha + true_src * (1 - true_pha)
        true_src, true_bgr = self.add_noise(true_src, true_bgr)
        true_bgr = self.jitter_background(true_bgr)
        true_bgr = self.misalign_background(true_bgr)
        return true_src, true_pha, true_fgr, true_bgr

    def cast_shadow(self, bgr: Tensor, pha: Tensor) -> Tensor:
        """bgr darkened by a displaced, blurred copy of the subject's alpha. (B, 3, H, W) -> same."""
        g = self.generator
        idx = _pick(len(bgr), self.shadow_p, g)
        if len(idx) == 0:
            return bgr
        idx = idx.to(bgr.device)
        strength = (0.3 * torch.rand(len(idx), generator=g)).to(pha.device, pha.dtype).view(-1, 1, 1, 1)
        shadow = random_affine(pha[idx] * strength, g, degrees=(-5, 5), translate=(0.2, 0.2), scale=(0.5, 1.5),
                               shear=(-5, 5))
        kernel = min(_randint(*self.shadow_blur, g), max(1, min(bgr.shape[-2:]) // 4))
        shadow = box_blur(shadow, (kernel, kernel))
        return bgr.index_copy(0, idx, (bgr[idx] - shadow).clamp(0, 1))

    def add_noise(self, src: Tensor, bgr: Tensor):
        """Gaussian noise of std 0 ~ 0.03, drawn separately for src and bgr. (B, 3, H, W) each."""
        g = self.generator
        idx = _pick(len(src), self.noise_p, g)
        if len(idx) == 0:
            return src, bgr
        idx = idx.to(src.device)
        device_g = _device_generator(src.device, g)
        out = []
        for x in (src, bgr):
            std = (0.03 * torch.rand(len(idx), generator=g)).to(x.device, x.dtype).view(-1, 1, 1, 1)
            noise = torch.randn(x[idx].shape, generator=device_g, device=x.device, dtype=x.dtype)
            out.append(x.index_copy(0, idx, (x[idx] + noise * std).clamp(0, 1)))
        return tuple(out)

    def jitter_background(self, bgr: Tensor) -> Tensor:
        """ColorJitter(0.18, 0.18, 0.18, 0.1) on the captured background only."""
        idx = _pick(len(bgr), self.jitter_p, self.generator)
        if len(idx) == 0:
            return bgr
        idx = idx.to(bgr.device)
        return bgr.index_copy(0, idx, color_jitter(bgr[idx], self.generator, 0.18, 0.18, 0.18, 0.1))

    def misalign_background(self, bgr: Tensor) -> Tensor:
        """A slight rotation and shift of the captured background; the strip it uncovers at the edges is
        black, as the original's torchvision RandomAffine leaves it."""
        idx = _pick(len(bgr), self.misalign_p, self.generator)
        if len(idx) == 0:
            return bgr
        idx = idx.to(bgr.device)
        moved = random_affine(bgr[idx], self.generator, degrees=(-1, 1), translate=(0.01, 0.01),
                              padding_mode='zeros')
        return bgr.index_copy(0, idx, moved)
