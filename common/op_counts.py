"""What a piece of code asks of the device, counted on any device (the CPU included): the aten operations
it dispatches (on a GPU, each one that is not a view is a kernel launch) and the host syncs among them
(operations whose result the host waits for, which drain a GPU's queue).

    from common.op_counts import OpCounter
    with OpCounter() as counts:
        model(src, bgr)
    print(counts.launches, counts.syncs)       # e.g. 240 kernels, ['aten.nonzero.default']

The counts depend on the code path, not on the device: a CUDA code path run on CPU tensors dispatches
the operations it would dispatch on a GPU.
"""
from collections import Counter
from typing import List

import torch
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ['OpCounter', 'HOST_SYNC_OPS']

# Operations whose output the host reads, or whose output shape depends on the data.
HOST_SYNC_OPS = frozenset({
    # .item(), int(t), float(t), bool(t): seen as aten.item where composite operations are not
    # decomposed (torch.inference_mode), else as the operation it decomposes into.
    'aten.item', 'aten._local_scalar_dense', 'aten.is_nonzero', 'aten.equal', 'aten.allclose',
    'aten.nonzero', 'aten.nonzero_numpy', 'aten.argwhere', 'aten.masked_select', 'aten.masked_scatter',
    'aten._unique', 'aten._unique2', 'aten.unique_dim', 'aten.unique_consecutive',
})
# Operations that make a tensor from Python data (torch.tensor(...)): on a GPU, a blocking upload.
HOST_UPLOAD_OPS = frozenset({'aten.lift_fresh', 'aten.lift_fresh_copy'})


def op_name(func) -> str:
    """'aten.conv2d' for aten.conv2d.default: the operation without its overload."""
    return f'{func.namespace}.{func._opname}' if hasattr(func, '_opname') else str(func).rsplit('.', 1)[0]


def is_sync(func, args, kwargs=None) -> bool:
    """Whether `func(*args, **kwargs)` makes the host wait for the device."""
    name = op_name(func)
    if name in HOST_SYNC_OPS:
        return True
    if name == 'aten.repeat_interleave':  # repeats given as a tensor: the output size is the data's sum
        return func._overloadname in ('Tensor', 'self_Tensor') and (kwargs or {}).get('output_size') is None
    if name in ('aten.index', 'aten.index_put', 'aten.index_put_', 'aten._index_put_impl_'):
        # A boolean mask as an index is a nonzero inside.
        indices = args[1] if len(args) > 1 else ()
        return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (indices or ()))
    return False


class OpCounter(TorchDispatchMode):
    """Counts the aten operations dispatched inside it.

    Attributes, after the block:
        ops: Counter of operation names ('aten.conv2d', ...), every operation, views included.
        launches: operations that are not views (on a GPU, kernel launches; metadata-only views
            launch nothing).
        syncs: the names of the host syncs, in order (see `is_sync`).
        uploads: tensors made from Python data (`torch.tensor(...)`), in order.
    """

    def __init__(self):
        super().__init__()
        self.ops: Counter = Counter()
        self.launches = 0
        self.syncs: List[str] = []
        self.uploads: List[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = op_name(func)
        self.ops[name] += 1
        if not func.is_view and name not in ('aten.detach', 'aten.alias', 'aten._unsafe_view'):
            self.launches += 1
        if is_sync(func, args, kwargs):
            self.syncs.append(name)
        if name in HOST_UPLOAD_OPS:
            self.uploads.append(name)
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        """Every operation dispatched, views included."""
        return sum(self.ops.values())
