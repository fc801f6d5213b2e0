import contextlib
import io
import os
import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

import export_onnx
from model import MattingBase
from test_export_torchscript import eager

RESOLUTION = ['160', '128']  # width, height traced at
SAMPLE_PIXELS = 1600


@pytest.fixture(scope='module')
def checkpoint(busy_checkpoint):
    return busy_checkpoint


def export(checkpoint, path, *options):
    export_onnx.main(['--model-checkpoint', checkpoint, '--device', 'cpu', '--output', str(path),
                      '--resolution', *RESOLUTION, '--model-refine-sample-pixels', str(SAMPLE_PIXELS),
                      '--model-backbone-scale', '0.25', *options])
    return str(path)


def run(path, src, bgr):
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    return session.run(None, {'src': src.numpy(), 'bgr': bgr.numpy()})


def inputs(batch, height, width, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, 3, height, width, generator=generator),
            torch.rand(batch, 3, height, width, generator=generator))


def set_initializer_value(path, name, index, value):
    """Sets element `index` of the initializer (weight) `name` of the ONNX file at `path`, in place."""
    proto = onnx.load(path)
    tensor = next(t for t in proto.graph.initializer if t.name == name)
    values = numpy_helper.to_array(tensor).copy()
    values[index] = value
    tensor.CopyFrom(numpy_helper.from_array(values, tensor.name))
    onnx.save(proto, path)


def max_differences(outputs, expected):
    assert len(outputs) == len(expected)
    differences = []
    for output, reference in zip(outputs, expected):
        assert output.shape == tuple(reference.shape)
        differences.append(float(np.abs(output - reference.numpy()).max()))
    return differences


@pytest.fixture(scope='module')
def sampling_file(checkpoint, tmp_path_factory):
    """The default export (sampling, roi_align + scatter_nd, dynamic shapes) with --validate, and what it printed."""
    path = tmp_path_factory.mktemp('onnx') / 'refine.onnx'
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        export(checkpoint, path, '--validate')
    return str(path), printed.getvalue()


def test_validate_compares_every_output_at_another_size(sampling_file):
    path, printed = sampling_file
    assert 'Validation passed' in printed
    assert 'batch 2, 224x192' in printed  # not the traced 161x129
    differences = dict(re.findall(r'^\s+(\w+)\s.*max abs difference (\S+)', printed, re.M))
    assert set(differences) == {'pha', 'fgr', 'pha_sm', 'fgr_sm', 'err_sm', 'ref_sm'}
    assert all(float(value) <= 1e-4 for value in differences.values())
    assert f'refined {2 * SAMPLE_PIXELS // 16} of' in printed


