"""The check itself: the parts one after another, each in its own process under its time limit; the
report (gpu_check.json), the table printed last, and the command line."""
import argparse
import copy
import json
import os
import subprocess
import sys
import time
from typing import Dict, Optional

from .plan import JUNIT, NEEDS, OPTIONAL, PARTS, PATHS, SETTINGS, describe, plan_parts
from .pytest_runs import ROOT, read_junit, run_tests, wait_or_interrupt
from .results import PartResult, machine_info, missing_packages, time_left, write_json


def run_part(name: str, mode: str, result_path: str, deadline: float, out: str) -> None:
    """Runs one part in this process (the orchestrator starts a process per part)."""
    settings = SETTINGS[mode]
    result = PartResult(result_path)
    if name in JUNIT:
        marker = 'cuda and not slow' if name == 'tests' else 'cuda and slow'
        run_tests(result, marker, os.path.join(out, JUNIT[name]), deadline, settings[name].get('env'),
                  missing_packages(OPTIONAL))
        return
    import torch
    if settings.get('threads'):
        torch.set_num_threads(settings['threads'])
    device = torch.device(settings['device'])
    if device.type == 'cuda' and not torch.cuda.is_available():
        result.set(status='skipped: CUDA is not available')
        return
    from .speed import measure_speed
    from .train import measure_training
    from .video import measure_video
    measure = {'speed': measure_speed, 'video': measure_video, 'train': measure_training}[name]
    try:
        measure(result, settings, device, deadline)
        result.set(status='done')
    except KeyboardInterrupt:
        result.set(status='stopped at its time limit')


def lacking(name: str, missing: Dict[str, str]) -> Optional[str]:
    """Why part `name` cannot run on this machine (packages it needs are missing), or None."""
    lacks = [f'{what} ({package}: {missing[package]})' for package, what in NEEDS.get(name, {}).items()
             if package in missing]
    if not lacks:
        return None
    return (f"skipped: needs {', '.join(lacks)}; scripts/gpu_check.sh installs them from .whl/ "
            '(scripts/gpu_check.sh --fetch-wheels where PyPI is reachable)')


def orchestrate(mode: str, out: str, total: Optional[float], parts=PARTS, budgets: Optional[Dict] = None) -> Dict:
    """Runs `parts` one after another within `total` seconds; `budgets` overrides parts' own limits."""
    settings = copy.deepcopy(SETTINGS[mode])
    planned = plan_parts(settings)
    for name, seconds in (budgets or {}).items():
        planned[name]['budget_s'] = seconds
    total = total or settings['total']
    start = time.time()
    deadline = start + total
    missing = missing_packages(OPTIONAL)
    report = dict(check=dict(mode=mode, budget_s=total, started=time.strftime('%Y-%m-%d %H:%M:%S %Z')),
                  machine=machine_info(settings['device']), missing_packages=missing, plan=planned, parts={})
    print(f"GPU check ({mode}) on {report['machine'].get('gpu', settings['device'])}, {total:.0f} s in all",
          flush=True)
    print('\n'.join(describe({name: planned[name] for name in PARTS if name in parts}, total)), flush=True)
    os.makedirs(os.path.join(out, 'parts'), exist_ok=True)
    for name in PARTS:
        if name not in parts:
            report['parts'][name] = dict(status='not asked for (--parts)')
            continue
        left = time_left(deadline)
        limit = min(planned[name]['budget_s'], left)
        reason = lacking(name, missing)
        if reason is None and limit < settings['min_start'][name]:
            reason = f"skipped: {left:.0f} s left, it needs {settings['min_start'][name]} s to start"
        if reason:
            print(f'--- {name} {reason}', flush=True)
            report['parts'][name] = dict(status=reason, **planned[name])
            write_json(report, os.path.join(out, 'gpu_check.json'))
            continue
        print(f'--- {name} (at most {limit:.0f} s)', flush=True)
        path = os.path.join(out, 'parts', f'{name}.json')  # rewritten by the part after every row
        if os.path.exists(path):
            os.remove(path)
        part_start = time.time()
        command = [sys.executable, '-m', 'scripts.gpu_check', '--part', name, '--mode', mode, '--result', path,
                   '--deadline', str(part_start + limit), '--out', out]
        # The part's own deadline comes first (and its 15 s of grace for pytest); the process is
        # interrupted only if it overruns them.
        status = wait_or_interrupt(subprocess.Popen(command, cwd=ROOT), limit + 20)
        part = {}
        if os.path.isfile(path):
            with open(path) as f:
                part = json.load(f)
        if name in JUNIT and 'counts' not in part:
            part.update(read_junit(os.path.join(out, JUNIT[name])))
        part['status'] = part.get('status') if status == 'done' else f"{status} ({part.get('status', 'no result')})"
        part.update(seconds=round(time.time() - part_start, 1), limit_s=round(limit, 1), **planned[name])
        report['parts'][name] = part
        write_json(report, os.path.join(out, 'gpu_check.json'))
    report['check']['seconds'] = round(time.time() - start, 1)
    write_json(report, os.path.join(out, 'gpu_check.json'))
    return report


def cell(value) -> str:
    """A speed table cell: median ms (frames/s), or why there is none."""
    if isinstance(value, dict):
        uncaptured = ' uncaptured' if value.get('captured') == 0 else ''
        return f"{value['median_ms']:8.2f} ({value['fps']:7.1f}){uncaptured}"
    return f'{str(value)[:40]:>18s}'


