"""Matting metrics, as the alpha matting benchmark and Robust Video Matting compute them.

Every function takes mattes as arrays of shape (H, W) with alpha in 0 ~ 1 (float; divide 8-bit
images by 255) and returns a plain float in natural units: sums and means of alpha differences in
0 ~ 1, without any reporting scale. A CPU torch tensor works too (it is read with `np.asarray`).

Two ways of evaluating a frame use these functions:

- Trimap mode, the alpha matting benchmark (Rhemann et al.) as implemented in the MATLAB code by
  Ning Xu (Deep Image Matting) that BGMv2 shipped as `eval/*.m`: metrics are taken over the unknown
  region of a trimap (`unknown_region`), made from the ground truth when none is given
  (`trimap_from_alpha`). Unlike BGMv2's benchmark.m we do not crop images to a multiple of 4.
- Frame mode, as RVM's `evaluation/evaluate_lr.py`: metrics are taken over the whole frame
  (`region=None`), and dtSSD measures temporal coherence between consecutive frames of a clip.

Reporting scales (`METRICS`) follow the literature so our numbers are comparable:

    SAD(/1e3)     sad / 1000            the MATLAB compute_sad_loss already divides by 1000
    MAD(x1e3)     mad * 1000            RVM MetricMAD
    MSE(x1e3)     mse * 1000            BGMv2's tables and RVM MetricMSE
    Grad(/1e3)    gradient_error / 1000 RVM MetricGRAD, and the usual scale of image matting
                                        tables; the MATLAB benchmark.m prints the raw sum
                                        (1000 x our number)
    Conn(/1e3)    connectivity / 1000   as Grad
    dtSSD(x1e2)   dtssd * 100           RVM MetricDTSSD
    FgrMSE(x1e3)  foreground_mse * 1000 RVM fgr_mse
"""

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = [
    'Metric', 'METRICS', 'TRIMAP_METRICS', 'FRAME_METRICS',
    'sad', 'mad', 'mse', 'gradient_error', 'connectivity_error', 'dtssd', 'foreground_mse',
    'gradient_magnitude', 'trimap_from_alpha', 'unknown_region', 'evaluate_matte',
]

# Trimap values, as the benchmark's trimaps store them.
BACKGROUND, UNKNOWN, FOREGROUND = 0, 128, 255


@dataclass(frozen=True)
class Metric:
    """How one metric is reported: `label` names the column, `value * scale` is what it shows."""
    key: str
    label: str
    scale: float
    description: str


METRICS = {metric.key: metric for metric in (
    Metric('sad', 'SAD(/1e3)', 1e-3, 'sum of |pred - true| over the region, divided by 1000'),
    Metric('mad', 'MAD(x1e3)', 1e3, 'mean of |pred - true| over the region, times 1000'),
    Metric('mse', 'MSE(x1e3)', 1e3, 'mean of (pred - true)^2 over the region, times 1000'),
    Metric('grad', 'Grad(/1e3)', 1e-3,
           'sum over the region of squared differences of Gaussian gradient magnitudes '
           '(sigma 1.4, min-max normalised mattes), divided by 1000'),
    Metric('conn', 'Conn(/1e3)', 1e-3,
           'sum over the region of |phi_pred - phi_true| (threshold step 0.1, largest '
           '4-connected component, theta 0.15), divided by 1000'),
    Metric('dtssd', 'dtSSD(x1e2)', 1e2,
           'sqrt(mean over the frame of ((pred_t - pred_t-1) - (true_t - true_t-1))^2), times 100, '
           'averaged over consecutive frame pairs within each clip'),
    Metric('fgr_mse', 'FgrMSE(x1e3)', 1e3,
           'mean of (pred_fgr - true_fgr)^2 over RGB and the region pixels where true alpha > 0, '
           'times 1000'),
)}

# Per-frame alpha metrics of each mode, in column order.
TRIMAP_METRICS = ('sad', 'mse', 'grad', 'conn')
FRAME_METRICS = ('mad', 'mse', 'grad', 'conn')


def _as_matte(array, name):
    """(H, W) array-like, alpha in 0 ~ 1 -> float64 array; raises ValueError naming `name`."""
    matte = np.asarray(array, dtype=np.float64)
    if matte.ndim != 2:
        raise ValueError(f'{name}: expected an alpha matte of shape (H, W), '
                         f'got shape {matte.shape}')
    if matte.size == 0:
        raise ValueError(f'{name}: the alpha matte is empty')
    low, high = matte.min(), matte.max()
    if not (np.isfinite(low) and np.isfinite(high)) or low < 0 or high > 1:
        raise ValueError(f'{name}: expected alpha in 0 ~ 1, got values in {low} ~ {high} '
                         f'(divide 8-bit mattes by 255)')
    return matte


