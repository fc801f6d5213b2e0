"""What the inference scripts share, one idea in one place.

- model: how a model is described on the command line and loaded, the device and precision it runs
  in (`add_model_arguments`, `load_model`), and `Matting`, which turns uint8 frames into the uint8
  images that are written (`com`, `pha`, `fgr`, `err`, `ref`, `composite`).
- user errors and messages: `InputError`, `warn`.
- files: image and folder listing, pairing of sources with clean plates, safe (atomic) writing.
- clean plates: `check_plate` (does the plate look right?) and `align_plate` (ORB + RANSAC).
- readers: `read_image`, `ImageSequenceReader`, `VideoReader` (PyAV), `Capture` (OpenCV, threaded),
  `ReplacementBackground` (a colour, an image or a looped video).
- writers: `save_image`, `ImageSequenceWriter`, `VideoWriter` (H.264 through PyAV, audio copied).
- pipeline: `run_pipeline` reads, computes and writes at the same time through bounded queues.

Images cross these functions as numpy arrays: (H, W, 3) uint8 RGB, 0 ~ 255, or (T, H, W, C) for a
chunk of T frames; tensors only exist on the model's device, inside `Matting`.
"""
import argparse
import itertools
import math
import os
import queue
import re
import sys
import threading
import time
import uuid
import warnings
from fractions import Fraction
from typing import Callable, Dict, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import av
import cv2
import numpy as np
import torch
from PIL import Image, ImageColor, ImageOps, UnidentifiedImageError
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from common.errors import UserError
from model import CheckpointError, MattingBase, MattingRefine, load_checkpoint, optimize
from model.checkpoint import is_torchscript_archive
from model.model import BACKBONES
from model.refiner import PATCH_CROP_METHODS, PATCH_REPLACE_METHODS, REFINE_MODES

PRECISIONS = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}
# Attributes that TorchScript files exported by export_torchscript.py expose at their top level.
TORCHSCRIPT_SETTINGS = ('backbone_scale', 'refine_mode', 'refine_sample_pixels', 'refine_threshold',
                        'refine_prevent_oversampling')


# --------------------------------------------------------------------------- model

def add_model_arguments(parser: argparse.ArgumentParser, checkpoint_required: bool = True,
                        channels_last: bool = True) -> None:
    """The model options of every inference script (names as in the original scripts).

    `channels_last`: also the options of how the model runs in this process, `--channels-last` and
    `--eager`; the exports, whose files keep neither, leave them out (and load the eager model).
    """
    group = parser.add_argument_group('model')
    group.add_argument('--model-type', choices=['mattingbase', 'mattingrefine'], default='mattingrefine')
    group.add_argument('--model-backbone', choices=BACKBONES, default='mobilenetv2',
                       help='ignored for TorchScript files, which carry their architecture')
    group.add_argument('--model-checkpoint', required=checkpoint_required,
                       help='official BGMv2 .pth, a state_dict or training checkpoint of this project, '
                            'or a TorchScript file from export_torchscript.py')
    group.add_argument('--model-backbone-scale', type=float, default=0.25,
                       help='0.25 for HD, 0.125 for 4K')
    group.add_argument('--model-refine-mode', choices=REFINE_MODES, default='sampling')
    group.add_argument('--model-refine-sample-pixels', type=int, default=80_000,
                       help='80,000 for HD, 320,000 for 4K')
    group.add_argument('--model-refine-threshold', type=float, default=0.7)
    group.add_argument('--model-refine-kernel-size', type=int, choices=[1, 3], default=3)
    group.add_argument('--model-refine-prevent-oversampling', action=argparse.BooleanOptionalAction, default=True,
                       help='sampling mode: skip selected patches whose predicted error is 0')
    group.add_argument('--model-refine-patch-crop-method', choices=PATCH_CROP_METHODS, default='unfold')
    group.add_argument('--model-refine-patch-replace-method', choices=PATCH_REPLACE_METHODS, default='scatter_nd')
    group.add_argument('--device', default='auto', help="'auto' (CUDA when present), 'cpu', 'cuda', 'cuda:1', ...")
    group.add_argument('--precision', choices=sorted(PRECISIONS), default='fp32',
                       help='fp16/bf16 fall back to fp32 with a warning where the device cannot run them')
    if channels_last:
        group.add_argument('--channels-last', action='store_true',
                           help='store the weights channels-last (the frames already are): the same model, '
                                'often faster, e.g. on CPU; the optimized model always is')
        group.add_argument('--eager', action='store_true',
                           help='run the model as written (the reference) instead of its optimized form '
                                '(model.optimize: the same mattes, several times faster)')


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present; an explicit device that does not exist is an error."""
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"--device {name!r} is not a device name (expected auto, cpu, cuda, cuda:N)") from error
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine (use --device cpu or auto)")
    return device


def resolve_precision(name: str, device: torch.device, slow_fallback: bool = True) -> torch.dtype:
    """The dtype to run in: the requested one if a convolution works in it on `device`, else float32.
    With `slow_fallback`, fp16 on CPU (which works, but very slowly) also runs in float32."""
    dtype = PRECISIONS[name]
    if dtype == torch.float32:
        return dtype
    if slow_fallback and dtype == torch.float16 and device.type == 'cpu':
        # It runs, but on slow paths (depthwise convolutions take seconds even at small sizes).
        warnings.warn('--precision fp16 is very slow on CPU in PyTorch; running in fp32 (bf16 is the fast '
                      'reduced precision there)')
        return torch.float32
    try:
        conv = nn.Conv2d(3, 4, 3, padding=1).to(device, dtype)
        with torch.no_grad():
            conv(torch.rand(1, 3, 8, 8, device=device, dtype=dtype))
    except (RuntimeError, TypeError) as error:
        warnings.warn(f"--precision {name} is not supported on {device} ({error}); running in fp32")
        return torch.float32
    return dtype


def build_model(args: argparse.Namespace) -> nn.Module:
    """A MattingBase or MattingRefine as the model options describe, with random weights."""
    if args.model_type == 'mattingbase':
        return MattingBase(args.model_backbone)
    return MattingRefine(args.model_backbone,
                         backbone_scale=args.model_backbone_scale,
                         refine_mode=args.model_refine_mode,
                         refine_sample_pixels=args.model_refine_sample_pixels,
                         refine_threshold=args.model_refine_threshold,
                         refine_kernel_size=args.model_refine_kernel_size,
                         refine_prevent_oversampling=args.model_refine_prevent_oversampling,
                         refine_patch_crop_method=args.model_refine_patch_crop_method,
                         refine_patch_replace_method=args.model_refine_patch_replace_method)


def load_model(args: argparse.Namespace, device: Optional[torch.device] = None, slow_fallback: bool = True,
               optimized: Optional[bool] = None) -> Tuple[nn.Module, torch.device, torch.dtype]:
    """Builds and loads the model the options describe, in eval mode, on its device and dtype
    (`slow_fallback`: see `resolve_precision`; exports turn it off to write the precision asked for).

    `optimized`: whether to return `model.optimize(model)` rather than the model as written; by default
    as the options say (see `is_optimized`). A TorchScript file is loaded as it is; the refine settings
    given on the command line are applied to the attributes it exposes (see export_torchscript.py).

    Returns:
        model: called as `model(src, bgr)`; outputs as MattingBase / MattingRefine.
        device, dtype: where and in which precision inputs must be given.
    """
    device = device or resolve_device(args.device)
    dtype = resolve_precision(args.precision, device, slow_fallback)
    if args.model_checkpoint and is_torchscript_archive(args.model_checkpoint):
        try:
            model = torch.jit.load(args.model_checkpoint, map_location=device)
        except RuntimeError as error:
            raise CheckpointError(f'{args.model_checkpoint}: looks like a TorchScript archive but cannot be '
                                  f'loaded ({str(error).splitlines()[0]})') from None
        settings = dict(backbone_scale=args.model_backbone_scale, refine_mode=args.model_refine_mode,
                        refine_sample_pixels=args.model_refine_sample_pixels,
                        refine_threshold=args.model_refine_threshold,
                        refine_prevent_oversampling=args.model_refine_prevent_oversampling)
        for name, value in settings.items():
            if hasattr(model, name):
                setattr(model, name, value)
    else:
        model = build_model(args)
        if args.model_checkpoint:
            load_checkpoint(model, args.model_checkpoint, map_location='cpu')
    model = model.to(device, dtype).eval()
    if getattr(args, 'channels_last', False):
        model = model.to(memory_format=torch.channels_last)
    if (is_optimized(args) if optimized is None else optimized) and isinstance(model, MattingBase):
        model = optimize(model)
    return model, device, dtype


def is_optimized(args: argparse.Namespace) -> bool:
    """Whether `load_model` runs the model of these options optimized by default: unless --eager is
    given, or the script has no such option (the exports), or the model is a TorchScript file (which
    runs as it is)."""
    return (getattr(args, 'eager', True) is False
            and not (args.model_checkpoint and is_torchscript_archive(args.model_checkpoint)))


def load_model_or_exit(parser: argparse.ArgumentParser, args: argparse.Namespace
                       ) -> Tuple[nn.Module, torch.device, torch.dtype]:
    """`load_model` for a command line: a missing or unusable checkpoint, or a device that does not
    exist, ends the script with an argparse error naming it (exit status 2, no traceback)."""
    try:
        return load_model(args)
    except (ValueError, OSError) as error:  # CheckpointError is a ValueError
        parser.error(str(error))


def model_device_dtype(model: nn.Module) -> Tuple[torch.device, torch.dtype]:
    """Where a model's weights are and in which precision (CPU, float32 for a model without any)."""
    param = next(iter(model.parameters()), None)
    if param is None:
        return torch.device('cpu'), torch.float32
    return param.device, param.dtype


