"""A trainer started by torchrun joins a process group even as the only process, so that one device
runs the code path of a multi-GPU job (DDP, the collectives, SyncBatchNorm on CUDA).
tests/test_cuda.py runs the same on CUDA, where the group is NCCL's."""
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from dataset.synthetic import generate
from training import distributed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_data(folder) -> str:
    """12 synthetic training samples of 96x96 (and one capture), the data of the training tests."""
    return str(generate(os.path.join(str(folder), 'data'), count=12, size=(96, 96), seed=3, captures=1))


def refine_args(data: str, workdir: str, name: str, device: str, *extra) -> list:
    """train_refine.py arguments for a tiny run on `device`: crops of 92 px (one shape, so that cuDNN
    tunes its kernels once), the backbone at half resolution."""
    return ['--data-path', f'synthetic={data}', '--dataset-name', 'synthetic', '--background-dataset', 'synthetic',
            '--model-backbone', 'mobilenetv2', '--model-name', name, '--device', device, '--batch-size', '2',
            '--num-workers', '0', '--sample-size', '96', '--crop-min', '92', '--crop-max', '96',
            '--model-backbone-scale', '0.5', '--model-refine-sample-pixels', '1600', '--valid-samples', '2',
            '--checkpoint-dir', os.path.join(workdir, 'checkpoint'), '--log-dir', os.path.join(workdir, 'log'),
            '--log-train-loss-interval', '1', *extra]


def train_under_torchrun(data: str, workdir: str, device: str, *extra) -> str:
    """Runs train_refine.py for 2 steps under `torchrun --nproc_per_node 1`; returns its output."""
    command = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '1',
               '--master_port', str(distributed.free_port()), os.path.join(ROOT, 'train_refine.py'),
               *refine_args(data, workdir, 'torchrun', device, '--max-steps', '2', *extra)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=workdir)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return output


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return tiny_data(tmp_path_factory.mktemp('synthetic'))


def test_torchrun_with_one_process_trains_in_a_gloo_group_on_cpu(data, tmp_path):
    output = train_under_torchrun(data, str(tmp_path), 'cpu')
    assert 'Training refine on 1 process(es), gloo process group, cpu' in output, output[-2000:]
    assert os.path.isfile(os.path.join(str(tmp_path), 'checkpoint', 'torchrun', 'epoch-0-iter-2.pth'))


def test_ctrl_c_under_torchrun_saves_a_checkpoint(data, tmp_path):
    """torchrun starts its workers in sessions of their own and passes a Ctrl-C on to them, once: the trainer
    saves and stops as on SIGTERM (torchrun then ends with an error of its own, as it does on any signal). It
    kills them 30 s later: here the flags are read at every step (--log-train-loss-interval 1), so the stop
    comes at the next step, however busy the machine."""
    work = str(tmp_path)
    command = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '1',
               '--master_port', str(distributed.free_port()), os.path.join(ROOT, 'train_refine.py'),
               *refine_args(data, work, 'torchrun', 'cpu', '--max-steps', '1000', '--epoch-end', '200')]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=work,
                               start_new_session=True)
    output = ''
    for line in process.stdout:
        output += line
        if line.startswith('Training refine'):
            time.sleep(2.0)
            os.killpg(process.pid, signal.SIGINT)  # what a Ctrl-C in the terminal does: torchrun's group
            break
    output += process.communicate(timeout=120)[0]
    stopped = re.search(r'Stopped by SIGINT at step (\d+); checkpoint saved', output)
    assert stopped, output[-3000:]
    state = torch.load(os.path.join(work, 'checkpoint', 'torchrun', 'last.pth'), weights_only=True)
    assert state['step'] == int(stopped.group(1))
