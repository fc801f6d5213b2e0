r"""Stage 1: trains MattingBase at low resolution (the paper: 256 ~ 512 px crops).

    python train_base.py --dataset-name videomatte240k --background-dataset backgrounds \
        --model-backbone resnet50 --model-name mattingbase-resnet50-videomatte240k \
        --model-pretrain-initialization pretraining/best_deeplabv3_resnet50_voc_os16.pth --epoch-end 8

Several GPUs: `torchrun --nproc_per_node 4 train_base.py ...`, or plainly as above (one process per
visible GPU is spawned); Slurm: see scripts/slurm/. A quick CPU smoke run on synthetic data:

    python -m dataset.synthetic --out data/synthetic --count 16 --size 160 160
    python train_base.py --data-path synthetic=data/synthetic --dataset-name synthetic \
        --background-dataset synthetic --model-backbone mobilenetv2 --model-name smoke --device cpu \
        --batch-size 2 --num-workers 0 --sample-size 128 --crop-min 64 --crop-max 96 --max-steps 20
"""
import sys

from common.memory import retain_freed_memory
from dataset import BatchAugment
from model import MattingBase
from training.engine import Stage, run
from training.losses import base_loss
from training.options import check_arguments, training_parser
from training.recipe import adam, composition_datasets, initialise_model

DEFAULTS = dict(batch_size=8, epoch_end=8, sample_size=512, crop_min=256, crop_max=512,
                log_train_images_interval=2000, log_valid_interval=5000, checkpoint_interval=5000,
                lr=dict(backbone=1e-4, aspp=5e-4, decoder=5e-4))


def build_model(args):
    return initialise_model(MattingBase(args.model_backbone), args)


def losses(model, src, bgr, true_pha, true_fgr):
    pha, fgr, err, _ = model(src, bgr)
    return base_loss(pha, fgr, err, true_pha, true_fgr), {'pha': pha, 'fgr': fgr, 'err': err}


def optimizer(model, args):
    return adam(model, args, DEFAULTS['lr'])


def datasets(args):
    return composition_datasets(args, 'base')


def batch_augment(args, generator):
    return BatchAugment.base((args.crop_min, args.crop_max), generator=generator)


STAGE = Stage(
    name='base',
    build_model=build_model,
    optimizer=optimizer,
    datasets=datasets,
    batch_augment=batch_augment,
    losses=losses,
)


def get_args_parser():
    return training_parser(__doc__, DEFAULTS)


def main(argv=None) -> int:
    """Trains; returns the exit status: 0, or 130 after a Ctrl-C stopped the run (its checkpoint saved)."""
    parser = get_args_parser()
    args = parser.parse_args(argv)
    check_arguments(parser, args)
    return run(STAGE, args, parser.prog)


if __name__ == '__main__':
    retain_freed_memory()  # the same large tensors every step: no fresh pages for each
    sys.exit(main())
