"""The training part: images/s (and steps/s) of each stage under AMP, the trainer itself on samples
held in memory (the GPU's pace, not the disk's), with cuDNN autotuning off and on (the trainer's
choice for CUDA: random crops give it a new shape at nearly every step)."""
import argparse
import contextlib
import os
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict

from .plan import train_run_seconds
from .results import PartResult, time_left


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


@contextlib.contextmanager
def stop_after(seconds: float):
    """Sends this process SIGTERM after `seconds`: the trainer stops at the next step and saves its
    checkpoint, as it does when a cluster preempts it (a signal before the trainer listens is ignored)."""
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    timer = threading.Timer(max(seconds, 0.0), os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        signal.signal(signal.SIGTERM, previous)


def images_per_second(log_dir: Path) -> list:
    """The images/s a training run logged to TensorBoard in `log_dir`, one per logging interval."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(log_dir), size_guidance={'scalars': 0})
    events.Reload()
    tag = 'train/images_per_s'
    return [e.value for e in events.Scalars(tag)] if tag in events.Tags()['scalars'] else []


def stage_arguments(module, stage: str, config: Dict, device, work: Path, steps: int):
    """The stage's command line for a throughput run on in-memory samples."""
    sample_size, (crop_min, crop_max), batch, _ = config['stages'][stage]
    small_refine = ['--model-backbone-scale', '0.5', '--model-refine-sample-pixels', '4000'] \
        if stage == 'refine' and sample_size < 256 else []
    return module.get_args_parser().parse_args([
        '--data-path', f"synthetic={work / 'data'}", '--dataset-name', 'synthetic',
        '--background-dataset', 'synthetic', '--model-backbone', 'mobilenetv2',
        '--model-name', 'throughput', '--device', device.type, '--precision', config['precision'],
        '--batch-size', str(batch), '--sample-size', str(sample_size), '--crop-min', str(crop_min),
        '--crop-max', str(crop_max), '--num-workers', str(config['workers']),
        '--max-steps', str(steps), '--epoch-end', '1000', '--log-train-images-interval', '1000000',
        '--log-valid-interval', '1000000', '--checkpoint-interval', '1000000', '--valid-samples', '1',
        *small_refine])


def measure_training(result: PartResult, settings: Dict, device, deadline: float) -> None:
    import torch

    import train_base
    import train_refine
    from training import distributed
    from training.engine import Stage, Trainer

    config = settings['train']
    result.set(method='the trainer (augmentation on the device, losses, AMP, Adam) on in-memory samples, '
                      f"{config['workers']} loader workers; images/s of each logging interval after the first "
                      '(median), and over the whole run including start-up', precision=config['precision'])
    if device.type != 'cuda':
        result.note('cudnn.benchmark has no effect on the CPU: its runs rehearse the GPU\'s')
    prepared = {}
    with tempfile.TemporaryDirectory() as folder:
        for stage_name, benchmark, steps, interval in config['runs']:
            module = {'base': train_base, 'refine': train_refine}[stage_name]
            sample_size, (crop_min, crop_max), batch, count = config['stages'][stage_name]
            key = dict(stage=stage_name, sample_size=sample_size, crop=[crop_min, crop_max], batch=batch,
                       cudnn_benchmark=benchmark)
            expected = train_run_seconds(config, stage_name, benchmark, steps)
            if result.data['rows'] and time_left(deadline) < expected:  # the first run goes ahead in any case
                result.row(**key, skipped='time limit of the part')
                continue
            work = Path(folder) / stage_name
            start = time.perf_counter()
            if stage_name not in prepared:
                longest = max(run[2] for run in config['runs'] if run[0] == stage_name)
                args = stage_arguments(module, stage_name, config, device, work, longest)
                samples = RepeatedSamples(in_memory_samples(stage_name, args, work / 'data', count), batch * longest)
                stage = Stage(**{**module.STAGE.__dict__,
                                 'datasets': lambda args, s=samples: (s, RepeatedSamples(s.items, 1))})
                prepared[stage_name] = args, stage
                result.note(f'{stage_name}: {len(samples.items)} samples of {sample_size} px made in '
                            f'{time.perf_counter() - start:.1f} s')
            args, stage = prepared[stage_name]
            name = f'{stage_name}-{benchmark}'
            args.max_steps, args.log_train_loss_interval = steps, interval
            args.checkpoint_dir, args.log_dir = str(work / 'checkpoint' / name), str(work / 'log' / name)
            saved = torch.backends.cudnn.benchmark
            try:
                context = distributed.setup(dict(rank=0, world_size=1, local_rank=0), device)
                trainer = Trainer(stage, args, context)
                torch.backends.cudnn.benchmark = benchmark  # after the trainer, which turns it on for CUDA
                begin = time.perf_counter()
                with stop_after(time_left(deadline) - 2):  # the trainer stops at the next step and saves
                    trainer.fit()
                seconds = time.perf_counter() - begin
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
                       steps_per_s=round(median / batch, 3) if median else None,
                       images_per_s_whole_run=round(batch * trainer.step / seconds, 2),
                       intervals=[round(r, 2) for r in rates], nonfinite_steps=trainer.nonfinite_steps,
                       grad_scale=trainer.scaler.get_scale() if trainer.scaler.is_enabled() else None,
                       run_seconds=round(time.perf_counter() - start, 2))
            print(f'train {stage_name} cudnn.benchmark {benchmark}: images/s per interval {rates}', flush=True)
            del trainer
            if device.type == 'cuda':
                torch.cuda.empty_cache()
