"""Combining data sets: zipping them item by item, and taking an evenly spaced sample."""
from typing import Sequence

from torch.utils.data import Dataset


class ZipDataset(Dataset):
    """Item i is (datasets[0][i], datasets[1][i], ...), shorter data sets wrapping around.

    E.g. ZipDataset([ImagesDataset(src), ImagesDataset(bgr)]) for inference on capture pairs.
    transforms: optional, called as transforms(*items).
    assert_equal_length: raise ValueError unless all data sets have the same length.
    """

    def __init__(self, datasets: Sequence[Dataset], transforms=None, assert_equal_length: bool = False):
        if not datasets:
            raise ValueError('ZipDataset needs at least one data set')
        lengths = [len(d) for d in datasets]
        if assert_equal_length and len(set(lengths)) > 1:
            raise ValueError(f'ZipDataset data sets differ in length: {lengths}')
        if 0 in lengths:
            raise ValueError(f'ZipDataset data set {lengths.index(0)} is empty (lengths {lengths})')
        self.datasets = list(datasets)
        self.transforms = transforms

    def __len__(self):
        return max(len(d) for d in self.datasets)

    def __getitem__(self, index):
        if not 0 <= index < len(self):
            raise IndexError(f'index {index} out of range for {len(self)} items')
        items = tuple(d[index % len(d)] for d in self.datasets)
        return self.transforms(*items) if self.transforms else items


class SampleDataset(Dataset):
    """`samples` items spread evenly over `dataset` (all of it if it has fewer), e.g. a quick validation."""

    def __init__(self, dataset: Dataset, samples: int):
        if samples < 1:
            raise ValueError(f'SampleDataset needs samples >= 1, got {samples}')
        samples = min(samples, len(dataset))
        self.dataset = dataset
        self.indices = [i * len(dataset) // samples for i in range(samples)]

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, index):
        return self.dataset[self.indices[index]]
