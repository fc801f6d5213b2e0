"""The per-sample augmentation recipes of the original trainers, at any resolution.

Each returns (pair_transform, background_transform) for CompositionDataset; both end in tensors:
pair_transform(pha, fgr) -> pha (1, S, S), fgr (3, S, S); background_transform(bgr) -> (3, S, S).
The paper trains the base stage at 512 and the refine stage at 2048; CPU smoke runs use 64 ~ 128.
"""
from .augmentation import (ApplyOnlyAt, ColorJitter, Compose, RandomAffineAndResize, RandomBoxBlur,
                           RandomHorizontalFlip, RandomSharpen, ToTensor)

# Foreground zoom range: the refine stage shows smaller subjects in its larger frames.
FOREGROUND_SCALE = {'base': (0.4, 1), 'refine': (0.3, 1)}


def train_transforms(size, stage: str = 'base'):
    """Training augmentation of stage 'base' (paper: size 512) or 'refine' (paper: size 2048).

    size: output side (int) or (h, w).
    """
    if stage not in FOREGROUND_SCALE:
        raise ValueError(f"stage must be one of {sorted(FOREGROUND_SCALE)}, got {stage!r}")
    pair_transform = Compose([
        RandomAffineAndResize(size, degrees=(-5, 5), translate=(0.1, 0.1), scale=FOREGROUND_SCALE[stage],
                              shear=(-5, 5)),
        RandomHorizontalFlip(),
        RandomBoxBlur(0.1, 5),
        RandomSharpen(0.1),
        ApplyOnlyAt([1], ColorJitter(0.15, 0.15, 0.15, 0.05)),  # colour of fgr, never of pha
        ToTensor(),
    ])
    background_transform = Compose([
        RandomAffineAndResize(size, degrees=(-5, 5), translate=(0.1, 0.1), scale=(1, 2), shear=(-5, 5)),
        RandomHorizontalFlip(),
        RandomBoxBlur(0.1, 5),
        RandomSharpen(0.1),
        ColorJitter(0.15, 0.15, 0.15, 0.05),
        ToTensor(),
    ])
    return pair_transform, background_transform


def valid_transforms(size):
    """Validation: geometry only, so a fixed seed gives the same validation set every time."""
    pair_transform = Compose([
        RandomAffineAndResize(size, degrees=(-5, 5), translate=(0.1, 0.1), scale=(0.3, 1), shear=(-5, 5)),
        ToTensor(),
    ])
    background_transform = Compose([
        RandomAffineAndResize(size, degrees=(-5, 5), translate=(0.1, 0.1), scale=(1, 1.2), shear=(-5, 5)),
        ToTensor(),
    ])
    return pair_transform, background_transform
