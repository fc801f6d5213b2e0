"""`Matting`: uint8 frames in, the uint8 images the writers store out, the model run on its device.

The output types: `com` (RGBA: the foreground with alpha as its 4th channel), `pha`, `fgr`, `err`,
`ref`, and `composite` (the foreground over a replacement background). Images cross this module as
numpy arrays, (T, H, W, C) uint8; tensors only exist on the model's device.
"""
import math
import time
from typing import Dict, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from model.model import auto_backbone_scale

from .cli import InputError, warn


def model_device_dtype(model: nn.Module) -> Tuple[torch.device, torch.dtype]:
    """Where a model's weights are and in which precision (CPU, float32 for a model without any)."""
    param = next(iter(model.parameters()), None)
    if param is None:
        return torch.device('cpu'), torch.float32
    return param.device, param.dtype


def has_refiner(model: nn.Module) -> bool:
    """True for a MattingRefine or a TorchScript file of one: only they predict refinement regions."""
    return hasattr(model, 'refiner')


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
    static clean plate or background) is uploaded once. On a GPU the frame's work is queued without
    waiting for the device: uploads from pinned memory, the model timed with CUDA events, downloads
    into pinned memory that `submit`'s results wait for one by one (their copy, not the device).

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
        self.frames = 0
        self.timer = ModelTimer(self.device)
        self._uploads: Dict[str, Tuple[np.ndarray, torch.Tensor]] = {}

    @property
    def model_seconds(self) -> float:
        return self.timer.seconds

    def upload(self, array: np.ndarray, slot: Optional[str] = None) -> torch.Tensor:
        """(H, W, 3) or (T, H, W, 3) uint8 -> (1 or T, 3, H, W) on the device in the model's dtype, 0 ~ 1.

        With a slot name, the array last uploaded to that slot is reused if `array` is that object.
        """
        if slot is not None and slot in self._uploads and self._uploads[slot][0] is array:
            return self._uploads[slot][1]
        data = array if array.flags.writeable else array.copy()  # torch warns on read-only memory
        x = torch.from_numpy(np.ascontiguousarray(data))
        if self.device.type == 'cuda':
            x = x.pin_memory()  # a copy the host does not wait for (the pinned block is kept until it is done)
        x = x.to(self.device, non_blocking=True)
        x = (x.unsqueeze(0) if x.dim() == 3 else x).permute(0, 3, 1, 2).to(self.dtype).div_(255)
        if slot is not None:
            self._uploads[slot] = (array, x)
        return x

    def __call__(self, src: np.ndarray, bgr: np.ndarray, background: Optional[np.ndarray] = None,
                 label: str = 'input') -> Dict[str, np.ndarray]:
        """`submit`, waiting for its results: output type -> (T, H, W, C) uint8."""
        return {name: download.result() for name, download in self.submit(src, bgr, background, label).items()}

    def submit(self, src: np.ndarray, bgr: np.ndarray, background: Optional[np.ndarray] = None,
               label: str = 'input') -> Dict[str, 'Download']:
        """Queues the frames' work on the device and returns without waiting for it.

        Args:
            src: (T, H, W, 3) uint8 source frames.
            bgr: (T, H, W, 3) uint8 clean plates, or (H, W, 3) for one plate shared by every frame.
            background: for 'composite': (T, H, W, 3), (H, W, 3), or (1, 1, 3) for a colour; uint8.
            label: names the frames in error messages (a file, a frame range).
        Returns:
            output type -> a `Download` of (T, H, W, C) uint8, as in the class docstring.
        """
        if self.frames == 0:  # once per run
            warn_if_small_input(self.model, src.shape[1:3])
        with torch.inference_mode():
            src_t = self.upload(src)
            bgr_t = self.upload(bgr, slot='bgr' if bgr.ndim == 3 else None).expand_as(src_t)
            with self.timer:
                try:
                    outputs = self.model(src_t, bgr_t)
                except ValueError as error:  # e.g. frames too small for the backbone scale
                    raise InputError(f"{label}: {error}") from error
                except torch.OutOfMemoryError as error:
                    raise InputError(f"{label}: out of memory on {self.device}; use fewer frames at once "
                                     "(--seq-chunk) or a smaller backbone scale") from error
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
            return download({name: uint8_images(x) for name, x in images.items()})


