"""Evaluate a folder of predictions against a folder of ground truth, and write the results.

    results = evaluate_folders('out/pha', 'data/synthetic/captures/pha')
    write_results(results, 'results/')
    print(format_summary(results))

Images or clips:
- By default every file is an independent image.
- With `clips=True` each folder holding frames is one clip (`true/<clip>/<frame>.png`, at any
  depth; frames directly in the root form the clip '.'). Frames are taken in natural name order
  and dtSSD is computed for each consecutive pair within a clip, never across clips. Clips are
  never guessed from the folder depth, because image sets are often nested too.

Averages: every metric is the mean over files (as benchmark.m averages over images), except dtSSD,
the mean over frame pairs; values that are undefined (MSE over an empty unknown region) are left
out of the means. RVM's spreadsheet instead counts a dtSSD of 0 for the first frame of each clip,
so its dtSSD is ours times (T - 1) / T for clips of T frames.
"""

import csv
import io
import json
import math
import posixpath
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.errors import Skips, UserError
from common.files import write_bytes

from .files import (find_images, load_alpha, load_foreground, load_trimap, match_names, misnamed_files,
                    natural_key, require_names)
from .metrics import (FRAME_METRICS, METRICS, TRIMAP_METRICS, dtssd, evaluate_matte,
                      foreground_mse, trimap_from_alpha, unknown_region)

__all__ = ['MODES', 'Results', 'evaluate_folders', 'write_results', 'format_summary']

MODES = {
    'trimap': 'the unknown region of a trimap, as the alpha matting benchmark (BGMv2 tables)',
    'frame': 'the whole frame, as Robust Video Matting',
}

# Printing more clips than this makes the table unreadable; summary.csv holds them all.
_MAX_PRINTED_CLIPS = 20

# Name of the group of all files; parentheses keep it apart from any clip folder's name.
ALL = '(all)'


@dataclass
class Results:
    """What `evaluate_folders` measured.

    mode: 'trimap' or 'frame'. region: in words, where the alpha metrics were taken.
    metrics: keys of `metrics.METRICS`, in column order.
    rows: one dict per file, {'clip': name (clip mode only), 'file': name, key: value or None},
          values at their reporting scale (`METRICS[key].label`).
    folders: the folders evaluated, by argument name.
    skipped: [(name, why)] of the files that could not be read and were skipped (`--on-error skip`).
    """
    mode: str
    region: str
    clips: bool
    metrics: tuple
    rows: list = field(default_factory=list)
    folders: dict = field(default_factory=dict)
    skipped: list = field(default_factory=list)

    def labels(self):
        return [METRICS[key].label for key in self.metrics]

    def groups(self):
        """{ALL: rows, clip name: rows, ...}: ALL alone unless in clip mode."""
        groups = {ALL: self.rows}
        if self.clips:
            for row in self.rows:
                groups.setdefault(row['clip'], []).append(row)
        return groups

    def means(self, rows=None):
        """{key: mean over `rows` (default all) of the defined values, or None if none is}."""
        rows = self.rows if rows is None else rows
        means = {}
        for key in self.metrics:
            values = [row[key] for row in rows if row[key] is not None and math.isfinite(row[key])]
            means[key] = float(np.mean(values)) if values else None
        return means


def _frame_order(name, clips):
    """Sort key: by clip, then naturally by frame name (exact name breaks ties, e.g. 01 vs 1)."""
    clip, frame = ('', name)
    if clips:
        clip, frame = posixpath.dirname(name) or '.', posixpath.basename(name)
    return natural_key(clip), clip, natural_key(frame), frame


def _check_size(array, reference, path, reference_path):
    if array.shape[:2] != reference.shape[:2]:
        (h, w), (rh, rw) = array.shape[:2], reference.shape[:2]
        raise UserError(f'{path} is {w}x{h} but {reference_path} is {rw}x{rh}; '
                        f'each file must have the size of its ground truth')


