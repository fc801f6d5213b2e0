"""Every number of the training recipes, pinned to the original trainers.

The expected values are the original's, as published in PeterL1n/BackgroundMattingV2 (commit
a8e82df): `train_base.py` (B), `train_refine.py` (R) and `dataset/augmentation.py`; the comments give
the line each comes from (B78 = train_base.py, line 78). Our options beyond the original (own
background, cosine schedule, warm-up, precision, channels-last) must default to its behaviour.
"""
import math

import kornia
import pytest
import torch
from torch.nn import functional as F
from torchvision.transforms import InterpolationMode

import train_base
import train_refine
from dataset import (ApplyOnlyAt, ColorJitter, Compose, RandomAffineAndResize, RandomBoxBlur, RandomHorizontalFlip,
                     RandomSharpen, ToTensor, batch_augment)
from dataset.synthetic import generate
from training import distributed
from common.devices import autocast_precision
from training.engine import Trainer, lr_factor
from training.losses import base_loss, refine_loss

TRAINERS = {'base': train_base, 'refine': train_refine}


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp('synthetic') / 'data'
    generate(str(folder), count=12, size=(32, 32), seed=5, captures=1)
    return str(folder)


def default_args(stage, data, tmp_path, *extra):
    """The trainer's defaults; only what the original has no default for, and where files go, given."""
    return TRAINERS[stage].get_args_parser().parse_args([
        '--data-path', f'synthetic={data}', '--dataset-name', 'synthetic', '--background-dataset', 'synthetic',
        '--model-backbone', 'mobilenetv2', '--model-name', 'recipe', '--device', 'cpu',
        '--checkpoint-dir', str(tmp_path / 'checkpoint'), '--log-dir', str(tmp_path / 'log'), *extra])


# ------------------------------------------------------------------ options

ORIGINAL_OPTIONS = {
    'base': dict(
        batch_size=8,                       # B53
        epoch_start=0,                      # B55
        # B56 requires --epoch-end; its example (B13) and the refine example's input (epoch-7.pth) say 8.
        epoch_end=8,
        log_train_loss_interval=10,         # B58
        log_train_images_interval=2000,     # B59
        log_valid_interval=5000,            # B60
        checkpoint_interval=5000,           # B62
        sample_size=512,                    # B78, B86: PairRandomAffineAndResize((512, 512), ...)
        crop_min=256, crop_max=512,         # B229-230: random.choice(range(256, 512))
        valid_samples=50,                   # B114: SampleDataset(dataset_valid, 50)
        lr_backbone=1e-4, lr_aspp=5e-4, lr_decoder=5e-4,  # B129-131
        model_pretrain_initialization=None, model_last_checkpoint=None,  # B50-51
    ),
    'refine': dict(
        batch_size=4,                       # R60
        epoch_start=0,                      # R62
        epoch_end=1,                        # R63 requires --epoch-end; its example (R14) says 1
        log_train_loss_interval=10,         # R65
        log_train_images_interval=1000,     # R66
        log_valid_interval=2000,            # R67
        checkpoint_interval=2000,           # R69
        sample_size=2048,                   # R93, R101: PairRandomAffineAndResize((2048, 2048), ...)
        crop_min=1024, crop_max=2048,       # R267-268: random.choice(range(1024, 2048)) // 4 * 4
        valid_samples=50,                   # R133
        lr_backbone=5e-5, lr_aspp=5e-5, lr_decoder=1e-4, lr_refiner=3e-4,  # R154-157
        model_last_checkpoint=None,         # R58
        model_backbone_scale=0.25,          # R52
        model_refine_mode='sampling',       # R53
        model_refine_sample_pixels=80_000,  # R54
        model_refine_threshold=0.7,         # R55 (--model-refine-thresholding)
        model_refine_kernel_size=3,         # R56
    ),
}

# Ours only: each default is the original's behaviour.
OUR_OPTIONS = dict(
    own_background=0.0,        # foregrounds over random backgrounds only
    lr_schedule='constant',    # Adam at fixed rates
    lr_warmup_steps=0,
    max_steps=None,            # whole epochs
    precision='auto',          # fp16 autocast + GradScaler on CUDA (B184, B133), as below
    channels_last=False,
    seed=0,
    # The original's 16 loader workers (B54, R61) on any machine; ours: one per CPU this process may use,
    # at most 8, chosen at run time (None until then). Workers change speed, not what is trained.
    num_workers=None,
)


