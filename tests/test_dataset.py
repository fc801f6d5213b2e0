"""The dataset package and data_path.py, on small fake data set trees built in tmp_path.

Fake foregrounds are value coded: sample k has an alpha of constant value v_k and a foreground whose
red channel is v_k, so a loaded pair proves it came from matching files. Fake backgrounds are solid
colours whose red channel identifies them.
"""
import argparse
import itertools
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, DistributedSampler

import data_path
from common.op_counts import OpCounter
from data_path import DataPaths
from dataset import (ApplyOnlyAt, BackgroundDataset, BatchAugment, ColorJitter, Compose, CompositionDataset,
                     CorruptDataError, CorruptImageWarning, DataPathError, ForegroundDataset, RandomAffineAndResize,
                     RandomBoxBlur, RandomHorizontalFlip, RandomSharpen, SampleDataset, ToTensor, train_transforms,
                     valid_transforms)
from dataset.synthetic import generate
from torchvision.transforms import InterpolationMode

_values = itertools.count()


# ---------------------------------------------------------------- fake data

def save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, np.uint8)).save(path, quality=95)


def write_sample(fgr_path, pha_path=None, size=(12, 10)):
    """A value-coded sample; pha_path None writes one RGBA image (alpha in the fourth channel)."""
    v = 20 + (next(_values) * 7) % 220
    w, h = size
    fgr = np.zeros((h, w, 3), np.uint8) + np.array([v, 255 - v, 128], np.uint8)
    pha = np.full((h, w), v, np.uint8)
    if pha_path is None:
        save(fgr_path, np.dstack([fgr, pha]))
    else:
        save(fgr_path, fgr)
        save(pha_path, pha)


def write_pairs(fgr_dir, pha_dir, names, fgr_ext='.jpg', pha_ext='.png'):
    for name in names:
        write_sample(fgr_dir / f'{name}{fgr_ext}', pha_dir / f'{name}{pha_ext}')


def write_backgrounds(folder, count, ext='.jpg', first=0):
    for k in range(first, first + count):
        save(folder / f'bg_{k:03d}{ext}', np.full((10, 12, 3), (6 * k % 252, 50, 200), np.uint8))


def assert_pairs_match(dataset):
    for pha, fgr in dataset:
        assert pha.mode == 'L' and fgr.mode == 'RGB' and pha.size == fgr.size
        assert abs(np.asarray(pha, float).mean() - np.asarray(fgr, float)[..., 0].mean()) < 4


def build_videomatte(root, folder='VideoMatte240K_JPEG_SD'):
    base = root / folder
    for split, clips in (('train', ['0000', '0001', '0002']), ('test', ['0000'])):
        for clip in clips:
            names = [f'{clip}/{frame:05d}' for frame in range(2)]
            write_pairs(base / split / 'fgr', base / split / 'pha', names, '.jpg', '.jpg')


def build_p3m(root):
    base = root / 'P3M-10k'
    write_pairs(base / 'train/blurred_image', base / 'train/mask', ['p_1', 'p_2', 'p_3'])
    write_pairs(base / 'validation/P3M-500-P/blurred_image', base / 'validation/P3M-500-P/mask', ['p_9', 'p_8'])
    write_pairs(base / 'validation/P3M-500-NP/original_image', base / 'validation/P3M-500-NP/mask', ['n_1', 'n_2'])
    save(base / 'validation/P3M-500-P/trimap/p_9.png', np.zeros((10, 12)))


def build_distinctions(root):
    base = root / 'Distinctions-646'
    write_pairs(base / 'Train/FG', base / 'Train/GT', ['a', 'b', 'c'], '.png', '.png')
    write_pairs(base / 'Test/FG', base / 'Test/GT', ['d', 'e'], '.png', '.png')


def build_adobe(root):
    base = root / 'Combined_Dataset'
    write_pairs(base / 'Training_set/Adobe-licensed images/fg', base / 'Training_set/Adobe-licensed images/alpha',
                ['a', 'b', 'c'], '.jpg', '.jpg')
    write_pairs(base / 'Training_set/Other/fg', base / 'Training_set/Other/alpha', ['o1', 'o2'], '.png', '.png')
    write_pairs(base / 'Test_set/Adobe-licensed images/fg', base / 'Test_set/Adobe-licensed images/alpha',
                ['t1', 't2'], '.png', '.png')


def build_photomatte(root):
    for k in range(10):
        write_sample(root / 'PhotoMatte85' / f'{k:04d}.png')


def build_custom(root):
    write_pairs(root / 'custom/fgr', root / 'custom/pha', [f'shot_{k}' for k in range(5)])


FOREGROUND_LAYOUTS = {
    'videomatte240k': (build_videomatte, {'train': 6, 'valid': 2}),
    'p3m10k': (build_p3m, {'train': 3, 'valid': 2, 'valid_np': 2}),
    'distinctions646': (build_distinctions, {'train': 3, 'valid': 2}),
    'adobe': (build_adobe, {'train': 5, 'valid': 2}),
    'photomatte85': (build_photomatte, {'all': 10, 'train': 9, 'valid': 1}),
    'custom': (build_custom, {'all': 5, 'train': 4, 'valid': 1}),
}


