"""What the project claims under Slurm, on a real one-node cluster (see slurm_cluster.py).

The jobs are the sbatch examples of scripts/slurm/, unchanged, submitted as a CPU-only cluster
forces: `--gpus-per-node=0` (or `--gpus-per-task=0`) on the sbatch command line and `--device cpu`
among the script's arguments, with the task and core counts of this small node and tiny synthetic data
(a later argument overrides the example's own). Each task uses one core and one thread.
"""
import glob
import os
import re
import shutil
import sys
import tempfile

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dataset.synthetic import generate
from slurm_cluster import LocalSlurm, find_lines, missing_requirements, read_output
from test_inference_utils import image_pair_folders

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE_EXAMPLE = os.path.join(ROOT, 'scripts', 'slurm', 'train_base_one_node.sbatch')
ARRAY_EXAMPLE = os.path.join(ROOT, 'scripts', 'slurm', 'matte_images_array.sbatch')
NODE_EXAMPLE = os.path.join(ROOT, 'scripts', 'slurm', 'matte_images_node.sbatch')
TWO_TASKS = ['--gpus-per-node=0', '--nodes=1', '--ntasks-per-node=2', '--cpus-per-task=1']

pytestmark = pytest.mark.skipif(missing_requirements() is not None, reason=str(missing_requirements()))


@pytest.fixture(scope='module')
def cluster():
    root = tempfile.mkdtemp(prefix='bgm-slurm-', dir='/tmp')  # short paths: munge's socket lives here
    slurm = LocalSlurm(root)
    try:
        yield slurm.start()
    finally:
        slurm.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope='module')
def job_env():
    """The jobs' environment: this Python first on PATH (the examples call `python`), one thread."""
    return {'PATH': os.path.dirname(sys.executable) + os.pathsep + os.environ.get('PATH', ''),
            'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1', 'PYTHONUNBUFFERED': '1'}


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp('slurm-data')
    generate(str(folder / 'data'), count=12, size=(96, 96), seed=3, captures=0)
    return str(folder / 'data')


def training_args(data, work, name, *extra):
    """Arguments after the example's own: tiny data, CPU, gloo; the example's data set, backbone and
    initialisation are overridden."""
    return ['--data-path', f'synthetic={data}', '--dataset-name', 'synthetic', '--background-dataset', 'synthetic',
            '--model-backbone', 'mobilenetv2', '--model-pretrain-initialization', '', '--model-name', name,
            '--device', 'cpu', '--batch-size', '4', '--num-workers', '0', '--sample-size', '64',
            '--crop-min', '48', '--crop-max', '64', '--valid-samples', '2', '--log-valid-interval', '1000',
            '--log-train-images-interval', '1000', '--log-train-loss-interval', '1',
            '--checkpoint-dir', os.path.join(work, 'checkpoint'), '--log-dir', os.path.join(work, 'log'),
            '--keep-last', 'all', *extra]


def submit_training(cluster, job_env, work, name, *arguments, data):
    output = os.path.join(work, f'{name}.out')
    job = cluster.sbatch(BASE_EXAMPLE, *training_args(data, work, name, *arguments),
                         options=[*TWO_TASKS, f'--output={output}', f'--job-name={name}'], cwd=ROOT, env=job_env)
    return job, output


def losses(work, name):
    """{step: total loss} from every TensorBoard event file of a run (a resumed run adds a file)."""
    events = EventAccumulator(os.path.join(work, 'log', name), size_guidance={'scalars': 0})
    events.Reload()
    return {event.step: event.value for event in events.Scalars('train/loss/total')}


def wait_for_file(cluster, job, pattern, timeout=120):
    """Waits until a file matching `pattern` (a glob) exists, while the job runs."""
    cluster.wait(job, lambda j: glob.glob(pattern) or j['JobState'] not in ('PENDING', 'RUNNING'), timeout,
                 f'{pattern} to appear')
    assert glob.glob(pattern), f'the job ended before writing {pattern}'


def final_checksums(text):
    """{rank: digest} from the lines every rank prints when training ends."""
    return dict(re.findall(r'rank (\d+) of \d+: final parameters sha1 ([0-9a-f]+)', text))


