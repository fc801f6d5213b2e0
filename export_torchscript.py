"""Export MattingRefine or MattingBase as a TorchScript file that needs nothing but PyTorch to run.

Example:

    python export_torchscript.py \
        --model-type mattingrefine \
        --model-backbone mobilenetv2 \
        --model-checkpoint pytorch_mobilenetv2.pth \
        --precision fp32 \
        --output torchscript_mobilenetv2_fp32.pth

Using the file, as with the official TorchScript files (no import of this project):

    model = torch.jit.load('torchscript_mobilenetv2_fp32.pth').eval()
    model.backbone_scale = 0.25
    model.refine_mode = 'sampling'              # 'full', 'sampling' or 'thresholding'
    model.refine_sample_pixels = 80_000
    model.refine_threshold = 0.7
    model.refine_prevent_oversampling = True
    pha, fgr, pha_sm, fgr_sm, err_sm, ref_sm = model(src, bgr)    # see MattingRefine

The backbone, the weights' dtype, the refine kernel size and the patch crop/replace methods are fixed
in the file. Files using `--model-refine-patch-crop-method roi_align` need `import torchvision` before
`torch.jit.load` (the op lives in torchvision); the default, unfold, needs only torch.
"""
import argparse
import sys
from typing import Optional, Sequence

from common.errors import UserError, exit_with_error
from export.torchscript import (HoistedMattingRefine, export_file, model_metadata, read_metadata, save,
                                script_model)
from inference.model import add_model_arguments

# The import path of earlier versions for the functions of export.torchscript.
__all__ = ['HoistedMattingRefine', 'model_metadata', 'read_metadata', 'save', 'script_model', 'get_args_parser',
           'main']


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description='Export a matting model as TorchScript.')
    add_model_arguments(parser, channels_last=False)
    parser.add_argument('--freeze', action='store_true',
                        help='torch.jit.freeze: weights become constants, batch norms are folded into the '
                             'convolutions; the file then runs only in its precision')
    parser.add_argument('--output', required=True, help='the TorchScript file to write')
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = get_args_parser()
    args = parser.parse_args(argv)
    try:
        export_file(args)
    except (UserError, ValueError, OSError) as error:  # CheckpointError is a ValueError
        exit_with_error(parser.prog, error)


if __name__ == '__main__':
    main(sys.argv[1:])
