import contextlib
import io
import os
import re
import random
import resource
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import train_base
import train_refine
from common.errors import UserError
from dataset.synthetic import generate
from training import distributed
from training.engine import Stage, Trainer, lr_factor
from training.losses import base_loss
from tolerance import assert_close

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The helper scripts of tests/helpers/ import the project: run them with it on the path.
PROJECT_ENV = {**os.environ, 'PYTHONPATH': ROOT + os.pathsep + os.environ.get('PYTHONPATH', '')}


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp('synthetic')
    generate(str(folder / 'data'), count=12, size=(96, 96), seed=3, captures=1)
    return str(folder / 'data')


def base_args(data, workdir, name='run', *extra):
    return ['--data-path', f'synthetic={data}', '--dataset-name', 'synthetic', '--background-dataset', 'synthetic',
            '--model-backbone', 'mobilenetv2', '--model-name', name, '--device', 'cpu', '--batch-size', '2',
            '--num-workers', '0', '--sample-size', '64', '--crop-min', '48', '--crop-max', '64',
            '--valid-samples', '2', '--checkpoint-dir', os.path.join(workdir, 'checkpoint'),
            '--log-dir', os.path.join(workdir, 'log'), '--log-train-loss-interval', '1', *extra]


def load_state(workdir, name='run'):
    return torch.load(os.path.join(workdir, 'checkpoint', name, 'last.pth'), weights_only=True)


def test_base_then_refine_write_checkpoints_and_tensorboard_events(data, tmp_path):
    work = str(tmp_path)
    train_base.main(base_args(data, work, 'base', '--max-steps', '3', '--log-train-images-interval', '2',
                              '--log-valid-interval', '3'))
    state = load_state(work, 'base')
    assert state['step'] == 3 and set(state['optimizer']['param_groups'][0]) >= {'lr', 'name'}
    assert os.path.isfile(os.path.join(work, 'checkpoint', 'base', 'epoch-0-iter-3.pth'))

    events = EventAccumulator(os.path.join(work, 'log', 'base'), size_guidance={'images': 0, 'scalars': 0})
    events.Reload()
    scalars = events.Tags()['scalars']
    for tag in ['train/loss/total', 'train/loss/pha_sobel_l1', 'train/loss/err_mse', 'train/lr/backbone',
                'train/images_per_s', 'valid/loss', 'valid/pha_sad', 'valid/pha_mse']:
        assert tag in scalars, tag
    assert [e.step for e in events.Scalars('train/loss/total')] == [1, 2, 3]
    assert {'train/src', 'train/pha', 'train/com', 'train/err'} <= set(events.Tags()['images'])

    weights = os.path.join(work, 'checkpoint', 'base', 'epoch-0-iter-3.pth')
    train_refine.main(base_args(data, work, 'refine', '--model-last-checkpoint', weights, '--max-steps', '2',
                                '--sample-size', '96', '--crop-min', '64', '--crop-max', '96',
                                '--model-backbone-scale', '0.5', '--model-refine-sample-pixels', '1600'))
    refine = load_state(work, 'refine')
    base = torch.load(weights, weights_only=True)
    assert refine['step'] == 2 and any(k.startswith('refiner.') for k in refine['model'])
    # The refine run started from the base weights: the first layer moved only by two small steps.
    first = 'backbone.features.0.0.weight'
    assert (refine['model'][first] - base[first]).abs().max() < 1e-3
    assert not torch.equal(refine['model'][first], base[first])


def test_loss_falls_when_overfitting_a_tiny_set(data):
    torch.manual_seed(0)
    args = train_base.get_args_parser().parse_args(
        base_args(data, '/unused'))
    train_set, _ = train_base.STAGE.datasets(args)
    pha, fgr, bgr = (torch.stack(t) for t in zip(train_set[0], train_set[1]))
    model = train_base.STAGE.build_model(args).train()
    optimizer = train_base.STAGE.optimizer(model, args)
    src = fgr * pha + bgr * (1 - pha)
    losses = []
    for _ in range(30):
        terms, _ = train_base.STAGE.losses(model, src, bgr, pha, fgr)
        optimizer.zero_grad()
        terms['total'].backward()
        optimizer.step()
        losses.append(float(terms['total'].detach()))
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.parametrize('schedule', [[], ['--lr-schedule', 'cosine', '--lr-decay-steps', '6',
                                             '--lr-warmup-steps', '2']], ids=['constant', 'cosine'])
def test_resume_continues_exactly(data, tmp_path, schedule):
    straight, resumed = str(tmp_path / 'straight'), str(tmp_path / 'resumed')
    # 5 steps per epoch, so the run also crosses an epoch boundary.
    train_base.main(base_args(data, straight, 'run', '--max-steps', '6', '--deterministic', *schedule))
    train_base.main(base_args(data, resumed, 'run', '--max-steps', '3', '--deterministic', *schedule))
    assert load_state(resumed)['step'] == 3
    train_base.main(base_args(data, resumed, 'run', '--max-steps', '6', '--deterministic', '--resume', 'auto',
                              *schedule))
    a, b = load_state(straight), load_state(resumed)
    assert a['step'] == b['step'] == 6 and a['epoch'] == b['epoch'] == 1
    for key in a['model']:
        assert torch.equal(a['model'][key], b['model'][key]), key
    assert torch.equal(a['optimizer']['state'][0]['exp_avg'], b['optimizer']['state'][0]['exp_avg'])
    # The last step (index 5) ran at the rate the schedule gives it.
    expected = train_base.DEFAULTS['lr']['backbone'] * (lr_factor(5, 'cosine', 6, 2) if schedule else 1)
    assert b['optimizer']['param_groups'][0]['lr'] == pytest.approx(expected)


