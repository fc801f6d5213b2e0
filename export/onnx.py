"""Exporting MattingBase or MattingRefine to ONNX (`export`), and checking a file against the eager model
in ONNX Runtime (`validate`): the work of export_onnx.py (`run`), whose docstring says what the file
holds and why the tracer exports it.
"""
import argparse
import json
import sys
import warnings
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn
from torch.nn import functional as F

from common.devices import PRECISIONS
from common.errors import UserError, exit_with_error
from common.files import atomic_write, check_output_file
from inference.model import load_model
from model import optimize
from model.model import fix_auto_settings, refine_settings
from model.optimize import OptimizedMattingBase, OptimizedMattingRefine


DEFAULT_OPSET = 17  # ONNX Runtime >= 1.12, TensorRT >= 8.6; the exporter does 11 ~ 20
METADATA_KEY = 'bgmv2'
INPUT_NAMES = ['src', 'bgr']
OUTPUT_NAMES = {'mattingbase': ['pha', 'fgr', 'err', 'hid'],
                'mattingrefine': ['pha', 'fgr', 'pha_sm', 'fgr_sm', 'err_sm', 'ref_sm']}
FULL, COARSE, PATCHES = ('height', 'width'), ('coarse_height', 'coarse_width'), ('patch_rows', 'patch_cols')
OUTPUT_SIZES = {'pha': FULL, 'fgr': FULL, 'err': FULL, 'hid': FULL,
                'pha_sm': COARSE, 'fgr_sm': COARSE, 'err_sm': COARSE, 'ref_sm': PATCHES}
TOLERANCE = {'fp32': 1e-4, 'fp16': 1e-2}


