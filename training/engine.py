"""The training loop both stages share: data, mixed precision, DDP, checkpoints, preemption, logging.

A trainer describes its stage with a `Stage` (how to build the model and its optimizer, how to augment
a batch, how to compute the losses) and calls `run(stage, args, prog)`. A user's mistake (a missing or
damaged file, an unwritable folder, a full disk, options that do not fit) is a `UserError`, which
`run` reports as one line, `prog: error: message`, with exit status 1. Stop signals (Ctrl-C among them)
save and stop the run (training.stopping); the progress of the whole run is one bar (training.progress);
which weight files stay is training.checkpoint_keeping's part, and validation training.validation's.
"""
import functools
import hashlib
import math
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Callable, Dict, NamedTuple, Optional, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from torch.utils.tensorboard import SummaryWriter
from torchvision.utils import make_grid
from tqdm import tqdm

from . import distributed
from .checkpoint_keeping import KeptCheckpoints
from .options import available_cpus, default_num_workers
from .progress import progress_bar, run_steps
from .state import (TRAINING_STATE, describe_mismatch, find_resume_path, gather_rng_states, load_training_state,
                    remove_stale_temporaries, save_training_state, save_weights, scheduled_weights, set_rng_state,
                    step_unless, uncount_steps, unwrap)
from .stopping import INTERRUPT_EXIT, REQUEUE_SIGNAL, StopRequest, ignore_stop_signals
from .validation import Validator
from common.devices import autocast_precision, resolve_device
from common.errors import UserError, exit_with_error

AUTOCAST = {'fp32': None, 'fp16': torch.float16, 'bf16': torch.bfloat16}
# The host reads what the steps leave on the device (non-finite losses, skipped steps) and agrees on a stop
# signal with the other ranks every FLAG_INTERVAL steps (and at log and save steps); the steps between wait for
# nothing, and a signal stops the run at most FLAG_INTERVAL - 1 steps late (seconds; Slurm warns minutes ahead).
FLAG_INTERVAL = 10


@dataclass
class Stage:
    """What differs between the base and the refine stage.

    build_model(args) -> nn.Module
    optimizer(model, args) -> torch.optim.Optimizer, its parameter groups named ('name') for the logs
    datasets(args) -> (train_set, valid_set), items (pha, fgr, bgr) as CompositionDataset gives them
    batch_augment(args, generator) -> a BatchAugment: its draw (the host's part) and apply (the device's)
    losses(model, src, bgr, true_pha, true_fgr) -> (terms, outputs): loss terms by name, 'total' among
        them, and predictions by name ('pha', 'fgr', 'err', optionally 'ref') for logging
    sync_batchnorm: convert BatchNorm to SyncBatchNorm under DDP
    The callables must be module-level functions: a plain start on several GPUs pickles the stage
    into the processes it spawns.
    """
    name: str
    build_model: Callable
    optimizer: Callable
    datasets: Callable
    batch_augment: Callable
    losses: Callable
    sync_batchnorm: bool = False


class StepResult(NamedTuple):
    """What one training step leaves for logging and for the decision to go on."""
    terms: Dict[str, torch.Tensor]    # loss terms by name, 'total' among them
    outputs: Dict[str, torch.Tensor]  # predictions by name ('pha', 'fgr', 'err', 'ref')
    inputs: tuple                     # (src, bgr, true pha) of the batch, as the model saw them
    images: int                       # images of the step, over all ranks


def step_generator(seed: int, rank: int, step: int) -> torch.Generator:
    """Randomness of the batch augmentation of one step: reproducible on resume, distinct per rank."""
    return torch.Generator().manual_seed((seed * 1_000_003 + rank) * 1_000_000_007 + step)


class ResumableSampler(DistributedSampler):
    """DistributedSampler that can start part-way through an epoch (to resume at the exact step)."""

    def __init__(self, dataset, num_replicas: int, rank: int, seed: int):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.start = 0

    def __iter__(self):
        indices = list(super().__iter__())
        return iter(indices[self.start:])

    def __len__(self):
        return self.num_samples - self.start