def test_learning_rate_schedules():
    assert [lr_factor(step, 'constant', 10, 0) for step in (0, 5, 9)] == [1, 1, 1]
    assert [lr_factor(step, 'constant', 10, 4) for step in (0, 1, 3, 9)] == [0.25, 0.5, 1, 1]
    cosine = [lr_factor(step, 'cosine', 10, 0) for step in range(12)]
    assert cosine[0] == 1 and cosine[5] == pytest.approx(0.5) and cosine[10] == cosine[11] == pytest.approx(0)
    assert all(a > b for a, b in zip(cosine[:10], cosine[1:11]))
    assert lr_factor(0, 'cosine', 10, 2) == pytest.approx(0.5)


def test_sigterm_saves_a_checkpoint_that_resumes(data, tmp_path):
    work = str(tmp_path)
    command = [sys.executable, os.path.join(ROOT, 'train_base.py'),
               *base_args(data, work, 'run', '--max-steps', '1000')]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=work)
    output = ''
    for line in process.stdout:
        output += line
        if line.startswith('Training base'):
            time.sleep(1.0)
            process.send_signal(signal.SIGTERM)
            break
    output += process.communicate(timeout=120)[0]
    assert process.returncode == 0, output
    assert 'Stopped by SIGTERM' in output
    stopped_at = load_state(work)['step']
    assert 1 <= stopped_at < 1000

    train_base.main(base_args(data, work, 'run', '--max-steps', str(stopped_at + 2), '--resume', 'auto'))
    assert load_state(work)['step'] == stopped_at + 2


def test_two_process_ddp_ends_with_identical_weights(data, tmp_path):
    out = str(tmp_path)
    command = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2',
               '--master_port', str(distributed.free_port()),
               os.path.join(ROOT, 'tests', 'helpers', 'ddp_train.py'), out,
               *base_args(data, out, 'ddp', '--max-steps', '2', '--batch-size', '4')]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=out, env=PROJECT_ENV)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    info = [open(os.path.join(out, f'rank{r}.txt')).read() for r in range(2)]
    assert info == ['2 2 DistributedDataParallel'] * 2
    rank0, rank1 = (torch.load(os.path.join(out, f'rank{r}.pth'), weights_only=True) for r in range(2))
    initial = train_base.MattingBase('mobilenetv2').state_dict()
    # Parameters are kept identical by DDP; BatchNorm running statistics are per rank (DDP broadcasts
    # rank 0's before each forward), so only parameters are compared.
    parameters = [name for name, _ in train_base.MattingBase('mobilenetv2').named_parameters()]
    for key in parameters:
        assert torch.equal(rank0[key], rank1[key]), key
    assert not torch.equal(rank0['decoder.conv4.weight'], initial['decoder.conv4.weight'])


def test_nonfinite_losses_are_skipped_then_stop_the_run(data, tmp_path):
    def nan_losses(model, src, bgr, true_pha, true_fgr):
        terms, outputs = train_base.losses(model, src, bgr, true_pha, true_fgr)
        terms['total'] = terms['total'] * float('nan')
        return terms, outputs

    stage = Stage(**{**train_base.STAGE.__dict__, 'losses': nan_losses})
    parser = train_base.get_args_parser()
    args = parser.parse_args(base_args(data, str(tmp_path), 'nan', '--max-nonfinite-steps', '3'))
    trainer = Trainer(stage, args, distributed.DistributedContext())
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    with pytest.raises(UserError, match='3 consecutive steps had a non-finite loss'):
        trainer.fit()
    # Read at every step here (--log-train-loss-interval 1): the third stopped the run after it.
    assert trainer.nonfinite_steps == 3 and trainer.step == 3
    assert all(torch.equal(before[name], p) for name, p in trainer.model.named_parameters())
    # The optimizer's state as it was made by the first (undone) step: moments 0, step counts 0.
    assert all(float(state['step']) == 0 and not state['exp_avg'].any() and not state['exp_avg_sq'].any()
               for state in trainer.optimizer.state.values())


def test_a_nonfinite_step_is_undone_exactly(data, tmp_path):
    """The step of a non-finite loss is undone on the device: the parameters, Adam's moments and (once the
    host has read the flags) its step counts are those of the step before."""
    calls = 0

    def nan_at_the_second_step(model, src, bgr, true_pha, true_fgr):
        nonlocal calls
        calls += 1
        terms, outputs = train_base.losses(model, src, bgr, true_pha, true_fgr)
        if calls == 2:
            terms['total'] = terms['total'] * float('nan')
        return terms, outputs

    stage = Stage(**{**train_base.STAGE.__dict__, 'losses': nan_at_the_second_step})
    args = train_base.get_args_parser().parse_args(base_args(data, str(tmp_path), 'skip'))
    trainer = Trainer(stage, args, distributed.DistributedContext())
    batches = iter(trainer.loader)
    states = []
    for _ in range(2):
        trainer.train_step(next(batches))
        trainer.read_flags()
        states.append(({name: p.detach().clone() for name, p in trainer.model.named_parameters()},
                       {i: {k: v.clone() for k, v in state.items()} for i, state in
                        enumerate(trainer.optimizer.state.values())}))
    assert trainer.nonfinite_steps == 1 and trainer.step == 2
    (params, optimizer), (params_after, optimizer_after) = states
    assert all(torch.equal(params[name], params_after[name]) for name in params)
    assert all(torch.equal(optimizer[i][k], optimizer_after[i][k]) for i in optimizer for k in optimizer[i])
    assert float(optimizer_after[0]['step']) == 1