def paths(root=None, **overrides):
    return DataPaths(root, overrides, environ={})


# ---------------------------------------------------------------- data_path: layouts

@pytest.mark.parametrize('name', sorted(FOREGROUND_LAYOUTS))
def test_each_layout_resolves_and_pairs_the_right_files(tmp_path, name):
    build, expected = FOREGROUND_LAYOUTS[name]
    build(tmp_path)
    for split, count in expected.items():
        resolved = paths(tmp_path).foregrounds(name, split)
        assert len(resolved.files) == count, split
        for file in resolved.files:
            if file.pha is not None:
                assert file.fgr.stem == file.pha.stem
        assert_pairs_match(ForegroundDataset(resolved.files))


def test_videomatte_hd_folder_and_clip_groups(tmp_path):
    build_videomatte(tmp_path, 'VideoMatte240K_JPEG_HD')
    resolved = paths(tmp_path).foregrounds('videomatte240k', 'train')
    assert resolved.folder.name == 'VideoMatte240K_JPEG_HD'
    assert sorted({f.group for f in resolved.files}) == ['0000', '0001', '0002']
    assert all(f.fgr.parent.name == f.group for f in resolved.files)


def test_validation_holdout_keeps_whole_clips_and_is_deterministic(tmp_path):
    names = [f'clip{c:02d}/{frame:03d}' for c in range(12) for frame in range(3)]
    write_pairs(tmp_path / 'fgr', tmp_path / 'pha', names)
    overrides = {'custom.fgr': str(tmp_path / 'fgr'), 'custom.pha': str(tmp_path / 'pha')}
    train = paths(**overrides).foregrounds('custom', 'train').files
    valid = paths(**overrides).foregrounds('custom', 'valid').files
    assert {f.group for f in train}.isdisjoint({f.group for f in valid})
    assert len(train) + len(valid) == len(names) and len(valid) % 3 == 0 and valid
    assert valid == paths(**overrides).foregrounds('custom', 'valid').files


def test_background_layouts(tmp_path):
    write_backgrounds(tmp_path / 'BG-20k/train', 3)
    write_backgrounds(tmp_path / 'BG-20k/testval', 2, first=3)
    write_backgrounds(tmp_path / 'Backgrounds/train', 4, '.png')
    write_backgrounds(tmp_path / 'Backgrounds/valid', 1, '.png', first=4)
    p = paths(tmp_path)
    assert [f.name for f in p.backgrounds('bg20k', 'valid').files] == ['bg_003.jpg', 'bg_004.jpg']
    assert len(p.backgrounds('bg20k', 'train').files) == 3
    assert len(p.backgrounds('backgrounds', 'train').files) == 4
    assert len(BackgroundDataset(p.backgrounds('backgrounds', 'valid').files)) == 1


def test_missing_folder_error_names_it_and_shows_the_layout(tmp_path):
    (tmp_path / 'VideoMatte240K_JPEG_SD/train/fgr').mkdir(parents=True)
    with pytest.raises(DataPathError) as error:
        paths(tmp_path).foregrounds('videomatte240k', 'train')
    message = str(error.value)
    assert str(tmp_path / 'VideoMatte240K_JPEG_SD/train/pha') in message
    assert 'Expected layout' in message and 'train/pha/<clip>/<frame>.jpg' in message


def test_missing_data_set_folder_and_missing_root(tmp_path):
    with pytest.raises(DataPathError, match='PhotoMatte85.*does not exist'):
        paths(tmp_path).foregrounds('photomatte85', 'train')
    with pytest.raises(DataPathError, match='--data-root'):
        paths().foregrounds('photomatte85', 'train')


def test_empty_folder_is_an_error_naming_it(tmp_path):
    (tmp_path / 'BG-20k/train').mkdir(parents=True)
    with pytest.raises(DataPathError, match=r'BG-20k/train contains no images'):
        paths(tmp_path).backgrounds('bg20k', 'train')


def test_unpaired_names_are_an_error_listing_them(tmp_path):
    build_distinctions(tmp_path)
    write_sample(tmp_path / 'Distinctions-646/Train/FG/stray.png', tmp_path / 'elsewhere/stray.png')
    with pytest.raises(DataPathError) as error:
        paths(tmp_path).foregrounds('distinctions646', 'train')
    assert 'stray' in str(error.value) and 'Train/FG' in str(error.value) and 'Expected layout' in str(error.value)


def test_unknown_names_splits_and_malformed_flags(tmp_path):
    with pytest.raises(DataPathError, match='unknown data set'):
        data_path.parse_overrides(['videomate=/x'])
    with pytest.raises(DataPathError, match='NAME=DIR'):
        data_path.parse_overrides(['videomatte240k'])
    with pytest.raises(DataPathError, match='no split'):
        paths(tmp_path).foregrounds('videomatte240k', 'holdout')
    with pytest.raises(DataPathError, match='Unknown background'):
        paths(tmp_path).backgrounds('coco', 'train')