def evaluate_folders(pred, true, *, trimap=None, mode='trimap', clips=False,
                     pred_fgr=None, true_fgr=None, progress=None, skips=None):
    """Evaluate every prediction under `pred` against the file of the same name under `true`.

    pred, true: folders of alpha mattes (8- or 16-bit grayscale), matched by relative path
        without extension; a file in one folder only is an error.
    trimap: folder of trimaps (0, 128, 255) named as `true`; trimap mode only. Without it, trimap
        mode makes each trimap from the ground truth with `metrics.trimap_from_alpha`.
    mode: 'trimap' (SAD, MSE, Grad, Conn over the unknown region) or 'frame' (MAD, MSE, Grad,
        Conn over the whole frame).
    clips: treat each folder of frames as a clip and add dtSSD (always over the whole frame).
    pred_fgr, true_fgr: folders of RGB foregrounds named as `true`, both or neither; adds FgrMSE
        over the pixels of the region where the true alpha is above zero.
    progress: optional callable(done, total, name) called after each file.
    skips: a `common.errors.Skips` that a file which cannot be read (damaged, of another size, of an
        extension that is not an image's) is left to: with 'skip' it is named and left out (the
        next frame of its clip has no dtSSD), with 'stop' (and without `skips`) it is an error.
    Returns Results. Raises UserError naming the argument or file at fault.
    """
    _check_options(mode, trimap, pred_fgr, true_fgr)
    skips = skips if skips is not None else Skips('stop')
    folders = {'pred': pred, 'true': true, 'trimap': trimap, 'pred_fgr': pred_fgr, 'true_fgr': true_fgr}
    names, files = _find_files(folders, clips, skips)
    alpha_metrics = TRIMAP_METRICS if mode == 'trimap' else FRAME_METRICS
    results = Results(mode=mode, region=_region_description(mode, trimap), clips=clips,
                      metrics=alpha_metrics + (('dtssd',) if clips else ()) + (('fgr_mse',) if pred_fgr else ()),
                      folders={key: str(value) for key, value in folders.items() if value is not None})
    previous = None  # (clip, pred alpha, true alpha) of the last frame, for dtSSD
    for done, name in enumerate(names, start=1):
        try:
            row, previous = _evaluate_file(name, {kind: found[name] for kind, found in files.items()}, mode,
                                           alpha_metrics, clips, previous)
            results.rows.append(row)
        except UserError as error:
            skips.skip(name, error)
            previous = None  # the next frame's predecessor is missing: no dtSSD across the gap
        if progress is not None:
            progress(done, len(names), name)
    results.skipped = list(skips.items)
    return results


def _check_options(mode, trimap, pred_fgr, true_fgr):
    if mode not in MODES:
        raise UserError(f'mode: expected one of {", ".join(MODES)}, got {mode!r}')
    if trimap is not None and mode != 'trimap':
        raise UserError(f'--trimap is used by --mode trimap only, not by --mode {mode}')
    if (pred_fgr is None) != (true_fgr is None):
        raise UserError('--pred-fgr and --true-fgr go together: give both or neither')


def _find_files(folders, clips, skips):
    """(names in evaluation order, {kind: {name: Path}}) for the folders given (kind: 'pred', 'true',
    'trimap', 'pred_fgr', 'true_fgr'); every folder must hold the names of --true. A name whose file
    in one of them has an extension that is not an image's is left to `skips`."""
    pred, true = folders['pred'], folders['true']
    files = {'pred': find_images(pred, '--pred'), 'true': find_images(true, '--true')}
    for kind, other in (('pred', 'true'), ('true', 'pred')):
        for name, error in misnamed_files(folders[kind], files[other].keys() - files[kind].keys()).items():
            skips.skip(name, error)
            del files[other][name]
    names = match_names(files['pred'], files['true'], f'--pred {pred}', f'--true {true}')
    names.sort(key=lambda name: _frame_order(name, clips))
    for kind in ('trimap', 'pred_fgr', 'true_fgr'):
        if folders[kind] is not None:
            flag = '--' + kind.replace('_', '-')
            files[kind] = find_images(folders[kind], flag)
            for name, error in misnamed_files(folders[kind], set(names) - files[kind].keys()).items():
                skips.skip(name, error)
                names.remove(name)
            require_names(files[kind], names, f'{flag} {folders[kind]}', f'--true {true}')
    return names, files


def _region_description(mode, trimap):
    if mode == 'frame':
        return 'whole frame'
    if trimap is not None:
        return f'unknown region (128) of the trimaps in {trimap}'
    return 'unknown region of trimaps made from the ground truth (0.06 < alpha < 0.96, widened 10 px)'


