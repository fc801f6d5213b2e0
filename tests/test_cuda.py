"""The CUDA paths: inference in float32, float16 and bfloat16, checkpoints between devices, training
with AMP and a one-process NCCL group, torch.compile, video, ONNX export and ONNX Runtime.

Every test here is marked `cuda` and skipped without a GPU. `BGM_CUDA_TESTS_ON_CPU=1` rehearses them
on the CPU instead (CUDA-only parts skip: float16 training, NCCL, SyncBatchNorm, ONNX Runtime's CUDA
provider), so that a session on a GPU machine finds them working:

    BGM_CUDA_TESTS_ON_CPU=1 python -m pytest -m "cuda and not slow" tests/test_cuda.py

Float32 on CUDA is compared with the CPU at 1e-4 with TF32 off (PyTorch lets cuDNN convolutions use
TF32 by default, which is not float32 arithmetic). float16 and bfloat16 are compared with float32 on
the same device by the mean and the 99.9th percentile of |d pha| over all pixels (TOLERANCE): a few
patches that one side refines and the other not, from ties in a low-precision error map, pass.
The inputs are a sample capture and the bundled demonstration weights, so the activations are those
of a trained network.
"""
import os
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import inference_images
import inference_speed_test
import train_base
import train_refine
from export import onnx as export_onnx
from inference import speed
from inference_utils import load_model
from inference_video import convert_video
from model import MattingBase, MattingRefine, load_checkpoint
from model.checkpoint import save_weights
from test_inference_utils import clip_frames, save_png, write_video
from test_launch import refine_args, tiny_data, train_under_torchrun

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_WEIGHTS = os.path.join(ROOT, 'weights', 'mattingrefine_mobilenetv2_synthetic_fp16.pth')
SAMPLES = os.path.join(ROOT, 'samples')
REFINE_NAMES = ['pha', 'fgr', 'pha_sm', 'fgr_sm', 'err_sm', 'ref_sm']
BASE_NAMES = ['pha', 'fgr', 'err', 'hid']
DTYPES = {'fp16': torch.float16, 'bf16': torch.bfloat16}
# Largest mean and 99.9th percentile of |pha - pha in float32| over all pixels, on the same device.
# float16: measured at most 6e-5 and 0.004 on the CPU; CUDA kernels round differently.
# bfloat16 keeps 8 significant bits: every weight and activation is rounded by up to 2^-9 (0.2 %).
# MattingBase runs its deep backbone at full resolution and the roundings compound with depth: the
# input differs from float32 by 0.15 %, the backbone's features at 1/2, 1/4, 1/8 and 1/16 resolution
# by 1 %, 2 %, 3 % and 11 % (mean relative error). The backbone alone in bfloat16 gives all of the
# error below, the decoder alone 0.013 (p99.9), the weights rounded alone (float32 arithmetic) 0.117.
# Where alpha is saturated the clamp hides it (the same 0 or 1); in the semi-transparent band around
# the subject alpha is unsaturated and steep, and the features' error shows in full: 1.9 % of the
# pixels of this pair differ by more than 0.05, their float32 alpha 0.06 ~ 0.92, 97 % of them where
# alpha varies by more than 0.1 within 2 px. The 99.9th percentile over all pixels measures that band;
# leaving out steep edges (3x3 range of alpha > 0.25) still leaves 0.03 ~ 0.11 (0.099 on this
# capture): no cheap comparison tells bfloat16's rounding from a fault.
# Measured for MattingBase on this pair: mean 3.2e-3, p99.9 0.135 (the CPU, torch 2.14 with native
# bfloat16 dot products; torch 2.11 on the GPU machine gave 0.135 too); 0.144 and 0.157 with BatchNorm
# folded into the convolutions (model.optimize, before or after the cast: the same roundings in
# another order); 0.044 ~ 0.12 for the other sample captures and sizes (512x384 to 1920x1080). The
# MattingRefine modes, whose edges come from the shallow refiner at full resolution: at most 6e-4 and
# 0.034. The bounds leave at least 1.3 times the largest of these; a broken precision path errs by far
# more.
TOLERANCE = {'fp16': (1e-3, 0.05), 'bf16': (6e-3, 0.2)}
FLOAT32_TOLERANCE = 1e-4


