"""Run by tests/test_training.py under torchrun: trains MattingBase with DDP for a few steps, then
every rank writes its own copy of the weights so that the test can compare them.

    PYTHONPATH=. torchrun --nproc_per_node 2 tests/helpers/ddp_train.py OUT_DIR <train_base.py arguments>
"""
import os
import sys

import torch


import train_base
from training import distributed
from training.engine import Trainer
from training.options import check_arguments, training_parser


def main():
    out, argv = sys.argv[1], sys.argv[2:]
    parser = training_parser('DDP test', train_base.DEFAULTS)
    args = parser.parse_args(argv)
    check_arguments(parser, args)
    context = distributed.setup(distributed.launcher_environment(), torch.device('cpu'))
    try:
        trainer = Trainer(train_base.STAGE, args, context)
        trainer.fit()
        weights = trainer.model.module.state_dict()
        torch.save(weights, os.path.join(out, f'rank{context.rank}.pth'))
        with open(os.path.join(out, f'rank{context.rank}.txt'), 'w') as f:
            f.write(f'{context.world_size} {trainer.step} {type(trainer.model).__name__}')
    finally:
        distributed.cleanup()


if __name__ == '__main__':
    main()
