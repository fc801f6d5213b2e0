import json
import os
import warnings

import pytest
import torch

from model import MattingBase, MattingRefine
from tolerance import assert_close

REFINE_NAMES = ['pha', 'fgr', 'pha_sm', 'fgr_sm', 'err_sm', 'ref_sm']
BASE_NAMES = ['pha', 'fgr', 'err', 'hid']


def with_error_everywhere(model):
    """Random weights predict err == 0 about half the time; a positive bias makes the refiner work."""
    with torch.no_grad():
        model.decoder.conv4.bias[4] = 0.5
    return model


@pytest.fixture(scope='module')
def golden(shared_dir):
    data = torch.load(os.path.join(shared_dir, 'reference', 'golden_mattingrefine_mobilenetv2.pt'),
                      weights_only=False)
    data['state_dict'] = {k: v.float() if v.is_floating_point() else v for k, v in data['state_dict'].items()}
    return data


@pytest.mark.parametrize('mode', ['sampling', 'thresholding', 'full'])
def test_refine_reproduces_the_original_outputs(golden, mode):
    config = golden['config']
    model = MattingRefine(config['backbone'], backbone_scale=config['backbone_scale'], refine_mode=mode,
                          refine_sample_pixels=config['refine_sample_pixels'],
                          refine_threshold=config['refine_threshold'],
                          refine_kernel_size=config['refine_kernel_size']).eval()
    model.load_state_dict(golden['state_dict'], strict=True)
    with torch.no_grad():
        outputs = model(golden['src'], golden['bgr'])
    expected = golden['outputs'][mode]
    for name, output in zip(REFINE_NAMES, outputs):
        assert output.shape == expected[name].shape, name
        if name == 'ref_sm':
            assert torch.equal(output, expected[name])
        else:
            assert (output - expected[name]).abs().max() <= 1e-5, name


def test_base_reproduces_the_original_outputs(golden):
    model = MattingBase('mobilenetv2').eval()
    model.load_state_dict({k: v for k, v in golden['state_dict'].items() if not k.startswith('refiner.')})
    with torch.no_grad():
        outputs = model(golden['src'], golden['bgr'])
    for name, output in zip(BASE_NAMES, outputs):
        assert (output - golden['outputs']['base'][name]).abs().max() <= 1e-5, name


@pytest.mark.parametrize('model_class', [MattingBase, MattingRefine])
@pytest.mark.parametrize('backbone', ['resnet50', 'resnet101', 'mobilenetv2'])
def test_state_dict_layout_is_the_official_one(shared_dir, model_class, backbone):
    path = os.path.join(shared_dir, 'reference', f'{model_class.__name__}_{backbone}.json')
    with open(path) as f:
        expected = json.load(f)['state_dict']
    state_dict = model_class(backbone).state_dict()
    assert list(state_dict) == list(expected)
    assert {k: list(v.shape) for k, v in state_dict.items()} == expected


