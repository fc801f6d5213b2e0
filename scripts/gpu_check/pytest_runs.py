"""The tests parts: pytest on the cuda-marked tests in a process of its own, read back from its JUnit file."""
import ast
import os
import signal
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from typing import Dict, Optional

from .results import PartResult, time_left

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MISSING_PLUGIN = 'scripts.gpu_check.missing_modules'


def run_tests(result: PartResult, marker: str, xml_path: str, deadline: float, env: Optional[Dict] = None,
              missing: Optional[Dict[str, str]] = None) -> None:
    """pytest -m `marker`; `env`: variables to add; `missing`: packages this machine lacks, whose test
    modules are reported as skipped (`missing_modules`) rather than as errors."""
    # A test module that cannot be imported is an error, and the other modules still run.
    command = [sys.executable, '-m', 'pytest', '-m', marker, '-p', 'no:cacheprovider', '-q', '-rfEs',
               '--continue-on-collection-errors', '--durations=8', f'--junitxml={xml_path}']
    env = dict(env or {})
    if missing:
        command[3:3] = ['-p', MISSING_PLUGIN]
        env['BGM_GPU_CHECK_MISSING'] = ','.join(sorted(missing))
        result.note(f"without {', '.join(sorted(missing))}: the test modules that import them are skipped")
    result.set(command=' '.join(command), env=env)
    process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **env})
    status = wait_or_interrupt(process, time_left(deadline))
    result.set(status=status, **read_junit(xml_path))


def wait_or_interrupt(process: subprocess.Popen, seconds: float) -> str:
    """Waits for `process`; past `seconds` interrupts it (Ctrl-C: pytest and the parts save what they
    have), and kills it 15 s later. Returns what happened."""
    try:
        code = process.wait(timeout=max(seconds, 1))
        return 'done' if code == 0 else f'exit status {code}'
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
            return 'stopped at its time limit'
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            return 'killed at its time limit'


def skip_reason(element) -> str:
    """A <skipped> element's reason; for a module skipped at collection, the reason in its text
    (pytest writes the message 'collection skipped' and the report's (path, line, reason) as text)."""
    message = element.get('message') or ''
    if message == 'collection skipped' and element.text:
        try:
            return str(ast.literal_eval(element.text.strip())[-1])
        except (ValueError, SyntaxError, IndexError, TypeError):
            return element.text.strip()
    return message


def read_junit(path: str) -> Dict:
    """Counts, failures (with the first line of their message), skip reasons and recorded properties."""
    if not os.path.isfile(path):
        return {'junit': f'{path} was not written'}
    counts = {'passed': 0, 'failed': 0, 'errors': 0, 'skipped': 0}
    failures, skips, properties = [], {}, {}
    for case in ElementTree.parse(path).getroot().iter('testcase'):
        name = f"{case.get('classname', '').split('.')[-1]}::{case.get('name')}"
        outcome = 'passed'
        for child in case:
            if child.tag in ('failure', 'error'):
                outcome = 'failed' if child.tag == 'failure' else 'errors'
                failures.append({'test': name, 'message': (child.get('message') or '').splitlines()[:1]})
            elif child.tag == 'skipped':
                outcome = 'skipped'
                reason = skip_reason(child)
                skips[reason] = skips.get(reason, 0) + 1
            elif child.tag == 'properties':
                properties[name] = {p.get('name'): p.get('value') for p in child.iter('property')}
        counts[outcome] += 1
        properties.setdefault(name, {})['seconds'] = case.get('time')
    return {'counts': counts, 'failures': failures, 'skip_reasons': skips, 'properties': properties}
