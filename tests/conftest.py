import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), 'shared')
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# Two cores on CI: more threads only add contention between the test processes.
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope='session')
def shared_dir():
    """The reference material beside the project (../shared); tests that need it skip without it."""
    if not os.path.isdir(os.path.join(SHARED, 'reference')):
        pytest.skip(f"{SHARED}/reference is absent: the reference material lies beside the project's checkout")
    return SHARED
