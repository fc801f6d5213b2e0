import argparse
import os
import re
import resource
import signal
import subprocess
import sys
import warnings
import zipfile

import pytest
import torch

import export_torchscript
from inference_utils import TORCHSCRIPT_SETTINGS, add_model_arguments, load_model
from model import CheckpointError, MattingBase, MattingRefine
from tolerance import assert_close

SIZE = (128, 160)


@pytest.fixture(scope='module')
def checkpoint(busy_checkpoint):
    return busy_checkpoint


def eager(checkpoint, model_class=MattingRefine, **settings):
    model = model_class('mobilenetv2', **settings)
    state_dict = torch.load(checkpoint, weights_only=True)
    if model_class is MattingBase:
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith('refiner.')}
    model.load_state_dict(state_dict)
    return model.eval()


def export(checkpoint, path, *options):
    export_torchscript.main(['--model-checkpoint', checkpoint, '--device', 'cpu', '--output', str(path), *options])
    return str(path)


@pytest.fixture(scope='module')
def refine_file(checkpoint, tmp_path_factory):
    return export(checkpoint, tmp_path_factory.mktemp('torchscript') / 'model.pth', '--model-backbone-scale', '0.25')


def load(path):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', FutureWarning)
        return torch.jit.load(path).eval()


def inputs(batch=1, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, *SIZE, generator=generator), torch.rand(batch, 3, *SIZE, generator=generator)


def assert_outputs_equal(outputs, expected, rel=1e-5):
    """The same outputs up to float32 rounding (kernels may sum in another order); ref_sm, 0 or 1, then agrees exactly."""
    assert len(outputs) == len(expected)
    for index, (a, b) in enumerate(zip(outputs, expected)):
        assert a.shape == b.shape, index
        assert_close(a, b, rel=rel, what=f'output {index}')


RELOAD = """
import importlib.util, sys, torch
assert importlib.util.find_spec('model') is None and importlib.util.find_spec('inference_utils') is None
model = torch.jit.load('model.pth').eval()
model.refine_sample_pixels = 800
model.refine_prevent_oversampling = False
src, bgr = torch.load('inputs.pt')
with torch.no_grad():
    outputs = model(src, bgr)
torch.save(list(outputs), 'outputs.pt')
print('torchvision' in sys.modules)
"""


