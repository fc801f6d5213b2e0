"""`CUDAGraphs(module)`: a module's calls replayed as CUDA graphs, one per input shape.

    from model import MattingRefine, optimize
    from model.graphs import CUDAGraphs
    model = MattingRefine('mobilenetv2').eval().cuda()
    graphed = CUDAGraphs(optimize(model))            # the CUDA variant: static shapes, no host sync
    pha, fgr, *_ = graphed(src, bgr)                 # the first call of a shape captures, the next replay

A captured frame is one launch instead of a couple of hundred. Capture needs every shape fixed by the
input shape and no host sync: `optimize(model, 'cuda')` in 'sampling' or 'full' refine mode, or a
MattingBase; a module that declares `capturable = False` ('thresholding' mode: its patch count is the
data's) runs as it is, and so does a call whose capture fails (said once, as a warning). Each new input
shape is captured anew, up to `max_graphs` shapes (the least recently used one is dropped after that).
Inputs are copied into the graph's own buffers; CPU tensors, autograd and tracing run the module as it is.
"""
import collections
import warnings
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

__all__ = ['CUDAGraphs']

# Calls before a capture: they run cuDNN's autotuning, fill lazily built caches (the refiner's
# interpolation tables) and let the allocator settle, as capture requires.
WARMUP_CALLS = 2


class Captured:
    """One captured call: the graph, its input buffers and the outputs that each replay rewrites."""

    def __init__(self, graph, inputs: List[torch.Tensor], outputs):
        self.graph, self.inputs, self.outputs = graph, inputs, outputs

    def replay(self, inputs: Sequence[torch.Tensor]):
        for buffer, x in zip(self.inputs, inputs):
            buffer.copy_(x)
        self.graph.replay()
        return self.outputs


class CUDAGraphs(nn.Module):
    """Runs `module(*inputs)` as a replayed CUDA graph per input signature (shapes, dtypes, device,
    inference mode or not) and the module's settings (its `graph_settings()`, if it has one: a settings
    change is a new graph).

    Args:
        module: called with tensors, returning a tensor or a tuple of tensors.
        max_graphs: input signatures kept captured at once.
        copy_outputs: return copies of the outputs (True), or the graph's own output tensors, which the
            next call overwrites (False: for a caller that uses them before calling again, on the same
            stream).
    Attributes of the module are read through this one (`graphed.refiner` is `module.refiner`).
    """

    def __init__(self, module: nn.Module, max_graphs: int = 4, copy_outputs: bool = True):
        super().__init__()
        self.module, self.max_graphs, self.copy_outputs = module, max_graphs, copy_outputs
        self.graphs: 'collections.OrderedDict[Tuple, Captured]' = collections.OrderedDict()
        self.failed: Dict[Tuple, str] = {}  # signatures whose capture failed, and why

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)

    def forward(self, *inputs: torch.Tensor):
        if not self.can_capture(inputs):
            return self.module(*inputs)
        key = self.signature(inputs)
        captured = self.graphs.get(key)
        if captured is None:
            if key in self.failed:
                return self.module(*inputs)
            captured = self.capture(key, inputs)
            if captured is None:
                return self.module(*inputs)
        self.graphs.move_to_end(key)
        outputs = captured.replay(inputs)
        if not self.copy_outputs:
            return outputs
        return tuple(x.clone() for x in outputs) if isinstance(outputs, tuple) else outputs.clone()

    def can_capture(self, inputs: Sequence[torch.Tensor]) -> bool:
        """Whether this call can be a graph: CUDA tensors, no autograd, no trace, a capturable module."""
        return (all(isinstance(x, torch.Tensor) and x.is_cuda for x in inputs)
                and not (torch.is_grad_enabled() and any(p.requires_grad for p in self.module.parameters()))
                and not torch.jit.is_tracing() and getattr(self.module, 'capturable', True))

    def signature(self, inputs: Sequence[torch.Tensor]) -> Tuple:
        settings = self.module.graph_settings() if hasattr(self.module, 'graph_settings') else ()
        # Buffers made in inference mode cannot be written outside it: a graph per mode.
        return tuple((tuple(x.shape), x.dtype, x.device) for x in inputs) + (settings, torch.is_inference_mode_enabled())

    def capture(self, key: Tuple, inputs: Sequence[torch.Tensor]) -> Optional[Captured]:
        """Captures a call on copies of `inputs` (None, said once, where capture fails)."""
        buffers = [torch.empty_like(x, memory_format=torch.contiguous_format).copy_(x) for x in inputs]
        try:
            captured = self.record(buffers)
        except RuntimeError as error:
            self.failed[key] = str(error).splitlines()[0]
            warnings.warn(f"CUDA graphs: inputs of shapes {[tuple(x.shape) for x in inputs]} run without a graph; "
                          f"capture failed: {self.failed[key]}")
            return None
        self.graphs[key] = captured
        while len(self.graphs) > self.max_graphs:
            self.graphs.popitem(last=False)
        return captured

    def record(self, buffers: List[torch.Tensor]) -> Captured:
        """Warm-up calls on a side stream, then the capture of one call on `buffers`."""
        stream = torch.cuda.Stream(buffers[0].device)
        stream.wait_stream(torch.cuda.current_stream(buffers[0].device))
        with torch.cuda.stream(stream):
            for _ in range(WARMUP_CALLS):
                self.module(*buffers)
        torch.cuda.current_stream(buffers[0].device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outputs = self.module(*buffers)
        return Captured(graph, buffers, outputs)
