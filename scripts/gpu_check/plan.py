"""What the GPU check runs, at which sizes, and how long each part should take.

A part's time limit (its budget) is computed from what it runs: start-up, then every row's warm-up and
timed calls at an expected time per call, times a margin. The expected times on the GPU are estimates
for an H100 (generous, from what these models cost; no GPU had run the check when they were set); the
dry run's were measured on the 2-core CPU where the check was written. Every part records its seconds
beside its budget (and the speed and training rows their own seconds), so a GPU session can correct
the estimates here.
"""
import math
from typing import Dict, Iterator, List

# The order the parts run in: the measurements a user needs first, the tests, then torch.compile.
PARTS = ('speed', 'train', 'video', 'tests', 'slow_tests')
JUNIT = {'tests': 'cuda_tests.xml', 'slow_tests': 'cuda_tests_slow.xml'}
# Packages beyond torch that a part imports (import name: what it is); a part whose packages are missing
# is skipped, saying which. The tests part runs without them: the test modules that import them skip.
NEEDS = {'video': {'av': 'PyAV'}, 'train': {'kornia': 'kornia', 'tensorboard': 'TensorBoard'}}
OPTIONAL = ('av', 'kornia', 'tensorboard')
# The speed part's three ways of running a model: as written, `model.optimize` (the CUDA variant), and
# the optimized model replayed as a CUDA graph (`model.graphs.CUDAGraphs`; on CPU tensors it runs the
# module uncaptured, so the dry run times the wrapper without a capture).
PATHS = ('eager', 'optimized', 'graphs')
# name: (width, height, backbone scale, sample pixels), the paper's settings
RESOLUTIONS = {'HD': (1920, 1080, 0.25, 80_000), '4K': (3840, 2160, 0.125, 320_000)}
# Speed rows in this order: what a user needs first (batch 1, MobileNetV2 and ResNet-50), then the rest.
SPEED_GROUPS = (dict(backbones=('mobilenetv2', 'resnet50'), batches=(1,)),
                dict(backbones=('mobilenetv3',), batches=(1,)),
                dict(backbones=('mobilenetv2', 'resnet50', 'mobilenetv3'), batches=(4,)))

SETTINGS = {
    'gpu': dict(
        device='cuda', total=360, margin=1.4,
        start_s=10,  # a part's own process: Python, torch, the CUDA context, cuDNN's libraries
        min_start=dict(speed=20, train=30, video=20, tests=40, slow_tests=45),
        speed=dict(
            variant='cuda', precisions=('fp32', 'fp16'), warmup=3, iterations=10, resolutions=RESOLUTIONS,
            groups=SPEED_GROUPS,
            # Expected: ms of one eager call per image (MobileNetV2, batch 1), the other backbones and
            # paths relative to it, seconds to build a model and optimize it (per backbone and precision)
            # and the other costs of a row (first calls of a shape, the capture, freeing memory).
            call_ms={'HD': 8, '4K': 16}, backbone_factor=dict(mobilenetv2=1.0, mobilenetv3=1.2, resnet50=1.5),
            path_factor=dict(eager=1.0, optimized=0.8, graphs=0.7), build_s=2.0, row_s=0.5),
        train=dict(
            precision='fp16', workers=2,
            # stage: sample size, crop range, batch (the paper's) and in-memory samples
            stages={'base': (512, (256, 512), 8, 16), 'refine': (2048, (1024, 2048), 4, 8)},
            # (stage, cuDNN autotuning, steps, logging interval) in this order. Autotuning tunes every new
            # crop shape, i.e. nearly every step: fewer steps measure it as well.
            runs=(('base', False, 20, 5), ('refine', False, 20, 5), ('base', True, 6, 3), ('refine', True, 6, 3)),
            # Expected: making a stage's samples, a trainer's start, a step without and with autotuning.
            prepare_s=dict(base=7, refine=8), run_s=4, step_s=dict(base=0.15, refine=0.6),
            autotuned_step_s=dict(base=1.0, refine=2.5)),
        video=dict(
            size=(1920, 1080), frames=60,
            # (precision, frames per model call, --cuda-graphs)
            runs=(('fp32', 1, False), ('fp32', 1, True), ('fp16', 4, False), ('fp16', 4, True)),
            # Expected: making the clip, loading and warming a model up, end-to-end frames/s (H.264 both ways).
            clip_s=6, load_s=4, fps=20),
        tests=dict(expected_s=90),  # rehearsed on 2 CPU cores: 67 ~ 115 s, most of it the CPU's share
        slow_tests=dict(expected_s=75),  # torch.compile of MattingRefine, from a cold cache
    ),
    'dry-run': dict(
        # The CPU is shared with other work, which makes its timings vary 3-fold: a wide margin, and one
        # thread per process (two threads that wait on each other while other processes run were 7 to 9
        # times slower than one, measured on the 2-core machine).
        device='cpu', total=700, margin=4, threads=1,
        start_s=6,
        min_start=dict(speed=3, train=3, video=3, tests=3, slow_tests=3),
        speed=dict(
            variant='cuda', precisions=('fp32', 'bf16'), warmup=1, iterations=2,
            resolutions={'HD': (128, 64, 0.25, 300), '4K': (256, 128, 0.125, 1_200)},
            groups=SPEED_GROUPS[:2] + (dict(SPEED_GROUPS[2], batches=(2,)),),
            call_ms={'HD': 12, '4K': 15}, backbone_factor=dict(mobilenetv2=1.0, mobilenetv3=1.2, resnet50=1.8),
            path_factor=dict(eager=1.0, optimized=1.0, graphs=1.0), build_s=0.6, row_s=0.1),
        # One crop shape: oneDNN, like cuDNN's autotuning, prepares its kernels anew for every shape.
        # cudnn.benchmark does nothing on the CPU: the runs rehearse the GPU's.
        train=dict(
            precision='bf16', workers=0,
            stages={'base': (64, (63, 64), 2, 4), 'refine': (96, (92, 96), 2, 4)},
            runs=(('base', False, 4, 2), ('refine', False, 4, 2), ('base', True, 4, 2), ('refine', True, 4, 2)),
            prepare_s=dict(base=0.5, refine=0.5), run_s=1, step_s=dict(base=0.1, refine=0.1),
            autotuned_step_s=dict(base=0.1, refine=0.1)),
        video=dict(size=(128, 64), frames=4,
                   runs=(('fp32', 1, False), ('fp32', 1, True), ('bf16', 2, False), ('bf16', 2, True)),
                   clip_s=0.5, load_s=1, fps=10),
        # The CUDA tests rehearsed on the CPU (BGM_CUDA_TESTS_ON_CPU=1): 67 s measured with one thread
        # while other work ran (115 s with two).
        tests=dict(expected_s=90, env={'BGM_CUDA_TESTS_ON_CPU': '1', 'OMP_NUM_THREADS': '1'}),
        slow_tests=dict(expected_s=20),  # collected and skipped (torch.compile is not rehearsed): 17.5 s
    ),
}


