"""`optimize(model)` computes what the faithful eager model computes (same refinement positions, same
mattes within float32 rounding), for every backbone and refine setting, and leaves the model as it was."""
import argparse
import copy
import importlib
import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

import export_onnx
import inference_speed_test
from inference_utils import add_model_arguments, load_model
from model import MattingBase, MattingRefine, optimize
from model.fusion import FusedConv2d
from model.resampling import bilinear_rows
from test_export_onnx import set_initializer_value

fast_refiner = importlib.import_module('model.fast_refiner')

REFINE_NAMES = ['pha', 'fgr', 'pha_sm', 'fgr_sm', 'err_sm', 'ref_sm']
BASE_NAMES = ['pha', 'fgr', 'err', 'hid']


def busy(model):
    """Random weights predict err == 0 about half the time; a positive bias gives the refiner work
    (as conftest's busy_checkpoint), so that the selections compared are not ties at 0."""
    with torch.no_grad():
        model.decoder.conv4.bias[4] = 0.5
    return model.eval()


def inputs(batch, height, width, seed=0, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    return tuple(torch.rand(batch, 3, height, width, generator=generator).to(dtype) for _ in range(2))


def run(model, src, bgr):
    with torch.no_grad():
        return model(src, bgr)


def check_same_mattes(outputs, expected, names=REFINE_NAMES, bound=1e-4):
    """The issue's criterion: the same refinement positions on at least 99.9 % of them, and the 99.9th
    percentile of |pha - pha_ref| and |fgr - fgr_ref| at most `bound`; every output of the same shape
    and dtype, the coarse ones as close."""
    assert len(outputs) == len(expected)
    for name, output, reference in zip(names, outputs, expected):
        assert output.shape == reference.shape and output.dtype == reference.dtype, name
        if name == 'ref_sm':
            assert reference.sum() > 0  # the refiner had work
            assert (output == reference).float().mean() >= 0.999
        else:
            difference = (output.float() - reference.float()).abs().flatten()
            assert torch.quantile(difference, 0.999) <= bound, name


@pytest.mark.parametrize('backbone', ['resnet50', 'resnet101', 'mobilenetv2', 'mobilenetv3'])
def test_every_backbone(backbone):
    torch.manual_seed(0)
    model = busy(MattingRefine(backbone, backbone_scale=0.5, refine_sample_pixels=2400))
    src, bgr = inputs(1, 96, 128)
    check_same_mattes(run(optimize(model), src, bgr), run(model, src, bgr))


@pytest.mark.parametrize('mode', ['sampling', 'thresholding', 'full'])
@pytest.mark.parametrize('kernel_size', [1, 3])
def test_every_refine_mode_and_kernel_size(mode, kernel_size):
    torch.manual_seed(0)
    model = busy(MattingRefine('mobilenetv2', backbone_scale=0.5, refine_mode=mode, refine_sample_pixels=2400,
                               refine_threshold=0.4, refine_kernel_size=kernel_size))
    src, bgr = inputs(2, 96, 128, seed=1)
    expected = run(model, src, bgr)
    if mode == 'thresholding':
        assert 0.1 < expected[-1].mean() < 0.9  # the threshold selects some positions, not all
    check_same_mattes(run(optimize(model), src, bgr), expected)


@pytest.mark.parametrize('size', [(97, 130), (130, 99), (101, 103)])
def test_sides_that_are_not_multiples_of_4(size):
    torch.manual_seed(0)
    model = busy(MattingRefine('mobilenetv2', backbone_scale=0.5, refine_sample_pixels=2400))
    src, bgr = inputs(2, *size, seed=2)
    check_same_mattes(run(optimize(model), src, bgr), run(model, src, bgr))


@pytest.mark.parametrize('backbone_scale, size', [(0.25, (128, 192)), (0.125, (256, 256)), (0.3, (136, 200))])
def test_backbone_scales(backbone_scale, size):
    """The refiner's patches are resampled from the coarse resolution at every ratio, also when it is not
    a whole number (0.3)."""
    torch.manual_seed(0)
    model = busy(MattingRefine('mobilenetv2', backbone_scale=backbone_scale, refine_sample_pixels=4000))
    src, bgr = inputs(1, *size, seed=3)
    check_same_mattes(run(optimize(model), src, bgr), run(model, src, bgr))


def test_patches_at_the_borders():
    """Every position refined, so patches touch all four borders and corners (zero padding there)."""
    torch.manual_seed(0)
    model = busy(MattingRefine('mobilenetv2', backbone_scale=0.5, refine_sample_pixels=10 ** 9))
    src, bgr = inputs(1, 66, 90, seed=4)
    expected = run(model, src, bgr)
    assert bool(expected[-1].min() == 1)
    check_same_mattes(run(optimize(model), src, bgr), expected)


@pytest.mark.parametrize('size', [(64, 96), (65, 99)])
def test_matting_base(size):
    torch.manual_seed(0)
    model = MattingBase('mobilenetv2').eval()
    src, bgr = inputs(2, *size, seed=5)
    check_same_mattes(run(optimize(model), src, bgr), run(model, src, bgr), names=BASE_NAMES)


@pytest.mark.parametrize('factor', [2, 4, 8])
def test_rows_of_an_upsampled_image_are_those_of_the_whole(factor):
    """bilinear_rows (the banded decoder stage) gives the rows of upsampling the whole image
    (within float32 rounding: PyTorch's kernel may order its sums differently for another size)."""
    x = torch.rand(2, 3, 13, 9, generator=torch.Generator().manual_seed(factor))
    whole = torch.nn.functional.interpolate(x, scale_factor=float(factor), mode='bilinear', align_corners=False)
    for rows in (1, 5, 16, 200):
        for top in range(0, whole.size(2), rows):
            bottom = min(top + rows, whole.size(2))
            assert (bilinear_rows(x, factor, top, bottom) - whole[:, :, top:bottom]).abs().max() <= 1e-6


@pytest.mark.parametrize('factor', [2, 4, 8])
def test_outputs_upsampled_as_phases_equal_upsampling(monkeypatch, factor):
    """finish_outputs (each output phase a convolution of the coarse planes, in bands of rows) makes what
    upsampling, adding src and clamping make, also where the last band is short; with a few rows a band
    and with whole frames in one."""
    generator = torch.Generator().manual_seed(factor)
    coarse = torch.randn(2, 4, 11, 7, generator=generator)
    src = torch.rand(2, 3, 11 * factor, 7 * factor, generator=generator)
    upsampled = torch.nn.functional.interpolate(coarse, scale_factor=float(factor), mode='bilinear',
                                                align_corners=False)
    expected = upsampled[:, :1].clamp(0, 1), (upsampled[:, 1:] + src).clamp(0, 1)
    for rows in (3 * factor, 10 * factor, 64 * factor):
        monkeypatch.setattr(fast_refiner, 'OUTPUT_ROWS', rows)
        for output, reference in zip(fast_refiner.finish_outputs(coarse, src), expected):
            assert output.shape == reference.shape and output.is_contiguous()
            assert (output - reference).abs().max() <= 1e-6


def test_inputs_of_any_layout():
    """The inference scripts give channels-last frames and one plate expanded over the batch."""
    torch.manual_seed(0)
    model = busy(MattingRefine('mobilenetv2', backbone_scale=0.5, refine_sample_pixels=2400))
    src, bgr = inputs(2, 96, 128, seed=6)
    bgr = bgr[:1].expand(2, -1, -1, -1)
    expected = run(model, src, bgr)
    check_same_mattes(run(optimize(model), src.contiguous(memory_format=torch.channels_last), bgr), expected)


def test_refine_settings_stay_settable():
    torch.manual_seed(0)
    model = busy(MattingRefine('mobilenetv2', backbone_scale=0.5, refine_sample_pixels=2400))
    fast = optimize(model)
    src, bgr = inputs(1, 128, 128, seed=7)
    for name, value in [('sample_pixels', 4000), ('mode', 'thresholding'), ('threshold', 0.4),
                        ('prevent_oversampling', False), ('mode', 'full')]:
        setattr(model.refiner, name, value)
        setattr(fast.refiner, name, value)
        check_same_mattes(run(fast, src, bgr), run(model, src, bgr))
    model.backbone_scale = fast.backbone_scale = 0.25
    check_same_mattes(run(fast, src, bgr), run(model, src, bgr))


def test_nothing_selected():
    """With prevent_oversampling and an error of 0 everywhere nothing is refined: the outputs are the
    upsampled coarse ones."""
    torch.manual_seed(0)
    model = MattingRefine('mobilenetv2', backbone_scale=0.5, refine_sample_pixels=2400).eval()
    with torch.no_grad():
        model.decoder.conv4.bias[4] = -100.
    src, bgr = inputs(1, 64, 64, seed=8)
    outputs, expected = run(optimize(model), src, bgr), run(model, src, bgr)
    assert expected[-1].sum() == 0 and outputs[-1].sum() == 0
    for output, reference in zip(outputs, expected):
        assert (output - reference).abs().max() <= 1e-5


def test_model_is_left_untouched():
    torch.manual_seed(0)
    model = busy(MattingRefine('mobilenetv2', backbone_scale=0.5, refine_sample_pixels=2400)).train()
    state = copy.deepcopy(model.state_dict())
    fast = optimize(model)
    assert model.training and not fast.training
    assert all(torch.equal(value, model.state_dict()[name]) for name, value in state.items())
    assert all(p.requires_grad for p in model.parameters())
    assert all(p.data_ptr() != q.data_ptr() for p in model.parameters() for q in fast.parameters())


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_reduced_precision_keeps_the_dtype(dtype):
    """The model's dtype is kept; compared with the eager model in the same dtype, loosely (rounding)."""
    torch.manual_seed(0)
    model = busy(MattingRefine('mobilenetv2', backbone_scale=0.5, refine_sample_pixels=2400,
                               refine_patch_crop_method='roi_align')).to(dtype)
    src, bgr = inputs(1, 64, 96, seed=9, dtype=dtype)
    outputs, expected = run(optimize(model), src, bgr), run(model, src, bgr)
    for name, output, reference in zip(REFINE_NAMES, outputs, expected):
        assert output.dtype == dtype and output.shape == reference.shape, name
        if name in ('pha', 'fgr'):
            assert (output.float() - reference.float()).abs().mean() < 0.01, name


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16, torch.bfloat16])
def test_cuda(dtype):
    torch.manual_seed(0)
    model = busy(MattingRefine('mobilenetv2', backbone_scale=0.5, refine_sample_pixels=2400)).cuda().to(dtype)
    src, bgr = (x.cuda() for x in inputs(2, 96, 128, seed=10, dtype=dtype))
    outputs, expected = run(optimize(model), src, bgr), run(model, src, bgr)
    if dtype == torch.float32:
        check_same_mattes(outputs, expected)
    for name, output, reference in zip(REFINE_NAMES, outputs, expected):
        assert output.device == reference.device and output.dtype == dtype, name
        if name in ('pha', 'fgr'):
            assert (output.float() - reference.float()).abs().mean() < 0.01, name