def test_two_tasks_end_with_identical_weights_and_a_time_limit_signal_requeues_and_resumes_exactly(
        cluster, job_env, data, tmp_path):
    """Uninterrupted: two srun tasks (gloo) end with the same weights. Interrupted by the time-limit
    signal the examples ask for (USR1): it saves, requeues itself, and the requeued run resumes at the
    exact step with the same losses as the uninterrupted run."""
    work = str(tmp_path)
    steps = ['--max-steps', '14', '--checkpoint-interval', '4', '--epoch-end', '100']
    reference, reference_out = submit_training(cluster, job_env, work, 'reference', *steps, data=data)
    interrupted, interrupted_out = submit_training(cluster, job_env, work, 'interrupted', *steps, data=data)

    job = cluster.wait_ended(reference, timeout=240)
    text = read_output(reference_out)
    assert job['JobState'] == 'COMPLETED', text
    checksums = final_checksums(text)
    assert set(checksums) == {'0', '1'} and len(set(checksums.values())) == 1, text

    wait_for_file(cluster, interrupted, os.path.join(work, 'checkpoint', 'interrupted', 'epoch-*-iter-4.pth'))
    cluster.signal(interrupted, 'USR1')
    cluster.start_now(interrupted)
    job = cluster.wait_ended(interrupted, timeout=240)
    text = read_output(interrupted_out)
    assert job['JobState'] == 'COMPLETED' and job['Restarts'] == '1', text + cluster.job_log(interrupted)
    stopped = [int(s) for s in re.findall(r'Stopped by SIGUSR1 at step (\d+)', text)]
    resumed = [int(s) for s in re.findall(r'Resumed from \S+ at epoch \d+, step (\d+)', text)]
    assert len(stopped) == 1 and resumed == stopped and 4 <= stopped[0] < 14, text
    assert losses(work, 'interrupted') == pytest.approx(losses(work, 'reference'), rel=1e-6)
    assert sorted(losses(work, 'interrupted')) == list(range(1, 15))
    assert final_checksums(text)['0'] == checksums['0']  # the same weights as the uninterrupted run


def test_scancel_ends_the_job_for_good_after_saving(cluster, job_env, data, tmp_path):
    """A user's scancel: the trainer saves last.pth and the job ends CANCELLED; it does not come back."""
    work = str(tmp_path)
    job_id, output = submit_training(cluster, job_env, work, 'cancelled', '--max-steps', '400', '--epoch-end', '1000',
                                     '--checkpoint-interval', '3', data=data)
    wait_for_file(cluster, job_id, os.path.join(work, 'checkpoint', 'cancelled', 'epoch-*-iter-3.pth'))
    cluster.cancel(job_id)
    job = cluster.wait_ended(job_id, timeout=90)
    text = read_output(output)
    assert job['JobState'] == 'CANCELLED' and job['Restarts'] == '0', text
    stopped = re.findall(r'Stopped by SIGTERM at step (\d+)', text)
    assert stopped and 'requeue' not in ''.join(find_lines(text, 'Stopped by')).lower(), text
    state = torch.load(os.path.join(work, 'checkpoint', 'cancelled', 'last.pth'), weights_only=True)
    assert state['step'] == int(stopped[0])
    # Slurm would hold a requeued job for two minutes; a cancelled one stays ended.
    assert cluster.job(job_id)['JobState'] == 'CANCELLED' and cluster.job(job_id)['Restarts'] == '0'


def test_a_stop_on_an_epochs_last_step_leaves_that_epochs_file(cluster, job_env, tmp_path):
    """With one step per epoch every stop falls on an epoch's last step: after the requeued run, every
    finished epoch has its epoch-N.pth."""
    work = str(tmp_path)
    data = str(tmp_path / 'data')
    generate(data, count=5, size=(96, 96), seed=4, captures=0)  # 4 training samples: one batch of 4
    job_id, output = submit_training(cluster, job_env, work, 'epochs', '--epoch-end', '40', '--valid-samples', '1',
                                     data=data)
    folder = os.path.join(work, 'checkpoint', 'epochs')
    wait_for_file(cluster, job_id, os.path.join(folder, 'epoch-1.pth'))
    cluster.signal(job_id, 'USR1')
    cluster.start_now(job_id)
    job = cluster.wait_ended(job_id, timeout=240)
    text = read_output(output)
    assert job['JobState'] == 'COMPLETED', text + cluster.job_log(job_id)
    assert re.search(r'Stopped by SIGUSR1 at step \d+', text), text
    assert sorted(f for f in os.listdir(folder) if f.startswith('epoch-')) == sorted(f'epoch-{n}.pth' for n in range(40))


def test_a_plain_python_start_in_a_two_task_allocation_warns(cluster, job_env, data, tmp_path):
    work = str(tmp_path)
    script = tmp_path / 'plain.sbatch'
    script.write_text('#!/bin/bash\npython train_base.py "$@"\n')
    output = str(tmp_path / 'plain.out')
    job_id = cluster.sbatch(str(script), *training_args(data, work, 'plain', '--max-steps', '1'),
                            options=['--ntasks=2', '--cpus-per-task=1', f'--output={output}'], cwd=ROOT, env=job_env)
    job = cluster.wait_ended(job_id, timeout=120)
    text = read_output(output)
    assert job['JobState'] == 'COMPLETED', text
    assert find_lines(text, r'warning: .*2 tasks.*one process.*srun'), text


