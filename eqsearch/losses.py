"""Output losses L(s_out, y), per sample, and their gradient with respect to s_out.

Shapes: ``s`` is (B, C) output activity (or read-out logits); the target ``y`` is either (B,)
integer labels or a (B, C) float one-hot / probability target (the rules pass the latter,
built once per batch, so that no step rebuilds it). Both functions return per-sample values;
callers average over the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def as_target(y: torch.Tensor, num_classes: int, dtype: torch.dtype) -> torch.Tensor:
    """(B, C) float target from labels (one-hot) or from a float target (unchanged)."""
    if y.is_floating_point():
        return y.to(dtype)
    return torch.zeros(y.shape[0], num_classes, dtype=dtype, device=y.device).scatter_(1, y.unsqueeze(1), 1.0)


def loss_per_sample(name: str, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """mse: ½ Σ_k (s_k − ŷ_k)²; cel: cross-entropy with logits s. Shape (B,)."""
    if name == "mse":
        return 0.5 * (s - as_target(y, s.shape[1], s.dtype)).pow(2).sum(1)
    if y.is_floating_point():
        return F.cross_entropy(s, y.to(s.dtype), reduction="none")
    return F.cross_entropy(s, y, reduction="none")


def loss_grad(name: str, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """∂L/∂s per sample, shape (B, C): mse s − ŷ; cel softmax(s) − ŷ."""
    target = as_target(y, s.shape[1], s.dtype)
    if name == "mse":
        return s - target
    return torch.softmax(s, 1) - target
