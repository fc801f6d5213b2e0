"""The video part: `convert_video` on a synthetic 1920x1080 clip with the demonstration weights, as
`inference_video.py` runs it (the optimized model, with and without --cuda-graphs): model-only and
end-to-end frames per second."""
import os
import tempfile
import time
import warnings
from fractions import Fraction
from pathlib import Path
from typing import Dict

from .plan import video_run_seconds
from .results import PartResult, time_left

ROOT = Path(__file__).resolve().parents[2]
DEMO_WEIGHTS = ROOT / 'weights' / 'mattingrefine_mobilenetv2_synthetic_fp16.pth'


def make_clip(folder: Path, size, frames: int):
    """A synthetic capture (a subject crossing a scene) as an H.264 clip of `frames` frames at `size`
    (W, H), and its clean plate. Returns (clip path, plate path).

    Drawn and composited at half size, each frame then upscaled: a few seconds at 1920x1080."""
    import cv2
    import numpy as np
    from dataset.synthetic import capture_sample
    from inference.writers import VideoWriter, save_image

    width, height = size
    _, plate, fgr, pha, _ = capture_sample(0, 0, (max(width // 2, 64), max(height // 2, 64)))
    clip, plate_path = folder / 'clip.mp4', folder / 'plate.png'

    def full_size(image):
        return cv2.resize(np.round(image * 255).astype(np.uint8), (width, height), interpolation=cv2.INTER_LINEAR)

    save_image(full_size(plate), str(plate_path))
    writer = VideoWriter(str(clip), Fraction(30))
    try:
        for t in range(frames):
            shift = int((t / max(frames - 1, 1) - 0.5) * 0.3 * pha.shape[1])
            a, f = np.roll(pha, shift, axis=1)[..., None], np.roll(fgr, shift, axis=1)
            writer.write(full_size(f * a + plate * (1 - a))[None], [t])
        writer.close()
    except BaseException:
        writer.abort()
        raise
    return clip, plate_path


def warm_up(model, chunk: int, height: int, width: int, device, dtype) -> None:
    """One call as convert_video makes them (inference mode, cuDNN autotuning, frames channels-last
    as uploaded): it chooses the kernels and, with --cuda-graphs, captures the graph, outside the timing."""
    import torch
    from common.devices import cudnn_autotuning
    with torch.inference_mode(), cudnn_autotuning(device):
        frames = [torch.rand(chunk, height, width, 3, device=device).permute(0, 3, 1, 2).to(dtype) for _ in range(2)]
        model(*frames)
        if device.type == 'cuda':
            torch.cuda.synchronize(device)


def measure_video(result: PartResult, settings: Dict, device, deadline: float) -> None:
    import torch
    import inference_video
    from inference.model import load_model
    from model.graphs import CUDAGraphs

    config = settings['video']
    width, height = config['size']
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        clip, plate = make_clip(Path(folder), (width, height), config['frames'])
        result.set(clip=dict(width=width, height=height, frames=config['frames'],
                             seconds_to_make=round(time.perf_counter() - start, 2)),
                   outputs="com.mp4 and pha.mp4 (H.264), the demonstration weights, the scripts' default settings "
                           "('auto': at 1920x1080 the paper's backbone scale 0.25 and 80,000 sample pixels), the "
                           'optimized model (with --cuda-graphs: replayed as CUDA graphs)')
        for precision, chunk, graphs in config['runs']:
            key = dict(precision=precision, seq_chunk=chunk, cuda_graphs=graphs)
            if result.data['rows'] and time_left(deadline) < video_run_seconds(config):  # the first runs anyway
                result.row(**key, skipped='time limit of the part')
                continue
            start = time.perf_counter()
            args = inference_video.get_args_parser().parse_args(
                ['--model-checkpoint', str(DEMO_WEIGHTS), '--video-src', str(clip), '--video-bgr', str(plate),
                 '--output-dir', folder, '--device', device.type, '--precision', precision,
                 *(['--cuda-graphs'] if graphs else [])])
            try:
                with warnings.catch_warnings(record=True) as caught:  # --cuda-graphs on the CPU says why not
                    warnings.simplefilter('always')
                    model, model_device, dtype = load_model(args)
                warm_up(model, chunk, height, width, model_device, dtype)
                throughput = inference_video.convert_video(
                    model, str(clip), os.path.join(folder, f'{precision}-{chunk}-{graphs}'), clean_plate=str(plate),
                    output_types=('com', 'pha'), seq_chunk=chunk, progress=False, device=model_device, dtype=dtype)
            except Exception as error:  # recorded; the other runs go on
                result.row(**key, failed=f'{type(error).__name__}: {error}')
                continue
            if isinstance(model, CUDAGraphs):
                captured = dict(graphs_captured=len(model.graphs),
                                **({'capture_failed': list(model.failed.values())} if model.failed else {}))
            else:
                captured = dict(graphs_captured=f"n/a: {'; '.join(str(w.message) for w in caught)}" if graphs else None)
            result.row(**key, ran_in=str(dtype).replace('torch.', ''), frames=throughput.frames,
                       model_fps=round(throughput.model_fps, 2), end_to_end_fps=round(throughput.fps, 2),
                       **captured, run_seconds=round(time.perf_counter() - start, 2))
            print(f'video {width}x{height} {precision} seq_chunk {chunk} cuda_graphs {graphs}: {throughput}',
                  flush=True)
            del model
            if device.type == 'cuda':
                torch.cuda.empty_cache()