def test_anything_else_is_refused():
    with pytest.raises(TypeError, match='MattingBase or MattingRefine'):
        optimize(torch.nn.Conv2d(3, 3, 1))


@pytest.mark.parametrize('side', [1, 2, 4])
def test_every_tile_side(monkeypatch, side):
    """Patches refined alone or in tiles of 2x2 or 4x4 (chosen by the work they take), in several chunks."""
    monkeypatch.setattr(fast_refiner, 'CHUNK_PATCHES', 37)
    torch.manual_seed(0)
    model = busy(MattingRefine('mobilenetv2', backbone_scale=0.5, refine_sample_pixels=2400))
    fast = optimize(model)
    fast.refiner.tile_sides = (side,)
    src, bgr = inputs(2, 98, 130, seed=11)
    check_same_mattes(run(fast, src, bgr), run(model, src, bgr))


def test_convolutions_are_fused_on_the_cpu():
    """BatchNorm folded, and on the CPU convolutions fused with their activation (one oneDNN call)."""
    torch.manual_seed(0)
    fast = optimize(MattingRefine('resnet50').eval())
    modules = list(fast.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in modules)
    fused = [m for m in modules if isinstance(m, FusedConv2d)]
    assert sum(m.activation == 'relu' for m in fused) > 40  # ResNet-50: conv+relu and conv+add+relu