def test_validate_exits_non_zero_beyond_the_tolerance(checkpoint, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        export(checkpoint, tmp_path / 'base.onnx', '--model-type', 'mattingbase', '--resolution', '64', '48',
               '--validate', '--validate-tolerance', '0')
    assert exit_info.value.code not in (0, None)
    assert 'FAIL' in capsys.readouterr().out


@pytest.mark.parametrize('size', [(1, 128, 160), (2, 130, 201), (1, 256, 192)])
def test_dynamic_file_matches_eager_at_any_batch_and_size(checkpoint, sampling_file, size):
    src, bgr = inputs(*size)
    with torch.no_grad():
        expected = eager(checkpoint, refine_sample_pixels=SAMPLE_PIXELS)(src, bgr)
    assert max(max_differences(run(sampling_file[0], src, bgr), expected)) <= 1e-4
    assert expected[-1].sum() == size[0] * SAMPLE_PIXELS // 16


def test_metadata_records_the_fixed_settings(sampling_file):
    metadata = export_onnx.read_metadata(sampling_file[0])
    assert metadata['refine_mode'] == 'sampling' and metadata['refine_sample_pixels'] == SAMPLE_PIXELS
    assert metadata['refine_patch_crop_method'] == 'roi_align' and metadata['opset'] == export_onnx.DEFAULT_OPSET
    assert onnx.load(sampling_file[0]).opset_import[0].version == export_onnx.DEFAULT_OPSET


def test_thresholding_with_gather_and_scatter_element(checkpoint, tmp_path):
    path = export(checkpoint, tmp_path / 'threshold.onnx', '--model-refine-mode', 'thresholding',
                  '--model-refine-threshold', '0.4', '--model-refine-patch-crop-method', 'gather',
                  '--model-refine-patch-replace-method', 'scatter_element', '--eager')  # the eager graph's ops
    src, bgr = inputs(2, 192, 224)
    with torch.no_grad():
        expected = eager(checkpoint, refine_mode='thresholding', refine_threshold=0.4)(src, bgr)
    assert max(max_differences(run(path, src, bgr), expected)) <= 1e-4
    assert 0 < expected[-1].sum() < expected[-1].numel()


def test_refinement_is_exported_even_if_the_example_input_selects_nothing(checkpoint, tmp_path):
    # Export weights whose error prediction is strongly negative: the traced input selects no patch.
    weights = torch.load(checkpoint, weights_only=True)
    weights['decoder.conv4.bias'][4] = -10.
    torch.save(weights, tmp_path / 'no_error.pth')
    path = export(str(tmp_path / 'no_error.pth'), tmp_path / 'refine.onnx', '--model-refine-mode', 'thresholding',
                  '--model-refine-threshold', '0.4', '--eager')  # (the optimized graph: tests/test_optimize.py)
    # Give the file back the positive error bias: it must now refine like the eager model.
    set_initializer_value(path, 'decoder.conv4.bias', 4, 0.5)
    src, bgr = inputs(1, 128, 160)
    with torch.no_grad():
        expected = eager(checkpoint, refine_mode='thresholding', refine_threshold=0.4)(src, bgr)
    assert expected[-1].sum() > 0
    assert max(max_differences(run(path, src, bgr), expected)) <= 1e-4


def test_a_trace_that_refines_one_patch_is_avoided(checkpoint, tmp_path):
    # 16 sample pixels select one patch per image: traced at batch 1 the scatter would be fixed to one
    # patch and fail at batch 2; the exporter traces at batch 2 instead.
    path = str(tmp_path / 'one.onnx')
    export_onnx.main(['--model-checkpoint', checkpoint, '--device', 'cpu', '--output', path,
                      '--resolution', *RESOLUTION, '--model-refine-sample-pixels', '16', '--model-backbone-scale', '0.25',
                      '--no-model-refine-prevent-oversampling'])
    model = eager(checkpoint, refine_sample_pixels=16, refine_prevent_oversampling=False)
    for batch in (1, 2, 3):
        src, bgr = inputs(batch, 128, 160, seed=batch)
        with torch.no_grad():
            expected = model(src, bgr)
        assert expected[-1].sum() == batch
        assert max(max_differences(run(path, src, bgr), expected)) <= 1e-4


def test_mattingbase(checkpoint, tmp_path):
    path = export(checkpoint, tmp_path / 'base.onnx', '--model-type', 'mattingbase')
    assert [o.name for o in onnx.load(path).graph.output] == ['pha', 'fgr', 'err', 'hid']
    src, bgr = inputs(2, 96, 64)
    with torch.no_grad():
        expected = eager(checkpoint, MattingBase)(src, bgr)
    assert max(max_differences(run(path, src, bgr), expected)) <= 1e-4


def test_fixed_shape(checkpoint, tmp_path):
    path = export(checkpoint, tmp_path / 'fixed.onnx', '--fixed-shape', '--batch-size', '2')
    graph = onnx.load(path).graph
    for value in list(graph.input) + list(graph.output):
        assert all(d.HasField('dim_value') for d in value.type.tensor_type.shape.dim), value.name
    assert [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim] == [2, 3, 128, 160]
    src, bgr = inputs(2, 128, 160)
    with torch.no_grad():
        expected = eager(checkpoint, refine_sample_pixels=SAMPLE_PIXELS)(src, bgr)
    assert max(max_differences(run(path, src, bgr), expected)) <= 1e-4
    with pytest.raises(Exception, match='(?i)dimension|shape'):
        run(path, *inputs(1, 128, 160))


@pytest.mark.parametrize('options, message', [
    (['--model-refine-patch-crop-method', 'unfold'], '--model-refine-patch-crop-method unfold'),
    (['--precision', 'bf16'], '--precision bf16'),
    (['--model-refine-sample-pixels', '80000'], '--model-refine-sample-pixels 80000'),
    (['--resolution', '48', '200'], 'at least 64'),
])
def test_unusable_options_are_named(checkpoint, tmp_path, capsys, options, message):
    with pytest.raises(SystemExit) as exit_info:
        export(checkpoint, tmp_path / 'model.onnx', *options)
    assert exit_info.value.code != 0
    assert message in capsys.readouterr().err
    assert not os.path.exists(tmp_path / 'model.onnx')
