"""torch.hub, offline: `torch.hub.load(checkout, ..., source='local')` loads the entry points of
hubconf.py as a user's script would (the checkout put first on sys.path by torch.hub itself)."""
import os

import pytest
import torch

from model import MattingBase, MattingRefine
from tolerance import assert_close

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_pretrained_loads_the_bundled_weights_in_eval_mode():
    model = torch.hub.load(ROOT, 'mattingrefine', source='local', pretrained=True, refine_mode='thresholding',
                           refine_threshold=0.2)
    assert isinstance(model, MattingRefine) and not model.training
    assert model.refiner.mode == 'thresholding' and model.auto_backbone_scale
    weights = torch.load(os.path.join(ROOT, 'weights', 'mattingrefine_mobilenetv2_synthetic_fp16.pth'),
                         weights_only=True)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, weights[name].to(tensor.dtype)), name
    base = torch.hub.load(ROOT, 'mattingbase', source='local', pretrained=True)
    assert isinstance(base, MattingBase) and not isinstance(base, MattingRefine)
    assert_close(base.decoder.conv4.weight, model.decoder.conv4.weight, rel=0)
    src = torch.rand(1, 3, 96, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        pha = model(src, src.flip(3))[0]
    assert pha.shape == (1, 1, 96, 128)


def test_random_weights_and_settings_are_passed_on():
    model = torch.hub.load(ROOT, 'mattingrefine', source='local', backbone='resnet50', backbone_scale=0.125,
                           refine_sample_pixels=320_000)
    assert model.backbone_scale == 0.125 and not model.auto_backbone_scale
    assert model.refiner.sample_pixels == 320_000


def test_other_pretrained_backbones_say_where_weights_come_from():
    with pytest.raises(ValueError, match='official BGMv2 weights'):
        torch.hub.load(ROOT, 'mattingrefine', source='local', backbone='resnet50', pretrained=True)
