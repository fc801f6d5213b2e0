"""Matting of videos and image sequences: `convert_video` for one clip (decoding, the model and encoding
at the same time), and the work of `inference_video.py` over one or several clips (`run`).

    from inference.video import convert_video
    convert_video(model, 'input.mp4', 'out', clean_plate='plate.png', output_types=('com', 'pha'))
"""
import argparse
import contextlib
import itertools
import os
import time
from fractions import Fraction
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import av
import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from common.devices import cudnn_autotuning
from common.files import is_image_file, list_images, names_by_stem
from common.shards import Shard, parse_shard

from .cli import InputError, parse_size, warn
from .audio import open_media
from .colour import output_colour
from .files import check_not_existing, prepare_output_dir
from .matting import COMPOSITE, DEFAULT_COMPOSITE_COLOUR, OUTPUT_TYPES, Matting, Throughput, model_device_dtype
from .model import load_model_or_exit
from .pipeline import run_pipeline
from .plates import PlateWatch, align_plate, median_plate
from .readers import ReplacementBackground, VideoReader, open_clip, read_image
from .writers import ImageSequenceWriter, VideoWriter


DEFAULT_OUTPUT_TYPES = ('com', 'pha', 'fgr')
OUTPUT_FORMATS = ('video', 'png')


class Chunk(NamedTuple):
    src: np.ndarray                   # (T, H, W, 3) uint8 source frames
    bgr: np.ndarray                   # (T, H, W, 3) uint8 plates, or (H, W, 3) for one static plate
    background: Optional[np.ndarray]  # (T, H, W, 3), (H, W, 3) or (1, 1, 3) uint8; None without composite
    pts: List[int]                    # presentation times, in the source's time base
    names: List[str]                  # frame names, for image sequences


def convert_video(model: nn.Module,
                  input_source: str,
                  output_dir: str,
                  clean_plate: Optional[str] = None,
                  clean_plate_frames: int = 0,
                  replacement_background: Optional[str] = None,
                  output_types: Sequence[str] = DEFAULT_OUTPUT_TYPES,
                  output_format: str = 'video',
                  input_resize: Optional[Tuple[int, int]] = None,
                  frame_rate: Optional[Fraction] = None,
                  preprocess_alignment: bool = False,
                  bit_rate: Optional[int] = None,
                  crf: Optional[float] = None,
                  yuv444: bool = False,
                  audio: bool = True,
                  seq_chunk: int = 1,
                  queue_size: int = 4,
                  overwrite: bool = False,
                  progress: bool = True,
                  device: Optional[torch.device] = None,
                  dtype: Optional[torch.dtype] = None) -> Throughput:
    """Mattes a clip: decoding, the model and encoding run at the same time (see `run_pipeline`).

    Args:
        model: MattingBase or MattingRefine, or a TorchScript module of one, in eval mode.
        input_source: a video file, or a folder of frames.
        output_dir: where the outputs go (created if missing; nothing else in it is touched).
        clean_plate: an image, or a video giving the plate of each frame.
        clean_plate_frames: instead of clean_plate, the median of the first N input frames (the
            subject enters later); those frames are matted too.
        replacement_background: a colour, an image or a video (looped) behind the composite: `com`
            in video format, OUT/composite/ in png format.
        output_types: from 'com', 'pha', 'fgr', 'err', 'ref'.
        output_format: 'video' (OUT/<type>.mp4, H.264) or 'png' (OUT/<type>/<frame>.png).
        input_resize: (W, H) to resize the input, plate and background frames to.
        frame_rate: the frame rate of an image-sequence input (default 30); a video keeps its own.
        preprocess_alignment: align the plate onto every frame (ORB + RANSAC), for a shaky camera.
        bit_rate, crf: H.264 bits per second, or constant quality (default crf 18); video only.
        yuv444: store full-resolution chroma (H.264 High 4:4:4) instead of yuv420p, which every
            player plays and for which odd sides are padded by a pixel (see `VideoWriter`).
        audio: keep the source's audio tracks in the videos (copied, or re-encoded as AAC where MP4
            players cannot read the codec).
        seq_chunk: frames given to the model at once.
        queue_size: chunks read ahead and waiting to be written, per stage.
        overwrite: replace existing outputs (a video file, or a frame folder with all it holds)
            instead of refusing.
        progress: show a progress bar.
        device, dtype: where and in which precision the model runs; default those of its weights.
    Returns:
        frames done, end-to-end and model-only seconds.
    """
    output_types = list(dict.fromkeys(output_types))
    check_options(output_types, output_format, clean_plate, clean_plate_frames, bit_rate, crf, yuv444, seq_chunk,
                  queue_size)
    model = model.eval()
    if device is None or dtype is None:
        device, dtype = model_device_dtype(model)

    outputs = clip_outputs(output_dir, output_types, output_format, replacement_background)
    if output_format == 'video':
        replacement_background = replacement_background or DEFAULT_COMPOSITE_COLOUR
    matting = Matting(model, device, dtype, list(outputs))

    with contextlib.ExitStack() as stack:
        stack.enter_context(cudnn_autotuning(device))  # every frame of a clip has one size
        source = stack.enter_context(open_clip(input_source, input_resize, frame_rate, check_audio=audio))
        plate, plate_reader = open_plate(clean_plate, source, input_resize)
        if plate_reader:
            stack.enter_context(plate_reader)
        background = None
        if COMPOSITE in outputs:
            background = ReplacementBackground(replacement_background)
            stack.callback(background.close)
        prepare_output_dir(output_dir)
        if not overwrite:
            check_not_existing([path for path in outputs.values() if output_exists(path)],
                               'pass --overwrite to replace it, or choose another --output-dir')

        bar = stack.enter_context(tqdm(total=source.num_frames, unit='frame', disable=not progress, dynamic_ncols=True))
        start = time.perf_counter()
        writers = {}
        try:
            for kind, path in outputs.items():
                writers[kind] = (open_video_writer(path, source, audio, bit_rate, crf, yuv444)
                                 if output_format == 'video' else ImageSequenceWriter(path, overwrite=overwrite))

            def compute(chunk: Chunk):
                images = matting.submit(chunk.src, chunk.bgr, chunk.background,
                                        label=f"{input_source} frames {chunk.names[0]} to {chunk.names[-1]}")
                bar.update(len(chunk.names))
                return {kind: (images[kind], chunk) for kind in writers}

            # A video is timed by the source's pts, an image sequence named after the source's frames.
            frame_keys = 'pts' if output_format == 'video' else 'names'
            # Each writer waits for its own download (on a GPU), not the model thread.
            sinks = {kind: (lambda item, w=w: w.write(item[0].result(), getattr(item[1], frame_keys)))
                     for kind, w in writers.items()}
            chunks = read_chunks(source, plate, plate_reader, clean_plate_frames, background,
                                 preprocess_alignment, seq_chunk)
            run_pipeline(chunks, compute, sinks, queue_size)
            for writer in writers.values():
                writer.close()
        except BaseException:
            for writer in writers.values():
                writer.abort()
            raise
        return Throughput(matting.frames, time.perf_counter() - start, matting.model_seconds)


