"""Data for training: data set loaders, augmentation, synthetic data.

    from dataset import (ForegroundDataset, BackgroundDataset, CompositionDataset, train_transforms,
                         valid_transforms, BatchAugment, SampleDataset)

Where data lives is `dataset.paths`' business (`python data_path.py` checks it); `python -m dataset.synthetic` writes a small data set.
Names are imported on first use, so the synthetic data generator starts without torch.
"""
import importlib

_EXPORTS = {
    'augmentation': ('ApplyOnlyAt', 'ColorJitter', 'Compose', 'RandomAffineAndResize', 'RandomBoxBlur',
                     'RandomHorizontalFlip', 'RandomSharpen', 'ToTensor', 'Transform'),
    'batch_augment': ('BatchAugment',),
    'composition': ('CompositionDataset',),
    'files': ('DataPathError', 'ForegroundFile', 'list_images', 'pair_folders'),
    'loading': ('CorruptDataError', 'CorruptImageWarning'),
    'matting': ('BackgroundDataset', 'ForegroundDataset'),
    'recipes': ('train_transforms', 'valid_transforms'),
    'wrappers': ('SampleDataset',),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name):
    if name not in _MODULE_OF:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    value = getattr(importlib.import_module(f'.{_MODULE_OF[name]}', __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted([*globals(), *__all__])
