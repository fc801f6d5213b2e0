"""Eager model against `optimize(model)`, in one process with alternating runs, on fixed work.

    python -m scripts.benchmark_inference                       # CPU, fp32, the four settings below
    python -m scripts.benchmark_inference --device cuda --precision fp16
    python -m scripts.benchmark_inference --settings mobilenetv2-hd --onnx --json results.json
    python -m scripts.benchmark_inference --onnx --original ~/src/BackgroundMattingV2
    python -m scripts.benchmark_inference --retain-memory --original ~/src/BackgroundMattingV2
    python -m scripts.benchmark_inference --variant cuda --iterations 1   # the GPU code path's counts, on a CPU

Settings (batch 1, sampling mode without oversampling prevention, so that every frame refines exactly
sample_pixels / 16 patches whatever the weights predict; random weights and inputs, seeded, or with
--bundled the demonstration model and the bundled 1920x1080 capture):

    mobilenetv2-hd   1920x1080, backbone_scale 0.25, 80,000 pixels
    mobilenetv2-4k   3840x2160, backbone_scale 0.125, 320,000 pixels
    mobilenetv3-hd   1920x1080, backbone_scale 0.25, 80,000 pixels
    resnet50-hd      1920x1080, backbone_scale 0.25, 80,000 pixels

Each iteration runs every model once, in turn, so that other load on the machine falls on all of them
alike; the table gives median milliseconds, frames per second and the ratios to the eager model and,
with --original, to the original BGMv2 code's MattingRefine (a checkout of PeterL1n/
BackgroundMattingV2; it is imported and run with the same weights, nothing of it is copied). With
--onnx, both of our models are exported (`export.onnx`) and their files run in ONNX Runtime too (CPU,
or the CUDA execution provider).

On a shared machine, rounds during which other processes used more than --max-others of a core (read
from /proc on Linux) are dropped and run again, up to four times as many rounds in all.

--json writes one record per setting: {"setting", "backbone", "width", "height", "backbone_scale",
"sample_pixels", "inputs" ("random" or "bundled"), "memory" ("default" or "retained"), "device", "precision", "threads", "iterations", "rounds_dropped", "load_average",
"optimize_seconds", "variant" (of the optimized model: "cpu" or "cuda"), "operations", "launches" and
"host_syncs" ({name: per frame}: aten operations, those that are not views, host syncs; PyTorch models),
"original_max_difference" (the largest |difference| of any output between the
original and our eager model, or null), "ms": {name: median},
"fps": {name: fps}, "ratio": {name: ms / eager ms}, "ratio_original": {name: ms / original ms} or null}
with names "eager", "optimized", on CUDA "graphs" (the optimized model replayed as a CUDA graph,
`model.graphs`), with --original "original", with --onnx "onnx_eager" and "onnx_optimized".
"""
import argparse
import copy
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from common.devices import PRECISIONS, check_device_name, inference_dtype, resolve_device
from common.errors import UserError
from common.files import check_output_file, write_bytes
from common.images import read_rgb
from common.memory import retain_freed_memory
from common.op_counts import OpCounter
from inference.model import DEMO_CHECKPOINT, REPOSITORY
from model import MattingRefine, load_checkpoint, optimize
from model.graphs import CUDAGraphs

SAMPLES = os.path.join(REPOSITORY, 'samples')

SETTINGS = {
    'mobilenetv2-hd': dict(backbone='mobilenetv2', width=1920, height=1080, backbone_scale=0.25, sample_pixels=80_000),
    'mobilenetv2-4k': dict(backbone='mobilenetv2', width=3840, height=2160, backbone_scale=0.125,
                           sample_pixels=320_000),
    'mobilenetv3-hd': dict(backbone='mobilenetv3', width=1920, height=1080, backbone_scale=0.25, sample_pixels=80_000),
    'resnet50-hd': dict(backbone='resnet50', width=1920, height=1080, backbone_scale=0.25, sample_pixels=80_000),
}


def build(setting: Dict, device: torch.device, dtype: torch.dtype) -> MattingRefine:
    torch.manual_seed(0)
    model = MattingRefine(setting['backbone'], backbone_scale=setting['backbone_scale'], refine_mode='sampling',
                          refine_sample_pixels=setting['sample_pixels'], refine_prevent_oversampling=False)
    return model.eval().to(device, dtype)