@pytest.mark.parametrize('stage', ['base', 'refine'])
def test_options_default_to_the_original(stage, data, tmp_path):
    args = vars(default_args(stage, data, tmp_path))
    expected = {**ORIGINAL_OPTIONS[stage], **OUR_OPTIONS}
    assert {name: args[name] for name in expected} == expected
    assert autocast_precision('auto', torch.device('cuda')) == 'fp16'
    assert [lr_factor(step, args['lr_schedule'], 1000, args['lr_warmup_steps']) for step in (0, 1, 999)] == [1, 1, 1]


# ------------------------------------------------------------------ per-sample augmentation

def describe(transform):
    """A transform as the numbers that define it."""
    if isinstance(transform, Compose):
        return [describe(t) for t in transform.transforms]
    if isinstance(transform, RandomAffineAndResize):
        return ('affine', transform.size, transform.degrees, transform.translate, transform.scale, transform.shear,
                transform.interpolation, transform.fill)
    if isinstance(transform, RandomHorizontalFlip):
        return ('flip', transform.p)
    if isinstance(transform, RandomBoxBlur):
        return ('box blur', transform.p, transform.max_radius)
    if isinstance(transform, RandomSharpen):
        return ('sharpen', transform.p)
    if isinstance(transform, ColorJitter):
        return ('jitter', transform.brightness, transform.contrast, transform.saturation, transform.hue)
    if isinstance(transform, ApplyOnlyAt):
        return ('only at', transform.indices, describe(transform.transform))
    if isinstance(transform, ToTensor):
        return ('to tensor',)
    raise AssertionError(f'unknown transform {transform!r}')


def affine(size, scale):
    # augmentation.py PairRandomAffineAndResize: resample=Image.BILINEAR, fillcolor=0. Every use has
    # degrees=(-5, 5), translate=(0.1, 0.1), shear=(-5, 5): torchvision draws an x shear only.
    return ('affine', (size, size), (-5, 5), (0.1, 0.1), scale, (-5, 5, 0, 0), InterpolationMode.BILINEAR, 0)


def original_per_sample(size, foreground_scale):
    flip, blur, sharpen = ('flip', 0.5), ('box blur', 0.1, 5), ('sharpen', 0.1)  # torchvision's p=0.5
    jitter = ('jitter', 0.15, 0.15, 0.15, 0.05)
    return {
        # B78-83, R93-98
        'train pair': [affine(size, foreground_scale), flip, blur, sharpen, ('only at', (1,), jitter),
                       ('to tensor',)],
        # B86-91, R101-106
        'train background': [affine(size, (1, 2)), flip, blur, sharpen, jitter, ('to tensor',)],
        # B106-107, R125-126
        'valid pair': [affine(size, (0.3, 1)), ('to tensor',)],
        # B110-111, R129-130
        'valid background': [affine(size, (1, 1.2)), ('to tensor',)],
    }


@pytest.mark.parametrize('stage, foreground_scale', [('base', (0.4, 1)),     # B78
                                                      ('refine', (0.3, 1))])  # R93
def test_per_sample_augmentation_is_the_original(stage, foreground_scale, data, tmp_path):
    args = default_args(stage, data, tmp_path)
    train, valid = TRAINERS[stage].STAGE.datasets(args)
    ours = {'train pair': describe(train.pair_transform), 'train background': describe(train.background_transform),
            'valid pair': describe(valid.dataset.pair_transform),
            'valid background': describe(valid.dataset.background_transform)}
    assert ours == original_per_sample(args.sample_size, foreground_scale)
    assert len(valid.indices) == min(args.valid_samples, len(valid.dataset))


# ------------------------------------------------------------------ per-batch augmentation

@pytest.mark.parametrize('stage, multiple', [('base', 1),     # B229-230: any size in range(256, 512)
                                              ('refine', 4)])  # R267-268: // 4 * 4
