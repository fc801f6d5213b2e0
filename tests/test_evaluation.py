"""Tests of the matting metrics (evaluation.metrics) and the evaluation script (evaluate.py).

Expected values are derived by hand in the comments, or from the documented definition written out
naively here (2-D filter loops, the benchmark's level-map loop with scipy's labelling).
"""

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from broken_files import png_claiming
from common.errors import Skips, UserError
from evaluation.benchmark import evaluate_folders
from evaluation.metrics import (connectivity_error, dtssd, evaluate_matte, foreground_mse,
                                gradient_error, gradient_magnitude, mad, mse, sad,
                                trimap_from_alpha, unknown_region)

REPOSITORY = Path(__file__).resolve().parents[1]


def quantised(array):
    """Alpha as an 8-bit file would hold it."""
    return np.round(np.clip(array, 0, 1) * 255) / 255


def blobby_matte(rng, shape=(24, 32)):
    """A smooth random matte with soft edges: upsampled noise through a ramp."""
    coarse = rng.random((shape[0] // 4 + 1, shape[1] // 4 + 1))
    smooth = ndimage.zoom(coarse, 4, order=1)[:shape[0], :shape[1]]
    return quantised((smooth - 0.3) * 2.5)


def save_gray(path, alpha):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round(alpha * 255).astype(np.uint8)).save(path)


def save_rgb(path, rgb):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round(rgb * 255).astype(np.uint8)).save(path)


# ---------------------------------------------------------------- metrics on hand-made cases

def test_identical_mattes_score_zero_everywhere():
    rng = np.random.default_rng(0)
    true = blobby_matte(rng)
    region = unknown_region(trimap_from_alpha(true))
    assert region.any()
    for function in (sad, mad, mse, gradient_error, connectivity_error):
        assert function(true, true) == 0, function.__name__
        assert function(true, true, region) == 0, function.__name__
    assert dtssd(true, true[::-1], true, true[::-1]) == 0
    rgb = rng.random(true.shape + (3,))
    assert foreground_mse(rgb, rgb, true) == 0


def test_sad_mad_mse_of_known_errors_and_region():
    true = np.zeros((8, 10))
    pred = true.copy()
    pred[0, :6] = 0.5   # six errors of 0.5 inside the region
    pred[5, :4] = 0.25  # four errors of 0.25 outside it
    region = np.zeros((8, 10), dtype=bool)
    region[:4] = True   # 40 pixels

    assert sad(pred, true) == pytest.approx(6 * 0.5 + 4 * 0.25)
    assert mad(pred, true) == pytest.approx(4.0 / 80)
    assert mse(pred, true) == pytest.approx((6 * 0.25 + 4 * 0.0625) / 80)
    assert sad(pred, true, region) == pytest.approx(3.0)
    assert mse(pred, true, region) == pytest.approx(6 * 0.25 / 40)
    # The benchmark's reporting scales: SAD / 1000, MSE x 1000.
    reported = evaluate_matte(pred, true, region, ('sad', 'mse'))
    assert reported == pytest.approx({'sad': 3.0 / 1000, 'mse': 6 * 0.25 / 40 * 1000})


def test_empty_region_gives_zero_sums_and_undefined_means():
    pred, true = np.full((4, 4), 0.5), np.zeros((4, 4))
    nothing = np.zeros((4, 4), dtype=bool)
    assert sad(pred, true, nothing) == 0
    assert np.isnan(mse(pred, true, nothing))


def test_metrics_are_symmetric_in_pred_and_true():
    rng = np.random.default_rng(1)
    a, b = blobby_matte(rng), blobby_matte(rng)
    region = unknown_region(trimap_from_alpha(a))
    for function in (sad, mse, gradient_error, connectivity_error):
        assert function(a, b, region) == pytest.approx(function(b, a, region)), function.__name__
        assert function(a, b, region) > 0, function.__name__