def bundled_image(folder: str, setting: Dict) -> torch.Tensor:
    """The bundled 1920x1080 capture (`samples/src`) or its plate (`samples/bgr`), resized (bilinear)
    to the setting's size: (1, 3, H, W) float32, 0 ~ 1."""
    image = read_rgb(os.path.join(SAMPLES, folder, 'capture_1920x1080.jpg'))
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    if x.shape[2:] != (setting['height'], setting['width']):
        x = torch.nn.functional.interpolate(x, (setting['height'], setting['width']), mode='bilinear',
                                            align_corners=False).clamp_(0, 1)
    return x


def import_original(root: str):
    """The `model` package of a checkout of the original BGMv2 code (github.com/PeterL1n/
    BackgroundMattingV2), imported under the name `bgmv2_original` beside ours; it is only run."""
    folder = os.path.join(root, 'model')
    if not os.path.isfile(os.path.join(folder, 'model.py')):
        raise UserError(f"--original {root}: expected a checkout of BackgroundMattingV2 (no model/model.py there)")
    spec = importlib.util.spec_from_file_location('bgmv2_original', os.path.join(folder, '__init__.py'),
                                                  submodule_search_locations=[folder])
    package = importlib.util.module_from_spec(spec)
    sys.modules['bgmv2_original'] = package
    spec.loader.exec_module(package)
    return package


def build_original(package, setting: Dict, model: MattingRefine) -> Optional[torch.nn.Module]:
    """The original's MattingRefine with `model`'s weights (the layouts are the same), or None for a
    backbone the original does not have."""
    try:
        original = package.MattingRefine(setting['backbone'], backbone_scale=setting['backbone_scale'],
                                         refine_mode='sampling', refine_sample_pixels=setting['sample_pixels'],
                                         refine_prevent_oversampling=False)
    except (AssertionError, ValueError, KeyError):
        return None
    original.load_state_dict(model.state_dict())
    parameter = next(model.parameters())
    return original.eval().to(parameter.device, parameter.dtype)


def torch_runner(model: torch.nn.Module, src: torch.Tensor, bgr: torch.Tensor) -> Callable[[], None]:
    def run():
        with torch.inference_mode():
            model(src, bgr)
        if src.device.type == 'cuda':
            torch.cuda.synchronize(src.device)
    return run


def count_operations(run: Callable[[], None]) -> OpCounter:
    """The aten operations and host syncs of one call (after one call, which fills the caches of a size)."""
    run()
    with OpCounter() as counts:
        run()
    return counts


def onnx_runner(model: torch.nn.Module, src: torch.Tensor, bgr: torch.Tensor, workdir: str, name: str,
                threads: Optional[int]) -> Callable[[], None]:
    """Exports `model` at the inputs' size and returns a call of its file in ONNX Runtime."""
    from export import onnx as export_onnx
    path = os.path.join(workdir, name + '.onnx')
    export_onnx.export(model, path, batch_size=src.shape[0], resolution=(src.shape[3], src.shape[2]))
    session = export_onnx.create_session(path, src.device, threads, spinning=False)  # PyTorch runs in between
    feeds = {'src': src.cpu().numpy(), 'bgr': bgr.cpu().numpy()}
    return lambda: session.run(None, feeds)


def others_cpu_seconds() -> Optional[float]:
    """CPU seconds that other processes have used so far, from Linux's /proc (None elsewhere)."""
    try:
        with open('/proc/stat') as f:
            ticks = [int(value) for value in f.readline().split()[1:]]
        with open('/proc/self/stat') as f:
            own = f.read().rsplit(')', 1)[1].split()
    except (OSError, ValueError, IndexError):
        return None
    busy = sum(ticks[:8]) - ticks[3] - ticks[4]  # all but idle and iowait
    return (busy - int(own[11]) - int(own[12])) / os.sysconf('SC_CLK_TCK')