def test_per_batch_augmentation_is_the_original(stage, multiple, data, tmp_path, monkeypatch):
    args = default_args(stage, data, tmp_path)
    augment = TRAINERS[stage].STAGE.batch_augment(args, torch.Generator().manual_seed(0))
    assert augment.crop_range == (args.crop_min, args.crop_max) and augment.crop_multiple == multiple
    assert (augment.shadow_p, augment.noise_p, augment.jitter_p, augment.misalign_p) == (
        0.3,   # B153, R180: torch.rand(len(true_src)) < 0.3
        0.4,   # B166, R193
        0.8,   # B173, R200
        0.3)   # B179, R206
    assert augment.shadow_blur == (20, 40)  # B157, R184: random.choice(range(20, 40))

    # The numbers inside the augmentations, read from the calls they make (the real functions run).
    calls = []

    def recorded(name, function):
        def call(x, generator, *args, **kwargs):
            calls.append((name, x.clone(), args, kwargs))
            return function(x, generator, *args, **kwargs)
        return call

    monkeypatch.setattr(batch_augment, 'random_affine', recorded('affine', batch_augment.random_affine))
    monkeypatch.setattr(batch_augment, 'color_jitter', recorded('jitter', batch_augment.color_jitter))
    batch = 256  # enough samples that every augmentation is drawn, and its largest strength nearly reached
    pha, image = torch.ones(batch, 1, 16, 16), torch.full((batch, 3, 16, 16), 0.5)
    augment.cast_shadow(image, pha)
    augment.jitter_background(image)
    augment.misalign_background(image)
    (_, shadow, _, shadow_kwargs), (_, _, jitter_args, _), (_, _, _, misalign_kwargs) = calls
    # B156, R183: T.RandomAffine(degrees=(-5, 5), translate=(0.2, 0.2), scale=(0.5, 1.5), shear=(-5, 5))
    assert shadow_kwargs == dict(degrees=(-5, 5), translate=(0.2, 0.2), scale=(0.5, 1.5), shear=(-5, 5))
    # B155, R182: the shadow is true_pha.mul(0.3 * random.random()); pha is 1 here
    strength = shadow.amax(dim=(1, 2, 3))
    assert strength.max() <= 0.3 and strength.max() > 0.29
    # B175, R202: kornia.augmentation.ColorJitter(0.18, 0.18, 0.18, 0.1)
    assert jitter_args == (0.18, 0.18, 0.18, 0.1)
    # B181, R208: T.RandomAffine(degrees=(-1, 1), translate=(0.01, 0.01)): no zoom, no shear
    assert set(misalign_kwargs) <= {'degrees', 'translate', 'padding_mode'}
    assert (misalign_kwargs['degrees'], misalign_kwargs['translate']) == ((-1, 1), (0.01, 0.01))
    # torchvision's RandomAffine on a tensor fills what the warp uncovers with 0 (black).
    assert misalign_kwargs.get('padding_mode', 'zeros') == 'zeros'

    # B168-169, R195-196: noise of std 0.03 * random.random() on src and bgr (no clamping at 0.5 +- 4 std)
    noisy_src, noisy_bgr = augment.add_noise(image, image.clone())
    for noisy in (noisy_src, noisy_bgr):
        std = (noisy - 0.5).flatten(1).std(dim=1)
        assert std.max() <= 0.03 * 1.05 and std.max() > 0.03 * 0.9


# ------------------------------------------------------------------ losses

def sobel_l1(pred, true):
    return F.l1_loss(kornia.filters.sobel(pred), kornia.filters.sobel(true))


def test_base_loss_is_the_original():
    """B219-225: L1(pha) + L1(sobel(pha)) + L1(fgr where true pha > 0) + MSE(err, |pha - true pha|)."""
    g = torch.Generator().manual_seed(0)
    pha, fgr, err = (torch.rand(2, c, 24, 24, generator=g) for c in (1, 3, 1))
    true_pha = (torch.rand(2, 1, 24, 24, generator=g) - 0.3).clamp(0, 1)  # some exact zeros: the mask
    true_fgr = torch.rand(2, 3, 24, 24, generator=g)
    mask = true_pha != 0
    original = (F.l1_loss(pha, true_pha) + sobel_l1(pha, true_pha) + F.l1_loss(fgr * mask, true_fgr * mask)
                + F.mse_loss(err, (pha - true_pha).abs()))
    ours = base_loss(pha, fgr, err, true_pha, true_fgr)['total']
    assert math.isclose(float(ours), float(original), rel_tol=1e-5)


