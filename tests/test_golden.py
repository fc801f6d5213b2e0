"""This project's models reproduce the original BGMv2 code's outputs, in any clone: tests/data/golden_small.npz
holds the original's outputs for weights and inputs that a formula makes (tests/golden.py says how the file
was made). The reference of ../shared (tests/test_model.py) is a second check, with trained weights."""
import functools

import numpy as np
import pytest
import torch

import golden
from model import MattingBase, MattingRefine, optimize
from tolerance import assert_close


@pytest.fixture(scope='module')
def expected():
    with np.load(golden.PATH) as data:
        return {name: torch.from_numpy(data[name]) for name in data.files}


@functools.lru_cache(maxsize=None)
def weights_of(backbone):
    return golden.formula_weights(golden.shapes_of(MattingRefine(backbone, **golden.CONFIG)))


def build(model_class, backbone, **settings):
    model = model_class(backbone, **settings).eval()
    weights = weights_of(backbone)
    model.load_state_dict(weights if model_class is MattingRefine else
                          {k: v for k, v in weights.items() if not k.startswith('refiner.')}, strict=True)
    return model


def check(outputs, expected, prefix, names):
    for name, output in zip(names, outputs):
        reference = expected[f'{prefix}/{name}']
        output = output[:, :golden.HID_CHANNELS] if name == 'hid' else output
        assert output.shape == reference.shape, name
        if name == 'ref_sm':
            assert torch.equal(output, reference), name
        else:
            assert float((output - reference).abs().max()) <= 1e-5, name


@pytest.mark.parametrize('mode', golden.MODES)
@pytest.mark.parametrize('backbone', golden.BACKBONES)
def test_refine_reproduces_the_original(expected, backbone, mode):
    model = build(MattingRefine, backbone, refine_mode=mode, **golden.CONFIG)
    with torch.no_grad():
        outputs = model(*golden.formula_inputs())
    check(outputs, expected, f'{backbone}/{mode}', golden.REFINE_NAMES)


@pytest.mark.parametrize('backbone', golden.BACKBONES)
def test_base_reproduces_the_original(expected, backbone):
    with torch.no_grad():
        outputs = build(MattingBase, backbone)(*golden.formula_inputs())
    check(outputs, expected, f'{backbone}/base', golden.BASE_NAMES)


@pytest.mark.parametrize('device_type', ['cpu', 'cuda'])
def test_the_optimized_model_reproduces_the_original(expected, device_type):
    """Both variants of `optimize`, within float32 rounding of the original (norm-relative)."""
    model = optimize(build(MattingRefine, 'mobilenetv2', **golden.CONFIG), device_type)
    with torch.no_grad():
        outputs = model(*golden.formula_inputs())
    prefix = 'mobilenetv2/sampling'
    assert torch.equal(outputs[-1], expected[f'{prefix}/ref_sm'])
    assert_close(outputs[:5], [expected[f'{prefix}/{name}'] for name in golden.REFINE_NAMES[:5]], rel=1e-5)


def test_the_golden_inputs_give_the_refiner_work(expected):
    """A golden file whose alpha were all 0 or 1, or that refined nothing, would check little."""
    for backbone in golden.BACKBONES:
        pha = expected[f'{backbone}/sampling/pha']
        assert ((pha > 0.05) & (pha < 0.95)).float().mean() > 0.5
        assert 0 < expected[f'{backbone}/sampling/ref_sm'].mean() < 1
    assert (expected['resnet50/sampling/pha'] - expected['resnet101/sampling/pha']).abs().mean() > 1e-3
