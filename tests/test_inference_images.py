"""inference_images.py end to end on synthetic capture pairs, with a small random-weight checkpoint."""
import argparse
import os
import re
import resource
import signal
import subprocess
import sys
import zipfile

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import inference_images
from common.shards import Shard, parse_shard
from broken_files import corrupt_jpeg, png_claiming
from inference_utils import add_model_arguments, load_model, read_image
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
        ([*good, '--output-dir', tmp_path / 'o3', *model_args(str(base_weights))], 1,
         'MattingBase weights .* MattingRefine'),
        ([*good, '--output-dir', tmp_path / 'o4', *model_args(str(tmp_path / 'missing.pth'))], 1,
         'missing.pth.* does not exist'),
        ([*good, '--output-dir', tmp_path / 'o5', *model_args(str(broken_script))], 1,
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
        # One line: no traceback, no usage block.
        assert len([line for line in err.splitlines() if not line.startswith('warning:')]) == 1, err
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


def test_a_failed_run_creates_no_output_folder(tmp_path, monkeypatch, captures, capsys):
    """The default output folder (output/<name>) appears only once the model loaded."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'text.pth').write_text('not weights')
    assert run('--src', captures / 'src', '--bgr', captures / 'bgr', '--disable-progress',
               *model_args(str(tmp_path / 'text.pth'))) == 1
    assert 'not a PyTorch weight file' in capsys.readouterr().err
    assert not (tmp_path / 'output').exists()


@pytest.mark.parametrize('blocker', ['pha', 'pha/studio'])
def test_every_output_folder_is_checked_before_anything_is_computed(captures, checkpoint, capsys, blocker):
    """An output type's folder (or a sub-folder of it) that is a file stops the run before any output
    is written, naming that folder."""
    out = captures / 'out'
    (out / blocker).parent.mkdir(parents=True, exist_ok=True)
    (out / blocker).write_text('in the way')
    status = run('--src', captures / 'src', '--bgr', captures / 'bgr', '--output-dir', out, '--output-types',
                 'com', 'pha', 'fgr', '--disable-progress', *model_args(checkpoint))
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith('warning:')]
    assert status == 1 and len(err) == 1, err
    err = err[0]
    assert str(out / blocker) in err and '.partial' not in err and 'File exists' not in err, err
    written = [os.path.join(root, f) for root, _, files in os.walk(out) for f in files]
    assert written == [str(out / blocker)]


def test_each_image_gets_all_of_its_outputs_or_none(tmp_path, checkpoint, capsys):
    """A corrupt file in a batch stops the run (rightly), and each image has every type or none."""
    plate = textured_plate(160, 96)
    for index in range(6):
        save_png(tmp_path / 'src' / f'{index:04d}.png', composite_subject(plate, 0.3 + 0.08 * index)[0])
        save_png(tmp_path / 'bgr' / f'{index:04d}.png', plate)
    corrupt_jpeg(tmp_path / 'src' / '0004.png', composite_subject(plate)[0])
    out = tmp_path / 'out'
    status = run('--src', tmp_path / 'src', '--bgr', tmp_path / 'bgr', '--output-dir', out, '--output-types', 'com',
                 'fgr', 'pha', '--queue-size', '1', '--disable-progress', *model_args(checkpoint))
    err = capsys.readouterr().err
    assert status == 1 and '0004.png' in err and 'Traceback' not in err, err
    done = {t: sorted(os.listdir(out / t)) for t in ('com', 'fgr', 'pha')}
    assert done['com'] == done['fgr'] == done['pha'], done
    assert not leftovers(out)


def test_an_image_above_the_pixel_limit_is_one_clear_line(tmp_path, checkpoint, capsys, monkeypatch):
    png_claiming(tmp_path / 'src' / 'a.png', 20000, 20000)
    save_png(tmp_path / 'bgr' / 'a.png', textured_plate(160, 96))
    argv = ['--src', tmp_path / 'src', '--bgr', tmp_path / 'bgr', '--output-dir', tmp_path / 'out',
            '--disable-progress', *model_args(checkpoint)]
    assert run(*argv) == 1
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'a.png: 20000x20000' in err and 'BGM_MAX_IMAGE_PIXELS' in err, err
    # Raising the limit lets it through to the next check (the header says 20000x20000, the plate is smaller).
    monkeypatch.setenv('BGM_MAX_IMAGE_PIXELS', '0')
    assert run(*argv) == 1
    assert 'is 20000x20000 but its clean plate' in capsys.readouterr().err


def test_sixteen_bit_grayscale_sources_are_read_at_their_level(tmp_path, checkpoint, capsys):
    """A 16-bit gray PNG was read as all 255 (white): it must read as its 8-bit rendition."""
    plate = cv2.cvtColor(textured_plate(160, 96), cv2.COLOR_RGB2GRAY)
    src = cv2.cvtColor(composite_subject(textured_plate(160, 96))[0], cv2.COLOR_RGB2GRAY)
    cv2.imwrite(str(tmp_path / 'src16.png'), src.astype(np.uint16) * 257)
    assert Image.open(tmp_path / 'src16.png').mode.startswith('I')
    read = read_image(str(tmp_path / 'src16.png'))
    assert read.shape == (96, 160, 3) and np.abs(read.astype(int) - src[:, :, None]).max() <= 1
    save_png(tmp_path / 'plate.png', plate)
    assert run('--src', tmp_path / 'src16.png', '--bgr', tmp_path / 'plate.png', '--output-dir', tmp_path / 'out',
               '--output-types', 'pha', '--disable-progress', *model_args(checkpoint)) == 0
    assert 'nearly identical' not in capsys.readouterr().err and 'differs' not in capsys.readouterr().err


def test_a_full_disk_names_the_file_and_leaves_no_partial_output(tmp_path, checkpoint):
    """Writes that fail half-way (here: a file size limit, as a full disk would) end the run with one
    line naming the file, and no temporary file is left."""
    plate = textured_plate(160, 96)
    save_png(tmp_path / 'src' / 'a.png', composite_subject(plate)[0])
    save_png(tmp_path / 'bgr' / 'a.png', plate)

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write then fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, os.path.join(root, 'inference_images.py'), '--src', tmp_path / 'src',
                             '--bgr', tmp_path / 'bgr', '--output-dir', tmp_path / 'out', '--disable-progress',
                             *model_args(checkpoint)], capture_output=True, text=True, preexec_fn=limit_file_size,
                            timeout=300)
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith('warning:')]
    assert len(lines) == 1 and re.search(r'out/(com|pha|fgr)/a\.png: cannot write it', lines[0]), result.stderr
    assert not leftovers(tmp_path / 'out')
    assert not any(files for _, _, files in os.walk(tmp_path / 'out'))


def test_shards_are_disjoint_complete_and_stable(tmp_path, checkpoint, capsys, monkeypatch):
    """--shard I/N: three tasks write disjoint sets of outputs that together are all of them; a pair's
    shard does not change when other files are added; --shard auto reads the Slurm array variables."""
    plate = textured_plate(64, 64)
    pairs = [f'take{n // 4}/{n:04d}' for n in range(12)]
    for index, name in enumerate(pairs):
        save_png(tmp_path / 'src' / f'{name}.png', composite_subject(plate, 0.3 + 0.03 * index)[0])
        save_png(tmp_path / 'bgr' / f'{name}.png', plate)
    out = tmp_path / 'out'
    common = ['--src', tmp_path / 'src', '--bgr', tmp_path / 'bgr', '--output-dir', out, '--output-types', 'pha',
              '--disable-progress', *model_args(checkpoint)]
    done = []
    for index in (1, 2, 3):
        before = set(written_names(out))
        assert run(*common, '--shard', f'{index}/3') == 0
        done.append(set(written_names(out)) - before)
    assert set().union(*done) == set(pairs) and sum(map(len, done)) == len(pairs)
    assert all(done), done  # these 12 names fall in all three shards

    shards = [Shard(index, 3) for index in (1, 2, 3)]
    names = [f'clip/{n:05d}' for n in range(300)]
    owners = [[shard.holds(name) for shard in shards] for name in names]
    assert all(sum(owner) == 1 for owner in owners)  # each name in exactly one shard
    assert min(sum(owner[i] for owner in owners) for i in range(3)) > 70  # about a third each
    assert [s.select(names) for s in shards] == [s.select(names + ['new/1', 'new/2'])[:len(s.select(names))]
                                                  for s in shards]

    monkeypatch.setenv('SLURM_ARRAY_TASK_ID', '11')
    for name, value in (('SLURM_ARRAY_TASK_MIN', '10'), ('SLURM_ARRAY_TASK_MAX', '12'),
                        ('SLURM_ARRAY_TASK_COUNT', '3')):
        monkeypatch.setenv(name, value)
    assert parse_shard('auto') == Shard(2, 3)
    assert run(*common, '--shard', 'auto', '--skip-existing') == 0  # everything of shard 2 is done already
    assert 'already done' in capsys.readouterr().out
    for bad, message in (('0/3', 'between 1 and 3'), ('4/3', 'between 1 and 3'), ('two', 'expected I/N')):
        assert run(*common, '--shard', bad) == 1
        assert message in capsys.readouterr().err
    monkeypatch.setenv('SLURM_ARRAY_TASK_MAX', '20')  # --array=10,15,20: not consecutive
    assert run(*common, '--shard', 'auto') == 1
    assert 'not consecutive' in capsys.readouterr().err


def written_names(out):
    folder = out / 'pha'
    return [os.path.splitext(os.path.relpath(os.path.join(root, f), folder))[0]
            for root, _, files in os.walk(folder) for f in files] if folder.exists() else []


def test_a_shard_count_below_one_is_named_with_the_expected_form(tmp_path, capsys):
    """--shard 1/0 and 0/0 said 'the shard index must be between 1 and 1'."""
    for bad in ('1/0', '0/0', '2/-3'):
        assert run('--shard', bad, '--output-dir', tmp_path / 'out') == 1
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert f'--shard {bad}: the shard count N must be at least 1; expected I/N with 1 <= I <= N, e.g. 2/8' in err
        assert 'between 1 and 1' not in err
    assert run('--shard', '5/4', '--output-dir', tmp_path / 'out') == 1
    assert 'the shard index I must be between 1 and 4; expected I/N' in capsys.readouterr().err
    assert not (tmp_path / 'out').exists()


def test_a_batch_mattes_every_readable_pair_and_names_each_skipped_file(tmp_path, checkpoint, capsys):
    # Issue 28: the run stopped at the first unreadable image, after the good ones before it.
    names = ['0000', '0001', '0002', '0003', '0004', '0005']
    for index, name in enumerate(names):
        plate = textured_plate(160, 96, seed=index)
        save_png(tmp_path / 'src' / f'{name}.png', composite_subject(plate)[0])
        save_png(tmp_path / 'bgr' / f'{name}.png', plate)
    corrupt_jpeg(tmp_path / 'src' / '0001.jpg', composite_subject(textured_plate(160, 96))[0])  # data cut short
    os.remove(tmp_path / 'src' / '0001.png')
    (tmp_path / 'bgr' / '0002.png').write_bytes(b'')                                      # an empty plate
    save_png(tmp_path / 'bgr' / '0003.png', textured_plate(128, 64))                       # another size
    os.rename(tmp_path / 'src' / '0004.png', tmp_path / 'src' / '0004.heic')              # not an image extension
    argv = ['--src', tmp_path / 'src', '--bgr', tmp_path / 'bgr', '--output-types', 'pha', '--disable-progress',
            *model_args(checkpoint)]
    assert run(*argv, '--output-dir', tmp_path / 'out') == 1
    err = capsys.readouterr().err.splitlines()
    skipped = [line for line in err if line.startswith('warning: skipped')]
    assert len(skipped) == 4, err
    for name, reason in [('0001', r'src/0001\.jpg: not a readable image'), ('0002', r'bgr/0002\.png: not a readable'),
                         ('0003', r'src/0003\.png is 160x96 but its clean plate .*bgr/0003\.png is 128x64'),
                         ('0004', r'src/0004\.heic: \.heic is not an image extension')]:
        assert any(re.match(rf'warning: skipped {name}: .*{reason}', line) for line in skipped), (name, err)
    assert not any('bgr/0004.png' in line for line in err), err  # the source is named, not its plate
    assert re.fullmatch(r'inference_images\.py: error: 2 of 6 image pairs matted; 4 skipped \(named above\): '
                        r'0001, 0002, 0003, 0004', err[-1]), err
    assert sorted(written_names(tmp_path / 'out')) == ['0000', '0005']
    assert not leftovers(tmp_path / 'out')

    # --on-error stop: today's behaviour, the first unreadable pair ends the run (its header is read first).
    assert run(*argv, '--output-dir', tmp_path / 'stopped', '--on-error', 'stop') == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and 'src/0004.heic' in err[0] and 'skipped' not in err[0], err


def test_the_help_says_what_on_error_does(capsys):
    with pytest.raises(SystemExit):
        inference_images.main(['--help'])
    text = ' '.join(capsys.readouterr().out.split())
    assert "--on-error {skip,stop}" in text and "'skip' (default)" in text and "'stop' ends the run" in text


def test_skip_existing_redoes_a_truncated_or_wrong_sized_output(captures, checkpoint):
    """--skip-existing keeps only outputs that decode fully at the source's size; the rest is redone."""
    out = captures / 'out'
    args = ['--src', captures / 'src', '--bgr', captures / 'bgr', '--output-dir', out, '--output-types', 'pha',
            '--disable-progress', *model_args(checkpoint)]
    assert run(*args) == 0
    kept, truncated, small = (out / 'pha' / 'studio' / '0000.png', out / 'pha' / 'studio' / 'take2' / '0001.png',
                             out / 'pha' / '0002.png')
    sizes = {path: Image.open(path).size for path in (truncated, small)}
    truncated.write_bytes(truncated.read_bytes()[:len(truncated.read_bytes()) // 2])
    Image.new('L', (8, 8)).save(small)
    os.utime(kept, (0, 0))

    assert run(*args, '--skip-existing') == 0
    assert os.stat(kept).st_mtime == 0
    for path in (truncated, small):
        with Image.open(path) as image:
            image.load()
            assert image.size == sizes[path]
