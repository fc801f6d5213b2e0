"""The CUDA variant of `optimize` (`device_type='cuda'`), run and counted on the CPU: few operations and
no host sync per frame, the same mattes as the model as written; the frame loop of the inference scripts
without a host sync; CUDA graphs (`model.graphs.CUDAGraphs`) by what the CPU can show.

Counts are of aten operations dispatched (`common.op_counts.OpCounter`): a code path dispatches the same
operations whatever the device its tensors are on.
"""
import argparse
import warnings

import numpy as np
import pytest
import torch

from common.op_counts import OpCounter
from inference.matting import Matting
from inference.model import add_model_arguments, load_model
from model import MattingBase, MattingRefine, optimize
from model.graphs import CUDAGraphs, Captured
from tolerance import assert_close

REFINE_NAMES = ['pha', 'fgr', 'pha_sm', 'fgr_sm', 'err_sm', 'ref_sm']
# The budget of the CUDA variant against the model as written, per frame.
OPERATIONS_BUDGET = 1.2


def inputs(batch, height, width, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return tuple(torch.rand(batch, 3, height, width, generator=generator) for _ in range(2))


def counted(module, *args, mode=torch.no_grad):
    """module(*args) and its counts, under `mode` (torch.no_grad, or torch.inference_mode as the inference
    scripts run, where composite operations are counted undecomposed)."""
    with mode(), OpCounter() as counts:
        outputs = module(*args)
    return outputs, counts


def check_same_mattes(outputs, expected, names=REFINE_NAMES):
    """Every output of the same shape and dtype, within float32 rounding of the eager model's (norm-relative);
    the refinement regions exactly the same."""
    for name, output, reference in zip(names, outputs, expected):
        assert output.shape == reference.shape and output.dtype == reference.dtype, name
        if name == 'ref_sm':
            assert torch.equal(output, reference), name
        else:
            assert_close(output, reference, rel=1e-5, what=name)


# The paper's settings: HD at backbone scale 0.25 with 80,000 sample pixels, 4K at 0.125 with 320,000.
PAPER_SETTINGS = {'HD': ((1080, 1920), 0.25, 80_000), '4K': ((2160, 3840), 0.125, 320_000)}


@pytest.mark.parametrize('prevent_oversampling', [False, True])
@pytest.mark.parametrize('size', ['HD', '4K'])
def test_a_frame_takes_few_operations_and_no_host_sync(size, prevent_oversampling):
    """At most 1.2 times the eager model's operations, none of them a host sync or a tensor made from
    Python numbers (a blocking upload on a GPU); the same mattes."""
    (height, width), scale, pixels = PAPER_SETTINGS[size]
    torch.manual_seed(0)
    model = MattingRefine('mobilenetv2', backbone_scale=scale, refine_sample_pixels=pixels,
                          refine_prevent_oversampling=prevent_oversampling).eval()
    src, bgr = inputs(1, height, width, seed=1)
    fast = optimize(model, 'cuda')
    counted(fast, src, bgr)  # the first frame of a size builds its interpolation tables
    for mode in (torch.inference_mode, torch.no_grad):
        expected, eager = counted(model, src, bgr, mode=mode)
        outputs, counts = counted(fast, src, bgr, mode=mode)
        assert counts.syncs == [] and counts.uploads == []
        assert counts.total <= OPERATIONS_BUDGET * eager.total, (mode, counts.total, eager.total)
        assert counts.launches <= OPERATIONS_BUDGET * eager.launches, (mode, counts.launches, eager.launches)
        assert eager.syncs == ['aten.nonzero']  # what the counter sees in the model as written
    check_same_mattes(outputs, expected)
    if prevent_oversampling:  # random weights predict an error of 0 in places: patches left out
        assert expected[-1].sum() < min(pixels // 16, expected[-1].numel())


def test_thresholding_takes_one_host_sync():
    torch.manual_seed(0)
    model = MattingRefine('mobilenetv2', backbone_scale=0.25, refine_mode='thresholding',
                          refine_threshold=0.3).eval()
    src, bgr = inputs(1, 270, 480, seed=2)
    expected, eager = counted(model, src, bgr, mode=torch.inference_mode)
    outputs, counts = counted(optimize(model, 'cuda'), src, bgr, mode=torch.inference_mode)
    assert counts.syncs == ['aten.nonzero_numpy'] and counts.uploads == []  # nonzero(as_tuple=True)
    assert counts.total <= OPERATIONS_BUDGET * eager.total
    check_same_mattes(outputs, expected)


@pytest.mark.parametrize('backbone', ['resnet50', 'mobilenetv2', 'mobilenetv3'])
def test_matting_base_takes_fewer_operations(backbone):
    torch.manual_seed(0)
    model = MattingBase(backbone).eval()
    src, bgr = inputs(2, 96, 128, seed=3)
    expected, eager = counted(model, src, bgr)
    outputs, counts = counted(optimize(model, 'cuda'), src, bgr)
    assert counts.syncs == [] and counts.uploads == [] and counts.total < eager.total
    check_same_mattes(outputs, expected, names=['pha', 'fgr', 'err', 'hid'])


def busy(model):
    """An error prediction that is positive almost everywhere, so that the selections compared are not
    ties at 0."""
    with torch.no_grad():
        model.decoder.conv4.bias[4] = 0.5
    return model.eval()


def check_both_variants(model, src, bgr):
    expected, _ = counted(model, src, bgr)
    for device_type in ('cuda', 'cpu'):
        fast = optimize(model, device_type)
        assert fast.device_type == device_type
        check_same_mattes(counted(fast, src, bgr)[0], expected)
    return expected


@pytest.mark.parametrize('mode', ['sampling', 'thresholding', 'full'])
@pytest.mark.parametrize('kernel_size', [1, 3])
def test_every_mode_gives_the_mattes_of_the_model_as_written(mode, kernel_size):
    """Batch 2, sides that are not multiples of 4 (padded), both variants."""
    torch.manual_seed(0)
    model = busy(MattingRefine('mobilenetv2', backbone_scale=0.5, refine_mode=mode, refine_sample_pixels=2400,
                               refine_kernel_size=kernel_size))
    src, bgr = inputs(2, 98, 130, seed=4)
    err = counted(model, src, bgr)[0][4]
    model.refiner.threshold = float(err.quantile(0.5))  # about half the patches in 'thresholding' mode
    expected = check_both_variants(model, src, bgr)
    assert mode == 'full' or 0 < expected[-1].mean() < 1


@pytest.mark.parametrize('backbone', ['resnet50', 'mobilenetv3'])
def test_every_backbone_gives_the_mattes_of_the_model_as_written(backbone):
    torch.manual_seed(0)
    model = busy(MattingRefine(backbone, backbone_scale=0.5, refine_sample_pixels=2400))
    check_both_variants(model, *inputs(1, 64, 96, seed=4))


def test_a_budget_larger_than_the_frame_refines_every_patch_once():
    torch.manual_seed(0)
    model = busy(MattingRefine('mobilenetv2', backbone_scale=0.5, refine_sample_pixels=10 ** 6))
    src, bgr = inputs(1, 64, 96, seed=5)
    expected, _ = counted(model, src, bgr)
    assert expected[-1].mean() == 1
    check_same_mattes(counted(optimize(model, 'cuda'), src, bgr)[0], expected)


def test_chunks_of_patches_give_the_same_mattes(monkeypatch):
    """More patches than one chunk: a loop whose count the shapes give."""
    import model.fast_refiner as fast_refiner
    monkeypatch.setattr(fast_refiner, 'CUDA_CHUNK_PATCHES', 37)
    torch.manual_seed(0)
    model = busy(MattingRefine('mobilenetv2', backbone_scale=0.5, refine_sample_pixels=2400))
    src, bgr = inputs(2, 96, 128, seed=6)
    expected, _ = counted(model, src, bgr)
    fast = optimize(model, 'cuda')
    counted(fast, src, bgr)  # the tables of this size
    outputs, counts = counted(fast, src, bgr)
    assert counts.syncs == []
    check_same_mattes(outputs, expected)


def test_the_variant_is_chosen_by_the_device_or_asked_for():
    model = MattingRefine('mobilenetv2').eval()
    assert optimize(model).device_type == 'cpu'
    fast = optimize(model, 'cuda')
    assert fast.device_type == 'cuda' and fast.capturable and optimize(fast, 'cuda') is fast
    with pytest.raises(ValueError, match="optimized for 'cuda' already"):
        optimize(fast, 'cpu')
    with pytest.raises(ValueError, match='device_type must be one of'):
        optimize(model, 'tpu')
    fast.refiner.mode = 'thresholding'
    assert not fast.capturable
    assert not optimize(model, 'cpu').capturable


def test_the_frame_loop_of_the_inference_scripts_has_no_host_sync():
    """Matting.submit (upload, model, outputs, download) with the CUDA variant: nothing the host waits
    for. A future `.item()`, `nonzero` or `torch.tensor` in the loop fails here."""
    torch.manual_seed(0)
    model = optimize(busy(MattingRefine('mobilenetv2', backbone_scale=0.25, refine_sample_pixels=8000)), 'cuda')
    matting = Matting(model, torch.device('cpu'), torch.float32, ['com', 'pha', 'fgr', 'err', 'ref', 'composite'])
    rng = np.random.default_rng(0)
    src = rng.integers(0, 256, (1, 240, 320, 3), dtype=np.uint8)
    plate = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    green = np.array([[[0, 255, 0]]], dtype=np.uint8)
    expected = matting(src, plate, green)  # the first frame: warnings, tables
    with OpCounter() as counts:
        downloads = matting.submit(src, plate, green)
    # One tensor from host data: the frame itself (pinned and copied without waiting on a GPU); the plate
    # and the background were uploaded with the first frame.
    assert counts.syncs == [] and counts.uploads == ['aten.lift_fresh']
    for name, image in expected.items():
        assert np.array_equal(downloads[name].result(), image), name
    assert matting.frames == 2 and matting.model_seconds > 0


# --------------------------------------------------------------------------- CUDA graphs

class ReplayedCall:
    """What a CUDA graph is to its buffers, for the CPU: replay() runs the captured call on the input
    buffers again and writes its results into the output tensors of the capture."""

    def __init__(self, module, buffers, outputs):
        self.module, self.buffers, self.outputs = module, buffers, outputs
        self.replays = 0

    def replay(self):
        self.replays += 1
        for output, result in zip(self.outputs, self.module(*self.buffers)):
            output.copy_(result)


class GraphsOnCPU(CUDAGraphs):
    """CUDAGraphs whose capture is `ReplayedCall` on CPU tensors: the logic around the capture (keys,
    warm-up, input buffers, fallbacks) tested where no GPU is."""

    def can_capture(self, inputs):
        return getattr(self.module, 'capturable', True) and not torch.is_grad_enabled()

    def record(self, buffers):
        for _ in range(2):
            self.module(*buffers)
        outputs = self.module(*buffers)
        return Captured(ReplayedCall(self.module, buffers, outputs), buffers, outputs)


def test_graphs_replay_with_new_inputs_and_capture_each_shape():
    torch.manual_seed(0)
    fast = optimize(busy(MattingRefine('mobilenetv2', backbone_scale=0.5, refine_sample_pixels=2400)), 'cuda')
    graphed = GraphsOnCPU(fast, max_graphs=2)
    assert graphed.refiner is fast.refiner and graphed.backbone_scale == fast.backbone_scale
    with torch.no_grad():
        for seed, size in [(7, (64, 96)), (8, (64, 96)), (9, (96, 64)), (10, (64, 128)), (11, (64, 96))]:
            src, bgr = inputs(1, *size, seed=seed)
            check_same_mattes(graphed(src, bgr), fast(src, bgr))
        assert len(graphed.graphs) == 2  # the least recently used size dropped
        fast.refiner.sample_pixels = 800  # another graph for other settings
        src, bgr = inputs(1, 64, 96, seed=12)
        check_same_mattes(graphed(src, bgr), fast(src, bgr))
        assert graphed.graphs[next(reversed(graphed.graphs))].graph.replays == 1


def test_graphs_run_the_module_as_it_is_where_capture_cannot_serve():
    torch.manual_seed(0)
    fast = optimize(busy(MattingRefine('mobilenetv2', backbone_scale=0.5, refine_mode='thresholding',
                                       refine_threshold=0.6)), 'cuda')
    graphed = GraphsOnCPU(fast)
    src, bgr = inputs(1, 64, 96, seed=13)
    with torch.no_grad():
        check_same_mattes(graphed(src, bgr), fast(src, bgr))
    assert not graphed.graphs  # 'thresholding': not capturable

    class Failing(GraphsOnCPU):
        def record(self, buffers):
            raise RuntimeError('operation not permitted when stream is capturing')

    fast.refiner.mode = 'sampling'
    failing = Failing(fast)
    with torch.no_grad(), pytest.warns(UserWarning, match='capture failed: operation not permitted'):
        check_same_mattes(failing(src, bgr), fast(src, bgr))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('error')  # said once
        check_same_mattes(failing(src, bgr), fast(src, bgr))
    # The real class on CPU tensors: the module as it is.
    with torch.no_grad():
        check_same_mattes(CUDAGraphs(fast)(src, bgr), fast(src, bgr))


def test_cuda_graphs_option_on_a_cpu_warns_and_runs_without():
    parser = argparse.ArgumentParser()
    add_model_arguments(parser, checkpoint_required=False)
    with pytest.warns(UserWarning, match='--cuda-graphs needs a CUDA device'):
        model = load_model(parser.parse_args(['--device', 'cpu', '--cuda-graphs']))[0]
    assert type(model).__name__ == 'OptimizedMattingRefine'


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason='CUDA graphs need a CUDA device')
def test_cuda_graphs_on_a_gpu():
    torch.manual_seed(0)
    model = busy(MattingRefine('mobilenetv2', backbone_scale=0.25, refine_sample_pixels=80_000)).cuda()
    fast = optimize(model)
    assert fast.device_type == 'cuda'
    graphed = CUDAGraphs(fast)
    with torch.no_grad():
        for seed in (14, 15):
            src, bgr = (x.cuda() for x in inputs(1, 1080, 1920, seed=seed))
            outputs, expected = graphed(src, bgr), fast(src, bgr)
            check_same_mattes(outputs, expected)
    assert len(graphed.graphs) == 1 and not graphed.failed


def test_the_counter_sees_host_syncs_and_uploads():
    x = torch.rand(8, generator=torch.Generator().manual_seed(0))
    for mode in (torch.no_grad, torch.inference_mode):
        with mode(), OpCounter() as counts:
            y = x * 2  # not a sync
            float(y.max()), int(y.argmax()), y.sum().item(), bool(y.sum() > 0)
            torch.nonzero(y > 1), y[y > 1], torch.tensor([1., 2.])
        assert len(counts.syncs) == 6, counts.syncs
        assert counts.uploads == ['aten.lift_fresh'] and counts.launches >= 8
        repeats = torch.tensor([1, 2])
        with mode(), OpCounter() as counts:
            repeats.repeat_interleave(2), torch.repeat_interleave(repeats, repeats, output_size=3)  # sizes known
            torch.repeat_interleave(repeats, repeats)  # the size is the data's
        assert counts.syncs == ['aten.repeat_interleave'], counts.syncs


def test_graphs_keep_inference_mode_apart():
    """Buffers made in inference mode cannot be written outside it: each mode has its own graph."""
    torch.manual_seed(0)
    fast = optimize(busy(MattingRefine('mobilenetv2', backbone_scale=0.5, refine_sample_pixels=2400)), 'cuda')
    graphed = GraphsOnCPU(fast)
    src, bgr = inputs(1, 64, 96, seed=16)
    with torch.inference_mode():
        expected = fast(src, bgr)
        check_same_mattes(graphed(src, bgr), expected)
    with torch.no_grad():
        check_same_mattes(graphed(src, bgr), expected)
    assert len(graphed.graphs) == 2
