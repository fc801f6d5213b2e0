import importlib
import os
import random
import re
import struct
import tempfile
import zipfile

import numpy as np
import pytest
import torch
import torchvision

from model import CheckpointError, MattingBase, MattingRefine, load_checkpoint, load_matched_state_dict
from broken_files import flip_bits, swap_blocks
from inference.model import DEMO_CHECKPOINT
from model.checkpoint import (KNOWN_SHA256, check_weight_file, detect_backbone, is_torchscript_archive,
                              load_imagenet_backbone, load_weights_file, read_state_dict)
from tolerance import assert_close

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def refine_weights():
    torch.manual_seed(0)
    return MattingRefine('mobilenetv2').state_dict()


def assert_same_weights(model, state_dict):
    own = model.state_dict()
    assert all(torch.equal(own[k], state_dict[k]) for k in own)


def test_official_state_dict_loads_into_refine_and_base(tmp_path, refine_weights):
    path = str(tmp_path / 'pytorch_mobilenetv2.pth')
    torch.save(refine_weights, path)
    refine = MattingRefine('mobilenetv2')
    assert load_checkpoint(refine, path) == 'state_dict'
    assert_same_weights(refine, refine_weights)
    base = MattingBase('mobilenetv2')
    load_checkpoint(base, path)
    assert_same_weights(base, refine_weights)


def test_training_checkpoint_and_ddp_prefix(tmp_path, refine_weights):
    path = str(tmp_path / 'epoch-0.pth')
    torch.save({'model': {'module.' + k: v for k, v in refine_weights.items()}, 'epoch': 3, 'step': 10,
                'optimizer': {'state': {}, 'param_groups': []}}, path)
    model = MattingRefine('mobilenetv2')
    assert load_checkpoint(model, path) == 'training checkpoint'
    assert_same_weights(model, refine_weights)


def test_torchscript_archive_is_named_as_such(tmp_path):
    path = str(tmp_path / 'model.pt')
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), path)
    with pytest.raises(CheckpointError, match='TorchScript'):
        load_checkpoint(MattingRefine('mobilenetv2'), path)


def test_weights_of_another_backbone_are_named(tmp_path):
    path = str(tmp_path / 'pytorch_resnet50.pth')
    torch.save(MattingRefine('resnet50').state_dict(), path)
    with pytest.raises(CheckpointError, match='resnet50 backbone.*built with mobilenetv2'):
        load_checkpoint(MattingRefine('mobilenetv2'), path)


def test_backbone_is_read_from_shapes():
    for backbone in ['resnet50', 'resnet101', 'mobilenetv2', 'mobilenetv3']:
        assert detect_backbone(MattingBase(backbone).state_dict()) == backbone


def test_base_weights_need_permission_to_start_a_refine_model(tmp_path):
    torch.manual_seed(0)
    base_weights = MattingBase('mobilenetv2').state_dict()
    path = str(tmp_path / 'base.pth')
    torch.save(base_weights, path)
    with pytest.raises(CheckpointError, match='no refiner'):
        load_checkpoint(MattingRefine('mobilenetv2'), path)
    model = MattingRefine('mobilenetv2')
    load_checkpoint(model, path, allow_missing_refiner=True)
    assert torch.equal(model.state_dict()['decoder.conv4.weight'], base_weights['decoder.conv4.weight'])


class RunsCode:
    """Unpickling this runs a command: what a malicious weight file does."""

    def __reduce__(self):
        return (os.system, ('touch ' + os.path.join(tempfile.gettempdir(), 'bgm-pickle-ran'),))


