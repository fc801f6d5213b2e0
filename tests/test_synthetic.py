"""The synthetic data generator: layout, value ranges, matting content, capture pairs, determinism."""
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from dataset import synthetic
from dataset.synthetic import CAPTURE_MARGIN, generate

SIZE = (96, 64)
FOLDERS = ('fgr', 'pha', 'bgr', 'captures/src', 'captures/bgr', 'captures/pha', 'captures/fgr')


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return generate(tmp_path_factory.mktemp('synthetic') / 'out', 3, SIZE, seed=1, captures=2)


def read(path) -> np.ndarray:
    return np.asarray(Image.open(path), np.float32) / 255


def test_layout_names_and_formats(data):
    for folder in FOLDERS:
        count = 2 if folder.startswith('captures') else 3
        assert sorted(p.name for p in (data / folder).iterdir()) == [f'{i:04d}.png' for i in range(count)]
        for path in (data / folder).iterdir():
            with Image.open(path) as img:
                assert img.format == 'PNG' and img.size == SIZE
                assert img.mode == ('L' if folder.endswith('pha') else 'RGB')


def test_alpha_has_opaque_transparent_and_fractional_values(data):
    for i in range(3):
        pha = np.asarray(Image.open(data / f'pha/{i:04d}.png'))
        assert pha.min() == 0 and pha.max() == 255
        assert ((pha > 10) & (pha < 245)).mean() > 0.01
        fgr = read(data / f'fgr/{i:04d}.png')
        assert fgr[pha > 0].std() > 0.02        # textured, not a flat colour


def test_foregrounds_have_strands_holes_and_semi_transparency():
    for index in range(4):
        _, pha, _ = synthetic.training_sample(seed=3, index=index, size=(160, 120))
        solid = pha > 0.25
        strands = solid & ~ndimage.binary_opening(solid, np.ones((3, 3)))    # structures under 3 px wide
        assert strands.sum() > 40
        body = pha > 0.5
        assert ndimage.label(ndimage.binary_fill_holes(body) & ~body)[1] >= 1   # enclosed holes
        veil = ndimage.binary_erosion((pha > 0.15) & (pha < 0.85), iterations=2)
        assert veil.sum() > 20                    # a semi-transparent area, not just soft edges


def test_capture_is_the_foreground_over_a_shifted_plate(data):
    for i in range(2):
        src, plate = read(data / f'captures/src/{i:04d}.png'), read(data / f'captures/bgr/{i:04d}.png')
        pha = read(data / f'captures/pha/{i:04d}.png')[..., None]
        fgr = read(data / f'captures/fgr/{i:04d}.png')
        m = CAPTURE_MARGIN
        background = (pha[m:-m, m:-m, 0] == 0)
        errors = {}
        for dy in range(-m, m + 1):
            for dx in range(-m, m + 1):
                # src at p shows the scene at p; the plate shows it at p - (dx, dy) when shifted by (dx, dy).
                moved = np.roll(plate, (dy, dx), axis=(0, 1))[m:-m, m:-m]
                gain = src[m:-m, m:-m][background].mean() / moved[background].mean()
                errors[dx, dy] = np.abs(src[m:-m, m:-m] - moved * gain)[background].mean()
        best, runner_up = sorted(errors, key=errors.get)[:2]
        assert best != (0, 0) and max(map(abs, best)) <= 3           # a camera shift of a few pixels
        assert errors[best] < 0.015 and errors[best] < 0.7 * errors[runner_up]   # and nothing else but noise
        opaque = pha[..., 0] == 1
        assert np.abs(src - fgr)[opaque].mean() < 0.02


def test_same_seed_same_bytes_and_more_samples_extend_fewer(tmp_path, data):
    again = generate(tmp_path / 'again', 4, SIZE, seed=1, captures=2)
    other = generate(tmp_path / 'other', 3, SIZE, seed=2, captures=0)
    for folder in ('fgr', 'pha', 'bgr', 'captures/src', 'captures/bgr'):
        for i in range(2):
            assert (again / folder / f'{i:04d}.png').read_bytes() == (data / folder / f'{i:04d}.png').read_bytes()
    assert (other / 'pha/0000.png').read_bytes() != (data / 'pha/0000.png').read_bytes()


def test_refuses_a_non_empty_folder_unless_overwrite(tmp_path):
    out = tmp_path / 'mine'
    out.mkdir()
    (out / 'precious.txt').write_text('keep me')
    with pytest.raises(FileExistsError, match='not empty'):
        generate(out, 1, (32, 32))
    generate(out, 1, (32, 32), captures=0, overwrite=True)
    assert (out / 'precious.txt').read_text() == 'keep me' and (out / 'pha/0000.png').exists()
    assert not [p for p in out.rglob('*') if p.name.startswith('.')]    # no temporary files left


def test_command_line(tmp_path, capsys):
    out = tmp_path / 'cli'
    assert synthetic.main(['--out', str(out), '--count', '2', '--size', '40', '33', '--seed', '4']) == 0
    with Image.open(out / 'captures/bgr/0001.png') as img:
        assert img.size == (40, 33)
    assert synthetic.main(['--out', str(out), '--count', '1']) == 2
    assert 'not empty' in capsys.readouterr().err
    with pytest.raises(ValueError, match='count'):
        generate(tmp_path / 'zero', 0)
