"""Foregrounds paired with random backgrounds, re-paired every epoch, reproducibly.

A data set whose foregrounds were made for their backgrounds (the synthetic one: some clothes take
the colours of the scene they are drawn over, the hard case of difference matting) can show a
foreground over its own background, item i over background i, with one geometric transform for the
three images; `own_background` is how often.

The original paired foreground i with background i (mod the count) in every epoch. Here the
background of item i in epoch e is drawn from a generator seeded by (seed, e, i), and so are the
item's augmentations: the result depends on nothing else, not on the DataLoader worker that loads
it, the number of workers, or the DDP rank. Distinct items get independent draws, so workers and
ranks never repeat one another's random sequence.
"""
from typing import Optional

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import functional as F

from .augmentation import call_seeded

# Independent random streams of one item.
_PAIRING, _FOREGROUND_AUG, _BACKGROUND_AUG = range(3)


def item_generator(seed: int, epoch: int, index: int, stream: int) -> torch.Generator:
    """A CPU generator seeded from (seed, epoch, index, stream), well mixed by numpy's SeedSequence."""
    state = np.random.SeedSequence([seed, epoch, index, stream]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def _as_tensor(img) -> torch.Tensor:
    return img if isinstance(img, torch.Tensor) else F.to_tensor(img)


class CompositionDataset(Dataset):
    """Training samples: a foreground, its alpha, and a randomly chosen background.

    foregrounds: items (pha, fgr) as PIL images, e.g. a ForegroundDataset.
    backgrounds: items bgr as PIL images, e.g. a BackgroundDataset.
    pair_transform: called as pair_transform(pha, fgr, generator=g), e.g. from train_transforms().
    background_transform: called as background_transform(bgr, generator=g).
    seed: with the epoch and the index, decides pairing and augmentation.
    own_background: probability that item i is shown over background i (same size as foreground i),
        both under the pair transform's geometry; 0 (the original recipe) pairs at random only.

    Item i: (pha, fgr, bgr) float32 tensors, 0 ~ 1:
        pha: (1, H, W) alpha
        fgr: (3, H, W) foreground colour
        bgr: (3, H, W) background (H, W as the transforms make them; equal for the recipes)

    Call set_epoch(epoch) before each epoch (as with DistributedSampler.set_epoch). The epoch lives
    in shared memory, so persistent DataLoader workers see the change too.
    """

    def __init__(self, foregrounds, backgrounds, pair_transform=None, background_transform=None, seed: int = 0,
                 own_background: float = 0.0):
        if not 0 <= own_background <= 1:
            raise ValueError(f'own_background is a probability, 0 ~ 1; got {own_background}')
        if own_background > 0 and len(backgrounds) != len(foregrounds):
            raise ValueError(f'own_background needs one background per foreground; got {len(backgrounds)} '
                             f'backgrounds for {len(foregrounds)} foregrounds')
        if len(foregrounds) == 0:
            raise ValueError('CompositionDataset needs at least one foreground; the foreground data set is empty')
        if len(backgrounds) == 0:
            raise ValueError('CompositionDataset needs at least one background; the background data set is empty')
        self.foregrounds = foregrounds
        self.backgrounds = backgrounds
        self.pair_transform = pair_transform
        self.background_transform = background_transform
        self.seed = int(seed)
        self.own_background = float(own_background)
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int):
        self._epoch.fill_(int(epoch))

    def __len__(self):
        return len(self.foregrounds)

    def generator(self, index: int, stream: int, epoch: Optional[int] = None) -> torch.Generator:
        return item_generator(self.seed, self.epoch if epoch is None else epoch, index, stream)

    def background_index(self, index: int, epoch: Optional[int] = None) -> int:
        """Which background item `index` is paired with in `epoch` (default: the current one)."""
        generator = self.generator(index, _PAIRING, epoch)
        if self.own_background > 0 and float(torch.rand((), generator=generator)) < self.own_background:
            return index
        return int(torch.randint(len(self.backgrounds), (1,), generator=generator))

    def __getitem__(self, index):
        if not 0 <= index < len(self):
            raise IndexError(f'index {index} out of range for {len(self)} samples')
        pha, fgr = self.foregrounds[index]
        background = self.background_index(index)
        bgr = self.backgrounds[background]
        if self.own_background > 0 and background == index:
            if bgr.size != fgr.size:
                raise ValueError(f'item {index}: its own background is {bgr.size[0]}x{bgr.size[1]}, its '
                                 f'foreground {fgr.size[0]}x{fgr.size[1]}; own_background needs equal sizes')
            if self.pair_transform is not None:   # one geometry for the three; colour jitter stays on fgr
                pha, fgr, bgr = call_seeded(self.pair_transform, (pha, fgr, bgr), self.generator(index, _FOREGROUND_AUG))
            return _as_tensor(pha), _as_tensor(fgr), _as_tensor(bgr)
        if self.pair_transform is not None:
            pha, fgr = call_seeded(self.pair_transform, (pha, fgr), self.generator(index, _FOREGROUND_AUG))
        if self.background_transform is not None:
            bgr = call_seeded(self.background_transform, (bgr,), self.generator(index, _BACKGROUND_AUG))
        return _as_tensor(pha), _as_tensor(fgr), _as_tensor(bgr)