def naive_gradient_magnitude(image, sigma=1.4):
    """The benchmark's gaussgradient written out: a 2-D kernel, replicate borders, convolution."""
    half = int(np.ceil(sigma * np.sqrt(-2 * np.log(np.sqrt(2 * np.pi) * sigma * 1e-2))))
    assert half == 4  # sigma 1.4 gives a 9 x 9 kernel

    def gauss(x):
        return np.exp(-x ** 2 / (2 * sigma ** 2)) / (sigma * np.sqrt(2 * np.pi))

    offsets = np.arange(-half, half + 1)
    hx = np.array([[gauss(i) * (-j * gauss(j) / sigma ** 2) for j in offsets] for i in offsets])
    hx /= np.sqrt((hx ** 2).sum())
    padded = np.pad(image, half, mode='edge')
    size = 2 * half + 1

    def convolve(kernel):
        flipped = kernel[::-1, ::-1]
        return np.array([[(padded[r:r + size, c:c + size] * flipped).sum()
                          for c in range(image.shape[1])] for r in range(image.shape[0])])

    return np.sqrt(convolve(hx) ** 2 + convolve(hx.T) ** 2)


def test_gradient_follows_the_benchmark_filter_definition():
    rng = np.random.default_rng(2)
    pred, true = rng.random((13, 17)) * 0.5, blobby_matte(rng, (13, 17))
    np.testing.assert_allclose(gradient_magnitude(true), naive_gradient_magnitude(true), atol=1e-12)

    def normalised(m):
        return (m - m.min()) / (m.max() - m.min())

    expected = ((naive_gradient_magnitude(normalised(pred))
                 - naive_gradient_magnitude(normalised(true))) ** 2).sum()
    assert gradient_error(pred, true) == pytest.approx(expected)


def test_gradient_error_invariances():
    rng = np.random.default_rng(3)
    true, pred = blobby_matte(rng), blobby_matte(rng)
    reference = gradient_error(pred, true)
    assert reference > 0
    # Min-max normalisation removes any positive gain and offset.
    assert gradient_error(0.4 * pred + 0.3, true) == pytest.approx(reference)
    # x and y filters are transposes of each other.
    assert gradient_error(pred.T, true.T) == pytest.approx(reference)
    # Flat mattes have no gradient, whatever their level.
    assert gradient_error(np.full((9, 9), 0.2), np.full((9, 9), 0.9)) == 0


def test_connectivity_of_a_detached_blob_counts_each_of_its_pixels():
    true = np.zeros((20, 20))
    true[4:12, 4:12] = 1
    pred = true.copy()
    pred[15:17, 15:17] = 1
    # The blob lies outside every Omega, so l = 0 there: d_pred = 1 gives phi_pred = 0, while
    # d_true = 0 gives phi_true = 1. Elsewhere both mattes agree: 4 pixels x 1.
    assert connectivity_error(pred, true) == pytest.approx(4.0)
    assert connectivity_error(pred, true, np.zeros((20, 20), dtype=bool)) == 0


def test_connectivity_of_a_half_strength_prediction():
    true = np.zeros((20, 20))
    true[4:12, 4:12] = 1
    pred = 0.5 * true
    # The square is in Omega for t = 0.1 .. 0.5 and leaves at 0.6, so l = 0.5 there:
    # phi_true = 1 - 0.5 = 0.5 and phi_pred = 1 (d = 0), a difference of 0.5 on 64 pixels.
    assert connectivity_error(pred, true) == pytest.approx(64 * 0.5)


def test_connectivity_uses_the_largest_4_connected_component():
    true = np.zeros((14, 14))
    true[2:8, 2:8] = 1      # A: 36 pixels
    true[8:10, 8:10] = 1    # B: 4 pixels, touching A only at a corner
    pred = true.copy()
    pred[8:10, 8:10] = 0.65
    # 4-connected, B is its own smaller component: l = 0, |(1 - 0.65) - (1 - 1)| = 0.35 a pixel.
    # (Were B joined to A, l would be 0.6 and each pixel would add |0 - 0.4| = 0.4 instead.)
    assert connectivity_error(pred, true) == pytest.approx(4 * 0.35)


def naive_connectivity(pred, true, step=0.1, theta=0.15):
    """compute_connectivity_error.m written out, with scipy's labelling."""
    thresholds = np.arange(0, 11) / 10
    level = -np.ones(pred.shape)
    for i in range(1, len(thresholds)):
        labels, count = ndimage.label((pred >= thresholds[i]) & (true >= thresholds[i]))
        omega = np.zeros(pred.shape, dtype=bool)
        if count:
            omega = labels == 1 + np.argmax(ndimage.sum_labels(np.ones(pred.shape), labels,
                                                                np.arange(1, count + 1)))
        level[(level == -1) & ~omega] = thresholds[i - 1]
    level[level == -1] = 1
    pred_d, true_d = pred - level, true - level
    return np.abs((1 - pred_d * (pred_d >= theta)) - (1 - true_d * (true_d >= theta))).sum()