@pytest.mark.parametrize('size', [(128, 128), (130, 201), (257, 383)])
def test_mobilenetv3_any_input_size(size):
    torch.manual_seed(0)
    model = with_error_everywhere(MattingRefine('mobilenetv3', backbone_scale=0.5, refine_sample_pixels=4000)).eval()
    src, bgr = torch.rand(1, 3, *size), torch.rand(1, 3, *size)
    with torch.no_grad():
        pha, fgr, pha_sm, fgr_sm, err_sm, ref_sm = model(src, bgr)
    assert pha.shape == (1, 1, *size) and fgr.shape == (1, 3, *size)
    padded = [(s + 3) // 4 * 4 for s in size]
    assert ref_sm.shape == (1, 1, padded[0] // 4, padded[1] // 4)
    assert pha_sm.shape == (1, 1, padded[0] // 2, padded[1] // 2)
    assert 0 <= float(pha.min()) and float(pha.max()) <= 1
    assert ref_sm.sum() == 4000 // 16


def test_mobilenetv3_base_pyramid_channels():
    model = MattingBase('mobilenetv3').eval()
    x4, x3, x2, x1, x0 = model.backbone(torch.rand(1, 6, 64, 96))
    assert [t.shape[1:] for t in (x4, x3, x2, x1, x0)] == [
        (960, 4, 6), (40, 8, 12), (24, 16, 24), (16, 32, 48), (6, 64, 96)]


def test_odd_sizes_are_padded_by_replication_and_cropped_back():
    torch.manual_seed(0)
    model = with_error_everywhere(MattingRefine('mobilenetv2', backbone_scale=0.5, refine_mode='full')).eval()
    src, bgr = torch.rand(1, 3, 99, 98), torch.rand(1, 3, 99, 98)
    pad = torch.nn.functional.pad
    with torch.no_grad():
        pha, fgr = model(src, bgr)[:2]
        pha_padded, fgr_padded = model(pad(src, (0, 2, 0, 1), mode='replicate'),
                                       pad(bgr, (0, 2, 0, 1), mode='replicate'))[:2]
    assert pha.shape == (1, 1, 99, 98) and fgr.shape == (1, 3, 99, 98)
    assert torch.equal(pha, pha_padded[:, :, :99, :98]) and torch.equal(fgr, fgr_padded[:, :, :99, :98])


def test_too_small_input_is_a_clear_error():
    model = MattingRefine('mobilenetv2', backbone_scale=0.25).eval()
    with pytest.raises(ValueError, match='at least 64'):
        model(torch.rand(1, 3, 40, 200), torch.rand(1, 3, 40, 200))


def test_mismatched_shapes_are_a_clear_error():
    model = MattingBase('mobilenetv2').eval()
    with pytest.raises(ValueError, match='same shape'):
        model(torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 32))


def test_integer_or_mixed_dtype_inputs_are_a_clear_error():
    model = MattingBase('mobilenetv2').eval()
    image = torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8)
    with pytest.raises(ValueError, match='floating point'):
        model(image, image)
    with pytest.raises(ValueError, match='torch.float32 and torch.float64'):
        model(image.float() / 255, image.double() / 255)


@pytest.mark.parametrize('name, value', [('refine_mode', 'fast'), ('refine_kernel_size', 5),
                                         ('refine_patch_crop_method', 'slice'), ('backbone_scale', 0.75)])
def test_invalid_arguments_are_clear_errors(name, value):
    with pytest.raises(ValueError, match=name):
        MattingRefine('mobilenetv2', **{name: value})


def test_unknown_backbone_is_a_clear_error():
    with pytest.raises(ValueError, match='mobilenetv3'):
        MattingBase('vgg16')


def test_crop_and_replace_methods_agree():
    torch.manual_seed(0)
    src, bgr = torch.rand(2, 3, 132, 200), torch.rand(2, 3, 132, 200)
    reference = None
    for crop in ['unfold', 'roi_align', 'gather']:
        for replace in ['scatter_nd', 'scatter_element']:
            torch.manual_seed(1)
            model = MattingRefine('mobilenetv2', backbone_scale=0.5, refine_sample_pixels=3200,
                                  refine_patch_crop_method=crop, refine_patch_replace_method=replace)
            model = with_error_everywhere(model).eval()
            with torch.no_grad():
                outputs = model(src, bgr)
            if reference is None:
                reference = outputs
                # The refiner must have changed something for the comparison to mean anything.
                model.refiner.mode = 'thresholding'
                model.refiner.threshold = 2.0
                with torch.no_grad():
                    unrefined = model(src, bgr)[0]
                assert (unrefined - reference[0]).abs().max() > 1e-3
            else:
                for name, a, b in zip(REFINE_NAMES, outputs, reference):
                    assert_close(a, b, rel=1e-6, what=f'{crop}, {replace}: {name}')


def test_crop_methods_agree_in_training():
    """train_refine.py crops with 'gather' for its cheaper backward: it must learn as 'unfold' does.

    The gradients agree to rounding (measured about 1.5e-6 of their norm, from summation order in the
    backward, amplified by train-mode BatchNorm; biases that a following BatchNorm cancels have
    gradients of pure rounding noise, so parameters are not compared one by one); a crop at wrong
    positions differs by more than 1e-2 of the norm."""
    generator = torch.Generator().manual_seed(0)
    src, bgr = torch.rand(2, 3, 132, 200, generator=generator), torch.rand(2, 3, 132, 200, generator=generator)
    grads = {}
    for crop in ['unfold', 'gather']:
        torch.manual_seed(1)
        model = MattingRefine('mobilenetv2', backbone_scale=0.5, refine_sample_pixels=3200,
                              refine_patch_crop_method=crop).train()
        pha, fgr = model(src, bgr)[:2]
        (pha.square().mean() + fgr.abs().mean()).backward()
        grads[crop] = {name: p.grad for name, p in model.named_parameters()}
    # Every refiner weight gets a gradient, through the patches that both methods crop.
    assert all(grads['unfold'][f'refiner.{name}.weight'].abs().sum() > 0 for name in ['conv1', 'conv4'])
    names = list(grads['unfold'])
    assert_close([grads['gather'][n] for n in names], [grads['unfold'][n] for n in names], rel=1e-4,
                 what='all gradients')
    refiner = [n for n in names if n.startswith('refiner.')]
    assert_close([grads['gather'][n] for n in refiner], [grads['unfold'][n] for n in refiner], rel=1e-4,
                 what='refiner gradients')


def test_sampling_selects_per_image_in_a_batch():
    torch.manual_seed(0)
    model = MattingRefine('mobilenetv2', backbone_scale=0.5, refine_sample_pixels=16 * 10)
    err = torch.zeros(2, 1, 8, 8)
    err[0, 0, 0, :] = torch.linspace(0.5, 1, 8)  # image 0: its top row
    err[1, 0, :, 0] = 0.01  # image 1: its left column, far below image 0's errors
    err[1, 0, 7, 7] = 0.02
    ref = model.refiner.select_refinement_regions(err)
    assert ref[0].sum() == 8 and ref[1].sum() == 9  # 10 wanted, but only 8 and 9 errors are above 0
    assert ref[0, 0, 0].sum() == 8 and ref[1, 0, :, 0].sum() == 8 and ref[1, 0, 7, 7] == 1


def test_more_sample_pixels_than_positions_selects_everything():
    model = with_error_everywhere(MattingRefine('mobilenetv2', backbone_scale=0.5,
                                                refine_sample_pixels=10_000_000)).eval()
    with torch.no_grad():
        ref_sm = model(torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64))[-1]
    assert ref_sm.shape == (1, 1, 16, 16) and ref_sm.sum() == 256


