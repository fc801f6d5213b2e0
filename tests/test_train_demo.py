"""scripts/train_demo.sh, the demonstration model's recipe in one command, with tiny settings on the CPU."""
import json
import os
import subprocess
import sys

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
