"""Per-batch augmentation on the training device, shared by both trainers.

The original trainers did this inline: crop/resize the batch to a random training resolution, cast
a shadow of the subject onto the background, composite, add sensor noise, and disturb the captured
background (colour jitter, a slight misalignment) so the network learns not to trust it blindly.

Random parameters are drawn on the CPU from one torch.Generator (or torch's global RNG), and noise
from a device generator seeded from it, so a seeded run is reproducible on a given device. Give each
DDP rank its own seed (e.g. seed + rank), or all ranks draw the same crops.

The host's part and the device's part are apart, so that neither waits for the other: `draw` makes
every random number of a call on the CPU first (the same draws in the same order as drawing each where
it is used, so a seeded run gives the same results as then) and sends the tensors among them to the
device in one pinned, non-blocking copy; `apply` then only launches work on the device. What the
augmentations draw are U(0, 1) numbers, sample indices and host integers (crop size, blur kernel, a
seed, the jitter order); the ranges that give them their meaning stay where they are used.
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

# The original's settings of each augmentation (test_recipes.py checks them against its code).
SHADOW_AFFINE = dict(degrees=(-5, 5), translate=(0.2, 0.2), scale=(0.5, 1.5), shear=(-5, 5))
MISALIGN_AFFINE = dict(degrees=(-1, 1), translate=(0.01, 0.01), padding_mode='zeros')
BACKGROUND_JITTER = (0.18, 0.18, 0.18, 0.1)  # brightness, contrast, saturation, hue


def _scaled(u: Tensor, low: float, high: float) -> Tensor:
    """U(0, 1) numbers mapped to [low, high)."""
    return low + (high - low) * u


def _randint(low: int, high: int, generator) -> int:
    return int(torch.randint(low, high, (1,), generator=generator))


def _pick(batch: int, p: float, generator) -> Tensor:
    """Indices of the samples that get an augmentation of probability p (on the CPU: no device sync)."""
    return (torch.rand(batch, generator=generator) < p).nonzero().squeeze(1)


def _map_tensors(tree, function):
    """`tree` (dicts, lists and tuples of anything) with `function` applied to each tensor, in order."""
    if isinstance(tree, Tensor):
        return function(tree)
    if isinstance(tree, dict):
        return {key: _map_tensors(value, function) for key, value in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_map_tensors(value, function) for value in tree)
    return tree


def upload(drawn, device):
    """`drawn` (dicts, lists, tuples of host values and CPU tensors) with its tensors on `device`, moved in one
    copy: packed into one float32 tensor (exact for U(0, 1) numbers and sample indices), pinned and sent
    non-blocking to a GPU, then sliced back to their shapes and dtypes. Nothing waits for the device."""
    tensors = []
    _map_tensors(drawn, tensors.append)
    if not tensors:
        return drawn
    packed = torch.cat([t.reshape(-1).float() for t in tensors])
    if torch.device(device).type == 'cuda':
        packed = packed.pin_memory()
    parts = iter(packed.to(device, non_blocking=True).split([t.numel() for t in tensors]))
    return _map_tensors(drawn, lambda t: next(parts).view(t.shape).to(t.dtype))


def cover_and_crop(tensors: Sequence[Tensor], size: Tuple[int, int]) -> list:
    """Resizes all tensors alike to cover `size` = (h, w) and centre crops them to it.

    tensors: (B, C, H, W) each, the same H, W. Returns the tensors as (B, C, h, w), aspect ratio kept.
    """
    h, w = size
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


def draw_affine(batch: int, generator) -> Tensor:
    """The U(0, 1) numbers of `random_affine` for `batch` samples: (5, B), rows angle, shift x, shift y, zoom,
    shear."""
    return torch.stack([torch.rand(batch, generator=generator) for _ in range(5)])


def random_affine(x: Tensor, drawn, degrees=(0., 0.), translate=(0., 0.), scale=(1., 1.), shear=(0., 0.),
                  padding_mode: str = 'zeros') -> Tensor:
    """A random affine warp per sample, about the image centre.

    x: (B, C, H, W). drawn: its U(0, 1) numbers on x's device (`draw_affine`), or a CPU generator (None:
    torch's global one) to draw them from now. degrees, shear: ranges in degrees; translate: (fx, fy)
    maximal shift as a fraction of W and H; scale: range. Returns (B, C, H, W).
    """
    if not isinstance(drawn, Tensor):
        drawn = upload(draw_affine(len(x), drawn), x.device)
    b, _, h, w = x.shape
    angle, shift_x, shift_y, zoom, shear_x = drawn
    angle = _scaled(angle, *degrees)
    shift = torch.stack([_scaled(shift_x, -1, 1) * translate[0] * w, _scaled(shift_y, -1, 1) * translate[1] * h], dim=1)
    zoom = _scaled(zoom, *scale).unsqueeze(1).expand(b, 2)
    sx = torch.deg2rad(_scaled(shear_x, *shear))
    center = torch.stack([x.new_full((b,), (w - 1) / 2), x.new_full((b,), (h - 1) / 2)], dim=1)
    params = [p.to(x.dtype) for p in (shift, center, zoom, angle, sx)]
    matrix = get_affine_matrix2d(*params, sy=torch.zeros_like(params[4]))
    return warp_affine(x, matrix[:, :2], (h, w), padding_mode=padding_mode)


def draw_jitter(batch: int, generator) -> tuple:
    """The random numbers of `color_jitter` for `batch` samples: U(0, 1) numbers (4, B) for brightness,
    contrast, saturation and hue, and the order of the four adjustments (host integers)."""
    return (torch.stack([torch.rand(batch, generator=generator) for _ in range(4)]),
            torch.randperm(4, generator=generator).tolist())


def color_jitter(x: Tensor, drawn, brightness: float, contrast: float, saturation: float, hue: float) -> Tensor:
    """torchvision's ColorJitter formulas with per-sample factors (kornia.enhance), one random order.

    x: (B, 3, H, W), 0 ~ 1. drawn: its random numbers, on x's device (`draw_jitter`), or a CPU generator
    (None: torch's global one) to draw them from now. Returns (B, 3, H, W), 0 ~ 1.
    """
    if not isinstance(drawn, tuple):
        drawn = upload(draw_jitter(len(x), drawn), x.device)
    uniforms, order = drawn
    factors = [_scaled(u, max(0., 1 - v), 1 + v) for u, v in zip(uniforms, (brightness, contrast, saturation))]
    factors.append(_scaled(uniforms[3], -hue, hue) * 2 * math.pi)  # kornia's hue is in radians
    steps = (adjust_brightness_accumulative, adjust_contrast_with_mean_subtraction,
             adjust_saturation_with_gray_subtraction, adjust_hue)
    for i in order:
        x = steps[i](x, factors[i].to(x.dtype))
    return x.clamp(0, 1)


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
    A call is `apply(draw(B, (H, W), device), ...)`: a trainer calls the two apart (see the module's
    docstring). Each augmentation method draws its own numbers when it is called without them.

    The crop shape changes at every call (the original's recipe); see Trainer.seed_and_choose_algorithms
    for what that means for cuDNN.
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
        return self.apply(self.draw(len(true_pha), true_pha.shape[-2:], true_pha.device), true_pha, true_fgr, true_bgr)

    def draw(self, batch: int, size: Tuple[int, int], device) -> dict:
        """Every random number of one call on a batch of `batch` samples of `size` = (H, W), drawn on the CPU
        and moved to `device` in one copy (see `upload`): what `apply` takes."""
        crop = None
        if self.crop_range is not None:
            m = self.crop_multiple
            crop = tuple(max(m, _randint(*self.crop_range, self.generator) // m * m) for _ in 'hw')
        return upload(dict(crop=crop, shadow=self.draw_shadow(batch, crop or tuple(size)),
                           noise=self.draw_noise(batch), jitter=self.draw_jitter(batch),
                           misalign=self.draw_misalign(batch)), device)

    def apply(self, drawn: dict, true_pha: Tensor, true_fgr: Tensor, true_bgr: Tensor):
        """The augmentation of one batch with the numbers `draw` gave: device work only."""
        if drawn['crop'] is not None:
            true_pha, true_fgr, true_bgr = cover_and_crop((true_pha, true_fgr, true_bgr), drawn['crop'])
        true_src = self.cast_shadow(true_bgr, true_pha, drawn['shadow'])
        true_src = true_fgr * true_pha + true_src * (1 - true_pha)
        true_src, true_bgr = self.add_noise(true_src, true_bgr, drawn['noise'])
        true_bgr = self.jitter_background(true_bgr, drawn['jitter'])
        true_bgr = self.misalign_background(true_bgr, drawn['misalign'])
        return true_src, true_pha, true_fgr, true_bgr

    # Each augmentation: its draw (an empty dict where no sample gets it, and then nothing more is drawn),
    # and the method that applies it.

    def draw_shadow(self, batch: int, size: Tuple[int, int]) -> dict:
        g = self.generator
        idx = _pick(batch, self.shadow_p, g)
        if len(idx) == 0:
            return {}
        return dict(idx=idx, strength=torch.rand(len(idx), generator=g), affine=draw_affine(len(idx), g),
                    kernel=min(_randint(*self.shadow_blur, g), max(1, min(size) // 4)))

    def cast_shadow(self, bgr: Tensor, pha: Tensor, drawn: Optional[dict] = None) -> Tensor:
        """bgr darkened by a displaced, blurred copy of the subject's alpha. (B, 3, H, W) -> same."""
        if drawn is None:
            drawn = upload(self.draw_shadow(len(bgr), bgr.shape[-2:]), bgr.device)
        if not drawn:
            return bgr
        idx, kernel = drawn['idx'], drawn['kernel']
        strength = (0.3 * drawn['strength']).to(pha.dtype).view(-1, 1, 1, 1)
        shadow = random_affine(pha[idx] * strength, drawn['affine'], **SHADOW_AFFINE)
        shadow = box_blur(shadow, (kernel, kernel))
        return bgr.index_copy(0, idx, (bgr[idx] - shadow).clamp(0, 1))

    def draw_noise(self, batch: int) -> dict:
        g = self.generator
        idx = _pick(batch, self.noise_p, g)
        if len(idx) == 0:
            return {}
        seed = int(torch.randint(2 ** 62, (1,), generator=g))  # of the device generator of the noise itself
        return dict(idx=idx, seed=seed, std=torch.stack([torch.rand(len(idx), generator=g) for _ in 'sb']))

    def add_noise(self, src: Tensor, bgr: Tensor, drawn: Optional[dict] = None):
        """Gaussian noise of std 0 ~ 0.03, drawn separately for src and bgr. (B, 3, H, W) each."""
        if drawn is None:
            drawn = upload(self.draw_noise(len(src)), src.device)
        if not drawn:
            return src, bgr
        idx = drawn['idx']
        device_g = torch.Generator(device=src.device).manual_seed(drawn['seed'])
        out = []
        for x, u in zip((src, bgr), drawn['std']):
            std = (0.03 * u).to(x.dtype).view(-1, 1, 1, 1)
            noise = torch.randn((len(idx), *x.shape[1:]), generator=device_g, device=x.device, dtype=x.dtype)
            out.append(x.index_copy(0, idx, (x[idx] + noise * std).clamp(0, 1)))
        return tuple(out)

    def draw_jitter(self, batch: int) -> dict:
        idx = _pick(batch, self.jitter_p, self.generator)
        return dict(idx=idx, jitter=draw_jitter(len(idx), self.generator)) if len(idx) else {}

    def jitter_background(self, bgr: Tensor, drawn: Optional[dict] = None) -> Tensor:
        """ColorJitter(0.18, 0.18, 0.18, 0.1) on the captured background only."""
        if drawn is None:
            drawn = upload(self.draw_jitter(len(bgr)), bgr.device)
        if not drawn:
            return bgr
        idx = drawn['idx']
        return bgr.index_copy(0, idx, color_jitter(bgr[idx], drawn['jitter'], *BACKGROUND_JITTER))

    def draw_misalign(self, batch: int) -> dict:
        idx = _pick(batch, self.misalign_p, self.generator)
        return dict(idx=idx, affine=draw_affine(len(idx), self.generator)) if len(idx) else {}

    def misalign_background(self, bgr: Tensor, drawn: Optional[dict] = None) -> Tensor:
        """A slight rotation and shift of the captured background; the strip it uncovers at the edges is
        black, as the original's torchvision RandomAffine leaves it."""
        if drawn is None:
            drawn = upload(self.draw_misalign(len(bgr)), bgr.device)
        if not drawn:
            return bgr
        idx = drawn['idx']
        return bgr.index_copy(0, idx, random_affine(bgr[idx], drawn['affine'], **MISALIGN_AFFINE))