def open_video_writer(path: str, source, audio: bool, bit_rate: Optional[int], crf: Optional[float],
                      yuv444: bool) -> VideoWriter:
    """An H.264 writer timed, tagged and shaped as `source` (a VideoReader or an ImageSequenceReader) is,
    with the source's audio tracks where it has them and `audio` is asked for."""
    keep_audio = audio and isinstance(source, VideoReader) and source.has_audio
    return VideoWriter(path, source.frame_rate, source.time_base, bit_rate, crf,
                       audio_source=source.path if keep_audio else None,
                       colour=output_colour(source.colour, source.size),
                       sample_aspect_ratio=source.sample_aspect_ratio, yuv444=yuv444)


def clip_outputs(output_dir: str, output_types: Sequence[str], output_format: str,
                 replacement_background: Optional[str]) -> Dict[str, str]:
    """The images the model makes for a clip, and the output each is written to: {kind: path}.
    In video format `com` is the composite over the replacement background (H.264 has no alpha)."""
    if output_format == 'video':
        return {(COMPOSITE if t == 'com' else t): os.path.join(output_dir, f'{t}.mp4') for t in output_types}
    outputs = {t: os.path.join(output_dir, t) for t in output_types}
    if replacement_background:
        outputs[COMPOSITE] = os.path.join(output_dir, COMPOSITE)
    return outputs


def output_exists(path: str) -> bool:
    """A video file, or a frame folder holding something (both are only ever put in place complete)."""
    return os.path.isfile(path) or (os.path.isdir(path) and bool(os.listdir(path)))


def frame_count(path: str) -> Optional[int]:
    """The frames of a video file (the packets of its first video stream, counted without decoding) or
    of a folder of frames; None when it cannot be read."""
    if os.path.isdir(path):
        return len(list_images(path, recursive=False))
    try:
        with open_media(path) as container:
            if not container.streams.video:
                return None
            return sum(1 for packet in container.demux(container.streams.video[0]) if packet.size)
    except (av.FFmpegError, OSError, ValueError):
        return None


