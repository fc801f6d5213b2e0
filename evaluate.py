"""Evaluate predicted alpha mattes (and foregrounds) against ground truth.

Files are matched by relative path without extension (`true/0000.jpg` matches `pred/0000.png`).
Writes per_file.csv, summary.csv and summary.json into --out and prints the mean of each metric;
column names carry the reporting scale, e.g. MSE(x1e3) is the MSE times 1000.

  --mode trimap (default)  SAD, MSE, Grad, Conn over the unknown region of a trimap, as the alpha
                           matting benchmark and BGMv2's tables; trimaps come from --trimap or are
                           made from the ground truth as BGMv2 did.
  --mode frame             MAD, MSE, Grad, Conn over the whole frame, as Robust Video Matting.
  --clips                  each folder of frames is a clip (true/<clip>/<frame>.png); adds dtSSD
                           over consecutive frames within each clip.

A file that cannot be read (damaged, of another size than its ground truth, of an extension that
is not an image's) is named on stderr with why and left out; the others are evaluated and written,
and the run ends with how many were and exit status 1 (--on-error stop ends it at the first).

Examples:

    # Images from inference_images.py against a synthetic data set
    python evaluate.py --pred out/pha --true data/synthetic/captures/pha \\
        --pred-fgr out/fgr --true-fgr data/synthetic/captures/fgr --out results/

    # Video clips, whole-frame metrics and dtSSD
    python evaluate.py --pred out/pha --true videomatte/pha --mode frame --clips --out results/
"""

import argparse
import os
import sys

from common.errors import Skips, UserError, add_on_error_argument, exit_with_error
from common.images import max_image_pixels
from evaluation.benchmark import MODES, evaluate_folders, format_summary, write_results


def get_args_parser():
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        epilog='See the module docstring of evaluation/metrics.py for the exact definitions.')
    parser.add_argument('--pred', required=True, metavar='DIR', help='predicted alpha mattes')
    parser.add_argument('--true', required=True, metavar='DIR', help='ground-truth alpha mattes')
    parser.add_argument('--out', required=True, metavar='DIR',
                        help='folder for per_file.csv, summary.csv, summary.json (created if '
                             'missing; other files in it are kept)')
    parser.add_argument('--mode', choices=list(MODES), default='trimap',
                        help='where the alpha metrics are taken: '
                             + '; '.join(f'{mode}: {text}' for mode, text in MODES.items()))
    parser.add_argument('--trimap', metavar='DIR',
                        help='trimaps (0, 128 unknown, 255) named as --true; default: made from '
                             'the ground truth (0.06 < alpha < 0.96, widened 10 px)')
    parser.add_argument('--clips', action='store_true',
                        help='each folder of frames is one clip; adds dtSSD')
    parser.add_argument('--pred-fgr', metavar='DIR', help='predicted RGB foregrounds')
    parser.add_argument('--true-fgr', metavar='DIR',
                        help='ground-truth RGB foregrounds; with --pred-fgr adds FgrMSE')
    add_on_error_argument(parser)
    return parser


def print_progress(done, total, name):
    if sys.stderr.isatty():
        print(f'\r{done}/{total} {name}'.ljust(60), end='\n' if done == total else '',
              file=sys.stderr, flush=True)


def main(argv=None):
    parser = get_args_parser()
    args = parser.parse_args(argv)
    skips = Skips(args.on_error)
    try:
        if os.path.exists(args.out) and not os.path.isdir(args.out):  # before a long run
            raise UserError(f'--out {args.out}: exists and is not a folder')
        max_image_pixels()  # a malformed BGM_MAX_IMAGE_PIXELS ends the run here, not as a skip of every file
        results = evaluate_folders(args.pred, args.true, trimap=args.trimap, mode=args.mode,
                                   clips=args.clips, pred_fgr=args.pred_fgr, true_fgr=args.true_fgr,
                                   progress=print_progress, skips=skips)
        total = len(results.rows) + len(skips)
        if not results.rows:
            skips.finish(total, 'files evaluated')
        paths = write_results(results, args.out)
        print(format_summary(results))
        print('Wrote ' + ', '.join(str(path) for path in paths))
        skips.finish(total, 'files evaluated')
    except (UserError, OSError) as error:
        exit_with_error(parser.prog, error)


if __name__ == '__main__':
    main()