def pick_device():
    """CUDA where present; the CPU for a rehearsal; None to skip."""
    if torch.cuda.is_available():
        return torch.device('cuda')
    if os.environ.get('BGM_CUDA_TESTS_ON_CPU') == '1':
        return torch.device('cpu')
    return None


DEVICE = pick_device()
CUDA = DEVICE is not None and DEVICE.type == 'cuda'

# float16 runs on slow paths on the CPU (with it, the MattingBase case took 95 s here): the rehearsal
# leaves it out.
REDUCED = DTYPES if CUDA else {'bf16': torch.bfloat16}

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(DEVICE is None, reason='CUDA is not available (BGM_CUDA_TESTS_ON_CPU=1 rehearses '
                                                        'these tests on the CPU)')]


def needs_cuda(what: str):
    return pytest.mark.skipif(not CUDA, reason=f'{what} needs CUDA (this is a rehearsal on the CPU)')


@pytest.fixture(autouse=True)
def ieee_float32():
    """float32 means float32 (no TF32), and every test starts without cuDNN autotuning (the trainer
    switches it on); the settings are restored afterwards."""
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.benchmark)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.benchmark = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.benchmark = saved


# --------------------------------------------------------------------------- helpers

def read_rgb(path: str) -> torch.Tensor:
    """(1, 3, H, W) float32, 0 ~ 1."""
    with Image.open(path) as image:
        return torch.from_numpy(np.array(image.convert('RGB'))).permute(2, 0, 1).unsqueeze(0).float() / 255


@pytest.fixture(scope='module')
def pair():
    """The 640x480 sample capture and its plate, with a mirrored copy as a second image of the batch:
    src, bgr (2, 3, 480, 640) float32 on the CPU."""
    src, bgr = (read_rgb(os.path.join(SAMPLES, kind, 'capture_640x480.jpg')) for kind in ('src', 'bgr'))
    return torch.cat([src, src.flip(-1)]), torch.cat([bgr, bgr.flip(-1)])


def demo_model(model_type: str = 'refine', mode: str = 'sampling', crop: str = 'unfold', sample_pixels: int = 20_000):
    """The demonstration weights in float32 on the CPU, eval mode. At 640x480, 20,000 sample pixels
    and threshold 0.1 refine about 1,250 and 3,750 patches per image."""
    if model_type == 'base':
        model = MattingBase('mobilenetv2')
    else:
        model = MattingRefine('mobilenetv2', backbone_scale=0.25, refine_mode=mode, refine_sample_pixels=sample_pixels,
                              refine_threshold=0.1, refine_patch_crop_method=crop)
    load_checkpoint(model, DEMO_WEIGHTS)
    return model.eval()


