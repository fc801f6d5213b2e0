"""common.memory.retain_freed_memory: freed blocks are used again without fresh pages (each fresh page a
page fault). Run in a subprocess each, since the setting holds for the whole process."""
import ast
import json
import os
import platform
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PROBE = r'''
import json, resource, sys
import torch
from common.memory import retain_freed_memory
applied = retain_freed_memory() if sys.argv[1] == 'retain' else None
elements = 48 << 18  # 48 MiB of float32: above the largest block glibc keeps by default (32 MiB)
def frame():
    x = torch.ones(elements)  # every page written
    del x
for _ in range(16):  # the heap grows until freed blocks coalesce into one that holds an aligned block
    frame()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(8):
    frame()
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 8
print(json.dumps(dict(applied=applied, faults=faults, pages=elements * 4 // resource.getpagesize())))
'''

glibc = pytest.mark.skipif(not sys.platform.startswith('linux') or platform.libc_ver()[0] != 'glibc',
                           reason='glibc on Linux only')


def probe(mode, **env):
    result = subprocess.run([sys.executable, '-c', PROBE, mode], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, 'PYTHONPATH': ROOT, **env}, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@glibc
def test_freed_blocks_are_used_again_without_fresh_pages():
    retained = probe('retain')
    assert retained['applied'] is True
    # Without the setting each block is mapped afresh: a fault for every one of its pages.
    assert retained['faults'] < 0.05 * retained['pages'], retained


def test_the_environment_turns_it_off():
    assert probe('retain', BGM_RETAIN_MEMORY='0')['applied'] is False


@pytest.mark.parametrize('script', ['inference_images.py', 'inference_video.py', 'inference_webcam.py',
                                    'inference_speed_test.py', 'train_base.py', 'train_refine.py'])
def test_the_commands_keep_freed_memory(script):
    """Started from the command line (not when their main() is called from Python, as by the tests)."""
    tree = ast.parse(open(os.path.join(ROOT, script)).read())
    main_block = [node for node in tree.body if isinstance(node, ast.If) and '__main__' in ast.unparse(node.test)]
    assert main_block and 'retain_freed_memory()' in ast.unparse(main_block[0].body[0]), script
