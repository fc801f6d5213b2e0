"""'auto' backbone scale and sample budget: the paper's settings at HD and 4K, the same share elsewhere,
chosen per frame size, for the model as written, its optimized form and a TorchScript file; the scripts'
default; explicit values keep working."""
import argparse
import copy

import pytest
import torch

from export.torchscript import script_model
from inference.model import add_model_arguments, build_model
from model import MattingRefine, optimize
from model.model import (AUTO, auto_backbone_scale, auto_sample_pixels, fix_auto_settings, refine_settings,
                         set_refine_settings)
from tolerance import assert_close

# (height, width): (backbone scale, sample pixels), the table in the README.
TABLE = {(1080, 1920): (0.25, 80_000), (2160, 3840): (0.125, 320_000), (720, 1280): (0.375, 35_552),
         (1440, 2560): (0.1875, 142_224), (4320, 7680): (0.0625, 1_280_000), (480, 640): (0.5, 11_856),
         (1920, 1080): (0.25, 80_000)}


@pytest.mark.parametrize('size', sorted(TABLE))
def test_the_rule_gives_the_papers_settings_at_hd_and_4k(size):
    scale, pixels = TABLE[size]
    assert auto_backbone_scale(*size) == pytest.approx(scale)
    assert auto_sample_pixels(*size) == pixels and pixels % 16 == 0


def test_a_thin_frame_keeps_the_backbone_working():
    """A short side that 480 px on the long side would shrink below the backbone's stride: scaled up."""
    scale = auto_backbone_scale(100, 4000)
    assert 100 * scale >= 16 and scale <= 0.5


def inputs(height, width, seed):
    generator = torch.Generator().manual_seed(seed)
    return tuple(torch.rand(1, 3, height, width, generator=generator) for _ in range(2))


def run(model, src, bgr):
    with torch.no_grad():
        return model(src, bgr)


def test_auto_is_chosen_per_frame_size_by_every_form_of_the_model():
    torch.manual_seed(0)
    auto = MattingRefine('mobilenetv2', backbone_scale=AUTO, refine_sample_pixels=None).eval()
    assert auto.auto_backbone_scale and auto.auto_sample_pixels
    forms = {'eager': auto, 'optimized': optimize(auto), 'cuda variant': optimize(auto, 'cuda'),
             'torchscript': script_model(copy.deepcopy(auto))}
    for seed, (height, width) in enumerate([(96, 160), (144, 192), (96, 160)]):
        scale, pixels = auto_backbone_scale(height, width), auto_sample_pixels(height, width)
        explicit = MattingRefine('mobilenetv2', backbone_scale=scale, refine_sample_pixels=pixels).eval()
        explicit.load_state_dict(auto.state_dict())
        src, bgr = inputs(height, width, seed)
        expected = run(explicit, src, bgr)
        for name, model in forms.items():
            outputs = run(model, src, bgr)
            assert_close(outputs[:5], expected[:5], rel=1e-5, what=name)
        assert auto.backbone_scale == scale and auto.refiner.sample_pixels == pixels  # what ran


def test_explicit_settings_clear_auto_and_auto_can_be_set_again():
    model = MattingRefine('mobilenetv2', backbone_scale='auto', refine_sample_pixels='auto').eval()
    set_refine_settings(model, backbone_scale=0.3, refine_sample_pixels=1_600)
    assert not model.auto_backbone_scale and not model.auto_sample_pixels
    run(model, *inputs(96, 160, 0))
    assert model.backbone_scale == 0.3 and model.refiner.sample_pixels == 1_600
    set_refine_settings(model, backbone_scale='auto')
    run(model, *inputs(96, 160, 0))
    assert model.auto_backbone_scale and model.backbone_scale == 0.5 and model.refiner.sample_pixels == 1_600
    assert fix_auto_settings(model, 1080, 1920) == {'backbone_scale': 0.25}
    assert not model.auto_backbone_scale and refine_settings(model)['backbone_scale'] == 0.25


def parse(*options):
    parser = argparse.ArgumentParser()
    add_model_arguments(parser, checkpoint_required=False)
    return parser.parse_args(list(options))


def test_the_scripts_default_to_auto_and_take_numbers():
    args = parse()
    assert args.model_backbone_scale == AUTO and args.model_refine_sample_pixels == AUTO
    model = build_model(args)
    assert model.auto_backbone_scale and model.auto_sample_pixels
    model = build_model(parse('--model-backbone-scale', '0.125', '--model-refine-sample-pixels', '320000'))
    assert not model.auto_backbone_scale and model.backbone_scale == 0.125
    assert model.refiner.sample_pixels == 320_000
    with pytest.raises(SystemExit):
        parse('--model-backbone-scale', 'half')


def test_a_torchscript_file_holds_auto_and_a_number_set_on_it_turns_auto_off(tmp_path):
    """export_torchscript.py's default: 'auto' in the file; setting a number on the file (or with
    set_refine_settings) runs that number."""
    torch.manual_seed(0)
    auto = MattingRefine('mobilenetv2', backbone_scale=AUTO, refine_sample_pixels=AUTO).eval()
    scripted = script_model(copy.deepcopy(auto))
    src, bgr = inputs(96, 160, 1)
    assert_close(run(scripted, src, bgr)[:5], run(auto, src, bgr)[:5], rel=1e-5, what='auto')
    scripted.backbone_scale = 0.25
    set_refine_settings(scripted, refine_sample_pixels=800)
    fixed = MattingRefine('mobilenetv2', backbone_scale=0.25, refine_sample_pixels=800).eval()
    fixed.load_state_dict(auto.state_dict())
    assert_close(run(scripted, src, bgr)[:5], run(fixed, src, bgr)[:5], rel=1e-5, what='numbers')
    set_refine_settings(scripted, backbone_scale=AUTO, refine_sample_pixels=AUTO)
    assert_close(run(scripted, src, bgr)[:5], run(auto, src, bgr)[:5], rel=1e-5, what='auto again')


def test_the_small_frame_warning_speaks_of_the_scale_auto_chooses():
    from inference.matting import small_input_warning
    model = MattingRefine('mobilenetv2', backbone_scale=AUTO)
    assert small_input_warning(model, 1080, 1920) is None  # 0.25: 270 rows for the base network
    message = small_input_warning(model, 160, 1920)  # 0.25 again: 40 rows
    assert 'at backbone scale 0.25 give the base network 480x40 pixels' in message