def test_connectivity_matches_the_benchmark_loop_on_random_mattes():
    rng = np.random.default_rng(4)
    for _ in range(3):
        true = blobby_matte(rng)
        pred = quantised(true + rng.normal(0, 0.15, true.shape))
        assert connectivity_error(pred, true) == pytest.approx(naive_connectivity(pred, true))


def test_connectivity_rejects_a_step_that_does_not_divide_one():
    with pytest.raises(ValueError, match='step'):
        connectivity_error(np.zeros((3, 3)), np.zeros((3, 3)), step=0.3)


def test_dtssd_measures_errors_in_change_not_errors_in_value():
    rng = np.random.default_rng(5)
    true_previous, true = 0.5 * rng.random((6, 8)), 0.5 * rng.random((6, 8))
    # A constant bias is temporally coherent: zero.
    biased = dtssd(true + 0.2, true_previous + 0.2, true, true_previous)
    assert biased == pytest.approx(0, abs=1e-12)
    # Static truth, prediction brightening by 0.1 everywhere: sqrt(mean(0.1^2)) = 0.1.
    static = np.full((6, 8), 0.5)
    assert dtssd(static + 0.1, static, static, static) == pytest.approx(0.1)
    # Half of the pixels change by 0.2: sqrt(0.5 * 0.04).
    flicker = static.copy()
    flicker[:3] += 0.2
    assert dtssd(flicker, static, static, static) == pytest.approx(np.sqrt(0.02))


def test_foreground_mse_counts_only_pixels_with_alpha_above_zero():
    alpha = np.zeros((4, 6))
    alpha[:, :3] = 0.5  # 12 pixels with foreground
    true_fgr = np.full((4, 6, 3), 0.4)
    pred_fgr = true_fgr.copy()
    pred_fgr[:, 3:] = 0.9          # errors where alpha = 0: ignored
    pred_fgr[:, :3, 0] += 0.1      # one channel off by 0.1 where alpha > 0
    assert foreground_mse(pred_fgr, true_fgr, alpha) == pytest.approx(0.01 / 3)
    region = np.zeros((4, 6), dtype=bool)
    region[:, 3:] = True
    assert np.isnan(foreground_mse(pred_fgr, true_fgr, alpha, region))


def test_metrics_reject_mattes_outside_zero_one_and_mismatched_shapes():
    with pytest.raises(ValueError, match='0 ~ 1'):
        sad(np.full((3, 3), 255.0), np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r'\(3, 3\).*\(3, 4\)'):
        mse(np.zeros((3, 3)), np.zeros((3, 4)))


# ---------------------------------------------------------------- trimaps

def test_trimap_of_a_hard_square_is_a_band_of_ten_pixels_each_side():
    true = np.zeros((100, 100))
    true[30:70, 30:70] = 1
    trimap = trimap_from_alpha(true)
    # Background: not within 10 px (chessboard) of the square, i.e. outside [20, 80)^2.
    # Foreground: the square eroded by 10 px, [40, 60)^2. Unknown: the 60^2 - 20^2 between.
    expected = np.zeros((100, 100), dtype=np.uint8)
    expected[20:80, 20:80] = 128
    expected[40:60, 40:60] = 255
    np.testing.assert_array_equal(trimap, expected)
    assert unknown_region(trimap).sum() == 60 ** 2 - 20 ** 2


def test_trimap_thresholds_and_image_border():
    soft = np.zeros((30, 30))
    soft[15, 15] = 0.5
    trimap = trimap_from_alpha(soft)
    assert (trimap == 128).sum() == 21 * 21  # the soft pixel widened by 10 each side
    assert (trimap_from_alpha(np.full((30, 30), 0.05)) == 0).all()    # alpha <= 0.06: background
    assert (trimap_from_alpha(np.full((30, 30), 0.07)) == 128).all()  # 0.06 < alpha < 0.96
    assert (trimap_from_alpha(np.full((30, 30), 0.95)) == 128).all()
    assert (trimap_from_alpha(np.full((30, 30), 0.97)) == 255).all()  # the border erodes nothing


