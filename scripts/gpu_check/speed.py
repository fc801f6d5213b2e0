"""The speed part: latency of MattingRefine as written (eager), through `model.optimize` (the CUDA
variant) and the optimized model replayed as a CUDA graph (`model.graphs.CUDAGraphs`), per backbone,
resolution, precision and batch (rows in `plan.speed_rows` order)."""
import time
from typing import Dict

from .plan import PATHS, speed_row_seconds, speed_rows
from .results import PartResult, time_left

METHOD = ('random weights and inputs, sampling mode without oversampling prevention (every sample_pixels / 16 '
          'patches refined), median of the timed calls after the warm-up calls, each synchronised; '
          "'optimized' is model.optimize(model, variant), 'graphs' that module in model.graphs.CUDAGraphs "
          '(copy_outputs=False; its first warm-up call captures), which runs uncaptured on CPU tensors')


def measure_speed(result: PartResult, settings: Dict, device, deadline: float) -> None:
    import numpy as np
    import torch
    from inference.speed import measure, module_runner
    from model import MattingRefine, optimize
    from model.graphs import CUDAGraphs

    config = settings['speed']
    result.set(settings=config, method=METHOD, cudnn_benchmark=torch.backends.cudnn.benchmark,
               cudnn_allow_tf32=torch.backends.cudnn.allow_tf32)
    if device.type != 'cuda':
        result.note('graphs rows on the CPU run the CUDAGraphs wrapper uncaptured (a capture needs CUDA tensors)')
    dtypes = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}
    models, optimized = {}, {}  # per (backbone, precision), on the device, kept from row to row
    for row_settings in speed_rows(config):
        key = {k: row_settings[k] for k in ('backbone', 'resolution', 'width', 'height', 'precision', 'batch')}
        expected = sum(speed_row_seconds(config, row_settings, path) for path in PATHS)
        if result.data['rows'] and time_left(deadline) < expected:  # the first row runs in any case
            result.row(**key, skipped='time limit of the part')
            continue
        start = time.perf_counter()
        backbone, precision, batch = key['backbone'], key['precision'], key['batch']
        model_key = (backbone, precision)
        row = dict(key, refined_patches=None)
        try:
            if model_key not in models:
                torch.manual_seed(0)
                models[model_key] = MattingRefine(backbone).eval().to(device, dtypes[precision])
            model = models[model_key]
            model.backbone_scale, model.refiner.sample_pixels = row_settings['scale'], row_settings['sample_pixels']
            model.refiner.prevent_oversampling = False
            generator = torch.Generator(device=device).manual_seed(0)
            src, bgr = (torch.rand(batch, 3, key['height'], key['width'], device=device, generator=generator)
                        .to(dtypes[precision]) for _ in range(2))
        except Exception as error:  # out of memory, say: recorded, the other rows go on
            result.row(**key, failed=f'{type(error).__name__}: {str(error)[:300]}')
            continue
        for path in PATHS:
            if path != 'eager' and time_left(deadline) < speed_row_seconds(config, row_settings, path):
                row[path] = 'skipped: time limit of the part'
                continue
            try:
                module = model
                if path != 'eager':
                    if model_key not in optimized:
                        begin = time.perf_counter()
                        optimized[model_key] = optimize(model, config['variant'])  # `model` is left as it is
                        row['optimize_seconds'] = round(time.perf_counter() - begin, 2)
                    module = optimized[model_key]
                    module.backbone_scale = row_settings['scale']
                    module.refiner.sample_pixels = row_settings['sample_pixels']
                    module.refiner.prevent_oversampling = False
                    if path == 'graphs':
                        module = CUDAGraphs(module, copy_outputs=False)
                runner = module_runner(module, src, bgr, {}, convert=lambda outputs: outputs)
                seconds, outputs = measure(runner, config['warmup'], config['iterations'])
            except Exception as error:  # out of memory, say: recorded, the other paths and rows go on
                row[path] = f'failed: {type(error).__name__}: {str(error)[:300]}'
                continue
            median = float(np.median(seconds)) * 1000
            row[path] = dict(median_ms=round(median, 3), p90_ms=round(float(np.percentile(seconds, 90)) * 1000, 3),
                             fps=round(batch * 1000 / median, 2))
            if path == 'graphs':
                row[path].update(captured=len(module.graphs), **({'capture_failed': list(module.failed.values())}
                                                                 if module.failed else {}))
            if path == 'eager':
                row['refined_patches'] = int(outputs[5].float().sum())
            del module, outputs, runner
        row['row_seconds'] = round(time.perf_counter() - start, 2)
        result.row(**row)
        print(f"speed {backbone} {key['resolution']} {precision} batch {batch}: "
              + ', '.join(f'{path} {row.get(path)}' for path in PATHS), flush=True)
        del src, bgr
        if device.type == 'cuda':
            torch.cuda.empty_cache()
