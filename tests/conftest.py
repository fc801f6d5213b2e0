import os

import pytest
import torch

from model import MattingRefine

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # on the path by pytest.ini's pythonpath
SHARED = os.path.join(os.path.dirname(ROOT), 'shared')

# Two cores on CI: more threads only add contention between the test processes.
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope='session')
def shared_dir():
    """The reference material beside the project (../shared); tests that need it skip without it."""
    if not os.path.isdir(os.path.join(SHARED, 'reference')):
        pytest.skip(f"{SHARED}/reference is absent: the reference material lies beside the project's checkout")
    return SHARED


@pytest.fixture(scope='session')
def checkpoint(tmp_path_factory):
    """A random-weight MattingRefine (MobileNetV2) state_dict, as the official checkpoints are."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp('checkpoint') / 'mattingrefine_mobilenetv2.pth'
    torch.save(MattingRefine('mobilenetv2').state_dict(), path)
    return str(path)


@pytest.fixture(scope='session')
def busy_checkpoint(tmp_path_factory):
    """MattingRefine weights whose error prediction is positive, so that the refiner has work
    (random weights predict an error of 0 in about half the pixels, which are then not refined)."""
    torch.manual_seed(0)
    model = MattingRefine('mobilenetv2')
    with torch.no_grad():
        model.decoder.conv4.bias[4] = 0.5
    path = str(tmp_path_factory.mktemp('weights') / 'refine.pth')
    torch.save(model.state_dict(), path)
    return path
