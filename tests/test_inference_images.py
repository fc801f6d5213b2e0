"""inference_images.py end to end on synthetic capture pairs, with a small random-weight checkpoint."""
import argparse
import os
import re
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

import inference_images
from inference_utils import add_model_arguments, load_model
from model import MattingBase
from test_inference_utils import composite_subject, leftovers, model_args, save_png, textured_plate

SIZES = {'studio/0000': (160, 96), 'studio/take2/0001': (192, 128), '0002': (256, 144)}


@pytest.fixture
def captures(tmp_path):
    """src/ and bgr/ folders of capture pairs in nested folders, plus a source without a plate."""
    for index, (name, (width, height)) in enumerate(SIZES.items()):
        plate = textured_plate(width, height, seed=index)
        src, _ = composite_subject(plate, centre_x=0.3 + 0.2 * index)
        save_png(tmp_path / 'src' / f'{name}.png', src)
        save_png(tmp_path / 'bgr' / f'{name}.jpg', plate)  # paired by name, whatever the extension
    save_png(tmp_path / 'src' / 'orphan.png', src)
    return tmp_path


def run(*argv):
    """Runs the script in this process; returns its exit status (0 when it returned)."""
    try:
        inference_images.main([str(a) for a in argv])
    except SystemExit as exit:
        return exit.code
    return 0


def test_folders_end_to_end(captures, checkpoint, capsys):
    out = captures / 'out'
    status = run('--images-src', captures / 'src', '--images-bgr', captures / 'bgr', '--output-dir', out,
                 '--output-types', 'com', 'pha', 'fgr', 'err', 'ref', '--replacement-background', 'white',
                 '--disable-progress', *model_args(checkpoint))
    assert status == 0
    assert 'orphan.png' in capsys.readouterr().err  # the unpaired source is named

    expected_modes = dict(com='RGBA', pha='L', fgr='RGB', err='L', ref='L', composite='RGB')
    for name, size in SIZES.items():
        images = {}
        for output_type, mode in expected_modes.items():
            with Image.open(out / output_type / f'{name}.png') as image:
                assert (image.format, image.mode, image.size) == ('PNG', mode, size), (output_type, name)
                images[output_type] = np.asarray(image)
        # com carries alpha; the composite shows the replacement background where alpha is 0.
        assert np.array_equal(images['com'][:, :, 3], images['pha'])
        assert (images['composite'][images['pha'] == 0] == 255).all()
        assert set(np.unique(images['ref'])) <= {0, 255}
    assert not (out / 'pha' / 'orphan.png').exists()
    assert not leftovers(out)


def test_synthetic_captures_with_alignment_give_what_the_evaluation_reads(tmp_path, checkpoint):
    """The capture pairs of dataset.synthetic (plates shot with a small camera shift), end to end."""
    from dataset.synthetic import generate
    data = generate(tmp_path / 'data', 1, size=(192, 128), seed=0, captures=3)
    out = tmp_path / 'out'
    assert run('--src', data / 'captures' / 'src', '--bgr', data / 'captures' / 'bgr', '--output-dir', out,
               '--output-types', 'pha', 'fgr', '--preprocess-alignment', '--disable-progress',
               *model_args(checkpoint)) == 0
    # evaluate.py matches predictions and ground truth by relative path without extension.
    for output_type in ['pha', 'fgr']:
        assert sorted(os.listdir(out / output_type)) == sorted(os.listdir(data / 'captures' / output_type))


def test_single_pair_keeps_the_layout_the_evaluation_reads(tmp_path, checkpoint):
    plate = textured_plate(160, 96)
    save_png(tmp_path / 'shot.jpg', composite_subject(plate)[0])
    save_png(tmp_path / 'shot_plate.png', plate)
    assert run('--src', tmp_path / 'shot.jpg', '--bgr', tmp_path / 'shot_plate.png', '--output-dir', tmp_path / 'out',
               '--output-types', 'pha', '--disable-progress', *model_args(checkpoint)) == 0
    assert sorted(os.listdir(tmp_path / 'out')) == ['pha']
    assert os.listdir(tmp_path / 'out' / 'pha') == ['shot.png']