def broken_files(folder):
    """{name: (path, message the error must match)}: the weight files a user can get wrong."""
    torch.manual_seed(0)
    files = {}
    good = os.path.join(folder, 'good.pth')
    torch.save(MattingRefine('mobilenetv2').state_dict(), good)
    data = open(good, 'rb').read()

    def write(name, content, message):
        path = os.path.join(folder, name)
        with open(path, 'wb') as f:
            f.write(content)
        files[name] = (path, message)

    write('text.pth', b'not a checkpoint\n', 'not a PyTorch weight file')
    write('empty.pth', b'', 'is empty')
    write('truncated.pth', data[:len(data) // 2], 'truncated or corrupt')
    legacy = os.path.join(folder, 'legacy.pth')
    torch.save({'a': torch.ones(1000)}, legacy, _use_new_zipfile_serialization=False)
    write('legacy-truncated.pth', open(legacy, 'rb').read()[:2000], 'truncated or corrupt')
    torch.save({'model': RunsCode()}, os.path.join(folder, 'malicious.pth'))
    files['malicious.pth'] = (os.path.join(folder, 'malicious.pth'), 'Python objects other than tensors')
    torch.save([1, 2, 3], os.path.join(folder, 'list.pth'))
    files['list.pth'] = (os.path.join(folder, 'list.pth'), 'no state_dict')
    return files


def test_unreadable_files_are_clear_errors(tmp_path):
    marker = os.path.join(tempfile.gettempdir(), 'bgm-pickle-ran')
    if os.path.exists(marker):
        os.remove(marker)
    for name, (path, message) in broken_files(str(tmp_path)).items():
        with pytest.raises(CheckpointError, match=message) as error:
            read_state_dict(path)
        text = str(error.value)
        assert name in text and '\n' not in text, text
        # Internals a user cannot act on, or advice to turn off the safe loader, are not relayed.
        assert 'weights_only' not in text and 'miniz' not in text, text
    assert not os.path.exists(marker)  # nothing in the malicious file ran
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        read_state_dict(str(tmp_path / 'missing.pth'))


def test_load_matched_state_dict_reports_counts(refine_weights):
    model = MattingRefine('mobilenetv2')
    partial = dict(refine_weights)
    partial['backbone.features.0.0.weight'] = torch.zeros(32, 3, 3, 3)  # wrong shape: skipped
    del partial['refiner.conv4.bias']
    loaded, total = load_matched_state_dict(model, partial, print_stats=False)
    assert (loaded, total) == (len(refine_weights) - 2, len(refine_weights))
    assert torch.equal(model.state_dict()['decoder.conv1.weight'], refine_weights['decoder.conv1.weight'])


@pytest.mark.parametrize('backbone', ['mobilenetv2', 'resnet50'])
def test_deeplabv3_weights_load_with_their_names(tmp_path, backbone):
    torch.manual_seed(0)
    source = MattingBase(backbone).state_dict()
    vainf = {}
    for key, value in source.items():
        if key.startswith('aspp.'):
            key = 'classifier.classifier.0.' + key[len('aspp.'):]
        elif key.startswith('backbone.features.'):
            index, rest = key[len('backbone.features.'):].split('.', 1)
            index = int(index)
            key = (f'backbone.low_level_features.{index}.{rest}' if index < 4
                   else f'backbone.high_level_features.{index - 4}.{rest}')
        elif key.startswith('decoder.'):
            continue  # DeepLabV3 has no such decoder
        vainf[key] = value
    path = str(tmp_path / 'best_deeplabv3.pth')
    # As VainF's save_ckpt writes it: best_score is a numpy scalar (np.nanmean of the class IoUs).
    torch.save({'model_state': vainf, 'cur_itrs': 1000, 'best_score': np.nanmean([0.7, 0.8])}, path)
    model = MattingBase(backbone)
    loaded, total = model.load_pretrained_deeplabv3_state_dict(path, print_stats=False)
    assert loaded == len(vainf)
    assert torch.equal(model.state_dict()['aspp.project.0.weight'], source['aspp.project.0.weight'])


def test_imagenet_initialisation_from_a_local_file(tmp_path):
    torch.manual_seed(0)
    imagenet = torchvision.models.resnet50(weights=None).state_dict()
    path = str(tmp_path / 'resnet50-11ad3fa6.pth')
    torch.save(imagenet, path)
    model = MattingBase('resnet50')
    loaded, _ = load_imagenet_backbone(model, path, print_stats=False)
    assert loaded == len(imagenet) - 2  # everything but fc.weight and fc.bias
    first = model.state_dict()['backbone.conv1.weight']
    assert torch.equal(first[:, :3], imagenet['conv1.weight'] / 2) and torch.equal(first[:, 3:], first[:, :3])
    assert torch.equal(model.state_dict()['backbone.layer4.2.conv3.weight'], imagenet['layer4.2.conv3.weight'])
    with pytest.raises(FileNotFoundError, match='nowhere.pth'):
        load_imagenet_backbone(model, os.path.join(str(tmp_path), 'nowhere.pth'))


def test_release_weights_joins_a_base_with_another_refiner(tmp_path, refine_weights):
    import scripts.release_weights as release_weights
    torch.manual_seed(1)
    base_path, refine_path = str(tmp_path / 'base.pth'), str(tmp_path / 'refine.pth')
    base = MattingBase('mobilenetv2').state_dict()
    torch.save({'model': base, 'step': 5}, base_path)
    torch.save(refine_weights, refine_path)
    out = str(tmp_path / 'joined.pth')
    release_weights.main([base_path, out, '--refiner-from', refine_path, '--fp16'])
    model = MattingRefine('mobilenetv2')
    load_checkpoint(model, out)   # strict: every key of MattingRefine is there
    joined = model.state_dict()
    for key, value in joined.items():
        expected = (refine_weights if key.startswith('refiner.') else base)[key]
        assert torch.equal(value, expected.half().to(value.dtype) if value.is_floating_point() else expected), key

    with pytest.raises(SystemExit):   # a MattingBase file has no refiner to give
        release_weights.main([base_path, str(tmp_path / 'other.pth'), '--refiner-from', base_path])
    assert not os.path.exists(tmp_path / 'other.pth')


def test_release_weights_averages_several_checkpoints(tmp_path):
    import scripts.release_weights as release_weights
    paths, state_dicts = [], []
    for seed in range(3):
        torch.manual_seed(seed)
        state_dicts.append(MattingRefine('mobilenetv2').state_dict())
        paths.append(str(tmp_path / f'{seed}.pth'))
        torch.save({'model': state_dicts[-1]}, paths[-1])
    out = str(tmp_path / 'mean.pth')
    release_weights.main([*paths, out])
    mean = torch.load(out, weights_only=True)
    key = 'refiner.conv1.weight'
    assert_close(mean[key], sum(sd[key] for sd in state_dicts) / 3, rel=1e-6, what=key)
    assert not torch.allclose(mean[key], state_dicts[0][key])

    torch.save(MattingBase('mobilenetv2').state_dict(), tmp_path / 'base.pth')
    with pytest.raises(SystemExit):   # other tensors: nothing to average
        release_weights.main([paths[0], str(tmp_path / 'base.pth'), str(tmp_path / 'bad.pth')])
    assert not os.path.exists(tmp_path / 'bad.pth')


# --------------------------------------------------------------------------- damaged files (issue 28)

def entry_spans(path):
    """{entry name: (start, end) of its stored bytes} and the start of the central directory of the zip
    archive that torch.save wrote (its entries are stored, not compressed)."""
    data = open(path, 'rb').read()
    spans = {}
    with zipfile.ZipFile(path) as archive:
        for entry in archive.infolist():
            name_length, extra_length = struct.unpack('<HH', data[entry.header_offset + 26:entry.header_offset + 30])
            start = entry.header_offset + 30 + name_length + extra_length
            spans[entry.filename] = (entry.header_offset + 30 + name_length, start, start + entry.compress_size)
    return spans, data.find(b'PK\x01\x02')


def test_flipped_bits_in_the_tensor_data_are_a_clear_error_naming_the_file(tmp_path, refine_weights):
    good = tmp_path / 'good.pth'
    torch.save(refine_weights, good)
    spans, _ = entry_spans(good)
    tensors = [(start, end) for name, (_, start, end) in spans.items() if '/data/' in name]
    damaged = tmp_path / 'damaged.pth'
    damaged.write_bytes(flip_bits(good.read_bytes(), 10, random.Random(28), tensors))
    # torch.load takes the file and gives other weights: what loaded silently before the CRC-32s were checked
    loaded = torch.load(damaged, weights_only=True)
    assert any(not torch.equal(loaded[k], refine_weights[k]) for k in refine_weights)
    with pytest.raises(CheckpointError, match=r"damaged\.pth.*does not match its CRC-32.*copy it again") as error:
        load_checkpoint(MattingRefine('mobilenetv2'), str(damaged))
    assert '\n' not in str(error.value)
    with pytest.raises(CheckpointError, match=r"damaged\.pth"):  # the loader of training and initialisation too
        load_weights_file(str(damaged))


def test_the_bundled_weights_are_checked_against_their_sha256(tmp_path):
    check_weight_file(DEMO_CHECKPOINT)  # KNOWN_SHA256 holds the digest of the file shipped in weights/
    name = os.path.basename(DEMO_CHECKPOINT)
    assert name in KNOWN_SHA256
    # One bit flipped in the padding that aligns an entry (a local header's extra field): every CRC-32
    # still matches and torch.load gives the same weights, but the file is not the one released.
    spans, _ = entry_spans(DEMO_CHECKPOINT)
    extra_start, data_start, _ = spans[next(name for name in spans if name.endswith('/data/0'))]
    assert data_start - extra_start > 8
    copy = tmp_path / name
    padding = [(extra_start + 4, data_start)]
    copy.write_bytes(flip_bits(open(DEMO_CHECKPOINT, 'rb').read(), 1, random.Random(0), padding))
    with pytest.raises(CheckpointError, match=rf"{re.escape(name)}.*sha256 is .*not that of the released") as error:
        read_state_dict(str(copy))
    assert '\n' not in str(error.value)


def central_directory_damage(data):
    """The two mutations of a zip archive that torch.load and zipfile report without naming the file:
    a byte of an entry's name in the central directory that is not UTF-8 (torch flags names as UTF-8), and
    the central directory's first block swapped with a block of tensor data."""
    directory = data.find(b'PK\x01\x02')
    name_byte = directory + 46 + 10  # a central directory entry's name starts 46 bytes in
    not_utf8 = data[:name_byte] + b'\xfc' + data[name_byte + 1:]
    return {'not-utf8.pth': not_utf8, 'swapped.pth': swap_blocks(data, 5000, directory, 64)}


def test_a_damaged_zip_directory_is_one_line_naming_the_file(tmp_path, refine_weights):
    good = tmp_path / 'good.pth'
    torch.save(refine_weights, good)
    for name, damaged in central_directory_damage(good.read_bytes()).items():
        path = tmp_path / name
        path.write_bytes(damaged)
        assert not is_torchscript_archive(str(path))  # was zipfile.BadZipFile, a traceback
        with pytest.raises(CheckpointError, match=rf"{name}.*truncated or corrupt: its zip directory cannot be read"):
            read_state_dict(str(path))


@pytest.mark.parametrize('script', ['inference_images', 'inference_video', 'export_onnx', 'export_torchscript'])
def test_every_script_names_a_damaged_checkpoint_in_one_line(tmp_path, refine_weights, capsys, script):
    good = tmp_path / 'good.pth'
    torch.save(refine_weights, good)
    samples = os.path.join(ROOT, 'samples')
    source = os.path.join(samples, 'src', sorted(os.listdir(os.path.join(samples, 'src')))[0])
    arguments = {
        'inference_images': ['--output-dir', tmp_path / 'out', '--device', 'cpu'],
        'inference_video': ['--video-src', source, '--bgr-first-frames', '1', '--output-dir', tmp_path / 'out',
                            '--device', 'cpu'],
        'export_onnx': ['--output', tmp_path / 'model.onnx', '--model-refine-patch-crop-method', 'roi_align'],
        'export_torchscript': ['--output', tmp_path / 'model.pt'],
    }[script]
    main = importlib.import_module(script).main
    for name, damaged in central_directory_damage(good.read_bytes()).items():
        path = tmp_path / name
        path.write_bytes(damaged)
        with pytest.raises(SystemExit) as exit:
            main([str(a) for a in [*arguments, '--model-checkpoint', path]])
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if 'warning' not in line.lower()]
        assert exit.value.code == 1 and 'Traceback' not in err, err
        assert len(lines) == 1 and name in lines[0] and 'zip directory' in lines[0], err