def test_flags_and_environment_choose_the_folder(tmp_path):
    build_photomatte(tmp_path / 'root')
    build_photomatte(tmp_path / 'elsewhere')
    (tmp_path / 'elsewhere/PhotoMatte85/0000.png').unlink()
    parser = data_path.add_data_arguments(argparse.ArgumentParser())

    args = parser.parse_args(['--data-root', str(tmp_path / 'root')])
    assert len(DataPaths.from_args(args, environ={}).foregrounds('photomatte85', 'all')) == 10

    override = f'photomatte85={tmp_path / "elsewhere/PhotoMatte85"}'
    args = parser.parse_args(['--data-root', str(tmp_path / 'root'), '--data-path', override])
    assert len(DataPaths.from_args(args, environ={}).foregrounds('photomatte85', 'all')) == 9

    environ = {'BGM_DATA_ROOT': str(tmp_path / 'root'),
               'BGM_DATA_PHOTOMATTE85': str(tmp_path / 'elsewhere/PhotoMatte85')}
    assert len(DataPaths(environ=environ).foregrounds('photomatte85', 'all')) == 9
    args = parser.parse_args(['--data-path', f'photomatte85={tmp_path / "root/PhotoMatte85"}'])
    assert len(DataPaths.from_args(args, environ=environ).foregrounds('photomatte85', 'all')) == 10  # flag wins


def test_synthetic_output_resolves_as_data_set_and_backgrounds(tmp_path):
    generate(tmp_path / 'synthetic', 4, (48, 32), seed=0, captures=0)
    p = paths(tmp_path)
    train, valid = p.foregrounds('synthetic', 'train'), p.foregrounds('synthetic', 'valid')
    assert len(train) + len(valid) == 4 and len(valid) == 1
    assert len(p.backgrounds('synthetic', 'train')) == 3
    pha, fgr = ForegroundDataset(train.files)[0]
    assert pha.size == fgr.size == (48, 32)


# ---------------------------------------------------------------- per-sample augmentation

def coded_pair(size=(40, 30), seed=0):
    """pha: random 'L' pattern; fgr: the same pattern in every channel, so any misalignment shows."""
    w, h = size
    pattern = np.random.default_rng(seed).integers(0, 256, (h, w), dtype=np.uint8)
    return Image.fromarray(pattern), Image.fromarray(np.dstack([pattern] * 3))


def test_geometric_augmentation_keeps_fgr_and_pha_aligned():
    geometry = Compose([
        RandomAffineAndResize(24, degrees=(-30, 30), translate=(0.2, 0.2), scale=(0.2, 1.5), shear=(-10, 10)),
        RandomHorizontalFlip(), RandomBoxBlur(0.5, 3), RandomSharpen(0.5), ToTensor()])
    pha_in, fgr_in = coded_pair()
    for seed in range(12):
        pha, fgr = geometry(pha_in, fgr_in, generator=torch.Generator().manual_seed(seed))
        assert pha.shape == (1, 24, 24) and fgr.shape == (3, 24, 24)
        assert torch.equal(fgr, pha.expand(3, -1, -1))


def test_affine_with_neutral_parameters_is_cover_resize_and_centre_crop():
    ramp = Image.fromarray(np.tile(np.arange(200, dtype=np.uint8), (100, 1)))
    neutral = RandomAffineAndResize((50, 50), degrees=0, translate=(0, 0), scale=(1, 1), shear=(0, 0))
    expected = ramp.resize((100, 50), Image.BILINEAR).crop((25, 0, 75, 50))
    assert np.abs(np.asarray(neutral(ramp), int) - np.asarray(expected, int)).max() <= 1


def test_affine_interpolation_and_fill_are_honoured():
    binary = Image.fromarray((np.random.default_rng(0).random((30, 40)) > 0.5).astype(np.uint8) * 255)
    shrink = RandomAffineAndResize(32, degrees=(-10, 10), translate=(0.1, 0.1), scale=(0.3, 0.5), shear=(0, 0),
                                   interpolation=InterpolationMode.NEAREST, fill=7)
    values = set(np.unique(np.asarray(shrink(binary, generator=torch.Generator().manual_seed(1)))))
    assert 7 in values and values <= {0, 7, 255}


def test_colour_jitter_touches_only_the_foreground():
    pha, fgr = coded_pair()
    jitter = ApplyOnlyAt([1], ColorJitter(0.5, 0.5, 0.5, 0.2))
    pha_out, fgr_out = jitter(pha, fgr, generator=torch.Generator().manual_seed(0))
    assert pha_out is pha and np.asarray(fgr_out).tolist() != np.asarray(fgr).tolist()


def test_recipes_reproduce_under_a_seed_and_differ_across_seeds():
    pha, fgr = coded_pair((60, 50))
    for pair_transform, background_transform in (train_transforms(32, 'base'), train_transforms(32, 'refine'),
                                                 valid_transforms(32)):
        a = pair_transform(pha, fgr, generator=torch.Generator().manual_seed(5))
        b = pair_transform(pha, fgr, generator=torch.Generator().manual_seed(5))
        c = pair_transform(pha, fgr, generator=torch.Generator().manual_seed(6))
        assert all(torch.equal(x, y) for x, y in zip(a, b)) and not torch.equal(a[1], c[1])
        bgr = background_transform(fgr, generator=torch.Generator().manual_seed(5))
        assert bgr.shape == (3, 32, 32) and 0 <= bgr.min() and bgr.max() <= 1
    with pytest.raises(ValueError, match='stage'):
        train_transforms(32, 'final')