def has_refiner(model: nn.Module) -> bool:
    """True for a MattingRefine or a TorchScript file of one: only they predict refinement regions."""
    return hasattr(model, 'refiner')


# --------------------------------------------------------------------------- user errors and messages

class InputError(UserError):
    """A problem with what the user gave (a file, a folder, an option). The scripts print its message
    and exit with status 1, without a traceback."""


# What the scripts report as a message rather than a traceback: our own checks, the file system
# (missing, unwritable, full disk) and media files FFmpeg cannot read.
USER_ERRORS = (InputError, OSError, av.FFmpegError)


def warn(message: str) -> None:
    """Prints a warning on stderr without breaking a tqdm progress bar."""
    tqdm.write(f"warning: {message}", file=sys.stderr)


def exit_on_user_error(prog: str, run: Callable[[], None]) -> None:
    """Calls `run()`; a user error ends the script with 'prog: error: message' and exit status 1, an
    interruption (Ctrl-C) with status 130. Writers have removed their partial files by then."""
    try:
        run()
    except USER_ERRORS as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; unfinished output files were removed", file=sys.stderr)
        sys.exit(130)


def parse_size(values: Optional[Sequence[int]], option: str) -> Optional[Tuple[int, int]]:
    """(W, H) from a '--option W H' pair, checked to be positive."""
    if values is None:
        return None
    width, height = values
    if width <= 0 or height <= 0:
        raise InputError(f"{option} {width} {height}: expected a positive width and height")
    return int(width), int(height)


def parse_frame_rate(text: str) -> Fraction:
    """argparse type for an exact frame rate: '25', '30000/1001', '29.97'."""
    try:
        rate = Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a frame rate (expected e.g. 25 or 30000/1001)")
    if rate <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: the frame rate must be positive")
    return rate


def parse_bit_rate(text: str) -> int:
    """argparse type for a bit rate in bits per second: '4000000', '4M', '800k'."""
    match = re.fullmatch(r'\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*', text)
    if not match or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a bit rate (expected e.g. 4M, 800k or 4000000)")
    return int(float(match.group(1)) * {'': 1, 'k': 1e3, 'm': 1e6}[match.group(2).lower()])


# --------------------------------------------------------------------------- matting

OUTPUT_TYPES = ('com', 'pha', 'fgr', 'err', 'ref')
COMPOSITE = 'composite'
# The original's green screen colour, behind `com` where a format has no alpha (H.264 video).
DEFAULT_COMPOSITE_COLOUR = '#78ff9b'


