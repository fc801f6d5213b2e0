"""Synthetic matting data: what the tests, CI and the demo use, since no real data set can be fetched.

    python -m dataset.synthetic --out DIR --count 8 --size 320 192 --seed 0

writes, in the layout of the real data sets (8-bit PNG, zero-padded names):

    DIR/fgr/0000.png            foreground colour (RGB), meaningful where alpha > 0
    DIR/pha/0000.png            alpha (grayscale)
    DIR/bgr/0000.png            backgrounds (RGB)
    DIR/captures/src/0000.png   a capture: a foreground composited over a scene
    DIR/captures/bgr/0000.png   its clean plate: the scene with its own noise, an exposure change
                                and a camera shift of a few pixels, as real captures have
    DIR/captures/pha/0000.png   the capture's true alpha ...
    DIR/captures/fgr/0000.png   ... and foreground, to score an inference run against

Foregrounds have what matting is about: a body with soft edges, hair strands one or two pixels wide,
a semi-transparent scarf, holes (a loop of the arm, a gap in the body), textured clothes whose
colours are sometimes taken from the background. Backgrounds mix gradients, blotches, furniture-like
structures, textures and grain. Sample i depends only on (seed, i): the same seed gives the same
files, and a larger count extends a smaller one. Only numpy and OpenCV are needed, so it is fast.
"""
import argparse
import functools
import json
import math
import sys
from pathlib import Path
from typing import Optional, Tuple

import cv2
import numpy as np

from common.files import atomic_write

_TRAIN, _CAPTURE = 0, 1   # random streams of one sample index
CAPTURE_MARGIN = 4        # the plate's camera shift is at most this many pixels per axis


# ---------------------------------------------------------------- drawing helpers, float images 0 ~ 1

def _rng(seed: int, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, index, stream])


def _color(rng, low=0.0, high=1.0) -> np.ndarray:
    return rng.uniform(low, high, 3).astype(np.float32)