# ---------------------------------------------------------------- composition: pairing and seeds

def composition(tmp_path, foregrounds=12, backgrounds=40, transforms=False, seed=0):
    write_pairs(tmp_path / 'fgr', tmp_path / 'pha', [f'{k:02d}' for k in range(foregrounds)], '.png', '.png')
    write_backgrounds(tmp_path / 'bgr', backgrounds, '.png')
    pair_transform, background_transform = train_transforms(16) if transforms else (None, None)
    return CompositionDataset(ForegroundDataset.from_folders(tmp_path / 'fgr', tmp_path / 'pha'),
                              BackgroundDataset.from_folder(tmp_path / 'bgr'),
                              pair_transform, background_transform, seed=seed)


def background_id(bgr):
    """Which fake background a (3, H, W) tensor shows, from its red channel (6 k)."""
    return round(float(bgr[0].mean()) * 255 / 6)


def test_composition_items_are_tensors_of_the_documented_shapes(tmp_path):
    dataset = composition(tmp_path, transforms=True)
    pha, fgr, bgr = dataset[3]
    assert (pha.shape, fgr.shape, bgr.shape) == ((1, 16, 16), (3, 16, 16), (3, 16, 16))
    assert all(t.dtype == torch.float32 and 0 <= t.min() and t.max() <= 1 for t in (pha, fgr, bgr))


def test_pairing_is_random_per_epoch_and_reproducible_under_the_seed(tmp_path):
    dataset = composition(tmp_path)
    epoch0 = [dataset.background_index(i) for i in range(len(dataset))]
    assert [background_id(dataset[i][2]) for i in range(len(dataset))] == epoch0
    assert len(set(epoch0)) > len(dataset) // 2 and epoch0 != list(range(len(dataset)))
    dataset.set_epoch(1)
    epoch1 = [dataset.background_index(i) for i in range(len(dataset))]
    assert epoch1 != epoch0
    again = CompositionDataset(dataset.foregrounds, dataset.backgrounds, seed=0)
    again.set_epoch(1)
    assert [again.background_index(i) for i in range(len(dataset))] == epoch1
    other_seed = CompositionDataset(dataset.foregrounds, dataset.backgrounds, seed=1)
    assert [other_seed.background_index(i) for i in range(len(dataset))] != epoch0


def test_workers_do_not_change_samples(tmp_path):
    dataset = composition(tmp_path, transforms=True)
    dataset.set_epoch(2)
    single = [torch.cat(batch, 1) for batch in DataLoader(dataset, batch_size=4)]
    parallel = [torch.cat(batch, 1) for batch in DataLoader(dataset, batch_size=4, num_workers=2)]
    assert all(torch.equal(a, b) for a, b in zip(single, parallel)) and len(single) == 3


def test_persistent_workers_follow_set_epoch(tmp_path):
    dataset = composition(tmp_path)
    loader = DataLoader(dataset, batch_size=4, num_workers=2, persistent_workers=True)
    for epoch in (0, 1):
        dataset.set_epoch(epoch)
        seen = [background_id(bgr) for _, _, bgrs in loader for bgr in bgrs]
        assert seen == [dataset.background_index(i, epoch) for i in range(len(dataset))]


def test_ranks_see_disjoint_foregrounds_and_independent_pairings(tmp_path):
    dataset = composition(tmp_path, foregrounds=16)
    dataset.set_epoch(3)
    per_rank = []
    for rank in (0, 1):
        sampler = DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=True, seed=0)
        sampler.set_epoch(3)
        per_rank.append([(i, background_id(dataset[i][2])) for i in sampler])
    indices = [{i for i, _ in pairs} for pairs in per_rank]
    assert indices[0].isdisjoint(indices[1]) and len(indices[0] | indices[1]) == 16
    assert [b for _, b in per_rank[0]] != [b for _, b in per_rank[1]]
    assert all(b == dataset.background_index(i) for pairs in per_rank for i, b in pairs)


def test_empty_sources_are_rejected(tmp_path):
    write_backgrounds(tmp_path / 'bgr', 1)
    with pytest.raises(ValueError, match='foreground'):
        CompositionDataset([], BackgroundDataset.from_folder(tmp_path / 'bgr'))


# ---------------------------------------------------------------- corrupt files

def corrupt(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 3])


def test_corrupt_foreground_is_skipped_with_a_warning_and_counted(tmp_path):
    names = [f'{k:02d}' for k in range(10)]
    write_pairs(tmp_path / 'fgr', tmp_path / 'pha', names)
    corrupt(tmp_path / 'fgr/04.jpg')
    dataset = ForegroundDataset.from_folders(tmp_path / 'fgr', tmp_path / 'pha')
    next_pha, _ = dataset[5]
    with pytest.warns(CorruptImageWarning, match='04.jpg'):
        pha, fgr = dataset[4]
    assert np.array_equal(np.asarray(pha), np.asarray(next_pha))    # fell back to item 5
    assert dataset.failures.failures == 1 and dataset.failures.attempts == 3   # 5, then 4 and 5


