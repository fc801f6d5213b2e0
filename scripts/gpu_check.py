"""The GPU check: everything a GPU machine lent for a few minutes should run, in about 4 minutes.

    python -m scripts.gpu_check --out DIR              # on the GPU machine (scripts/gpu_check.sh runs it)
    python -m scripts.gpu_check --out DIR --dry-run    # on a CPU: every part at tiny sizes, in about a minute

Parts, run one after another, each in its own process under a time limit; a part that would overrun is
stopped and keeps what it measured so far, and a part with too little time left is skipped with a note:
    tests       pytest -m "cuda and not slow": the CUDA tests (tests/test_cuda.py, tests/test_precision.py)
    speed       latency of MattingRefine with MobileNetV2, MobileNetV3 and ResNet-50 at HD and 4K, fp32 and
                fp16, batch 1 and 4, eager and `model.optimize`: median of timed calls
                after warm-up calls, each synchronised, random weights, every sampled patch refined
    video       convert_video on a 1920x1080 clip with the demonstration weights: model-only and
                end-to-end frames per second
    train       training throughput (images/s) of each stage with AMP: the trainer itself on samples held
                in memory (the GPU's pace, not the disk's), cuDNN autotuning on (the trainer's choice for
                CUDA) and off
    slow_tests  pytest -m "cuda and slow" (torch.compile) with the time left

Writes DIR/gpu_check.json (every number, the machine, notes) and DIR/cuda_tests.xml,
DIR/cuda_tests_slow.xml (JUnit), and prints a short table last. The exit status is 1 when a test
failed or a part broke off with an error. Only APIs of torch 2.11 and torchvision 0.26 are used,
the versions of the GPU machine.
"""
import argparse
import copy
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from fractions import Fraction
from pathlib import Path
from typing import Dict, Optional

ROOT = Path(__file__).resolve().parents[1]  # run as `python -m scripts.gpu_check` from here

PARTS = ('tests', 'speed', 'video', 'train', 'slow_tests')
JUNIT = {'tests': 'cuda_tests.xml', 'slow_tests': 'cuda_tests_slow.xml'}
DEMO_WEIGHTS = ROOT / 'weights' / 'mattingrefine_mobilenetv2_synthetic_fp16.pth'

# What runs, at which sizes, within how many seconds. A part is not started with less than
# `min_start` seconds left; `budget` caps each part; `total` caps the whole check.
SETTINGS = {
    'gpu': dict(
        device='cuda', total=235,
        budget=dict(tests=120, speed=30, video=20, train=35, slow_tests=75),
        min_start=dict(tests=30, speed=10, video=10, train=10, slow_tests=40),
        speed=dict(backbones=('mobilenetv2', 'mobilenetv3', 'resnet50'), precisions=('fp32', 'fp16'),
                   batches=(1, 4), warmup=3, iterations=10, optimize_reserve=10,
                   # name: (width, height, backbone scale, sample pixels), the paper's settings
                   resolutions={'HD': (1920, 1080, 0.25, 80_000), '4K': (3840, 2160, 0.125, 320_000)}),
        video=dict(size=(1920, 1080), frames=60, runs=(('fp32', 1), ('fp16', 4))),
        train=dict(precision='fp16', steps=20, interval=5, workers=2,
                   # stage: sample size, crop range, batch (the paper's) and in-memory samples
                   stages={'base': (512, (256, 512), 8, 16), 'refine': (2048, (1024, 2048), 4, 8)}),
    ),
    'dry-run': dict(
        device='cpu', total=100,
        budget=dict(tests=30, speed=12, video=12, train=15, slow_tests=20),
        min_start=dict(tests=3, speed=3, video=3, train=3, slow_tests=3),
        speed=dict(backbones=('mobilenetv2', 'mobilenetv3', 'resnet50'), precisions=('fp32', 'bf16'),
                   batches=(1, 2), warmup=1, iterations=2, optimize_reserve=1,
                   resolutions={'HD': (128, 64, 0.25, 300), '4K': (256, 128, 0.125, 1_200)}),
        video=dict(size=(128, 64), frames=4, runs=(('fp32', 1), ('bf16', 2))),
        # One crop shape: oneDNN, like cuDNN's autotuning, prepares its kernels anew for every shape.
        train=dict(precision='bf16', steps=4, interval=2, workers=0,
                   stages={'base': (64, (63, 64), 2, 4), 'refine': (96, (92, 96), 2, 4)}),
    ),
}


