"""Training sources: foregrounds with their alphas, and backgrounds.

Both skip unreadable files (see loading.py): item i falls back to i + 1, i + 2, ... so the choice is
deterministic, and each skip is warned about and counted. Files above the pixel limit of
BGM_MAX_IMAGE_PIXELS (common.images) are skipped as unreadable ones, the warning naming the variable; a
malformed value of it is a UserError when the data set is made, before any worker starts.
"""
from pathlib import Path
from typing import Sequence

from torch.utils.data import Dataset

from common.images import max_image_pixels

from .files import ForegroundFile, list_images, pair_folders
from .loading import DECODE_ERRORS, FailureTracker, load_alpha, load_colour, load_rgba


class _SkippingDataset(Dataset):
    max_retries = 10

    def __init__(self, max_failure_fraction: float, min_attempts: int):
        max_image_pixels()  # a malformed BGM_MAX_IMAGE_PIXELS fails here, in the main process
        self.failures = FailureTracker(max_failure_fraction, min_attempts)

    def _paths(self, index) -> Sequence:
        raise NotImplementedError

    def _load(self, index):
        raise NotImplementedError

    def _first_readable(self, index):
        if not 0 <= index < len(self):
            raise IndexError(f'index {index} out of range for {len(self)} samples')
        tries = min(self.max_retries, len(self))
        for attempt in range(tries):
            i = (index + attempt) % len(self)
            try:
                sample = self._load(i)
            except DECODE_ERRORS as error:
                self.failures.failure(self._paths(i), error)
                continue
            self.failures.success()
            return sample
        self.failures.give_up(self._paths(i), tries)


class ForegroundDataset(_SkippingDataset):
    """Foregrounds with their alpha mattes, as PIL images.

    files: ForegroundFile entries, e.g. `dataset.paths.resolve_dataset(name, split, args).files`.
    transforms: optional, called as `transforms(pha, fgr)`.

    Item i: (pha, fgr), fgr a PIL 'RGB' image, pha of the same size: a PIL 'L' image (alpha, 0 ~ 255) from
    an 8-bit file, a `loading.PreciseAlpha` ('F', 0 ~ 1) from a 16-bit one; both become the same (1, H, W)
    float tensor of 0 ~ 1 under `F.to_tensor`.
    """

    def __init__(self, files: Sequence[ForegroundFile], transforms=None,
                 max_failure_fraction: float = 0.1, min_attempts: int = 20):
        super().__init__(max_failure_fraction, min_attempts)
        self.files = list(files)
        self.transforms = transforms

    @classmethod
    def from_folders(cls, fgr_folder, pha_folder, **kwargs) -> 'ForegroundDataset':
        """A data set over any pair of folders whose files match by relative name."""
        return cls(pair_folders(fgr_folder, pha_folder), **kwargs)

    def __len__(self):
        return len(self.files)

    def _paths(self, index):
        file = self.files[index]
        return (file.fgr,) if file.pha is None else (file.fgr, file.pha)

    def _load(self, index):
        file = self.files[index]
        if file.pha is None:
            return load_rgba(file.fgr)
        pha, fgr = load_alpha(file.pha), load_colour(file.fgr)
        if pha.size != fgr.size:
            raise ValueError(f'alpha is {pha.size[0]}x{pha.size[1]} but foreground is {fgr.size[0]}x{fgr.size[1]}')
        return pha, fgr

    def __getitem__(self, index):
        pha, fgr = self._first_readable(index)
        return self.transforms(pha, fgr) if self.transforms else (pha, fgr)


class BackgroundDataset(_SkippingDataset):
    """Background images as PIL 'RGB' images (or whatever `transforms(img)` returns).

    files: image paths, e.g. `dataset.paths.resolve_backgrounds(name, split, args).files`.
    """

    def __init__(self, files: Sequence[Path], transforms=None,
                 max_failure_fraction: float = 0.1, min_attempts: int = 20):
        super().__init__(max_failure_fraction, min_attempts)
        self.files = [Path(file) for file in files]
        self.transforms = transforms

    @classmethod
    def from_folder(cls, folder, **kwargs) -> 'BackgroundDataset':
        return cls(list_images(folder), **kwargs)

    def __len__(self):
        return len(self.files)

    def _paths(self, index):
        return (self.files[index],)

    def _load(self, index):
        return load_colour(self.files[index])

    def __getitem__(self, index):
        img = self._first_readable(index)
        return self.transforms(img) if self.transforms else img
