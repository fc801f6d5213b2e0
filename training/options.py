"""The command line both trainers share. Each trainer sets the defaults of its stage (the paper's)."""
import argparse
import os
from typing import Callable, Optional

from common.devices import PRECISIONS as DTYPES
from common.devices import check_device_name
from common.errors import exit_with_error
from dataset.paths import add_data_arguments
from model.model import BACKBONES

PRECISIONS = ('auto', *DTYPES)
METRICS = ('pha_sad', 'pha_mse', 'loss')  # what validation measures (training.validation), lower is better
MAX_DEFAULT_WORKERS = 8


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The description as written (its example commands stay on lines of their own), and each option's
    default once, after its help: not where the help already tells it, nor for an option that is off or
    unset by default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ''
        if (action.default in (None, False, [], argparse.SUPPRESS) or 'default' in help_text
                or action.required or not action.option_strings):
            return help_text
        return f'{help_text} (default: %(default)s)'


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity: what taskset, cgroups or Slurm leave it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1


def default_num_workers(cpus: int) -> int:
    """DataLoader workers of a process that may use `cpus` CPUs: one a CPU, up to MAX_DEFAULT_WORKERS."""
    return max(1, min(MAX_DEFAULT_WORKERS, cpus))


def keep_count(text: str) -> Optional[int]:
    """--keep-last: a count of 1 or more, or 'all' (None)."""
    if text == 'all':
        return None
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"expected a number of checkpoints, 1 or more, or 'all'; got {text!r}")
    return count