def test_mismatched_sizes_and_non_images_are_skipped(tmp_path):
    write_pairs(tmp_path / 'fgr', tmp_path / 'pha', ['a', 'b', 'c'])
    save(tmp_path / 'pha/a.png', np.zeros((5, 5)))
    write_backgrounds(tmp_path / 'bgr', 3)
    (tmp_path / 'bgr/bg_000.jpg').write_bytes(b'not an image at all')
    with pytest.warns(CorruptImageWarning):
        assert ForegroundDataset.from_folders(tmp_path / 'fgr', tmp_path / 'pha')[0][0].size == (12, 10)
        assert BackgroundDataset.from_folder(tmp_path / 'bgr')[0].size == (12, 10)


def test_a_largely_corrupt_data_set_stops_with_an_error_naming_the_folder(tmp_path):
    write_pairs(tmp_path / 'fgr', tmp_path / 'pha', [f'{k:02d}' for k in range(10)])
    for k in range(0, 10, 2):
        corrupt(tmp_path / f'fgr/{k:02d}.jpg')
    dataset = ForegroundDataset.from_folders(tmp_path / 'fgr', tmp_path / 'pha', min_attempts=8)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', CorruptImageWarning)
        with pytest.raises(CorruptDataError, match=str(tmp_path / 'fgr')):
            for i in range(len(dataset)):
                dataset[i]


def test_a_run_of_unreadable_files_gives_up(tmp_path):
    write_backgrounds(tmp_path / 'bgr', 3)
    for path in (tmp_path / 'bgr').iterdir():
        corrupt(path)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', CorruptImageWarning)
        with pytest.raises(CorruptDataError, match='3 images in a row'):
            BackgroundDataset.from_folder(tmp_path / 'bgr')[1]


# ---------------------------------------------------------------- the validation sample

def test_sample_dataset_spreads_evenly():
    sample = SampleDataset(list(range(100)), 4)
    assert [sample[i] for i in range(len(sample))] == [0, 25, 50, 75]
    assert len(SampleDataset(list(range(3)), 10)) == 3


# ---------------------------------------------------------------- per-batch augmentation

def batch(b=3, size=96):
    """pha, fgr, bgr whose pixels encode their own x coordinate, so any crop mismatch shows."""
    ramp = torch.linspace(0, 1, size).view(1, 1, 1, size).expand(b, 1, size, size)
    return ramp.clone(), ramp.expand(b, 3, size, size).clone(), (0.9 - 0.8 * ramp).expand(b, 3, size, size).clone()


def no_augmentation(**kwargs):
    return {**dict(shadow_p=0, noise_p=0, jitter_p=0, misalign_p=0), **kwargs}


def test_batch_crop_is_shared_and_composites_exactly():
    pha, fgr, bgr = batch()
    augment = BatchAugment(crop_range=(64, 80), generator=torch.Generator().manual_seed(0), **no_augmentation())
    for _ in range(4):
        src, pha_c, fgr_c, bgr_c = augment(pha, fgr, bgr)
        h, w = src.shape[-2:]
        assert 64 <= h < 80 and 64 <= w < 80 and pha_c.shape == (3, 1, h, w) and bgr_c.shape == (3, 3, h, w)
        assert torch.equal(fgr_c[:, :1], pha_c)          # the same crop window for all three
        assert torch.allclose(bgr_c[:, :1], 0.9 - 0.8 * pha_c, atol=1e-5)
        assert torch.allclose(src, fgr_c * pha_c + bgr_c * (1 - pha_c))


def test_refine_crops_are_multiples_of_four():
    pha, fgr, bgr = batch()
    augment = BatchAugment.refine(crop_range=(64, 96), generator=torch.Generator().manual_seed(1))
    sizes = {augment(pha, fgr, bgr)[0].shape[-2:] for _ in range(5)}
    assert all(h % 4 == 0 and w % 4 == 0 and 64 <= h < 96 for h, w in sizes)


def test_batch_augmentation_is_reproducible_and_in_range():
    pha, fgr, bgr = batch()
    results = [BatchAugment.base(crop_range=(64, 96), shadow_p=1, noise_p=1, jitter_p=1, misalign_p=1,
                                 generator=torch.Generator().manual_seed(seed))(pha, fgr, bgr) for seed in (7, 7, 8)]
    assert all(torch.equal(a, b) for a, b in zip(results[0], results[1]))
    assert not torch.equal(results[0][3], results[2][3])
    assert all(0 <= t.min() and t.max() <= 1 for t in results[0])


def test_shadow_darkens_only_the_source_and_background_effects_only_the_background():
    pha, fgr, bgr = batch()
    g = torch.Generator().manual_seed(3)
    src, pha_c, fgr_c, bgr_c = BatchAugment(crop_range=None, generator=g, **no_augmentation(shadow_p=1))(pha, fgr, bgr)
    clean = fgr * pha + bgr * (1 - pha)
    assert (src <= clean + 1e-6).all() and (src < clean - 0.01).any()
    assert torch.equal(bgr_c, bgr) and torch.equal(pha_c, pha) and torch.equal(fgr_c, fgr)

    disturb = BatchAugment(crop_range=None, generator=g, shadow_p=0, noise_p=1, jitter_p=1, misalign_p=1)
    src, pha_c, fgr_c, bgr_c = disturb(pha, fgr, bgr)
    assert torch.equal(pha_c, pha) and torch.equal(fgr_c, fgr)
    assert not torch.allclose(bgr_c, bgr, atol=0.01) and not torch.equal(src, clean)