@functools.lru_cache(maxsize=8)
def _coords(h, w):
    """Pixel x and y coordinates, (h, w) each; cached and read-only."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    x.flags.writeable = y.flags.writeable = False
    return x, y


def _value_noise(rng, h, w, cells, channels=3) -> np.ndarray:
    """Smooth random blotches: a coarse random grid upsampled with bicubic interpolation."""
    gh, gw = max(2, int(cells * h / max(h, w)) + 1), max(2, int(cells * w / max(h, w)) + 1)
    grid = rng.random((gh, gw, channels)).astype(np.float32)
    out = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(out.reshape(h, w, channels), 0, 1)


def _gradient(rng, h, w, c0, c1) -> np.ndarray:
    x, y = _coords(h, w)
    angle = rng.uniform(0, 2 * math.pi)
    t = x * math.cos(angle) + y * math.sin(angle)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    return c0 + (c1 - c0) * t[..., None]


def _pattern(rng, h, w, c0, c1) -> np.ndarray:
    """Two colours as stripes, checks, blotches, a gradient or flat, with a little shading."""
    kind = rng.integers(5)
    x, y = _coords(h, w)
    period = rng.uniform(4, 24)
    if kind == 0:
        angle = rng.uniform(0, math.pi)
        mix = 0.5 + 0.5 * np.sin((x * math.cos(angle) + y * math.sin(angle)) * 2 * math.pi / period)
    elif kind == 1:
        mix = ((x // period + y // period) % 2).astype(np.float32)
    elif kind == 2:
        mix = _value_noise(rng, h, w, rng.uniform(4, 24), 1)[..., 0]
    elif kind == 3:
        return _gradient(rng, h, w, c0, c1)
    else:
        mix = np.zeros((h, w), np.float32)
    out = c0 + (c1 - c0) * mix[..., None]
    return np.clip(out * (0.85 + 0.3 * _value_noise(rng, h, w, 3, 1)), 0, 1)


def _fill_mask(h, w, draw) -> np.ndarray:
    """A float mask drawn by `draw(canvas)` on an 8-bit canvas with anti-aliased OpenCV calls."""
    canvas = np.zeros((h, w), np.uint8)
    draw(canvas)
    return canvas.astype(np.float32) / 255


def _pts(points) -> np.ndarray:
    # OpenCV takes sub-pixel coordinates as fixed point with `shift` fractional bits.
    return np.round(np.asarray(points, np.float64) * 16).astype(np.int32)


def _ellipse(canvas, center, axes, angle, value=255, thickness=-1):
    cv2.ellipse(canvas, tuple(int(v) for v in _pts(center)), tuple(int(v) for v in _pts(axes)), angle, 0, 360,
                value, thickness, cv2.LINE_AA, 4)


# ---------------------------------------------------------------- backgrounds

def make_background(rng, w: int, h: int) -> np.ndarray:
    """A plausible indoor/outdoor scene: (h, w, 3) float32, 0 ~ 1."""
    img = _gradient(rng, h, w, _color(rng), _color(rng))
    img = img * 0.6 + _value_noise(rng, h, w, rng.uniform(2, 8)) * 0.4
    # Furniture, windows, door frames: flat shapes with hard, anti-aliased edges.
    for _ in range(rng.integers(3, 9)):
        shape = np.zeros((h, w), np.uint8)
        x0, y0 = rng.uniform(-0.2, 1.0) * w, rng.uniform(-0.2, 1.0) * h
        x1, y1 = x0 + rng.uniform(0.1, 0.5) * w, y0 + rng.uniform(0.1, 0.6) * h
        if rng.random() < 0.6:
            cv2.fillPoly(shape, [_pts([(x0, y0), (x1, y0), (x1, y1), (x0, y1)])], 255, cv2.LINE_AA, 4)
        else:
            _ellipse(shape, ((x0 + x1) / 2, (y0 + y1) / 2), ((x1 - x0) / 2, (y1 - y0) / 2), rng.uniform(0, 180))
        x, y, bw, bh = cv2.boundingRect(shape)
        if bw == 0 or bh == 0:
            continue
        window = np.s_[y:y + bh, x:x + bw]   # blend only where the shape is
        alpha = shape[window].astype(np.float32)[..., None] / 255
        fill = _pattern(rng, bh, bw, _color(rng), _color(rng)) if rng.random() < 0.4 else _color(rng)
        img[window] = img[window] * (1 - alpha) + fill * alpha
    for _ in range(rng.integers(2, 8)):
        line = _pts([rng.uniform(0, 1, 2) * (w, h), rng.uniform(0, 1, 2) * (w, h)])
        cv2.line(img, tuple(map(int, line[0])), tuple(map(int, line[1])), _color(rng).tolist(), int(rng.integers(1, 4)), cv2.LINE_AA, 4)
    # A textured floor or wall band.
    top = int(rng.uniform(0.5, 0.9) * h)
    img[top:] = img[top:] * 0.5 + _pattern(rng, h - top, w, _color(rng), _color(rng)) * 0.5
    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 1.5))   # a little defocus
    img = img + rng.normal(0, rng.uniform(0.005, 0.03), img.shape).astype(np.float32)
    return np.clip(img, 0, 1)


# ---------------------------------------------------------------- foregrounds

def _near(rng, scene: np.ndarray, x: float, y: float) -> np.ndarray:
    """A colour close to the scene's around (x, y): the hard case where the subject matches its background."""
    h, w = scene.shape[:2]
    xi, yi = int(np.clip(x, 0, w - 1)), int(np.clip(y, 0, h - 1))
    return np.clip(scene[yi, xi] + rng.uniform(-0.04, 0.04, 3), 0, 1).astype(np.float32)