# --------------------------------------------------------------------------- speed rows

def speed_rows(config: Dict) -> Iterator[Dict]:
    """The speed part's rows in the order they run: backbone, resolution, precision, batch."""
    for group in config['groups']:
        for batch in group['batches']:
            for backbone in group['backbones']:
                for resolution, (width, height, scale, pixels) in config['resolutions'].items():
                    for precision in config['precisions']:
                        yield dict(backbone=backbone, resolution=resolution, width=width, height=height,
                                   scale=scale, sample_pixels=pixels, precision=precision, batch=batch)


def speed_call_seconds(config: Dict, row: Dict, path: str) -> float:
    """Expected seconds of one call on `path` for `row`."""
    return (config['call_ms'][row['resolution']] * row['batch'] * config['backbone_factor'][row['backbone']]
            * config['path_factor'][path] / 1000)


def speed_row_seconds(config: Dict, row: Dict, path: str) -> float:
    """Expected seconds of one path of a row: its warm-up and timed calls (a capture takes 3 more)."""
    calls = config['warmup'] + config['iterations'] + (3 if path == 'graphs' else 0)
    return calls * speed_call_seconds(config, row, path)


def speed_seconds(config: Dict) -> float:
    rows = list(speed_rows(config))
    models = {(row['backbone'], row['precision']) for row in rows}
    return (len(models) * config['build_s']
            + sum(config['row_s'] + sum(speed_row_seconds(config, row, path) for path in PATHS) for row in rows))


# --------------------------------------------------------------------------- training and video runs

def train_run_seconds(config: Dict, stage: str, autotuned: bool, steps: int) -> float:
    step = (config['autotuned_step_s'] if autotuned else config['step_s'])[stage]
    return config['run_s'] + steps * step


def train_seconds(config: Dict) -> float:
    stages = {run[0] for run in config['runs']}
    return (sum(config['prepare_s'][stage] for stage in stages)
            + sum(train_run_seconds(config, stage, bool(autotuned), steps)
                  for stage, autotuned, steps, _ in config['runs']))


def video_run_seconds(config: Dict) -> float:
    return config['load_s'] + config['frames'] / config['fps']


def video_seconds(config: Dict) -> float:
    return config['clip_s'] + len(config['runs']) * video_run_seconds(config)


# --------------------------------------------------------------------------- the plan

def plan_parts(settings: Dict) -> Dict[str, Dict]:
    """part -> {'expected_s', 'budget_s'}: the expected seconds of what it runs, and its time limit
    (the margin times that)."""
    start = settings['start_s']
    expected = {'speed': start + speed_seconds(settings['speed']), 'train': start + train_seconds(settings['train']),
                'video': start + video_seconds(settings['video']),
                # pytest's own start-up is part of these
                'tests': settings['tests']['expected_s'], 'slow_tests': settings['slow_tests']['expected_s']}
    return {name: dict(expected_s=round(seconds, 1), budget_s=math.ceil(settings['margin'] * seconds))
            for name, seconds in expected.items()}


def describe(parts: Dict[str, Dict], total: float) -> List[str]:
    """The plan as printed at the start."""
    lines = [f"plan: {name} ~{p['expected_s']:.0f} s (at most {p['budget_s']} s)" for name, p in parts.items()]
    lines.append(f"plan: ~{sum(p['expected_s'] for p in parts.values()):.0f} s expected, {total:.0f} s at most in all")
    return lines
