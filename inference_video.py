"""Matting of a video or an image sequence with its clean plate.

Example:

    python inference_video.py \\
        --model-type mattingrefine \\
        --model-backbone resnet50 \\
        --model-backbone-scale 0.25 \\
        --model-refine-mode sampling \\
        --model-refine-sample-pixels 80000 \\
        --model-checkpoint pytorch_resnet50.pth \\
        --video-src input.mp4 \\
        --video-bgr plate.png \\
        --video-resize 1920 1080 \\
        --output-dir out \\
        --output-types com pha fgr \\
        --video-target-bgr beach.mp4

Without --model-checkpoint, the bundled demonstration model (MobileNetV2, trained on synthetic data)
is used.

From Python, the same with a loaded model (or a TorchScript module):

    from inference_video import convert_video
    convert_video(model, 'input.mp4', 'out', clean_plate='plate.png', output_types=('com', 'pha'))

Input: a video file, or a folder of frames (--frame-rate, default 30). Clean plate: an image, a
video (frame by frame), or --bgr-first-frames N: the median of the first N frames, shot before the
subject enters. Rotation metadata is applied: frames are matted and written upright.

Outputs, --output-format video (H.264 yuv420p with the source's exact timestamps, colour description
and pixel shape, and its audio tracks unless --no-audio):
    OUT/com.mp4  the foreground over --replacement-background (default the original's green)
    OUT/pha.mp4, OUT/fgr.mp4, OUT/err.mp4, OUT/ref.mp4
--output-format png (image sequences named after the source frames, 00000.png... for a video):
    OUT/com/ RGBA PNG, OUT/pha/ OUT/err/ OUT/ref/ grayscale, OUT/fgr/ RGB;
    OUT/composite/ RGB over --replacement-background when one is given.

A run holds its output folder (OUT/.bgm-output.lock names it): a second run into it is refused, the
tasks of a --shard job array excepted. Existing outputs (a video file, or a non-empty frame folder)
are not replaced unless --overwrite is given; videos and frame folders are written under a hidden
temporary name and put in place once complete, so a replaced frame folder keeps no frame of an
earlier run.
"""
import argparse
import os

from common.files import OutputLock
from common.memory import retain_freed_memory
from common.shards import parse_shard
from inference.cli import exit_on_user_error, parse_bit_rate, parse_frame_rate
from inference.matting import DEFAULT_COMPOSITE_COLOUR, OUTPUT_TYPES
from inference.model import add_model_arguments, default_to_demo_checkpoint
from inference.video import DEFAULT_OUTPUT_TYPES, convert_video, run

