"""Check where the data sets resolve: `--data-root DIR` (or env BGM_DATA_ROOT) holds them under their
standard names, `--data-path NAME=DIR` (or env BGM_DATA_<NAME>) overrides one. The logic lives in
`dataset.paths`; this module re-exports it for code that imports `data_path`.

    python data_path.py --data-root /data videomatte240k bg20k

Prints one row per data set and split (found with its sample count, missing, broken, or with no
location to look in) and the folder looked in, then how to get each data set that is not there, and
what is wrong with each that is broken. The exit status is 1 when a data set named on the command
line is not found.
"""
import argparse
import os
import sys

from dataset.paths import *  # noqa: F401,F403  (the import path of earlier versions)
from dataset.paths import (BACKGROUND_SETS, FOREGROUND_SETS, ROOT_ENV, DataPathError, DataPaths, add_data_arguments,
                           data_set_status)

STATES = {'found': 'found', 'missing': 'missing', 'broken': 'BROKEN', 'no location': 'no location'}


def table(rows, headers) -> list:
    """Lines of a plain-text table, columns as wide as their widest cell (the last one unpadded)."""
    widths = [max(len(str(row[k])) for row in [headers, *rows]) for k in range(len(headers) - 1)]
    return ['  '.join([*(str(cell).ljust(width) for cell, width in zip(row, widths)), str(row[-1])]).rstrip()
            for row in [headers, *rows]]


def report(paths: DataPaths, names=()) -> list:
    """The lines `main` prints."""
    statuses = data_set_status(paths, names)
    layouts = {'foreground': FOREGROUND_SETS, 'background': BACKGROUND_SETS}
    root = (f'data root: {paths.root}' if paths.root else
            f'data root: none (pass --data-root DIR or set {ROOT_ENV}; --data-path NAME=DIR places one data set)')
    rows = [(s.name, s.kind, s.split, STATES[s.state], s.files if s.state == 'found' else '-',
             os.fspath(s.folder) if s.folder else '-') for s in statuses]
    lines = [root, ''] + table(rows, ('DATA SET', 'KIND', 'SPLIT', 'STATUS', 'FILES', 'FOLDER'))
    absent = {s.name: layouts[s.kind][s.name] for s in statuses if s.state in ('missing', 'no location')}
    if absent:
        lines += ['', 'To get what is not there (then --data-root DIR, or --data-path NAME=DIR):']
        lines += table([(name, f'DIR/{layout.names[0]}', layout.source) for name, layout in absent.items()],
                       ('DATA SET', 'FOLDER', 'FROM'))
    broken = [s for s in statuses if s.state == 'broken']
    for kind, name in dict.fromkeys((s.kind, s.name) for s in broken):
        problems = {}
        for s in broken:
            if (s.kind, s.name) == (kind, name):
                problems.setdefault(s.problem, []).append(s.split)
        lines += ['', f'{name} ({kind}s) is broken:']
        lines += [f'  {", ".join(splits)}: {problem}' for problem, splits in problems.items()]
        lines += ['  expected layout:'] + [f'    {line}' for line in layouts[kind][name].tree.splitlines()]
    return lines


def main(argv=None):
    parser = add_data_arguments(argparse.ArgumentParser(description='Check where data sets resolve.'))
    parser.add_argument('names', nargs='*', help='data sets to check (default: all of them)')
    args = parser.parse_args(argv)
    known = {*FOREGROUND_SETS, *BACKGROUND_SETS}
    unknown = [name for name in args.names if name not in known]
    if unknown:
        parser.error(f"unknown data set {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    try:
        paths = DataPaths.from_args(args)
    except DataPathError as error:
        parser.error(str(error))
    print('\n'.join(report(paths, args.names)))
    failed = args.names and any(s.state != 'found' for s in data_set_status(paths, args.names))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