def test_unknown_region_rejects_values_other_than_0_128_255():
    trimap = np.array([[0, 127], [128, 255]], dtype=np.uint8)
    with pytest.raises(ValueError, match=r'masks/a\.png.*127'):
        unknown_region(trimap, name='masks/a.png')


# ---------------------------------------------------------------- folders and the script

def test_predictions_match_ground_truth_by_name_without_extension(tmp_path):
    alpha = np.zeros((24, 24))
    alpha[6:18, 6:18] = 1
    save_gray(tmp_path / 'pred' / 'a' / 'x.png', alpha)
    (tmp_path / 'true' / 'a').mkdir(parents=True)
    Image.fromarray(np.round(alpha * 255).astype(np.uint8)).save(tmp_path / 'true' / 'a' / 'x.jpg',
                                                                 quality=100)
    results = evaluate_folders(tmp_path / 'pred', tmp_path / 'true', mode='frame')
    assert [row['file'] for row in results.rows] == ['a/x']
    assert results.rows[0]['mad'] < 5  # x 1e3: only JPEG noise


def test_unmatched_files_are_listed_then_counted(tmp_path):
    alpha = np.zeros((8, 8))
    for i in range(8):
        save_gray(tmp_path / 'true' / f'{i}.png', alpha)
    save_gray(tmp_path / 'pred' / '0.png', alpha)
    save_gray(tmp_path / 'pred' / 'stray.png', alpha)
    with pytest.raises(UserError) as error:
        evaluate_folders(tmp_path / 'pred', tmp_path / 'true')
    message = str(error.value)
    assert '7 of 8' in message and '1, 2, 3, 4, 5 ... and 2 more' in message
    assert '1 of 2' in message and 'stray' in message


def test_size_mismatch_names_both_files(tmp_path):
    save_gray(tmp_path / 'pred' / 'x.png', np.zeros((8, 10)))
    save_gray(tmp_path / 'true' / 'x.png', np.zeros((8, 8)))
    with pytest.raises(UserError, match=r'pred/x\.png is 10x8 but .*true/x\.png is 8x8'):
        evaluate_folders(tmp_path / 'pred', tmp_path / 'true')


def test_given_trimap_selects_the_region(tmp_path):
    rng = np.random.default_rng(6)
    true, pred = blobby_matte(rng), blobby_matte(rng)
    save_gray(tmp_path / 'true' / 'x.png', true)
    save_gray(tmp_path / 'pred' / 'x.png', pred)
    trimap = np.zeros(true.shape, dtype=np.uint8)
    trimap[:, :10] = 128
    (tmp_path / 'trimap').mkdir()
    Image.fromarray(trimap).save(tmp_path / 'trimap' / 'x.png')
    row = evaluate_folders(tmp_path / 'pred', tmp_path / 'true', trimap=tmp_path / 'trimap').rows[0]
    assert row['sad'] == pytest.approx(np.abs(pred - true)[:, :10].sum() / 1000)
    with pytest.raises(UserError, match='--trimap'):
        evaluate_folders(tmp_path / 'pred', tmp_path / 'true', trimap=tmp_path / 'trimap',
                         mode='frame')


