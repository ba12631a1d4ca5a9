"""Relaxation: the one generic loop over steps of a model's dynamics.

No host synchronisation happens here (the residual stays a tensor), and the input drive is
computed once per phase by the caller. ``on_step(prev, new)`` is called after every step when
given (continual EP updates the weights there); without it the loop is the plain one.
"""

from __future__ import annotations

from typing import Callable

import torch

from eqsearch.models.base import EnergyModel, State, residual

StepHook = Callable[[State, State], None]


def relax(model: EnergyModel, drive: State, state: State, steps: int, beta=0.0, y: torch.Tensor | None = None,
          on_step: StepHook | None = None) -> tuple[State, torch.Tensor]:
    """Run ``steps`` steps of the dynamics from ``state``; returns the final state and
    ‖s_T − s_{T−1}‖ (0-dim, batch RMS; 0 when ``steps`` is 0)."""
    prev = state
    if on_step is None:
        for _ in range(steps):
            prev, state = state, model.step(state, drive, beta, y)
    else:
        for _ in range(steps):
            prev, state = state, model.step(state, drive, beta, y)
            on_step(prev, state)
    if steps == 0:
        return state, state[0].new_zeros(())
    return state, residual(prev, state)


def free_phase(model: EnergyModel, x: torch.Tensor, steps: int,
               generator: torch.Generator | None = None) -> tuple[State, State, torch.Tensor]:
    """Input drive, then ``steps`` free steps from the model's initial state: (drive, s*, residual).
    ``generator`` supplies the batch's random draws (dropout masks, random initial states)."""
    drive = model.input_drive(x, generator)
    state, res = relax(model, drive, model.init_state(drive, generator), steps)
    return drive, state, res