def _as_pair(pred, true):
    pred, true = _as_matte(pred, 'pred'), _as_matte(true, 'true')
    if pred.shape != true.shape:
        raise ValueError(f'pred has shape {pred.shape} but true has shape {true.shape}; '
                         f'they must be equal')
    return pred, true


def _as_region(region, shape):
    """None (the whole frame) or a boolean (H, W) mask of the pixels to evaluate."""
    if region is None:
        return None
    region = np.asarray(region)
    if region.dtype != bool or region.shape != shape:
        raise ValueError(f'region: expected a boolean mask of shape {shape}, '
                         f'got {region.dtype} of shape {region.shape}')
    return region


def _sum(values, region):
    return float(values.sum() if region is None else values.sum(where=region))


def _mean(values, region):
    """Mean over the region; NaN for an empty region (nothing to average)."""
    count = values.size if region is None else int(np.count_nonzero(region))
    return _sum(values, region) / count if count else float('nan')


def sad(pred, true, region=None):
    """Sum of absolute differences: SAD = sum_region |pred - true|.

    pred, true: (H, W) alpha, 0 ~ 1. region: (H, W) bool, or None for the whole frame.
    Returns the plain sum; the benchmark reports SAD / 1000.
    """
    pred, true = _as_pair(pred, true)
    return _sum(np.abs(pred - true), _as_region(region, pred.shape))


def mad(pred, true, region=None):
    """Mean absolute difference: MAD = mean_region |pred - true| (NaN for an empty region)."""
    pred, true = _as_pair(pred, true)
    return _mean(np.abs(pred - true), _as_region(region, pred.shape))


def mse(pred, true, region=None):
    """Mean squared error: MSE = mean_region (pred - true)^2 (NaN for an empty region).

    With a trimap this is the MATLAB compute_mse_loss: the sum over the unknown region divided by
    the number of unknown pixels.
    """
    pred, true = _as_pair(pred, true)
    return _mean((pred - true) ** 2, _as_region(region, pred.shape))


def _gaussian_derivative_kernels(sigma, epsilon=1e-2):
    """1-D factors of the benchmark's 2-D derivative-of-Gaussian filter (its gaussgradient.m).

    The 2-D filter for d/dx is h(y, x) = g(y) g'(x) / ||g g'||, on a square grid of half size
    ceil(sigma * sqrt(-2 ln(sqrt(2 pi) sigma epsilon))) (4 for sigma 1.4), with
    g(u) = exp(-u^2 / (2 sigma^2)) / (sigma sqrt(2 pi)) and g'(u) = -u g(u) / sigma^2.
    The outer product's norm is ||g|| ||g'||, so each factor is normalised on its own.
    """
    half = int(np.ceil(sigma * np.sqrt(-2 * np.log(np.sqrt(2 * np.pi) * sigma * epsilon))))
    u = np.arange(-half, half + 1, dtype=np.float64)
    gauss = np.exp(-u ** 2 / (2 * sigma ** 2)) / (sigma * np.sqrt(2 * np.pi))
    dgauss = -u * gauss / sigma ** 2
    return gauss / np.linalg.norm(gauss), dgauss / np.linalg.norm(dgauss)


def _min_max_normalise(matte):
    """MATLAB mat2gray / cv2.normalize(NORM_MINMAX): (m - min) / (max - min); zeros if constant."""
    low, high = matte.min(), matte.max()
    return (matte - low) / (high - low) if high > low else np.zeros_like(matte)


def gradient_magnitude(matte, sigma=1.4):
    """sqrt(gx^2 + gy^2) of derivative-of-Gaussian filters, as the benchmark's gaussgradient.

    matte: (H, W) float. Returns (H, W) float64. The filter is separable, so a row and a column
    pass replace the 2-D one; image borders are replicated (MATLAB imfilter 'replicate'), which
    makes the separable result identical to the 2-D filter. OpenCV correlates where MATLAB
    convolves: that flips the sign of gx and gy, not the magnitude.
    """
    smooth, derivative = _gaussian_derivative_kernels(sigma)
    matte = np.asarray(matte, dtype=np.float64)
    gx = cv2.sepFilter2D(matte, cv2.CV_64F, derivative, smooth, borderType=cv2.BORDER_REPLICATE)
    gy = cv2.sepFilter2D(matte, cv2.CV_64F, smooth, derivative, borderType=cv2.BORDER_REPLICATE)
    return np.sqrt(gx ** 2 + gy ** 2)