def training_parser(description: str, defaults: dict,
                    stage_options: Optional[Callable] = None) -> argparse.ArgumentParser:
    """Options of the original trainers (same names), plus distributed, precision, resume and keeping options.

    `defaults` holds the stage's values of: batch_size, epoch_end, crop_min, crop_max, sample_size,
    log_train_images_interval, log_valid_interval, checkpoint_interval and the learning rates.
    `stage_options(parser)` adds the stage's own model options (a group of them), listed after the model's.
    """
    parser = argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)
    data = parser.add_argument_group('data')
    data.add_argument('--dataset-name', required=True, metavar='NAME',
                      help='The foreground data set, e.g. videomatte240k or synthetic (required).')
    data.add_argument('--background-dataset', default='backgrounds', metavar='NAME',
                      help='The background data set: backgrounds or bg20k.')
    data.add_argument('--sample-size', type=int, default=defaults['sample_size'], metavar='PX',
                      help='The side of each sample after the per-sample augmentation.')
    data.add_argument('--crop-min', type=int, default=defaults['crop_min'], metavar='PX',
                      help='The smallest side of the training crops.')
    data.add_argument('--crop-max', type=int, default=defaults['crop_max'], metavar='PX',
                      help='The sides of the training crops are below this.')
    data.add_argument('--own-background', type=float, default=0.0, metavar='P',
                      help='The probability of showing a foreground over the background of its own name, under '
                           'one geometry, for data sets made that way (e.g. synthetic); 0 pairs at random only, '
                           'as the original.')
    data.add_argument('--valid-samples', type=int, default=50, metavar='N',
                      help='The size of the fixed validation sample.')
    data.add_argument('--num-workers', type=int, default=None, metavar='N',
                      help='DataLoader workers per process (default: one per CPU the process may use, its share '
                           f'when several processes share the machine, at most {MAX_DEFAULT_WORKERS}: '
                           f'{default_num_workers(available_cpus())} for one process here).')
    add_data_arguments(parser)

    model = parser.add_argument_group('model')
    model.add_argument('--model-backbone', required=True, choices=BACKBONES,
                       help='The backbone of the network (required).')
    model.add_argument('--model-name', required=True, metavar='NAME',
                       help='The name of the run: its checkpoints and logs go to folders of that name (required).')
    model.add_argument('--model-pretrain-initialization', default=None, metavar='FILE',
                       help='DeepLabV3 weights (VainF/DeepLabV3Plus-Pytorch) or a torchvision ImageNet weight '
                            'file to initialise the backbone from.')
    model.add_argument('--model-last-checkpoint', default=None, metavar='FILE',
                       help='Weights to start from, of any checkpoint kind (only the weights are used).')
    if stage_options is not None:
        stage_options(parser)

    optim = parser.add_argument_group('optimisation')
    optim.add_argument('--batch-size', type=int, default=defaults['batch_size'], metavar='N',
                       help='The global batch size, split evenly over all processes.')
    optim.add_argument('--epoch-start', type=int, default=0, metavar='E',
                       help='The number of the first epoch (it sets the data order and augmentation).')
    optim.add_argument('--epoch-end', type=int, default=defaults['epoch_end'], metavar='E',
                       help='Training stops before this epoch.')
    optim.add_argument('--max-steps', type=int, default=None, metavar='N',
                       help='Stop after this many optimizer steps in all (default: whole epochs).')
    for module, lr in defaults['lr'].items():
        optim.add_argument(f'--lr-{module}', type=float, default=lr, metavar='LR',
                           help=f'The Adam learning rate of the {module}.')
    optim.add_argument('--lr-schedule', choices=('constant', 'cosine'), default='constant',
                       help='Constant rates (the original) or a cosine decay of every rate to 0 over '
                            '--lr-decay-steps.')
    optim.add_argument('--lr-decay-steps', type=int, default=None, metavar='N',
                       help='The length of the cosine decay in optimizer steps, to keep fixed when resuming '
                            '(default: --max-steps, or all the steps of --epoch-start ~ --epoch-end).')
    optim.add_argument('--lr-warmup-steps', type=int, default=0, metavar='N',
                       help='Ramp the learning rates up linearly over the first N steps.')
    optim.add_argument('--max-nonfinite-steps', type=int, default=20, metavar='N',
                       help='Stop after this many consecutive steps with a non-finite loss.')
    optim.add_argument('--seed', type=int, default=0, help='The seed of every random choice of the run.')
    optim.add_argument('--deterministic', action='store_true',
                       help='Use deterministic algorithms only (slower; for exact reproduction).')

    speed = parser.add_argument_group('device and speed')
    speed.add_argument('--device', default='auto', type=check_device_name,
                       help='auto (CUDA when present), cpu, cuda (every process on the GPU of its local rank) '
                            'or cuda:N (one process, on GPU N).')
    speed.add_argument('--nproc', type=int, default=None, metavar='N',
                       help='The processes a plain start spawns (default: one per visible GPU; 1 on CPU).')
    speed.add_argument('--precision', choices=PRECISIONS, default='auto',
                       help='The autocast precision; auto is fp16 on CUDA and fp32 on CPU.')
    speed.add_argument('--channels-last', action='store_true',
                       help='Store the model and its inputs channels-last: the same results, often faster '
                            '(1.4x on CPU for MattingBase, 1.5x for MattingRefine).')

    saving = parser.add_argument_group('checkpoints')
    saving.add_argument('--checkpoint-dir', default='checkpoint', metavar='DIR',
                        help='Checkpoints go to DIR/<model-name>/.')
    saving.add_argument('--checkpoint-interval', type=int, default=defaults['checkpoint_interval'], metavar='N',
                        help='Write the weights (epoch-E-iter-S.pth) and the training state (last.pth) every N '
                             'steps; weights also at the end of each epoch (epoch-E.pth).')
    saving.add_argument('--keep-last', type=keep_count, default=3, metavar='K',
                        help="Keep the weight files of the last K checkpoints this run wrote, or 'all' as the "
                             'original (last.pth, best.pth and files the run did not write are always kept).')
    saving.add_argument('--best-metric', choices=METRICS, default='pha_sad',
                        help='At each validation, the weights with the lowest value of this validation metric '
                             'so far are kept as best.pth.')
    saving.add_argument('--resume', default=None, metavar='FILE',
                        help="Continue a run exactly from a training checkpoint, or 'auto' for this run's "
                             'last.pth if there is one.')

    logs = parser.add_argument_group('logs')
    logs.add_argument('--log-dir', default='log', metavar='DIR', help='TensorBoard logs go to DIR/<model-name>/.')
    logs.add_argument('--log-train-loss-interval', type=int, default=10, metavar='N',
                      help='Log the losses, learning rates and speed every N steps.')
    logs.add_argument('--log-train-images-interval', type=int, default=defaults['log_train_images_interval'],
                      metavar='N', help='Log the images of a training batch and its predictions every N steps.')
    logs.add_argument('--log-valid-interval', type=int, default=defaults['log_valid_interval'], metavar='N',
                      help='Validate (loss, SAD and MSE of alpha) every N steps.')
    return parser


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Argument errors that argparse cannot see, reported as usage errors (exit status 2); then the files
    given, before any work: one that is missing is `prog: error: ...` naming it, exit status 1."""
    for name in ('batch_size', 'checkpoint_interval', 'log_train_loss_interval', 'log_train_images_interval',
                 'log_valid_interval'):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.num_workers is not None and args.num_workers < 0:
        parser.error(f'--num-workers must be 0 or more, got {args.num_workers}')
    if not 0 < args.crop_min < args.crop_max:
        parser.error(f'--crop-min and --crop-max must satisfy 0 < min < max, got {args.crop_min}, {args.crop_max}')
    if not 0 <= args.own_background <= 1:
        parser.error(f'--own-background is a probability, 0 ~ 1; got {args.own_background}')
    if args.lr_warmup_steps < 0:
        parser.error(f'--lr-warmup-steps must be 0 or more, got {args.lr_warmup_steps}')
    if args.lr_decay_steps is not None and args.lr_decay_steps < 1:
        parser.error(f'--lr-decay-steps must be at least 1, got {args.lr_decay_steps}')
    if args.epoch_end <= args.epoch_start:
        parser.error(f'--epoch-end {args.epoch_end} must be greater than --epoch-start {args.epoch_start}')
    check_start_weights(parser.prog, args)


def check_start_weights(prog: str, args: argparse.Namespace) -> None:
    """--model-last-checkpoint must name a file: an empty value (an unset shell variable, as in
    `--model-last-checkpoint "$BASE"`) or a missing file would otherwise start the refine stage from random
    weights, or fail only once the data sets are read."""
    path = args.model_last_checkpoint
    if path is None:
        return
    if not path:
        exit_with_error(prog, "--model-last-checkpoint '': an empty path; give the weights to start from, or "
                              'leave the option out to start from fresh weights')
    if not os.path.isfile(path):
        what = 'a folder, not a file' if os.path.isdir(path) else 'no such file'
        exit_with_error(prog, f'--model-last-checkpoint {path}: {what} (expected weights such as '
                              'checkpoint/<model-name>/epoch-7.pth)')