def test_file_runs_in_a_fresh_process_without_the_project(tmp_path, checkpoint, refine_file):
    os.symlink(refine_file, tmp_path / 'model.pth')
    src, bgr = inputs(batch=2)
    torch.save((src, bgr), tmp_path / 'inputs.pt')
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    # -I: neither the working directory nor PYTHONPATH is on sys.path, so the project cannot be imported.
    result = subprocess.run([sys.executable, '-I', '-W', 'ignore', '-c', RELOAD], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ['False']  # only torch was needed

    outputs = torch.load(tmp_path / 'outputs.pt')
    model = eager(checkpoint, refine_sample_pixels=800, refine_prevent_oversampling=False)
    with torch.no_grad():
        expected = model(src, bgr)
    assert_outputs_equal(outputs, expected)
    assert expected[-1].sum() == 2 * 800 // 16


@pytest.mark.parametrize('freeze', [False, True])
def test_hoisted_settings_change_the_computation(tmp_path, checkpoint, refine_file, freeze):
    model = load(export(checkpoint, tmp_path / 'frozen.pth', '--freeze') if freeze else refine_file)
    assert all(hasattr(model, name) for name in TORCHSCRIPT_SETTINGS)
    src, bgr = inputs()
    # Sampling with other sample pixels is checked in the fresh process above.
    for settings in [dict(refine_mode='thresholding', refine_threshold=0.4, backbone_scale=0.5),
                     dict(refine_mode='full', backbone_scale=0.25)]:
        for name, value in settings.items():
            setattr(model, name, value)
        with torch.no_grad():
            outputs = model(src, bgr)
            expected = eager(checkpoint, **settings)(src, bgr)
        assert_outputs_equal(outputs, expected)
        if settings['refine_mode'] != 'full':
            assert 0 < expected[-1].sum() < expected[-1].numel()
        assert outputs[2].shape[-2:] == tuple(int(side * settings['backbone_scale']) for side in SIZE)


def test_inference_scripts_load_the_file_with_their_settings(checkpoint, refine_file):
    parser = argparse.ArgumentParser()
    add_model_arguments(parser)
    args = parser.parse_args(['--model-checkpoint', refine_file, '--device', 'cpu',
                              '--model-refine-mode', 'thresholding', '--model-refine-threshold', '0.4',
                              '--model-backbone-scale', '0.5'])
    model, device, dtype = load_model(args)
    src, bgr = inputs()
    with torch.no_grad():
        outputs = model(src, bgr)
        expected = eager(checkpoint, refine_mode='thresholding', refine_threshold=0.4,
                         backbone_scale=0.5)(src, bgr)
    assert_outputs_equal(outputs, expected)
    assert 0 < expected[-1].sum() < expected[-1].numel()


def test_mattingbase(tmp_path, checkpoint):
    model = load(export(checkpoint, tmp_path / 'base.pth', '--model-type', 'mattingbase'))
    assert not any(hasattr(model, name) for name in TORCHSCRIPT_SETTINGS)
    src, bgr = inputs()
    with torch.no_grad():
        assert_outputs_equal(model(src, bgr), eager(checkpoint, MattingBase)(src, bgr))
    assert export_torchscript.read_metadata(str(tmp_path / 'base.pth'))['model_type'] == 'mattingbase'


def test_fp16_file_holds_fp16_weights(tmp_path, checkpoint):
    # Only the weights are checked: fp16 convolutions on CPU take PyTorch's slow path (seconds per call).
    path = export(checkpoint, tmp_path / 'model_fp16.pth', '--precision', 'fp16')
    model = load(path)
    floating = [t for t in list(model.parameters()) + list(model.buffers()) if t.is_floating_point()]
    assert floating and all(t.dtype == torch.float16 for t in floating)
    assert export_torchscript.read_metadata(path)['precision'] == 'fp16'


def test_torchscript_checkpoint_is_refused(tmp_path, refine_file, capsys):
    with pytest.raises(SystemExit) as exit_info:
        export(refine_file, tmp_path / 'again.pth')
    assert exit_info.value.code != 0
    assert '--model-checkpoint' in capsys.readouterr().err and not os.path.exists(tmp_path / 'again.pth')


def test_weights_of_another_backbone_are_named(tmp_path, checkpoint, capsys):
    with pytest.raises(SystemExit) as exit_info:
        export(checkpoint, tmp_path / 'model.pth', '--model-backbone', 'mobilenetv3')
    assert exit_info.value.code != 0
    assert '--model-backbone mobilenetv2' in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_unwritable_outputs_are_one_clear_line_before_any_work(tmp_path, checkpoint, capsys):
    """A folder as --output, a folder below a file, or a write that fails half-way: one line naming the
    path, exit status 1, no file and no temporary left behind."""
    (tmp_path / 'a_file').write_text('')
    (tmp_path / 'a_folder').mkdir()
    cases = [(tmp_path / 'a_folder', 'a_folder: is a folder'),
             (tmp_path / 'a_file' / 'model.pth', 'cannot write there (.*a_file is a file, not a folder)')]
    for output, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            export(checkpoint, output)
        err = capsys.readouterr().err
        assert exit_info.value.code == 1 and len(err.splitlines()) == 1 and re.search(message, err), err
    assert sorted(os.listdir(tmp_path)) == ['a_file', 'a_folder'] and not os.listdir(tmp_path / 'a_folder')


def test_a_full_disk_names_the_file_and_leaves_nothing(tmp_path, checkpoint):
    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write then fails with EFBIG, as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, os.path.join(root, 'export_torchscript.py'), '--model-checkpoint',
                             checkpoint, '--device', 'cpu', '--output', str(tmp_path / 'model.pth')],
                            capture_output=True, text=True, preexec_fn=limit_file_size, timeout=300)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and 'model.pth: cannot write it' in lines[0], result.stderr
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize('damage', ['code', 'truncated'])
def test_a_damaged_file_is_named_with_what_is_wrong(tmp_path, refine_file, damage):
    """A TorchScript file whose code was edited, or which was cut short, says so in one line."""
    damaged = tmp_path / 'damaged.pth'
    if damage == 'truncated':
        data = open(refine_file, 'rb').read()
        damaged.write_bytes(data[:len(data) // 2])
    else:
        with zipfile.ZipFile(refine_file) as source, zipfile.ZipFile(damaged, 'w') as target:
            for item in source.infolist():
                data = source.read(item.filename)
                if '/code/' in item.filename and item.filename.endswith('.py') and b'def forward' in data:
                    data = data.replace(b'def forward', b'def forward((', 1)
                target.writestr(item, data)
    parser = argparse.ArgumentParser()
    add_model_arguments(parser)
    args = parser.parse_args(['--model-checkpoint', str(damaged), '--device', 'cpu'])
    expected = 'truncated or corrupt' if damage == 'truncated' else \
        r'looks like a TorchScript archive but cannot be loaded: the file is damaged \(expected ident'
    # Cut short, it is no longer a readable zip archive, so it is read as a weight file, and refused.
    with pytest.raises(CheckpointError) as error:
        load_model(args)
    message = str(error.value)
    assert re.search(expected, message) and '\n' not in message and '()' not in message, message