class Matting:
    """Runs the model on uint8 frames and makes the uint8 images that the writers store.

    Outputs, each (T, H, W, C) uint8 on the CPU at the source resolution:
        com: C = 4, RGBA: the foreground where alpha > 0, alpha as the 4th channel (as the original).
        pha: C = 1, alpha.
        fgr: C = 3, the foreground colours.
        err: C = 1, the predicted error, upsampled bilinearly from the base network's resolution.
        ref: C = 1, 255 where the refiner re-computed a 4x4 patch (MattingRefine only).
        composite: C = 3, the foreground over the replacement background.

    Inputs go to the model's device and dtype; outputs are converted to float32 there and rounded to
    uint8, so only uint8 data comes back to the CPU. An array given again as the same object (a
    static clean plate or background) is uploaded once.

    Args:
        model: MattingBase or MattingRefine, or a TorchScript file of one (see `load_model`).
        device, dtype: where and in which precision the model runs.
        output_types: the outputs to make: names from OUTPUT_TYPES and 'composite'.
    Attributes:
        frames, model_seconds: frames computed so far and the seconds spent in the model alone.
    """

    def __init__(self, model: nn.Module, device: torch.device, dtype: torch.dtype, output_types: Sequence[str]):
        assert set(output_types) <= set(OUTPUT_TYPES) | {COMPOSITE}, output_types  # the scripts validate names
        if 'ref' in output_types and not has_refiner(model):
            raise InputError("output type 'ref' (refinement regions) needs a MattingRefine model: "
                             "drop it from --output-types or use --model-type mattingrefine")
        self.model, self.device, self.dtype = model, torch.device(device), dtype
        self.output_types = tuple(output_types)
        self.frames, self.model_seconds = 0, 0.0
        self._uploads: Dict[str, Tuple[np.ndarray, torch.Tensor]] = {}

    def upload(self, array: np.ndarray, slot: Optional[str] = None) -> torch.Tensor:
        """(H, W, 3) or (T, H, W, 3) uint8 -> (1 or T, 3, H, W) on the device in the model's dtype, 0 ~ 1.

        With a slot name, the array last uploaded to that slot is reused if `array` is that object.
        """
        if slot is not None and slot in self._uploads and self._uploads[slot][0] is array:
            return self._uploads[slot][1]
        data = array if array.flags.writeable else array.copy()  # torch warns on read-only memory
        x = torch.from_numpy(np.ascontiguousarray(data)).to(self.device, non_blocking=True)
        x = (x.unsqueeze(0) if x.dim() == 3 else x).permute(0, 3, 1, 2).to(self.dtype).div_(255)
        if slot is not None:
            self._uploads[slot] = (array, x)
        return x

    def __call__(self, src: np.ndarray, bgr: np.ndarray, background: Optional[np.ndarray] = None,
                 label: str = 'input') -> Dict[str, np.ndarray]:
        """
        Args:
            src: (T, H, W, 3) uint8 source frames.
            bgr: (T, H, W, 3) uint8 clean plates, or (H, W, 3) for one plate shared by every frame.
            background: for 'composite': (T, H, W, 3), (H, W, 3), or (1, 1, 3) for a colour; uint8.
            label: names the frames in error messages (a file, a frame range).
        Returns:
            output type -> (T, H, W, C) uint8, as in the class docstring.
        """
        with torch.inference_mode():
            src_t = self.upload(src)
            bgr_t = self.upload(bgr, slot='bgr' if bgr.ndim == 3 else None).expand_as(src_t)
            self._synchronize()
            start = time.perf_counter()
            try:
                outputs = self.model(src_t, bgr_t)
            except ValueError as error:  # e.g. frames too small for the backbone scale
                raise InputError(f"{label}: {error}") from error
            except torch.OutOfMemoryError as error:
                raise InputError(f"{label}: out of memory on {self.device}; use fewer frames at once "
                                 "(--seq-chunk) or a smaller backbone scale") from error
            self._synchronize()
            self.model_seconds += time.perf_counter() - start
            self.frames += src_t.size(0)

            pha, fgr, err, ref = full_resolution_outputs(outputs, tuple(src_t.shape[2:]))
            images = {}
            for name in self.output_types:
                if name == 'com':
                    images[name] = torch.cat([fgr * pha.gt(0), pha], dim=1)
                elif name == COMPOSITE:
                    if background is None:
                        raise InputError("the 'composite' output needs a replacement background")
                    back = self.upload(background, slot='background' if background.ndim == 3 else None).float()
                    images[name] = fgr * pha + back * (1 - pha)
                else:
                    images[name] = dict(pha=pha, fgr=fgr, err=err, ref=ref)[name]
            return {name: to_uint8(x) for name, x in images.items()}

    def _synchronize(self):
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)