# --------------------------------------------------------------------------- results

class PartResult:
    """What one part found: rows and notes, rewritten to `path` after every change, so that a part
    stopped at its time limit leaves what it measured."""

    def __init__(self, path: str):
        self.path, self.data = path, {'rows': [], 'notes': []}

    def row(self, **row) -> None:
        self.data['rows'].append(row)
        self.save()

    def note(self, text: str) -> None:
        print(f'note: {text}', flush=True)
        self.data['notes'].append(text)
        self.save()

    def set(self, **values) -> None:
        self.data.update(values)
        self.save()

    def save(self) -> None:
        write_json(self.data, self.path)


def write_json(data, path: str) -> None:
    from common.files import atomic_write

    def write(temporary: str) -> None:
        with open(temporary, 'w') as f:
            json.dump(data, f, indent=2, default=str)
    atomic_write(path, write)


def time_left(deadline: float) -> float:
    return deadline - time.time()


def machine_info(device_type: str) -> Dict:
    """Versions and the device, for the record."""
    import torch
    import torchvision
    info = dict(python=platform.python_version(), platform=platform.platform(), cpu_count=os.cpu_count(),
                torch=torch.__version__, torchvision=torchvision.__version__, cuda=torch.version.cuda,
                cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None)
    for name in ('onnxruntime', 'onnx', 'av', 'kornia', 'numpy'):
        try:
            info[name] = __import__(name).__version__
        except Exception as error:  # missing, or broken: either way worth recording
            info[name] = f'unavailable ({type(error).__name__})'
    if device_type == 'cuda' and torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(0)
        info.update(gpu=properties.name, gpu_memory_gib=round(properties.total_memory / 2 ** 30, 1),
                    gpu_count=torch.cuda.device_count())
    return info


# --------------------------------------------------------------------------- part: tests

def run_tests(result: PartResult, marker: str, xml_path: str, deadline: float) -> None:
    """pytest on the cuda-marked tests; the outcome is read back from its JUnit file."""
    command = [sys.executable, '-m', 'pytest', '-m', marker, '-p', 'no:cacheprovider', '-q', '-rfEs',
               '--durations=8', f'--junitxml={xml_path}']
    result.set(command=' '.join(command))
    process = subprocess.Popen(command, cwd=str(ROOT))
    status = wait_or_interrupt(process, time_left(deadline))
    result.set(status=status, **read_junit(xml_path))


def wait_or_interrupt(process: subprocess.Popen, seconds: float) -> str:
    """Waits for `process`; past `seconds` interrupts it (Ctrl-C: pytest and the parts save what they
    have), and kills it 15 s later. Returns what happened."""
    try:
        code = process.wait(timeout=max(seconds, 1))
        return 'done' if code == 0 else f'exit status {code}'
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
            return 'stopped at its time limit'
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            return 'killed at its time limit'


def read_junit(path: str) -> Dict:
    """Counts, failures (with the first line of their message), skip reasons and recorded properties."""
    if not os.path.isfile(path):
        return {'junit': f'{path} was not written'}
    counts = {'passed': 0, 'failed': 0, 'errors': 0, 'skipped': 0}
    failures, skips, properties = [], {}, {}
    for case in ElementTree.parse(path).getroot().iter('testcase'):
        name = f"{case.get('classname', '').split('.')[-1]}::{case.get('name')}"
        outcome = 'passed'
        for child in case:
            if child.tag in ('failure', 'error'):
                outcome = 'failed' if child.tag == 'failure' else 'errors'
                failures.append({'test': name, 'message': (child.get('message') or '').splitlines()[:1]})
            elif child.tag == 'skipped':
                outcome = 'skipped'
                reason = child.get('message') or ''
                skips[reason] = skips.get(reason, 0) + 1
            elif child.tag == 'properties':
                properties[name] = {p.get('name'): p.get('value') for p in child.iter('property')}
        counts[outcome] += 1
        properties.setdefault(name, {})['seconds'] = case.get('time')
    return {'counts': counts, 'failures': failures, 'skip_reasons': skips, 'properties': properties}