def _hair_strands(rng, h, w, center, axes, count) -> np.ndarray:
    """Curved strands one or two pixels wide growing out of the hair's outline, as a float alpha mask."""
    canvas = np.zeros((h, w), np.uint8)
    for _ in range(count):
        theta = rng.uniform(math.pi * 0.95, math.pi * 2.05)     # the upper half and the sides
        start = np.array([center[0] + axes[0] * math.cos(theta) * 0.95,
                          center[1] + axes[1] * math.sin(theta) * 0.95])
        direction = np.array([math.cos(theta), math.sin(theta)]) + rng.normal(0, 0.35, 2)
        direction /= np.linalg.norm(direction) + 1e-6
        length = rng.uniform(0.5, 1.8) * axes[1]
        bend = np.array([-direction[1], direction[0]]) * rng.normal(0, 0.35) * length
        t = np.linspace(0, 1, 12)[:, None]
        control = start + direction * length * 0.5 + bend
        end = start + direction * length + np.array([0, rng.uniform(0, 0.4) * length])  # strands droop
        curve = (1 - t) ** 2 * start + 2 * (1 - t) * t * control + t ** 2 * end
        cv2.polylines(canvas, [_pts(curve)], False, int(rng.integers(140, 256)),
                      1 if rng.random() < 0.75 else 2, cv2.LINE_AA, 4)
    return canvas.astype(np.float32) / 255


