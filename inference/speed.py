"""Timing a matting model in PyTorch, TorchScript or ONNX Runtime: the work of inference_speed_test.py,
whose docstring says what it measures (`run`)."""
import argparse
import json
import os
import platform
import tempfile
import time
import warnings
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
import torchvision
from PIL import Image, UnidentifiedImageError

from common.devices import PRECISIONS, inference_dtype, resolve_device
from common.errors import UserError, exit_with_error
from export import onnx as onnx_export
from export import torchscript as torchscript_export
from model.checkpoint import is_torchscript_archive
from model.model import refine_settings

from .model import is_optimized, load_model


BACKENDS = ('pytorch', 'torchscript', 'onnx')
DTYPE_NAMES = {dtype: name for name, dtype in PRECISIONS.items()}


class Runner(NamedTuple):
    """One backend ready to run: `run()` computes the outputs for the prepared inputs, `synchronize()`
    waits for the device, `fetch(outputs)` copies them to numpy; `description` is the model's settings."""
    run: Callable[[], Sequence]
    synchronize: Callable[[], None]
    fetch: Callable[[Sequence], List[np.ndarray]]
    description: Dict


def load_pair(src_path: str, bgr_path: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """An image and its clean plate as (1, 3, H, W) float32, 0 ~ 1."""
    images = []
    for option, path in (('--src', src_path), ('--bgr', bgr_path)):
        if not os.path.isfile(path):
            raise ValueError(f"{option} {path} does not exist")
        try:
            with Image.open(path) as image:
                pixels = np.array(image.convert('RGB'))
        except (UnidentifiedImageError, OSError) as error:
            raise ValueError(f"{option} {path} is not a readable image ({error})") from error
        images.append(torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0).float() / 255)
    if images[0].shape != images[1].shape:
        raise ValueError(f"--src is {images[0].shape[3]}x{images[0].shape[2]} but --bgr is "
                         f"{images[1].shape[3]}x{images[1].shape[2]}: they must be the same size")
    return images[0], images[1]


def make_inputs(args: argparse.Namespace) -> Tuple[torch.Tensor, torch.Tensor]:
    """src, bgr: (batch, 3, H, W) float32 on the CPU, 0 ~ 1: the image pair repeated, or random."""
    if args.src:
        src, bgr = load_pair(args.src, args.bgr)
        return src.repeat(args.batch_size, 1, 1, 1), bgr.repeat(args.batch_size, 1, 1, 1)
    width, height = args.resolution
    generator = torch.Generator().manual_seed(0)
    return (torch.rand(args.batch_size, 3, height, width, generator=generator),
            torch.rand(args.batch_size, 3, height, width, generator=generator))


def torch_runner(args: argparse.Namespace, src: torch.Tensor, bgr: torch.Tensor, fixed_work: bool) -> Runner:
    """The pytorch and torchscript backends."""
    checkpoint = args.model_checkpoint
    scripted_file = bool(checkpoint) and is_torchscript_archive(checkpoint)
    if args.backend == 'pytorch' and scripted_file:
        raise ValueError(f"--model-checkpoint {checkpoint} is TorchScript: use --backend torchscript")
    # The pytorch backend runs the optimized model unless --eager; TorchScript is made of the eager one.
    optimized = args.backend == 'pytorch' and is_optimized(args)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', FutureWarning)  # torch.jit is deprecated
        model, device, dtype = load_model(args, optimized=optimized)
    description = torchscript_export.read_metadata(checkpoint) if scripted_file else \
        torchscript_export.model_metadata(args)
    description['precision'] = DTYPE_NAMES[dtype]
    description['channels_last'] = args.channels_last
    description['optimized'] = optimized
    if args.backend == 'torchscript' and not scripted_file:
        model = torchscript_export.script_model(model)
    if hasattr(model, 'refiner') or hasattr(model, 'refine_mode'):  # eager, or TorchScript (hoisted)
        if fixed_work:
            if isinstance(model, torch.jit.ScriptModule):
                model.refine_prevent_oversampling = False
            else:
                model.refiner.prevent_oversampling = False
        description.update(refine_settings(model))
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    src, bgr = (x.to(device, dtype, memory_format=memory_format) for x in (src, bgr))
    return module_runner(model, src, bgr, description)


