"""A contact sheet of an inference_images.py run: one row per image, source | alpha | composite.

The composite puts the foreground (OUT/com, RGBA) over a checkerboard, so that both the matte's
edges and its holes show.

    python -m scripts.contact_sheet --src samples/src --results output/samples --output contact_sheet.jpg
"""
import argparse
from pathlib import Path

import numpy as np
from PIL import Image

ROW_HEIGHT = 270


def checkerboard(width: int, height: int, cell: int = 16) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    light = ((x // cell + y // cell) % 2).astype(np.float32)
    return (0.55 + 0.3 * light)[..., None].repeat(3, axis=2)


def row(src_path: Path, results: Path) -> Image.Image:
    name = src_path.stem + '.png'
    src = Image.open(src_path).convert('RGB')
    pha = Image.open(results / 'pha' / name).convert('RGB')
    com = np.asarray(Image.open(results / 'com' / name).convert('RGBA'), dtype=np.float32) / 255
    alpha = com[..., 3:]
    composite = com[..., :3] * alpha + checkerboard(com.shape[1], com.shape[0]) * (1 - alpha)
    composite = Image.fromarray(np.round(composite * 255).astype(np.uint8))
    width = round(src.width * ROW_HEIGHT / src.height)
    tiles = [image.resize((width, ROW_HEIGHT), Image.Resampling.LANCZOS) for image in (src, pha, composite)]
    sheet = Image.new('RGB', (3 * width, ROW_HEIGHT))
    for i, tile in enumerate(tiles):
        sheet.paste(tile, (i * width, 0))
    return sheet


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--src', type=Path, required=True, help='the source images of the run')
    parser.add_argument('--results', type=Path, required=True, help='the --output-dir of inference_images.py')
    parser.add_argument('--output', type=Path, required=True, help='the contact sheet (JPEG or PNG)')
    args = parser.parse_args(argv)
    rows = [row(path, args.results) for path in sorted(args.src.iterdir()) if path.is_file()]
    if not rows:
        raise SystemExit(f'no images in {args.src}')
    sheet = Image.new('RGB', (max(r.width for r in rows), sum(r.height for r in rows)), 'white')
    y = 0
    for r in rows:
        sheet.paste(r, (0, y))
        y += r.height
    sheet.save(args.output, quality=90)
    print(f'wrote {args.output}')


if __name__ == '__main__':
    main()