def test_batch_size_must_divide_by_the_world_size(data, tmp_path):
    parser = train_base.get_args_parser()
    args = parser.parse_args(base_args(data, str(tmp_path), 'odd', '--batch-size', '5'))
    with pytest.raises(UserError, match='--batch-size 5 does not divide by the 2 processes'):
        Trainer(train_base.STAGE, args, distributed.DistributedContext(rank=0, world_size=2))
    args = parser.parse_args(base_args(data, str(tmp_path), 'one', '--batch-size', '2'))
    with pytest.raises(UserError, match='BatchNorm batches of 1 image'):
        Trainer(train_base.STAGE, args, distributed.DistributedContext(rank=0, world_size=2))


def test_rank_variables_from_torchrun_and_slurm():
    torchrun = distributed.launcher_environment({'RANK': '3', 'WORLD_SIZE': '8', 'LOCAL_RANK': '1',
                                                 'MASTER_ADDR': 'node1', 'MASTER_PORT': '1234'})
    assert torchrun == dict(rank=3, world_size=8, local_rank=1, master_addr='node1', master_port='1234')
    job = {'SLURM_PROCID': '5', 'SLURM_NTASKS': '8', 'SLURM_LOCALID': '1',
           'SLURM_JOB_NODELIST': 'gpu[07-09,12]', 'SLURM_JOB_ID': '4242'}
    slurm = distributed.launcher_environment({**job, 'SLURM_STEP_ID': '0'})
    assert slurm == dict(rank=5, world_size=8, local_rank=1, master_addr='gpu07', master_port=str(15000 + 4242))
    # The batch script itself (no srun step) is one process: a plain start, not rank 5 of 8.
    assert distributed.launcher_environment(job) is None
    assert distributed.launcher_environment({'SLURM_PROCID': '0', 'SLURM_NTASKS': '1'}) is None
    assert distributed.first_slurm_host('node12,gpu3') == 'node12'


def test_missing_data_is_a_clear_error(tmp_path):
    assert 'nowhere' in user_error(base_args(str(tmp_path / 'nowhere'), str(tmp_path)))


def test_losses_are_float32_under_autocast():
    """Sobel is a convolution: autocast must not run it (or any loss term) in low precision."""
    torch.manual_seed(0)
    pha, fgr = torch.rand(2, 1, 16, 16), torch.rand(2, 3, 16, 16)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        terms = base_loss(pha.bfloat16(), fgr.bfloat16(), torch.rand(2, 1, 16, 16).bfloat16(), pha * 0.9, fgr)
    assert all(term.dtype == torch.float32 for term in terms.values()), {k: v.dtype for k, v in terms.items()}


def test_channels_last_trains_the_same_model(data, tmp_path):
    """--channels-last changes the memory layout only. The first step's loss agrees to a few percent:
    train-mode BatchNorm over these tiny batches (the ASPP pooling branch normalises two values)
    amplifies rounding differences; in eval mode the outputs agree to float32 rounding."""
    losses = {}
    for name, extra in (('plain', []), ('channels-last', ['--channels-last'])):
        train_base.main(base_args(data, str(tmp_path), name, '--max-steps', '2', '--deterministic', *extra))
        events = EventAccumulator(os.path.join(str(tmp_path), 'log', name))
        events.Reload()
        losses[name] = [e.value for e in events.Scalars('train/loss/total')]
    assert losses['plain'][0] == pytest.approx(losses['channels-last'][0], rel=0.05)
    weights = load_state(str(tmp_path), 'channels-last')['model']
    first = 'backbone.features.0.0.weight'
    assert weights[first].is_contiguous(memory_format=torch.channels_last) and not weights[first].is_contiguous()

    plain, channels_last = (train_base.MattingBase('mobilenetv2').eval() for _ in range(2))
    plain.load_state_dict(weights)
    channels_last.load_state_dict(weights)
    channels_last.to(memory_format=torch.channels_last)
    src, bgr = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        expected = plain(src, bgr)
        outputs = channels_last(*(t.contiguous(memory_format=torch.channels_last) for t in (src, bgr)))
    for name, a, b in zip(['pha', 'fgr', 'err', 'hid'], expected, outputs):
        assert_close(b, a, rel=1e-5, what=name)


# ---------------------------------------------------------------- checkpoints, stops and user errors

