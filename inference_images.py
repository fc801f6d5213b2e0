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
(src/x/1.jpg with bgr/x/1.png); unpaired files are named and skipped.

Outputs, each type in its own folder, keeping the source's relative path with the extension .png:
    OUT/com/<name>.png        RGBA: the foreground, with alpha as 4th channel
    OUT/pha/<name>.png        alpha, 8-bit grayscale (lossless)
    OUT/fgr/<name>.png        foreground, RGB
    OUT/err/<name>.png        predicted error, grayscale, at the source's size
    OUT/ref/<name>.png        regions the refiner re-computed (MattingRefine), grayscale
    OUT/composite/<name>.png  with --replacement-background: RGB, the foreground over it

An existing output folder is kept. Existing output files are not replaced unless --overwrite is
given; --skip-existing resumes an interrupted batch. Each file is written under a temporary name
and renamed, so no output is ever half-written.
"""
import argparse
import os
import time

from tqdm import tqdm

from common.files import check_folder_can_be_made
from common.shards import parse_shard
from inference_utils import (COMPOSITE, OUTPUT_TYPES, InputError, Matting, Pairing, ReplacementBackground, Throughput,
                             add_model_arguments, align_plate, check_not_existing, default_to_demo_checkpoint,
                             check_plate, exit_on_user_error, image_size, load_model_or_exit, pair_images,
                             prepare_output_dir, read_image, run_pipeline, save_images, warn)

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


def output_path(output_dir: str, output_type: str, name: str) -> str:
    return os.path.join(output_dir, output_type, name + '.png')


def list_names(paths, limit=10) -> str:
    more = f', ... ({len(paths) - limit} more)' if len(paths) > limit else ''
    return ', '.join(paths[:limit]) + more


def plan(pairs, output_dir: str, output_types, skip_existing: bool):
    """[(pair, the output types to write)]: all of them, or with skip_existing those missing. Checks
    the sizes of the pairs to do from the image headers, before anything is computed."""
    todo = []
    for pair in pairs:
        missing = [t for t in output_types
                   if not (skip_existing and os.path.exists(output_path(output_dir, t, pair.name)))]
        if missing:
            todo.append((pair, missing))
    for pair, _ in todo:
        src_size, bgr_size = image_size(pair.src), image_size(pair.bgr)
        if src_size != bgr_size:
            raise InputError(f"{pair.src} is {src_size[0]}x{src_size[1]} but its clean plate {pair.bgr} is "
                             f"{bgr_size[0]}x{bgr_size[1]}: they must have the same size")
    return todo


def read_pairs(todo, preprocess_alignment: bool, replacement: ReplacementBackground):
    """Yields (pair, output types to write, src, bgr, background), the arrays (H, W, 3) uint8."""
    for pair, output_types in todo:
        src, bgr = read_image(pair.src), read_image(pair.bgr)
        if src.shape != bgr.shape:
            raise InputError(f"{pair.src} is {src.shape[1]}x{src.shape[0]} but its clean plate {pair.bgr} is "
                             f"{bgr.shape[1]}x{bgr.shape[0]}: they must have the same size")
        if preprocess_alignment:
            alignment = align_plate(src, bgr)
            if alignment.failure:
                warn(f"{pair.bgr}: not aligned, {alignment.failure}; the plate is used as it is")
            bgr = alignment.plate
        problem = check_plate(src, bgr)
        if problem:
            warn(f"{pair.src}: {problem}")
        background = replacement.frame((src.shape[1], src.shape[0])) if replacement else None
        yield pair, output_types, src, bgr, background


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if args.queue_size < 1:
        parser.error('--queue-size must be at least 1')
    output_types = list(dict.fromkeys(args.output_types))
    replacement = None
    if args.replacement_background:
        replacement = ReplacementBackground(args.replacement_background, allow_video=False)
        output_types.append(COMPOSITE)

    shard = parse_shard(args.shard)
    pairing = pair_images(args.src, args.bgr)
    if shard:
        name_of = lambda path: os.path.splitext(path)[0]  # noqa: E731  (pairs are named by stem)
        pairing = Pairing(shard.select(pairing.pairs, name=lambda pair: pair.name),
                          shard.select(pairing.unpaired_src, name=name_of),
                          shard.select(pairing.unpaired_bgr, name=name_of))
    if pairing.unpaired_src:
        warn(f"{len(pairing.unpaired_src)} source image(s) in {args.src} have no clean plate in {args.bgr} "
             f"and are skipped: {list_names(pairing.unpaired_src)}")
    if pairing.unpaired_bgr:
        warn(f"{len(pairing.unpaired_bgr)} clean plate(s) in {args.bgr} have no source image: "
             f"{list_names(pairing.unpaired_bgr)}")
    if not pairing.pairs:
        if shard:
            print(f"shard {shard}: no image pairs fall in this shard; nothing to do")
            return
        raise InputError(f"no image of --src {args.src} has a clean plate in --bgr {args.bgr} "
                         "(they are paired by relative path without extension)")
    if shard:
        print(f"shard {shard}: {len(pairing.pairs)} image pair(s)")

    todo = plan(pairing.pairs, args.output_dir, output_types, args.skip_existing)
    # Every folder an output goes to is checked before the model loads, and made only once it loaded:
    # a run that fails early leaves nothing behind, and none fails after some outputs were written.
    folders = output_folders(args.output_dir, todo)
    check_folder_can_be_made(args.output_dir)
    for folder in folders:
        check_folder_can_be_made(folder, option='output folder')
    if not args.overwrite:
        check_not_existing((output_path(args.output_dir, t, pair.name) for pair, types in todo for t in types),
                           'pass --skip-existing to keep existing outputs and do the rest, or --overwrite to '
                           'replace them')
    if len(todo) < len(pairing.pairs):
        print(f"{len(pairing.pairs) - len(todo)} image(s) already done, skipped")
    if not todo:
        return

    model, device, dtype = load_model_or_exit(parser, args)
    matting = Matting(model, device, dtype, output_types)
    prepare_output_dir(args.output_dir)
    for folder in folders:
        prepare_output_dir(folder, option='output folder')
    progress = tqdm(total=len(todo), unit='image', disable=args.disable_progress, dynamic_ncols=True)

    def compute(item):
        pair, types, src, bgr, background = item
        images = matting(src[None], bgr, background, label=pair.src)
        progress.update(1)
        return {'images': [(output_path(args.output_dir, t, pair.name), images[t][0]) for t in types]}

    # One writer for all the outputs of an image, written all or none: a run stopped by an error
    # leaves each image with every output or with none.
    start = time.perf_counter()
    try:
        run_pipeline(read_pairs(todo, args.preprocess_alignment, replacement), compute, {'images': save_images},
                     args.queue_size)
    finally:
        progress.close()
    throughput = Throughput(matting.frames, time.perf_counter() - start, matting.model_seconds)
    print(f"{len(todo)} image(s) written to {args.output_dir}; {throughput}")


def output_folders(output_dir: str, todo) -> list:
    """The folders the outputs of `todo` go to, parents before their sub-folders."""
    folders = {os.path.dirname(output_path(output_dir, t, pair.name)) for pair, types in todo for t in types}
    return sorted(folders, key=lambda folder: (folder.count(os.sep), folder))


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
    if args.output_dir is None:
        name = name or os.path.splitext(os.path.basename(os.path.normpath(args.src)))[0] or 'images'
        base = os.path.join('output', name)
        args.output_dir, n = base, 1
        while os.path.lexists(args.output_dir):
            n += 1
            args.output_dir = f'{base}-{n}'


def main(argv=None) -> None:
    parser = get_args_parser()
    args = parser.parse_args(argv)
    apply_defaults(args, parser)
    exit_on_user_error(parser.prog, lambda: run(args, parser))


if __name__ == '__main__':
    main()