def test_batch_augmentation_draws_on_the_host_first_and_then_only_works_on_the_device():
    """draw (CPU draws, one copy to the device) then apply is the same as a call; apply waits for nothing."""
    pha, fgr, bgr = batch()
    every = dict(crop_range=(64, 96), shadow_p=1, noise_p=1, jitter_p=1, misalign_p=1)
    called = BatchAugment.base(generator=torch.Generator().manual_seed(5), **every)(pha, fgr, bgr)
    augment = BatchAugment.base(generator=torch.Generator().manual_seed(5), **every)
    drawn = augment.draw(len(pha), pha.shape[-2:], pha.device)
    with OpCounter() as counts:
        applied = augment.apply(drawn, pha, fgr, bgr)
    assert all(torch.equal(a, b) for a, b in zip(called, applied))
    assert counts.syncs == [] and counts.uploads == []


def test_tiny_crops_with_large_shadow_blur_work():
    pha, fgr, bgr = batch(b=2, size=40)
    out = BatchAugment(crop_range=(24, 32), shadow_p=1, shadow_blur=(20, 40),
                       generator=torch.Generator().manual_seed(0))(pha, fgr, bgr)
    assert all(torch.isfinite(t).all() for t in out) and out[0].shape[-1] < 32


def test_own_background_shows_item_i_over_background_i_under_one_geometry(tmp_path):
    """With own_background, foreground and background share the pair transform's geometry: a
    foreground that is its own background comes out pixel for pixel equal to it."""
    picture = (np.random.default_rng(0).random((24, 32, 3)) * 255).astype(np.uint8)
    for i in range(6):
        save(tmp_path / 'fgr' / f'{i}.png', np.roll(picture, 3 * i, axis=1))
        save(tmp_path / 'pha' / f'{i}.png', np.full((24, 32), 255))
        save(tmp_path / 'bgr' / f'{i}.png', np.roll(picture, 3 * i, axis=1))
    geometry = Compose([RandomAffineAndResize(16, degrees=(-20, 20), translate=(0.2, 0.2), scale=(0.5, 1.5),
                                              shear=(-10, 10)), ToTensor()])
    foregrounds = ForegroundDataset.from_folders(tmp_path / 'fgr', tmp_path / 'pha')
    backgrounds = BackgroundDataset.from_folder(tmp_path / 'bgr')

    own = CompositionDataset(foregrounds, backgrounds, geometry, geometry, own_background=1.0)
    assert [own.background_index(i) for i in range(6)] == list(range(6))
    assert all(torch.equal(own[i][1], own[i][2]) for i in range(6))
    mixed = CompositionDataset(foregrounds, backgrounds, geometry, geometry, own_background=0.5)
    same = [mixed.background_index(i, epoch) == i for epoch in range(8) for i in range(6)]
    assert 0.25 < np.mean(same) < 0.75
    random = CompositionDataset(foregrounds, backgrounds, geometry, geometry)
    assert not any(torch.equal(random[i][1], random[i][2]) for i in range(6))

    with pytest.raises(ValueError, match='one background per foreground'):
        CompositionDataset(foregrounds, BackgroundDataset(backgrounds.files[:5]), own_background=0.5)
    with pytest.raises(ValueError, match='probability'):
        CompositionDataset(foregrounds, backgrounds, own_background=2)


# ---------------------------------------------------------------- sample depths and the pixel limit

