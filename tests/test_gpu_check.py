"""scripts/gpu_check.sh: its CPU dry run goes through every part and every row within the budgets
planned from what they run, so that the GPU check cannot rot between the rare sessions with a GPU."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from scripts import gpu_check
from scripts.gpu_check import check, plan as planning

DRY_RUN = gpu_check.SETTINGS['dry-run']


def timed(value) -> bool:
    return isinstance(value, dict) and value['median_ms'] > 0 and value['fps'] > 0


def test_dry_run_measures_every_row_of_every_part_within_its_budget_and_prints_the_table_last(tmp_path):
    out = tmp_path / 'out'
    command = ['bash', os.path.join(ROOT, 'scripts', 'gpu_check.sh'), '--dry-run', str(out)]
    result = subprocess.run(command, env={**os.environ, 'PYTHON': sys.executable}, capture_output=True, text=True,
                            timeout=1500)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((out / 'gpu_check.json').read_text())
    parts = report['parts']
    assert list(parts) == list(gpu_check.PARTS) == ['speed', 'train', 'video', 'tests', 'slow_tests']
    assert report['check']['mode'] == 'dry-run' and report['machine']['torch'] and report['missing_packages'] == {}
    for name, part in parts.items():
        assert part['status'] == 'done', (name, part['status'])
        assert part['seconds'] <= part['budget_s'] == report['plan'][name]['budget_s'], (name, part['seconds'])
        assert (out / 'parts' / f'{name}.json').is_file()  # written as the part went

    # Every speed row of the plan, each timed eager, optimized and through CUDAGraphs (uncaptured on CPU tensors).
    speed = parts['speed']['rows']
    def key(row):
        return row['backbone'], row['resolution'], row['precision'], row['batch']
    planned = [key(row) for row in planning.speed_rows(DRY_RUN['speed'])]
    assert [key(row) for row in speed] == planned
    assert len(planned) == 24 and {r['batch'] for r in speed} == {1, 2}
    assert all(timed(row[path]) for row in speed for path in ('eager', 'optimized', 'graphs')), speed
    assert all(row['graphs']['captured'] == 0 and row['refined_patches'] > 0 for row in speed)
    # Training: every run of the plan, its steps done; images/s need one logging interval after the first.
    train = parts['train']['rows']
    assert [(r['stage'], r['cudnn_benchmark']) for r in train] == [run[:2] for run in DRY_RUN['train']['runs']]
    assert all(row['steps'] == run[2] and row['nonfinite_steps'] == 0 and row['images_per_s'] > 0
               and row['steps_per_s'] > 0 for row, run in zip(train, DRY_RUN['train']['runs']))
    # Video: with and without --cuda-graphs (which the CPU runs without, saying why).
    video = parts['video']['rows']
    assert [(r['precision'], r['seq_chunk'], r['cuda_graphs']) for r in video] == list(DRY_RUN['video']['runs'])
    assert all(row['frames'] == 4 and row['model_fps'] > 0 and row['end_to_end_fps'] > 0 for row in video)
    assert all(row['graphs_captured'].startswith('n/a: --cuda-graphs needs a CUDA device') for row in video
               if row['cuda_graphs'])

    # The CUDA tests rehearsed on the CPU; what needs CUDA skipped, saying so; torch.compile not rehearsed.
    tests = parts['tests']
    assert tests['env']['BGM_CUDA_TESTS_ON_CPU'] == '1'
    assert tests['counts']['passed'] >= 25 and tests['counts']['failed'] == tests['counts']['errors'] == 0
    assert 'test_optimize::test_cuda[dtype0]' in tests['properties']  # marked cuda, so the check runs it
    for name in ('tests', 'slow_tests'):
        assert parts[name]['counts']['skipped'] > 0
        assert all('CUDA' in reason for reason in parts[name]['skip_reasons']), parts[name]['skip_reasons']

    # The plan first, the table last, and the log holds what was printed.
    output = result.stdout
    assert output.index('plan: speed') < output.index('--- speed') < output.index('--- train') \
        < output.index('--- video') < output.index('--- tests') < output.index('--- slow_tests') \
        < output.index('GPU check (dry-run):') < output.index('slow_tests done')
    assert 'seconds per part (budget): speed' in output
    log = (out / 'gpu_check.log').read_text()
    assert log.rstrip().endswith(output.rstrip().splitlines()[-1])
    assert {'cuda_tests.xml', 'cuda_tests_slow.xml'} <= set(os.listdir(out))


def test_the_budgets_come_from_what_the_parts_run():
    gpu = gpu_check.SETTINGS['gpu']
    planned = gpu_check.plan_parts(gpu)
    assert list(planned) == list(gpu_check.PARTS)
    assert all(p['budget_s'] >= p['expected_s'] > 0 for p in planned.values())
    # About 6 minutes on the GPU in all: a session lent 15 minutes, start-up included, can try again.
    assert sum(p['expected_s'] for p in planned.values()) <= gpu['total'] <= 400
    # Batch 1 of MobileNetV2 and ResNet-50 at HD and 4K, fp32 and fp16, come first.
    first = [(r['backbone'], r['batch']) for r in planning.speed_rows(gpu['speed'])][:8]
    assert {backbone for backbone, _ in first} == {'mobilenetv2', 'resnet50'} and {b for _, b in first} == {1}
    more = dict(gpu, speed=dict(gpu['speed'], iterations=2 * gpu['speed']['iterations']))
    assert gpu_check.plan_parts(more)['speed']['budget_s'] > planned['speed']['budget_s']


def test_a_part_whose_packages_are_missing_is_skipped_saying_which(tmp_path, monkeypatch):
    missing = {name: f"ModuleNotFoundError: No module named '{name}'" for name in ('av', 'kornia')}
    monkeypatch.setattr(check, 'missing_packages', lambda names: missing)
    monkeypatch.setattr(check, 'machine_info', lambda device_type: dict(torch='2.11.0'))
    report = gpu_check.orchestrate('dry-run', str(tmp_path), None, parts=('train', 'video'))
    assert report['parts']['video']['status'].startswith('skipped: needs PyAV (av: ModuleNotFoundError')
    assert report['parts']['train']['status'].startswith('skipped: needs kornia (kornia: ')
    assert '--fetch-wheels' in report['parts']['train']['status']
    assert json.loads((tmp_path / 'gpu_check.json').read_text())['missing_packages'].keys() == {'av', 'kornia'}
    table = gpu_check.summary(report)
    assert 'video      skipped: needs PyAV' in table and not gpu_check.failed(report)


def test_test_modules_that_need_a_missing_package_are_skipped_not_errors(tmp_path):
    (tmp_path / 'test_needs_package.py').write_text('import package_this_machine_lacks\n'
                                                    'def test_something():\n    pass\n')
    (tmp_path / 'test_plain.py').write_text('def test_passes():\n    pass\n')
    xml = tmp_path / 'junit.xml'
    # As the check runs pytest: a module that cannot be imported does not stop the others.
    plugin = gpu_check.pytest_runs.MISSING_PLUGIN
    command = [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', '-p', plugin,
               '--continue-on-collection-errors', f'--junitxml={xml}', str(tmp_path)]
    env = {**os.environ, 'PYTHONPATH': ROOT}
    for missing, expected in (('package_this_machine_lacks', dict(passed=1, failed=0, errors=0, skipped=1)),
                              ('another_package', dict(passed=1, failed=0, errors=1, skipped=0))):
        subprocess.run(command, cwd=str(tmp_path), env={**env, 'BGM_GPU_CHECK_MISSING': missing},
                       capture_output=True, timeout=120)
        tests = gpu_check.read_junit(str(xml))
        assert tests['counts'] == expected, (missing, tests)
    subprocess.run(command, cwd=str(tmp_path), env={**env, 'BGM_GPU_CHECK_MISSING': 'package_this_machine_lacks'},
                   capture_output=True, timeout=120)
    [reason] = gpu_check.read_junit(str(xml))['skip_reasons']
    assert reason.startswith("needs the package 'package_this_machine_lacks', which this machine lacks")


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

    report = dict(check=dict(mode='gpu', budget_s=360, seconds=100.0), machine=dict(torch='2.11.0', gpu='GPU'),
                  parts=dict(tests=dict(status='exit status 1', seconds=50.0, budget_s=126, **tests)))
    assert gpu_check.failed(report)
    table = gpu_check.summary(report)
    assert 'FAILED test_sample::test_fails: ' in table and 'tests 50.0 (126)' in table
    report['parts']['tests'] = dict(status='stopped at its time limit', counts=dict(passed=3))
    assert not gpu_check.failed(report)


@pytest.mark.parametrize('options, message', [(['--parts', 'tests,benchmarks'], 'unknown part(s) benchmarks'),
                                              (['--part-budget', 'tests=soon'], '--part-budget tests=soon'),
                                              (['--part-budget', 'speeds=30'], '--part-budget speeds=30')])
def test_unknown_parts_and_unreadable_budgets_are_refused(tmp_path, capsys, options, message):
    with pytest.raises(SystemExit) as exit:
        gpu_check.main(['--out', str(tmp_path), *options])
    assert exit.value.code == 2 and message in capsys.readouterr().err
