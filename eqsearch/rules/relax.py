"""Relaxation: the one generic loop over steps of a model's dynamics.

No host synchronisation happens here (the residual stays a tensor) except at the checks of
``rule.tol``, and every per-phase constant (the input drive, computed once per batch by the
caller; whatever the model's :meth:`~eqsearch.models.base.EnergyModel.stepper` derives from
its weights) is computed once per phase. ``on_step(prev, new)`` is called after every step when
given (continual EP updates the weights there, so the stepper is built with ``frozen=False``);
``order`` is ``rule.order`` (sync: Jacobi; async: even/odd layers).
"""

from __future__ import annotations

from typing import Callable

import torch

from eqsearch.models.base import EnergyModel, State, Stepper, residual

StepHook = Callable[[State, State], None]


def run_steps(step: Stepper, state: State, steps: int, on_step: StepHook | None = None) -> tuple[State, torch.Tensor]:
    """``steps`` applications of ``step`` from ``state``: the final state and ‖s_T − s_{T−1}‖
    (0-dim, batch RMS; 0 when ``steps`` is 0)."""
    prev = state
    if on_step is None:
        for _ in range(steps):
            prev, state = state, step(state)
    else:
        for _ in range(steps):
            prev, state = state, step(state)
            on_step(prev, state)
    if steps == 0:
        return state, state[0].new_zeros(())
    return state, residual(prev, state)


def relax(model: EnergyModel, drive: State, state: State, steps: int, beta=0.0, y: torch.Tensor | None = None,
          on_step: StepHook | None = None, order: str = "sync") -> tuple[State, torch.Tensor]:
    """Run ``steps`` steps of the dynamics from ``state``; returns the final state and
    ‖s_T − s_{T−1}‖ (0-dim, batch RMS; 0 when ``steps`` is 0)."""
    step = model.stepper(drive, beta, y, order, frozen=on_step is None)
    return run_steps(step, state, steps, on_step)


def relax_to_tol(model: EnergyModel, drive: State, state: State, max_steps: int, tol: float, every: int,
                 beta=0.0, y: torch.Tensor | None = None, order: str = "sync") -> tuple[State, torch.Tensor, int]:
    """Up to ``max_steps`` steps, stopping at the first check where ‖s_t − s_{t−1}‖ < ``tol``;
    the residual is checked every ``every`` steps (and at the end), so the loop synchronises
    with the host once per check only. Returns (state, residual, steps run). ``tol`` = 0: the
    plain fixed-length :func:`relax`."""
    if tol <= 0.0:
        state, res = relax(model, drive, state, max_steps, beta, y, order=order)
        return state, res, max_steps
    step = model.stepper(drive, beta, y, order)
    done, res = 0, state[0].new_zeros(())
    while done < max_steps:
        n = min(every, max_steps - done)
        state, res = run_steps(step, state, n)
        done += n
        if float(res) < tol:
            break
    return state, res, done


def free_phase(model: EnergyModel, x: torch.Tensor, steps: int, generator: torch.Generator | None = None,
               tol: float = 0.0, every: int = 5, order: str = "sync") -> tuple[State, State, torch.Tensor, int]:
    """Input drive, then up to ``steps`` free steps from the model's initial state (early exit
    below ``tol``, see :func:`relax_to_tol`): (drive, s*, residual, steps run). ``generator``
    supplies the batch's random draws (dropout masks, random initial states)."""
    drive = model.input_drive(x, generator)
    state, res, done = relax_to_tol(model, drive, model.init_state(drive, generator), steps, tol, every,
                                    order=order)
    return drive, state, res, done
