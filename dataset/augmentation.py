"""Per-sample augmentation of PIL images, the same random parameters for every image of a pair.

Every transform here takes any number of images and a `generator`:

    pha, fgr = transform(pha, fgr, generator=g)    # one draw, applied to both
    bgr = transform(bgr, generator=g)              # one image in, one image out

All randomness comes from `generator` (a CPU torch.Generator; None means torch's global RNG), so a
data set that seeds one generator per item gets the same augmentation whichever DataLoader worker
or DDP rank loads that item. Geometry is one PIL affine warp straight to the output size, which is
the original recipe's pad + affine + centre crop without computing the pixels that get cropped away.
"""
import math
import random
from typing import Optional, Sequence, Tuple, Union

import torch
from PIL import Image, ImageFilter
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as F

_PIL_RESAMPLE = {
    InterpolationMode.NEAREST: Image.NEAREST,
    InterpolationMode.BILINEAR: Image.BILINEAR,
    InterpolationMode.BICUBIC: Image.BICUBIC,
}


def uniform(low: float, high: float, generator: Optional[torch.Generator]) -> float:
    return low + (high - low) * torch.rand(1, generator=generator).item()


def chance(p: float, generator: Optional[torch.Generator]) -> bool:
    return torch.rand(1, generator=generator).item() < p


class Transform:
    """Base class: samples parameters once per call and applies them to every image given."""

    def __call__(self, *imgs, generator: Optional[torch.Generator] = None):
        params = self.sample(imgs[0], generator)
        out = tuple(self.apply(img, params) for img in imgs)
        return out[0] if len(out) == 1 else out

    def sample(self, img, generator):
        return None

    def apply(self, img, params):
        raise NotImplementedError

    def __repr__(self):
        fields = ', '.join(f'{k}={v!r}' for k, v in vars(self).items())
        return f'{type(self).__name__}({fields})'


def call_seeded(transform, imgs: tuple, generator: Optional[torch.Generator]):
    """Calls any transform on `imgs` reproducibly under `generator`.

    Ours take the generator; foreign callables (torchvision transforms draw from torch's and Python's
    global RNGs) run with those RNGs forked and seeded from `generator`, so the caller's RNG state
    is left as it was.
    """
    if isinstance(transform, Transform):
        return transform(*imgs, generator=generator)
    if generator is None:
        return transform(*imgs)
    seed = int(torch.randint(2 ** 62, (1,), generator=generator))
    python_state = random.getstate()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        random.seed(seed)
        try:
            return transform(*imgs)
        finally:
            random.setstate(python_state)


class Compose(Transform):
    def __init__(self, transforms: Sequence):
        self.transforms = list(transforms)

    def __call__(self, *imgs, generator=None):
        for transform in self.transforms:
            out = call_seeded(transform, imgs, generator)
            imgs = out if isinstance(out, (tuple, list)) else (out,)
        return imgs[0] if len(imgs) == 1 else tuple(imgs)


class ApplyOnlyAt(Transform):
    """Applies `transform` to the images at `indices` only, e.g. colour jitter on fgr but not pha."""

    def __init__(self, indices: Sequence[int], transform):
        self.indices = tuple(indices)
        self.transform = transform

    def __call__(self, *imgs, generator=None):
        out = tuple(call_seeded(self.transform, (img,), generator) if i in self.indices else img
                    for i, img in enumerate(imgs))
        return out[0] if len(out) == 1 else out


def _pair(value, name) -> Tuple[float, float]:
    if isinstance(value, (int, float)):
        return (-abs(value), abs(value))
    if len(value) != 2:
        raise ValueError(f'{name} must be a number or a (min, max) pair, got {value!r}')
    return tuple(value)


