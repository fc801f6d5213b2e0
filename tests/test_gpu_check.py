"""scripts/gpu_check.sh: its CPU dry run goes through every part, so that the GPU check cannot rot
between the rare sessions that have a GPU."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from scripts import gpu_check


def measured(rows, field):
    return [row for row in rows if isinstance(row.get(field), (int, float)) or isinstance(row.get(field), dict)]


def test_dry_run_goes_through_every_part_and_prints_the_table_last(tmp_path):
    out = tmp_path / 'out'
    # A large total budget: under load the parts stop at their own limits, none is skipped for lack of time.
    command = ['bash', os.path.join(ROOT, 'scripts', 'gpu_check.sh'), '--dry-run', str(out), '--budget', '400',
               '--part-budget', 'video=14']
    result = subprocess.run(command, env={**os.environ, 'PYTHON': sys.executable}, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((out / 'gpu_check.json').read_text())
    parts = report['parts']
    assert list(parts) == list(gpu_check.PARTS)
    assert report['check']['mode'] == 'dry-run' and report['machine']['torch']
    for name, part in parts.items():
        assert part['status'] == 'done' or part['status'].startswith('stopped at its time limit'), (name, part)

    # The CUDA tests were collected and skipped, each saying why.
    for name in ('tests', 'slow_tests'):
        counts = parts[name]['counts']
        assert counts['skipped'] > 0 and counts['failed'] == counts['errors'] == 0, counts
        assert all('CUDA' in reason for reason in parts[name]['skip_reasons']), parts[name]['skip_reasons']
    speed = measured(parts['speed']['rows'], 'eager')
    assert speed and all(row['eager']['median_ms'] > 0 and row['refined_patches'] > 0 for row in speed)
    # The optimized model runs beside the eager one (where the part's time allows, the first row at least).
    optimized = [row['optimized'] for row in speed]
    assert isinstance(optimized[0], dict) and optimized[0]['median_ms'] > 0, optimized[0]
    assert all(isinstance(o, dict) or o.startswith('skipped: time limit') for o in optimized), optimized
    assert all('skipped' in row for row in parts['speed']['rows'] if row not in speed)
    video = measured(parts['video']['rows'], 'model_fps')
    assert video and all(row['frames'] == 4 and row['end_to_end_fps'] > 0 for row in video)
    # A training run stopped at the part's limit keeps its steps; images/s need one logging interval.
    train = [row for row in parts['train']['rows'] if 'steps' in row]
    assert train and all(row['nonfinite_steps'] == 0 for row in train)
    assert all(row['images_per_s'] > 0 for row in measured(train, 'images_per_s'))
    for name in ('speed', 'video', 'train'):
        assert not [row for row in parts[name]['rows'] if 'failed' in row or 'failed' in str(row.get('eager'))]

    # The table comes last, and the log holds what was printed.
    output = result.stdout
    assert '--- video (at most 14 s)' in output
    assert output.index('--- slow_tests') < output.index('GPU check (dry-run):') < output.index('train      done')
    log = (out / 'gpu_check.log').read_text()
    assert log.rstrip().endswith(output.rstrip().splitlines()[-1])
    assert {'cuda_tests.xml', 'cuda_tests_slow.xml'} <= set(os.listdir(out))


def test_failures_are_read_back_from_pytest_and_set_the_exit_status(tmp_path):
    """A real pytest run with a failing, a skipped and a passing test, as the check reads it."""
    (tmp_path / 'test_sample.py').write_text(
        'import pytest\n'
        'def test_passes(record_property):\n'
        '    record_property("fps", 12.5)\n'
        'def test_fails():\n'
        '    assert 1 == 2, "one is not two"\n'
        'def test_skips():\n'
        '    pytest.skip("no GPU here")\n')
    xml = tmp_path / 'junit.xml'
    subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', f'--junitxml={xml}',
                    str(tmp_path / 'test_sample.py')], cwd=str(tmp_path), capture_output=True, timeout=120)
    tests = gpu_check.read_junit(str(xml))
    assert tests['counts'] == {'passed': 1, 'failed': 1, 'errors': 0, 'skipped': 1}
    assert tests['skip_reasons'] == {'no GPU here': 1}
    assert tests['properties']['test_sample::test_passes']['fps'] == '12.5'
    assert tests['failures'][0]['test'] == 'test_sample::test_fails'
    assert 'one is not two' in tests['failures'][0]['message'][0]

    report = dict(check=dict(mode='gpu', budget_s=235, seconds=100.0), machine=dict(torch='2.11.0', gpu='GPU'),
                  parts=dict(tests=dict(status='exit status 1', seconds=50.0, **tests)))
    assert gpu_check.failed(report)
    assert 'FAILED test_sample::test_fails: ' in gpu_check.summary(report)
    report['parts']['tests'] = dict(status='stopped at its time limit', counts=dict(passed=3))
    assert not gpu_check.failed(report)


@pytest.mark.parametrize('options, message', [(['--parts', 'tests,benchmarks'], 'unknown part(s) benchmarks'),
                                              (['--part-budget', 'tests=soon'], '--part-budget tests=soon'),
                                              (['--part-budget', 'speeds=30'], '--part-budget speeds=30')])
def test_unknown_parts_and_unreadable_budgets_are_refused(tmp_path, capsys, options, message):
    with pytest.raises(SystemExit) as exit:
        gpu_check.main(['--out', str(tmp_path), *options])
    assert exit.value.code == 2 and message in capsys.readouterr().err