def clip_is_done(clip: 'Clip', outputs: Sequence[str]) -> bool:
    """Whether every output of `clip` is there whole, for --skip-existing: as many frames as its source
    (an output cut short by a crash or a full disk, or that does not decode, is redone)."""
    if not all(map(output_exists, outputs)):
        return False
    frames = frame_count(clip.source)
    return bool(frames) and all(frame_count(path) == frames for path in outputs)


class Clip(NamedTuple):
    name: str                   # the source's file name without extension (or its folder's name)
    source: str                 # a video file or a folder of frames
    clean_plate: Optional[str]  # its plate (an image or a video), or None with --bgr-first-frames
    output_dir: str


def plan_clips(sources: Sequence[str], clean_plate: Optional[str], output_dir: str,
               shard: Optional[Shard]) -> List[Clip]:
    """The clips to matte. One source (without --shard) writes into `output_dir` itself; several write
    into `output_dir/<name>/`, each with its plate: `clean_plate` when it is a file (one plate for
    all), or the file of the same name in `clean_plate` when it is a folder."""
    if len(sources) == 1 and shard is None:
        name = os.path.splitext(os.path.basename(os.path.normpath(sources[0])))[0]
        return [Clip(name, sources[0], clean_plate, output_dir)]
    names = {}
    for source in sources:
        name = os.path.splitext(os.path.basename(os.path.normpath(source)))[0]
        if name in names:
            raise InputError(f"--video-src: {names[name]} and {source} would both be written to "
                             f"{os.path.join(output_dir, name)}; rename one of them")
        names[name] = source
    selected = shard.select(names) if shard else list(names)
    plates = {}
    if clean_plate and os.path.isdir(clean_plate):
        plates = names_by_stem(sorted(f for f in os.listdir(clean_plate) if not f.startswith('.')),
                               f'--video-bgr {clean_plate}')
        missing = [name for name in selected if name not in plates]
        if missing:
            raise InputError(f"--video-bgr {clean_plate}: no plate named after {', '.join(missing[:5])}"
                             f"{' ...' if len(missing) > 5 else ''} (one image or video per source, of the same name)")
    return [Clip(name, names[name], os.path.join(clean_plate, plates[name]) if plates else clean_plate,
                 os.path.join(output_dir, name)) for name in selected]


def check_options(output_types, output_format, clean_plate, clean_plate_frames, bit_rate, crf, yuv444, seq_chunk,
                  queue_size) -> None:
    """The option combinations convert_video refuses, with what to do instead."""
    unknown = sorted(set(output_types) - set(OUTPUT_TYPES))
    if unknown or not output_types:
        raise InputError(f"output types must be among {', '.join(OUTPUT_TYPES)}; "
                         f"got {', '.join(output_types) or 'none'}")
    if output_format not in OUTPUT_FORMATS:
        raise InputError(f"output format must be one of {', '.join(OUTPUT_FORMATS)}; got {output_format!r}")
    if bool(clean_plate) == (clean_plate_frames > 0):
        raise InputError("give one clean plate: a file (--video-bgr) or a number of first frames (--bgr-first-frames)")
    if seq_chunk < 1 or queue_size < 1:
        raise InputError(f"seq_chunk and queue_size must be at least 1; got {seq_chunk} and {queue_size}")
    if output_format != 'video' and (bit_rate or crf is not None or yuv444):
        raise InputError("--bitrate, --crf and --yuv444 apply to video outputs only")
    if bit_rate and crf is not None:
        raise InputError("give --bitrate or --crf, not both")


def open_plate(clean_plate: Optional[str], source, input_resize) -> Tuple[Optional[np.ndarray], Optional[VideoReader]]:
    """The clean plate file: an image (H, W, 3) uint8, or a reader of a plate video; checked against the source."""
    if not clean_plate:
        return None, None
    plate = reader = None
    if os.path.isfile(clean_plate) and is_image_file(clean_plate):
        plate = read_image(clean_plate, input_resize)
        size = (plate.shape[1], plate.shape[0])
    elif os.path.isfile(clean_plate):
        reader = VideoReader(clean_plate, input_resize)
        size = reader.size
    else:
        raise InputError(f"--video-bgr {clean_plate}: expected an image or a video file")
    problem = None
    if size != source.size:
        problem = (f"--video-bgr {clean_plate} is {size[0]}x{size[1]} but --video-src {source.path} is "
                   f"{source.size[0]}x{source.size[1]}: they must have the same size (or pass --video-resize W H "
                   "to resize both)")
    elif reader and reader.num_frames and source.num_frames and reader.num_frames < source.num_frames:
        problem = (f"--video-bgr {clean_plate} has {reader.num_frames} frames but --video-src {source.path} has "
                   f"{source.num_frames}: a plate video needs one plate per frame")
    if problem:
        if reader:
            reader.close()
        raise InputError(problem)
    return plate, reader