def test_clip_mode_pairs_consecutive_frames_within_each_clip_only(tmp_path):
    static = np.full((6, 6), 0.5)
    # Clip 'walk': frames 1, 2, 10 (natural order); the prediction's level follows the frame
    # number, so each pair's dtSSD is 0.01 * (frame gap): 0.01 * 1 and 0.01 * 8.
    for frame in (1, 2, 10):
        save_gray(tmp_path / 'true' / 'walk' / f'{frame}.png', static)
        save_gray(tmp_path / 'pred' / 'walk' / f'{frame}.png', static + frame / 100)
    # Clip 'zz': two exact frames; pairing its first frame with walk/10 would not give zero.
    for frame in (1, 2):
        save_gray(tmp_path / 'true' / 'zz' / f'{frame}.png', static)
        save_gray(tmp_path / 'pred' / 'zz' / f'{frame}.png', static)
    results = evaluate_folders(tmp_path / 'pred', tmp_path / 'true', mode='frame', clips=True)
    by_name = {row['file']: row['dtssd'] for row in results.rows}
    # 8-bit files hold 0.5 + k/100 as round(255 * (0.5 + k/100)) / 255.
    level = {k: np.round(255 * (0.5 + k / 100)) / 255 for k in (1, 2, 10)}
    assert [row['file'] for row in results.rows] == ['walk/1', 'walk/2', 'walk/10', 'zz/1', 'zz/2']
    assert by_name['walk/1'] is None and by_name['zz/1'] is None
    assert by_name['walk/2'] == pytest.approx((level[2] - level[1]) * 100)
    assert by_name['walk/10'] == pytest.approx((level[10] - level[2]) * 100)
    assert by_name['zz/2'] == 0
    assert results.means(results.groups()['walk'])['dtssd'] == pytest.approx(
        (level[10] - level[1]) / 2 * 100)


def make_synthetic_set(root, rng, count=3, shape=(32, 40)):
    """The synthetic generator's layout, and inference_images.py's output for it."""
    for i in range(count):
        true = blobby_matte(rng, shape)
        pred = quantised(true + rng.normal(0, 0.1, shape) * (true > 0))
        fgr = rng.random(shape + (3,))
        save_gray(root / 'data' / 'captures' / 'pha' / f'{i:04d}.png', true)
        save_rgb(root / 'data' / 'captures' / 'fgr' / f'{i:04d}.png', fgr)
        save_gray(root / 'out' / 'pha' / f'{i:04d}.png', pred)
        save_rgb(root / 'out' / 'fgr' / f'{i:04d}.png', np.clip(fgr + 0.05, 0, 1))


def run_script(*arguments):
    return subprocess.run([sys.executable, str(REPOSITORY / 'evaluate.py'), *map(str, arguments)],
                          capture_output=True, text=True, timeout=60)


def test_script_end_to_end_on_a_tiny_synthetic_set(tmp_path):
    rng = np.random.default_rng(7)
    make_synthetic_set(tmp_path, rng)
    out = tmp_path / 'results'
    out.mkdir()
    (out / 'notes.txt').write_text('kept')
    done = run_script('--pred', tmp_path / 'out' / 'pha', '--true', tmp_path / 'data/captures/pha',
                      '--pred-fgr', tmp_path / 'out' / 'fgr',
                      '--true-fgr', tmp_path / 'data/captures/fgr', '--out', out)
    assert done.returncode == 0, done.stderr
    for label in ('SAD(/1e3)', 'MSE(x1e3)', 'Grad(/1e3)', 'Conn(/1e3)', 'FgrMSE(x1e3)'):
        assert label in done.stdout
    assert (out / 'notes.txt').read_text() == 'kept'

    with open(out / 'per_file.csv') as file:
        rows = list(csv.DictReader(file))
    assert [row['file'] for row in rows] == ['0000', '0001', '0002']
    true = np.asarray(Image.open(tmp_path / 'data/captures/pha/0001.png')) / 255
    pred = np.asarray(Image.open(tmp_path / 'out/pha/0001.png')) / 255
    region = unknown_region(trimap_from_alpha(true))
    assert float(rows[1]['SAD(/1e3)']) == pytest.approx(sad(pred, true, region) / 1000, rel=1e-6)
    assert float(rows[1]['Conn(/1e3)']) == pytest.approx(
        connectivity_error(pred, true, region) / 1000, rel=1e-6)

    summary = json.loads((out / 'summary.json').read_text())
    assert summary['mode'] == 'trimap' and summary['files'] == 3
    assert summary['metrics']['MSE(x1e3)'] == pytest.approx(
        np.mean([float(row['MSE(x1e3)']) for row in rows]), rel=1e-6)
    assert set(summary['definitions']) == set(summary['metrics'])
    assert (out / 'summary.csv').read_text().startswith('group,files,SAD(/1e3)')
    assert not list(out.glob('.*.tmp'))