@pytest.fixture(scope='module')
def trained(data, tmp_path_factory):
    """A run stopped by --max-steps 2, a checkpoint step: checkpoint/run/ holds last.pth and
    epoch-0-iter-2.pth. Tests work on copies (copy_run)."""
    work = str(tmp_path_factory.mktemp('trained'))
    train_base.main(base_args(data, work, 'run', '--max-steps', '2', '--checkpoint-interval', '2'))
    return work


def copy_run(trained, tmp_path) -> str:
    work = str(tmp_path / 'work')
    shutil.copytree(os.path.join(trained, 'checkpoint'), os.path.join(work, 'checkpoint'))
    return work


def run_folder(workdir, name='run'):
    return os.path.join(workdir, 'checkpoint', name)


def user_error(argv, main=train_base.main) -> str:
    """The end of a trainer on a user's mistake: one line on stderr, `prog: error: message`, and exit
    status 1, not a traceback."""
    stderr = io.StringIO()
    with pytest.raises(SystemExit) as stop, contextlib.redirect_stderr(stderr):
        main(argv)
    message = stderr.getvalue()
    assert stop.value.code == 1 and message.count('\n') == 1 and ': error: ' in message, message
    return message.strip()


def test_unusable_files_are_one_line_errors(data, trained, tmp_path):
    state = os.path.join(run_folder(trained), 'last.pth')
    weights = os.path.join(run_folder(trained), 'epoch-0-iter-2.pth')
    truncated, garbage = str(tmp_path / 'truncated.pth'), str(tmp_path / 'garbage.pth')
    with open(state, 'rb') as src, open(truncated, 'wb') as dst:
        dst.write(src.read(100_000))
    with open(garbage, 'wb') as dst:
        dst.write(random.Random(0).randbytes(50_000))
    missing = str(tmp_path / 'deeplabv3.pth')
    cases = [
        (['--resume', truncated], [f'--resume {truncated}: cannot read it as a training checkpoint']),
        (['--resume', garbage], [f'--resume {garbage}: cannot read it as a training checkpoint']),
        (['--resume', state, '--model-backbone', 'mobilenetv3'],
         [f'--resume {state}: it holds a mobilenetv2 model but this run builds --model-backbone mobilenetv3']),
        (['--model-last-checkpoint', truncated], [truncated]),
        (['--model-last-checkpoint', weights, '--model-backbone', 'mobilenetv3'], [weights, 'mobilenetv2']),
        (['--model-pretrain-initialization', missing], [f'--model-pretrain-initialization {missing}: no such file']),
        (['--model-pretrain-initialization', garbage], [f'--model-pretrain-initialization {garbage}: cannot read']),
    ]
    for extra, expected in cases:
        # --max-steps 1: the loading errors come first, but a run that went on would end soon.
        message = user_error(base_args(data, str(tmp_path / 'work'), 'run', '--max-steps', '1', *extra))
        assert all(part in message for part in expected), (extra, message)


@pytest.mark.parametrize('option', ['--checkpoint-dir', '--log-dir'])
def test_an_unwritable_output_folder_is_refused_before_training(data, tmp_path, capsys, option):
    # A file where a folder is expected: refused as root too (a read-only folder is not, for root).
    blocker = tmp_path / 'file'
    blocker.write_text('not a folder')
    argv = base_args(data, str(tmp_path), 'run', '--max-steps', '1', option, str(blocker / 'out'))
    message = user_error(argv)
    assert f"{option} {blocker / 'out'}: cannot write to {blocker / 'out' / 'run'}" in message
    assert 'Training base' not in capsys.readouterr().out


@pytest.mark.parametrize('limit_mb, failed', [(1, 'epoch-0-iter-3.pth'), (40, 'last.pth')],
                         ids=['weights-fail', 'state-fails'])
def test_a_full_disk_is_one_line_naming_the_file_and_the_last_state_survives(data, trained, tmp_path, limit_mb,
                                                                             failed):
    """The weights file (20 MB here) is written before the training state (60 MB): at a 1 MB limit the
    weights fail, at 40 MB they are written and the state fails. Either way the previous last.pth
    stays as it was and no temporary is left."""
    work = copy_run(trained, tmp_path)
    folder = run_folder(work)
    before = load_state(work)

    def limit_file_size():
        # What a full disk does to a write (it fails with an OSError), without root or a small file system.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_mb << 20, limit_mb << 20))

    command = [sys.executable, os.path.join(ROOT, 'train_base.py'),
               *base_args(data, work, 'run', '--max-steps', '3', '--checkpoint-interval', '3', '--resume', 'auto')]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=work,
                            preexec_fn=limit_file_size)
    assert result.returncode == 1, result.stderr[-3000:]
    assert 'Traceback' not in result.stderr, result.stderr[-3000:]
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith(f'train_base.py: error: cannot write checkpoint {os.path.join(folder, failed)}: ')
    after = load_state(work)
    assert after['step'] == before['step'] == 2
    assert all(torch.equal(after['model'][k], before['model'][k]) for k in before['model'])
    assert not [name for name in os.listdir(folder) if '.tmp' in name]
    if failed == 'last.pth':
        weights = torch.load(os.path.join(folder, 'epoch-0-iter-3.pth'), weights_only=True)
        assert not torch.equal(weights['decoder.conv4.weight'], before['model']['decoder.conv4.weight'])
    else:
        assert not os.path.exists(os.path.join(folder, 'epoch-0-iter-3.pth'))


