"""Matting of image pairs, a source and its clean plate each: the work of `inference_images.py` (`run`).

Every output folder is checked before the model loads and made once it loaded; the outputs of each
image are written all or none; a pair is named by its relative path without extension. A pair whose
images cannot be read is skipped, named, and counted in the exit status (`--on-error skip`), or ends
the run (`--on-error stop`).
"""
import argparse
import os
import time

from tqdm import tqdm

from common.errors import Skips, UserError
from common.files import IMAGE_EXTENSIONS, check_folder_can_be_made, is_image_file, stem
from common.images import image_size, open_image
from common.shards import parse_shard

from .cli import InputError, warn
from .files import Pairing, check_not_existing, pair_images, prepare_output_dir
from .matting import COMPOSITE, Matting, Throughput
from .model import load_model_or_exit
from .pipeline import run_pipeline
from .plates import align_plate, check_plate
from .readers import ReplacementBackground, read_image
from .writers import save_images


def output_path(output_dir: str, output_type: str, name: str) -> str:
    return os.path.join(output_dir, output_type, name + '.png')


def list_names(paths, limit=10) -> str:
    more = f', ... ({len(paths) - limit} more)' if len(paths) > limit else ''
    return ', '.join(paths[:limit]) + more


def output_is_complete(path: str, size) -> bool:
    """Whether the PNG at `path` decodes fully at `size` (W, H): an output --skip-existing may keep
    (one cut short by a crash or a full disk is not)."""
    try:
        with open_image(path) as image:
            if image.size != tuple(size):
                return False
            image.load()  # a truncated file raises here (Pillow's LOAD_TRUNCATED_IMAGES is off)
    except (UserError, OSError, ValueError, SyntaxError):
        return False
    return True


def plan(pairs, output_dir: str, output_types, skip_existing: bool, skips: Skips):
    """[(pair, the output types to write)]: all of them, or with skip_existing those missing or
    incomplete (see `output_is_complete`). Checks the sizes of the pairs to do from the image headers,
    before anything is computed; a pair that fails is left to `skips`."""
    todo = []
    for pair in pairs:
        missing = output_types
        if skip_existing:
            existing = [t for t in output_types if os.path.isfile(output_path(output_dir, t, pair.name))]
            size = safe_image_size(pair.src) if existing else None
            done = {t for t in existing if size and output_is_complete(output_path(output_dir, t, pair.name), size)}
            missing = [t for t in output_types if t not in done]
        if missing:
            todo.append((pair, missing))
    checked = []
    for pair, types in todo:
        try:
            src_size, bgr_size = image_size(pair.src), image_size(pair.bgr)
            if src_size != bgr_size:
                raise InputError(f"{pair.src} is {src_size[0]}x{src_size[1]} but its clean plate {pair.bgr} is "
                                 f"{bgr_size[0]}x{bgr_size[1]}: they must have the same size")
        except UserError as error:
            skips.skip(pair.name, error)
            continue
        checked.append((pair, types))
    return checked


def safe_image_size(path: str):
    """(W, H) of the image at `path` from its header, or None when it cannot be read (its pair is
    then redone, and its error named there)."""
    try:
        return image_size(path)
    except UserError:
        return None


