"""Matting of images: sources with their clean plates, one pair or folders of them.

Without arguments, mattes the bundled sample captures (samples/) with the bundled demonstration
model (weights/, trained on synthetic data only) and writes the results to a new folder under
output/:

    python inference_images.py

Example with official weights:

    python inference_images.py \\
        --model-type mattingrefine \\
        --model-backbone resnet50 \\
        --model-backbone-scale 0.25 \\
        --model-refine-mode sampling \\
        --model-refine-sample-pixels 80000 \\
        --model-checkpoint pytorch_resnet50.pth \\
        --images-src captures/src \\
        --images-bgr captures/bgr \\
        --output-dir out \\
        --output-types com pha fgr

Sources and clean plates: two files (--src a.jpg --bgr a_plate.jpg), a folder and one plate for all
its images, or two folders searched recursively and paired by relative path without extension
(src/x/1.jpg with bgr/x/1.png); unpaired files are named and skipped. A pair that cannot be read (a
damaged image, a source of another extension, a plate of another size) is named on stderr with why
and skipped; the others are matted, and the run ends with how many were and exit status 1
(--on-error stop ends it at the first instead).

Outputs, each type in its own folder, keeping the source's relative path with the extension .png:
    OUT/com/<name>.png        RGBA: the foreground, with alpha as 4th channel
    OUT/pha/<name>.png        alpha, 8-bit grayscale (lossless)
    OUT/fgr/<name>.png        foreground, RGB
    OUT/err/<name>.png        predicted error, grayscale, at the source's size
    OUT/ref/<name>.png        regions the refiner re-computed (MattingRefine), grayscale
    OUT/composite/<name>.png  with --replacement-background: RGB, the foreground over it

An existing output folder is kept. Existing output files are not replaced unless --overwrite is
given; --skip-existing resumes an interrupted batch. Each file is written under a temporary name and
renamed, so no output is ever half-written. A run holds its output folder (OUT/.bgm-output.lock names
it): a second run into it is refused, the tasks of a --shard job array excepted; two runs without
--output-dir take a new folder each.
"""
import argparse
import os

from common.errors import add_on_error_argument
from common.files import FolderTaken, OutputLock
from common.images import max_image_pixels
from common.memory import retain_freed_memory
from common.shards import parse_shard
from inference.cli import exit_on_user_error
from inference.images import run
from inference.matting import OUTPUT_TYPES
from inference.model import add_model_arguments, default_to_demo_checkpoint

DEFAULT_OUTPUT_TYPES = ['com', 'pha', 'fgr']
REPOSITORY = os.path.dirname(os.path.abspath(__file__))


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=os.path.basename(__file__),
                                     description='Matting of images with their clean plates (BGMv2).',
                                     epilog=__doc__.split('\n\n', 2)[2],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser, checkpoint_required=False)
    group = parser.add_argument_group('input')
    group.add_argument('--src', '--images-src', dest='src', metavar='PATH',
                       help='a source image, or a folder of them (searched recursively); default: the bundled '
                            'samples/src')
    group.add_argument('--bgr', '--images-bgr', dest='bgr', metavar='PATH',
                       help='the clean plate of --src: an image (for one source or all of them) or a folder '
                            'mirroring --src; default: the bundled samples/bgr')
    group.add_argument('--preprocess-alignment', action='store_true',
                       help='warp each plate onto its source (ORB + RANSAC homography) for a camera that moved '
                            'a little; a plate that cannot be aligned is used as it is, with a warning')
    add_on_error_argument(group, items='pairs')
    group = parser.add_argument_group('output')
    group.add_argument('--output-dir', metavar='DIR',
                       help='created if missing; an existing one is kept and written into. Default: a new '
                            'folder output/<name of --src>[-N], never an existing one')
    group.add_argument('--output-types', nargs='+', choices=OUTPUT_TYPES, default=DEFAULT_OUTPUT_TYPES,
                       help=f"default: {' '.join(DEFAULT_OUTPUT_TYPES)}")
    group.add_argument('--replacement-background', metavar='COLOUR|IMAGE',
                       help="also write OUT/composite/: the foreground over this colour ('white', '#78ff9b', "
                            "'120,255,155') or image (scaled to cover, centre-cropped)")
    existing = group.add_mutually_exclusive_group()
    existing.add_argument('--skip-existing', action='store_true',
                          help='keep existing output files and compute only the missing ones')
    existing.add_argument('--overwrite', '-y', action='store_true', help='replace existing output files')
    group.add_argument('--shard', metavar='I/N',
                       help="do only shard I of N of the pairs (1 <= I <= N), for one task of a job array; 'auto' "
                            "takes I and N from Slurm's SLURM_ARRAY_TASK_ID / _MIN / _COUNT. A pair's shard "
                            "depends on its name only; combine with --skip-existing so a requeued task resumes")
    group = parser.add_argument_group('performance')
    group.add_argument('--queue-size', type=int, default=4,
                       help='images read ahead and waiting to be written, per stage (default 4)')
    group.add_argument('--disable-progress', action='store_true')
    return parser


def apply_defaults(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """The bundled samples and demonstration model where the command line names none, and a new
    output folder where it names none."""
    if (args.src is None) != (args.bgr is None):
        parser.error('give both --src and --bgr, or neither (to matte the bundled samples)')
    name = None
    if args.src is None:
        args.src, args.bgr = os.path.join(REPOSITORY, 'samples', 'src'), os.path.join(REPOSITORY, 'samples', 'bgr')
        name = 'samples'
    default_to_demo_checkpoint(args, parser)
    if args.shard and args.output_dir is None:
        parser.error('--shard needs --output-dir: every task of the job writes into the same folder')
    args.default_output_base = None
    if args.output_dir is None:
        name = name or os.path.splitext(os.path.basename(os.path.normpath(args.src)))[0] or 'images'
        args.default_output_base = os.path.join('output', name)
        args.output_dir = free_folder(args.default_output_base)


def free_folder(base: str) -> str:
    """BASE, or BASE-2, BASE-3, ...: the first that does not exist."""
    folder, n = base, 1
    while os.path.lexists(folder):
        n += 1
        folder = f'{base}-{n}'
    return folder


def run_locked(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """`run` holding the lock of --output-dir (common.files.OutputLock): a second run into the same folder
    (the same shard, or all of it) is refused, naming the first, instead of both writing and the second
    silently replacing the first's outputs. Two runs given no --output-dir take a new folder each."""
    shard = parse_shard(args.shard)
    max_image_pixels()  # a malformed BGM_MAX_IMAGE_PIXELS ends the run here, not as a skip of every file
    while True:
        lock = OutputLock(args.output_dir, shard, new=args.default_output_base is not None)
        try:
            lock.acquire()
            break
        except FolderTaken:  # another run made the default folder first: the next one
            args.output_dir = free_folder(args.default_output_base)
    try:
        run(args, parser)
    finally:
        lock.release()


def main(argv=None) -> None:
    parser = get_args_parser()
    args = parser.parse_args(argv)
    apply_defaults(args, parser)
    exit_on_user_error(parser.prog, lambda: run_locked(args, parser))


if __name__ == '__main__':
    retain_freed_memory()  # the same large tensors every frame: no fresh pages for each
    main()
