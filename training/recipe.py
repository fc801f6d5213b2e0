"""Pieces of the recipe both stages use: data sets, weight initialisation, optimizer groups."""
import os
from pathlib import Path

import torch
from torch import nn

from common.errors import UserError, first_line
from dataset import paths as data_path
from dataset import (BackgroundDataset, CompositionDataset, ForegroundDataset, SampleDataset, train_transforms,
                     valid_transforms)
from model.checkpoint import (CheckpointError, describe_load_error, load_checkpoint, load_deeplabv3_state_dict,
                              load_imagenet_backbone, load_weights_file)


def composition_datasets(args, stage: str):
    """Training and validation sets of (pha, fgr, bgr) at --sample-size, paths checked before training.

    Training pairs each foreground with a random background each epoch under --seed; validation is a
    fixed sample of --valid-samples items (geometry-only augmentation, its own seed).
    """
    # A DataPathError (a UserError) names the folder and shows the expected layout.
    fgr_train = data_path.resolve_dataset(args.dataset_name, 'train', args)
    fgr_valid = data_path.resolve_dataset(args.dataset_name, 'valid', args)
    bgr_train = data_path.resolve_backgrounds(args.background_dataset, 'train', args)
    bgr_valid = data_path.resolve_backgrounds(args.background_dataset, 'valid', args)
    if args.own_background > 0:
        stems = ([Path(f.fgr).stem for f in fgr_train.files], [Path(f).stem for f in bgr_train.files])
        if stems[0] != stems[1]:
            raise UserError(f'--own-background needs backgrounds named as the foregrounds, one each; '
                            f'{fgr_train.folder} and {bgr_train.folder} differ')
    train = CompositionDataset(ForegroundDataset(fgr_train.files), BackgroundDataset(bgr_train.files),
                               *train_transforms(args.sample_size, stage), seed=args.seed,
                               own_background=args.own_background)
    valid = CompositionDataset(ForegroundDataset(fgr_valid.files), BackgroundDataset(bgr_valid.files),
                               *valid_transforms(args.sample_size), seed=args.seed + 1)
    return train, SampleDataset(valid, min(args.valid_samples, len(valid)))


def initialise_model(model: nn.Module, args) -> nn.Module:
    """--model-pretrain-initialization (DeepLabV3 or ImageNet weights), then --model-last-checkpoint.

    A missing, unreadable or unfitting file is a UserError naming it.
    """
    if args.model_pretrain_initialization:
        path = args.model_pretrain_initialization
        option = f'--model-pretrain-initialization {path}'
        if not os.path.isfile(path):
            raise UserError(f'{option}: no such file (expected DeepLabV3 weights of VainF/DeepLabV3Plus-Pytorch '
                            'or a torchvision ImageNet weight file)')
        try:
            state = load_weights_file(path)
        except Exception as error:  # a damaged file fails anywhere in the unpickler
            raise UserError(f'{option}: cannot read it as weights: {describe_load_error(error)}') from error
        if not isinstance(state, dict):
            raise UserError(f'{option}: holds a {type(state).__name__}, not a dict of weights')
        try:
            if 'model_state' in state:
                load_deeplabv3_state_dict(model, state, print_stats=False)
            else:
                load_imagenet_backbone(model, path, print_stats=False)
        except CheckpointError as error:
            raise UserError(f'{option}: {first_line(error)}') from error
    if args.model_last_checkpoint:
        if not os.path.isfile(args.model_last_checkpoint):
            raise UserError(f'--model-last-checkpoint {args.model_last_checkpoint}: no such file')
        try:
            # A MattingBase checkpoint starts a MattingRefine: the refiner keeps its fresh weights.
            load_checkpoint(model, args.model_last_checkpoint, allow_missing_refiner=True)
        except CheckpointError as error:  # its message names the file and what is wrong
            raise UserError(first_line(error)) from error
    return model


def adam(model: nn.Module, args, modules) -> torch.optim.Adam:
    """The optimizer of both stages, as the original: Adam with its default betas and eps, one parameter
    group per top-level module (named, for the logs) at its --lr-<module> learning rate."""
    return torch.optim.Adam([{'name': name, 'params': getattr(model, name).parameters(),
                              'lr': getattr(args, f'lr_{name}')} for name in modules])
