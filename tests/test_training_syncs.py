"""Host syncs in one training step of each trainer, counted on the CPU (common.op_counts).

A training step may make the host wait for the device at most once (and the engine's own code never):
not between the forward and the backward, not in the augmentation's device part, not in the update. The
host's own work (the augmentation's random numbers: CPU draws, `nonzero` on CPU tensors) happens in
Trainer.draw_augmentation, before any device work; its operations are counted apart and left out, as they
stay on the CPU in a CUDA run too.
"""
from collections import Counter

import pytest
import torch

import train_base
import train_refine
from common.op_counts import OpCounter
from dataset import BatchAugment
from dataset.synthetic import generate
from training import distributed
from training.engine import Stage, Trainer
from test_training import base_args


class DeviceOps(OpCounter):
    """OpCounter that leaves out the operations on `host_tensors`, which stay on the host in a CUDA run too:
    the optimizer's step counts (torch.optim keeps them on the CPU unless capturable or fused; Adam reads
    them with .item())."""

    def __init__(self, host_tensors=()):
        super().__init__()
        self.host = {t.data_ptr() for t in host_tensors}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if any(isinstance(a, torch.Tensor) and a.data_ptr() in self.host for a in args):
            return func(*args, **(kwargs or {}))
        return super().__torch_dispatch__(func, types, args, kwargs)


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp('synthetic')
    generate(str(folder / 'data'), count=8, size=(64, 64), seed=3, captures=0)
    return str(folder / 'data')


def every_augmentation(stage):
    """The stage's batch augmentation with every augmentation on every sample: all its code runs."""
    def batch_augment(args, generator):
        return getattr(BatchAugment, stage)((args.crop_min, args.crop_max), shadow_p=1, noise_p=1, jitter_p=1,
                                            misalign_p=1, generator=generator)
    return batch_augment


def counted_step(trainer, batch):
    """Counts the device operations of trainer.train_step(batch): the whole step, and its parts by name."""
    host = [state['step'] for state in trainer.optimizer.state.values() if 'step' in state]
    parts = {}

    def count(name):
        method = getattr(trainer, name)

        def call(*args, **kwargs):
            with DeviceOps(host) as parts[name]:
                return method(*args, **kwargs)
        setattr(trainer, name, call)

    for name in ('draw_augmentation', 'forward', 'update'):
        count(name)
    with DeviceOps(host) as step:
        trainer.train_step(batch)
    return step, parts


@pytest.mark.parametrize('module, extra', [
    (train_base, []),
    (train_refine, ['--model-backbone-scale', '0.5', '--model-refine-sample-pixels', '256'])], ids=['base', 'refine'])
def test_a_training_step_makes_the_host_wait_at_most_once(module, extra, data, tmp_path):
    stage = module.STAGE
    stage = Stage(**{**stage.__dict__, 'batch_augment': every_augmentation(stage.name)})
    args = module.get_args_parser().parse_args(base_args(data, str(tmp_path), 'syncs', '--crop-min', '32',
                                                         '--crop-max', '48', *extra))
    trainer = Trainer(stage, args, distributed.DistributedContext())
    batches = iter(trainer.loader)
    trainer.train_step(next(batches))  # the first makes the optimizer's state
    batch = next(batches)
    step, parts = counted_step(trainer, batch)

    host = Counter(parts['draw_augmentation'].syncs)
    assert host, 'the augmentation draws nothing on the host: the count leaves out nothing'
    syncs = Counter(step.syncs) - host
    forward, update = Counter(parts['forward'].syncs), Counter(parts['update'].syncs)
    # The augmentation's device part, the engine's code between the forward and the backward, the backward.
    between = syncs - forward - update
    assert not between, f'syncs outside the forward and the update: {dict(between)}'
    assert not update, f'syncs in the update: {dict(update)}'
    assert sum(syncs.values()) <= 1, f'syncs in one step: {dict(syncs)}'
    uploads = Counter(step.uploads) - Counter(parts['draw_augmentation'].uploads) - Counter(parts['forward'].uploads)
    assert not uploads, f'blocking uploads outside the forward: {dict(uploads)}'
    assert trainer.step == 2


def test_the_sobel_of_the_losses_is_kornias_without_an_upload_per_call():
    from kornia.filters import sobel as kornia_sobel

    from training.losses import sobel
    x = torch.rand(2, 1, 37, 53, generator=torch.Generator().manual_seed(0), requires_grad=True)
    assert torch.equal(sobel(x), kornia_sobel(x))
    sobel(x)
    with OpCounter() as counts:
        sobel(x).sum().backward()
    assert counts.uploads == [] and counts.syncs == []
