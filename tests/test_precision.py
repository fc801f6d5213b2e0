"""Reduced precision (float16, bfloat16) on the CPU, and on CUDA where present: what must not change
with the dtype."""
import pytest
import torch

from model import Refiner

DEVICES = ['cpu', pytest.param('cuda', marks=[pytest.mark.cuda, pytest.mark.skipif(
    not torch.cuda.is_available(), reason='CUDA is not available')])]


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16], ids=['fp16', 'bf16'])
@pytest.mark.parametrize('size, padding', [(4, 2), (2, 3)], ids=['full-resolution', 'half-resolution'])
def test_roi_align_crops_the_same_pixels_as_unfold_at_hd_width(device, dtype, size, padding):
    """The crop copies pixels, in any dtype. Box corners of an HD frame (x up to 1920, shifted by half a
    pixel) are not representable in float16 above 1024 or in bfloat16 above 256."""
    generator = torch.Generator().manual_seed(0)
    height, width = 16 * size, 1920 // 4 * size
    x = torch.rand(2, 5, height, width, generator=generator).to(device, dtype)
    rows, cols = height // size, width // size
    # Patches across the whole width, the far right column included, in both images of the batch.
    col = torch.cat([torch.arange(0, cols, 7), torch.tensor([cols - 1])])
    idx = (torch.arange(len(col)) % 2, torch.arange(len(col)) % rows, col)
    idx = tuple(i.to(device) for i in idx)
    crops = {}
    for method in ('unfold', 'roi_align'):
        refiner = Refiner('sampling', 80_000, 0.1, patch_crop_method=method).to(device)
        crops[method] = refiner.crop_patch(x, idx, size, padding)
    assert crops['roi_align'].dtype == dtype and crops['roi_align'].shape == crops['unfold'].shape
    assert torch.equal(crops['roi_align'], crops['unfold'])
