"""torch.hub entry points: the networks of this project, with the bundled demonstration weights.

    import torch
    model = torch.hub.load('path/to/this/checkout', 'mattingrefine', source='local', pretrained=True)
    model = torch.hub.load('OWNER/REPO', 'mattingrefine', backbone='mobilenetv2')   # from GitHub
    print(torch.hub.list('OWNER/REPO'))                  # ['mattingbase', 'mattingrefine']

`pretrained=True` loads the weights bundled in weights/ (a MobileNetV2 MattingRefine trained on synthetic
data only: a demonstration, not for real photos); the official BGMv2 weights are loaded with
`model.load_checkpoint(model, path)` once downloaded (README, "The model"). Every model is returned in
eval mode, on the CPU, as written (`model.optimize(model)` makes its fast form).
"""
dependencies = ['torch', 'torchvision']

import os  # noqa: E402 (torch.hub reads `dependencies` first)

from model import MattingBase, MattingRefine, load_checkpoint  # noqa: E402

DEMO_WEIGHTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'weights',
                            'mattingrefine_mobilenetv2_synthetic_fp16.pth')
DEMO_BACKBONE = 'mobilenetv2'


def pretrained_weights(backbone: str, model_type: str) -> str:
    """The bundled weights for `backbone`, or a ValueError saying where other weights come from."""
    if backbone != DEMO_BACKBONE:
        raise ValueError(f"pretrained=True: the bundled weights are a {DEMO_BACKBONE} {model_type}'s; for "
                         f"{backbone}, download the official BGMv2 weights and load them with "
                         "model.load_checkpoint(model, path) (README, 'The model')")
    return DEMO_WEIGHTS


def mattingbase(backbone: str = 'mobilenetv2', pretrained: bool = False) -> MattingBase:
    """MattingBase (the base network alone, at the input's resolution).

    Args:
        backbone: 'resnet50', 'resnet101', 'mobilenetv2' or 'mobilenetv3'.
        pretrained: the bundled weights (MobileNetV2 only: the base network of the bundled MattingRefine).
    """
    model = MattingBase(backbone)
    if pretrained:
        load_checkpoint(model, pretrained_weights(backbone, 'MattingRefine'))
    return model.eval()


def mattingrefine(backbone: str = 'mobilenetv2', pretrained: bool = False, backbone_scale='auto',
                  refine_mode: str = 'sampling', refine_sample_pixels='auto', refine_threshold: float = 0.1,
                  refine_kernel_size: int = 3, refine_prevent_oversampling: bool = True) -> MattingRefine:
    """MattingRefine (base network at `backbone_scale`, refiner at full resolution).

    Args:
        backbone: 'resnet50', 'resnet101', 'mobilenetv2' or 'mobilenetv3'.
        pretrained: the bundled weights (MobileNetV2 only).
        backbone_scale, refine_sample_pixels: a number, or 'auto' (default): chosen per frame size, the
            paper's 0.25 and 80,000 at HD, 0.125 and 320,000 at 4K.
        refine_mode, refine_threshold, refine_kernel_size, refine_prevent_oversampling: see `Refiner`.
    """
    model = MattingRefine(backbone, backbone_scale=backbone_scale, refine_mode=refine_mode,
                          refine_sample_pixels=refine_sample_pixels, refine_threshold=refine_threshold,
                          refine_kernel_size=refine_kernel_size,
                          refine_prevent_oversampling=refine_prevent_oversampling)
    if pretrained:
        load_checkpoint(model, pretrained_weights(backbone, 'MattingRefine'))
    return model.eval()