def module_runner(model, src: torch.Tensor, bgr: torch.Tensor, description: Dict,
                  convert: Callable = lambda outputs: [x.float().cpu().numpy() for x in outputs]) -> Runner:
    """A call of a PyTorch or TorchScript module on src and bgr (on its device), synchronised on CUDA."""
    def run():
        with torch.no_grad():
            return model(src, bgr)

    def synchronize():
        if src.device.type == 'cuda':
            torch.cuda.synchronize(src.device)

    return Runner(run, synchronize, convert, description)


def onnx_runner(args: argparse.Namespace, src: torch.Tensor, bgr: torch.Tensor, fixed_work: bool,
                workdir: str) -> Runner:
    """The onnx backend. A CUDA device runs with the CUDA execution provider and IO binding (inputs
    and outputs stay on the GPU); weights rather than a .onnx file are exported into `workdir` first."""
    device = resolve_device(args.device)
    path = args.model_checkpoint
    if path and path.endswith('.onnx'):
        if not os.path.isfile(path):
            raise ValueError(f"--model-checkpoint {path} does not exist")
    else:
        if path and os.path.isfile(path) and is_torchscript_archive(path):
            raise ValueError(f"--model-checkpoint {path}: the onnx backend takes a .onnx file or weights")
        if args.model_refine_patch_crop_method == 'unfold':
            args.model_refine_patch_crop_method = 'roi_align'  # unfold has no ONNX export
        if inference_dtype(args.precision, device) != PRECISIONS[args.precision] or args.precision == 'bf16':
            raise ValueError(f"--precision {args.precision} cannot be exported to ONNX on {device}")
        model, _, _ = load_model(args, device)  # the optimized graph (as onnx_export.py) unless --eager
        if fixed_work and hasattr(model, 'refiner'):
            model.refiner.prevent_oversampling = False
        path = os.path.join(workdir, 'model.onnx')
        onnx_export.export(model, path, batch_size=src.shape[0], resolution=(src.shape[3], src.shape[2]),
                           metadata=dict(backbone=args.model_backbone, precision=args.precision))
    description = onnx_export.read_metadata(path)

    session = onnx_export.create_session(path, device, args.threads)
    inputs = session.get_inputs()
    dtype = {'tensor(float)': np.float32, 'tensor(float16)': np.float16}[inputs[0].type]
    if dtype != {'fp32': np.float32, 'fp16': np.float16}.get(args.precision):
        raise ValueError(f"{path} takes {np.dtype(dtype).name} inputs: pass --precision "
                         f"{'fp16' if dtype == np.float16 else 'fp32'}")
    if all(isinstance(d, int) for d in inputs[0].shape) and list(inputs[0].shape) != list(src.shape):
        shape = inputs[0].shape
        raise ValueError(f"{path} takes only inputs of shape {shape}: pass --batch-size {shape[0]} "
                         f"--resolution {shape[3]} {shape[2]}")

    if device.type == 'cuda':
        src = src.to(device, torch.float16 if dtype == np.float16 else torch.float32).contiguous()
        bgr = bgr.to(device, src.dtype).contiguous()
        binding = session.io_binding()
        for name, tensor in (('src', src), ('bgr', bgr)):
            binding.bind_input(name, 'cuda', device.index or 0, dtype, list(tensor.shape), tensor.data_ptr())
        for output in session.get_outputs():
            binding.bind_output(output.name, 'cuda', device.index or 0)
        torch.cuda.synchronize(device)  # ONNX Runtime reads the inputs on its own stream

        def run(keep_alive=(src, bgr)):  # the binding holds only the inputs' addresses
            session.run_with_iobinding(binding)

        return Runner(run, binding.synchronize_outputs, lambda _: binding.copy_outputs_to_cpu(), description)

    feeds = {'src': src.numpy().astype(dtype), 'bgr': bgr.numpy().astype(dtype)}
    return Runner(lambda: session.run(None, feeds), lambda: None, lambda outputs: outputs, description)