def full_resolution_outputs(outputs, size: Tuple[int, int]) -> Tuple[torch.Tensor, ...]:
    """pha, fgr, err and ref at the input resolution `size` (H, W), float32.

    Args:
        outputs: MattingBase's (pha, fgr, err, hid) or MattingRefine's (pha, fgr, pha_sm, fgr_sm, err_sm, ref_sm).
    Returns:
        pha (B, 1, H, W), fgr (B, 3, H, W), err (B, 1, H, W), all 0 ~ 1; ref (B, 1, H, W), 1 where a
        patch was refined, else 0, or None for MattingBase.
    """
    if not isinstance(outputs, (tuple, list)) or len(outputs) not in (4, 6):
        count = len(outputs) if isinstance(outputs, (tuple, list)) else 1
        raise InputError(f"the model returned {count} output(s); expected those of MattingBase (pha, fgr, err, "
                         "hid) or MattingRefine (pha, fgr, pha_sm, fgr_sm, err_sm, ref_sm): is it a BGMv2 model?")
    H, W = size
    # MattingRefine pads the input to multiples of 4; its coarse outputs cover the padded frame.
    padded = ((H + 3) // 4 * 4, (W + 3) // 4 * 4)
    if len(outputs) == 4:
        pha, fgr, err, _ = outputs
        ref = None
    else:
        pha, fgr, _, _, err, ref = outputs
        ref = F.interpolate(ref.float(), size=padded, mode='nearest')[:, :, :H, :W]
    if tuple(err.shape[2:]) != (H, W):
        err = F.interpolate(err.float(), size=padded, mode='bilinear', align_corners=False)[:, :, :H, :W]
    return pha.float(), fgr.float(), err.float(), ref


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(T, C, H, W) float, 0 ~ 1, on any device -> (T, H, W, C) uint8 numpy on the CPU, rounded."""
    return x.float().clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu().numpy()


class Throughput(NamedTuple):
    """Frames done, wall-clock seconds end to end, and seconds spent in the model alone."""
    frames: int
    seconds: float
    model_seconds: float

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def model_fps(self) -> float:
        return self.frames / self.model_seconds if self.model_seconds > 0 else 0.0

    def __str__(self) -> str:
        return (f"{self.frames} frames in {self.seconds:.1f} s: model only {self.model_fps:.2f} fps, "
                f"end to end {self.fps:.2f} fps")


# --------------------------------------------------------------------------- files

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')
PNG_COMPRESS_LEVEL = 3  # zlib level: lossless at any level; 3 is much faster than 6 for ~5% more bytes


def is_image_file(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def natural_key(text: str) -> list:
    """Sort key that puts 'frame2' before 'frame10'."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r'(\d+)', text)]


def list_images(folder: str, recursive: bool = True) -> List[str]:
    """Relative paths of the images in `folder`, in natural order; hidden files and folders
    (such as our own temporary files) are skipped."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith('.')] if recursive else []
        found += [os.path.relpath(os.path.join(root, f), folder) for f in files
                  if not f.startswith('.') and is_image_file(f)]
    return sorted(found, key=natural_key)


def names_by_stem(files: Sequence[str], where: str) -> Dict[str, str]:
    """{file name without extension: file}. Outputs are named by stem, so two files of one stem
    (`a/1.jpg` and `a/1.png`) are an InputError naming both and `where` they are."""
    names = {}
    for file in files:
        stem = os.path.splitext(file)[0]
        if stem in names:
            raise InputError(f"{where}: {names[stem]} and {file} would both be written as {stem}; "
                             "keep one of them")
        names[stem] = file
    return names


class Pair(NamedTuple):
    src: str   # path of the source image
    bgr: str   # path of its clean plate
    name: str  # relative path of the source without extension: outputs are OUT/<type>/<name>.png


class Pairing(NamedTuple):
    pairs: List[Pair]
    unpaired_src: List[str]  # sources without a plate (relative paths)
    unpaired_bgr: List[str]  # plates without a source (relative paths)


def pair_images(src: str, bgr: str) -> Pairing:
    """Pairs sources with clean plates.

    src and bgr may be two image files, a folder and one plate shared by all its images, or two
    folders, searched recursively and paired by relative path without extension (`a/1.jpg` with
    `a/1.png`), never by sort order.
    """
    for option, path in (('--src', src), ('--bgr', bgr)):
        if not os.path.exists(path):
            raise InputError(f"{option} {path}: no such file or folder")
    if os.path.isfile(src):
        if not os.path.isfile(bgr):
            raise InputError(f"--bgr {bgr} is a folder but --src {src} is a file: give the plate of that image")
        return Pairing([Pair(src, bgr, os.path.splitext(os.path.basename(src))[0])], [], [])

    sources = names_by_stem(list_images(src), f'--src {src}')
    if not sources:
        raise InputError(f"--src {src}: no images found (extensions {', '.join(IMAGE_EXTENSIONS)})")
    if os.path.isfile(bgr):
        return Pairing([Pair(os.path.join(src, rel), bgr, name) for name, rel in sources.items()], [], [])
    plates = names_by_stem(list_images(bgr), f'--bgr {bgr}')
    pairs = [Pair(os.path.join(src, rel), os.path.join(bgr, plates[name]), name)
             for name, rel in sources.items() if name in plates]
    return Pairing(pairs, [rel for name, rel in sources.items() if name not in plates],
                   [rel for name, rel in plates.items() if name not in sources])


def image_size(path: str) -> Tuple[int, int]:
    """(W, H) of an image as shown (EXIF orientation applied), read from its header only."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            if image.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # rotated by a quarter turn
                width, height = height, width
    except (UnidentifiedImageError, OSError) as error:
        raise InputError(f"{path}: not a readable image ({error})") from error
    return width, height


def read_image(path: str, size: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB, upright (EXIF orientation applied), resized to size (W, H) if given."""
    try:
        with Image.open(path) as image:
            image = np.array(ImageOps.exif_transpose(image).convert('RGB'))
    except (UnidentifiedImageError, OSError) as error:
        raise InputError(f"{path}: not a readable image ({error})") from error
    return resize_image(image, size) if size else image


def resize_image(image: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """(H, W, C) uint8 -> (size[1], size[0], C): area averaging to shrink, bilinear to enlarge."""
    width, height = size
    if image.shape[1] == width and image.shape[0] == height:
        return image
    shrink = width * height < image.shape[0] * image.shape[1]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def fit_cover(image: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Scales (H, W, 3) to cover size (W, H) keeping its aspect ratio, then crops the centre."""
    width, height = size
    scale = max(width / image.shape[1], height / image.shape[0])
    scaled_w, scaled_h = max(width, round(image.shape[1] * scale)), max(height, round(image.shape[0] * scale))
    image = resize_image(image, (scaled_w, scaled_h))
    left, top = (scaled_w - width) // 2, (scaled_h - height) // 2
    return np.ascontiguousarray(image[top:top + height, left:left + width])


def prepare_output_dir(path: str, option: str = '--output-dir') -> None:
    """Creates the output folder if needed and checks that files can be written in it. An existing
    folder is kept as it is: nothing in it is deleted."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise InputError(f"{option} {path}: is a file, not a folder")
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".write-test-{uuid.uuid4().hex[:8]}")
        with open(probe, 'wb'):
            pass
        os.remove(probe)
    except OSError as error:
        raise InputError(f"{option} {path}: cannot write there ({error.strerror or error})") from error


def check_not_existing(paths: Iterable[str], hint: str) -> None:
    """Refuses to overwrite: names the first of `paths` that exists, with `hint` on what to do."""
    existing = [path for path in paths if os.path.lexists(path)]
    if existing:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ''
        raise InputError(f"{existing[0]} already exists{more}; {hint}")


def temporary_path(path: str) -> str:
    """A hidden name beside `path` to write it under before renaming it to `path`. It keeps the
    extension, from which writers guess the format."""
    folder, base = os.path.split(path)
    stem, extension = os.path.splitext(base)
    return os.path.join(folder, f".{stem}.{uuid.uuid4().hex[:8]}.partial{extension}")


def remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def save_image(image: np.ndarray, path: str) -> None:
    """Writes (H, W, C) uint8 as a lossless PNG (C = 1 gray, 3 RGB, 4 RGBA), creating its folder.

    The file is written under a temporary name and renamed, so `path` is never half-written.
    """
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] in (1, 3, 4), image.shape
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    temporary = temporary_path(path)
    try:
        Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image).save(
            temporary, format='PNG', compress_level=PNG_COMPRESS_LEVEL)
        os.replace(temporary, path)
    except BaseException:
        remove_quietly(temporary)
        raise


# --------------------------------------------------------------------------- clean plates

# A pixel counts as changed when one of its channels differs by more than this (0 ~ 1), compared
# on copies shrunk to PLATE_CHECK_WIDTH, which averages away noise and compression.
PLATE_CHANGE_LEVEL = 0.1
PLATE_CHECK_WIDTH = 160
PLATE_SAME_FRACTION = 0.002       # fewer changed pixels than this: no subject in view
PLATE_DIFFERENT_FRACTION = 0.75   # more: not the same scene


def check_plate(src: np.ndarray, bgr: np.ndarray) -> Optional[str]:
    """Why a clean plate looks wrong for its source, or None when it looks right.

    The plate should equal the source except where the subject is. A plate nearly identical to the
    source means no subject in view; one that differs almost everywhere is from another scene, was
    shot after the camera moved, or is the replacement background given by mistake.

    Args:
        src, bgr: (H, W, 3) uint8, the same size.
    """
    changed = changed_fraction(src, bgr)
    if changed < PLATE_SAME_FRACTION:
        return "the clean plate is nearly identical to the source: is the subject in view?"
    if changed > PLATE_DIFFERENT_FRACTION:
        return (f"the clean plate differs from the source in {changed:.0%} of the picture: is it from another "
                "scene, did the camera move (try --preprocess-alignment), or is it the replacement background?")
    return None


def changed_fraction(src: np.ndarray, bgr: np.ndarray) -> float:
    """The fraction of the picture where the plate differs from the source, 0 ~ 1 (see PLATE_CHANGE_LEVEL).

    Args:
        src, bgr: (H, W, 3) uint8, the same size.
    """
    height = max(1, round(src.shape[0] * PLATE_CHECK_WIDTH / src.shape[1]))
    small = [cv2.resize(x, (PLATE_CHECK_WIDTH, height), interpolation=cv2.INTER_AREA).astype(np.int16)
             for x in (src, bgr)]
    return float((np.abs(small[0] - small[1]).max(axis=2) > PLATE_CHANGE_LEVEL * 255).mean())


ALIGN_MIN_MATCHES = 12     # fewer matched ORB features (or RANSAC inliers) than this: no alignment
ALIGN_MAX_FEATURES = 4000
ALIGN_FAST_THRESHOLD = 5   # ORB's corner contrast threshold; OpenCV's 20 finds few corners in plain rooms
ALIGN_MAX_SHIFT = 0.1      # a plate corner may move by at most this fraction of the picture's diagonal


class Alignment(NamedTuple):
    plate: np.ndarray                  # (H, W, 3) uint8: the plate seen from the source's camera, or as given
    homography: Optional[np.ndarray]   # (3, 3) from plate to source pixels; None when alignment failed
    failure: Optional[str]             # why the plate was left as given


def align_plate(src: np.ndarray, bgr: np.ndarray, min_matches: int = ALIGN_MIN_MATCHES) -> Alignment:
    """Warps the clean plate onto the source with a homography (ORB features, RANSAC), for a camera
    that moved a little between the two shots.

    Where the warped plate does not reach, the source's own pixels are used (read as background), as
    the original did. When too few features match or no plausible homography is found, the plate is
    returned unchanged with the reason, instead of failing.

    Args:
        src, bgr: (H, W, 3) uint8 RGB.
    """
    orb = cv2.ORB_create(nfeatures=ALIGN_MAX_FEATURES, fastThreshold=ALIGN_FAST_THRESHOLD)
    keys_src, desc_src = orb.detectAndCompute(cv2.cvtColor(src, cv2.COLOR_RGB2GRAY), None)
    keys_bgr, desc_bgr = orb.detectAndCompute(cv2.cvtColor(bgr, cv2.COLOR_RGB2GRAY), None)
    if desc_src is None or desc_bgr is None or min(len(keys_src), len(keys_bgr)) < min_matches:
        found = min(len(keys_src), len(keys_bgr))
        return Alignment(bgr, None, f"only {found} features found (needs {min_matches}): is the plate featureless?")
    matches = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True).match(desc_bgr, desc_src)
    if len(matches) < min_matches:
        return Alignment(bgr, None, f"only {len(matches)} features matched (needs {min_matches})")
    points_bgr = np.float32([keys_bgr[m.queryIdx].pt for m in matches])
    points_src = np.float32([keys_src[m.trainIdx].pt for m in matches])
    homography, inliers = cv2.findHomography(points_bgr, points_src, cv2.RANSAC, 3.0)
    if homography is None or inliers is None or int(inliers.sum()) < min_matches:
        found = 0 if inliers is None else int(inliers.sum())
        return Alignment(bgr, None, f"no homography found ({found} consistent matches, needs {min_matches})")
    # Keypoints found on the coarser pyramid levels are placed to a pixel or two only: refit on the
    # consistent matches of the finest level where there are enough of them.
    finest = inliers.ravel().astype(bool) & np.array(
        [keys_bgr[m.queryIdx].octave == 0 and keys_src[m.trainIdx].octave == 0 for m in matches])
    if finest.sum() >= min_matches:
        refined, _ = cv2.findHomography(points_bgr[finest], points_src[finest], cv2.LMEDS)
        homography = homography if refined is None else refined
    height, width = src.shape[:2]
    corners = np.float32([[0, 0], [width, 0], [0, height], [width, height]])[None]
    if not np.isfinite(homography).all() or np.abs(cv2.perspectiveTransform(corners, homography) - corners).max() \
            > ALIGN_MAX_SHIFT * np.hypot(width, height):
        return Alignment(bgr, None, f"the homography found moves the plate by more than {ALIGN_MAX_SHIFT:.0%} of "
                                    "the picture: not a camera that moved a little")

    plate = cv2.warpPerspective(bgr, homography, (width, height), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REPLICATE)
    covered = cv2.warpPerspective(np.full(bgr.shape[:2], 255, np.uint8), homography, (width, height),
                                  flags=cv2.INTER_NEAREST) == 255
    plate = np.where(covered[:, :, None], plate, src)
    # Features on a textured subject can agree on a wrong homography: keep it only if it helps.
    if changed_fraction(src, plate) >= changed_fraction(src, bgr):
        return Alignment(bgr, None, "the aligned plate matches the source no better than the plate as given")
    return Alignment(plate, homography, None)


def median_plate(frames: Sequence[np.ndarray]) -> np.ndarray:
    """A clean plate from frames before the subject enters: their per-pixel median, (H, W, 3) uint8."""
    if len(frames) == 1:
        return frames[0]
    return np.median(np.stack(frames), axis=0).round().astype(np.uint8)


# --------------------------------------------------------------------------- readers

class Frame(NamedTuple):
    image: np.ndarray  # (H, W, 3) uint8 RGB, upright
    pts: int           # presentation time in the reader's time_base
    name: str          # file stem for an image sequence, zero-padded index for a video


class ImageSequenceReader:
    """The images of a folder (not its sub-folders), in natural order, as one clip.

    Args:
        folder: the frames, all the same size.
        resize: (W, H) to resize every frame to, or None.
        frame_rate: the clip's frame rate, exact.
    Attributes:
        size (W, H), frame_rate, time_base (1 / frame_rate), num_frames, has_audio (False).
    Iterating gives `Frame`s with pts = frame index.
    """

    def __init__(self, folder: str, resize: Optional[Tuple[int, int]] = None, frame_rate: Fraction = Fraction(30)):
        self.path, self.resize = folder, resize
        self.files = list_images(folder, recursive=False)
        if not self.files:
            raise InputError(f"{folder}: no images found (extensions {', '.join(IMAGE_EXTENSIONS)})")
        names_by_stem(self.files, folder)
        first = image_size(os.path.join(folder, self.files[0]))
        for file in self.files[1:]:
            size = image_size(os.path.join(folder, file))
            if size != first:
                raise InputError(f"{os.path.join(folder, file)} is {size[0]}x{size[1]} but {self.files[0]} is "
                                 f"{first[0]}x{first[1]}: the frames of a sequence must have the same size")
        self.size = resize or first
        self.frame_rate = Fraction(frame_rate)
        self.time_base = 1 / self.frame_rate
        self.num_frames: Optional[int] = len(self.files)
        self.has_audio = False

    def __iter__(self) -> Iterator[Frame]:
        for index, file in enumerate(self.files):
            yield Frame(read_image(os.path.join(self.path, file), self.resize), index, os.path.splitext(file)[0])

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class VideoReader:
    """The frames of a video file, decoded with PyAV, upright (rotation metadata applied).

    Args:
        path: a video file.
        resize: (W, H) of the upright frames, or None.
    Attributes:
        size (W, H) of the frames given, frame_rate (exact Fraction), time_base (of the pts),
        num_frames (None when the container does not say), has_audio, rotation (degrees,
        counter-clockwise, as stored).
    Iterating (once) gives `Frame`s with the stream's own presentation times.
    """

    def __init__(self, path: str, resize: Optional[Tuple[int, int]] = None):
        self.path, self.resize = path, resize
        try:
            self.container = av.open(path)
        except (av.FFmpegError, OSError) as error:
            raise InputError(f"{path}: cannot open it as a video ({error})") from error
        if not self.container.streams.video:
            self.container.close()
            raise InputError(f"{path}: has no video stream")
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = 'AUTO'
        rate = self.stream.average_rate or self.stream.guessed_rate or self.stream.base_rate
        if not rate:
            warn(f"{path}: the frame rate is unknown; assuming 30 fps")
        self.frame_rate = Fraction(rate or 30)
        self.time_base = Fraction(self.stream.time_base) if self.stream.time_base else 1 / self.frame_rate
        self.num_frames: Optional[int] = self.stream.frames or None
        self.has_audio = bool(self.container.streams.audio)

        # The first frame tells the orientation, hence the size of the frames given.
        self._decoded = self.container.decode(self.stream)
        try:
            self._first = next(self._decoded, None)
        except av.FFmpegError as error:
            self.container.close()
            raise InputError(f"{path}: cannot decode it ({error})") from error
        if self._first is None:
            self.container.close()
            raise InputError(f"{path}: has no frames")
        self.rotation = int(round(self._first.rotation or 0))
        if self.rotation % 90:
            warn(f"{path}: rotation of {self.rotation} degrees is not a quarter turn; ignored")
        self._quarter_turns = (self.rotation // 90) % 4 if self.rotation % 90 == 0 else 0
        width, height = self._first.width, self._first.height
        self.size = resize or ((height, width) if self._quarter_turns % 2 else (width, height))

    def __iter__(self) -> Iterator[Frame]:
        assert self._first is not None, 'a VideoReader is iterated once'
        first, self._first = self._first, None
        step = max(1, round(1 / (self.frame_rate * self.time_base)))
        pts = None
        for index, frame in enumerate(itertools.chain([first], self._decoded)):
            pts = frame.pts if frame.pts is not None else (0 if pts is None else pts + step)
            image = frame.to_ndarray(format='rgb24')
            if self._quarter_turns:
                image = np.ascontiguousarray(np.rot90(image, self._quarter_turns))
            yield Frame(resize_image(image, self.resize) if self.resize else image, pts, f"{index:05d}")

    def close(self) -> None:
        self.container.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_clip(path: str, resize: Optional[Tuple[int, int]] = None, frame_rate: Optional[Fraction] = None,
              option: str = '--video-src') -> Union[VideoReader, ImageSequenceReader]:
    """A video file or a folder of frames (at `frame_rate`, 30 if None) as a reader."""
    if os.path.isdir(path):
        return ImageSequenceReader(path, resize, frame_rate or Fraction(30))
    if os.path.isfile(path):
        return VideoReader(path, resize)
    raise InputError(f"{option} {path}: no such file or folder")


class Capture:
    """Frames of a camera, a stream URL or a video file, read by a background thread.

    A live source (camera, stream) keeps only its newest frame, so a slow model drops frames instead
    of falling behind; a file gives every frame, in order.

    Args:
        source: a camera index ('0'), a stream URL ('rtsp://...') or a video file.
        resolution: (W, H) to ask a camera for (it may give another).
    Attributes:
        size (W, H), frame_rate (Fraction; 30 when the source does not say), live.
    `read()` gives (H, W, 3) uint8 RGB, or None once a file or stream has ended.
    """

    def __init__(self, source: str, resolution: Optional[Tuple[int, int]] = None, queue_size: int = 4):
        if source.isdigit():
            target, self.live = int(source), True
        elif '://' in source:
            target, self.live = source, True
        elif os.path.isfile(source):
            target, self.live = source, False
        else:
            raise InputError(f"--source {source}: not a camera index, a stream URL or an existing video file")
        self.capture = cv2.VideoCapture(target)
        if not self.capture.isOpened():
            raise InputError(f"--source {source}: cannot open it")
        if resolution and isinstance(target, int):
            self.capture.set(cv2.CAP_PROP_FRAME_WIDTH, resolution[0])
            self.capture.set(cv2.CAP_PROP_FRAME_HEIGHT, resolution[1])
        ok, frame = self.capture.read()
        if not ok:
            self.capture.release()
            raise InputError(f"--source {source}: gives no frames")
        self.size = (frame.shape[1], frame.shape[0])
        fps = self.capture.get(cv2.CAP_PROP_FPS)
        self.frame_rate = Fraction(fps).limit_denominator(1001) if fps and fps > 0 else Fraction(30)
        self._queue: queue.Queue = queue.Queue(1 if self.live else queue_size)
        self._queue.put(frame)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name='capture', daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            ok, frame = self.capture.read()
            if not ok:
                break
            if self.live:  # replace the frame nobody took yet
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    pass
            if not _offer(self._queue, frame, self._stop):
                return
        _offer(self._queue, _END, self._stop)

    def read(self) -> Optional[np.ndarray]:
        frame = self._queue.get()
        if frame is _END:
            self._queue.put(_END)  # later reads end too
            return None
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if not self._thread.is_alive():  # a stalled stream may still be inside read(): leave it to exit
            self.capture.release()


class ReplacementBackground:
    """What a composite shows behind the subject: a colour, an image or a video.

    Images and video frames are scaled to cover each frame and centre-cropped; a video shorter than
    the source starts over.

    Args:
        spec: a colour ('white', '#78ff9b', '120,255,155'), an image file or a video file.
        allow_video: False where a video makes no sense (single images).
        option: the command-line option it came from, for error messages.
    """

    def __init__(self, spec: str, allow_video: bool = True, option: str = '--replacement-background'):
        self.spec = spec
        self.colour = self.image = self._reader = self._frames = None
        self._fitted: Dict[Tuple[int, int], np.ndarray] = {}
        if os.path.isfile(spec):
            if is_image_file(spec):
                self.image = read_image(spec)
            elif allow_video:
                self._start_video()
            else:
                raise InputError(f"{option} {spec}: expected a colour or an image file")
        else:
            rgb = parse_colour(spec)
            if rgb is None:
                raise InputError(f"{option} {spec}: no such file, and not a colour (expected a name such as "
                                 "'white', a hex code such as '#78ff9b', or 'R,G,B')")
            self.colour = np.array(rgb, np.uint8).reshape(1, 1, 3)

    def _start_video(self) -> None:
        if self._reader is not None:
            self._reader.close()
        self._reader = VideoReader(self.spec)
        self._frames = iter(self._reader)

    def frame(self, size: Tuple[int, int]) -> np.ndarray:
        """The background of the next frame of size (W, H): (H, W, 3) uint8, or (1, 1, 3) for a colour.
        A colour or an image gives the same array object for every frame of a size."""
        if self.colour is not None:
            return self.colour
        if self.image is not None:
            if size not in self._fitted:
                self._fitted = {size: fit_cover(self.image, size)}
            return self._fitted[size]
        frame = next(self._frames, None)
        if frame is None:  # start over
            self._start_video()
            frame = next(self._frames)
        return fit_cover(frame.image, size)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()


def parse_colour(text: str) -> Optional[Tuple[int, int, int]]:
    """(R, G, B), 0 ~ 255, from a colour name, '#rrggbb', 'rgb(r, g, b)' or 'r,g,b'; None if not a colour."""
    text = text.strip()
    if re.fullmatch(r'\d{1,3}\s*,\s*\d{1,3}\s*,\s*\d{1,3}', text):
        text = f"rgb({text})"
    try:
        return tuple(ImageColor.getrgb(text)[:3])
    except ValueError:
        return None


# --------------------------------------------------------------------------- writers

DEFAULT_CRF = 18  # x264 constant quality: 0 lossless, 18 visually lossless, 23 x264's default


class ImageSequenceWriter:
    """Writes frames as PNG files, named after their source frames, into a folder (created if missing).

    Each file is written under a temporary name and renamed: a file is either complete or absent.
    """

    def __init__(self, folder: str):
        self.folder = folder
        os.makedirs(folder, exist_ok=True)

    def write(self, frames: np.ndarray, names: Sequence[str]) -> None:
        """frames: (T, H, W, C) uint8, C = 1, 3 or 4; names: T file names without extension."""
        for image, name in zip(frames, names):
            save_image(image, os.path.join(self.folder, name + '.png'))

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


class VideoWriter:
    """Encodes frames with H.264 (libx264) through PyAV, optionally copying a source's audio.

    The file is written under a temporary name in the same folder: `close()` renames it to `path`,
    `abort()` deletes it, so `path` never holds a half-written video.

    Args:
        path: the video file (.mp4, .mov or .mkv).
        frame_rate: the exact frame rate, stored as the stream's rate.
        time_base: the unit of the pts given to `write`; default 1 / frame_rate. Give the source's
            time base and pts to keep its timing exactly (variable frame rate, audio sync).
        bit_rate: bits per second; None for constant quality `crf`.
        crf: x264 constant rate factor (0 lossless ... 51); DEFAULT_CRF if neither is given.
        audio_source: a media file whose first audio stream is copied (not re-encoded), interleaved
            by time with the video.
    Frames of odd width or height are stored as yuv444p (yuv420p needs even sides).
    """

    def __init__(self, path: str, frame_rate: Fraction, time_base: Optional[Fraction] = None,
                 bit_rate: Optional[int] = None, crf: Optional[float] = None, audio_source: Optional[str] = None):
        self.path = path
        self.input_time_base = Fraction(time_base) if time_base else 1 / Fraction(frame_rate)
        self.frame_duration = 1 / Fraction(frame_rate)
        # A coarse time base (1/1000 in MKV and WebM) cannot hold the frames' true times (30000/1001
        # fps is 33.366... ms a frame): write in a unit that holds both, and put times that are a
        # frame-grid time rounded to the input unit back on the grid (see `output_pts`).
        self.time_base = Fraction(1, math.lcm(self.input_time_base.denominator, self.frame_duration.denominator))
        self.temporary = temporary_path(path)
        self.audio_input = self.audio_stream = self._audio_packets = self._pending = None
        self._last_pts: Optional[int] = None
        self.container = av.open(self.temporary, mode='w')
        try:
            self.stream = self.container.add_stream('libx264', rate=Fraction(frame_rate))
            self.stream.codec_context.time_base = self.time_base
            if bit_rate:
                self.stream.bit_rate = int(bit_rate)
            else:
                self.stream.options = {'crf': str(DEFAULT_CRF if crf is None else crf)}
            if audio_source:
                self._open_audio(audio_source)
        except BaseException:
            self.abort()
            raise

    def _open_audio(self, source: str) -> None:
        self.audio_input = av.open(source)
        if not self.audio_input.streams.audio:
            return
        stream = self.audio_input.streams.audio[0]
        self.audio_stream = self.container.add_stream_from_template(stream)
        self._audio_packets = self.audio_input.demux(stream)

    def _mux_audio_until(self, seconds: Optional[Fraction]) -> None:
        """Copies the source's audio packets up to `seconds` (all of them for None)."""
        while self._audio_packets is not None:
            if self._pending is None:
                self._pending = next(self._audio_packets, None)
                if self._pending is None:
                    self._audio_packets = None
                    return
                if self._pending.dts is None:  # the demuxer's final empty packet
                    self._pending = None
                    continue
            packet = self._pending
            if seconds is not None and packet.pts is not None and packet.pts * packet.time_base > seconds:
                return
            packet.stream = self.audio_stream
            self.container.mux(packet)
            self._pending = None

    def write(self, frames: np.ndarray, pts: Sequence[int]) -> None:
        """frames: (T, H, W, C) uint8, C = 1 (gray) or 3 (RGB); pts: T times in the time base given
        to the constructor (`input_time_base`)."""
        if self._last_pts is None:
            height, width = frames.shape[1:3]
            self.stream.width, self.stream.height = width, height
            self.stream.pix_fmt = 'yuv420p' if width % 2 == 0 and height % 2 == 0 else 'yuv444p'
        pixel_format = {1: 'gray', 3: 'rgb24'}[frames.shape[3]]
        for image, t in zip(frames, pts):
            t = self.output_pts(int(t))
            if self._last_pts is not None and t <= self._last_pts:  # H.264 needs increasing times
                t = self._last_pts + 1
            self._mux_audio_until(t * self.time_base)
            frame = av.VideoFrame.from_ndarray(image[:, :, 0] if pixel_format == 'gray' else image, format=pixel_format)
            frame.pts, frame.time_base = t, self.time_base
            self.container.mux(self.stream.encode(frame))
            self._last_pts = t

    def output_pts(self, pts: int) -> int:
        """A time in `input_time_base` units as a time in `time_base` units; a time within one input
        unit of the frame grid (k / frame_rate) is snapped onto it, so a constant frame rate stays exact
        and a variable one keeps its times."""
        seconds = pts * self.input_time_base
        on_grid = round(seconds / self.frame_duration) * self.frame_duration
        if abs(seconds - on_grid) < self.input_time_base:
            seconds = on_grid
        return int(seconds / self.time_base)

    def close(self) -> None:
        """Finishes the file and gives it its name."""
        if self._last_pts is None:
            self.abort()
            raise InputError(f"{self.path}: no frames to write")
        try:
            self.container.mux(self.stream.encode())
            self._mux_audio_until(None)
            self.container.close()
        except BaseException:
            self.abort()
            raise
        if self.audio_input is not None:
            self.audio_input.close()
        os.replace(self.temporary, self.path)

    def abort(self) -> None:
        """Stops writing and deletes the unfinished file."""
        for container in (self.container, self.audio_input):
            if container is not None:
                try:
                    container.close()
                except Exception:
                    pass
        remove_quietly(self.temporary)


# --------------------------------------------------------------------------- pipeline

_END = object()


def _offer(q: queue.Queue, item, stop: threading.Event) -> bool:
    """Puts `item` in `q`, waiting while it is full, unless `stop` is set first."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            pass
    return False


class _Failure(NamedTuple):
    error: BaseException


class ReaderThread:
    """Iterates `source` on a thread, at most `queue_size` items ahead of the consumer. Iterating the
    ReaderThread gives the items, and raises an error of the source where it happened."""

    def __init__(self, source: Iterable, queue_size: int):
        self._source, self._queue, self._stop = source, queue.Queue(queue_size), threading.Event()
        self._thread = threading.Thread(target=self._run, name='reader', daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for item in self._source:
                if not _offer(self._queue, item, self._stop):
                    return
        except BaseException as error:
            _offer(self._queue, _Failure(error), self._stop)
            return
        _offer(self._queue, _END, self._stop)

    def __iter__(self):
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


class WorkerThread:
    """Calls `work(item)` on a thread for every item `put`, in order, with at most `queue_size` waiting.

    An error in `work` is raised by the next `put` or by `close`; items after it are dropped unseen,
    so that `put` never blocks forever.
    """

    def __init__(self, work: Callable, queue_size: int, name: str = 'writer'):
        self._work, self._queue = work, queue.Queue(queue_size)
        self.error: Optional[BaseException] = None
        self._cancelled = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if self.error is None and not self._cancelled:
                try:
                    self._work(item)
                except BaseException as error:
                    self.error = error

    def put(self, item) -> None:
        if self.error is not None:
            raise self.error
        self._queue.put(item)

    def close(self) -> None:
        """Waits until every item is done; raises the error of `work` if there was one."""
        self._queue.put(_END)
        self._thread.join()
        if self.error is not None:
            raise self.error

    def cancel(self) -> None:
        """Drops the items still waiting and returns once the thread has ended."""
        self._cancelled = True
        self._queue.put(_END)
        self._thread.join()


def run_pipeline(source: Iterable, compute: Callable[[object], Dict[str, object]],
                 sinks: Dict[str, Callable[[object], None]], queue_size: int = 4) -> None:
    """Reads, computes and writes at the same time, so the model is not idle during input and output.

    A reader thread iterates `source`; the calling thread runs `compute(item)` (the model), which
    returns {sink name: result}; each sink runs on its own writer thread. Bounded queues of
    `queue_size` between the stages keep memory flat. The first error of any stage stops the others
    and is raised here, once every thread has ended, so the caller can then remove unfinished files.
    """
    assert queue_size >= 1
    reader = ReaderThread(source, queue_size)
    writers = {name: WorkerThread(sink, queue_size, name=f'writer-{name}') for name, sink in sinks.items()}
    try:
        for item in reader:
            for name, result in compute(item).items():
                writers[name].put(result)
    except BaseException:
        reader.close()
        for writer in writers.values():
            writer.cancel()
        raise
    reader.close()
    errors = []
    for writer in writers.values():  # every writer finishes before an error is raised
        try:
            writer.close()
        except BaseException as error:
            errors.append(error)
    if errors:
        raise errors[0]