def test_existing_outputs_are_kept_skipped_or_replaced_only_on_request(captures, checkpoint, capsys):
    out = captures / 'out'
    args = ['--src', captures / 'src', '--bgr', captures / 'bgr', '--output-dir', out, '--output-types', 'pha',
            '--disable-progress', *model_args(checkpoint)]
    assert run(*args) == 0
    (out / 'notes.txt').write_text('mine')
    done = out / 'pha' / 'studio' / '0000.png'
    missing = out / 'pha' / '0002.png'
    os.remove(missing)
    os.utime(done, (0, 0))
    capsys.readouterr()

    assert run(*args) == 1
    assert 'already exists' in capsys.readouterr().err and os.stat(done).st_mtime == 0 and not missing.exists()

    assert run(*args, '--skip-existing') == 0
    assert os.stat(done).st_mtime == 0 and missing.exists()

    assert run(*args, '--overwrite') == 0
    assert os.stat(done).st_mtime > 0
    assert (out / 'notes.txt').read_text() == 'mine'  # nothing else in the folder is touched


def test_alignment_falls_back_with_a_warning_on_a_featureless_plate(tmp_path, checkpoint, capsys):
    plate = np.full((96, 160, 3), 128, np.uint8)
    save_png(tmp_path / 'src' / 'a.png', composite_subject(plate)[0])
    save_png(tmp_path / 'bgr' / 'a.png', plate)
    assert run('--src', tmp_path / 'src', '--bgr', tmp_path / 'bgr', '--output-dir', tmp_path / 'out',
               '--preprocess-alignment', '--disable-progress', *model_args(checkpoint)) == 0
    assert 'not aligned' in capsys.readouterr().err
    assert (tmp_path / 'out' / 'pha' / 'a.png').exists()


@pytest.mark.parametrize('plate_kind, message', [('same', 'nearly identical'), ('other scene', 'differs')])
def test_a_suspicious_plate_is_reported(tmp_path, checkpoint, capsys, plate_kind, message):
    plate = textured_plate(160, 96, seed=1)
    src = plate if plate_kind == 'same' else composite_subject(plate)[0]
    save_png(tmp_path / 'src.png', src)
    save_png(tmp_path / 'bgr.png', plate if plate_kind == 'same' else textured_plate(160, 96, seed=9)[::-1].copy())
    assert run('--src', tmp_path / 'src.png', '--bgr', tmp_path / 'bgr.png', '--output-dir', tmp_path / 'out',
               '--output-types', 'pha', '--disable-progress', *model_args(checkpoint)) == 0
    assert message in capsys.readouterr().err


def test_bad_inputs_end_with_a_clear_message(tmp_path, checkpoint, capsys):
    plate = textured_plate(160, 96)
    save_png(tmp_path / 'src' / 'a.png', composite_subject(plate)[0])
    save_png(tmp_path / 'bgr' / 'a.png', plate)
    save_png(tmp_path / 'small' / 'a.png', plate[:64, :128])
    base_weights = tmp_path / 'base.pth'
    torch.save(MattingBase('mobilenetv2').state_dict(), base_weights)
    (tmp_path / 'a_file').write_text('')
    broken_script = tmp_path / 'broken.pt'   # a zip that looks like TorchScript but holds no model
    with zipfile.ZipFile(broken_script, 'w') as archive:
        archive.writestr('broken/code/__torch__.py', '')
        archive.writestr('broken/constants.pkl', b'')
    good = ['--src', tmp_path / 'src', '--bgr', tmp_path / 'bgr', '--disable-progress']

    cases = [
        (['--src', tmp_path / 'nowhere', '--bgr', tmp_path / 'bgr', '--output-dir', tmp_path / 'o1',
          *model_args(checkpoint)], 1, 'nowhere: no such file or folder'),
        (['--src', tmp_path / 'src', '--bgr', tmp_path / 'small', '--output-dir', tmp_path / 'o2',
          *model_args(checkpoint)], 1, 'is 160x96 but its clean plate .*small/a.png is 128x64'),
        ([*good, '--output-dir', tmp_path / 'o3', *model_args(str(base_weights))], 2,
         'MattingBase weights .* MattingRefine'),
        ([*good, '--output-dir', tmp_path / 'o4', *model_args(str(tmp_path / 'missing.pth'))], 2,
         'missing.pth.* does not exist'),
        ([*good, '--output-dir', tmp_path / 'o5', *model_args(str(broken_script))], 2,
         'broken.pt: looks like a TorchScript archive but cannot be loaded'),
        ([*good, '--output-dir', tmp_path / 'a_file', *model_args(checkpoint)], 1, 'a_file: is a file, not a folder'),
        # Unwritable even for root: a folder below a file.
        ([*good, '--output-dir', tmp_path / 'a_file' / 'sub', *model_args(checkpoint)], 1, 'cannot write there'),
    ]
    if os.geteuid() != 0:  # permissions do not stop root
        (tmp_path / 'read_only').mkdir(mode=0o500)
        cases.append(([*good, '--output-dir', tmp_path / 'read_only', *model_args(checkpoint)], 1,
                      'read_only: cannot write there'))
    for argv, status, message in cases:
        assert run(*argv) == status, argv
        err = capsys.readouterr().err
        assert re.search(message, err), err
        assert 'Traceback' not in err
    for folder in ['o1', 'o2', 'o3', 'o4']:
        assert not (tmp_path / folder).exists() or not leftovers(tmp_path / folder)