def summary(report: Dict) -> str:
    """The short table printed last."""
    check, parts, machine = report['check'], report['parts'], report['machine']
    lines = [f"GPU check ({check['mode']}): {machine.get('gpu', 'no GPU')}, torch {machine['torch']}, "
             f"{check.get('seconds', '?')} s of {check['budget_s']} s"]

    def outcome(row, text):
        """A row's numbers, or why it has none."""
        return row.get('skipped') or row.get('failed') or text()

    def header(name: str, text: str) -> bool:
        """The part's first line; False where it measured nothing (skipped, not asked for)."""
        part = parts.get(name, {})
        if 'rows' not in part:
            lines.append(f"{name:10s} {part.get('status')}")
            return False
        lines.append(f"{name:10s} {part.get('status')}: {text}")
        return True

    speed = parts.get('speed', {})
    if header('speed', f"median ms (frames/s), {' | '.join(PATHS)}"):
        for row in speed['rows']:
            lines.append(f"  {row['backbone']:11s} {row['resolution']} {row['precision']} b{row['batch']}: "
                         + outcome(row, lambda: ' | '.join(cell(row.get(path)) for path in PATHS)))
    train = parts.get('train', {})
    if header('train', f"{train.get('precision')}, images/s (median interval; whole run)"):
        for row in train['rows']:
            lines.append(f"  {row['stage']:6s} {row['sample_size']} px, batch {row['batch']}, cudnn.benchmark "
                         f"{row.get('cudnn_benchmark')}: " + outcome(
                             row, lambda: f"{row['images_per_s']}; {row['images_per_s_whole_run']}"))
    video = parts.get('video', {})
    clip = video.get('clip', {})
    if header('video', f"{clip.get('width')}x{clip.get('height')}, {clip.get('frames')} frames"):
        for row in video['rows']:
            lines.append(f"  {row['precision']} seq_chunk {row['seq_chunk']} cuda_graphs {row['cuda_graphs']}: "
                         + outcome(row, lambda: f"model {row['model_fps']} frames/s, end to end "
                                                f"{row['end_to_end_fps']} frames/s"))
    for name in ('tests', 'slow_tests'):
        part = parts.get(name, {})
        counts = ', '.join(f'{n} {k}' for k, n in part.get('counts', {}).items() if n)
        lines.append(f"{name:10s} {part.get('status')}: {counts or 'no result'}")
        for failure in part.get('failures', [])[:10]:
            lines.append(f"  FAILED {failure['test']}: {' '.join(failure['message'])[:160]}")
    lines.append('seconds per part (budget): ' + ', '.join(
        f"{name} {parts[name]['seconds']} ({parts[name].get('budget_s')})" for name in PARTS
        if 'seconds' in parts.get(name, {})))
    for name in PARTS:
        for note in parts.get(name, {}).get('notes', []):
            lines.append(f'note ({name}): {note}')
    return '\n'.join(lines)


def failed(report: Dict) -> bool:
    """A test failed, or a part ended with an error (a part stopped at its time limit has not failed)."""
    parts = report['parts'].values()
    return any(part.get('counts', {}).get('failed') or part.get('counts', {}).get('errors')
               or str(part.get('status', '')).startswith('exit status') for part in parts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='python -m scripts.gpu_check',
                                     description='The GPU check (README, "On a GPU").')
    parser.add_argument('--out', default=os.environ.get('OUT'),
                        help='folder for gpu_check.json and the JUnit files (default: $OUT)')
    parser.add_argument('--dry-run', action='store_true', help='on the CPU, tiny sizes')
    parser.add_argument('--budget', type=float,
                        help=f"seconds for the whole check (default {SETTINGS['gpu']['total']}; dry run "
                             f"{SETTINGS['dry-run']['total']})")
    parser.add_argument('--parts', default=','.join(PARTS),
                        help=f"the parts to run, comma-separated (default: all, {','.join(PARTS)})")
    parser.add_argument('--part-budget', action='append', default=[], metavar='PART=SECONDS',
                        help='another time limit for a part, e.g. tests=200 for a second try (repeatable)')
    parser.add_argument('--part', choices=PARTS, help=argparse.SUPPRESS)
    parser.add_argument('--mode', choices=sorted(SETTINGS), help=argparse.SUPPRESS)
    parser.add_argument('--result', help=argparse.SUPPRESS)
    parser.add_argument('--deadline', type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.out:
        parser.error('give --out DIR or set OUT')
    os.makedirs(args.out, exist_ok=True)
    if args.part:
        run_part(args.part, args.mode, args.result, args.deadline, args.out)
        return 0
    parts = args.parts.split(',')
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"--parts: unknown part(s) {', '.join(unknown)}; the parts are {', '.join(PARTS)}")
    budgets = {}
    for text in args.part_budget:
        name, _, seconds = text.partition('=')
        try:
            budgets[name] = float(seconds)
        except ValueError:
            budgets[name] = None
        if name not in PARTS or budgets[name] is None or budgets[name] <= 0:
            parser.error(f"--part-budget {text}: expected PART=SECONDS with a part among {', '.join(PARTS)}")
    report = orchestrate('dry-run' if args.dry_run else 'gpu', args.out, args.budget, parts, budgets)
    print(summary(report), flush=True)
    return 1 if failed(report) else 0
