r"""Stage 2: trains MattingRefine at high resolution (the paper: 1024 ~ 2048 px crops), starting from
the weights of stage 1.

    python train_refine.py --dataset-name videomatte240k --background-dataset backgrounds \
        --model-backbone resnet50 --model-name mattingrefine-resnet50-videomatte240k \
        --model-last-checkpoint checkpoint/mattingbase-resnet50-videomatte240k/epoch-7.pth --epoch-end 1

BatchNorm is synchronised across processes (SyncBatchNorm): the per-GPU batch is small at 2048 px.
A quick CPU smoke run on synthetic data (see train_base.py for making it):

    python train_refine.py --data-path synthetic=data/synthetic --dataset-name synthetic \
        --background-dataset synthetic --model-backbone mobilenetv2 --model-name smoke-refine \
        --model-last-checkpoint checkpoint/smoke/epoch-0-iter-20.pth --device cpu --batch-size 2 \
        --num-workers 0 --sample-size 160 --crop-min 128 --crop-max 160 --max-steps 20 \
        --model-backbone-scale 0.5 --model-refine-sample-pixels 4000
"""
import sys

from common.memory import retain_freed_memory
from dataset import BatchAugment
from model import MattingRefine
from model.refiner import REFINE_MODES
from training.engine import Stage, run
from training.losses import refine_loss
from training.options import check_arguments, training_parser
from training.recipe import adam, composition_datasets, initialise_model

DEFAULTS = dict(batch_size=4, epoch_end=1, sample_size=2048, crop_min=1024, crop_max=2048,
                log_train_images_interval=1000, log_valid_interval=2000, checkpoint_interval=2000,
                lr=dict(backbone=5e-5, aspp=5e-5, decoder=1e-4, refiner=3e-4))


def build_model(args):
    model = MattingRefine(args.model_backbone,
                          backbone_scale=args.model_backbone_scale,
                          refine_mode=args.model_refine_mode,
                          refine_sample_pixels=args.model_refine_sample_pixels,
                          refine_threshold=args.model_refine_threshold,
                          refine_kernel_size=args.model_refine_kernel_size,
                          # Same patches as 'unfold', but its backward scatters into a tensor the size of
                          # the image, not of every overlapping window: a third off a CPU step at 448 px.
                          refine_patch_crop_method='gather')
    return initialise_model(model, args)


def losses(model, src, bgr, true_pha, true_fgr):
    pha, fgr, pha_sm, fgr_sm, err_sm, ref_sm = model(src, bgr)
    terms = refine_loss(pha, fgr, pha_sm, fgr_sm, err_sm, true_pha, true_fgr)
    return terms, {'pha': pha, 'fgr': fgr, 'err': err_sm, 'ref': ref_sm}


def optimizer(model, args):
    return adam(model, args, DEFAULTS['lr'])


def datasets(args):
    return composition_datasets(args, 'refine')


def batch_augment(args, generator):
    return BatchAugment.refine((args.crop_min, args.crop_max), generator=generator)


STAGE = Stage(
    name='refine',
    build_model=build_model,
    optimizer=optimizer,
    datasets=datasets,
    batch_augment=batch_augment,
    losses=losses,
    sync_batchnorm=True,
)


def refiner_options(parser):
    refine = parser.add_argument_group('refiner')
    refine.add_argument('--model-backbone-scale', type=float, default=0.25, metavar='S',
                        help='The resolution of the base network relative to the crop, 1/2 at most.')
    refine.add_argument('--model-refine-mode', choices=REFINE_MODES, default='sampling',
                        help='Which pixels the refiner re-computes: all (full), the patches of largest predicted '
                             'error (sampling) or those above --model-refine-threshold (thresholding).')
    refine.add_argument('--model-refine-sample-pixels', type=int, default=80_000, metavar='N',
                        help='The full-resolution pixels refined in sampling mode, in 4x4 patches.')
    refine.add_argument('--model-refine-threshold', '--model-refine-thresholding', type=float, default=0.7,
                        metavar='T', help='The predicted error above which thresholding mode refines, 0 ~ 1.')
    refine.add_argument('--model-refine-kernel-size', type=int, choices=[1, 3], default=3,
                        help="The size of the refiner's convolution kernels.")


def get_args_parser():
    return training_parser(__doc__, DEFAULTS, refiner_options)


def main(argv=None) -> int:
    """Trains; returns the exit status: 0, or 130 after a Ctrl-C stopped the run (its checkpoint saved)."""
    parser = get_args_parser()
    args = parser.parse_args(argv)
    check_arguments(parser, args)
    return run(STAGE, args, parser.prog)


if __name__ == '__main__':
    retain_freed_memory()  # the same large tensors every step: no fresh pages for each
    sys.exit(main())