def measure(runners: Dict[str, Callable[[], None]], warmup: int, iterations: int, max_others: float
            ) -> Tuple[Dict[str, float], int]:
    """Median seconds per call of each runner, over `iterations` rounds that call every runner in turn.

    A round during which other processes used more than `max_others` of one core is dropped and run
    again (at most 4 x iterations rounds in all; then the last rounds are kept whatever the load): other
    work on a shared machine would otherwise decide the result. Returns the medians and the rounds dropped.
    """
    for run in runners.values():
        for _ in range(warmup):
            run()
    rounds: List[Dict[str, float]] = []
    dropped = 0
    for attempt in range(4 * iterations):
        others, start_round = others_cpu_seconds(), time.perf_counter()
        seconds = {}
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            seconds[name] = time.perf_counter() - start
        busy = others_cpu_seconds()
        if others is not None and busy - others > max_others * (time.perf_counter() - start_round) \
                and 4 * iterations - attempt > iterations - len(rounds):
            dropped += 1
            continue
        rounds.append(seconds)
        if len(rounds) == iterations:
            break
    return {name: statistics.median(r[name] for r in rounds) for name in runners}, dropped


def benchmark(name: str, setting: Dict, args: argparse.Namespace, device: torch.device, dtype: torch.dtype,
              original_package=None) -> Dict:
    """One setting's record (see the module's docstring); `original_package` (`import_original`) adds
    the original's MattingRefine to the rounds."""
    model = build(setting, device, dtype)
    if args.bundled:
        load_checkpoint(model, DEMO_CHECKPOINT)  # copied into the weights: their device and dtype stay
        src, bgr = (bundled_image(folder, setting).to(device, dtype) for folder in ('src', 'bgr'))
    else:
        generator = torch.Generator().manual_seed(0)
        src, bgr = (torch.rand(1, 3, setting['height'], setting['width'], generator=generator).to(device, dtype)
                    for _ in range(2))
    runners = {'eager': torch_runner(model, src, bgr)}
    original_difference = None
    if original_package is not None:
        original = build_original(original_package, setting, model)
        if original is not None:
            runners['original'] = torch_runner(original, src, bgr)
            with torch.inference_mode():  # the same work: the same outputs as our eager model
                original_difference = max(float((a - b).abs().max()) for a, b in zip(model(src, bgr),
                                                                                      original(src, bgr)))
    start = time.perf_counter()
    fast = optimize(model, None if args.variant == 'auto' else args.variant)
    optimize_seconds = time.perf_counter() - start
    runners['optimized'] = torch_runner(fast, src, bgr)
    if device.type == 'cuda' and fast.capturable:
        runners['graphs'] = torch_runner(CUDAGraphs(fast, copy_outputs=False), src, bgr)
    counts = {name: count_operations(runners[name]) for name in runners}
    with tempfile.TemporaryDirectory() as workdir:
        if args.onnx:
            exportable = copy.deepcopy(model)
            exportable.refiner.patch_crop_method = 'roi_align'  # the same crops; unfold has no ONNX export
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')
                runners['onnx_eager'] = onnx_runner(exportable, src, bgr, workdir, 'eager', args.threads)
                runners['onnx_optimized'] = onnx_runner(fast, src, bgr, workdir, 'optimized', args.threads)
        load_before = os.getloadavg()[0]
        seconds, dropped = measure(runners, args.warmup, args.iterations, args.max_others)
    return dict(setting=name, **setting, inputs='bundled' if args.bundled else 'random',
                memory='retained' if args.retain_memory else 'default', device=str(device), precision=args.precision, threads=args.threads,
                iterations=args.iterations, rounds_dropped=dropped,
                load_average=[load_before, os.getloadavg()[0]],
                optimize_seconds=optimize_seconds, variant=fast.device_type,
                operations={name: c.total for name, c in counts.items()},
                launches={name: c.launches for name, c in counts.items()},
                host_syncs={name: len(c.syncs) for name, c in counts.items()},
                original_max_difference=original_difference,
                ms={k: v * 1000 for k, v in seconds.items()}, fps={k: 1 / v for k, v in seconds.items()},
                ratio={k: v / seconds['eager'] for k, v in seconds.items()},
                ratio_original={k: v / seconds['original'] for k, v in seconds.items()} if 'original' in seconds
                else None)


