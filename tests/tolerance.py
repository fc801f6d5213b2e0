"""Float comparisons that summation order cannot break but a wrong computation always does.

Two computations of the same float32 result that add their terms in another order (another kernel,
another memory layout, a backward pass through another indexing op) differ by rounding: about
1e-7 to 1e-6 of the result's magnitude, amplified where train-mode BatchNorm divides by a small
variance. An absolute bound such as 1e-6 can be crossed by rounding alone on another machine;
a bound relative to the norm of the whole result cannot, while a wrong result misses it by orders of
magnitude.
"""
from typing import Iterable, Union

import torch

Tensors = Union[torch.Tensor, Iterable[torch.Tensor]]


def relative_difference(actual: Tensors, expected: Tensors) -> float:
    """||actual - expected|| / ||expected|| over all elements of all tensors, in float64."""
    if torch.is_tensor(actual):
        actual, expected = [actual], [expected]
    actual = torch.cat([t.detach().double().flatten() for t in actual])
    expected = torch.cat([t.detach().double().flatten() for t in expected])
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = float(expected.norm())
    difference = float((actual - expected).norm())
    return difference / scale if scale > 0 else difference


def assert_close(actual: Tensors, expected: Tensors, rel: float = 1e-5, what: str = '') -> None:
    """Asserts relative_difference(actual, expected) <= rel."""
    difference = relative_difference(actual, expected)
    assert difference <= rel, f"{what}: relative difference {difference:.3g} > {rel:g}"
