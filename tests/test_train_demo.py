"""scripts/train_demo.sh, the demonstration model's recipe in one command, with tiny settings on the CPU."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from model import MattingRefine, load_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from scripts import train_demo


def test_tiny_recipe_trains_both_stages_releases_fp16_weights_and_prints_the_heldout_table(tmp_path):
    out = tmp_path / 'demo'
    result = subprocess.run(['bash', os.path.join(ROOT, 'scripts', 'train_demo.sh'), '--device', 'cpu',
                             '--minutes', '0.5', '--preset', 'tiny', '--out', str(out)],
                            env={**os.environ, 'PYTHON': sys.executable}, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((out / 'results.json').read_text())
    for stage in report['stages'].values():
        # At least the warm-up; more when the machine is not too busy. The resumed run is stopped at the
        # stage's budget, a step and a checkpoint later at most.
        assert stage['steps'] >= train_demo.PRESETS['tiny']['warmup_steps'], report
        assert stage['seconds'] <= max(stage['budget_s'], stage['warmup_s']) + 20, report
    rows = report['table']
    assert list(rows)[0] == 'difference keying (tuned)' and list(rows)[1].startswith('this run (')
    for scores in rows.values():
        assert [title for _, _, title in train_demo.COLUMNS] == list(scores)
        assert all(value >= 0 for value in scores.values())

    weights = torch.load(out / train_demo.WEIGHTS_NAME, weights_only=True)
    assert all(v.dtype == torch.float16 for v in weights.values() if v.is_floating_point())
    load_checkpoint(MattingRefine('mobilenetv2'), str(out / train_demo.WEIGHTS_NAME))
    assert len(os.listdir(out / 'heldout-model' / 'pha')) == len(os.listdir(out / 'heldout-keying' / 'pha')) == 2

    # The table is what the run prints last.
    last = result.stdout.rstrip().splitlines()[-4:]
    assert last[0].startswith('| method | SAD (unknown, /1e3) |') and last[2].startswith('| difference keying')


def test_an_existing_folder_is_refused(tmp_path, capsys):
    (tmp_path / 'keep.txt').write_text('mine')
    with pytest.raises(SystemExit) as exit:
        train_demo.main(['--out', str(tmp_path), '--preset', 'tiny', '--device', 'cpu'])
    assert exit.value.code == 2 and 'not an empty folder' in capsys.readouterr().err
    assert os.listdir(tmp_path) == ['keep.txt']


def processes_naming(text, settle_s=15.0):
    """The pids of the running processes whose command line holds `text`, after waiting up to `settle_s`
    for them to end (a generator's own workers take a moment to exit after it, on a loaded machine)."""
    deadline = time.monotonic() + settle_s
    while True:
        found = running_processes_naming(text)
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def running_processes_naming(text):
    found = []
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            try:
                with open(f'/proc/{entry}/cmdline', 'rb') as file:
                    if text in file.read().decode(errors='replace'):
                        found.append(int(entry))
            except OSError:
                pass
    return found


def start_recipe(tmp_path, minutes):
    out = tmp_path / 'demo'
    process = subprocess.Popen([sys.executable, '-m', 'scripts.train_demo', '--device', 'cpu', '--minutes',
                                str(minutes), '--preset', 'tiny', '--out', str(out)], cwd=ROOT, text=True,
                               stdout=subprocess.PIPE, stderr=open(tmp_path / 'stderr.txt', 'w'))
    return out, process


def wait_for_line(process, text):
    for line in process.stdout:
        if text in line:
            return line
    pytest.fail(f'the recipe ended before printing {text!r}')


def stopped_with(process, tmp_path, timeout=120):
    try:
        process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail('the recipe went on after SIGTERM')
    return process.returncode, (tmp_path / 'stderr.txt').read_text()


def test_sigterm_in_training_saves_and_stops_the_recipe_with_status_143(tmp_path):
    """It went on to the next stage and reported success; now it stops, as the trainers do."""
    out, process = start_recipe(tmp_path, minutes=5)    # a base stage of a minute and more
    wait_for_line(process, 'base: warm-up of')
    time.sleep(3)                                       # the trainer's resumed run has started
    process.send_signal(signal.SIGTERM)
    status, err = stopped_with(process, tmp_path)
    assert status == 128 + signal.SIGTERM, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith('train_demo: stopped by SIGTERM during the base stage') and 'base/last.pth' in last, last
    report = json.loads((out / 'results.json').read_text())
    assert report['stopped'] == 'SIGTERM' and 'table' not in report
    assert report['stages']['base']['steps'] >= train_demo.PRESETS['tiny']['warmup_steps']
    assert torch.load(out / 'checkpoint' / 'base' / 'last.pth', weights_only=True)['step'] == \
        report['stages']['base']['steps']
    assert not (out / 'checkpoint' / 'refine').exists()   # it did not go on
    assert not processes_naming(str(out))                 # nor did anything it started


def test_sigterm_while_the_data_is_made_ends_the_generators(tmp_path):
    out, process = start_recipe(tmp_path, minutes=5)
    wait_for_line(process, 'samples at')
    process.send_signal(signal.SIGTERM)
    status, err = stopped_with(process, tmp_path, timeout=60)
    assert status == 143 and 'stopped by SIGTERM during the making of the data' in err, err[-3000:]
    assert json.loads((out / 'results.json').read_text())['stopped'] == 'SIGTERM'
    assert not processes_naming(str(out))