class ModelTimer:
    """Seconds spent in the model, as a context around each call: on the CPU by the clock; on a GPU by
    CUDA events around the queued work, read once they have passed (no wait for the device)."""

    def __init__(self, device: torch.device):
        self.device, self._seconds, self._pending = device, 0.0, []

    def __enter__(self):
        if self.device.type == 'cuda':
            self._events = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            self._events[0].record()
        else:
            self._start = time.perf_counter()

    def __exit__(self, *exc):
        if self.device.type == 'cuda':
            self._events[1].record()
            self._pending.append(self._events)
            self._collect(wait=False)
        else:
            self._seconds += time.perf_counter() - self._start

    def _collect(self, wait: bool) -> None:
        while self._pending and (wait or self._pending[0][1].query()):
            start, end = self._pending.pop(0)
            end.synchronize()
            self._seconds += start.elapsed_time(end) / 1000

    @property
    def seconds(self) -> float:
        self._collect(wait=True)
        return self._seconds


class Download:
    """An output image on its way to the host: `result()` gives it, (T, H, W, C) uint8 numpy, once its
    copy is done (on a GPU, waiting for that copy only)."""

    def __init__(self, array: np.ndarray, done: Optional[torch.cuda.Event] = None):
        self._array, self._done = array, done

    def result(self) -> np.ndarray:
        if self._done is not None:
            self._done.synchronize()
            self._done = None
        return self._array


def download(images: Dict[str, torch.Tensor]) -> Dict[str, Download]:
    """uint8 images on the device -> their `Download`s: from a GPU into pinned memory without waiting,
    one event for all."""
    if not images or next(iter(images.values())).device.type != 'cuda':
        return {name: Download(x.cpu().numpy()) for name, x in images.items()}
    hosts = {name: torch.empty(x.shape, dtype=x.dtype, pin_memory=True).copy_(x, non_blocking=True)
             for name, x in images.items()}
    done = torch.cuda.Event()
    done.record()
    return {name: Download(host.numpy(), done) for name, host in hosts.items()}


# Below this many pixels on the short side of the base network's input (the frame scaled by the
# backbone scale), the bundled model's matte misses part of the subject. Measured on 8 synthetic
# 16:9 capture pairs shrunk to several heights, at backbone scales 0.125 to 0.5 and with MattingBase
# (scripts/base_input_sizes.py): what matters is the base input's height, whatever the scale. The
# matte held 89 % of the subject from 120 pixels up, 77 % at 90, 51 % at 60, 9 % at 30, 1 ~ 4 % at
# 18 ~ 24 (160x96 at the default 0.25 gives 24: an empty matte).
MIN_BASE_INPUT_SIDE = 120


def small_input_warning(model: nn.Module, height: int, width: int) -> Optional[str]:
    """What to say when frames of (height, width) give `model`'s base network too few pixels to see
    a subject in (see MIN_BASE_INPUT_SIDE), or None. MattingBase (no backbone_scale) runs the base
    network on the whole frame."""
    scale = float(getattr(model, 'backbone_scale', 1.0))
    # 'auto' (a flag on the model, a sentinel <= 0 in a TorchScript file): the scale it will choose.
    if getattr(model, 'auto_backbone_scale', False) or (hasattr(model, 'backbone_scale') and scale <= 0):
        scale = auto_backbone_scale(height, width)
    short = min(height, width)
    if short * scale >= MIN_BASE_INPUT_SIDE:
        return None
    needed = math.ceil(MIN_BASE_INPUT_SIDE / short * 20) / 20  # in steps of 0.05
    if not hasattr(model, 'backbone_scale'):
        advice = 'use larger frames'
    elif needed <= 0.5:
        advice = f'use --model-backbone-scale {needed:g} or more'
    else:
        advice = 'use --model-backbone-scale 0.5 (the largest) with larger frames'
    # Said of any model, whatever checkpoint was loaded: the sizes were measured on the bundled one.
    return (f"frames of {width}x{height} at backbone scale {scale:g} give the base network "
            f"{round(width * scale)}x{round(height * scale)} pixels; below {MIN_BASE_INPUT_SIDE} on the short side "
            f"its matte misses part of the subject (measured with the bundled model, which misses most of it "
            f"below 30): {advice}")


def warn_if_small_input(model: nn.Module, size: Tuple[int, int]) -> None:
    """Warns (see `small_input_warning`) when frames of size (H, W) are too small for `model`."""
    message = small_input_warning(model, *size)
    if message:
        warn(message)


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


def uint8_images(x: torch.Tensor) -> torch.Tensor:
    """(T, C, H, W) float, 0 ~ 1 -> (T, H, W, C) uint8, rounded, contiguous, on x's device."""
    return x.float().clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


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
