"""Taking an evenly spaced sample of a data set (the fixed validation sample of training)."""
from torch.utils.data import Dataset


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
