"""The GPU check: what a GPU machine lent for a quarter of an hour should run, in about 6 minutes.

    python -m scripts.gpu_check --out DIR              # on the GPU machine (scripts/gpu_check.sh runs it)
    python -m scripts.gpu_check --out DIR --dry-run    # on a CPU: every part at tiny sizes

Parts, in this order, each in its own process under a time limit computed from what it runs (`plan`):
a part that would overrun is stopped and keeps what it measured so far (its rows are saved as they come,
in DIR/parts/PART.json), a part with too little time left, or without the packages it needs, is skipped
with a note:
    speed       latency of MattingRefine at HD and 4K, fp32 and fp16, eager, `model.optimize` (the CUDA
                variant) and that replayed as a CUDA graph (`model.graphs`): batch 1 with MobileNetV2 and
                ResNet-50 first, then MobileNetV3, then batch 4 (`speed`)
    train       images/s of each training stage with AMP, the trainer on in-memory samples, cuDNN
                autotuning off and on (`train`; needs kornia)
    video       convert_video on a 1920x1080 clip, with and without --cuda-graphs: model-only and
                end-to-end frames/s (`video`; needs PyAV)
    tests       pytest -m "cuda and not slow"; the dry run rehearses them on the CPU (BGM_CUDA_TESTS_ON_CPU=1)
    slow_tests  pytest -m "cuda and slow" (torch.compile)

Writes DIR/gpu_check.json (every number, the machine, the plan, notes), DIR/cuda_tests.xml and
DIR/cuda_tests_slow.xml (JUnit), and prints a short table last. The exit status is 1 when a test
failed or a part broke off with an error. Only APIs of torch 2.11 and torchvision 0.26 are used,
the versions of the GPU machine.
"""
from .check import failed, main, orchestrate, summary
from .plan import JUNIT, NEEDS, PARTS, SETTINGS, plan_parts
from .pytest_runs import read_junit
from .results import PartResult

__all__ = ['JUNIT', 'NEEDS', 'PARTS', 'PartResult', 'SETTINGS', 'failed', 'main', 'orchestrate', 'plan_parts',
           'read_junit', 'summary']