def lr_factor(step: int, schedule: str, decay_steps: int, warmup_steps: int) -> float:
    """What every base learning rate is multiplied by at optimizer step `step` (counted from 0)."""
    factor = min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0
    if schedule == 'cosine':
        factor *= 0.5 * (1 + math.cos(math.pi * min(step, decay_steps) / decay_steps))
    return factor


def check_writable(folder: str, option: str, value: str) -> None:
    """Creates `folder` and writes a nameless file in it; UserError naming the option if that fails."""
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise UserError(f'{option} {value}: cannot write to {folder} ({error.strerror or error})') from None


def run(stage: Stage, args, prog: str) -> int:
    """Entry point of a trainer: launches the processes of the job and trains in each. Returns the exit
    status for the command line: 0, or INTERRUPT_EXIT (130) after a Ctrl-C (saved and stopped) - a return,
    not an exit, so that a caller in the same process (scripts/train_demo.py) goes on as after SIGTERM.

    A UserError ends the program with `prog: error: message` on stderr and exit status 1; a second Ctrl-C
    (or one before training starts) with one line saying so and status 130, without a traceback.
    """
    try:
        return distributed.launch(functools.partial(train, stage), args, resolve_device(args.device), args.nproc,
                                  prog) or 0
    except UserError as error:
        exit_with_error(prog, error)
    except KeyboardInterrupt:
        tqdm.write(f'{prog}: interrupted by Ctrl-C; nothing was saved since the last checkpoint', file=sys.stderr)
        raise SystemExit(INTERRUPT_EXIT) from None


def train(stage: Stage, args, context: distributed.DistributedContext) -> int:
    """Trains in this process; returns INTERRUPT_EXIT when a Ctrl-C stopped the run, else 0."""
    try:
        trainer = Trainer(stage, args, context)
        trainer.fit()
        return INTERRUPT_EXIT if trainer.stopped_by == signal.SIGINT else 0
    finally:
        distributed.cleanup()