def load(*options):
    parser = argparse.ArgumentParser()
    add_model_arguments(parser, checkpoint_required=False)
    return load_model(parser.parse_args(['--device', 'cpu', *options]))[0]


def test_inference_scripts_run_the_optimized_model_unless_eager():
    assert type(load()).__name__ == 'OptimizedMattingRefine'
    assert type(load('--model-type', 'mattingbase')).__name__ == 'OptimizedMattingBase'
    assert type(load('--eager')) is MattingRefine


def test_speed_test_records_which_model_ran(capsys):
    records = []
    for flags in [[], ['--eager']]:
        inference_speed_test.main(['--backend', 'pytorch', '--resolution', '160', '128', '--device', 'cpu',
                                   '--model-refine-sample-pixels', '800', '--warmup', '0', '--iterations', '1',
                                   '--json', *flags])
        records.append(json.loads(capsys.readouterr().out))
    assert [record['model']['optimized'] for record in records] == [True, False]
    assert all(record['refined_patches'] == 800 // 16 for record in records)


def test_onnx_export_of_the_optimized_graph(busy_checkpoint, tmp_path):
    """export_onnx.py writes the optimized graph, validated against the eager model, recorded in the
    metadata; it refines even when the example traced selected nothing."""
    weights = torch.load(busy_checkpoint, weights_only=True)
    weights['decoder.conv4.bias'][4] = -10.  # nothing selected when traced
    torch.save(weights, tmp_path / 'no_error.pth')
    path = str(tmp_path / 'refine.onnx')
    export_onnx.main(['--model-checkpoint', str(tmp_path / 'no_error.pth'), '--device', 'cpu', '--output', path,
                      '--resolution', '160', '128', '--model-backbone-scale', '0.25', '--model-refine-mode', 'thresholding',
                      '--model-refine-threshold', '0.4'])
    assert export_onnx.read_metadata(path)['optimized'] is True
    # Give the file back the positive error bias (channel 36 of the reordered decoder output).
    set_initializer_value(path, 'network.decoder.upsampled.3.conv.bias', 36, 0.5)
    torch.manual_seed(0)
    model = MattingRefine('mobilenetv2', refine_mode='thresholding', refine_threshold=0.4).eval()
    model.load_state_dict(torch.load(busy_checkpoint, weights_only=True))
    src, bgr = inputs(2, 130, 163, seed=12)
    expected = run(model, src, bgr)
    assert 0 < expected[-1].mean() < 1
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    outputs = session.run(None, {'src': src.numpy(), 'bgr': bgr.numpy()})
    for output, reference in zip(outputs, expected):
        assert np.abs(output - reference.numpy()).max() <= 1e-4