def measure(runner: Runner, warmup: int, iterations: int) -> Tuple[np.ndarray, Sequence]:
    """Seconds per call over `iterations` calls after `warmup` calls, and the last call's outputs."""
    for _ in range(warmup):
        runner.run()
        runner.synchronize()
    seconds = []
    for _ in range(iterations):
        start = time.perf_counter()
        outputs = runner.run()
        runner.synchronize()
        seconds.append(time.perf_counter() - start)
    return np.array(seconds), outputs


def machine(device: torch.device, threads: Optional[int]) -> Dict:
    """The machine the measurement ran on."""
    info = dict(platform=platform.platform(), processor=platform.processor() or platform.machine(),
                cpu_count=os.cpu_count(), threads=threads, torch_threads=torch.get_num_threads(),
                python=platform.python_version(), torch=torch.__version__, torchvision=torchvision.__version__)
    try:
        import onnxruntime
        info['onnxruntime'] = onnxruntime.__version__
    except ImportError:
        pass
    if device.type == 'cuda':
        info['gpu'] = torch.cuda.get_device_name(device)
    return info


def load_average() -> Optional[float]:
    """The 1-minute load average (None where the system has none): other work skews the timings."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """The work of inference_speed_test.py: inputs, the backend's runner, the timed calls, the record."""
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = load_average()

    try:
        device = resolve_device(args.device)
        src, bgr = make_inputs(args)
        fixed_work = not args.src
        with tempfile.TemporaryDirectory() as workdir:
            if args.backend == 'onnx':
                runner = onnx_runner(args, src, bgr, fixed_work, workdir)
            else:
                runner = torch_runner(args, src, bgr, fixed_work)
            seconds, outputs = measure(runner, args.warmup, args.iterations)
            outputs = runner.fetch(outputs)
    except (UserError, ValueError, OSError) as error:  # CheckpointError is a ValueError
        exit_with_error(parser.prog, error)

    milliseconds = seconds * 1000
    median, p90 = float(np.median(milliseconds)), float(np.percentile(milliseconds, 90))
    record = dict(
        backend=args.backend,
        model={**runner.description, 'checkpoint': args.model_checkpoint},
        input=dict(kind='images' if args.src else 'random', src=args.src, bgr=args.bgr,
                   batch_size=src.shape[0], width=src.shape[3], height=src.shape[2]),
        device=str(device), warmup=args.warmup, iterations=args.iterations,
        latency_ms=dict(median=median, p90=p90, mean=float(milliseconds.mean()),
                        min=float(milliseconds.min()), max=float(milliseconds.max())),
        fps=src.shape[0] * 1000 / median,
        machine={**machine(device, args.threads), 'load_average': [load_before, load_average()]})
    if len(outputs) == 6:  # MattingRefine: how many 4x4 patches the last call refined
        record['refined_patches'] = int(outputs[5].astype(np.float32).sum())

    if args.json:
        print(json.dumps(record))
        return
    model = record['model']
    layout = ' channels-last' if model.get('channels_last') else ''
    print(f"{args.backend} {model.get('model_type')} {model.get('backbone')} {model.get('precision')}{layout} "
          f"on {device}, batch {src.shape[0]} at {src.shape[3]}x{src.shape[2]} ({record['input']['kind']} input)")
    if 'refined_patches' in record:
        print(f"refine mode {model.get('refine_mode')}, backbone scale {model.get('backbone_scale')}, "
              f"{record['refined_patches']} patches refined")
    print(f"latency median {median:.1f} ms, p90 {p90:.1f} ms over {args.iterations} calls; "
          f"{record['fps']:.1f} fps")
