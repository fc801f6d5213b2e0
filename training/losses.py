"""The training losses of the paper, computed in float32 whatever the autocast precision."""
from typing import Dict

import torch
from torch.nn import functional as F

# kornia.filters.sobel's normalized 3x3 kernels (x, then y), made once per device and dtype: kornia makes
# them with torch.tensor at every call, a blocking upload on a GPU.
SOBEL = [[[-0.125, 0.0, 0.125], [-0.25, 0.0, 0.25], [-0.125, 0.0, 0.125]],
         [[-0.125, -0.25, -0.125], [0.0, 0.0, 0.0], [0.125, 0.25, 0.125]]]
_sobel_kernels: Dict[tuple, torch.Tensor] = {}


def sobel(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """kornia.filters.sobel (normalized, the same operations, the same values): the gradient magnitude of
    each channel, its edges replicated. (B, C, H, W) -> (B, C, H, W)."""
    key = (x.device, x.dtype)
    if key not in _sobel_kernels:
        _sobel_kernels[key] = torch.tensor(SOBEL, device=x.device, dtype=x.dtype)[:, None]
    B, C, H, W = x.shape
    edges = F.conv2d(F.pad(x.reshape(B * C, 1, H, W), [1, 1, 1, 1], 'replicate'), _sobel_kernels[key])
    edges = edges.reshape(B, C, 2, H, W)
    gx, gy = edges[:, :, 0], edges[:, :, 1]
    return torch.sqrt(gx * gx + gy * gy + eps)


def matting_losses(pred_pha: torch.Tensor, pred_fgr: torch.Tensor, true_pha: torch.Tensor,
                   true_fgr: torch.Tensor) -> Dict[str, torch.Tensor]:
    """L1 of alpha, L1 of its Sobel gradients, L1 of the foreground where the true alpha is above 0.

    Inputs: pha (B, 1, H, W) and fgr (B, 3, H, W), predicted and true, 0 ~ 1.
    """
    pred_pha, pred_fgr = pred_pha.float(), pred_fgr.float()
    true_pha, true_fgr = true_pha.float(), true_fgr.float()
    true_msk = (true_pha != 0).float()
    # Sobel is a convolution, which autocast would run in low precision again: keep it out.
    with torch.autocast(pred_pha.device.type, enabled=False):
        return {
            'pha_l1': F.l1_loss(pred_pha, true_pha),
            'pha_sobel_l1': F.l1_loss(sobel(pred_pha), sobel(true_pha)),
            'fgr_l1': F.l1_loss(pred_fgr * true_msk, true_fgr * true_msk),
        }


def base_loss(pred_pha, pred_fgr, pred_err, true_pha, true_fgr) -> Dict[str, torch.Tensor]:
    """Loss of MattingBase: the matting terms plus MSE(err, |pred_pha - true_pha|).

    The error target is detached: the error head learns to predict the alpha error, it must not
    change alpha to make its own target easier.
    Returns the terms by name and their sum under 'total'.
    """
    terms = matting_losses(pred_pha, pred_fgr, true_pha, true_fgr)
    true_err = (pred_pha.detach().float() - true_pha).abs()
    terms['err_mse'] = F.mse_loss(pred_err.float(), true_err)
    terms['total'] = sum(terms.values())
    return terms


def refine_loss(pred_pha, pred_fgr, pred_pha_sm, pred_fgr_sm, pred_err_sm, true_pha, true_fgr
                ) -> Dict[str, torch.Tensor]:
    """Loss of MattingRefine: the matting terms at full and at coarse resolution, and the error term
    at full resolution (coarse error and alpha upsampled). As in the original, this stage's error target
    is not detached (the base stage's is): its gradient reaches the coarse alpha too.

    Inputs: full resolution pha/fgr (B, C, H, W); coarse pha_sm/fgr_sm/err_sm (B, C, h, w); 0 ~ 1.
    """
    size = pred_pha_sm.shape[2:]
    true_pha_sm = F.interpolate(true_pha, size, mode='bilinear', align_corners=False)
    true_fgr_sm = F.interpolate(true_fgr, size, mode='bilinear', align_corners=False)
    terms = matting_losses(pred_pha, pred_fgr, true_pha, true_fgr)
    terms.update({name + '_sm': value for name, value in
                  matting_losses(pred_pha_sm, pred_fgr_sm, true_pha_sm, true_fgr_sm).items()})
    full = true_pha.shape[2:]
    pred_err = F.interpolate(pred_err_sm.float(), full, mode='bilinear', align_corners=False)
    pha_sm_up = F.interpolate(pred_pha_sm.float(), full, mode='bilinear', align_corners=False)
    terms['err_mse'] = F.mse_loss(pred_err, (pha_sm_up - true_pha).abs())
    terms['total'] = sum(terms.values())
    return terms