# --------------------------------------------------------------------------- part: speed

def measure_speed(result: PartResult, settings: Dict, device, deadline: float) -> None:
    import numpy as np
    import torch
    from inference.speed import measure, module_runner
    from model import MattingRefine, optimize

    config = settings['speed']
    result.set(settings={k: v for k, v in config.items()}, cudnn_benchmark=torch.backends.cudnn.benchmark,
               cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
               method='random weights and inputs, sampling mode without oversampling prevention (every '
                      'sample_pixels / 16 patches refined), median of the timed calls, each synchronised')
    dtypes = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}
    models = {}  # one per backbone, on the device, cast in place from row to row
    for resolution, (width, height, scale, pixels) in config['resolutions'].items():
        for precision in config['precisions']:
            for batch in config['batches']:
                for backbone in config['backbones']:
                    key = dict(backbone=backbone, resolution=resolution, width=width, height=height,
                               precision=precision, batch=batch)
                    if result.data['rows'] and time_left(deadline) < 3:  # the first row runs in any case
                        result.row(**key, skipped='time limit of the part')
                        continue
                    if backbone not in models:
                        torch.manual_seed(0)
                        models[backbone] = MattingRefine(backbone).eval().to(device)
                    model = models[backbone].to(dtypes[precision])
                    model.backbone_scale, model.refiner.sample_pixels = scale, pixels
                    model.refiner.prevent_oversampling = False
                    generator = torch.Generator(device=device).manual_seed(0)
                    src, bgr = (torch.rand(batch, 3, height, width, device=device, generator=generator)
                                .to(dtypes[precision]) for _ in range(2))
                    row = dict(key, refined_patches=None)
                    for path in ('eager', 'optimized'):
                        module = model
                        if path == 'optimized':
                            if time_left(deadline) < config['optimize_reserve']:  # optimize and warm up
                                row[path] = 'skipped: time limit of the part'
                                continue
                            try:
                                module = optimize(copy.deepcopy(model))
                            except Exception as error:
                                row[path] = f'failed: {type(error).__name__}: {error}'
                                continue
                        try:
                            runner = module_runner(module, src, bgr, {}, convert=lambda outputs: outputs)
                            seconds, outputs = measure(runner, config['warmup'], config['iterations'])
                        except Exception as error:  # out of memory, say: recorded, the other rows go on
                            row[path] = f'failed: {type(error).__name__}: {str(error)[:300]}'
                            continue
                        median = float(np.median(seconds)) * 1000
                        row[path] = dict(median_ms=round(median, 3),
                                         p90_ms=round(float(np.percentile(seconds, 90)) * 1000, 3),
                                         fps=round(batch * 1000 / median, 2))
                        row['refined_patches'] = int(outputs[5].float().sum())
                        del module, outputs, runner
                    result.row(**row)
                    print(f"speed {backbone} {resolution} {precision} batch {batch}: eager {row.get('eager')}, "
                          f"optimized {row.get('optimized')}", flush=True)
                    del src, bgr
                    if device.type == 'cuda':
                        torch.cuda.empty_cache()


# --------------------------------------------------------------------------- part: video