def gradient_error(pred, true, region=None, sigma=1.4):
    """Gradient error: Grad = sum_region (|grad G(norm(pred))| - |grad G(norm(true))|)^2.

    norm() rescales each whole matte to 0 ~ 1 (min-max, before filtering, as the MATLAB
    compute_gradient_loss and RVM's MetricGRAD do); G is the derivative-of-Gaussian filter with
    standard deviation `sigma` (see `gradient_magnitude`). Because of the normalisation, the error
    is unchanged when either matte is replaced by a * matte + b with a > 0.

    pred, true: (H, W) alpha, 0 ~ 1. region: (H, W) bool, or None for the whole frame.
    Returns the plain sum; tables report Grad / 1000.
    """
    pred, true = _as_pair(pred, true)
    region = _as_region(region, pred.shape)
    difference = (gradient_magnitude(_min_max_normalise(pred), sigma)
                  - gradient_magnitude(_min_max_normalise(true), sigma))
    return _sum(difference ** 2, region)


def _largest_component(mask):
    """(H, W) bool -> the largest 4-connected component of `mask` (all False if it is empty)."""
    count, labels = cv2.connectedComponents(mask.view(np.uint8), connectivity=4, ltype=cv2.CV_32S)
    if count < 2:  # label 0 is the background
        return np.zeros(mask.shape, dtype=bool)
    sizes = np.bincount(labels.ravel(), minlength=count)
    sizes[0] = 0
    return labels == np.argmax(sizes)


def connectivity_error(pred, true, region=None, step=0.1, theta=0.15):
    """Connectivity error of the benchmark (compute_connectivity_error.m, RVM's MetricCONN).

    For thresholds t_i = i * step (i = 1 .. 1/step), Omega_i is the largest 4-connected component of
    (pred >= t_i) & (true >= t_i). Each pixel's level l is t_(i-1) for the first i whose Omega_i
    leaves it out, or 1 if every Omega_i holds it. With d = alpha - l,

        phi(alpha) = 1 - d * [d >= theta],    Conn = sum_region |phi(pred) - phi(true)|.

    Components are found over the whole frame; only the sum is restricted to the region. Among
    equally large components the first in row-major order wins (as OpenCV in RVM; MATLAB scans
    column-major, which matters only for exact ties).

    pred, true: (H, W) alpha, 0 ~ 1. region: (H, W) bool, or None for the whole frame.
    step: must divide 1 (0.1 in the benchmark). Returns the plain sum; tables report Conn / 1000.
    """
    pred, true = _as_pair(pred, true)
    region = _as_region(region, pred.shape)
    levels = round(1 / step)
    if levels < 1 or not np.isclose(levels * step, 1):
        raise ValueError(f'step: expected a threshold step that divides 1 (e.g. 0.1), got {step}')

    # l = t_(k-1) where k is the first threshold leaving the pixel out, i.e. l = n / levels with n
    # the number of leading thresholds whose Omega holds the pixel. Dividing once makes
    # l = i / levels exact, so 8-bit alphas k / 255 compare with the thresholds exactly.
    both = np.minimum(pred, true)  # (pred >= t) & (true >= t) is min(pred, true) >= t
    inside = np.ones(pred.shape, dtype=bool)
    leading = np.zeros(pred.shape, dtype=np.uint16)
    for i in range(1, levels + 1):
        inside &= _largest_component(both >= i / levels)
        if not inside.any():  # no pixel can gain a higher level
            break
        leading += inside
    level = leading / levels

    def phi(alpha):
        distance = alpha - level
        return 1 - distance * (distance >= theta)

    return _sum(np.abs(phi(pred) - phi(true)), region)


def dtssd(pred, pred_previous, true, true_previous):
    """Temporal coherence of one frame pair (RVM MetricDTSSD), over the whole frame:

        dtSSD = sqrt( sum ((pred_t - pred_t-1) - (true_t - true_t-1))^2 / (H * W) ).

    All four: (H, W) alpha, 0 ~ 1, the same shape. Zero when the prediction changes between the
    frames exactly as the truth does (e.g. a constant error), whatever the error itself. A clip of
    T frames has T - 1 values; RVM reports their mean x 100.
    """
    pred, true = _as_pair(pred, true)
    pred_previous, true_previous = _as_pair(pred_previous, true_previous)
    if pred.shape != pred_previous.shape:
        raise ValueError(f'the frames have shape {pred.shape} but the previous ones have shape '
                         f'{pred_previous.shape}; frames of a clip must have one size')
    change_error = (pred - pred_previous) - (true - true_previous)
    return float(np.sqrt(np.mean(change_error ** 2)))