class Trainer:
    @staticmethod
    def sync_batchnorm(stage: Stage, context: distributed.DistributedContext) -> bool:
        """SyncBatchNorm where the stage asks for it and it can run: distributed CUDA (not gloo on CPU)."""
        return stage.sync_batchnorm and context.distributed and context.device.type == 'cuda'

    def __init__(self, stage: Stage, args, context: distributed.DistributedContext):
        self.stage, self.args, self.context = stage, args, context
        self.device = context.device
        self.precision = autocast_precision(args.precision, self.device)
        self.per_rank_batch = self.check_batch_size()
        self.checkpoint_dir = os.path.join(args.checkpoint_dir, args.model_name)
        self.log_dir = os.path.join(args.log_dir, args.model_name)
        self.kept = KeptCheckpoints(self.checkpoint_dir, args.keep_last, args.best_metric)
        self.prepare_folders()
        self.seed_and_choose_algorithms()
        self.build_data()
        self.build_model()
        self.epoch, self.step, self.step_in_epoch, self.nonfinite_steps = args.epoch_start, 0, 0, 0
        # On the device, counted at each step (update): non-finite losses, the run of them up to the last step,
        # the longest run, skipped steps; and on the host, at the last read_flags: losses, skipped, its step.
        self.flags, self.flags_read = torch.zeros(4, device=self.device), (0, 0, 0)
        self.saved: Dict[tuple, torch.Tensor] = {}  # the optimizer's tensors before a step (step_unless)
        resume = find_resume_path(args.resume, self.checkpoint_dir)
        if resume is not None:
            self.restore(resume)
        if context.distributed:
            self.model = DistributedDataParallel(self.model,
                                                 device_ids=[self.device] if self.device.type == 'cuda' else None)
        self.writer = SummaryWriter(self.log_dir) if context.is_main else None
        self.stop, self.stopped_by = StopRequest(), None

    def check_batch_size(self) -> int:
        """The batch of each process; UserError where --batch-size does not fit the job."""
        batch_size, world_size = self.args.batch_size, self.context.world_size
        if batch_size % world_size != 0:
            raise UserError(f'--batch-size {batch_size} does not divide by the {world_size} processes '
                            'of the job: the batch is split evenly over them')
        per_rank = batch_size // world_size
        bn_batch = batch_size if self.sync_batchnorm(self.stage, self.context) else per_rank
        if bn_batch < 2:
            raise UserError(f'--batch-size {batch_size} gives BatchNorm batches of {bn_batch} image: the ASPP '
                            'pooling branch needs at least 2 (its statistics are over one value per image)')
        return per_rank

    def prepare_folders(self) -> None:
        """Before any work: a folder that cannot be written would otherwise fail at the first save."""
        if self.context.is_main:
            check_writable(self.checkpoint_dir, '--checkpoint-dir', self.args.checkpoint_dir)
            check_writable(self.log_dir, '--log-dir', self.args.log_dir)
            for name in remove_stale_temporaries(self.checkpoint_dir):
                self.log(f'Removed {os.path.join(self.checkpoint_dir, name)}, left by an interrupted write')

    def seed_and_choose_algorithms(self) -> None:
        """Seeds, and cuDNN's benchmark mode off. The training crops change shape at every step (the recipe
        draws h and w anew: 256 x 256 shapes in the base stage, 256 x 256 multiples of 4 in the refine stage),
        and benchmark mode times every convolution's algorithms afresh for each new shape, which would then
        happen at nearly every step. Rounding the crops to a few shapes would let it pay off, but changes the
        recipe's crop distribution (by up to 31 px a side at multiples of 32); cuDNN's heuristic choice needs
        no search. The original did not turn it on either."""
        torch.manual_seed(self.args.seed + self.context.rank)
        torch.backends.cudnn.benchmark = False
        if self.args.deterministic:
            torch.use_deterministic_algorithms(True)
            os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')

    def build_data(self) -> None:
        """The data sets, a sampler that can start part-way through an epoch, and the loader."""
        args = self.args
        self.train_set, self.valid_set = self.stage.datasets(args)
        self.sampler = ResumableSampler(self.train_set, self.context.world_size, self.context.rank, args.seed)
        self.num_workers = args.num_workers
        if self.num_workers is None:
            self.num_workers = default_num_workers(distributed.cpus_per_process(self.context, available_cpus()))
        self.loader = DataLoader(self.train_set, batch_size=self.per_rank_batch, sampler=self.sampler, drop_last=True,
                                 num_workers=self.num_workers, pin_memory=self.device.type == 'cuda',
                                 worker_init_fn=ignore_stop_signals,
                                 # Its own generator: drawing worker seeds from the global one would
                                 # shift the dropout randomness of a resumed run.
                                 generator=torch.Generator().manual_seed(args.seed))
        self.steps_per_epoch = len(self.train_set) // args.batch_size
        if self.steps_per_epoch == 0:
            raise UserError(f'the training set has {len(self.train_set)} samples, fewer than one batch of '
                            f'{args.batch_size}: lower --batch-size')

    def build_model(self) -> None:
        """The model on its device and memory format, its optimizer (the recipe's), the learning-rate
        schedule's length and the gradient scaler of float16."""
        args = self.args
        self.memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
        model = self.stage.build_model(args).to(self.device, memory_format=self.memory_format)
        if self.sync_batchnorm(self.stage, self.context):
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model
        self.optimizer = self.stage.optimizer(model, args)
        self.base_lrs = [group['lr'] for group in self.optimizer.param_groups]
        self.decay_steps = args.lr_decay_steps or args.max_steps or (
            (args.epoch_end - args.epoch_start) * self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == 'fp16')
        self.validator = Validator(self.valid_set, max(1, args.batch_size // self.context.world_size), self.device,
                                   self.memory_format)

    # ------------------------------------------------------------------ checkpoints

    def restore(self, path: str) -> None:
        # On the CPU: the random generator states must stay there; load_state_dict moves the rest.
        state = load_training_state(path, 'cpu')
        model = unwrap(self.model)
        try:
            model.load_state_dict(state['model'])
            self.optimizer.load_state_dict(state['optimizer'])
            if state['scaler']:  # empty when saved without float16 (on the CPU, say): a fresh scaler calibrates
                self.scaler.load_state_dict(state['scaler'])
        except (RuntimeError, ValueError, KeyError) as error:
            raise UserError(f'--resume {path}: {describe_mismatch(model, state["model"], self.args)}') from error
        self.epoch, self.step = state['epoch'], state['step']
        self.step_in_epoch, self.nonfinite_steps = state['step_in_epoch'], state.get('nonfinite_steps', 0)
        self.kept.load_state_dict(state.get('checkpoints') or {})
        epoch_finished = self.step_in_epoch >= self.steps_per_epoch
        if self.context.is_main:
            # The weights of the restored step are exactly these: write the files its step was due to
            # leave, should the run have been killed before they were (under the schedule it ran with
            # or the one given now).
            saved_args = state.get('args') or {}
            due = {name for interval, max_steps in (
                       (saved_args.get('checkpoint_interval'), saved_args.get('max_steps')),
                       (self.args.checkpoint_interval, self.args.max_steps)) if interval
                   for name in scheduled_weights(self.epoch, self.step, epoch_finished, interval, max_steps)}
            for name in sorted(due):
                weights = os.path.join(self.checkpoint_dir, name)
                if not os.path.exists(weights):
                    save_weights(model, weights)
                    self.kept.wrote(name, self.step)
                    self.log(f'Wrote {weights}, missing, from the restored step {self.step}')
        if epoch_finished:
            self.epoch, self.step_in_epoch = self.epoch + 1, 0
        rng = state.get('rng') or []
        if len(rng) == self.context.world_size:
            set_rng_state(rng[self.context.rank])
        self.log(f'Resumed from {path} at epoch {self.epoch}, step {self.step}')

    def save(self, weights: Sequence[str] = ()) -> None:
        """Writes the weight files named, then the training state (so that a state never exists without
        the weights its step was due to leave). All ranks call this (the RNG states are gathered); rank 0
        writes, and every rank raises if it could not."""
        rng = gather_rng_states(self.context.world_size)
        error = None
        if self.context.is_main:
            try:
                for name in weights:
                    save_weights(self.model, os.path.join(self.checkpoint_dir, name))
                    self.kept.wrote(name, self.step)
                save_training_state(os.path.join(self.checkpoint_dir, TRAINING_STATE), self.model, self.optimizer,
                                    self.scaler, self.epoch, self.step, self.step_in_epoch, self.nonfinite_steps,
                                    self.args, rng, self.kept.state_dict())
                # After the state that lists them: a kill in between leaves files, never a state that lost them.
                self.kept.prune()
            except UserError as caught:
                error = caught
        # Also the barrier after the write: the other ranks learn whether rank 0 succeeded.
        failed = distributed.any_rank(torch.tensor([float(error is not None)]), self.context)
        if error is not None:
            raise error
        if failed[0]:
            raise UserError('rank 0 could not write a checkpoint (its message says why)')

    def completed(self) -> Optional[str]:
        """Why the run has nothing left to train, or None."""
        if self.args.max_steps is not None and self.step >= self.args.max_steps:
            return f'it reached --max-steps {self.args.max_steps} (at step {self.step})'
        if self.epoch >= self.args.epoch_end:
            return f'it finished its last epoch, {self.args.epoch_end - 1} (--epoch-end {self.args.epoch_end})'
        return None

    # ------------------------------------------------------------------ loop

    def fit(self) -> None:
        done = self.completed()
        if done:
            self.log(f'The run is complete: {done}; nothing to train')
        else:
            group = f', {dist.get_backend()} process group' if dist.is_initialized() else ''
            sync = ', SyncBatchNorm' if self.sync_batchnorm(self.stage, self.context) else ''
            self.log(f'Training {self.stage.name} on {self.context.world_size} process(es){group}{sync}, '
                     f'{self.device}, precision {self.precision}, {self.steps_per_epoch} steps per epoch, '
                     f'{self.num_workers} data loading workers per process')
            self.log_where_outputs_go()
        args = self.args
        total = run_steps(args.epoch_start, args.epoch_end, self.steps_per_epoch, args.max_steps)
        self.progress = progress_bar(total, min(self.step, total), f'epoch {self.epoch}/{args.epoch_end - 1}',
                                     disable=not self.context.is_main or done is not None)
        try:
            with self.stop:
                while self.completed() is None:
                    if not self.train_epoch():
                        break
                    self.epoch, self.step_in_epoch = self.epoch + 1, 0
        finally:
            self.progress.close()  # also before an error's message, which then starts a line of its own
        if self.writer:
            self.writer.close()
        if self.context.distributed and self.completed() is not None:
            self.log_final_weights()

    def train_epoch(self) -> bool:
        """Trains the rest of the current epoch. False when the run must stop before its end."""
        args = self.args
        self.sampler.set_epoch(self.epoch)
        self.sampler.start = self.step_in_epoch * (args.batch_size // self.context.world_size)
        if hasattr(self.train_set, 'set_epoch'):
            self.train_set.set_epoch(self.epoch)
        self.model.train()
        self.progress.set_description(f'epoch {self.epoch}/{args.epoch_end - 1}', refresh=False)
        return self.train_steps()

    def train_steps(self) -> bool:
        """The steps of train_epoch, counted on the run's progress bar. False when the run must stop."""
        tick, images = time.perf_counter(), 0
        for batch in self.loader:
            step = self.train_step(batch)
            stop_signal = self.read_flags() if self.flags_due() else 0
            images += step.images
            self.progress.update(1)
            if self.context.is_main and self.step % self.args.log_train_loss_interval == 0:
                images_per_s = images / max(time.perf_counter() - tick, 1e-9)
                losses = self.log_scalars(step.terms, images_per_s)
                self.progress.set_postfix(loss=f"{losses['total']:.4f}", img_s=f'{images_per_s:.1f}', refresh=False)
                tick, images = time.perf_counter(), 0
            if self.stop.signal == signal.SIGINT and not self.stop.announced:
                self.stop.announced = True
                self.log(f'Ctrl-C: stopping within {FLAG_INTERVAL} steps, after saving a checkpoint to resume from; '
                         'press Ctrl-C again to abort at once without saving')
            if self.context.is_main and self.step % self.args.log_train_images_interval == 0:
                self.log_images('train', *step.inputs, step.outputs)
            if self.step % self.args.log_valid_interval == 0:
                self.validate()
            if not self.end_step(stop_signal):
                return False
        return True

    def train_step(self, batch) -> 'StepResult':
        """Forward, backward and update on one batch (pha, fgr, bgr) of the loader, with no host sync of the
        engine's: the host's work comes first (draw_augmentation), and the device skips a bad step (update)."""
        augment, drawn = self.draw_augmentation(batch)
        batch = [t.to(self.device, non_blocking=True) for t in batch]
        true_src, true_pha, true_fgr, true_bgr = augment.apply(drawn, *batch)
        true_src, true_bgr = (t.contiguous(memory_format=self.memory_format) for t in (true_src, true_bgr))
        terms, outputs = self.forward(self.model, true_src, true_bgr, true_pha, true_fgr)
        self.scaler.scale(terms['total']).backward()
        self.update(terms['total'])
        self.step += 1
        self.step_in_epoch += 1
        return StepResult(terms, outputs, (true_src, true_bgr, true_pha), true_src.size(0) * self.context.world_size)

    def draw_augmentation(self, batch) -> tuple:
        """The host's part of a step: its batch augmentation (a generator of its own) and every random number
        that needs, drawn on the CPU and sent to the device in one non-blocking copy (BatchAugment.draw)."""
        augment = self.stage.batch_augment(self.args, step_generator(self.args.seed, self.context.rank, self.step))
        return augment, augment.draw(len(batch[0]), batch[0].shape[-2:], self.device)

    def forward(self, model: nn.Module, src, bgr, true_pha, true_fgr):
        """The stage's losses and outputs, under the run's autocast precision."""
        with torch.autocast(self.device.type, dtype=AUTOCAST[self.precision] or torch.float32,
                            enabled=AUTOCAST[self.precision] is not None):
            return self.stage.losses(model, src, bgr, true_pha, true_fgr)

    def update(self, loss: torch.Tensor) -> None:
        """After the backward: the optimizer step, undone on the device where the loss was not finite on some rank
        or a gradient is not (float16 overflow; DDP's are the same on every rank); counted in self.flags."""
        self.scaler.unscale_(self.optimizer)  # float16: the gradients at their true size (and the scaler's check)
        bad = distributed.agree((~torch.isfinite(loss.detach())).float().view(1), self.context)[0]
        grads = [p.grad for group in self.optimizer.param_groups for p in group['params'] if p.grad is not None]
        skip = (bad > 0) | ~torch.isfinite(nn.utils.get_total_norm(grads))
        self.set_learning_rates()
        step_unless(self.optimizer, skip, self.saved)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        count, run, longest, skipped = self.flags
        run = (run + bad) * bad
        self.flags = torch.stack([count + bad, run, torch.maximum(longest, run), skipped + skip])

    def read_flags(self) -> int:
        """One host sync: what the steps since the last read left on the device, and a stop signal agreed on by
        the ranks (the largest number wins: SIGTERM, 15, over SIGUSR1, 10), returned (0: none). UserError after
        --max-nonfinite-steps consecutive steps with a non-finite loss."""
        stop = self.flags.new_full((1,), float(self.stop.signal or 0))
        flags = distributed.any_rank(torch.cat([self.flags, stop]), self.context).tolist()
        nonfinite, _, longest, skipped, stop = (int(value) for value in flags)
        (_, skipped_before, since), new = self.flags_read, nonfinite - self.flags_read[0]
        uncount_steps(self.optimizer, skipped - skipped_before)
        self.flags_read = nonfinite, skipped, self.step
        if new:
            self.nonfinite_steps += new
            self.log(f'steps {since + 1}-{self.step}: {new} had a non-finite loss and were skipped '
                     f'({self.nonfinite_steps} so far)')
        if longest >= self.args.max_nonfinite_steps:
            raise UserError(f'{longest} consecutive steps had a non-finite loss; stopping. '
                            'Lower the learning rates, try --precision fp32, or check the data.')
        return stop

    def flags_due(self) -> bool:
        """Whether read_flags runs after this step (all ranks alike): at every FLAG_INTERVAL, log or save step."""
        step, args = self.step, self.args
        return (step % FLAG_INTERVAL == 0 or step % args.log_train_loss_interval == 0 or step == args.max_steps
                or step % args.checkpoint_interval == 0 or self.step_in_epoch == self.steps_per_epoch)

    def end_step(self, stop_signal: int) -> bool:
        """The files due at this step, written whatever happens next, a stop included; False when the
        run stops here (a stop signal, or --max-steps)."""
        args = self.args
        weights = scheduled_weights(self.epoch, self.step, self.step_in_epoch == self.steps_per_epoch,
                                    args.checkpoint_interval, args.max_steps)
        reached_max_steps = args.max_steps is not None and self.step >= args.max_steps
        if weights or stop_signal or reached_max_steps:
            self.save(weights)
        if stop_signal:
            self.stopped(signal.Signals(stop_signal))
            return False
        if reached_max_steps:
            self.log(f'Reached --max-steps {args.max_steps}')
            return False
        return True

    def stopped(self, stop_signal: signal.Signals) -> None:
        """After the checkpoint of a stop: requeue the job on the time-limit warning, else end."""
        self.stopped_by = stop_signal
        job = distributed.requeue_slurm_job(self.context) if stop_signal == REQUEUE_SIGNAL else None
        then = (f'job {job} requeued, to resume with --resume auto' if job else
                'the run ends here; resume with --resume auto')
        self.log(f'Stopped by {stop_signal.name} at step {self.step}; checkpoint saved; {then}')

    def log_final_weights(self) -> None:
        """Every rank prints a digest of its parameters at the end of a distributed run: equal digests show
        that the ranks trained one model (DDP keeps the parameters identical; BatchNorm's running
        statistics are each rank's own until DDP broadcasts rank 0's at the next forward)."""
        digest = hashlib.sha1()
        for tensor in unwrap(self.model).parameters():
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        print(f'rank {self.context.rank} of {self.context.world_size}: final parameters sha1 {digest.hexdigest()}',
              flush=True)

    def set_learning_rates(self) -> None:
        factor = lr_factor(self.step, self.args.lr_schedule, self.decay_steps, self.args.lr_warmup_steps)
        for group, base_lr in zip(self.optimizer.param_groups, self.base_lrs):
            group['lr'] = base_lr * factor

    # ------------------------------------------------------------------ logging and validation

    def log(self, message: str) -> None:
        if self.context.is_main:
            tqdm.write(message)
            sys.stdout.flush()

    def log_scalars(self, terms: Dict[str, torch.Tensor], images_per_s: float) -> Dict[str, float]:
        """Writes the step's losses (read in one copy, returned), learning rates and rates."""
        losses = dict(zip(terms, torch.stack([t.detach().float() for t in terms.values()]).tolist()))
        for name, value in losses.items():
            self.writer.add_scalar(f'train/loss/{name}', value, self.step)
        for group in self.optimizer.param_groups:
            self.writer.add_scalar(f"train/lr/{group['name']}", group['lr'], self.step)
        if self.scaler.is_enabled():
            self.writer.add_scalar('train/grad_scale', self.scaler.get_scale(), self.step)
        self.writer.add_scalar('train/images_per_s', images_per_s, self.step)
        self.writer.add_scalar('train/nonfinite_steps', self.nonfinite_steps, self.step)
        return losses

    def log_images(self, tag: str, src, bgr, true_pha, outputs: Dict[str, torch.Tensor], count: int = 4) -> None:
        size = src.shape[2:]
        green = torch.tensor([120 / 255, 1, 155 / 255], device=src.device).view(1, 3, 1, 1)
        pha, fgr = outputs['pha'].float(), outputs['fgr'].float()
        panels = {'src': src, 'bgr': bgr, 'true_pha': true_pha, 'pha': pha, 'fgr': fgr,
                  'com': fgr * pha + green * (1 - pha)}
        for name in ('err', 'ref'):
            if name in outputs:
                panels[name] = nn.functional.interpolate(outputs[name].float(), size, mode='nearest')
        for name, images in panels.items():
            self.writer.add_image(f'{tag}/{name}', make_grid(images[:count].detach().float().cpu(), nrow=count),
                                  self.step)

    def validate(self) -> None:
        """Rank 0 validates on the fixed sample (training.validation), logs it and writes best.pth where
        --best-metric improved; all ranks call this, and every rank raises if rank 0 could not write."""
        error = None
        if self.context.is_main:
            metrics, line = self.validator(unwrap(self.model), self.forward, self.step)
            for name, value in metrics.items():
                self.writer.add_scalar(f'valid/{name}', value, self.step)
            try:
                line += self.kept.keep_best(self.model, metrics, self.step)
            except UserError as caught:
                error = caught
            self.log(line)
        if self.context.distributed:  # the others wait here while rank 0 validates, as they would at the next step
            failed = distributed.any_rank(torch.tensor([float(error is not None)]), self.context)
            if failed[0] and error is None:
                raise UserError('rank 0 could not write a checkpoint (its message says why)')
        if error is not None:
            raise error

    def log_where_outputs_go(self) -> None:
        """The first lines of a run: where its files go and which stay, and a validation sample too small."""
        args = self.args
        self.log(self.kept.describe(self.checkpoint_dir, args.checkpoint_interval, args.log_valid_interval))
        self.log(f'TensorBoard logs go to {self.log_dir} (tensorboard --logdir {args.log_dir})')
        if len(self.valid_set) < args.valid_samples:
            self.log(f'The validation split holds {len(self.valid_set)} samples, fewer than --valid-samples '
                     f'{args.valid_samples}: validation uses them all, and its metrics are noisier')
