"""Background Matting V2 networks.

    from model import MattingRefine
    model = MattingRefine('mobilenetv2', backbone_scale=0.25, refine_mode='sampling',
                          refine_sample_pixels=80_000).eval()
    pha, fgr, pha_sm, fgr_sm, err_sm, ref_sm = model(src, bgr)

    from model import optimize
    fast = optimize(model)                  # the same outputs, faster (model/optimize.py)
"""
from .checkpoint import CheckpointError, load_checkpoint, load_matched_state_dict
from .model import BACKBONES, Base, MattingBase, MattingRefine
from .optimize import optimize
from .refiner import Refiner

__all__ = ['BACKBONES', 'Base', 'MattingBase', 'MattingRefine', 'Refiner',
           'CheckpointError', 'load_checkpoint', 'load_matched_state_dict', 'optimize']