def save16(path, array):
    """A 16-bit grayscale PNG (Pillow mode I;16)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, np.uint16)).save(path)


def test_sixteen_bit_alphas_and_gray_foregrounds_are_read_at_their_value(tmp_path):
    import cv2
    from torchvision.transforms import functional as F
    # An alpha of 32768 of 65535 is 0.5: it was clipped to 255, opaque, as was every semi-transparent pixel.
    save(tmp_path / 'fgr/a.png', np.full((10, 12, 3), 90))
    save16(tmp_path / 'pha/a.png', np.full((10, 12), 32768))
    save16(tmp_path / 'fgr/b.png', np.full((10, 12), 32768))     # a 16-bit gray foreground: 128 of 255, not 255
    save(tmp_path / 'pha/b.png', np.full((10, 12), 200))        # an 8-bit alpha stays as it was
    dataset = ForegroundDataset.from_folders(tmp_path / 'fgr', tmp_path / 'pha')
    pha, fgr = dataset[0]
    assert pha.size == fgr.size == (12, 10)
    assert np.abs(np.asarray(pha, np.float64) - 0.5).max() <= 1 / 65535
    assert torch.allclose(F.to_tensor(pha), torch.full((1, 10, 12), 0.5), atol=1 / 65535)
    pha, fgr = dataset[1]
    assert pha.mode == 'L' and np.all(np.asarray(pha) == 200) and np.all(np.asarray(fgr) == 128)

    # The alpha of a 16-bit RGBA PNG (PhotoMatte85's layout), which Pillow reads at 8 bits.
    rgba = np.zeros((10, 12, 4), np.uint16)
    rgba[..., :3], rgba[..., 3] = 65535, 32768
    (tmp_path / 'rgba').mkdir()
    cv2.imwrite(str(tmp_path / 'rgba/c.png'), rgba)
    from dataset.files import rgba_files
    pha, fgr = ForegroundDataset(rgba_files(tmp_path / "rgba"))[0]
    assert np.abs(np.asarray(pha, np.float64) - 0.5).max() <= 1 / 65535 and np.all(np.asarray(fgr) == 255)


def test_a_sixteen_bit_alpha_keeps_its_precision_through_the_augmentation(tmp_path):
    save(tmp_path / 'fgr/a.png', np.full((20, 24, 3), 90))
    save16(tmp_path / 'pha/a.png', np.full((20, 24), 32768))
    save(tmp_path / 'bgr/a.png', np.full((20, 24, 3), 30))
    # Every transform of the recipe, the blur and the sharpening among them (geometry that covers the frame).
    every_transform = Compose([RandomAffineAndResize(16, degrees=(-5, 5), translate=(0, 0), scale=(1.2, 1.5),
                                                     shear=(-5, 5)),
                               RandomHorizontalFlip(1.0), RandomBoxBlur(1.0, 3), RandomSharpen(1.0),
                               ApplyOnlyAt([1], ColorJitter(0.15, 0.15, 0.15, 0.05)), ToTensor()])
    foregrounds = ForegroundDataset.from_folders(tmp_path / 'fgr', tmp_path / 'pha')
    backgrounds = BackgroundDataset.from_folder(tmp_path / 'bgr')
    pha, fgr, _ = CompositionDataset(foregrounds, backgrounds, every_transform, None)[0]
    assert pha.shape == (1, 16, 16) and pha.dtype == torch.float32
    assert (pha - 0.5).abs().max() <= 1 / 65535, pha
    recipe = CompositionDataset(foregrounds, backgrounds, *train_transforms(16))
    for epoch in range(20):   # blur and sharpening each come up in about one epoch of ten: they run
        recipe.set_epoch(epoch)
        pha = recipe[0][0]
        assert 0 <= pha.min() and pha.max() < 0.9       # half transparent, the fill and a sharpened edge

    # The filters that PIL runs on 8 bits only compute on 16-bit alphas what PIL computes, less its rounding.
    from PIL import ImageFilter
    from dataset.loading import PreciseAlpha
    levels = np.random.default_rng(0).integers(0, 256, (30, 41)).astype(np.uint8)
    precise = PreciseAlpha.from_array(levels / 255)
    for image_filter in (ImageFilter.BoxBlur(1), ImageFilter.BoxBlur(2.5), ImageFilter.SHARPEN,
                         ImageFilter.Kernel((5, 5), list(range(25)), 300, 10), ImageFilter.MedianFilter(3)):
        expected = np.asarray(Image.fromarray(levels).filter(image_filter), np.float64) / 255
        filtered = precise.filter(image_filter)
        assert isinstance(filtered, PreciseAlpha) and filtered.mode == 'F'
        assert np.abs(np.asarray(filtered) - expected).max() <= 1 / 255 + 1e-6, image_filter
    moved = precise.transform((20, 20), Image.AFFINE, (1, 0.1, 0, 0, 1, 0), resample=Image.BILINEAR).reduce(2)
    assert isinstance(moved.transpose(Image.FLIP_LEFT_RIGHT), PreciseAlpha)


def test_the_pixel_limit_holds_for_training_data_and_a_malformed_one_is_refused(tmp_path, monkeypatch):
    from common.errors import UserError
    write_sample(tmp_path / 'fgr/a.png', tmp_path / 'pha/a.png', size=(12, 10))     # 120 pixels
    write_sample(tmp_path / 'fgr/b.png', tmp_path / 'pha/b.png', size=(30, 20))     # 600 pixels
    monkeypatch.setenv('BGM_MAX_IMAGE_PIXELS', '300')
    dataset = ForegroundDataset.from_folders(tmp_path / 'fgr', tmp_path / 'pha')
    with pytest.warns(CorruptImageWarning, match='above the limit of 300 pixels.*BGM_MAX_IMAGE_PIXELS'):
        assert dataset[1][0].size == (12, 10)                                       # b skipped: a instead
    monkeypatch.setenv('BGM_MAX_IMAGE_PIXELS', '0')                                 # 0: no limit
    assert dataset[1][0].size == (30, 20)
    # Not a number of pixels: one clear error when the data set is made, not "no limit" (-5 was).
    for bad in ('-5', 'abc', '1e9'):
        monkeypatch.setenv('BGM_MAX_IMAGE_PIXELS', bad)
        with pytest.raises(UserError, match=f"BGM_MAX_IMAGE_PIXELS='{bad}': expected a whole number of pixels"):
            ForegroundDataset.from_folders(tmp_path / 'fgr', tmp_path / 'pha')
        with pytest.raises(UserError, match='BGM_MAX_IMAGE_PIXELS'):
            BackgroundDataset.from_folder(tmp_path / 'fgr')


# ---------------------------------------------------------------- python data_path.py

def test_data_path_prints_a_table_and_how_to_get_what_is_not_there(tmp_path, capsys, monkeypatch):
    """It printed 27 lines cut off after 'Expected layout:'."""
    import os
    for variable in [v for v in os.environ if v.startswith('BGM_DATA')]:
        monkeypatch.delenv(variable)
    build_photomatte(tmp_path)
    (tmp_path / 'BG-20k' / 'train').mkdir(parents=True)
    assert data_path.main(['--data-root', str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f'data root: {tmp_path}' and not any(line.endswith('Expected layout:') for line in lines)
    header = lines.index(next(line for line in lines if line.startswith('DATA SET')))
    assert lines[header].split() == ['DATA', 'SET', 'KIND', 'SPLIT', 'STATUS', 'FILES', 'FOLDER']
    rows = lines[header + 1:lines.index('', header)]
    splits = sum(len(layout.splits) for sets in (data_path.FOREGROUND_SETS, data_path.BACKGROUND_SETS)
                 for layout in sets.values())
    assert len(rows) == splits and len({row.index(row.split()[3]) for row in rows}) == 1   # aligned columns
    cells = {tuple(row.split()[:3]): row.split()[3:] for row in rows}
    assert cells['photomatte85', 'foreground', 'all'] == ['found', '10', str(tmp_path / 'PhotoMatte85')]
    assert cells['videomatte240k', 'foreground', 'valid'] == ['missing', '-', str(tmp_path / 'VideoMatte240K_JPEG_SD')]
    assert cells['bg20k', 'background', 'train'][0] == 'BROKEN'
    # How to get each data set that is not there, where to put it; what is wrong with a broken one.
    get = lines.index('To get what is not there (then --data-root DIR, or --data-path NAME=DIR):')
    sources = {line.split()[0]: line.split()[1:] for line in lines[get + 2:lines.index('', get)]}
    assert sources['videomatte240k'][:2] == ['DIR/VideoMatte240K_JPEG_SD', 'download:']
    assert 'grail.cs.washington.edu' in sources['videomatte240k'][2] and 'photomatte85' not in sources
    assert ' '.join(sources['synthetic']) == 'DIR/synthetic make it: python -m dataset.synthetic --out DIR/synthetic'
    broken = lines.index('bg20k (backgrounds) is broken:')
    assert 'BG-20k/train contains no images' in lines[broken + 1] and lines[broken + 3] == '  expected layout:'
    # A data set asked for and not found: status 1; without a root, nowhere to look.
    assert data_path.main(['--data-root', str(tmp_path), 'videomatte240k']) == 1
    capsys.readouterr()
    assert data_path.main(['photomatte85']) == 1
    out = capsys.readouterr().out
    assert out.startswith('data root: none (pass --data-root DIR or set BGM_DATA_ROOT')
    assert 'photomatte85  foreground  all    no location  -      -' in out


def test_skip_warnings_name_the_file_at_fault_not_the_pair(tmp_path):
    write_pairs(tmp_path / 'fgr', tmp_path / 'pha', ['00', '01'])
    corrupt(tmp_path / 'pha/00.png')
    with pytest.warns(CorruptImageWarning) as caught:
        ForegroundDataset.from_folders(tmp_path / 'fgr', tmp_path / 'pha')[0]
    message = str(caught[0].message)
    assert str(tmp_path / 'pha/00.png') in message and str(tmp_path / 'fgr') not in message, message


@pytest.mark.parametrize('workers', ['0', '1'])
def test_a_training_set_of_broken_alphas_ends_in_one_line_naming_their_folder(tmp_path, workers):
    """train_base.py on a data set whose pha PNGs are all truncated: exit status 1 and one line naming
    the pha folder (not fgr), no traceback, in the main process as from a DataLoader worker."""
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    data = generate(str(tmp_path / 'data'), count=12, size=(64, 64), seed=1, captures=1)
    for path in (data / 'pha').glob('*.png'):
        corrupt(path)
    command = [sys.executable, os.path.join(root, 'train_base.py'), '--data-path', f'synthetic={data}',
               '--dataset-name', 'synthetic', '--background-dataset', 'synthetic', '--model-backbone',
               'mobilenetv2', '--model-name', 'run', '--device', 'cpu', '--batch-size', '2', '--num-workers',
               workers, '--sample-size', '48', '--crop-min', '40', '--crop-max', '48', '--valid-samples', '2',
               '--checkpoint-dir', str(tmp_path / 'checkpoint'), '--log-dir', str(tmp_path / 'log'),
               '--max-steps', '2']
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=str(tmp_path))
    assert result.returncode == 1, result.stderr[-3000:]
    assert 'Traceback' not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith('train_base.py: error:')]
    assert len(errors) == 1, result.stderr[-3000:]
    assert f"under {data / 'pha'};" in errors[0] and str(data / 'fgr') not in errors[0], errors[0]
