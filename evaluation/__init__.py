"""Matting evaluation: metrics of the alpha matting benchmark and of Robust Video Matting.

`evaluation.metrics` holds the metrics (numpy and OpenCV, documented formulas and scales),
`evaluation.files` finds, matches and reads images, and `evaluation.benchmark` evaluates whole
folders and writes the results; `evaluate.py` is its command line.
"""

from .benchmark import Results, evaluate_folders, format_summary, write_results
from .metrics import (FRAME_METRICS, METRICS, TRIMAP_METRICS, connectivity_error, dtssd,
                      evaluate_matte, foreground_mse, gradient_error, mad, mse, sad,
                      trimap_from_alpha, unknown_region)

__all__ = [
    'Results', 'evaluate_folders', 'format_summary', 'write_results',
    'FRAME_METRICS', 'METRICS', 'TRIMAP_METRICS', 'connectivity_error', 'dtssd', 'evaluate_matte',
    'foreground_mse', 'gradient_error', 'mad', 'mse', 'sad', 'trimap_from_alpha', 'unknown_region',
]