def test_without_arguments_the_bundled_samples_are_matted_into_a_new_folder(tmp_path):
    """The quick start: `python inference_images.py` with the bundled model and samples."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = os.path.join(root, 'inference_images.py')
    first = subprocess.run([sys.executable, script, '--disable-progress'], cwd=tmp_path, capture_output=True,
                           text=True, timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    assert 'output/samples' in first.stdout
    sources = sorted(os.listdir(os.path.join(root, 'samples', 'src')))
    assert len(sources) >= 3
    for name in sources:
        stem = os.path.splitext(name)[0] + '.png'
        src = Image.open(os.path.join(root, 'samples', 'src', name))
        com = Image.open(tmp_path / 'output' / 'samples' / 'com' / stem)
        pha = np.asarray(Image.open(tmp_path / 'output' / 'samples' / 'pha' / stem))
        assert com.mode == 'RGBA' and com.size == src.size and pha.shape == (src.height, src.width)
        # A matte, not a constant: both background and subject are present.
        assert (pha < 13).mean() > 0.05 and (pha > 242).mean() > 0.05
    second = subprocess.run([sys.executable, script, '--disable-progress'], cwd=tmp_path, capture_output=True,
                            text=True, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    assert os.path.isdir(tmp_path / 'output' / 'samples-2')


def test_without_a_checkpoint_another_backbone_is_refused(capsys):
    """The bundled weights are MobileNetV2: asking for ResNet-50 without weights is a usage error."""
    with pytest.raises(SystemExit) as exit_info:
        inference_images.main(['--model-backbone', 'resnet50'])
    assert exit_info.value.code == 2
    assert '--model-checkpoint is required with --model-backbone resnet50' in capsys.readouterr().err


def test_channels_last_gives_the_same_mattes(captures, busy_checkpoint):
    parser = argparse.ArgumentParser()
    add_model_arguments(parser)
    args = parser.parse_args(model_args(busy_checkpoint) + ['--channels-last', '--eager'])
    weight = load_model(args)[0].backbone.features[0][0].weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()

    mattes = []
    for flags in [['--eager'], ['--eager', '--channels-last']]:  # (the optimized model is channels-last anyway)
        out = captures / f'out{len(flags)}'
        assert run('--images-src', captures / 'src', '--images-bgr', captures / 'bgr', '--output-dir', out,
                   '--output-types', 'pha', 'ref', '--disable-progress', *model_args(busy_checkpoint), *flags) == 0
        mattes.append([np.asarray(Image.open(out / 'pha' / f'{name}.png'), dtype=int) for name in SIZES])
        assert all(np.asarray(Image.open(out / 'ref' / f'{name}.png')).any() for name in SIZES)  # refined
    for name, a, b in zip(SIZES, *mattes):
        assert np.abs(a - b).max() <= 1, name  # the same model; float sums in another order