def read_chunks(source, plate: Optional[np.ndarray], plate_reader: Optional[VideoReader], plate_frames: int,
                background: Optional[ReplacementBackground], preprocess_alignment: bool,
                seq_chunk: int) -> Iterator[Chunk]:
    """The source in chunks of `seq_chunk` frames, each with its clean plate(s) and background(s).

    Runs on the reader thread: decoding, the plate from the first frames, alignment and the plate
    check all happen there, beside the model.
    """
    frames = iter(source)
    if plate_frames:
        head = list(itertools.islice(frames, plate_frames))
        if len(head) < plate_frames:
            warn(f"{source.path} has only {len(head)} frames; the clean plate is their median")
        plate = median_plate([frame.image for frame in head])
        frames = itertools.chain(head, frames)
    plates = iter(plate_reader) if plate_reader else None
    size = source.size
    done, failures, first_failure = 0, 0, None
    watch = PlateWatch(source.frame_rate, first=not plate_frames)
    first_pts = None
    while True:
        batch = list(itertools.islice(frames, seq_chunk))
        if not batch:
            break
        first_pts = batch[0].pts if first_pts is None else first_pts
        src = np.stack([frame.image for frame in batch])
        if plates is not None:
            frame_plates = []
            for _ in batch:
                frame = next(plates, None)
                if frame is None:
                    raise InputError(f"--video-bgr {plate_reader.path} ended after {done + len(frame_plates)} "
                                     f"frames but --video-src {source.path} goes on: a plate video needs one per frame")
                frame_plates.append(frame.image)
            bgr = np.stack(frame_plates)
        else:
            bgr = plate
        if preprocess_alignment:
            plates_of_batch = bgr if bgr.ndim == 4 else [bgr] * len(batch)
            aligned = []
            for image, frame_plate in zip(src, plates_of_batch):
                alignment = align_plate(image, frame_plate)
                if alignment.failure:
                    failures += 1
                    first_failure = first_failure or f"frame {done + len(aligned)}: {alignment.failure}"
                aligned.append(alignment.plate)
            bgr = np.stack(aligned)
        for k, image in enumerate(src):  # the plate through the clip, a frame every few seconds
            problem = watch.check(done + k, image, bgr if bgr.ndim == 3 else bgr[k])
            if problem:
                warn(f"{source.path}, {problem}")
        backs = None
        if background is not None:
            # Each backdrop frame by the source frame's time (a backdrop of another frame rate keeps its speed).
            backs = [background.frame(size, float((frame.pts - first_pts) * source.time_base)) for frame in batch]
            backs = backs[0] if all(b is backs[0] for b in backs) else np.stack(backs)
        yield Chunk(src, bgr, backs, [frame.pts for frame in batch], [frame.name for frame in batch])
        done += len(batch)
    if failures:
        warn(f"alignment failed on {failures} of {done} frames, which use the plate unaligned ({first_failure})")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    output_format = 'png' if args.output_format == 'image_sequences' else args.output_format
    shard = parse_shard(args.shard)
    clips = plan_clips(args.src, args.bgr, args.output_dir, shard)
    if shard:
        print(f"shard {shard}: {len(clips)} of {len(args.src)} source(s)")
    if args.skip_existing:
        todo = [clip for clip in clips if not clip_is_done(clip, list(clip_outputs(
            clip.output_dir, args.output_types, output_format, args.replacement_background).values()))]
        if len(todo) < len(clips):
            print(f"{len(clips) - len(todo)} clip(s) already done, skipped")
        clips = todo
    if not clips:
        return
    resize = parse_size(args.video_resize, '--video-resize')
    model, device, dtype = load_model_or_exit(parser, args)
    for clip in clips:
        throughput = convert_video(
            model, clip.source, clip.output_dir,
            clean_plate=clip.clean_plate,
            clean_plate_frames=args.bgr_first_frames,
            replacement_background=args.replacement_background,
            output_types=args.output_types,
            output_format=output_format,
            input_resize=resize,
            frame_rate=args.frame_rate,
            preprocess_alignment=args.preprocess_alignment,
            bit_rate=args.bitrate,
            crf=args.crf,
            yuv444=args.yuv444,
            audio=not args.no_audio,
            seq_chunk=args.seq_chunk,
            queue_size=args.queue_size,
            overwrite=args.overwrite or args.skip_existing,  # a clip redone: what it has is incomplete
            progress=not args.disable_progress,
            device=device,
            dtype=dtype)
        print(f"{clip.output_dir}: {throughput}")
