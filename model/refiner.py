"""The refiner: re-computes alpha and foreground at full resolution on selected 4x4 patches."""
from typing import Tuple

import torch
import torchvision
from torch import nn
from torch.nn import functional as F

REFINE_MODES = ('full', 'sampling', 'thresholding')
PATCH_CROP_METHODS = ('unfold', 'roi_align', 'gather')
PATCH_REPLACE_METHODS = ('scatter_nd', 'scatter_element')


def check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")


class Refiner(nn.Module):
    """Refines the coarse prediction of the base network on error-prone patches.

    Args:
        mode: 'full' refines every pixel; 'sampling' refines the `sample_pixels // 16` quarter-resolution
            positions with the largest predicted error (each one a 4x4 patch at full resolution);
            'thresholding' refines every position whose error exceeds `threshold`.
        sample_pixels: number of full-resolution pixels to refine in 'sampling' mode.
        threshold: error threshold in 'thresholding' mode, 0 ~ 1.
        kernel_size: 3 (as trained) or 1.
        prevent_oversampling: in 'sampling' mode, skip selected positions whose error is exactly 0.
        patch_crop_method: 'unfold' (fastest forward in PyTorch), 'roi_align' or 'gather' (for ONNX
            export; 'gather' also has the cheapest backward, so training uses it).
        patch_replace_method: 'scatter_nd' (fastest in PyTorch) or 'scatter_element' (for ONNX export).
            All crop and replace methods compute the same result.

    Inputs:
        src, bgr: (B, 3, H, W) source and clean plate at full resolution, 0 ~ 1; H, W multiples of 4.
        pha: (B, 1, Hc, Wc) coarse alpha, 0 ~ 1.
        fgr: (B, 3, Hc, Wc) coarse foreground residual (foreground minus src).
        err: (B, 1, Hc, Wc) coarse error prediction, 0 ~ 1.
        hid: (B, 32, Hc, Wc) hidden features, >= 0.
    Outputs:
        pha: (B, 1, H, W) refined alpha, not yet clamped.
        fgr: (B, 3, H, W) refined foreground residual, not yet added to src or clamped.
        ref: (B, 1, H/4, W/4) refinement regions: 1 where a 4x4 patch was refined, else 0.
    """

    # Constant for TorchScript, so the branches that are not taken are compiled out.
    __constants__ = ['kernel_size', 'patch_crop_method', 'patch_replace_method']

    def __init__(self,
                 mode: str,
                 sample_pixels: int,
                 threshold: float,
                 kernel_size: int = 3,
                 prevent_oversampling: bool = True,
                 patch_crop_method: str = 'unfold',
                 patch_replace_method: str = 'scatter_nd'):
        super().__init__()
        check_choice('refine_mode', mode, REFINE_MODES)
        check_choice('refine_kernel_size', kernel_size, (1, 3))
        check_choice('refine_patch_crop_method', patch_crop_method, PATCH_CROP_METHODS)
        check_choice('refine_patch_replace_method', patch_replace_method, PATCH_REPLACE_METHODS)
        if sample_pixels < 0:
            raise ValueError(f"refine_sample_pixels must be >= 0, got {sample_pixels}")

        self.mode = mode
        self.sample_pixels = sample_pixels
        self.threshold = threshold
        self.kernel_size = kernel_size
        self.prevent_oversampling = prevent_oversampling
        self.patch_crop_method = patch_crop_method
        self.patch_replace_method = patch_replace_method

        channels = [32, 24, 16, 12, 4]
        self.conv1 = nn.Conv2d(channels[0] + 6 + 4, channels[1], kernel_size, bias=False)
        self.bn1 = nn.BatchNorm2d(channels[1])
        self.conv2 = nn.Conv2d(channels[1], channels[2], kernel_size, bias=False)
        self.bn2 = nn.BatchNorm2d(channels[2])
        self.conv3 = nn.Conv2d(channels[2] + 6, channels[3], kernel_size, bias=False)
        self.bn3 = nn.BatchNorm2d(channels[3])
        self.conv4 = nn.Conv2d(channels[3], channels[4], kernel_size, bias=True)
        self.relu = nn.ReLU(True)

    def forward(self, src: torch.Tensor, bgr: torch.Tensor, pha: torch.Tensor, fgr: torch.Tensor,
                err: torch.Tensor, hid: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        H_full, W_full = src.shape[2:]
        H_half, W_half = H_full // 2, W_full // 2
        H_quat, W_quat = H_full // 4, W_full // 4

        src_bgr = torch.cat([src, bgr], dim=1)

        if self.mode != 'full':
            err = F.interpolate(err, (H_quat, W_quat), mode='bilinear', align_corners=False)
            ref = self.select_refinement_regions(err)
            idx = torch.nonzero(ref.squeeze(1))
            idx = idx[:, 0], idx[:, 1], idx[:, 2]

            # A trace (ONNX export) records only the branch taken: always record the refinement, so that
            # the exported graph refines whatever its example input selected (empty selections run fine).
            if torch.jit.is_tracing() or idx[0].size(0) > 0:
                x = torch.cat([hid, pha, fgr], dim=1)
                x = F.interpolate(x, (H_half, W_half), mode='bilinear', align_corners=False)
                x = self.crop_patch(x, idx, 2, 3 if self.kernel_size == 3 else 0)

                y = F.interpolate(src_bgr, (H_half, W_half), mode='bilinear', align_corners=False)
                y = self.crop_patch(y, idx, 2, 3 if self.kernel_size == 3 else 0)

                x = self.relu(self.bn1(self.conv1(torch.cat([x, y], dim=1))))
                x = self.relu(self.bn2(self.conv2(x)))

                x = F.interpolate(x, 8 if self.kernel_size == 3 else 4, mode='nearest')
                y = self.crop_patch(src_bgr, idx, 4, 2 if self.kernel_size == 3 else 0)

                x = self.relu(self.bn3(self.conv3(torch.cat([x, y], dim=1))))
                x = self.conv4(x)

                out = torch.cat([pha, fgr], dim=1)
                out = F.interpolate(out, (H_full, W_full), mode='bilinear', align_corners=False)
                out = self.replace_patch(out, x, idx)
                pha = out[:, :1]
                fgr = out[:, 1:]
            else:
                pha = F.interpolate(pha, (H_full, W_full), mode='bilinear', align_corners=False)
                fgr = F.interpolate(fgr, (H_full, W_full), mode='bilinear', align_corners=False)
        else:
            x = torch.cat([hid, pha, fgr], dim=1)
            x = F.interpolate(x, (H_half, W_half), mode='bilinear', align_corners=False)
            y = F.interpolate(src_bgr, (H_half, W_half), mode='bilinear', align_corners=False)
            if self.kernel_size == 3:
                x = F.pad(x, (3, 3, 3, 3))
                y = F.pad(y, (3, 3, 3, 3))

            x = self.relu(self.bn1(self.conv1(torch.cat([x, y], dim=1))))
            x = self.relu(self.bn2(self.conv2(x)))

            if self.kernel_size == 3:
                x = F.interpolate(x, (H_full + 4, W_full + 4))
                y = F.pad(src_bgr, (2, 2, 2, 2))
            else:
                x = F.interpolate(x, (H_full, W_full), mode='nearest')
                y = src_bgr

            x = self.relu(self.bn3(self.conv3(torch.cat([x, y], dim=1))))
            x = self.conv4(x)

            pha = x[:, :1]
            fgr = x[:, 1:]
            ref = torch.ones((src.size(0), 1, H_quat, W_quat), device=src.device, dtype=src.dtype)

        return pha, fgr, ref

    def select_refinement_regions(self, err: torch.Tensor) -> torch.Tensor:
        """
        Input:
            err: (B, 1, h, w) error map at quarter resolution.
        Output:
            ref: (B, 1, h, w) refinement regions, 1 selected, 0 not, in err's dtype.
        """
        if self.mode == 'sampling':
            b, _, h, w = err.shape
            err = err.view(b, -1)
            # More samples than positions would make topk fail: then every position is selected.
            k = min(self.sample_pixels // 16, h * w)
            idx = err.topk(k, dim=1, sorted=False).indices
            ref = torch.zeros_like(err)
            ref.scatter_(1, idx, 1.)
            if self.prevent_oversampling:
                ref.mul_(err.gt(0).to(err.dtype))
            ref = ref.view(b, 1, h, w)
        else:
            ref = err.gt(self.threshold).to(err.dtype)
        return ref

    def crop_patch(self, x: torch.Tensor, idx: Tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                   size: int, padding: int) -> torch.Tensor:
        """Crops the selected patches.

        Inputs:
            x: (B, C, H, W) image.
            idx: selected positions as ((P,), (P,), (P,)) batch, row, column indices on a grid of
                stride `size`.
            size: centre size of a patch, also the stride of the grid.
            padding: margin added around each patch.
        Output:
            patches: (P, C, S, S), S = size + 2 * padding.
        """
        if padding != 0:
            x = F.pad(x, (padding,) * 4)

        if self.patch_crop_method == 'unfold':
            return x.permute(0, 2, 3, 1) \
                    .unfold(1, size + 2 * padding, size) \
                    .unfold(2, size + 2 * padding, size)[idx[0], idx[1], idx[2]]
        elif self.patch_crop_method == 'roi_align':
            # Boxes in float32 at least: float16 cannot hold the half-pixel corners of a frame wider
            # than 1024 px, bfloat16 of one wider than 256 px, and a rounded corner samples between two
            # pixels. roi_align takes boxes of the input's dtype and computes its sample positions in
            # it, so a float16 or bfloat16 image is cropped in float32 (a copy of pixels: same values).
            compute = x.dtype if x.dtype == torch.float64 else torch.float32
            b, y, x_ = idx[0].to(compute), idx[1].to(compute), idx[2].to(compute)
            # Boxes shifted by half a pixel so that every sample falls exactly on a pixel centre.
            x1 = x_ * size - 0.5
            y1 = y * size - 0.5
            x2 = x_ * size + size + 2 * padding - 0.5
            y2 = y * size + size + 2 * padding - 0.5
            boxes = torch.stack([b, x1, y1, x2, y2], dim=1)
            return torchvision.ops.roi_align(x.to(compute), boxes, size + 2 * padding,
                                             sampling_ratio=1).to(x.dtype)
        else:
            idx_pix = self.compute_pixel_indices(x, idx, size, padding)
            pat = torch.gather(x.reshape(-1), 0, idx_pix.view(-1))
            return pat.view(-1, x.size(1), size + 2 * padding, size + 2 * padding)

    def replace_patch(self, x: torch.Tensor, y: torch.Tensor,
                      idx: Tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Writes patches back into the image.

        Inputs:
            x: (B, C, H, W) image.
            y: (P, C, h, w) patches.
            idx: selected positions as ((P,), (P,), (P,)) batch, row, column indices on a grid of stride h.
        Output:
            x: (B, C, H, W), the image with the patches at idx replaced by y.
        """
        xB, xC, xH, xW = x.shape
        yB, yC, yH, yW = y.shape
        if self.patch_replace_method == 'scatter_nd':
            x = x.view(xB, xC, xH // yH, yH, xW // yW, yW).permute(0, 2, 4, 1, 3, 5)
            x[idx[0], idx[1], idx[2]] = y
            return x.permute(0, 3, 1, 4, 2, 5).reshape(xB, xC, xH, xW)
        else:
            idx_pix = self.compute_pixel_indices(x, idx, size=4, padding=0)
            return x.reshape(-1).scatter(0, idx_pix.view(-1), y.reshape(-1)).view(x.shape)

    def compute_pixel_indices(self, x: torch.Tensor, idx: Tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                              size: int, padding: int) -> torch.Tensor:
        """Flat indices into `x.view(-1)` of every pixel of every selected patch.

        Used by the 'gather' crop and the 'scatter_element' replace, which work pixel by pixel.

        Inputs:
            x: (B, C, H, W) image.
            idx: selected positions as ((P,), (P,), (P,)) batch, row, column indices.
            size, padding: as in `crop_patch`.
        Output:
            idx_pix: (P, C, S, S) int64, S = size + 2 * padding.
        """
        B, C, H, W = x.shape
        S, P = size, padding
        O = S + 2 * P
        b, y, x_ = idx
        n = b.size(0)
        c = torch.arange(C, device=x.device)
        o = torch.arange(O, device=x.device)
        idx_pat = (c * H * W).view(C, 1, 1).expand([C, O, O]) \
            + (o * W).view(1, O, 1).expand([C, O, O]) \
            + o.view(1, 1, O).expand([C, O, O])
        # The batch stride is C * H * W (the original used H * W, wrong for batches larger than one).
        idx_loc = b * C * H * W + y * W * S + x_ * S
        return idx_loc.view(-1, 1, 1, 1).expand([n, C, O, O]) + idx_pat.view(1, C, O, O).expand([n, C, O, O])