def read_pairs(todo, preprocess_alignment: bool, replacement: ReplacementBackground, skips: Skips):
    """Yields (pair, output types to write, src, bgr, background), the arrays (H, W, 3) uint8; a pair
    whose images cannot be read is left to `skips`."""
    for pair, output_types in todo:
        try:
            src, bgr = read_image(pair.src), read_image(pair.bgr)
            if src.shape != bgr.shape:
                raise InputError(f"{pair.src} is {src.shape[1]}x{src.shape[0]} but its clean plate {pair.bgr} "
                                 f"is {bgr.shape[1]}x{bgr.shape[0]}: they must have the same size")
        except UserError as error:
            skips.skip(pair.name, error)
            continue
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

    skips = Skips(args.on_error, warn)
    shard = parse_shard(args.shard)
    pairing = pair_images(args.src, args.bgr)
    if shard:
        name_of = lambda path: os.path.splitext(path)[0]  # noqa: E731  (pairs are named by stem)
        pairing = Pairing(shard.select(pairing.pairs, name=lambda pair: pair.name),
                          shard.select(pairing.unpaired_src, name=name_of),
                          shard.select(pairing.unpaired_bgr, name=name_of))
    # A source of another extension is not listed as an image: it is named, not the plate it leaves alone.
    others = sources_of_other_extensions(args.src, [stem(plate) for plate in pairing.unpaired_bgr])
    skips.stop = skips.stop or len(pairing.pairs) + len(others) == 1  # one pair: its error is the message
    for name, path in others.items():
        skips.skip(name, InputError(f"{path}: {os.path.splitext(path)[1] or 'no extension'} is not an image "
                                    f"extension read here ({', '.join(IMAGE_EXTENSIONS)}); rename it if it is "
                                    "an image"))
    pairing = pairing._replace(unpaired_bgr=[plate for plate in pairing.unpaired_bgr if stem(plate) not in others])
    if pairing.unpaired_src:
        warn(f"{len(pairing.unpaired_src)} source image(s) in {args.src} have no clean plate in {args.bgr} "
             f"and are skipped: {list_names(pairing.unpaired_src)}")
    if pairing.unpaired_bgr:
        warn(f"{len(pairing.unpaired_bgr)} clean plate(s) in {args.bgr} have no source image: "
             f"{list_names(pairing.unpaired_bgr)}")
    if not pairing.pairs:
        if shard and not skips:
            print(f"shard {shard}: no image pairs fall in this shard; nothing to do")
            return
        skips.finish(len(skips), 'image pairs matted')
        raise InputError(f"no image of --src {args.src} has a clean plate in --bgr {args.bgr} "
                         "(they are paired by relative path without extension)")
    if shard:
        print(f"shard {shard}: {len(pairing.pairs)} image pair(s)")

    todo = plan(pairing.pairs, args.output_dir, output_types, args.skip_existing, skips)
    total = len(todo) + len(skips)  # the pairs to matte: --skip-existing leaves out those done
    # Every folder an output goes to is checked before the model loads, and made only once it loaded:
    # a run that fails early leaves nothing behind, and none fails after some outputs were written.
    folders = output_folders(args.output_dir, todo)
    check_folder_can_be_made(args.output_dir)
    for folder in folders:
        check_folder_can_be_made(folder, option='output folder')
    if not args.overwrite and not args.skip_existing:  # with it, those to write are missing or incomplete
        check_not_existing((output_path(args.output_dir, t, pair.name) for pair, types in todo for t in types),
                           'pass --skip-existing to keep existing outputs and do the rest, or --overwrite to '
                           'replace them')
    done_before = len(pairing.pairs) + len(others) - total
    if done_before:
        print(f"{done_before} image(s) already done, skipped")
    if not todo:
        skips.finish(total, 'image pairs matted')
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
        run_pipeline(read_pairs(todo, args.preprocess_alignment, replacement, skips), compute,
                     {'images': save_images}, args.queue_size)
    finally:
        progress.close()
    throughput = Throughput(matting.frames, time.perf_counter() - start, matting.model_seconds)
    print(f"{matting.frames} image(s) written to {args.output_dir}; {throughput}")
    skips.finish(total, 'image pairs matted')


def sources_of_other_extensions(src: str, names) -> dict:
    """{name: path} of the files in folder `src` whose name without extension is one of `names` but
    whose extension is not an image's (`common.files.IMAGE_EXTENSIONS`): sources that are not listed."""
    wanted, found = set(names), {}
    if not wanted or not os.path.isdir(src):
        return found
    for root, dirs, files in os.walk(src, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith('.')]
        for file in files:
            relative = os.path.relpath(os.path.join(root, file), src).replace(os.sep, '/')
            if not file.startswith('.') and not is_image_file(file) and stem(relative) in wanted:
                found.setdefault(stem(relative), os.path.join(src, relative))
    return found


def output_folders(output_dir: str, todo) -> list:
    """The folders the outputs of `todo` go to, parents before their sub-folders."""
    folders = {os.path.dirname(output_path(output_dir, t, pair.name)) for pair, types in todo for t in types}
    return sorted(folders, key=lambda folder: (folder.count(os.sep), folder))