def test_script_exits_with_a_clear_message_on_user_errors(tmp_path):
    rng = np.random.default_rng(8)
    make_synthetic_set(tmp_path, rng, count=2)
    (tmp_path / 'out' / 'pha' / '0001.png').unlink()
    done = run_script('--pred', tmp_path / 'out' / 'pha', '--true', tmp_path / 'data/captures/pha',
                      '--out', tmp_path / 'results')
    assert done.returncode != 0
    assert 'no prediction: 0001' in done.stderr and 'Traceback' not in done.stderr
    assert not (tmp_path / 'results').exists()

    done = run_script('--pred', tmp_path / 'missing', '--true', tmp_path / 'data/captures/pha',
                      '--out', tmp_path / 'results')
    assert done.returncode != 0 and '--pred' in done.stderr and 'no such folder' in done.stderr


def test_an_image_above_the_pixel_limit_is_one_clear_line(tmp_path):
    rng = np.random.default_rng(9)
    make_synthetic_set(tmp_path, rng, count=2)
    png_claiming(tmp_path / 'out' / 'pha' / '0001.png', 20000, 20000)
    done = run_script('--pred', tmp_path / 'out' / 'pha', '--true', tmp_path / 'data/captures/pha',
                      '--out', tmp_path / 'results', '--on-error', 'stop')
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and '0001.png: 20000x20000' in lines[0] and 'BGM_MAX_IMAGE_PIXELS' in lines[0], lines


def test_a_batch_evaluates_every_readable_file_and_names_each_skipped_one(tmp_path):
    # Issue 28: the run stopped at the first unreadable image, after the good ones before it.
    make_synthetic_set(tmp_path, np.random.default_rng(10), count=6)
    pred, true = tmp_path / 'out' / 'pha', tmp_path / 'data' / 'captures' / 'pha'
    png_claiming(pred / '0000.png', 20000, 20000)                             # above the pixel limit
    (pred / '0001.png').write_bytes((pred / '0001.png').read_bytes()[:60])   # cut short
    (true / '0002.png').write_bytes(b'')                                      # empty
    save_gray(pred / '0003.png', np.zeros((16, 16)))                          # another size
    (pred / '0004.png').rename(pred / '0004.heic')                            # not an image extension
    done = run_script('--pred', pred, '--true', true, '--out', tmp_path / 'results')
    lines = done.stderr.strip().splitlines()
    for name, reason in [('0000', '20000x20000'), ('0001', r'0001\.png: cannot read the image'),
                         ('0002', r'0002\.png: not a readable'), ('0003', r'0003\.png is 16x16 but .*0003\.png is 40x32'),
                         ('0004', r'pha/0004\.heic: \.heic is not an image extension')]:
        assert any(re.match(rf'warning: skipped {name}: .*{reason}', line) for line in lines), (name, lines)
    assert done.returncode == 1 and len(lines) == 6 and lines[-1] == (
        'evaluate.py: error: 1 of 6 files evaluated; 5 skipped (named above): 0000, 0001, 0002, 0003, 0004'), lines
    with open(tmp_path / 'results' / 'per_file.csv') as file:
        assert [row['file'] for row in csv.DictReader(file)] == ['0005']
    assert len(json.loads((tmp_path / 'results' / 'summary.json').read_text())['skipped']) == 5
    done = run_script('--pred', pred, '--true', true, '--out', tmp_path / 'stopped', '--on-error', 'stop')
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1 and '0004.heic' in lines[0] and 'skipped' not in lines[0], lines
    # In clips, the frame after a skipped one has no dtSSD: its predecessor is not the frame before it.
    for folder in ('true', 'pred'):
        for index in range(4):
            save_gray(tmp_path / folder / 'walk' / f'{index}.png', np.full((8, 8), index / 10))
    (tmp_path / 'pred' / 'walk' / '1.png').write_bytes(b'\x89PNG broken')
    results = evaluate_folders(tmp_path / 'pred', tmp_path / 'true', mode='frame', clips=True, skips=Skips('skip'))
    assert [(row['file'], row['dtssd'] is None) for row in results.rows] == [
        ('walk/0', True), ('walk/2', True), ('walk/3', False)]
    with pytest.raises(UserError, match=r'walk/1\.png'):  # without a Skips, as before: the first is an error
        evaluate_folders(tmp_path / 'pred', tmp_path / 'true', mode='frame', clips=True)