def make_foreground(rng, w: int, h: int, scene: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """A person-like subject. Returns fgr (h, w, 3) and pha (h, w), float32, 0 ~ 1.

    scene: (h, w, 3) the background it will be shown over; some clothes take its colours.
    """
    unit = min(h, 1.3 * w)
    r = rng.uniform(0.09, 0.13) * unit                       # head radius
    cx, hy = rng.uniform(0.3, 0.7) * w, rng.uniform(0.22, 0.34) * h
    shoulder_y, half = hy + 1.7 * r, rng.uniform(1.6, 2.3) * r
    bottom_half = half * rng.uniform(0.8, 1.2)
    torso = [(cx - half, shoulder_y), (cx + half, shoulder_y), (cx + bottom_half, h + 2), (cx - bottom_half, h + 2)]
    side = rng.choice([-1, 1])
    loop_center = (np.clip(cx + side * (half + 0.5 * r), 1.3 * r, w - 1.3 * r), shoulder_y + rng.uniform(1.5, 2.5) * r)
    loop_axes = (rng.uniform(0.6, 0.9) * r, rng.uniform(0.9, 1.2) * r)

    def draw_body(canvas):
        cv2.fillPoly(canvas, [_pts(torso)], 255, cv2.LINE_AA, 4)
        for sx in (-1, 1):   # rounded shoulders
            _ellipse(canvas, (cx + sx * (half - 0.6 * r), shoulder_y + 0.5 * r), (0.7 * r, 0.6 * r), 0)
        cv2.fillPoly(canvas, [_pts([(cx - 0.4 * r, hy), (cx + 0.4 * r, hy), (cx + 0.45 * r, shoulder_y + r),
                                    (cx - 0.45 * r, shoulder_y + r)])], 255, cv2.LINE_AA, 4)   # neck
        _ellipse(canvas, (cx, hy), (0.85 * r, 1.05 * r), rng.uniform(-10, 10))                # head
        _ellipse(canvas, loop_center, loop_axes, rng.uniform(-20, 20), 255, max(2, int(0.3 * r)))  # arm loop

    body = _fill_mask(h, w, draw_body)
    gap = _fill_mask(h, w, lambda c: _ellipse(c, (cx - side * rng.uniform(0, 0.5) * half, shoulder_y + 3 * r),
                                              (rng.uniform(0.15, 0.3) * r, rng.uniform(0.3, 0.6) * r), 0))
    body = cv2.GaussianBlur(body * (1 - gap), (0, 0), rng.uniform(0.3, 1.2))   # soft, defocused edges

    # Clothes below the shoulders, skin above; one colour may come from the scene beside the body.
    c0 = _near(rng, scene, cx + side * half * 1.5, shoulder_y + 2 * r) if rng.random() < 0.5 else _color(rng)
    clothes = _pattern(rng, h, w, c0, _color(rng))
    skin = np.array([0.85, 0.65, 0.5], np.float32) * rng.uniform(0.4, 1.1) + rng.uniform(-0.05, 0.05, 3)
    _, y = _coords(h, w)
    above = (y < shoulder_y - 0.2 * r).astype(np.float32)[..., None]
    body_color = np.clip(clothes * (1 - above) + skin * above, 0, 1)

    # Hair: a soft mass over the head plus thin strands of a colour that varies a little.
    hair_center, hair_axes = (cx, hy - 0.2 * r), (1.05 * r, 1.0 * r)
    mass = _fill_mask(h, w, lambda c: _ellipse(c, hair_center, hair_axes, 0))
    mass *= np.clip((hy + 0.1 * r - y) / (0.3 * r), 0, 1)   # covers the top of the head only
    strands = _hair_strands(rng, h, w, hair_center, hair_axes, int(rng.integers(50, 110)))
    hair = np.maximum(cv2.GaussianBlur(mass, (0, 0), 1.0), strands)
    hair_color = np.clip(_color(rng, 0.05, 0.9) * _value_noise(rng, h, w, 12).mean(2, keepdims=True) * 1.3, 0, 1)

    # A semi-transparent scarf from one shoulder out over the background, fading along its length.
    reach = rng.uniform(1.5, 3.0) * r
    scarf_pts = [(cx - side * 0.5 * half, shoulder_y - 0.2 * r), (cx - side * (half + reach), shoulder_y + 0.5 * r),
                 (cx - side * (half + reach), shoulder_y + 2.0 * r), (cx - side * 0.5 * half, shoulder_y + 1.2 * r)]
    scarf = _fill_mask(h, w, lambda c: cv2.fillPoly(c, [_pts(scarf_pts)], 255, cv2.LINE_AA, 4))
    x, _ = _coords(h, w)
    fade = np.clip(1 - np.abs(x - cx) / (half + reach + 1), 0.3, 1)
    scarf = cv2.GaussianBlur(scarf, (0, 0), 1.5) * rng.uniform(0.3, 0.6) * fade
    scarf_color = _color(rng)

    # Stack the layers back to front ('over'): body, scarf, hair.
    pha, premultiplied = np.zeros((h, w), np.float32), np.zeros((h, w, 3), np.float32)
    for alpha, color in ((body, body_color), (scarf, scarf_color), (hair, hair_color)):
        premultiplied = color * alpha[..., None] + premultiplied * (1 - alpha[..., None])
        pha = alpha + pha * (1 - alpha)
    fgr = np.where(pha[..., None] > 1e-4, premultiplied / np.maximum(pha[..., None], 1e-4), body_color)
    return np.clip(fgr, 0, 1).astype(np.float32), np.clip(pha, 0, 1).astype(np.float32)


def composite(fgr: np.ndarray, pha: np.ndarray, bgr: np.ndarray) -> np.ndarray:
    return fgr * pha[..., None] + bgr * (1 - pha[..., None])


# ---------------------------------------------------------------- samples

def training_sample(seed: int, index: int, size: Tuple[int, int]):
    """(fgr, pha, bgr) of training sample `index`; fgr (H, W, 3), pha (H, W), bgr (H, W, 3), float 0 ~ 1."""
    w, h = size
    rng = _rng(seed, index, _TRAIN)
    bgr = make_background(rng, w, h)
    fgr, pha = make_foreground(rng, w, h, bgr)
    return fgr, pha, bgr


def capture_sample(seed: int, index: int, size: Tuple[int, int]):
    """A capture and its clean plate: (src, plate, fgr, pha, shift), images float 0 ~ 1.

    The plate sees the scene `shift` = (dx, dy) pixels away from where the capture saw it, with its
    own exposure and sensor noise; src = fgr * pha + scene * (1 - pha), plus its own noise.
    """
    w, h = size
    m = CAPTURE_MARGIN
    rng = _rng(seed, index, _CAPTURE)
    scene = make_background(rng, w + 2 * m, h + 2 * m)
    behind = scene[m:m + h, m:m + w]
    fgr, pha = make_foreground(rng, w, h, behind)
    dx, dy = 0, 0
    while dx == 0 and dy == 0:
        dx, dy = (int(v) for v in rng.integers(-3, 4, 2))
    plate = scene[m + dy:m + dy + h, m + dx:m + dx + w] * rng.uniform(0.92, 1.08) + rng.uniform(-0.02, 0.02)
    plate = plate + rng.normal(0, rng.uniform(0.003, 0.012), plate.shape)
    src = composite(fgr, pha, behind) + rng.normal(0, rng.uniform(0.002, 0.008), behind.shape)
    return (np.clip(src, 0, 1).astype(np.float32), np.clip(plate, 0, 1).astype(np.float32), fgr, pha, (dx, dy))


# ---------------------------------------------------------------- writing

def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)


