"""The matrix products of one training batch, replayed alone: the floor of a batch's time.

A relaxation step of a layered network is a few matrix products plus element-wise work; the
engine's fused paths aim at leaving only the products. :func:`record_matmuls` runs one batch
under a dispatch mode that sees every aten operator the batch runs and copies, for each matrix
product (``mm``, ``addmm`` and their in-place / ``out=`` forms, ``bmm``, ``baddbmm``,
``addmv``, ``mv``, ``addr``, ``dot``), its operands with their shapes and strides (a transposed
view stays transposed, an ``out=`` buffer stays the buffer). :class:`MatmulReplay` reruns only
those products, in the batch's order, on the copies: the same BLAS calls at the same shapes and
layouts, without anything else the batch did. A benchmark times it in turns with the engine's
paths; the engine's time over the replay's is what its element-wise work, Python and kernel
launches cost on top of its products. Convolutions are not products here: a CNN's floor would
need its own list.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_aten = torch.ops.aten
PRODUCTS = {_aten.mm, _aten.addmm, _aten.addmm_, _aten.bmm, _aten.baddbmm, _aten.baddbmm_, _aten.addmv,
            _aten.addmv_, _aten.mv, _aten.addr, _aten.addr_, _aten.dot}


def _copy(value):
    """A tensor copied with its size and strides (other arguments as they are)."""
    if not isinstance(value, torch.Tensor):
        return value
    return torch.empty_strided(value.size(), value.stride(), dtype=value.dtype, device=value.device).copy_(value)


class _Recorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls: list[tuple[Callable, list, dict]] = []
        self.operators = 0  # every aten operator the batch ran, products included
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.operators += 1
        if func.overloadpacket not in PRODUCTS:
            return func(*args, **kwargs)
        call = (func, [_copy(a) for a in args], {k: _copy(v) for k, v in kwargs.items()})
        out = func(*args, **kwargs)
        a = [t for t in args if isinstance(t, torch.Tensor)][-2]  # the first factor (the two come last)
        inner = 1 if func.overloadpacket in (_aten.addr, _aten.addr_) else a.shape[-1]
        self.calls.append(call)
        self.flops += 2 * out.numel() * inner
        return out


class MatmulReplay:
    """The recorded products of one batch; calling it reruns them (any arguments are ignored,
    so that it takes a batch function's place). ``operators``: how many aten operators the batch
    ran; ``flops``: 2 × output elements × inner dimension, summed over the products."""

    def __init__(self, calls: list[tuple[Callable, list, dict]], operators: int, flops: int):
        self.calls, self.operators, self.flops = calls, operators, flops

    def __call__(self, *_ignored) -> None:
        for func, args, kwargs in self.calls:
            func(*args, **kwargs)


def record_matmuls(batch: Callable[[], None]) -> MatmulReplay:
    """Run ``batch()`` once and keep its matrix products (see the module docstring)."""
    recorder = _Recorder()
    with recorder:
        batch()
    return MatmulReplay(recorder.calls, recorder.operators, recorder.flops)
