"""How small a frame the bundled model still finds the subject in, by the size of its base network's
input (the frame scaled by --model-backbone-scale): what `inference_utils.MIN_BASE_INPUT_HEIGHT` is
set from.

Capture pairs with ground truth (from `python -m dataset.synthetic`) are shrunk to each height (area
averaging, aspect kept) and matted at each backbone scale; printed per base-input height: how much
of the true subject the matte holds (sum of min(pred, true) over sum of true alpha), the mean alpha
predicted on the subject's opaque pixels, and the whole-frame alpha MSE.

    python -m dataset.synthetic --out data/heldout --count 1 --captures 8 --size 1280 720 --seed 1
    python -m scripts.base_input_sizes --captures data/heldout/captures
"""
import argparse
import os
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import torch

from inference.model import DEMO_CHECKPOINT
from inference.readers import read_image
from model import MattingBase, MattingRefine, load_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--captures', required=True, type=Path, help='a folder with src/, bgr/ and pha/')
    parser.add_argument('--heights', type=int, nargs='+', default=[72, 96, 120, 144, 180, 240, 360, 480, 720])
    parser.add_argument('--scales', type=float, nargs='+', default=[0.125, 0.25, 0.5, 1.0],
                        help='backbone scales; 1 is MattingBase, the base network on the whole frame')
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    names = sorted(os.listdir(args.captures / 'src'))
    pairs = [(read_image(str(args.captures / 'src' / n)), read_image(str(args.captures / 'bgr' / n)),
              read_image(str(args.captures / 'pha' / n))[:, :, 0] / 255.0) for n in names]
    rows = defaultdict(list)  # base-input height -> (found, on subject, mse)
    for scale in args.scales:
        # MattingBase is the base network on the full frame: scale 1.
        model = MattingBase('mobilenetv2') if scale == 1 else MattingRefine('mobilenetv2', backbone_scale=scale)
        model.eval()
        load_checkpoint(model, DEMO_CHECKPOINT)
        for height in args.heights:
            for src, bgr, true in pairs:
                width = round(src.shape[1] * height / src.shape[0])
                if min(height, width) * scale < 16:  # refused by the backbone
                    continue
                shrink = [cv2.resize(x, (width, height), interpolation=cv2.INTER_AREA) for x in (src, bgr, true)]
                src_t, bgr_t = (torch.from_numpy(x).permute(2, 0, 1)[None].float() / 255 for x in shrink[:2])
                pred = model(src_t, bgr_t)[0][0, 0].numpy()
                true_small = shrink[2]
                found = np.minimum(pred, true_small).sum() / true_small.sum()
                opaque = pred[true_small > 0.9].mean()
                rows[round(height * scale)].append((scale, height, found, opaque, ((pred - true_small) ** 2).mean()))
    print('base input height | frame height x scale (subject found, mean alpha on the opaque subject, MSE)')
    for base in sorted(rows):
        by_run = defaultdict(list)
        for scale, height, *scores in rows[base]:
            by_run[(height, scale)].append(scores)
        cells = [f"{h}x{s:g} ({np.mean([x[0] for x in v]):.2f}, {np.mean([x[1] for x in v]):.2f}, "
                 f"{np.mean([x[2] for x in v]):.3f})" for (h, s), v in sorted(by_run.items())]
        print(f"{base:4d} | " + '; '.join(cells))


if __name__ == '__main__':
    main()
