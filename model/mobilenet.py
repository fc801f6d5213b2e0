"""MobileNetV2 (as the official BGMv2 checkpoints) and MobileNetV3-Large encoders."""
from typing import Tuple

import torch
from torch import nn
from torchvision.models import mobilenet_v3_large
from torchvision.models.mobilenetv2 import MobileNetV2


class FeaturePyramid(nn.Module):
    """The forward of both MobileNet encoders: `features` run in turn, the input and the outputs of the
    stages that end at features[1] (1/2), [3] (1/4) and [6] (1/8) kept for the decoder's shortcuts.

    Output, deepest first: (x4, x3, x2, x1, x0), x0 the input itself.
    """

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        x0, x1, x2, x3 = x, x, x, x
        for index, block in enumerate(self.features):
            x = block(x)
            if index == 1:
                x1 = x
            elif index == 3:
                x2 = x
            elif index == 6:
                x3 = x
        return x, x3, x2, x1, x0


class MobileNetV2Encoder(FeaturePyramid, MobileNetV2):
    """torchvision's MobileNetV2 without its last 1x1 convolution and classifier, with stages from
    block 14 on dilated so that the output stride is 16.

    Input:
        x: (B, in_channels, H, W)
    Output, deepest first:
        x4: (B, 320, H/16, W/16)
        x3: (B, 32, H/8, W/8)
        x2: (B, 24, H/4, W/4)
        x1: (B, 16, H/2, W/2)
        x0: (B, in_channels, H, W), the input itself
    """

    shortcut_channels = [32, 24, 16]
    out_channels = 320

    def __init__(self, in_channels: int, norm_layer=None):
        super().__init__(norm_layer=norm_layer)
        if in_channels != 3:
            self.features[0][0] = nn.Conv2d(in_channels, 32, 3, 2, 1, bias=False)
        self.features = self.features[:-1]
        # Keep 1/16 resolution from block 14 on; dilate to keep the receptive field.
        self.features[14].conv[1][0].stride = (1, 1)
        for block in self.features[15:]:
            block.conv[1][0].dilation = (2, 2)
            block.conv[1][0].padding = (2, 2)
        del self.classifier


class MobileNetV3Encoder(FeaturePyramid):
    """torchvision's MobileNetV3-Large feature extractor with a dilated last stage (output stride 16,
    torchvision's `dilated=True`, as its LR-ASPP segmentation model uses) and no classifier.

    The first convolution takes `in_channels` (6: src + bgr) instead of 3. Features are tapped at the
    ends of the stages so that the decoder receives the same pyramid as with the other backbones.

    Input:
        x: (B, in_channels, H, W)
    Output, deepest first:
        x4: (B, 960, H/16, W/16), after the final 1x1 convolution (features[16])
        x3: (B, 40, H/8, W/8), after features[6]
        x2: (B, 24, H/4, W/4), after features[3]
        x1: (B, 16, H/2, W/2), after features[1]
        x0: (B, in_channels, H, W), the input itself
    """

    shortcut_channels = [40, 24, 16]
    out_channels = 960

    def __init__(self, in_channels: int):
        super().__init__()
        self.features = mobilenet_v3_large(weights=None, dilated=True).features
        if in_channels != 3:
            self.features[0][0] = nn.Conv2d(in_channels, 16, 3, 2, 1, bias=False)