def assert_weights_of_state(path, state):
    weights = torch.load(path, weights_only=True)
    assert weights.keys() == state['model'].keys()
    assert all(torch.equal(weights[k], state['model'][k]) for k in weights), path


@pytest.mark.parametrize('signal_name, step, due', [('SIGTERM', 1, 'epoch-0-iter-1.pth'),
                                                    ('SIGUSR1', 2, 'epoch-0.pth')],
                         ids=['checkpoint-step', 'last-step-of-the-last-epoch'])
def test_a_stop_on_a_scheduled_step_still_writes_its_weights(data, tmp_path, signal_name, step, due):
    """One epoch of 2 steps, a checkpoint every step: the signal arrives during step 1 (a checkpoint
    step) or step 2 (the last of the last epoch). The stop writes that step's weights; the resumed run
    writes the rest, or finds nothing left to train."""
    work = str(tmp_path)
    argv = base_args(data, work, 'run', '--batch-size', '4', '--checkpoint-interval', '1', '--epoch-end', '1')
    command = [sys.executable, os.path.join(ROOT, 'tests', 'helpers', 'signal_at_step.py'), str(step), signal_name,
               *argv]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=work, env=PROJECT_ENV)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f'Stopped by {signal_name} at step {step};' in result.stdout
    state = load_state(work)
    assert state['step'] == step
    assert_weights_of_state(os.path.join(run_folder(work), due), state)

    train_base.main(argv + ['--resume', 'auto'])
    assert load_state(work)['step'] == 2
    assert sorted(os.listdir(run_folder(work))) == ['epoch-0-iter-1.pth', 'epoch-0-iter-2.pth', 'epoch-0.pth',
                                                    'last.pth']
    assert_weights_of_state(os.path.join(run_folder(work), 'epoch-0.pth'), load_state(work))


def test_resume_writes_the_weights_its_step_was_due_to_leave(data, trained, tmp_path):
    """A run killed between writing a step's training state and its weights file (as when the state was
    written first): the restored weights are that step's, so the resumed run writes the file."""
    work = copy_run(trained, tmp_path)
    weights = os.path.join(run_folder(work), 'epoch-0-iter-2.pth')
    os.remove(weights)
    train_base.main(base_args(data, work, 'run', '--max-steps', '2', '--checkpoint-interval', '2',
                              '--resume', 'auto'))
    assert_weights_of_state(weights, load_state(work))


def test_resuming_a_finished_run_trains_nothing(data, trained, tmp_path, capsys):
    work = copy_run(trained, tmp_path)
    files, before = sorted(os.listdir(run_folder(work))), load_state(work)
    train_base.main(base_args(data, work, 'run', '--max-steps', '2', '--checkpoint-interval', '2',
                              '--resume', 'auto'))
    out = capsys.readouterr().out
    assert 'The run is complete: it reached --max-steps 2' in out and 'Training base' not in out
    assert sorted(os.listdir(run_folder(work))) == files
    after = load_state(work)
    assert after['step'] == 2 and all(torch.equal(after['model'][k], before['model'][k]) for k in before['model'])


def test_a_new_run_removes_the_temporaries_of_interrupted_writes(data, trained, tmp_path):
    work = copy_run(trained, tmp_path)
    folder = run_folder(work)
    files = sorted(os.listdir(folder))
    stale = ['last.pth.tmp.4242', 'epoch-0-iter-2.pth.tmp.77', 'epoch-3.pth.tmp']
    others = ['notes.pth.tmp.1', 'last.pth.tmp.old', 'last.pth.bak']  # not names this trainer writes
    elsewhere = os.path.join(work, 'checkpoint', 'other-run', 'last.pth.tmp.4242')
    os.makedirs(os.path.dirname(elsewhere))
    for path in [os.path.join(folder, name) for name in stale + others] + [elsewhere]:
        with open(path, 'wb') as f:
            f.write(b'partial')
    train_base.main(base_args(data, work, 'run', '--max-steps', '2', '--checkpoint-interval', '2',
                              '--resume', 'auto'))
    assert sorted(os.listdir(folder)) == sorted(files + others)
    assert os.path.exists(elsewhere)


