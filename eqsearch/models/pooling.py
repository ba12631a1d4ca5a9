"""2×2 / stride-2 pooling P and its adjoint P*, for the closed-form CNN dynamics.

Kinds (code base A's ``--pools`` letters): ``m`` max-pool, ``a`` average-pool, ``i`` identity.
Shapes: the pooling input z is (B, C, H, W); P(z) is (B, C, ⌊H/2⌋, ⌊W/2⌋) (identity: z).

P*(g) maps a (B, C, ⌊H/2⌋, ⌊W/2⌋) tensor back to z's shape, so that ⟨g, P(z)⟩ has gradient
P*(g) in z at the current z: for max-pool it scatters g to the arg-max positions of z (the
``indices`` returned by :func:`pool`, the same positions autograd routes through), for
avg-pool it spreads g/4 over each window (zeros in an odd last row/column), for identity it is g.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pool(kind: str, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """P(z) and, for max-pool, the arg-max indices (int64, shape of P(z)); else None."""
    if kind == "m":
        return F.max_pool2d(z, 2, 2, return_indices=True)
    if kind == "a":
        return F.avg_pool2d(z, 2, 2), None
    return z, None


def pool_adjoint(kind: str, g: torch.Tensor, indices: torch.Tensor | None,
                 size: tuple[int, int]) -> torch.Tensor:
    """P*(g) with spatial size ``size`` = (H, W) of the pooling input."""
    if kind == "m":
        return F.max_unpool2d(g, indices, 2, 2, output_size=size)
    if kind == "a":
        up = F.interpolate(g * 0.25, scale_factor=2.0, mode="nearest")
        return F.pad(up, (0, size[1] - up.shape[-1], 0, size[0] - up.shape[-2]))
    return g


def pooled_size(kind: str, h: int) -> int:
    """Spatial size after pooling a size-h map: ⌊(h − 2)/2⌋ + 1 for m / a, h for i."""
    return h if kind == "i" else (h - 2) // 2 + 1
