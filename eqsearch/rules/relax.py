"""Relaxation: the one generic loop over steps of a model's dynamics.

No host synchronisation happens here (the residual stays a tensor) except at the checks of
``rule.tol``, and every per-phase constant (the input drive, computed once per batch by the
caller; whatever the model's :meth:`~eqsearch.models.base.EnergyModel.stepper` derives from
its weights) is computed once per phase. ``on_step(prev, new)`` is called after every step when
given (continual EP updates the weights there, so the stepper is built with ``frozen=False``);
``order`` is ``rule.order`` (sync: Jacobi; async: even/odd layers).

``train.compile = "phase"`` (:func:`compile_phases`) runs each phase with fixed parameters and
no autograd graph through ``torch.compile`` (mode ``reduce-overhead``) of :func:`fixed_phase`, in
chunks of :data:`PHASE_CHUNK` steps: on CUDA each chunk of a given length, β and batch shape is
one CUDA-graph replay instead of a kernel launch per operation (a 250-step phase: 25 replays);
the chunk bounds what the compiler unrolls, hence its time. On the CPU it runs inductor's fused
kernels. Phases with a per-step hook (continual EP) or a graph (BPTT) stay eager.
"""

from __future__ import annotations

from functools import partial
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


def fixed_phase(model: EnergyModel, drive: State, state: State, steps: int, beta=0.0,
                y: torch.Tensor | None = None, order: str = "sync") -> tuple[State, torch.Tensor]:
    """``steps`` steps of one phase with the parameters fixed: the unit that
    :func:`compile_phases` compiles (see :func:`relax`)."""
    return run_steps(model.stepper(drive, beta, y, order), state, steps)


PHASE_CHUNK = 10  # steps per compiled call: the compiler unrolls the loop over them
# (length, β, batch shape) of every chunk a run meets: free, ±β nudged, evaluation, the last
# short batches, a phase's remainder, the checks of an early exit; each compiles once
PHASE_RECOMPILE_LIMIT = 64


def compile_phases(model: EnergyModel) -> None:
    """Make :func:`relax` run ``model``'s fixed-parameter phases through ``torch.compile`` of
    :func:`fixed_phase` (mode ``reduce-overhead``), on the generic stepper (a fused stepper's
    in-place buffers would keep CUDA graphs out)."""
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, PHASE_RECOMPILE_LIMIT)
    model.fused_steps = False
    # the model is an argument, not bound: a deep copy of the model (continual EP's GDU check) runs its own
    model.compiled_phase = torch.compile(fixed_phase, mode="reduce-overhead", dynamic=False)


def _compiled(model: EnergyModel) -> bool:
    """Whether a phase of ``model`` runs compiled now: :func:`compile_phases` asked for it and
    no autograd graph is being recorded."""
    return model.compiled_phase is not None and not torch.is_grad_enabled()


def _run_phase(model: EnergyModel, drive: State, state: State, steps: int, beta, y, order) -> tuple[State, torch.Tensor]:
    """:func:`fixed_phase`; when :func:`_compiled`, in compiled chunks of :data:`PHASE_CHUNK`
    steps. Each chunk's outputs are copied out: a CUDA graph's replay overwrites the memory of
    its previous outputs."""
    if not _compiled(model) or steps == 0:
        return fixed_phase(model, drive, state, steps, beta, y, order)
    done = 0
    while done < steps:
        n = min(PHASE_CHUNK, steps - done)
        if state[0].is_cuda:
            torch.compiler.cudagraph_mark_step_begin()
        new, res = model.compiled_phase(model, drive, state, n, beta, y, order)
        state = [s.clone() for s in new]
        done += n
    return state, res.clone()


def relax(model: EnergyModel, drive: State, state: State, steps: int, beta=0.0, y: torch.Tensor | None = None,
          on_step: StepHook | None = None, order: str = "sync") -> tuple[State, torch.Tensor]:
    """Run ``steps`` steps of the dynamics from ``state``; returns the final state and
    ‖s_T − s_{T−1}‖ (0-dim, batch RMS; 0 when ``steps`` is 0)."""
    if on_step is None:
        return _run_phase(model, drive, state, steps, beta, y, order)
    step = model.stepper(drive, beta, y, order, frozen=False)
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
    if _compiled(model):  # each check's ``every`` steps one compiled phase
        chunk = partial(_run_phase, model, drive, beta=beta, y=y, order=order)
    else:
        chunk = partial(run_steps, model.stepper(drive, beta, y, order))
    done, res = 0, state[0].new_zeros(())
    while done < max_steps:
        n = min(every, max_steps - done)
        state, res = chunk(state, n)
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