def test_a_plain_start_of_several_processes_reaches_them_and_reports_their_errors(data, tmp_path):
    """--nproc 2 spawns the processes, as a plain start on a machine with several GPUs does: the stage
    must pickle, and a user's mistake met in them ends the run with its one-line message."""
    missing = str(tmp_path / 'deeplabv3.pth')
    command = [sys.executable, os.path.join(ROOT, 'train_base.py'),
               *base_args(data, str(tmp_path), 'run', '--batch-size', '4', '--nproc', '2',
                          '--model-pretrain-initialization', missing)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
    assert result.returncode == 1, result.stderr[-3000:]
    assert 'Traceback' not in result.stderr, result.stderr[-3000:]
    assert f'train_base.py: error: --model-pretrain-initialization {missing}: no such file' in result.stderr


def test_slurm_starts_that_do_not_do_what_they_seem_are_named():
    """A plain python in a job of several tasks runs one process; torchrun under Slurm loses its agent to
    the time-limit signal. Both are warned about; srun tasks and starts outside Slurm are not."""
    job = {'SLURM_JOB_ID': '7', 'SLURM_NTASKS': '4', 'SLURM_PROCID': '0'}
    assert re.search('4 tasks.*without srun.*one process', distributed.launch_problem(job))
    assert distributed.launch_problem({**job, 'SLURM_STEP_ID': '0'}) is None  # an srun task
    torchrun = {'SLURM_JOB_ID': '7', 'SLURM_STEP_ID': '0', 'SLURM_NTASKS': '1', 'TORCHELASTIC_RUN_ID': 'x',
                'RANK': '1', 'WORLD_SIZE': '2'}
    assert re.search('torchrun.*SIGUSR1.*srun task per GPU', distributed.launch_problem(torchrun))
    assert distributed.launch_problem({'RANK': '0', 'WORLD_SIZE': '2', 'TORCHELASTIC_RUN_ID': 'x'}) is None
    assert distributed.launch_problem({}) is None


def test_device_names_are_those_of_inference():
    """--device takes auto, cpu, cuda and cuda:N, as the inference scripts do; a GPU named by its index
    serves one process only."""
    parser = train_base.get_args_parser()
    for name in ('auto', 'cpu', 'cuda', 'cuda:1'):
        assert parser.parse_args(base_args('/unused', '/unused') + ['--device', name]).device == name
    with pytest.raises(SystemExit):
        parser.parse_args(base_args('/unused', '/unused') + ['--device', 'gpu0'])
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match='CUDA is not available'):
            distributed.setup(dict(rank=0, world_size=1, local_rank=0), torch.device('cuda', 1))
    else:
        with pytest.raises(UserError, match='names one GPU, but the job has 2 processes'):
            distributed.setup(dict(rank=0, world_size=2, local_rank=0), torch.device('cuda', 0))


# ---------------------------------------------------------------- Ctrl-C

def test_ctrl_c_saves_a_checkpoint_that_resumes_exactly(data, tmp_path):
    """SIGINT (Ctrl-C) stops the run as SIGTERM does: at the step where the flags are read, with a checkpoint
    from which the resumed run ends with the weights and optimizer state of an uninterrupted one."""
    straight, stopped = str(tmp_path / 'straight'), str(tmp_path / 'stopped')
    argv = ['--max-steps', '4', '--deterministic']

    def train(*arguments):  # each run in a fresh process, as the stopped one: the same threads and settings
        result = subprocess.run([sys.executable, os.path.join(ROOT, 'train_base.py'), *arguments], capture_output=True,
                                text=True, timeout=300, cwd=str(tmp_path), env=PROJECT_ENV)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    train(*base_args(data, straight, 'run', *argv))
    command = [sys.executable, os.path.join(ROOT, 'tests', 'helpers', 'signal_at_step.py'), '2', 'SIGINT',
               *base_args(data, stopped, 'run', *argv)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=str(tmp_path), env=PROJECT_ENV)
    assert result.returncode == 0 and 'Traceback' not in result.stderr, result.stdout[-3000:] + result.stderr[-3000:]
    assert 'Ctrl-C: stopping within 10 steps' in result.stdout and 'press Ctrl-C again to abort' in result.stdout
    assert 'Stopped by SIGINT at step 2; checkpoint saved' in result.stdout, result.stdout
    assert load_state(stopped)['step'] == 2

    train(*base_args(data, stopped, 'run', *argv, '--resume', 'auto'))
    a, b = load_state(straight), load_state(stopped)
    assert a['step'] == b['step'] == 4
    assert all(torch.equal(a['model'][key], b['model'][key]) for key in a['model'])
    assert all(torch.equal(a['optimizer']['state'][i]['exp_avg'], b['optimizer']['state'][i]['exp_avg'])
               for i in a['optimizer']['state'])


def start_in_a_terminal_group(argv, workdir):
    """A trainer started as a shell starts a command: in a process group that a Ctrl-C reaches as a whole."""
    command = [sys.executable, os.path.join(ROOT, 'train_base.py'), *argv]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=workdir,
                            start_new_session=True)


@pytest.mark.parametrize('extra', [['--num-workers', '1'], ['--nproc', '2', '--batch-size', '4']],
                         ids=['one-process-and-a-loader-worker', 'two-spawned-processes'])
def test_ctrl_c_in_a_terminal_saves_and_exits_130(data, tmp_path, extra):
    """Ctrl-C reaches every process of the terminal's group (DataLoader workers, the launcher of spawned
    processes): the run saves, says so and exits with 130 (128 + SIGINT), without a traceback."""
    work = str(tmp_path)
    process = start_in_a_terminal_group(base_args(data, work, 'run', '--max-steps', '1000', *extra), work)
    output = ''
    for line in process.stdout:
        output += line
        if line.startswith('Training base'):
            time.sleep(2.0)
            os.killpg(process.pid, signal.SIGINT)
            break
    output += process.communicate(timeout=120)[0]
    assert process.returncode == 130 and 'Traceback' not in output, output[-3000:]
    stopped_at = int(re.search(r'Stopped by SIGINT at step (\d+); checkpoint saved', output).group(1))
    assert load_state(work)['step'] == stopped_at


