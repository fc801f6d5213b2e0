"""A pytest plugin for the GPU check on a machine that lacks optional packages (PyAV, kornia, ...):
a test module that cannot be imported because one of them is missing is reported as skipped, naming
the package, instead of as a collection error. Any other import error stays an error.

    BGM_GPU_CHECK_MISSING=av,kornia python -m pytest -p scripts.gpu_check.missing_modules -m cuda
"""
import os
import re

import pytest

MISSING = {name for name in os.environ.get('BGM_GPU_CHECK_MISSING', '').split(',') if name}
NO_MODULE = re.compile(r"No module named '([\w.]+)'")


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    match = NO_MODULE.search(str(report.longrepr))
    package = match.group(1).split('.')[0] if match else None
    if package in MISSING:
        path = str(getattr(collector, 'path', None) or collector.fspath)
        report.outcome = 'skipped'
        report.longrepr = (path, 0, f'needs the package {package!r}, which this machine lacks (scripts/gpu_check.sh '
                                    'installs it from .whl/: run scripts/gpu_check.sh --fetch-wheels where PyPI is '
                                    'reachable)')
