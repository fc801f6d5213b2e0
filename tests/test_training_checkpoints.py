"""Which checkpoint files a training run keeps: those of its last --keep-last checkpoints, across resumes,
never a file it did not write; best.pth, the weights of the best validation by --best-metric."""
import os
import shutil

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import train_base
from training.checkpoint_keeping import KeptCheckpoints
from test_training import base_args, data, load_state, run_folder  # noqa: F401 (data: the fixture)


def weight_files(folder):
    return sorted(name for name in os.listdir(folder) if name.startswith('epoch-'))


def test_keep_last_keeps_the_last_checkpoints_across_resumes_and_no_file_the_run_did_not_write(data, tmp_path,
                                                                                              capsys):
    work = str(tmp_path)
    folder = run_folder(work)
    os.makedirs(folder)
    theirs = ['epoch-9-iter-999.pth', 'notes.pth']  # another run's file of a name this trainer writes, and any
    for name in theirs:
        with open(os.path.join(folder, name), 'wb') as file:
            file.write(b'not ours')
    argv = base_args(data, work, 'run', '--checkpoint-interval', '1', '--keep-last', '2')
    train_base.main(argv + ['--max-steps', '3'])
    out = capsys.readouterr().out
    assert f'Checkpoints go to {folder}: last.pth' in out and 'the last 2 kept (--keep-last)' in out, out
    assert weight_files(folder) == ['epoch-0-iter-2.pth', 'epoch-0-iter-3.pth', 'epoch-9-iter-999.pth']

    # A file the run wrote but that was changed since (here rewritten with the same bytes) is no longer its own.
    changed = os.path.join(folder, 'epoch-0-iter-3.pth')
    shutil.copyfile(changed, changed + '.copy')
    os.replace(changed + '.copy', changed)
    # 5 steps per epoch: step 5 leaves epoch-0-iter-5.pth and epoch-0.pth, one checkpoint.
    train_base.main(argv + ['--max-steps', '6', '--resume', 'auto'])
    assert weight_files(folder) == ['epoch-0-iter-3.pth', 'epoch-0-iter-5.pth', 'epoch-0.pth', 'epoch-1-iter-6.pth',
                                    'epoch-9-iter-999.pth']
    assert all(os.path.exists(os.path.join(folder, name)) for name in theirs + ['last.pth'])
    # The state was written before the oldest files went: it lists them still (a kill in between leaks none).
    written = [entry['name'] for entry in load_state(work)['checkpoints']['written']]
    assert written == ['epoch-0-iter-4.pth', 'epoch-0-iter-5.pth', 'epoch-0.pth', 'epoch-1-iter-6.pth']


def test_keep_last_all_keeps_every_file_as_the_original(data, tmp_path):
    work = str(tmp_path)
    train_base.main(base_args(data, work, 'run', '--checkpoint-interval', '1', '--keep-last', 'all',
                              '--max-steps', '3'))
    assert weight_files(run_folder(work)) == ['epoch-0-iter-1.pth', 'epoch-0-iter-2.pth', 'epoch-0-iter-3.pth']


@pytest.mark.parametrize('value', ['0', '-1', 'some'])
def test_keep_last_takes_a_count_or_all(value):
    with pytest.raises(SystemExit):
        train_base.get_args_parser().parse_args(base_args('/unused', '/unused') + ['--keep-last', value])


def test_best_pth_holds_the_weights_of_the_lowest_validation_metric(data, tmp_path, capsys):
    work = str(tmp_path)
    folder = run_folder(work)
    train_base.main(base_args(data, work, 'run', '--checkpoint-interval', '1', '--keep-last', 'all',
                              '--log-valid-interval', '1', '--best-metric', 'pha_mse', '--max-steps', '4'))
    events = EventAccumulator(os.path.join(work, 'log', 'run'), size_guidance={'scalars': 0})
    events.Reload()
    mse = {event.step: event.value for event in events.Scalars('valid/pha_mse')}
    assert sorted(mse) == [1, 2, 3, 4]
    best = load_state(work)['checkpoints']['best']
    assert best['metric'] == 'pha_mse' and mse[best['step']] == pytest.approx(min(mse.values()), rel=1e-6)
    assert best['value'] == pytest.approx(mse[best['step']], rel=1e-6)
    kept, expected = (torch.load(os.path.join(folder, name), weights_only=True)
                      for name in ('best.pth', f"epoch-0-iter-{best['step']}.pth"))
    assert kept.keys() == expected.keys() and all(torch.equal(kept[k], expected[k]) for k in kept)
    assert 'the best valid/pha_mse so far: best.pth written' in capsys.readouterr().out


def test_the_record_survives_a_resume_and_a_new_metric_starts_a_new_one(tmp_path):
    folder = str(tmp_path)
    kept = KeptCheckpoints(folder, 1, 'pha_sad')
    for step in (1, 2):
        with open(os.path.join(folder, f'epoch-0-iter-{step}.pth'), 'wb') as file:
            file.write(b'weights')
        kept.wrote(f'epoch-0-iter-{step}.pth', step)
    assert kept.prune() == ['epoch-0-iter-1.pth'] and os.listdir(folder) == ['epoch-0-iter-2.pth']
    kept.best = {'metric': 'pha_sad', 'value': 2.0, 'step': 2}
    resumed = KeptCheckpoints(folder, 1, 'pha_sad')
    resumed.load_state_dict(kept.state_dict())
    assert resumed.written == kept.written and not resumed.improves({'pha_sad': 3.0})
    assert resumed.improves({'pha_sad': 1.0}) and not resumed.improves({'pha_sad': float('nan')})
    other = KeptCheckpoints(folder, 1, 'pha_mse')
    other.load_state_dict(kept.state_dict())
    assert other.best is None and other.improves({'pha_mse': 3.0})