def test_a_second_ctrl_c_aborts_at_once_in_one_line(data, tmp_path, capsys, monkeypatch):
    """Two presses during one step: no save, one line on stderr and status 130."""
    def losses_then_two_interrupts(*inputs):
        if trained['steps'] == 1:
            os.kill(os.getpid(), signal.SIGINT)  # taken: the run will stop at its next flag check
            os.kill(os.getpid(), signal.SIGINT)  # aborts here
        trained['steps'] += 1
        return train_base.losses(*inputs)

    trained = {'steps': 0}
    monkeypatch.setattr(train_base.STAGE, 'losses', losses_then_two_interrupts)
    with pytest.raises(SystemExit) as stop:
        train_base.main(base_args(data, str(tmp_path), 'run', '--max-steps', '5', '--log-train-loss-interval', '100'))
    assert stop.value.code == 130
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        ': interrupted by Ctrl-C; nothing was saved since the last checkpoint')
    assert not os.path.exists(os.path.join(run_folder(str(tmp_path)), 'last.pth'))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_second_ctrl_c_raises_at_once_and_a_slurm_signal_keeps_its_meaning():
    from training.stopping import StopRequest
    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.signal == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.signal == signal.SIGUSR1  # the requeue that the time-limit warning asks for stays


# ---------------------------------------------------------------- progress

def progress_lines(stderr: str) -> list:
    return [line for line in stderr.splitlines() if re.search(r'\d+/\d+ \[', line)]


def test_progress_is_one_bar_for_the_run_in_plain_lines_outside_a_terminal(data, tmp_path, capsys, monkeypatch):
    """One bar over the whole run (step k of N, ETA, steps/s, loss), not one per epoch; where stderr is not a
    terminal (a log file, Slurm's output) it is plain lines, one every LINE_INTERVAL_S seconds and at the end;
    a resumed run starts at its step."""
    work = str(tmp_path)
    train_base.main(base_args(data, work, 'run', '--max-steps', '7'))  # 5 steps per epoch: two epochs
    stderr = capsys.readouterr().err
    assert '\r' not in stderr
    lines = progress_lines(stderr)
    assert len(lines) == 2, stderr  # the start and the end: the run took less than 30 s
    assert lines[0].startswith('epoch 0/7:   0% 0/7 [') and lines[1].startswith('epoch 1/7: 100% 7/7 [')
    assert re.search(r'step/s|s/step', lines[1]) and 'loss=' in lines[1], lines[1]

    from training import progress
    monkeypatch.setattr(progress, 'LINE_INTERVAL_S', 0)
    train_base.main(base_args(data, work, 'run', '--max-steps', '9', '--resume', 'auto'))
    lines = progress_lines(capsys.readouterr().err)
    assert [re.search(r'(\d+)/9 \[', line).group(1) for line in lines][:3] == ['7', '8', '9'], lines


def test_progress_is_a_live_bar_in_a_terminal():
    from training.progress import progress_bar

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal, log = Terminal(), io.StringIO()
    live, plain = progress_bar(10, 2, 'epoch 0/7', stream=terminal), progress_bar(10, 2, 'epoch 0/7', stream=log)
    live.update(1)
    plain.update(1)
    live.close()
    plain.close()
    assert '\r' in terminal.getvalue() and '3/10' in terminal.getvalue()
    assert '\r' not in log.getvalue() and log.getvalue().splitlines()[0].startswith('epoch 0/7:  20% 2/10 [')


# ---------------------------------------------------------------- validation

def test_validation_metrics_are_means_over_the_images():
    """SAD (sum of |alpha error| / 1000) and MSE per image, averaged over the images: an all-zero prediction
    gives the true alphas' sums / 1000; a perfect one 0."""
    from training.validation import validate
    true = [torch.full((1, 8, 8), 0.5), torch.zeros(1, 8, 8), torch.ones(1, 8, 8)]
    items = [(pha, torch.rand(3, 8, 8), torch.rand(3, 8, 8)) for pha in true]
    for predict, sad, mse in ((torch.zeros_like, (32 + 0 + 64) / 1000 / 3, (0.25 + 0 + 1) / 3),
                              (lambda pha: pha, 0.0, 0.0)):
        def forward(model, src, bgr, true_pha, true_fgr):
            return {'total': torch.tensor(0.5)}, {'pha': predict(true_pha)}
        result = validate(torch.nn.Identity(), items, forward, 2, torch.device('cpu'))
        assert result.samples == 3
        assert result.metrics == pytest.approx({'loss': 0.5, 'pha_sad': sad, 'pha_mse': mse})


def test_a_constant_prediction_is_explained_once_in_the_validation_lines(data, tmp_path, capsys):
    """A model from scratch predicts alpha 0 everywhere in eval mode (BatchNorm's running statistics still
    hold their initial variance), so pha_sad stays at the SAD of an empty matte: the log says why, in full at
    its first validation and briefly after."""
    def empty_matte_in_eval_mode(model, src, bgr, true_pha, true_fgr):
        terms, outputs = train_base.losses(model, src, bgr, true_pha, true_fgr)
        return terms, outputs if model.training else {**outputs, 'pha': torch.zeros_like(outputs['pha'])}

    stage = Stage(**{**train_base.STAGE.__dict__, 'losses': empty_matte_in_eval_mode})
    args = train_base.get_args_parser().parse_args(base_args(data, str(tmp_path), 'constant', '--max-steps', '2',
                                                             '--log-valid-interval', '1'))
    Trainer(stage, args, distributed.DistributedContext()).fit()
    lines = [line for line in capsys.readouterr().out.splitlines() if ': validation on ' in line]
    assert len(lines) == 2, lines
    assert 'every predicted alpha is 0, a constant matte' in lines[0] and 'BatchNorm running statistics' in lines[0]
    assert 'still hold 90 % of their initial variance' in lines[0], lines[0]  # 0.9 ^ 1, after one step
    assert 'every predicted alpha is 0 (see above)' in lines[1] and 'BatchNorm' not in lines[1], lines[1]