def make_clip(folder: Path, size, frames: int):
    """A synthetic capture (a subject crossing a scene) as an H.264 clip of `frames` frames at `size`
    (W, H), and its clean plate. Returns (clip path, plate path).

    Drawn and composited at half size, each frame then upscaled: a few seconds at 1920x1080."""
    import cv2
    import numpy as np
    from dataset.synthetic import capture_sample
    from inference.writers import VideoWriter, save_image

    width, height = size
    _, plate, fgr, pha, _ = capture_sample(0, 0, (max(width // 2, 64), max(height // 2, 64)))
    clip, plate_path = folder / 'clip.mp4', folder / 'plate.png'

    def full_size(image):
        return cv2.resize(np.round(image * 255).astype(np.uint8), (width, height), interpolation=cv2.INTER_LINEAR)

    save_image(full_size(plate), str(plate_path))
    writer = VideoWriter(str(clip), Fraction(30))
    try:
        for t in range(frames):
            shift = int((t / max(frames - 1, 1) - 0.5) * 0.3 * pha.shape[1])
            a, f = np.roll(pha, shift, axis=1)[..., None], np.roll(fgr, shift, axis=1)
            writer.write(full_size(f * a + plate * (1 - a))[None], [t])
        writer.close()
    except BaseException:
        writer.abort()
        raise
    return clip, plate_path


def measure_video(result: PartResult, settings: Dict, device, deadline: float) -> None:
    import torch
    import inference_video
    from inference.model import load_model

    config = settings['video']
    width, height = config['size']
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        clip, plate = make_clip(Path(folder), (width, height), config['frames'])
        result.set(clip=dict(width=width, height=height, frames=config['frames'],
                             seconds_to_make=round(time.perf_counter() - start, 2)),
                   outputs='com.mp4 and pha.mp4 (H.264), the demonstration weights, HD settings')
        for precision, chunk in config['runs']:
            key = dict(precision=precision, seq_chunk=chunk)
            if result.data['rows'] and time_left(deadline) < 5:  # the first run goes ahead in any case
                result.row(**key, skipped='time limit of the part')
                continue
            args = inference_video.get_args_parser().parse_args(
                ['--model-checkpoint', str(DEMO_WEIGHTS), '--video-src', str(clip), '--video-bgr', str(plate),
                 '--output-dir', folder, '--device', device.type, '--precision', precision,
                 '--model-refine-sample-pixels', str(min(80_000, width * height // 4))])
            try:
                model, model_device, dtype = load_model(args)
                with torch.inference_mode():  # the first call chooses the kernels: not a frame's cost
                    model(*(torch.rand(chunk, 3, height, width, device=model_device, dtype=dtype) for _ in range(2)))
                throughput = inference_video.convert_video(
                    model, str(clip), os.path.join(folder, f'{precision}-{chunk}'), clean_plate=str(plate),
                    output_types=('com', 'pha'), seq_chunk=chunk, progress=False, device=model_device, dtype=dtype)
            except Exception as error:  # recorded; the other runs go on
                result.row(**key, failed=f'{type(error).__name__}: {error}')
                continue
            result.row(**key, ran_in=str(dtype).replace('torch.', ''), frames=throughput.frames,
                       model_fps=round(throughput.model_fps, 2), end_to_end_fps=round(throughput.fps, 2))
            print(f'video {width}x{height} {precision} seq_chunk {chunk}: {throughput}', flush=True)


# --------------------------------------------------------------------------- part: train

class RepeatedSamples:
    """`count` training items (pha, fgr, bgr) held in memory, repeated to `length`: the trainer reads
    them as it reads files, without the disk or the per-sample augmentation on the CPU."""

    def __init__(self, items, length: int):
        self.items, self.length = items, length

    def __len__(self):
        return self.length

    def __getitem__(self, index):
        return self.items[index % len(self.items)]


def in_memory_samples(stage: str, args, folder: Path, count: int):
    """Items (pha, fgr, bgr) of the synthetic data set through the stage's own per-sample recipe at
    512 px (or less), resized to `args.sample_size`: realistic content at the paper's size in seconds.
    `args`: the stage's parsed command line; its --data-path is written to `folder`."""
    from torch.nn import functional as F
    from dataset.synthetic import generate
    from training.recipe import composition_datasets

    size = min(args.sample_size, 512)
    # 12 samples at least: 10 % of them are held out for validation, which must not be empty.
    generate(folder, count=max(12, count), size=(size, size), seed=0, captures=0)
    small = argparse.Namespace(**{**vars(args), 'sample_size': size})
    train, _ = composition_datasets(small, stage)
    items = []
    for i in range(min(count, len(train))):
        pha, fgr, bgr = (F.interpolate(x[None], (args.sample_size, args.sample_size), mode='bilinear',
                                       align_corners=False)[0] if args.sample_size != size else x for x in train[i])
        items.append(tuple(x.clamp(0, 1).contiguous() for x in (pha, fgr, bgr)))
    return items


def measure_training(result: PartResult, settings: Dict, device, deadline: float) -> None:
    import torch

    import train_base
    import train_refine
    from scripts.train_demo import images_per_second, stop_after
    from training import distributed
    from training.engine import Stage, Trainer

    config = settings['train']
    result.set(method='the trainer (augmentation on the device, losses, AMP, Adam) on in-memory samples, '
                      f"{config['workers']} loader workers; images/s of each logging interval after the first "
                      '(median), and over the whole run including start-up', precision=config['precision'])
    # cuDNN autotuning (the trainer turns it on for CUDA) against off: the random crops change the input
    # shape at every step, and every new shape is tuned anew. Off first: it cannot be slow.
    runs = [(stage, benchmark) for benchmark in ((False, True) if device.type == 'cuda' else (None,))
            for stage in ('base', 'refine')]
    prepared = {}
    with tempfile.TemporaryDirectory() as folder:
        for stage_name, benchmark in runs:
            module = {'base': train_base, 'refine': train_refine}[stage_name]
            sample_size, (crop_min, crop_max), batch, count = config['stages'][stage_name]
            key = dict(stage=stage_name, sample_size=sample_size, crop=[crop_min, crop_max], batch=batch,
                       cudnn_benchmark=benchmark)
            if result.data['rows'] and time_left(deadline) < 8:  # the first run goes ahead in any case
                result.row(**key, skipped='time limit of the part')
                continue
            work = Path(folder) / stage_name
            if stage_name not in prepared:
                small_refine = ['--model-backbone-scale', '0.5', '--model-refine-sample-pixels', '4000'] \
                    if stage_name == 'refine' and sample_size < 256 else []
                args = module.get_args_parser().parse_args([
                    '--data-path', f"synthetic={work / 'data'}", '--dataset-name', 'synthetic',
                    '--background-dataset', 'synthetic', '--model-backbone', 'mobilenetv2',
                    '--model-name', 'throughput', '--device', device.type, '--precision', config['precision'],
                    '--batch-size', str(batch), '--sample-size', str(sample_size), '--crop-min', str(crop_min),
                    '--crop-max', str(crop_max), '--num-workers', str(config['workers']),
                    '--max-steps', str(config['steps']), '--epoch-end', '1000',
                    '--log-train-loss-interval', str(config['interval']), '--log-train-images-interval', '1000000',
                    '--log-valid-interval', '1000000', '--checkpoint-interval', '1000000', '--valid-samples', '1',
                    *small_refine])
                samples = RepeatedSamples(in_memory_samples(stage_name, args, work / 'data', count),
                                          batch * config['steps'])
                stage = Stage(**{**module.STAGE.__dict__,
                                 'datasets': lambda args, s=samples: (s, RepeatedSamples(s.items, 1))})
                prepared[stage_name] = args, stage
            args, stage = prepared[stage_name]
            name = f'{stage_name}-{benchmark}'
            args.checkpoint_dir, args.log_dir = str(work / 'checkpoint' / name), str(work / 'log' / name)
            saved = torch.backends.cudnn.benchmark
            try:
                context = distributed.setup(dict(rank=0, world_size=1, local_rank=0), device)
                trainer = Trainer(stage, args, context)
                if benchmark is not None:
                    torch.backends.cudnn.benchmark = benchmark
                start = time.perf_counter()
                with stop_after(time_left(deadline) - 2):  # the trainer stops at the next step and saves
                    trainer.fit()
                seconds = time.perf_counter() - start
            except Exception as error:  # recorded; the other runs go on
                result.row(**key, failed=f'{type(error).__name__}: {error}')
                continue
            finally:
                torch.backends.cudnn.benchmark = saved
                distributed.cleanup()
            rates = images_per_second(work / 'log' / name / 'throughput')
            steady = sorted(rates[1:]) or rates
            median = round(steady[len(steady) // 2], 2) if steady else None
            result.row(**key, steps=trainer.step, images_per_s=median,
                       images_per_s_whole_run=round(batch * trainer.step / seconds, 2),
                       intervals=[round(r, 2) for r in rates], nonfinite_steps=trainer.nonfinite_steps,
                       grad_scale=trainer.scaler.get_scale() if trainer.scaler.is_enabled() else None)
            print(f'train {stage_name} cudnn.benchmark {benchmark}: images/s per interval {rates}', flush=True)
            del trainer
            if device.type == 'cuda':
                torch.cuda.empty_cache()


# --------------------------------------------------------------------------- the check

def run_part(name: str, mode: str, result_path: str, deadline: float, out: str) -> None:
    """Runs one part in this process (the orchestrator starts a process per part)."""
    settings = SETTINGS[mode]
    result = PartResult(result_path)
    if name in JUNIT:
        marker = 'cuda and not slow' if name == 'tests' else 'cuda and slow'
        run_tests(result, marker, os.path.join(out, JUNIT[name]), deadline)
        return
    import torch
    device = torch.device(settings['device'])
    if device.type == 'cuda' and not torch.cuda.is_available():
        result.set(status='skipped: CUDA is not available')
        return
    measure = {'speed': measure_speed, 'video': measure_video, 'train': measure_training}[name]
    try:
        measure(result, settings, device, deadline)
        result.set(status='done')
    except KeyboardInterrupt:
        result.set(status='stopped at its time limit')


def orchestrate(mode: str, out: str, total: Optional[float], parts=PARTS, budgets: Optional[Dict] = None) -> Dict:
    """Runs `parts` one after another within `total` seconds; `budgets` overrides parts' own limits."""
    settings = copy.deepcopy(SETTINGS[mode])
    settings['budget'].update(budgets or {})
    total = total or settings['total']
    start = time.time()
    deadline = start + total
    report = dict(check=dict(mode=mode, budget_s=total, started=time.strftime('%Y-%m-%d %H:%M:%S %Z')),
                  machine=machine_info(settings['device']), parts={})
    print(f"GPU check ({mode}) on {report['machine'].get('gpu', settings['device'])}, {total:.0f} s in all",
          flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        for name in PARTS:
            if name not in parts:
                report['parts'][name] = dict(status='not asked for (--parts)')
                continue
            left = time_left(deadline)
            limit = min(settings['budget'][name], left)
            if limit < settings['min_start'][name]:
                report['parts'][name] = dict(status=f"skipped: {left:.0f} s left, it needs "
                                                    f"{settings['min_start'][name]} s to start")
                continue
            print(f'--- {name} (at most {limit:.0f} s)', flush=True)
            path = os.path.join(scratch, f'{name}.json')
            part_start = time.time()
            command = [sys.executable, '-m', 'scripts.gpu_check', '--part', name, '--mode', mode, '--result', path,
                       '--deadline', str(part_start + limit), '--out', out]
            # The part's own deadline comes first (and its 15 s of grace for pytest); the process is
            # interrupted only if it overruns them.
            status = wait_or_interrupt(subprocess.Popen(command, cwd=str(ROOT)), limit + 20)
            part = json.load(open(path)) if os.path.isfile(path) else {}
            if name in JUNIT and 'counts' not in part:
                part.update(read_junit(os.path.join(out, JUNIT[name])))
            part['status'] = part.get('status') if status == 'done' else f"{status} ({part.get('status', 'no result')})"
            part['seconds'] = round(time.time() - part_start, 1)
            report['parts'][name] = part
            write_json(report, os.path.join(out, 'gpu_check.json'))
    report['check']['seconds'] = round(time.time() - start, 1)
    write_json(report, os.path.join(out, 'gpu_check.json'))
    return report


def summary(report: Dict) -> str:
    """The short table printed last."""
    check, parts, machine = report['check'], report['parts'], report['machine']
    lines = [f"GPU check ({check['mode']}): {machine.get('gpu', 'no GPU')}, torch {machine['torch']}, "
             f"{check.get('seconds', '?')} s of {check['budget_s']} s"]

    def outcome(row, text):
        """A row's numbers, or why it has none."""
        return row.get('skipped') or row.get('failed') or text()

    for name in ('tests', 'slow_tests'):
        part = parts.get(name, {})
        counts = ', '.join(f'{n} {k}' for k, n in part.get('counts', {}).items() if n)
        lines.append(f"{name:10s} {part.get('status')}: {counts or 'no result'} ({part.get('seconds', 0)} s)")
        for failure in part.get('failures', [])[:10]:
            lines.append(f"  FAILED {failure['test']}: {' '.join(failure['message'])[:160]}")
    speed = parts.get('speed', {})
    lines.append(f"speed      {speed.get('status')}: median ms (frames/s), eager | optimized")
    for row in speed.get('rows', []):
        cells = [f"{v['median_ms']:8.2f} ({v['fps']:7.1f})" if isinstance(v, dict) else f'{str(v)[:40]:>18s}'
                 for v in (row.get('eager'), row.get('optimized'))]
        lines.append(f"  {row['backbone']:11s} {row['resolution']} {row['precision']} b{row['batch']}: "
                     + outcome(row, lambda: ' | '.join(cells)))
    video = parts.get('video', {})
    clip = video.get('clip', {})
    lines.append(f"video      {video.get('status')}: {clip.get('width')}x{clip.get('height')}, "
                 f"{clip.get('frames')} frames")
    for row in video.get('rows', []):
        lines.append(f"  {row['precision']} seq_chunk {row['seq_chunk']}: " + outcome(
            row, lambda: f"model {row['model_fps']} frames/s, end to end {row['end_to_end_fps']} frames/s"))
    train = parts.get('train', {})
    lines.append(f"train      {train.get('status')}: {train.get('precision')}, images/s (median interval; "
                 "whole run)")
    for row in train.get('rows', []):
        lines.append(f"  {row['stage']:6s} {row['sample_size']} px, batch {row['batch']}, cudnn.benchmark "
                     f"{row.get('cudnn_benchmark')}: " + outcome(
                         row, lambda: f"{row['images_per_s']}; {row['images_per_s_whole_run']}"))
    for name in PARTS:
        for note in parts.get(name, {}).get('notes', []):
            lines.append(f'note ({name}): {note}')
    return '\n'.join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', default=os.environ.get('OUT'),
                        help='folder for gpu_check.json and the JUnit files (default: $OUT)')
    parser.add_argument('--dry-run', action='store_true', help='on the CPU, tiny sizes, a short budget')
    parser.add_argument('--budget', type=float,
                        help=f"seconds for the whole check (default {SETTINGS['gpu']['total']}; dry run "
                             f"{SETTINGS['dry-run']['total']})")
    parser.add_argument('--parts', default=','.join(PARTS),
                        help=f"the parts to run, comma-separated (default: all, {','.join(PARTS)})")
    parser.add_argument('--part-budget', action='append', default=[], metavar='PART=SECONDS',
                        help='another time limit for a part, e.g. tests=200 for a second try (repeatable)')
    parser.add_argument('--part', choices=PARTS, help=argparse.SUPPRESS)
    parser.add_argument('--mode', choices=sorted(SETTINGS), help=argparse.SUPPRESS)
    parser.add_argument('--result', help=argparse.SUPPRESS)
    parser.add_argument('--deadline', type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.out:
        parser.error('give --out DIR or set OUT')
    os.makedirs(args.out, exist_ok=True)
    if args.part:
        run_part(args.part, args.mode, args.result, args.deadline, args.out)
        return 0
    parts = args.parts.split(',')
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"--parts: unknown part(s) {', '.join(unknown)}; the parts are {', '.join(PARTS)}")
    budgets = {}
    for text in args.part_budget:
        name, _, seconds = text.partition('=')
        try:
            budgets[name] = float(seconds)
        except ValueError:
            budgets[name] = None
        if name not in PARTS or budgets[name] is None or budgets[name] <= 0:
            parser.error(f"--part-budget {text}: expected PART=SECONDS with a part among {', '.join(PARTS)}")
    report = orchestrate('dry-run' if args.dry_run else 'gpu', args.out, args.budget, parts, budgets)
    print(summary(report), flush=True)
    return 1 if failed(report) else 0


def failed(report: Dict) -> bool:
    """A test failed, or a part ended with an error (a part stopped at its time limit has not failed)."""
    parts = report['parts'].values()
    return any(part.get('counts', {}).get('failed') or part.get('counts', {}).get('errors')
               or str(part.get('status', '')).startswith('exit status') for part in parts)


if __name__ == '__main__':
    from common.memory import retain_freed_memory
    retain_freed_memory()  # as the inference commands do (the video part runs convert_video here)
    sys.exit(main())