def write_png(path: Path, img: np.ndarray):
    """Writes a float image (H, W) or (H, W, 3) RGB, 0 ~ 1, as 8-bit PNG via a temporary name."""
    img = _to_uint8(img)
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode('.png', img, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise OSError(f'could not encode {path}')
    # Under a hidden temporary name (loaders skip it), renamed when complete.
    atomic_write(str(path), lambda temporary: Path(temporary).write_bytes(data.tobytes()))


def generate(out, count: int, size: Tuple[int, int] = (320, 192), seed: int = 0,
             captures: Optional[int] = None, overwrite: bool = False) -> Path:
    """Writes `count` training samples and `captures` (default: count) capture pairs to `out`.

    size: (W, H) of every image. Refuses to write into a non-empty folder unless `overwrite`, which
    replaces files of the same names and deletes nothing.
    """
    out = Path(out)
    w, h = size
    captures = count if captures is None else captures
    if count < 1 or captures < 0:
        raise ValueError(f'count must be >= 1 and captures >= 0, got count={count}, captures={captures}')
    if w < 32 or h < 32:
        raise ValueError(f'size must be at least 32x32, got {w}x{h}')
    if out.exists() and not out.is_dir():
        raise FileExistsError(f'--out {out} exists and is not a folder')
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f'--out {out} is not empty; choose a new folder or pass --overwrite '
                              f'(files of the same names are replaced, nothing is deleted)')
    folders = {name: out / name for name in ('fgr', 'pha', 'bgr', 'captures/src', 'captures/bgr',
                                             'captures/pha', 'captures/fgr')}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    digits = max(4, len(str(max(count, captures) - 1)))

    for i in range(count):
        name = f'{i:0{digits}d}.png'
        fgr, pha, bgr = training_sample(seed, i, (w, h))
        write_png(folders['fgr'] / name, fgr)
        write_png(folders['pha'] / name, pha)
        write_png(folders['bgr'] / name, bgr)
    for i in range(captures):
        name = f'{i:0{digits}d}.png'
        src, plate, fgr, pha, _ = capture_sample(seed, i, (w, h))
        write_png(folders['captures/src'] / name, src)
        write_png(folders['captures/bgr'] / name, plate)
        write_png(folders['captures/pha'] / name, pha)
        write_png(folders['captures/fgr'] / name, fgr)
    info = dict(count=count, captures=captures, size=[w, h], seed=seed)
    (out / 'synthetic.json').write_text(json.dumps(info, indent=2) + '\n')
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='python -m dataset.synthetic', description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', required=True, type=Path, help='output folder (new or empty)')
    parser.add_argument('--count', type=int, default=16, help='training samples (fgr, pha, bgr)')
    parser.add_argument('--size', type=int, nargs=2, default=(320, 192), metavar=('W', 'H'))
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--captures', type=int, default=None, help='capture pairs (default: --count)')
    parser.add_argument('--overwrite', action='store_true', help='write into a non-empty folder')
    args = parser.parse_args(argv)
    try:
        generate(args.out, args.count, tuple(args.size), args.seed, args.captures, args.overwrite)
    except (FileExistsError, ValueError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    print(f'wrote {args.count} samples and {args.count if args.captures is None else args.captures} '
          f'capture pairs to {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
