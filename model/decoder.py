"""ASPP and the U-Net style decoder of the base network."""
from typing import List

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.models.segmentation.deeplabv3 import ASPP

__all__ = ['ASPP', 'Decoder']


class Decoder(nn.Module):
    """Upsamples the ASPP output back to full resolution, concatenating a shortcut at each scale.

    Args:
        channels: [ASPP output, after conv1, after conv2, after conv3, output] channel counts.
        feature_channels: channels of the shortcuts [x3, x2, x1, x0].

    Inputs:
        x4: (B, channels[0], H/16, W/16)
        x3, x2, x1, x0: shortcuts at 1/8, 1/4, 1/2 and 1/1 of the input resolution.
    Output:
        x: (B, channels[4], H, W), raw (unactivated) prediction.
    """

    def __init__(self, channels: List[int], feature_channels: List[int]):
        super().__init__()
        self.conv1 = nn.Conv2d(feature_channels[0] + channels[0], channels[1], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels[1])
        self.conv2 = nn.Conv2d(feature_channels[1] + channels[1], channels[2], 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels[2])
        self.conv3 = nn.Conv2d(feature_channels[2] + channels[2], channels[3], 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels[3])
        self.conv4 = nn.Conv2d(feature_channels[3] + channels[3], channels[4], 3, padding=1)
        self.relu = nn.ReLU(True)

    def forward(self, x4: torch.Tensor, x3: torch.Tensor, x2: torch.Tensor,
                x1: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x4, size=x3.shape[2:], mode='bilinear', align_corners=False)
        x = self.relu(self.bn1(self.conv1(torch.cat([x, x3], dim=1))))
        x = F.interpolate(x, size=x2.shape[2:], mode='bilinear', align_corners=False)
        x = self.relu(self.bn2(self.conv2(torch.cat([x, x2], dim=1))))
        x = F.interpolate(x, size=x1.shape[2:], mode='bilinear', align_corners=False)
        x = self.relu(self.bn3(self.conv3(torch.cat([x, x1], dim=1))))
        x = F.interpolate(x, size=x0.shape[2:], mode='bilinear', align_corners=False)
        return self.conv4(torch.cat([x, x0], dim=1))
