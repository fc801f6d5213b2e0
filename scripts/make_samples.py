"""Writes the bundled sample captures (samples/src, samples/bgr) with the synthetic generator.

Four capture pairs at 1920x1080, 1280x720, 1024x768 and 640x480, seeds 2021 to 2024, saved as JPEG
(quality 92) to keep the repository small. Running it again reproduces the same pixels.

    python -m scripts.make_samples --out samples
"""
import argparse
import tempfile
from pathlib import Path

from PIL import Image

from dataset.synthetic import generate

SIZES = [(1920, 1080), (1280, 720), (1024, 768), (640, 480)]
FIRST_SEED = 2021


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', type=Path, default=Path('samples'))
    args = parser.parse_args(argv)
    for sub in ('src', 'bgr'):
        (args.out / sub).mkdir(parents=True, exist_ok=True)
    for i, (w, h) in enumerate(SIZES):
        with tempfile.TemporaryDirectory() as tmp:
            generate(tmp, count=1, size=(w, h), seed=FIRST_SEED + i, captures=1)
            for sub in ('src', 'bgr'):
                image = Image.open(Path(tmp) / 'captures' / sub / '0000.png').convert('RGB')
                image.save(args.out / sub / f'capture_{w}x{h}.jpg', quality=92)
    print(f'wrote {len(SIZES)} capture pairs to {args.out}')


if __name__ == '__main__':
    main()
