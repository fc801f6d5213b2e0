"""Which weight files a run keeps: those of its last K checkpoints (--keep-last), and the best by a validation
metric as best.pth (--best-metric), as PyTorch Lightning's ModelCheckpoint (save_top_k, save_last) and the
Hugging Face Trainer (save_total_limit, load_best_model_at_end) keep theirs.

Only a file that this run wrote is ever removed, and only as it was written: each is listed with its size
and modification time, and a file changed since (copied over, rewritten) stays, as do files of other runs
and of earlier versions of the trainer, last.pth and best.pth. The list travels in the training state, so
a run stopped and resumed many times (a Slurm job requeued at each time limit) keeps K files too, and a
resumed run does not take a worse validation for its best; a new run in the same folder starts a list of
its own (and replaces last.pth and best.pth, as before). A checkpoint step whose epoch also ended leaves
two files of the same weights (epoch-E-iter-S.pth and epoch-E.pth): they count as one checkpoint.
"""
import math
import os
from typing import Dict, List, Optional

import torch
from tqdm import tqdm

from .state import save_weights

BEST = 'best.pth'


class KeptCheckpoints:
    """The weight files of a run in `folder`, and its best validation so far.

    keep_last: how many checkpoints (steps) keep their files; None keeps all, as the original.
    metric: the validation metric that picks best.pth, lower is better ('pha_sad', 'pha_mse', 'loss').
    """

    def __init__(self, folder: str, keep_last: Optional[int], metric: str):
        self.folder, self.keep_last, self.metric = folder, keep_last, metric
        self.written: List[Dict] = []     # {'name', 'step', 'size', 'mtime_ns'}, in the order written
        self.best: Optional[Dict] = None  # {'metric', 'value', 'step'}

    def state_dict(self) -> Dict:
        """What the training state records (plain values: it loads with weights_only=True)."""
        return {'written': [dict(entry) for entry in self.written], 'best': dict(self.best) if self.best else None}

    def load_state_dict(self, state: Dict) -> None:
        self.written = [dict(entry) for entry in state.get('written') or []]
        best = state.get('best')
        # Another metric now: its first validation starts the record (and writes best.pth).
        self.best = dict(best) if best and best.get('metric') == self.metric else None

    def wrote(self, name: str, step: int) -> None:
        """Records a weight file the run has just written at optimizer step `step`."""
        info = os.stat(os.path.join(self.folder, name))
        self.written = [entry for entry in self.written if entry['name'] != name]
        self.written.append({'name': name, 'step': step, 'size': info.st_size, 'mtime_ns': info.st_mtime_ns})

    def prune(self) -> List[str]:
        """Removes the files of the checkpoints before the last `keep_last` ones; returns their names."""
        if self.keep_last is None:
            return []
        kept_steps = sorted({entry['step'] for entry in self.written})[-self.keep_last:]
        removed = []
        for entry in [entry for entry in self.written if entry['step'] not in kept_steps]:
            self.written.remove(entry)
            path = os.path.join(self.folder, entry['name'])
            try:
                info = os.stat(path)
                if (info.st_size, info.st_mtime_ns) == (entry['size'], entry['mtime_ns']):
                    os.remove(path)
                    removed.append(entry['name'])
            except FileNotFoundError:
                pass
            except OSError as error:  # a file left behind is no reason to stop training
                tqdm.write(f'warning: cannot remove the old checkpoint {path}: {error.strerror or error}')
        return removed

    def improves(self, metrics: Dict[str, float]) -> bool:
        """Whether a validation's metrics beat the best so far."""
        value = metrics.get(self.metric, math.nan)
        return math.isfinite(value) and (self.best is None or value < self.best['value'])

    def keep_best(self, model: torch.nn.Module, metrics: Dict[str, float], step: int) -> str:
        """After a validation at `step` (rank 0): writes best.pth where it improved on the best so far. Returns
        what to add to the validation's log line; UserError naming the file if it cannot be written."""
        if not self.improves(metrics):
            return f"; {BEST} stays at step {self.best['step']} ({self.best['value']:.4g})" if self.best else ''
        save_weights(model, os.path.join(self.folder, BEST))
        self.best = {'metric': self.metric, 'value': float(metrics[self.metric]), 'step': step}
        return f'; the best valid/{self.metric} so far: {BEST} written'

    def describe(self, checkpoint_dir: str, checkpoint_interval: int, valid_interval: int) -> str:
        """Where the checkpoints go and which stay, for the first lines of a run."""
        kept = 'all kept' if self.keep_last is None else f'the last {self.keep_last} kept (--keep-last)'
        return (f'Checkpoints go to {checkpoint_dir}: last.pth, the training state to resume from; the weights '
                f'every {checkpoint_interval} steps (epoch-E-iter-S.pth) and at the end of each epoch '
                f'(epoch-E.pth), {kept}; best.pth, the weights of the lowest valid/{self.metric} '
                f'(validation every {valid_interval} steps)')
