"""Dynamics: how a model's state gradient becomes one relaxation step.

A model exposes ``state_grad(state, drive, beta, y)``: per layer l, g_l = ∂Φ_β/∂s_l in closed
form (Φ the primitive function the dynamics ascend; energy models use Φ = −E, so g_l = −∂E_β/∂s_l).
A :class:`Dynamics` turns it into s_{t+1}; every layer is updated from s_t at once (Jacobi).

- :class:`FixedPoint` (code base A, B's discrete-time "prototypical" models):
  s_l ← σ_l(g_l), with σ_l = ``model.activation(l)``.
- :class:`Euler` (B's continuous-time models, C's energies): s_l ← clamp(s_l + dt·g_l), with an
  optional clamp to [low, high] (B clamps to [0, 1]); dt already includes any time constant
  (C's dt/τ).

Shapes: ``state`` and the returned list hold one tensor per neuron layer, (B, ...) each.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


class Dynamics:
    """One relaxation step s_{t+1} = F(s_t) built from ``model.state_grad``."""

    def step(self, model, state: list[torch.Tensor], drive: list[torch.Tensor], beta=0.0,
             y: torch.Tensor | None = None) -> list[torch.Tensor]:
        raise NotImplementedError


@dataclass(frozen=True)
class FixedPoint(Dynamics):
    """s_l ← σ_l(∂Φ_β/∂s_l)."""

    def step(self, model, state, drive, beta=0.0, y=None):
        grads = model.state_grad(state, drive, beta, y)
        return [model.activation(i)(g) for i, g in enumerate(grads)]


@dataclass(frozen=True)
class Euler(Dynamics):
    """s_l ← clamp(s_l + dt·∂Φ_β/∂s_l): explicit gradient ascent on Φ (descent on E)."""

    dt: float
    clamp: tuple[float, float] | None = None

    def step(self, model, state, drive, beta=0.0, y=None):
        grads = model.state_grad(state, drive, beta, y)
        new = [torch.add(s, g, alpha=self.dt) for s, g in zip(state, grads)]
        if self.clamp is not None:
            low, high = self.clamp
            new = [s.clamp_(low, high) for s in new]
        return new
