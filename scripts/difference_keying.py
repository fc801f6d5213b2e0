"""Classical difference keying, the baseline the bundled model is measured against.

alpha = clip((|src - plate| - low) / (high - low), 0, 1), with |.| the Euclidean RGB distance after a
Gaussian blur of sigma `blur` (to quiet sensor noise). low, high and blur are tuned by grid search
for the lowest alpha MSE on capture pairs with ground truth (e.g. the training seed), then applied to
other pairs, whose alphas are written as 8-bit PNGs in the layout inference_images.py uses.

    python -m scripts.difference_keying --tune data/train/captures --src samples/heldout/src \
        --bgr samples/heldout/bgr --out output/keying
"""
import argparse
import itertools
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from common.files import atomic_write

LOWS = np.linspace(0.0, 0.3, 16)
SPANS = np.linspace(0.02, 0.6, 30)
BLURS = (0.0, 1.0, 2.0)


def read(path: Path, gray: bool = False) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE if gray else cv2.IMREAD_COLOR)
    if image is None:
        raise SystemExit(f'cannot read image {path}')
    return image.astype(np.float32) / 255


def distance(src: np.ndarray, bgr: np.ndarray, blur: float) -> np.ndarray:
    if blur > 0:
        src, bgr = cv2.GaussianBlur(src, (0, 0), blur), cv2.GaussianBlur(bgr, (0, 0), blur)
    return np.sqrt(((src - bgr) ** 2).sum(axis=2))


def key(dist: np.ndarray, low: float, high: float) -> np.ndarray:
    return np.clip((dist - low) / (high - low), 0, 1)


def tune(folder: Path):
    """Grid search of (low, high, blur) for the lowest mean alpha MSE over folder/{src,bgr,pha}."""
    names = sorted(p.name for p in (folder / 'pha').iterdir())
    if not names:
        raise SystemExit(f'no ground truth in {folder / "pha"}')
    best = (np.inf, None)
    for blur in BLURS:
        pairs = [(distance(read(folder / 'src' / n), read(folder / 'bgr' / n), blur), read(folder / 'pha' / n, True))
                 for n in names]
        for low, span in itertools.product(LOWS, SPANS):
            mse = np.mean([np.mean((key(d, low, low + span) - pha) ** 2) for d, pha in pairs])
            if mse < best[0]:
                best = (mse, dict(low=float(low), high=float(low + span), blur=blur))
    return best[1], float(best[0])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--tune', required=True, type=Path, help='folder with src/, bgr/ and pha/ (ground truth)')
    parser.add_argument('--src', required=True, type=Path, help='captures to key')
    parser.add_argument('--bgr', required=True, type=Path, help='their clean plates, same names')
    parser.add_argument('--out', required=True, type=Path, help='writes OUT/pha/<name>.png and OUT/keying.json')
    args = parser.parse_args(argv)

    params, mse = tune(args.tune)
    print(f'tuned on {args.tune}: {params}, alpha MSE {mse:.5f}')
    (args.out / 'pha').mkdir(parents=True, exist_ok=True)
    for src_path in sorted(args.src.iterdir()):
        bgr_path = next(args.bgr.glob(src_path.stem + '.*'), None)
        if bgr_path is None:
            raise SystemExit(f'no clean plate for {src_path} in {args.bgr}')
        pha = key(distance(read(src_path), read(bgr_path), params['blur']), params['low'], params['high'])
        target = args.out / 'pha' / (src_path.stem + '.png')
        atomic_write(str(target), lambda temporary: cv2.imwrite(temporary, np.round(pha * 255).astype(np.uint8)))
    record = {'tuned_on': str(args.tune), 'alpha_mse_on_tuning_set': mse, **params}
    atomic_write(str(args.out / 'keying.json'),
                 lambda temporary: Path(temporary).write_text(json.dumps(record, indent=2)))


if __name__ == '__main__':
    sys.exit(main())