class RandomAffineAndResize(Transform):
    """Random rotation, translation, scale and shear, then resize and centre crop to `size`.

    size:      (h, w) or an int for a square output.
    degrees:   rotation range, counter-clockwise, in degrees.
    translate: (fx, fy), the maximal shift as a fraction of the image after fitting it to `size`.
    scale:     zoom range relative to the scale at which the image just covers `size`
               (below 1 the image shrinks and `fill` shows around it).
    shear:     x shear range in degrees, or (xmin, xmax, ymin, ymax).

    Strong shrinking first reduces the images by an integer factor with a box filter (not for
    NEAREST), so one or two pixel wide hair strands do not alias away.
    """

    def __init__(self, size, degrees, translate, scale, shear,
                 interpolation: InterpolationMode = InterpolationMode.BILINEAR, fill: Union[int, tuple] = 0):
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        self.degrees = _pair(degrees, 'degrees')
        self.translate = tuple(translate)
        self.scale = tuple(scale)
        four = not isinstance(shear, (int, float)) and len(shear) == 4
        self.shear = tuple(shear) if four else (*_pair(shear, 'shear'), 0.0, 0.0)
        if interpolation not in _PIL_RESAMPLE:
            raise ValueError(f'interpolation must be one of {list(_PIL_RESAMPLE)}, got {interpolation!r}')
        self.interpolation = interpolation
        self.fill = fill

    def sample(self, img, generator):
        w, h = img.size
        out_h, out_w = self.size
        cover = max(out_w / w, out_h / h)
        return dict(
            angle=uniform(*self.degrees, generator),
            shift=(uniform(-1, 1, generator) * self.translate[0] * cover * w,
                   uniform(-1, 1, generator) * self.translate[1] * cover * h),
            scale=uniform(*self.scale, generator) * cover,
            shear=(math.radians(uniform(*self.shear[:2], generator)),
                   math.radians(uniform(*self.shear[2:], generator))),
            size=(w, h),
        )

    def apply(self, img, p):
        if img.size != p['size']:
            raise ValueError(f'paired images differ in size: {img.size} and {p["size"]}')
        # Forward map, input pixel -> output pixel: out = c_out + shift + A (in - c_in).
        angle = math.radians(p['angle'])
        cos, sin = math.cos(angle), math.sin(angle)
        tx, ty = math.tan(p['shear'][0]), math.tan(p['shear'][1])
        shear = (1 + tx * ty, tx, ty, 1)                     # x shear after y shear
        rot = (cos, sin, -sin, cos)                          # counter-clockwise on screen (y down)
        a = [p['scale'] * v for v in _matmul(rot, shear)]
        inv = _inverse(a)

        # Nearest neighbour must not invent values (label masks), so it skips the box-filter reduction.
        reduce = 1 if self.interpolation == InterpolationMode.NEAREST else max(1, int(1 / p['scale']))
        if reduce > 1:
            img = img.reduce(reduce)
        w, h = p['size']
        out_h, out_w = self.size
        cx, cy = out_w / 2 + p['shift'][0], out_h / 2 + p['shift'][1]
        # PIL wants the inverse: output pixel -> input pixel (in the reduced image's coordinates).
        data = (inv[0] / reduce, inv[1] / reduce, (w / 2 - inv[0] * cx - inv[1] * cy) / reduce,
                inv[2] / reduce, inv[3] / reduce, (h / 2 - inv[2] * cx - inv[3] * cy) / reduce)
        return img.transform((out_w, out_h), Image.AFFINE, data,
                             resample=_PIL_RESAMPLE[self.interpolation], fillcolor=self.fill)


def _matmul(m, n):
    return (m[0] * n[0] + m[1] * n[2], m[0] * n[1] + m[1] * n[3],
            m[2] * n[0] + m[3] * n[2], m[2] * n[1] + m[3] * n[3])


def _inverse(m):
    det = m[0] * m[3] - m[1] * m[2]
    return (m[3] / det, -m[1] / det, -m[2] / det, m[0] / det)


class RandomHorizontalFlip(Transform):
    def __init__(self, p: float = 0.5):
        self.p = p

    def sample(self, img, generator):
        return chance(self.p, generator)

    def apply(self, img, flip):
        return img.transpose(Image.FLIP_LEFT_RIGHT) if flip else img


class RandomBoxBlur(Transform):
    """With probability p, a box blur of radius 0 ~ max_radius (PIL's ImageFilter.BoxBlur)."""

    def __init__(self, p: float, max_radius: int):
        self.p = p
        self.max_radius = max_radius

    def sample(self, img, generator):
        if not chance(self.p, generator):
            return None
        return int(torch.randint(self.max_radius + 1, (1,), generator=generator))

    def apply(self, img, radius):
        return img if radius is None else img.filter(ImageFilter.BoxBlur(radius))


class RandomSharpen(Transform):
    """With probability p, PIL's ImageFilter.SHARPEN."""

    def __init__(self, p: float):
        self.p = p

    def sample(self, img, generator):
        return chance(self.p, generator)

    def apply(self, img, sharpen):
        return img.filter(ImageFilter.SHARPEN) if sharpen else img


class ColorJitter(Transform):
    """torchvision's ColorJitter (same factors, random order) drawing from `generator`; RGB images.

    brightness, contrast, saturation: factors drawn from [max(0, 1 - v), 1 + v].
    hue: shift drawn from [-hue, hue], hue <= 0.5.
    """

    def __init__(self, brightness: float = 0, contrast: float = 0, saturation: float = 0, hue: float = 0):
        if not 0 <= hue <= 0.5:
            raise ValueError(f'hue must lie in [0, 0.5], got {hue}')
        self.brightness, self.contrast, self.saturation, self.hue = brightness, contrast, saturation, hue

    def sample(self, img, generator):
        order = torch.randperm(4, generator=generator).tolist()
        factors = [uniform(max(0, 1 - v), 1 + v, generator)
                   for v in (self.brightness, self.contrast, self.saturation)]
        factors.append(uniform(-self.hue, self.hue, generator))
        return order, factors

    def apply(self, img, params):
        order, factors = params
        adjust = (F.adjust_brightness, F.adjust_contrast, F.adjust_saturation, F.adjust_hue)
        neutral = (1, 1, 1, 0)
        for i in order:
            if factors[i] != neutral[i]:
                img = adjust[i](img, factors[i])
        return img


class ToTensor(Transform):
    """PIL image -> float32 tensor (C, H, W), 0 ~ 1."""

    def apply(self, img, params):
        return F.to_tensor(img)
