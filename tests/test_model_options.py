"""The model options of the inference scripts: the backbone read from the checkpoint when
--model-backbone is not given."""
import argparse

import pytest
import torch

from inference.model import add_model_arguments, load_model
from model import CheckpointError, MattingRefine


def load(*options):
    parser = argparse.ArgumentParser()
    add_model_arguments(parser, checkpoint_required=False)
    return load_model(parser.parse_args(['--device', 'cpu', '--eager', *options]))[0]


def test_the_backbone_is_read_from_the_checkpoint(tmp_path):
    torch.manual_seed(0)
    path = str(tmp_path / 'resnet50.pth')
    torch.save(MattingRefine('resnet50').state_dict(), path)
    model = load('--model-checkpoint', path)
    assert type(model.backbone).__name__ == 'ResNetEncoder'
    with pytest.raises(CheckpointError, match='resnet50'):  # an explicit other backbone is still refused
        load('--model-checkpoint', path, '--model-backbone', 'mobilenetv2')
    assert type(load().backbone).__name__ == 'MobileNetV2Encoder'  # no checkpoint: the default