__all__ = ['convert_video', 'get_args_parser', 'main']  # convert_video: its import path of earlier versions


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=os.path.basename(__file__),
                                     description='Matting of a video or an image sequence (BGMv2).',
                                     fromfile_prefix_chars='@',
                                     epilog=__doc__.split('\n\n', 2)[2],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser, checkpoint_required=False)
    group = parser.add_argument_group('input')
    group.add_argument('--video-src', '--src', dest='src', required=True, nargs='+', metavar='PATH',
                       help='a video file or a folder of frames; or several, each then written to '
                            'OUTPUT_DIR/<its name>/ (@FILE reads the list from FILE, one per line)')
    plate = group.add_mutually_exclusive_group(required=True)
    plate.add_argument('--video-bgr', '--bgr', dest='bgr', metavar='PATH',
                       help='the clean plate: an image, or a video with one plate per frame; with several '
                            'sources, one plate for all, or a folder holding a plate of the same name for each')
    plate.add_argument('--bgr-first-frames', type=int, default=0, metavar='N',
                       help='take the clean plate from the first N frames (their median), shot before the '
                            'subject enters')
    group.add_argument('--video-resize', type=int, nargs=2, metavar=('W', 'H'),
                       help='resize the input, plate and background to W x H')
    group.add_argument('--frame-rate', type=parse_frame_rate, metavar='FPS',
                       help='frame rate of a folder of frames, e.g. 25 or 30000/1001 (default 30)')
    group.add_argument('--preprocess-alignment', action='store_true',
                       help='align the plate onto every frame (ORB + RANSAC homography); frames where it fails '
                            'use the plate as it is')
    group = parser.add_argument_group('output')
    group.add_argument('--output-dir', required=True, metavar='DIR')
    group.add_argument('--output-types', nargs='+', choices=OUTPUT_TYPES, default=list(DEFAULT_OUTPUT_TYPES),
                       help=f"default: {' '.join(DEFAULT_OUTPUT_TYPES)}")
    group.add_argument('--output-format', choices=['video', 'png', 'image_sequences'], default='video',
                       help="'video': H.264 files; 'png' (or 'image_sequences'): a folder of PNG frames per type")
    group.add_argument('--video-target-bgr', '--replacement-background', dest='replacement_background',
                       metavar='COLOUR|IMAGE|VIDEO',
                       help=f"behind the composite: a colour ('white', '#78ff9b', '120,255,155'), an image, or a "
                            f"video (looped); default {DEFAULT_COMPOSITE_COLOUR} for com.mp4")
    quality = group.add_mutually_exclusive_group()
    quality.add_argument('--bitrate', type=parse_bit_rate, metavar='RATE', help='H.264 bit rate, e.g. 4M or 800k')
    quality.add_argument('--crf', type=float, help='H.264 constant quality, 0 (lossless) to 51; default 18')
    group.add_argument('--yuv444', action='store_true',
                       help='store full-resolution chroma (H.264 High 4:4:4: exact colours and sizes, but many '
                            'players cannot play it); default yuv420p, odd sides padded by one pixel')
    group.add_argument('--no-audio', action='store_true', help="leave the source's audio tracks out of the videos")
    existing = group.add_mutually_exclusive_group()
    existing.add_argument('--overwrite', action='store_true', help='replace existing outputs')
    existing.add_argument('--skip-existing', action='store_true',
                          help='skip the sources whose outputs all exist (with several sources or --shard, to resume)')
    group.add_argument('--shard', metavar='I/N',
                       help="matte only shard I of N of the sources (1 <= I <= N), for one task of a job array; "
                            "'auto' takes I and N from Slurm's SLURM_ARRAY_TASK_ID / _MIN / _COUNT. A source's "
                            "shard depends on its name only")
    group = parser.add_argument_group('performance')
    group.add_argument('--seq-chunk', type=int, default=1, help='frames given to the model at once (default 1)')
    group.add_argument('--queue-size', type=int, default=4,
                       help='chunks read ahead and waiting to be written, per stage (default 4)')
    group.add_argument('--disable-progress', action='store_true')
    return parser


def main(argv=None) -> None:
    parser = get_args_parser()
    args = parser.parse_args(argv)
    for source in args.src:
        if not os.path.exists(source):
            parser.error(f"--video-src {source}: no such file or folder")
    if args.bgr and not os.path.exists(args.bgr):
        parser.error(f"--video-bgr {args.bgr}: no such file or folder")
    if args.bgr and os.path.isdir(args.bgr) and len(args.src) == 1 and not args.shard:
        parser.error(f"--video-bgr {args.bgr} is a folder: give the plate file of --video-src {args.src[0]}")
    if args.bgr_first_frames < 0 or args.seq_chunk < 1 or args.queue_size < 1:
        parser.error('--bgr-first-frames must be positive, --seq-chunk and --queue-size at least 1')
    if args.crf is not None and not 0 <= args.crf <= 51:
        parser.error(f'--crf {args.crf:g}: expected 0 (lossless) to 51')
    default_to_demo_checkpoint(args, parser)
    exit_on_user_error(parser.prog, lambda: run_locked(args, parser))


def run_locked(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """`run` holding the lock of --output-dir (common.files.OutputLock): a second run into the same folder
    (the same shard, or all of it) is refused, naming the first, instead of replacing its outputs."""
    with OutputLock(args.output_dir, parse_shard(args.shard)):
        run(args, parser)


if __name__ == '__main__':
    retain_freed_memory()  # the same large tensors every frame: no fresh pages for each
    main()
