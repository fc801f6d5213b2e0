"""ResNet-50 / ResNet-101 encoder, laid out exactly as the official BGMv2 checkpoints."""
from typing import Tuple

import torch
from torch import nn
from torchvision.models.resnet import Bottleneck, ResNet


class ResNetEncoder(ResNet):
    """torchvision's ResNet with a dilated last stage (output stride 16) and no classifier.

    Input:
        x: (B, in_channels, H, W)
    Output, deepest first (the decoder consumes them in this order):
        x4: (B, 2048, H/16, W/16)
        x3: (B, 512, H/8, W/8)
        x2: (B, 256, H/4, W/4)
        x1: (B, 64, H/2, W/2)
        x0: (B, in_channels, H, W), the input itself
    """

    layers = {
        'resnet50': [3, 4, 6, 3],
        'resnet101': [3, 4, 23, 3],
    }
    # Channels of x3, x2, x1 (x0 is the input).
    shortcut_channels = [512, 256, 64]
    out_channels = 2048

    def __init__(self, in_channels: int, variant: str = 'resnet101', norm_layer=None):
        if variant not in self.layers:
            raise ValueError(f"ResNet variant must be one of {sorted(self.layers)}, got {variant!r}")
        super().__init__(block=Bottleneck,
                         layers=self.layers[variant],
                         replace_stride_with_dilation=[False, False, True],
                         norm_layer=norm_layer)
        if in_channels != 3:
            self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        del self.avgpool
        del self.fc

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        x0 = x
        x = self.relu(self.bn1(self.conv1(x)))
        x1 = x
        x = self.layer1(self.maxpool(x))
        x2 = x
        x = self.layer2(x)
        x3 = x
        x = self.layer4(self.layer3(x))
        return x, x3, x2, x1, x0
