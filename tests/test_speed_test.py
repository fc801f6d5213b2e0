import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import export_onnx
import export_torchscript
import inference_speed_test
from model import MattingRefine

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BRIEF = ['--device', 'cpu', '--model-refine-sample-pixels', '800', '--warmup', '1', '--iterations', '3']
SMALL = ['--resolution', '160', '128', *BRIEF]


def speed_test(capsys, *options):
    inference_speed_test.main([*options, '--json'])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    return json.loads(lines[0])


def check_record(record, backend):
    assert record['backend'] == backend
    latency = record['latency_ms']
    assert 0 < latency['min'] <= latency['median'] <= latency['p90'] <= latency['max']
    assert record['fps'] == pytest.approx(record['input']['batch_size'] * 1000 / latency['median'])
    assert record['iterations'] == 3 and record['device'] == 'cpu'
    assert {'platform', 'cpu_count', 'torch', 'onnxruntime', 'load_average'} <= set(record['machine'])


@pytest.mark.parametrize('backend', ['pytorch', 'torchscript', 'onnx'])
def test_random_input_does_fixed_work(capsys, backend):
    record = speed_test(capsys, '--backend', backend, '--batch-size', '2', *SMALL)
    check_record(record, backend)
    assert record['input'] == dict(kind='random', src=None, bgr=None, batch_size=2, width=160, height=128)
    model = record['model']
    assert model['model_type'] == 'mattingrefine' and model['backbone'] == 'mobilenetv2'
    assert model['refine_mode'] == 'sampling' and model['refine_prevent_oversampling'] is False
    # Every image refines exactly sample_pixels / 16 patches, whatever the random weights predict.
    assert record['refined_patches'] == 2 * 800 // 16


def test_exported_files_are_measured_as_they_are(tmp_path, capsys):
    torch.manual_seed(0)
    weights = str(tmp_path / 'weights.pth')
    torch.save(MattingRefine('mobilenetv2').state_dict(), weights)
    export_onnx.main(['--model-checkpoint', weights, '--device', 'cpu', '--output', str(tmp_path / 'model.onnx'),
                      '--resolution', '160', '128', '--model-refine-mode', 'thresholding'])
    export_torchscript.main(['--model-checkpoint', weights, '--device', 'cpu', '--freeze',
                             '--output', str(tmp_path / 'model.pth')])
    capsys.readouterr()

    record = speed_test(capsys, '--backend', 'onnx', '--model-checkpoint', str(tmp_path / 'model.onnx'), *SMALL)
    check_record(record, 'onnx')
    assert record['model']['refine_mode'] == 'thresholding'  # from the file, not from the options

    record = speed_test(capsys, '--backend', 'torchscript', '--model-checkpoint', str(tmp_path / 'model.pth'), *SMALL)
    check_record(record, 'torchscript')
    assert record['model']['frozen'] is True and record['model']['refine_sample_pixels'] == 800


@pytest.mark.parametrize('backend', ['pytorch', 'torchscript'])
def test_channels_last_is_measured_and_recorded(capsys, backend):
    record = speed_test(capsys, '--backend', backend, '--channels-last', *SMALL)
    check_record(record, backend)
    assert record['model']['channels_last'] is True and record['refined_patches'] == 800 // 16
    assert speed_test(capsys, '--backend', backend, *SMALL)['model']['channels_last'] is False


def test_image_pair(tmp_path, capsys):
    pixels = np.random.RandomState(0).randint(0, 256, (2, 100, 140, 3), dtype=np.uint8)
    Image.fromarray(pixels[0]).save(tmp_path / 'src.png')
    Image.fromarray(pixels[1]).save(tmp_path / 'bgr.png')
    record = speed_test(capsys, '--backend', 'pytorch', '--src', str(tmp_path / 'src.png'),
                        '--bgr', str(tmp_path / 'bgr.png'), *BRIEF)
    check_record(record, 'pytorch')
    assert record['input']['kind'] == 'images' and (record['input']['width'], record['input']['height']) == (140, 100)
    assert record['model']['refine_prevent_oversampling'] is True  # the model as configured


def test_command_line_prints_latency(tmp_path):
    command = [sys.executable, os.path.join(ROOT, 'inference_speed_test.py'), '--backend', 'pytorch',
               '--model-type', 'mattingbase', '--threads', '1', *SMALL]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert 'mattingbase' in result.stdout and 'median' in result.stdout and 'p90' in result.stdout


@pytest.mark.parametrize('options, message', [
    (['--src', 'missing.png', '--bgr', 'missing.png'], '--src missing.png does not exist'),
    (['--src', 'only.png'], '--src and --bgr go together'),
    (['--backend', 'pytorch', '--model-checkpoint', 'model.onnx'], 'use --backend onnx'),
    (['--iterations', '0'], '--iterations must be at least 1'),
    (['--channels-last'], '--channels-last is for the pytorch and torchscript backends'),
])
def test_unusable_options_are_named(tmp_path, monkeypatch, capsys, options, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        inference_speed_test.main(['--backend', 'onnx', *options])
    assert exit_info.value.code != 0
    assert message in capsys.readouterr().err