def test_refine_loss_is_the_original():
    """R250-262: the matting terms at full and at coarse resolution (the truth resized bilinearly), and
    MSE of the upsampled coarse error against |upsampled coarse pha - true pha| at full resolution."""
    g = torch.Generator().manual_seed(1)
    pha, fgr = torch.rand(2, 1, 32, 32, generator=g), torch.rand(2, 3, 32, 32, generator=g)
    pha_sm, fgr_sm, err_sm = (torch.rand(2, c, 8, 8, generator=g) for c in (1, 3, 1))
    true_pha = (torch.rand(2, 1, 32, 32, generator=g) - 0.3).clamp(0, 1)
    true_fgr = torch.rand(2, 3, 32, 32, generator=g)

    def resize(x, size):  # kornia.resize of the original: bilinear, align_corners=False
        return kornia.geometry.transform.resize(x, size, interpolation='bilinear', align_corners=False)

    true_pha_sm, true_fgr_sm = resize(true_pha, (8, 8)), resize(true_fgr, (8, 8))
    mask, mask_sm = true_pha != 0, true_pha_sm != 0
    original = (F.l1_loss(pha, true_pha) + F.l1_loss(pha_sm, true_pha_sm)
                + sobel_l1(pha, true_pha) + sobel_l1(pha_sm, true_pha_sm)
                + F.l1_loss(fgr * mask, true_fgr * mask) + F.l1_loss(fgr_sm * mask_sm, true_fgr_sm * mask_sm)
                + F.mse_loss(resize(err_sm, (32, 32)), resize(pha_sm, (32, 32)).sub(true_pha).abs()))
    ours = refine_loss(pha, fgr, pha_sm, fgr_sm, err_sm, true_pha, true_fgr)['total']
    assert math.isclose(float(ours), float(original), rel_tol=1e-5)


def test_refine_loss_has_the_originals_gradients():
    """R260-261: the refine stage's error target is not detached, so its gradient reaches the coarse
    alpha (the base stage's is: B225 .detach())."""
    g = torch.Generator().manual_seed(2)
    inputs = [torch.rand(1, c, s, s, generator=g).requires_grad_() for c, s in ((1, 16), (3, 16), (1, 4), (3, 4),
                                                                                (1, 4))]
    true_pha, true_fgr = torch.rand(1, 1, 16, 16, generator=g), torch.rand(1, 3, 16, 16, generator=g)
    pha, fgr, pha_sm, fgr_sm, err_sm = inputs
    terms = refine_loss(pha, fgr, pha_sm, fgr_sm, err_sm, true_pha, true_fgr)
    grad_of_error_term = torch.autograd.grad(terms['err_mse'], pha_sm)[0]
    assert grad_of_error_term.abs().sum() > 0
    pha_b, err_b = (torch.rand(1, 1, 16, 16, generator=g).requires_grad_() for _ in range(2))
    base = base_loss(pha_b, torch.rand(1, 3, 16, 16), err_b, true_pha, true_fgr)
    assert torch.autograd.grad(base['err_mse'], pha_b, allow_unused=True)[0] is None


# ------------------------------------------------------------------ optimizer and model

@pytest.mark.parametrize('stage, modules, sync_batchnorm', [
    ('base', ['backbone', 'aspp', 'decoder'], False),               # B128-132; one GPU, plain BatchNorm
    ('refine', ['backbone', 'aspp', 'decoder', 'refiner'], True),   # R153-158; R147 SyncBatchNorm
])
def test_optimizer_and_model_are_the_original(stage, modules, sync_batchnorm, data, tmp_path):
    # --batch-size 2 only because the tiny data set holds fewer than 8 samples; the rest are defaults.
    args = default_args(stage, data, tmp_path, '--batch-size', '2', '--num-workers', '0')
    trainer = Trainer(TRAINERS[stage].STAGE, args, distributed.DistributedContext())
    assert type(trainer.optimizer) is torch.optim.Adam
    groups = trainer.optimizer.param_groups
    assert [group['name'] for group in groups] == modules
    for group, module in zip(groups, modules):
        # Adam's defaults, as the original leaves them
        assert (group['lr'], group['betas'], group['eps'], group['weight_decay'], group['amsgrad']) == (
            ORIGINAL_OPTIONS[stage][f'lr_{module}'], (0.9, 0.999), 1e-8, 0, False)
        assert [id(p) for p in group['params']] == [id(p) for p in getattr(trainer.model, module).parameters()]
    assert TRAINERS[stage].STAGE.sync_batchnorm is sync_batchnorm
    if stage == 'refine':
        model = trainer.model
        refiner = model.refiner
        assert (model.backbone_scale, refiner.mode, refiner.sample_pixels, refiner.threshold, refiner.kernel_size,
                refiner.prevent_oversampling) == (0.25, 'sampling', 80_000, 0.7, 3,  # R52-56
                                                  True)  # model/model.py: refine_prevent_oversampling=True