def example_inputs(batch_size: int, height: int, width: int, dtype: torch.dtype = torch.float32,
                   device='cpu', seed: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """A clean plate and the same plate with a subject in front of it, so that a trained model
    predicts a non-trivial error map and the refiner has work.

    Returns:
        src, bgr: (batch_size, 3, height, width), 0 ~ 1. bgr is a smooth random texture; src covers
            an ellipse of it (different for each image) with noise.
    """
    generator = torch.Generator().manual_seed(seed)
    bgr = F.interpolate(torch.rand(batch_size, 3, height // 16 + 2, width // 16 + 2, generator=generator),
                        (height, width), mode='bilinear', align_corners=False)
    y = torch.linspace(-1, 1, height).view(1, 1, height, 1)
    x = torch.linspace(-1, 1, width).view(1, 1, 1, width)
    centre = torch.rand(batch_size, 2, 1, 1, generator=generator) * 0.6 - 0.3
    radius = torch.rand(batch_size, 2, 1, 1, generator=generator) * 0.3 + 0.3
    inside = ((x - centre[:, :1]) / radius[:, :1]) ** 2 + ((y - centre[:, 1:]) / radius[:, 1:]) ** 2 < 1
    src = torch.where(inside, torch.rand(batch_size, 3, height, width, generator=generator), bgr)
    return src.to(device, dtype), bgr.to(device, dtype)


def tracing_inputs(model: nn.Module, batch_size: int, height: int, width: int,
                   fixed_shape: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """Example inputs to trace with, avoiding a refinement of exactly one patch.

    With one patch the exporter fixes the patch dimension of the scatter to 1, and the file then fails
    on every input that refines more. Other examples (seeds), then a larger batch where the batch is
    dynamic, are tried until the count is not 1.
    """
    param = next(model.parameters())
    if not hasattr(model, 'refiner'):
        return example_inputs(batch_size, height, width, param.dtype, param.device)
    batch_sizes = [batch_size] if fixed_shape else [batch_size, batch_size + 1]
    for size in batch_sizes:
        for seed in range(8):
            src, bgr = example_inputs(size, height, width, param.dtype, param.device, seed)
            with torch.no_grad():
                patches = int(model(src, bgr)[-1].sum())
            if patches != 1:
                return src, bgr
    warnings.warn('every example input refines exactly one patch: the exported file works only for inputs '
                  'that refine one patch too (sample more pixels, or export without --fixed-shape)')
    return src, bgr


def trace_size(model: nn.Module, height: int, width: int, fixed_shape: bool) -> Tuple[int, int]:
    """The (height, width) to trace at.

    MattingRefine pads inputs to multiples of 4 only when they need it; a dynamic export is traced one
    pixel larger where a side is a multiple of 4, so that the padding (zero where not needed) is recorded.
    """
    if not fixed_shape:
        height, width = (height + 1 if height % 4 == 0 else height), (width + 1 if width % 4 == 0 else width)
    check_size(model, height, width, '--resolution')
    return height, width


def check_size(model: nn.Module, height: int, width: int, option: str) -> None:
    """Errors naming `option` for sizes the file cannot run at. The backbone needs 16 / backbone_scale
    pixels per side. In sampling mode the file selects `min(sample_pixels // 16, positions)` patches
    with the minimum fixed at its traced value, so the traced size, and every size the file runs at,
    needs at least sample_pixels // 16 positions of 4x4 pixels."""
    refiner = getattr(model, 'refiner', None)
    if refiner is None:
        return
    min_side = int(16 / model.backbone_scale + 0.5)
    if min(height, width) < min_side:
        raise ValueError(f"{option} {width} {height}: with --model-backbone-scale {model.backbone_scale} "
                         f"both sides must be at least {min_side}")
    positions = ((height + 3) // 4) * ((width + 3) // 4)
    if refiner.mode == 'sampling' and positions < refiner.sample_pixels // 16:
        raise ValueError(f"{option} {width} {height} has {positions} positions of 4x4 pixels, fewer than "
                         f"--model-refine-sample-pixels {refiner.sample_pixels} / 16: use a larger "
                         "resolution (or sample fewer pixels)")


def export(model: nn.Module, path: str, opset: int = DEFAULT_OPSET, batch_size: int = 1,
           resolution: Tuple[int, int] = (1920, 1080), fixed_shape: bool = False,
           metadata: Optional[Dict] = None) -> None:
    """Exports a MattingBase or MattingRefine, eager or optimized (on its device, in its dtype), to `path`.

    Args:
        resolution: (width, height) to trace at; with `fixed_shape` the only input size of the file.
        batch_size: the batch size traced at; with `fixed_shape` the only one.
        metadata: stored as JSON under the model property `bgmv2`.
    """
    model_type = 'mattingrefine' if hasattr(model, 'refiner') else 'mattingbase'
    output_names = OUTPUT_NAMES[model_type]
    height, width = trace_size(model, resolution[1], resolution[0], fixed_shape)
    src, bgr = tracing_inputs(model, batch_size, height, width, fixed_shape)
    dynamic_axes = None
    if not fixed_shape:
        dynamic_axes = {name: {0: 'batch', 2: 'height', 3: 'width'} for name in INPUT_NAMES}
        dynamic_axes.update({name: {0: 'batch', 2: OUTPUT_SIZES[name][0], 3: OUTPUT_SIZES[name][1]}
                             for name in output_names})

    def write(temporary: str) -> None:
        with warnings.catch_warnings():
            # Expected: shape branches frozen by the trace (see trace_size) and the legacy exporter notice.
            warnings.simplefilter('ignore', torch.jit.TracerWarning)
            warnings.simplefilter('ignore', DeprecationWarning)
            warnings.filterwarnings('ignore', message='Constant folding - Only steps=1')
            torch.onnx.export(model.eval(), (src, bgr), temporary, dynamo=False, opset_version=opset,
                              input_names=INPUT_NAMES, output_names=output_names, dynamic_axes=dynamic_axes,
                              do_constant_folding=True)
        proto = onnx.load(temporary)
        if fixed_shape:
            with torch.no_grad():
                declare_output_shapes(proto, [output.shape for output in model(src, bgr)])
        onnx.checker.check_model(proto)
        onnx.helper.set_model_props(proto, {METADATA_KEY: json.dumps({
            **(metadata or {}), 'model_type': model_type, 'opset': opset, 'fixed_shape': fixed_shape,
            'optimized': isinstance(model, (OptimizedMattingBase, OptimizedMattingRefine)),
            **({'batch_size': batch_size, 'width': width, 'height': height} if fixed_shape else {}),
            **refine_settings(model)})})
        onnx.save(proto, temporary)
    atomic_write(path, write)


def declare_output_shapes(proto: onnx.ModelProto, shapes: Sequence[Sequence[int]]) -> None:
    """Writes static output shapes into a fixed-shape file: shape inference cannot see through the
    refiner's NonZero, but with static inputs the outputs are static too."""
    for value, shape in zip(proto.graph.output, shapes):
        dims = value.type.tensor_type.shape.dim
        del dims[:]
        for size in shape:
            dims.add().dim_value = size


def read_metadata(path: str) -> Dict:
    """What export() recorded in an ONNX file ({} for other files)."""
    proto = onnx.load(path, load_external_data=False)
    props = {prop.key: prop.value for prop in proto.metadata_props}
    return json.loads(props[METADATA_KEY]) if METADATA_KEY in props else {}


def create_session(path: str, device: torch.device, threads: Optional[int] = None, spinning: bool = True):
    """An ONNX Runtime session on `device`: the CUDA execution provider for a CUDA device, else the CPU.
    `spinning=False` keeps its threads from spinning after a run (which slows other work in the process)."""
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    if not spinning:
        options.add_session_config_entry('session.intra_op.allow_spinning', '0')
    providers = ['CPUExecutionProvider']
    if device.type == 'cuda':
        if 'CUDAExecutionProvider' not in ort.get_available_providers():
            raise ValueError(f"--device {device}: this onnxruntime has no CUDA execution provider "
                             f"(it has {', '.join(ort.get_available_providers())}); install onnxruntime-gpu")
        providers = [('CUDAExecutionProvider', {'device_id': device.index or 0})] + providers
    return ort.InferenceSession(path, options, providers=providers)


def validate(path: str, model: nn.Module, batch_size: int, resolution: Tuple[int, int],
             tolerance: float) -> bool:
    """Runs the file with ONNX Runtime and the model with PyTorch on `example_inputs` and prints the
    largest absolute difference of every output. Returns whether all are within `tolerance`.

    Among patches of equal error the top-k may pick either: a patch refined by only one side passes if
    its error ties with the selection boundary, and pha and fgr are then compared outside such patches.
    """
    param = next(model.parameters())
    width, height = resolution
    src, bgr = example_inputs(batch_size, height, width, param.dtype, param.device, seed=1)
    with torch.no_grad():
        expected = model.eval()(src, bgr)
    cuda = param.device.type == 'cuda' and 'CUDAExecutionProvider' in ort.get_available_providers()
    session = create_session(path, param.device if cuda else torch.device('cpu'))
    names = [output.name for output in session.get_outputs()]
    outputs = dict(zip(names, session.run(None, {'src': src.cpu().numpy(), 'bgr': bgr.cpu().numpy()})))
    expected = {name: tensor.float().cpu().numpy() for name, tensor in zip(names, expected)}

    print(f"Validation with ONNX Runtime ({session.get_providers()[0]}) at batch {batch_size}, "
          f"{width}x{height}, tolerance {tolerance:g}:")
    passed, untied, outside = True, 0, None
    if 'ref_sm' in outputs and outputs['ref_sm'].shape == expected['ref_sm'].shape:
        outside, untied = compare_selections(model, expected, outputs['ref_sm'], tolerance)
    for name in names:
        output, reference = outputs[name].astype(np.float32), expected[name]
        if output.shape != reference.shape:
            print(f"  {name:7s} shape {list(output.shape)}, PyTorch {list(reference.shape)}  FAIL")
            passed = False
            continue
        difference = np.abs(output - reference)
        note = ''
        if name == 'ref_sm':
            ok = untied == 0
            note = '  (ties, see above)' if ok and outside is not None else ''
        else:
            if outside is not None and name in ('pha', 'fgr'):
                difference = difference * outside
            ok = difference.size == 0 or float(difference.max()) <= tolerance
        passed &= ok
        print(f"  {name:7s} {str(list(output.shape)):22s} max abs difference "
              f"{float(difference.max()) if difference.size else 0.0:.3g}{note}{'' if ok else '  FAIL'}")
    if 'ref_sm' in expected:
        refined = int(expected['ref_sm'].sum())
        print(f"  refined {refined} of {expected['ref_sm'].size} patches; error map "
              f"{float(expected['err_sm'].min()):.3g} ~ {float(expected['err_sm'].max()):.3g}")
        if refined == 0:
            print("  warning: nothing was refined on this input, so the refiner was not compared")
    return passed


def compare_selections(model: nn.Module, expected: Dict[str, np.ndarray], ref_sm: np.ndarray,
                       tolerance: float) -> Tuple[Optional[np.ndarray], int]:
    """Compares ONNX Runtime's refinement regions `ref_sm` (B, 1, H/4, W/4) with PyTorch's.

    Returns:
        outside: (B, 1, H, W) 1 outside the patches refined by only one side, else 0 (None if none).
        untied: how many of those patches have an error not tied with the selection boundary (the
            smallest error PyTorch sampled, or the threshold), which no tie explains.
    """
    reference = expected['ref_sm']
    differs = reference != ref_sm.astype(np.float32)
    if not differs.any():
        return None, 0
    # The refiner's error map: err_sm resized to the patch grid.
    err = F.interpolate(torch.from_numpy(expected['err_sm']), reference.shape[2:], mode='bilinear',
                        align_corners=False).numpy()
    if model.refiner.mode == 'sampling':
        boundary = np.where(reference > 0, err, np.inf).min(axis=(1, 2, 3), keepdims=True)
    else:
        boundary = model.refiner.threshold
    untied = int((differs & (np.abs(err - boundary) > tolerance)).sum())
    print(f"  ref_sm: {int(differs.sum())} patches refined by only one side, {untied} of them not tied "
          "in the error map; pha and fgr compared outside them")
    height, width = expected['pha'].shape[2:]
    outside = ~differs.repeat(4, axis=2).repeat(4, axis=3)[:, :, :height, :width]
    return outside.astype(np.float32), untied


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """The work of export_onnx.py: load, export (the optimized graph unless --eager), validate."""
    try:
        check_output_file(args.output)  # before the model is loaded and traced
        model, device, dtype = load_model(args, slow_fallback=False, optimized=False)  # eager: validated against
        if dtype != PRECISIONS[args.precision]:
            raise ValueError(f"--precision {args.precision} cannot run on {device}")
        fixed = fix_auto_settings(model, args.resolution[1], args.resolution[0])  # a graph holds one of each
        if fixed:
            print('auto settings at the traced ' + 'x'.join(map(str, args.resolution)) + ': '
                  + ', '.join(f'--model-{name.replace("_", "-")} {value:g}' for name, value in fixed.items()))
        export(model if args.eager else optimize(model), args.output, args.onnx_opset_version, args.batch_size,
               tuple(args.resolution), args.fixed_shape,
               metadata=dict(backbone=args.model_backbone, precision=args.precision))
    except (UserError, ValueError, OSError) as error:  # CheckpointError is a ValueError
        exit_with_error(parser.prog, error)
    print(f"Saved {args.output} ({args.model_type}, {args.model_backbone}, {args.precision}, "
          f"opset {args.onnx_opset_version}, {'fixed' if args.fixed_shape else 'dynamic'} shape, "
          f"{'eager' if args.eager else 'optimized'} graph)")

    if not args.validate:
        return
    if args.fixed_shape:
        batch_size, resolution = args.batch_size, tuple(args.resolution)
    else:
        batch_size = 2
        resolution = tuple(args.validate_resolution or (args.resolution[0] // 4 * 4 + 64,
                                                        args.resolution[1] // 4 * 4 + 64))
    tolerance = args.validate_tolerance if args.validate_tolerance is not None else TOLERANCE[args.precision]
    try:
        check_size(model, resolution[1], resolution[0], '--validate-resolution')
        passed = validate(args.output, model, batch_size, resolution, tolerance)
    except ValueError as error:
        parser.error(str(error))
    if not passed:
        sys.exit(f"Validation failed: {args.output} differs from PyTorch by more than {tolerance:g}")
    print("Validation passed")