@pytest.mark.parametrize('backbone', ['mobilenetv2', 'mobilenetv3'])
def test_every_parameter_receives_a_gradient(backbone):
    torch.manual_seed(0)
    model = with_error_everywhere(MattingRefine(backbone, backbone_scale=0.5, refine_sample_pixels=2000)).train()
    src, bgr = torch.rand(2, 3, 96, 96), torch.rand(2, 3, 96, 96)
    pha, fgr, pha_sm, fgr_sm, err_sm, ref_sm = model(src, bgr)
    (pha.mean() + fgr.mean() + pha_sm.mean() + fgr_sm.mean() + err_sm.mean()).backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []
    assert all(p.grad.abs().sum() > 0 for name, p in model.named_parameters() if name.startswith('refiner.'))


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_reduced_precision_on_cpu_is_close_to_float32(dtype):
    torch.manual_seed(0)
    model = with_error_everywhere(MattingRefine('mobilenetv2', backbone_scale=0.5, refine_sample_pixels=3200,
                                                refine_patch_crop_method='roi_align')).eval()
    src, bgr = torch.rand(1, 3, 96, 128), torch.rand(1, 3, 96, 128)
    with torch.no_grad():
        expected = model(src, bgr)[0]
        pha = model.to(dtype)(src.to(dtype), bgr.to(dtype))[0]
    assert pha.dtype == dtype
    assert (pha.float() - expected).abs().mean() < 0.02


@pytest.mark.parametrize('model_class', [MattingBase, MattingRefine])
def test_torchscript_matches_eager(model_class):
    torch.manual_seed(0)
    model = with_error_everywhere(model_class('mobilenetv2')).eval()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', FutureWarning)
        scripted = torch.jit.script(model)
    src, bgr = torch.rand(1, 3, 128, 132), torch.rand(1, 3, 128, 132)
    with torch.no_grad():
        for name, a, b in zip(REFINE_NAMES if model_class is MattingRefine else BASE_NAMES,
                              scripted(src, bgr), model(src, bgr)):
            assert_close(a, b, rel=1e-5, what=name)