def print_table(records: Sequence[Dict]) -> None:
    print(f"{'setting':16s} {'model':15s} {'ms':>8s} {'fps':>7s} {'/ eager':>8s} {'/ original':>10s} "
          f"{'aten ops':>9s} {'launches':>9s} {'syncs':>6s}")
    for record in records:
        for model, ms in record['ms'].items():
            original = record['ratio_original'][model] if record['ratio_original'] else None
            counts = (f"{record['operations'][model]:9d} {record['launches'][model]:9d} "
                      f"{record['host_syncs'][model]:6d}" if model in record['operations'] else '')
            print(f"{record['setting']:16s} {model:15s} {ms:8.1f} {record['fps'][model]:7.2f} "
                  f"{record['ratio'][model]:8.3f} {'' if original is None else format(original, '10.3f'):10s} {counts}")
        print(f"(optimized: the {record['variant']} variant; aten ops per frame, views included, of which launches "
              "are not views; host syncs per frame)")
        if record['original_max_difference'] is not None:
            print(f"(the original's outputs differ from our eager model's by at most "
                  f"{record['original_max_difference']:.2g})")
        print(f"({record['iterations']} rounds, {record['rounds_dropped']} dropped for other load; load average "
              f"{record['load_average'][0]:.2f} -> {record['load_average'][1]:.2f})")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description='Eager against optimized inference, alternating runs.')
    parser.add_argument('--settings', nargs='+', choices=sorted(SETTINGS), default=list(SETTINGS))
    parser.add_argument('--device', type=check_device_name, default='cpu', help="'cpu', 'cuda', 'cuda:1', or 'auto'")
    parser.add_argument('--precision', choices=sorted(PRECISIONS), default='fp32')
    parser.add_argument('--threads', type=int, default=2, help='CPU threads of PyTorch and ONNX Runtime')
    parser.add_argument('--warmup', type=int, default=2, help='untimed calls of each model first')
    parser.add_argument('--iterations', type=int, default=10, help='timed calls of each model')
    parser.add_argument('--onnx', action='store_true', help='also time both exported files in ONNX Runtime')
    parser.add_argument('--max-others', type=float, default=0.1,
                        help='drop (and run again) rounds during which other processes used more than this '
                             'share of one core (Linux; default 0.1)')
    parser.add_argument('--bundled', action='store_true',
                        help='the bundled demonstration weights (MobileNetV2 settings only) and the bundled '
                             '1920x1080 capture and plate (resized to the setting), instead of random ones: the '
                             'selected patches then follow the subject\'s edges, as in real use')
    parser.add_argument('--original', metavar='DIR',
                        help='a checkout of the original BGMv2 code: its MattingRefine, with the same weights, '
                             'is timed in the same rounds ("original"; not for MobileNetV3, which it lacks)')
    parser.add_argument('--retain-memory', action='store_true',
                        help='keep freed memory in the process (common.memory, as the inference commands do): '
                             'no page faults for fresh pages every frame, for every model timed')
    parser.add_argument('--variant', choices=['auto', 'cpu', 'cuda'], default='auto',
                        help="which variant of the optimized model to build (optimize's device_type): 'auto' is "
                             "the device's; 'cuda' on a CPU runs and counts the GPU code path there")
    parser.add_argument('--json', help='write the records to this file')
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = get_args_parser()
    args = parser.parse_args(argv)
    if args.threads < 1 or args.iterations < 1 or args.warmup < 0:
        parser.error('--threads and --iterations must be at least 1, --warmup at least 0')
    try:
        device = resolve_device(args.device)
    except UserError as error:
        parser.error(str(error))
    dtype = inference_dtype(args.precision, device)
    if dtype != PRECISIONS[args.precision]:
        parser.error(f"--precision {args.precision} does not run on {device}")
    if args.onnx and dtype != torch.float32:
        parser.error('--onnx measures fp32 only')
    if args.bundled and any(SETTINGS[name]['backbone'] != 'mobilenetv2' for name in args.settings):
        parser.error('--bundled: the bundled model has a MobileNetV2 backbone; choose --settings mobilenetv2-hd '
                     'mobilenetv2-4k')
    try:
        if args.json:
            check_output_file(args.json, '--json')
        original_package = import_original(args.original) if args.original else None
    except UserError as error:
        parser.error(str(error))
    retained = retain_freed_memory() if args.retain_memory else False
    if args.retain_memory and not retained:
        print('warning: --retain-memory: not available here (glibc on Linux only); the default allocator runs')
    torch.set_num_threads(args.threads)
    records = []
    for name in args.settings:
        records.append(benchmark(name, SETTINGS[name], args, device, dtype, original_package))
        print_table(records[-1:])
    if args.json:
        write_bytes(args.json, json.dumps(records, indent=1).encode())


if __name__ == '__main__':
    main(sys.argv[1:])