def _evaluate_file(name, paths, mode, alpha_metrics, clips, previous):
    """The metrics of one file: (row, this frame's (clip, pred alpha, true alpha) for the next's dtSSD).

    paths: {kind: Path} of this name in each folder given."""
    pred_alpha, true_alpha = load_alpha(paths['pred']), load_alpha(paths['true'])
    _check_size(pred_alpha, true_alpha, paths['pred'], paths['true'])
    region = None
    try:
        if 'trimap' in paths:
            trimap_image = load_trimap(paths['trimap'])
            _check_size(trimap_image, true_alpha, paths['trimap'], paths['true'])
            region = unknown_region(trimap_image, name=str(paths['trimap']))
        elif mode == 'trimap':
            region = unknown_region(trimap_from_alpha(true_alpha))
    except ValueError as error:  # a trimap holding values other than 0, 128, 255
        raise UserError(str(error)) from None

    row = {'clip': posixpath.dirname(name) or '.'} if clips else {}
    row['file'] = name
    row.update(evaluate_matte(pred_alpha, true_alpha, region, alpha_metrics))
    if clips:
        row['dtssd'] = None  # the first frame of a clip has no predecessor
        if previous is not None and previous[0] == row['clip']:
            row['dtssd'] = dtssd(pred_alpha, previous[1], true_alpha, previous[2]) * METRICS['dtssd'].scale
        previous = (row['clip'], pred_alpha, true_alpha)
    if 'pred_fgr' in paths:
        pred_rgb, true_rgb = load_foreground(paths['pred_fgr']), load_foreground(paths['true_fgr'])
        _check_size(pred_rgb, true_alpha, paths['pred_fgr'], paths['true'])
        _check_size(true_rgb, true_alpha, paths['true_fgr'], paths['true'])
        row['fgr_mse'] = foreground_mse(pred_rgb, true_rgb, true_alpha, region) * METRICS['fgr_mse'].scale
    return row, previous


def _number(value):
    """Value for CSV/JSON: None for undefined (NaN) values, else the float."""
    return None if value is None or not math.isfinite(value) else float(value)


def _csv_text(header, rows):
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator='\n')
    writer.writerow(header)
    for row in rows:
        writer.writerow(['' if cell is None else f'{cell:.8g}' if isinstance(cell, float) else cell
                         for cell in row])
    return buffer.getvalue()


def _write_atomically(path, text):
    """Readers never see half a file (see common.files)."""
    write_bytes(str(path), text.encode('utf-8'))


def write_results(results, out):
    """Write per_file.csv, summary.csv and summary.json into folder `out` (created if missing).

    Only these three files are replaced; anything else in `out` is left alone.
    Returns the paths written.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f'--out {out}: exists and is not a folder')
    out.mkdir(parents=True, exist_ok=True)
    labels = results.labels()
    groups = results.groups()

    id_columns = ['clip', 'file'] if results.clips else ['file']
    per_file = _csv_text(id_columns + labels, (
        [row[column] for column in id_columns] + [_number(row[key]) for key in results.metrics]
        for row in results.rows))

    group_means = {group: results.means(rows) for group, rows in groups.items()}
    summary_csv = _csv_text(['group', 'files'] + labels, (
        [group, len(groups[group])] + [_number(means[key]) for key in results.metrics]
        for group, means in group_means.items()))

    def labelled(means):
        return {METRICS[key].label: _number(value) for key, value in means.items()}

    summary = {
        'mode': results.mode,
        'region': results.region,
        'folders': results.folders,
        'files': len(results.rows),
        'skipped': [{'file': name, 'reason': reason} for name, reason in results.skipped],
        'metrics': labelled(group_means[ALL]),
        'definitions': {METRICS[key].label: METRICS[key].description for key in results.metrics},
    }
    if results.clips:
        summary['frame_pairs'] = sum(row['dtssd'] is not None for row in results.rows)
        summary['clips'] = {group: {'files': len(groups[group]), 'metrics': labelled(means)}
                            for group, means in group_means.items() if group != ALL}

    paths = [out / 'per_file.csv', out / 'summary.csv', out / 'summary.json']
    for path, text in zip(paths, (per_file, summary_csv, json.dumps(summary, indent=2) + '\n')):
        _write_atomically(path, text)
    return paths


def format_summary(results):
    """A plain-text table of the means: one row for all files, and one per clip in clip mode."""
    groups = results.groups()
    shown = list(groups)
    if len(shown) > _MAX_PRINTED_CLIPS + 1:
        shown = [ALL]
    header = ['group', 'files'] + results.labels()
    table = [header]
    for group in shown[1:] + shown[:1]:  # clips first, the overall mean last
        means = results.means(groups[group])
        table.append([group, str(len(groups[group]))] + [
            'n/a' if _number(means[key]) is None else f'{means[key]:.5g}'
            for key in results.metrics])
    widths = [max(len(row[column]) for row in table) for column in range(len(header))]
    lines = [f'{results.mode} mode, {results.region}:']
    for row in table:
        cells = [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])]
        lines.append('  '.join([row[0].ljust(widths[0])] + cells))
    if len(shown) < len(groups):
        lines.append(f'({len(groups) - 1} clips; per-clip means are in summary.csv)')
    return '\n'.join(lines)
