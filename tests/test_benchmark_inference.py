"""scripts/benchmark_inference.py: the records it prints and writes, and the original code run beside
ours (here a stand-in checkout: a copy of our own `model` package, which has the original's layout)."""
import argparse
import json
import os
import shutil

import pytest
import torch

from common.errors import UserError
from scripts import benchmark_inference

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = dict(backbone='mobilenetv2', width=256, height=144, backbone_scale=0.25, sample_pixels=1_600)


def arguments(**changes):
    args = benchmark_inference.get_args_parser().parse_args([])
    return argparse.Namespace(**{**vars(args), 'iterations': 2, 'warmup': 0, 'threads': 1, **changes})


def test_a_folder_that_is_not_a_checkout_is_refused(tmp_path):
    with pytest.raises(UserError, match='no model/model.py'):
        benchmark_inference.import_original(str(tmp_path))


def test_the_original_runs_in_the_same_rounds_with_the_same_weights(tmp_path):
    shutil.copytree(f'{ROOT}/model', tmp_path / 'model', ignore=shutil.ignore_patterns('__pycache__'))
    package = benchmark_inference.import_original(str(tmp_path))
    record = benchmark_inference.benchmark('small', SMALL, arguments(), torch.device('cpu'), torch.float32, package)
    assert set(record['ms']) == {'eager', 'original', 'optimized'}
    assert record['original_max_difference'] == 0
    assert record['ratio_original']['original'] == 1 and record['ratio']['eager'] == 1
    assert record['ratio_original']['optimized'] == pytest.approx(record['ms']['optimized'] / record['ms']['original'])


def test_a_backbone_the_original_lacks_is_timed_without_it(tmp_path):
    shutil.copytree(f'{ROOT}/model', tmp_path / 'model', ignore=shutil.ignore_patterns('__pycache__'))
    package = benchmark_inference.import_original(str(tmp_path))
    # The original's MattingRefine asserts its three backbones; the stand-in's refuses others alike.
    model = benchmark_inference.build(dict(SMALL, backbone='mobilenetv2'), torch.device('cpu'), torch.float32)
    assert benchmark_inference.build_original(package, dict(SMALL, backbone='no-such-backbone'), model) is None


def test_the_command_prints_the_table_and_writes_json(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(benchmark_inference.SETTINGS, 'small', SMALL)
    out = tmp_path / 'records.json'
    benchmark_inference.main(['--settings', 'small', '--iterations', '1', '--warmup', '0', '--threads', '1',
                              '--json', str(out)])
    printed = capsys.readouterr().out
    assert 'small' in printed and 'optimized' in printed
    record, = json.loads(out.read_text())
    assert record['setting'] == 'small' and record['ratio_original'] is None and record['ms']['optimized'] > 0


def test_bundled_inputs_refine_the_subjects_edges(tmp_path):
    """--bundled: the demonstration model on the bundled capture (resized), the work still fixed."""
    record = benchmark_inference.benchmark('small', SMALL, arguments(bundled=True), torch.device('cpu'), torch.float32)
    assert record['inputs'] == 'bundled' and set(record['ms']) == {'eager', 'optimized'}
    src = benchmark_inference.bundled_image('src', SMALL)
    assert src.shape == (1, 3, 144, 256) and 0 <= float(src.min()) and float(src.max()) <= 1
    assert float((src - benchmark_inference.bundled_image('bgr', SMALL)).abs().mean()) > 0.01  # a subject


def test_bundled_weights_are_for_mobilenetv2_only():
    with pytest.raises(SystemExit):
        benchmark_inference.main(['--bundled', '--settings', 'resnet50-hd'])


def test_a_bad_original_or_json_path_stops_before_any_work(tmp_path, capsys):
    for option in (['--original', str(tmp_path)], ['--json', str(tmp_path)]):
        with pytest.raises(SystemExit) as stop:
            benchmark_inference.main(['--settings', 'mobilenetv2-hd', *option])
        assert stop.value.code == 2
        assert option[0] in capsys.readouterr().err