def run(model, src, bgr, device, dtype=torch.float32, channels_last=False):
    """The model's outputs for (src, bgr) on `device` in `dtype`, as float32 tensors on the CPU."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device, dtype).to(memory_format=memory_format)
    src, bgr = (x.to(device, dtype).contiguous(memory_format=memory_format) for x in (src, bgr))
    with torch.no_grad():
        outputs = model(src, bgr)
    return [x.float().cpu() for x in outputs]


def assert_same_outside_ties(model, expected, outputs, tolerance: float) -> None:
    """Outputs equal to `tolerance`, except in patches that only one side refined because their error
    ties with the selection boundary (export_onnx.compare_selections); any other difference fails."""
    names = REFINE_NAMES if len(expected) == 6 else BASE_NAMES
    expected = {name: x.numpy() for name, x in zip(names, expected)}
    outputs = {name: x.numpy() for name, x in zip(names, outputs)}
    outside = None
    if 'ref_sm' in expected:
        outside, untied = export_onnx.compare_selections(model, expected, outputs['ref_sm'], tolerance)
        assert untied == 0, f'{untied} patches refined by one side only, without a tie in the error map'
        refined = expected['ref_sm'].sum()
        differing = (expected['ref_sm'] != outputs['ref_sm']).sum()
        assert refined > 0 and differing <= 0.01 * refined, (differing, refined)
    for name in names:
        difference = np.abs(outputs[name] - expected[name])
        if outside is not None and name in ('pha', 'fgr'):
            difference = difference * outside
        assert difference.max() <= tolerance, (name, float(difference.max()))


def pha_difference(pha: torch.Tensor, reference: torch.Tensor):
    """Mean and 99.9th percentile of |pha - reference| over all pixels."""
    difference = (pha - reference).abs().flatten()
    return float(difference.mean()), float(torch.quantile(difference, 0.999))


# --------------------------------------------------------------------------- inference

CONFIGS = [('base', None, None)] + [('refine', mode, crop) for mode in ('sampling', 'thresholding', 'full')
                                    for crop in ('unfold', 'roi_align', 'gather')]
_cpu_references = {}


def cpu_reference(config, src, bgr):
    if config not in _cpu_references:
        _cpu_references[config] = run(demo_model(*config[:1], *(c for c in config[1:] if c)), src, bgr, 'cpu')
    return _cpu_references[config]


@pytest.mark.parametrize('channels_last', [False, True], ids=['contiguous', 'channels-last'])
@pytest.mark.parametrize('config', CONFIGS, ids=['-'.join(c for c in config if c) for config in CONFIGS])
def test_inference_matches_the_cpu_in_float32_and_stays_close_in_fp16_and_bf16(pair, config, channels_last,
                                                                               record_property):
    src, bgr = pair
    expected = cpu_reference(config, src, bgr)
    model = demo_model(*config[:1], *(c for c in config[1:] if c))
    outputs = run(model, src, bgr, DEVICE, channels_last=channels_last)
    assert_same_outside_ties(model, expected, outputs, FLOAT32_TOLERANCE)
    for name, dtype in REDUCED.items():
        reduced = run(demo_model(*config[:1], *(c for c in config[1:] if c)), src, bgr, DEVICE, dtype, channels_last)
        mean, p999 = pha_difference(reduced[0], outputs[0])
        record_property(f'{name}_pha_mean', mean)
        record_property(f'{name}_pha_p999', p999)
        assert mean <= TOLERANCE[name][0] and p999 <= TOLERANCE[name][1], (name, mean, p999)


def test_inference_images_on_the_device_in_reduced_precision_channels_last(tmp_path, record_property):
    """The script as a user runs it (--device cuda --precision fp16 --channels-last) against the CPU in
    float32, on the four sample captures (640x480 to 1920x1080), alphas as written (8 bits)."""
    precision = 'fp16' if CUDA else 'bf16'
    runs = {'cpu': ['--device', 'cpu'],
            'device': ['--device', DEVICE.type, '--precision', precision, '--channels-last']}
    for name, options in runs.items():
        inference_images.main(['--src', os.path.join(SAMPLES, 'src'), '--bgr', os.path.join(SAMPLES, 'bgr'),
                               '--output-dir', str(tmp_path / name), '--output-types', 'pha', '--disable-progress',
                               *options])
    files = sorted(os.listdir(tmp_path / 'cpu' / 'pha'))
    assert len(files) == 4 and files == sorted(os.listdir(tmp_path / 'device' / 'pha'))
    for file in files:
        a, b = (torch.from_numpy(np.array(Image.open(tmp_path / name / 'pha' / file))).float() / 255
                for name in runs)
        mean, p999 = pha_difference(b, a)
        record_property(f'{file}_pha_mean', mean)
        # The files are rounded to 1/255: half a level of rounding on each side on top of the tolerance.
        bound = [limit + 1 / 255 for limit in TOLERANCE[precision]]
        assert mean <= bound[0] and p999 <= bound[1], (file, mean, p999)


def test_convert_video_on_the_device_gives_the_frames_of_the_cpu(tmp_path, record_property):
    """convert_video on an 8-frame clip (320x192) with the demonstration weights: every output frame
    within 1/255 of the CPU's. Refine mode 'full', so that no near-tie in the error map can move a
    patch between refined and not (the sampling selection is compared, ties allowed, above)."""
    plate, frames = clip_frames(8, width=320, height=192)
    write_video(tmp_path / 'take.mp4', frames, audio=False)
    save_png(tmp_path / 'plate.png', plate)
    throughput = {}
    for name, device in (('cpu', torch.device('cpu')), ('device', DEVICE)):
        model = demo_model(mode='full').to(device)
        throughput[name] = convert_video(model, str(tmp_path / 'take.mp4'), str(tmp_path / name),
                                         clean_plate=str(tmp_path / 'plate.png'), output_types=('pha', 'fgr', 'com'),
                                         output_format='png', seq_chunk=4, progress=False)
    assert throughput['device'].frames == 8
    record_property('model_fps', throughput['device'].model_fps)
    record_property('end_to_end_fps', throughput['device'].fps)
    print(f"convert_video on {DEVICE}: {throughput['device']}")
    for kind in ('pha', 'fgr', 'com'):
        names = sorted(os.listdir(tmp_path / 'cpu' / kind))
        assert len(names) == 8 and names == sorted(os.listdir(tmp_path / 'device' / kind))
        for file in names:
            a, b = (np.asarray(Image.open(tmp_path / name / kind / file)).astype(int) for name in ('cpu', 'device'))
            assert np.abs(a - b).max() <= 1, (kind, file)


@pytest.mark.slow
def test_torch_compile_matches_eager(pair, record_property):
    """torch.compile of MattingRefine (graph breaks at the data-dependent patch selection)."""
    if not hasattr(torch, 'compile'):
        pytest.skip(f'torch {torch.__version__} has no torch.compile')
    from torch import _dynamo
    if not _dynamo.is_dynamo_supported():
        pytest.skip(f'torch.compile does not support Python {sys.version.split()[0]} in torch {torch.__version__}')
    src, bgr = (x.to(DEVICE) for x in pair)
    model = demo_model().to(DEVICE)
    with torch.no_grad():
        expected = [x.float().cpu() for x in model(src, bgr)]
        compiled = torch.compile(model)
        start = time.perf_counter()
        outputs = [x.float().cpu() for x in compiled(src, bgr)]
        record_property('compile_seconds', time.perf_counter() - start)
    assert_same_outside_ties(model, expected, outputs, FLOAT32_TOLERANCE)


# --------------------------------------------------------------------------- checkpoints

def test_weights_saved_on_one_device_load_on_the_other(tmp_path):
    torch.manual_seed(0)
    trained_here = MattingRefine('mobilenetv2').to(DEVICE)
    save_weights(trained_here, str(tmp_path / 'device.pth'))
    on_cpu = MattingRefine('mobilenetv2')
    load_checkpoint(on_cpu, str(tmp_path / 'device.pth'))
    for name, tensor in trained_here.state_dict().items():
        assert torch.equal(on_cpu.state_dict()[name], tensor.cpu()), name

    torch.manual_seed(1)
    save_weights(MattingRefine('mobilenetv2'), str(tmp_path / 'cpu.pth'))
    on_device = MattingRefine('mobilenetv2').to(DEVICE)
    load_checkpoint(on_device, str(tmp_path / 'cpu.pth'))
    assert all(p.device.type == DEVICE.type for p in on_device.parameters())
    # The inference scripts' loader, from the file written on the device.
    # --eager: the model as written, whose state_dict names the checkpoint's tensors.
    args = inference_images.get_args_parser().parse_args(['--model-checkpoint', str(tmp_path / 'device.pth'),
                                                          '--device', DEVICE.type, '--eager'])
    model, device, dtype = load_model(args)
    assert device.type == DEVICE.type and dtype == torch.float32
    assert torch.equal(model.state_dict()['refiner.conv1.weight'].cpu(), on_cpu.state_dict()['refiner.conv1.weight'])


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return tiny_data(tmp_path_factory.mktemp('synthetic'))


def base_args(data, workdir, name, device, *extra):
    """train_base.py arguments for a tiny run: crops of 63 px (one shape, tuned once by cuDNN)."""
    return ['--data-path', f'synthetic={data}', '--dataset-name', 'synthetic', '--background-dataset', 'synthetic',
            '--model-backbone', 'mobilenetv2', '--model-name', name, '--device', device, '--batch-size', '2',
            '--num-workers', '0', '--sample-size', '64', '--crop-min', '63', '--crop-max', '64',
            '--valid-samples', '2', '--checkpoint-dir', os.path.join(workdir, 'checkpoint'),
            '--log-dir', os.path.join(workdir, 'log'), '--log-train-loss-interval', '1', *extra]


def last_state(workdir, name):
    return torch.load(os.path.join(workdir, 'checkpoint', name, 'last.pth'), map_location='cpu', weights_only=True)


def test_training_checkpoints_resume_on_either_device(data, tmp_path):
    """A run stopped on one device goes on from its last.pth on the same device and on the other, each in
    its default precision (float16 with a GradScaler on CUDA, float32 on the CPU)."""
    for first, then in ((DEVICE.type, DEVICE.type), (DEVICE.type, 'cpu'), ('cpu', DEVICE.type)):
        work = str(tmp_path / f'{first}-{then}')
        train_base.main(base_args(data, work, 'run', first, '--max-steps', '2'))
        train_base.main(base_args(data, work, 'run', then, '--max-steps', '3', '--resume', 'auto'))
        assert last_state(work, 'run')['step'] == 3
        weights = MattingBase('mobilenetv2')
        load_checkpoint(weights, os.path.join(work, 'checkpoint', 'run', 'epoch-0-iter-3.pth'))


# --------------------------------------------------------------------------- training

STAGES = {'base': (train_base, base_args), 'refine': (train_refine, refine_args)}
# Each stage in float16 and in bfloat16, one of the two channels-last.
TRAINING_RUNS = [('base', 'fp16', False), ('base', 'bf16', True), ('refine', 'fp16', True), ('refine', 'bf16', False)]


@pytest.mark.parametrize('stage, precision, channels_last', TRAINING_RUNS,
                         ids=[f"{s}-{p}{'-channels-last' if c else ''}" for s, p, c in TRAINING_RUNS])
def test_thirty_steps_in_reduced_precision(data, tmp_path, stage, precision, channels_last, record_property):
    if precision == 'fp16' and not CUDA:
        pytest.skip('float16 training (GradScaler) needs CUDA; this is a rehearsal on the CPU')
    trainer, arguments = STAGES[stage]
    work = str(tmp_path)
    extra = ['--precision', precision, '--max-steps', '30', '--epoch-end', '100', '--log-valid-interval', '30']
    trainer.main(arguments(data, work, 'run', DEVICE.type, *extra, *(['--channels-last'] if channels_last else [])))

    state = last_state(work, 'run')
    assert state['step'] == 30 and state['nonfinite_steps'] == 0
    events = EventAccumulator(os.path.join(work, 'log', 'run'), size_guidance={'scalars': 0})
    events.Reload()
    losses = [e.value for e in events.Scalars('train/loss/total')]
    assert len(losses) == 30 and all(np.isfinite(losses)), losses
    assert all(e.value == 0 for e in events.Scalars('train/nonfinite_steps'))
    if precision == 'fp16':
        scales = [e.value for e in events.Scalars('train/grad_scale')]
        assert len(scales) == 30 and all(np.isfinite(scales)) and min(scales) > 0, scales
        record_property('grad_scale', scales[-1])
        assert state['scaler']['scale'] == scales[-1]
    else:
        assert 'train/grad_scale' not in events.Tags()['scalars']  # no scaler without float16
    record_property('images_per_s', events.Scalars('train/images_per_s')[-1].value)
    first = 'backbone.features.0.0.weight'
    assert state['model'][first].is_contiguous(
        memory_format=torch.channels_last if channels_last else torch.contiguous_format)


@pytest.mark.parametrize('stage', ['base', 'refine'])
@pytest.mark.parametrize('precision', ['fp16', 'bf16'])
def test_overfitting_one_batch_under_amp_lowers_the_loss(data, stage, precision):
    """40 steps on one fixed batch with autocast (and a GradScaler for float16), as the trainer does."""
    if precision == 'fp16' and not CUDA:
        pytest.skip('float16 autocast with a GradScaler needs CUDA; this is a rehearsal on the CPU')
    trainer, arguments = STAGES[stage]
    args = trainer.get_args_parser().parse_args(arguments(data, '/unused', 'overfit', DEVICE.type))
    torch.manual_seed(0)
    train_set, _ = trainer.STAGE.datasets(args)
    pha, fgr, bgr = (torch.stack(t).to(DEVICE) for t in zip(train_set[0], train_set[1]))
    src = fgr * pha + bgr * (1 - pha)
    model = trainer.STAGE.build_model(args).to(DEVICE).train()
    optimizer = trainer.STAGE.optimizer(model, args)
    scaler = torch.amp.GradScaler(DEVICE.type, enabled=precision == 'fp16')
    losses = []
    for _ in range(40):
        with torch.autocast(DEVICE.type, dtype=DTYPES[precision]):
            terms, _ = trainer.STAGE.losses(model, src, bgr, pha, fgr)
        optimizer.zero_grad()
        scaler.scale(terms['total']).backward()
        scaler.step(optimizer)
        scaler.update()
        losses.append(float(terms['total'].detach()))
    assert all(np.isfinite(losses)) and losses[-1] < 0.5 * losses[0], losses


def test_torchrun_with_one_process_trains_in_a_nccl_group_with_syncbatchnorm(data, tmp_path):
    precision = 'fp16' if CUDA else 'bf16'
    output = train_under_torchrun(data, str(tmp_path), DEVICE.type, '--precision', precision)
    expected = 'nccl process group, SyncBatchNorm' if CUDA else 'gloo process group'
    assert f'Training refine on 1 process(es), {expected}, {DEVICE.type}' in output, output[-2000:]
    assert f'precision {precision}' in output


# --------------------------------------------------------------------------- ONNX

@pytest.mark.parametrize('precision', ['fp32', 'fp16'])
def test_onnx_export_from_a_model_on_the_device(tmp_path, precision, capsys):
    """Exported from the device's model (traced there), checked with ONNX Runtime (CUDA provider if
    installed, else the CPU) at another size and batch, as export_onnx.py --validate does."""
    if precision == 'fp16':
        if not CUDA:
            pytest.skip('float16 export is traced on CUDA; this is a rehearsal on the CPU')
        import onnxruntime
        if 'CUDAExecutionProvider' not in onnxruntime.get_available_providers():
            pytest.skip('a float16 file runs in ONNX Runtime on its CUDA provider only: install onnxruntime-gpu')
    model = demo_model(crop='roi_align').to(DEVICE, DTYPES.get(precision, torch.float32))
    path = str(tmp_path / 'model.onnx')
    export_onnx.export(model, path, resolution=(320, 192), metadata=dict(precision=precision))
    assert export_onnx.read_metadata(path)['refine_patch_crop_method'] == 'roi_align'
    passed = export_onnx.validate(path, model, 2, (384, 256), export_onnx.TOLERANCE[precision])
    assert passed, capsys.readouterr().out


@needs_cuda('ONNX Runtime with IO binding on the GPU')
@pytest.mark.parametrize('precision', ['fp32', 'fp16'])
def test_onnx_runtime_cuda_provider_with_io_binding(tmp_path, precision):
    """inference_speed_test.py's ONNX runner on CUDA: inputs and outputs bound to GPU memory."""
    import onnxruntime
    if 'CUDAExecutionProvider' not in onnxruntime.get_available_providers():
        pytest.skip(f"onnxruntime {onnxruntime.__version__} has no CUDA execution provider (it has "
                    f"{', '.join(onnxruntime.get_available_providers())}): install onnxruntime-gpu")
    parser = inference_speed_test.get_args_parser()
    args = parser.parse_args(['--backend', 'onnx', '--device', 'cuda', '--model-checkpoint', DEMO_WEIGHTS,
                              '--model-refine-sample-pixels', '20000', '--model-refine-threshold', '0.1',
                              '--resolution', '320', '192', '--batch-size', '2', '--precision', precision])
    inference_speed_test.check_args(parser, args)
    src, bgr = export_onnx.example_inputs(2, 192, 320, seed=1)
    runner = speed.onnx_runner(args, src, bgr, False, str(tmp_path))
    runner.run()
    runner.synchronize()
    outputs = [torch.from_numpy(x).float() for x in runner.fetch(None)]
    model = demo_model(crop='roi_align')
    expected = run(model, src, bgr, DEVICE, DTYPES.get(precision, torch.float32))
    assert_same_outside_ties(model, expected, outputs, export_onnx.TOLERANCE[precision])
