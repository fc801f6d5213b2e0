"""Check where the data sets resolve: `--data-root DIR` (or env BGM_DATA_ROOT) holds them under their
standard names, `--data-path NAME=DIR` (or env BGM_DATA_<NAME>) overrides one. The logic lives in
`dataset.paths`; this module re-exports it for code that imports `data_path`.

    python data_path.py --data-root /data videomatte240k bg20k
"""
import argparse
import sys

from dataset.paths import *  # noqa: F401,F403  (the import path of earlier versions)
from dataset.paths import BACKGROUND_SETS, FOREGROUND_SETS, DataPathError, DataPaths, add_data_arguments


def main(argv=None):
    parser = add_data_arguments(argparse.ArgumentParser(description='Check where data sets resolve.'))
    parser.add_argument('names', nargs='*', help='data sets to check (default: all that can be located)')
    args = parser.parse_args(argv)
    paths = DataPaths.from_args(args)
    failed = False
    for kind, sets, resolve in (('foreground', FOREGROUND_SETS, paths.foregrounds),
                                ('background', BACKGROUND_SETS, paths.backgrounds)):
        for name, layout in sets.items():
            if args.names and name not in args.names:
                continue
            for split in layout.splits:
                try:
                    resolved = resolve(name, split)
                    print(f'{kind:10} {name:16} {split:8} {len(resolved):8} files  {resolved.folder}')
                except DataPathError as error:
                    failed = failed or bool(args.names)
                    print(f'{kind:10} {name:16} {split:8} unavailable: {str(error).splitlines()[0]}')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