def foreground_mse(pred_fgr, true_fgr, true_pha, region=None):
    """Foreground MSE where the foreground exists:

        FgrMSE = mean over channels c and pixels p in region with true_pha(p) > 0 of
                 (pred_fgr(p, c) - true_fgr(p, c))^2.

    pred_fgr, true_fgr: (H, W, 3) RGB, 0 ~ 1. true_pha: (H, W) alpha, 0 ~ 1.
    region: (H, W) bool, or None for the whole frame (RVM). NaN when no pixel qualifies.
    BGMv2's benchmark.m divides the same sum by the size of the whole unknown region instead
    (its number is ours times the fraction of unknown pixels with alpha > 0).
    """
    pred_fgr, true_fgr = np.asarray(pred_fgr, np.float64), np.asarray(true_fgr, np.float64)
    true_pha = _as_matte(true_pha, 'true_pha')
    for name, fgr in (('pred_fgr', pred_fgr), ('true_fgr', true_fgr)):
        if fgr.shape != true_pha.shape + (3,):
            raise ValueError(f'{name}: expected RGB of shape {true_pha.shape + (3,)} '
                             f'(the alpha shape plus 3 channels), got {fgr.shape}')
    mask = true_pha > 0
    region = _as_region(region, true_pha.shape)
    if region is not None:
        mask &= region
    if not mask.any():
        return float('nan')
    return float(np.mean((pred_fgr[mask] - true_fgr[mask]) ** 2))


def trimap_from_alpha(true, low=0.06, high=0.96, iterations=10):
    """Trimap from a ground-truth alpha, as BGMv2 made them for trimap-based methods.

    Pixels with low < alpha < high are unknown; the unknown band is then widened by dilating
    (alpha > low) and eroding (alpha >= high) `iterations` times with a 3 x 3 square kernel, i.e.
    once with a (2 * iterations + 1) square:

        foreground = erode(alpha >= high),  background = not dilate(alpha > low),
        unknown = everything else (it contains every pixel with low < alpha < high).

    Pixels outside the image count as neither (OpenCV's default border for dilate and erode), so a
    matte that is entirely foreground stays entirely foreground.

    true: (H, W) alpha, 0 ~ 1. Returns (H, W) uint8 with 0 background, 128 unknown, 255 foreground.
    """
    true = _as_matte(true, 'true')
    if not 0 <= low < high <= 1:
        raise ValueError(f'low, high: expected 0 <= low < high <= 1, got {low}, {high}')
    kernel = np.ones((3, 3), dtype=np.uint8)
    maybe_foreground = cv2.dilate((true > low).view(np.uint8), kernel, iterations=iterations)
    sure_foreground = cv2.erode((true >= high).view(np.uint8), kernel, iterations=iterations)
    trimap = np.full(true.shape, UNKNOWN, dtype=np.uint8)
    trimap[maybe_foreground == 0] = BACKGROUND
    trimap[sure_foreground == 1] = FOREGROUND
    return trimap


def unknown_region(trimap, name='trimap'):
    """The region the benchmark evaluates: trimap == 128.

    trimap: (H, W) integer array holding only 0, 128 and 255 (as the benchmark's trimaps).
    Returns (H, W) bool. Raises ValueError naming `name` for any other value, because a trimap
    saved with e.g. 127 as unknown would otherwise silently evaluate nothing.
    """
    trimap = np.asarray(trimap)
    if trimap.ndim != 2:
        raise ValueError(f'{name}: expected a trimap of shape (H, W), got shape {trimap.shape}')
    values = np.unique(trimap)
    unexpected = values[~np.isin(values, (BACKGROUND, UNKNOWN, FOREGROUND))]
    if unexpected.size:
        shown = ', '.join(str(v) for v in unexpected[:5]) + (', ...' if unexpected.size > 5 else '')
        raise ValueError(f'{name}: expected trimap values 0 (background), 128 (unknown) and 255 '
                         f'(foreground) only, found also {shown}')
    return trimap == UNKNOWN


def evaluate_matte(pred, true, region=None, metrics=TRIMAP_METRICS):
    """Several alpha metrics of one frame, at their reporting scale.

    pred, true: (H, W) alpha, 0 ~ 1. region: (H, W) bool (e.g. `unknown_region(trimap)`), or None
    for the whole frame. metrics: keys of `METRICS` among 'sad', 'mad', 'mse', 'grad', 'conn'.
    Returns {key: value * METRICS[key].scale}, e.g. {'sad': 12.3, 'mse': 4.5, ...}.
    """
    functions = {'sad': sad, 'mad': mad, 'mse': mse,
                 'grad': gradient_error, 'conn': connectivity_error}
    unknown = [key for key in metrics if key not in functions]
    if unknown:
        raise ValueError(f'metrics: unknown per-frame alpha metric(s) {unknown}; '
                         f'expected some of {list(functions)}')
    pred, true = _as_pair(pred, true)
    return {key: functions[key](pred, true, region) * METRICS[key].scale for key in metrics}
