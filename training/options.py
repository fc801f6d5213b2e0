"""The command line both trainers share. Each trainer sets the defaults of its stage (the paper's)."""
import argparse

from common.devices import PRECISIONS as DTYPES
from common.devices import check_device_name
from dataset.paths import add_data_arguments
from model.model import BACKBONES

PRECISIONS = ('auto', *DTYPES)


def training_parser(description: str, defaults: dict) -> argparse.ArgumentParser:
    """Options of the original trainers (same names), plus distributed, precision and resume options.

    `defaults` holds the stage's values of: batch_size, epoch_end, crop_min, crop_max, sample_size,
    log_train_images_interval, log_valid_interval, checkpoint_interval and the learning rates.
    """
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    data = parser.add_argument_group('data')
    data.add_argument('--dataset-name', required=True, help='foreground data set, e.g. videomatte240k, synthetic')
    data.add_argument('--background-dataset', default='backgrounds', help='backgrounds or bg20k')
    data.add_argument('--sample-size', type=int, default=defaults['sample_size'],
                      help='side of the per-sample augmented images')
    data.add_argument('--crop-min', type=int, default=defaults['crop_min'], help='smallest training crop side')
    data.add_argument('--crop-max', type=int, default=defaults['crop_max'], help='training crop sides are below this')
    data.add_argument('--own-background', type=float, default=0.0, metavar='P',
                      help='probability of showing a foreground over the background of the same name, under '
                           'one geometry (data sets made that way, e.g. synthetic, whose clothes sometimes '
                           'take the colours of their scene); 0: random pairing only, as the original')
    data.add_argument('--valid-samples', type=int, default=50, help='size of the fixed validation sample')
    add_data_arguments(parser)

    model = parser.add_argument_group('model')
    model.add_argument('--model-backbone', required=True, choices=BACKBONES)
    model.add_argument('--model-name', required=True, help='names the checkpoint and log folders')
    model.add_argument('--model-pretrain-initialization', default=None,
                       help='DeepLabV3 weights (VainF/DeepLabV3Plus-Pytorch) or a torchvision ImageNet weight file')
    model.add_argument('--model-last-checkpoint', default=None,
                       help='weights to start from (any checkpoint kind; only the weights are used)')

    optim = parser.add_argument_group('optimisation')
    optim.add_argument('--batch-size', type=int, default=defaults['batch_size'],
                       help='global batch size, split over all processes')
    optim.add_argument('--num-workers', type=int, default=16, help='DataLoader workers per process')
    optim.add_argument('--epoch-start', type=int, default=0)
    optim.add_argument('--epoch-end', type=int, default=defaults['epoch_end'])
    optim.add_argument('--max-steps', type=int, default=None, help='stop after this many optimizer steps in all')
    for module, lr in defaults['lr'].items():
        optim.add_argument(f'--lr-{module}', type=float, default=lr, help=f'Adam learning rate of the {module}')
    optim.add_argument('--lr-schedule', choices=('constant', 'cosine'), default='constant',
                       help='constant (the original) or cosine decay of every learning rate to 0 over '
                            '--lr-decay-steps')
    optim.add_argument('--lr-decay-steps', type=int, default=None, metavar='N',
                       help='length of the cosine decay in optimizer steps (default: --max-steps, or all the '
                            "steps of --epoch-start ~ --epoch-end); keep it fixed when resuming")
    optim.add_argument('--lr-warmup-steps', type=int, default=0, metavar='N',
                       help='ramp the learning rates up linearly over the first N steps')
    optim.add_argument('--precision', choices=PRECISIONS, default='auto',
                       help='autocast precision: auto = fp16 on CUDA, fp32 on CPU')
    optim.add_argument('--channels-last', action='store_true',
                       help='channels-last memory format for the model and its inputs: same results, often '
                            'faster (measured 1.4x on CPU for MattingBase, 1.5x for MattingRefine)')
    optim.add_argument('--max-nonfinite-steps', type=int, default=20,
                       help='stop after this many consecutive steps with a non-finite loss')
    optim.add_argument('--seed', type=int, default=0)
    optim.add_argument('--deterministic', action='store_true',
                       help='deterministic algorithms (slower; for exact reproduction)')

    run = parser.add_argument_group('run')
    run.add_argument('--device', default='auto', type=check_device_name,
                     help="auto (CUDA when present), cpu, cuda (every process on the GPU of its local rank), or "
                          "cuda:N (one process, on GPU N)")
    run.add_argument('--nproc', type=int, default=None,
                     help='processes to spawn on a plain start (default: one per visible GPU; 1 on CPU)')
    run.add_argument('--resume', default=None, help="a training checkpoint, or 'auto' for this run's last one")
    run.add_argument('--checkpoint-dir', default='checkpoint', help='checkpoints go to DIR/<model-name>/')
    run.add_argument('--log-dir', default='log', help='TensorBoard logs go to DIR/<model-name>/')
    run.add_argument('--log-train-loss-interval', type=int, default=10)
    run.add_argument('--log-train-images-interval', type=int, default=defaults['log_train_images_interval'])
    run.add_argument('--log-valid-interval', type=int, default=defaults['log_valid_interval'])
    run.add_argument('--checkpoint-interval', type=int, default=defaults['checkpoint_interval'])
    return parser


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Argument errors that argparse cannot see, reported as usage errors (exit status 2)."""
    if args.batch_size < 1:
        parser.error(f'--batch-size must be at least 1, got {args.batch_size}')
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