def test_torchrun_inside_a_job_warns_and_trains(cluster, job_env, data, tmp_path):
    """torchrun under srun trains, and says why one srun task per GPU is the way under Slurm."""
    work = str(tmp_path)
    script = tmp_path / 'torchrun.sbatch'
    script.write_text('#!/bin/bash\nsrun python -m torch.distributed.run --standalone --nproc_per_node 1 '
                      'train_base.py "$@"\n')
    output = str(tmp_path / 'torchrun.out')
    job_id = cluster.sbatch(str(script), *training_args(data, work, 'torchrun', '--max-steps', '1'),
                            options=['--ntasks=1', '--cpus-per-task=1', f'--output={output}'], cwd=ROOT, env=job_env)
    job = cluster.wait_ended(job_id, timeout=120)
    text = read_output(output)
    assert job['JobState'] == 'COMPLETED', text + cluster.job_log(job_id)
    assert find_lines(text, r'warning: torchrun inside a Slurm job.*SIGUSR1.*srun task per GPU'), text
    assert final_checksums(text).keys() == {'0'}, text


def test_a_failed_job_is_not_requeued(cluster, job_env, tmp_path):
    work = str(tmp_path)
    job_id, output = submit_training(cluster, job_env, work, 'failed', data=str(tmp_path / 'no-data'))
    job = cluster.wait_ended(job_id, timeout=120)
    text = read_output(output)
    assert job['JobState'] == 'FAILED' and job['Restarts'] == '0', text
    assert find_lines(text, r'train_base.py: error: .*no-data'), text


def matting_args(tmp_path, checkpoint):
    return ['--src', str(tmp_path / 'src'), '--bgr', str(tmp_path / 'bgr'), '--output-dir', str(tmp_path / 'out'),
            '--output-types', 'pha', '--device', 'cpu', '--model-backbone', 'mobilenetv2', '--model-checkpoint',
            checkpoint, '--model-backbone-scale', '0.5', '--model-refine-sample-pixels', '2000']


def written_pairs(out):
    return sorted(os.path.splitext(os.path.relpath(os.path.join(root, f), out / 'pha'))[0]
                  for root, _, files in os.walk(out / 'pha') for f in files)


def test_the_tasks_of_a_job_step_matte_disjoint_shards_that_cover_every_image(cluster, job_env, tmp_path):
    """The 4-GPU node example with 2 tasks: srun gives each task its shard (SLURM_PROCID of
    SLURM_STEP_NUM_TASKS)."""
    names = [f'take{n // 5}/{n:04d}' for n in range(10)]
    checkpoint = image_pair_folders(tmp_path, names)
    output = str(tmp_path / 'node.out')
    job_id = cluster.sbatch(NODE_EXAMPLE, *matting_args(tmp_path, checkpoint),
                            options=['--ntasks-per-node=2', '--gpus-per-task=0', '--cpus-per-task=1',
                                     f'--output={output}'], cwd=ROOT, env=job_env)
    job = cluster.wait_ended(job_id, timeout=180)
    text = read_output(output)
    assert job['JobState'] == 'COMPLETED', text + cluster.job_log(job_id)
    counts = [int(n) for n in re.findall(r'shard [12]/2: (\d+) image pair', text)]
    assert len(counts) == 2 and sum(counts) == len(names) and all(counts), text
    assert written_pairs(tmp_path / 'out') == sorted(names)


def test_a_job_array_mattes_disjoint_shards_that_cover_every_image(cluster, job_env, tmp_path):
    names = [f'take{n // 5}/{n:04d}' for n in range(15)]
    checkpoint = image_pair_folders(tmp_path, names)
    out = tmp_path / 'out'
    output = str(tmp_path / 'array-%a.out')
    job_id = cluster.sbatch(ARRAY_EXAMPLE, '--src', str(tmp_path / 'src'), '--bgr', str(tmp_path / 'bgr'),
                            '--output-dir', str(out), '--output-types', 'pha', '--device', 'cpu',
                            '--model-backbone', 'mobilenetv2', '--model-checkpoint', checkpoint,
                            '--model-backbone-scale', '0.5', '--model-refine-sample-pixels', '2000',
                            options=['--array=0-2', '--gpus-per-task=0', '--cpus-per-task=1', f'--output={output}'],
                            cwd=ROOT, env=job_env)
    jobs = cluster.wait_all_ended(job_id, timeout=180)
    texts = [read_output(output.replace('%a', str(n))) for n in range(3)]
    assert [job['JobState'] for job in jobs] == ['COMPLETED'] * 3, texts
    counts = [int(re.search(r'shard \d/3: (\d+) image pair', text).group(1)) for text in texts]
    written = sorted(os.path.splitext(os.path.relpath(os.path.join(root, f), out / 'pha'))[0]
                     for root, _, files in os.walk(out / 'pha') for f in files)
    assert written == sorted(names) and sum(counts) == len(names) and all(counts), (counts, texts)