def test_a_collapsed_model_is_told_apart_from_early_training():
    from training.validation import Validation, describe
    metrics = {'loss': 0.3, 'pha_sad': 8.47, 'pha_mse': 0.2}
    assert describe(Validation(metrics, 50, None, 0.5), 10) == (
        'step 10: validation on 50 samples: loss 0.3, pha_sad 8.47, pha_mse 0.2')
    assert 'expected early in a run from scratch' in describe(Validation(metrics, 50, 0.0, 0.9 ** 30), 30)
    assert 'the model has collapsed' in describe(Validation(metrics, 50, 1.0, 0.9 ** 5000), 5000)


# ---------------------------------------------------------------- options

@pytest.mark.parametrize('kind', ['empty', 'missing', 'folder'])
def test_a_start_checkpoint_that_is_not_a_file_is_one_line_before_any_work(tmp_path, capsys, kind):
    """--model-last-checkpoint "$UNSET", a missing file or a folder: one line naming it and status 1, before
    the data sets are read (here they do not exist, which would be the error otherwise)."""
    work = str(tmp_path)
    path, expected = {'empty': ('', "--model-last-checkpoint '': an empty path"),
                      'missing': (f'{work}/missing.pth', f'--model-last-checkpoint {work}/missing.pth: no such file'),
                      'folder': (work, f'--model-last-checkpoint {work}: a folder, not a file')}[kind]
    for main in (train_base.main, train_refine.main):
        message = user_error(base_args(str(tmp_path / 'no-data'), work, 'run', '--model-last-checkpoint', path),
                             main)
        assert expected in message, message
        assert 'no-data' not in message and 'Training' not in capsys.readouterr().out


def help_entries(parser) -> dict:
    """{option: its help text} from --help, each entry's lines joined."""
    entries, current = {}, None
    for line in parser.format_help().splitlines():
        option = re.match(r'  (-\S+)(.*?)(?: {2,}(.*))?$', line)
        if option:
            current = option.group(1).rstrip(',')
            entries[current] = option.group(3) or ''
        elif current and line.startswith(' ' * 8):
            entries[current] = f'{entries[current]} {line.strip()}'.strip()
        else:
            current = None
    return entries


@pytest.mark.parametrize('module', [train_base, train_refine], ids=['base', 'refine'])
def test_help_gives_every_option_one_sentence_and_its_default_once(module):
    parser = module.get_args_parser()
    text = parser.format_help()
    # The description keeps its layout: its example commands on lines of their own.
    assert re.search(rf'^    python {module.__name__}\.py --', text, re.M), text[:2000]
    assert '(default: None)' not in text and '(default: [])' not in text and '(default: False)' not in text
    assert '(default: $BGM_DATA_ROOT)' in text
    groups = [group for group in parser._action_groups if group.title not in ('options', 'optional arguments')]
    grouped = {action.dest for group in groups for action in group._group_actions}
    for action in parser._actions:
        if action.dest == 'help':
            continue
        assert action.dest in grouped, f'{action.option_strings} is in no group'
        assert action.help and len(action.help) > 10, f'{action.option_strings} has no help'
    entries = help_entries(parser)
    for option, entry in entries.items():
        assert entry.count('default') <= 1, (option, entry)
    assert 'refine' not in module.__name__ or entries['--model-refine-mode'].startswith('Which pixels')
    assert '(default: 3)' in entries['--keep-last']


def test_data_loader_workers_default_to_the_cpus_of_each_process(data, tmp_path):
    from training.options import default_num_workers
    assert [default_num_workers(cpus) for cpus in (1, 2, 16, 64)] == [1, 2, 8, 8]
    context = distributed.DistributedContext
    assert distributed.cpus_per_process(context(), 16, env={}) == 16
    assert distributed.cpus_per_process(context(rank=0, world_size=4), 16, env={}) == 4  # a plain start spawned 4
    assert distributed.cpus_per_process(context(world_size=8, launched=True), 64, env={'LOCAL_WORLD_SIZE': '4'}) == 16
    slurm = {'SLURM_STEP_ID': '0', 'SLURM_CPUS_PER_TASK': '6'}
    assert distributed.cpus_per_process(context(world_size=8, launched=True), 6, env=slurm) == 6
    argv = base_args(data, str(tmp_path))
    del argv[argv.index('--num-workers'):argv.index('--num-workers') + 2]
    args = train_base.get_args_parser().parse_args(argv)
    assert args.num_workers is None
    trainer = Trainer(train_base.STAGE, args, distributed.DistributedContext())
    assert trainer.loader.num_workers == default_num_workers(len(os.sched_getaffinity(0)))
