"""The contract every energy-based network of eqsearch fulfils.

Vocabulary (shared by every family: MLPs, CNNs, continual-EP networks, energies):

- ``x``: a batch of inputs, shape (B, *input_shape).
- ``drive``: per-batch constants of the dynamics (the first layer's input drive W_1 x + b_1,
  dropout masks, ...), a list of tensors whose first dimension is the batch. It is computed
  once per batch by :meth:`EnergyModel.input_drive` and reused by every relaxation step.
- ``state``: the neuron layers s_1 ... s_N (input -> output), a list of tensors (B, ...); the
  input is clamped and is not part of the state.
- ``beta``: nudging strength, a float or a (B, 1) tensor (one β per sample, so that the +β
  and −β phases of the symmetric estimator run as one batch of 2B); ``y`` the (B, C) float
  target (one-hot) whenever β ≠ 0.
- Sign convention (code base A): the dynamics ascend a primitive function Φ; the nudged
  function is Φ_β = Φ − β·L; energy models use Φ = −E (and Φ_β = −(E + β·C)).
  :meth:`EnergyModel.state_grad` is ∂Φ_β/∂s, :meth:`EnergyModel.dphi_dtheta` the batch-mean
  ∂Φ_β/∂θ; the learning rules turn differences of the latter into estimates of +∂L/∂θ.
- Gradients are dicts keyed by parameter name (as in ``named_parameters()``); the rules write
  them to ``p.grad`` strictly (:func:`eqsearch.rules.write_grads`): a missing or extra name is
  an error, never a shift.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from typing import Callable, Iterator, Sequence

import torch
from torch import nn

from eqsearch.config import ORDERS
from eqsearch.dynamics import Dynamics, FixedPoint
from eqsearch.errors import ConfigError

State = list[torch.Tensor]
Beta = float | torch.Tensor
Grads = dict[str, torch.Tensor]
# a rank-B form of a batch-mean gradient: (P, S) stands for Pᵀ S (a weight, P (B, n_out) with the
# batch mean and any sign already folded in, S (B, n_in)); (P, None) for P.sum(0) (a bias)
Factors = dict[str, tuple[torch.Tensor, torch.Tensor | None]]
# one relaxation step of a phase, s_t -> s_{t+1}, with the phase's drive, β and target bound
Stepper = Callable[[State], State]


def materialize(factors: Factors) -> Grads:
    """The gradients the factors stand for (:data:`Factors`)."""
    return {name: p.sum(0) if s is None else p.t() @ s for name, (p, s) in factors.items()}


_RESTORING = contextvars.ContextVar("eqsearch_restoring", default=False)


@contextlib.contextmanager
def restoring(active: bool = True) -> Iterator[None]:
    """While active, the models built are about to receive a checkpoint's state
    (:func:`eqsearch.training.prepare_run`): a builder does not read the files that only
    initialise what the checkpoint holds (the LCA-CNN's dictionary), which may have moved."""
    token = _RESTORING.set(active)
    try:
        yield
    finally:
        _RESTORING.reset(token)


def is_restoring() -> bool:
    """Whether the model being built will be loaded from a checkpoint (:func:`restoring`)."""
    return _RESTORING.get()


def is_zero(beta: Beta) -> bool:
    """Whether β is the float 0 (a free step); a tensor β is always treated as nudging."""
    return isinstance(beta, float) and beta == 0.0


class EnergyModel(nn.Module):
    """Base class of every network: state gradient, dynamics, Φ (autograd oracle), ∂Φ/∂θ.

    Subclasses set ``dynamics`` (default :class:`~eqsearch.dynamics.FixedPoint`), ``loss`` (the
    name :func:`eqsearch.losses.loss_per_sample` reads) and, for untied forward / backward
    weights, ``vector_field`` (then each layer l follows its own φ_l, and parameter updates take
    the presynaptic activity from a state ``pre``).
    """

    dynamics: Dynamics = FixedPoint()
    vector_field: bool = False
    loss: str = "mse"
    # (weight name, bias name) of a first layer that enters the dynamics only through
    # drive[1] = drive[0] @ Wᵀ + b, and whose step_update_factors entries are (P, drive[0]) and
    # (P', None); lets plain-SGD continual EP track drive[1] instead of recomputing it. None: none.
    affine_drive: tuple[str, str] | None = None
    # a family's fused stepper (in-place buffers, per-phase constants) may serve the phases; False once
    # ``train.compile`` hands the steps to torch.compile, which wants the plain functional step
    fused_steps: bool = True
    # set by :func:`eqsearch.rules.relax.compile_phases` (``train.compile = "phase"``)
    compiled_phase: Callable | None = None

    # ------------------------------------------------------------------ dynamics
    def input_drive(self, x: torch.Tensor, generator: torch.Generator | None = None) -> State:
        """Per-batch constants of the dynamics; first dimension B. Random per-batch draws
        (dropout masks, in training mode only) come from ``generator``."""
        raise NotImplementedError

    def init_state(self, drive: State, generator: torch.Generator | None = None) -> State:
        """The state a free phase starts from (zeros unless a family says otherwise); random
        initial states are drawn from ``generator``."""
        raise NotImplementedError

    def state_grad(self, state: State, drive: State, beta: Beta = 0.0, y: torch.Tensor | None = None) -> State:
        """∂Φ_β/∂s_l for every layer at ``state``, in closed form (no autograd)."""
        raise NotImplementedError

    def activation(self, i: int):
        """σ of layer i (an :class:`~eqsearch.activations.Activation`), for fixed-point dynamics."""
        raise NotImplementedError

    def step(self, state: State, drive: State, beta: Beta = 0.0, y: torch.Tensor | None = None) -> State:
        """One synchronous (Jacobi) step of the dynamics. Families may override it with a fused
        closed form that must equal ``self.dynamics.step(self, ...)`` (the contract test checks)."""
        return self.dynamics.step(self, state, drive, beta, y)

    def half_step(self, state: State, drive: State, beta: Beta = 0.0, y: torch.Tensor | None = None,
                  parity: int = 0) -> State:
        """The step with only the layers i ≡ ``parity`` (mod 2) updated from ``state`` (i the 0-based
        state index: 0 is the layer next to the input), the others carried over. This default takes
        a whole step and keeps those layers (a sweep of two half steps then costs two steps);
        families override it with one that computes only those layers."""
        new = self.step(state, drive, beta, y)
        return [n if i % 2 == parity else s for i, (s, n) in enumerate(zip(state, new))]

    def stepper(self, drive: State, beta: Beta = 0.0, y: torch.Tensor | None = None, order: str = "sync",
                frozen: bool = True) -> Stepper:
        """The step of one phase, s_t -> s_{t+1}, with ``drive``, β and ``y`` bound.

        ``order`` (``rule.order``): ``sync`` is :meth:`step` (every layer from s_t, Jacobi, the
        code bases' dynamics); ``async`` is one even/odd sweep (Gauss-Seidel by parity): layers
        0, 2, 4, ... from s_t, then 1, 3, 5, ... from those new values. Both have the same fixed
        points; one async step also updates every layer once.

        ``frozen``: the parameters stay fixed during the phase (False while continual EP updates
        them at every step), so a family may compute per-phase constants from them once. A
        stepper may write its result into buffers of its own (never into the state it is given);
        a state it returned is overwritten two steps later, so keep only the last one."""
        if order == "sync":
            return lambda state: self.step(state, drive, beta, y)
        if order != "async":
            raise ValueError(f"order: got {order!r}; allowed: {', '.join(ORDERS)}")
        return lambda state: self.half_step(self.half_step(state, drive, beta, y, 0), drive, beta, y, 1)

    def logits(self, state: State) -> torch.Tensor:
        """What the loss and the prediction read, shape (B, num_classes)."""
        return state[-1]

    # ------------------------------------------------------------------ Φ and ∂Φ/∂θ
    def phi(self, x: torch.Tensor, state: State, beta: Beta = 0.0, y: torch.Tensor | None = None,
            pre: State | None = None, drive: State | None = None) -> torch.Tensor:
        """Φ_β per sample, shape (B,). For vector-field models, Σ_l φ_l with each layer's own
        activity taken from ``state`` and its inputs from ``pre`` (default ``state``). Written
        with plain autograd-able ops; used by tests and benchmarks as the oracle."""
        raise NotImplementedError

    def dphi_dtheta(self, x: torch.Tensor, state: State, beta: Beta = 0.0, y: torch.Tensor | None = None,
                    pre: State | None = None, drive: State | None = None) -> Grads:
        """Batch-mean ∂Φ_β/∂θ at ``state`` in closed form, one entry per trained parameter.
        Vector-field models take presynaptic activity from ``pre`` (default ``state``)."""
        raise NotImplementedError

    def contrast(self, x: torch.Tensor, y: torch.Tensor | None, a: State, beta_a: Beta, b: State,
                 beta_b: Beta, scale: float, pre: State | None = None, drive: State | None = None) -> Grads:
        """scale · [∂Φ̄_{β_b}/∂θ(b) − ∂Φ̄_{β_a}/∂θ(a)] per parameter.

        The EP estimate of +∂L/∂θ is this with scale = −1/(β_b − β_a). Families may override it
        with a fused form; this default evaluates :meth:`dphi_dtheta` twice.
        """
        ga = self.dphi_dtheta(x, a, beta_a, y, pre=pre, drive=drive)
        gb = self.dphi_dtheta(x, b, beta_b, y, pre=pre, drive=drive)
        return {name: (gb[name] - g) * scale for name, g in ga.items()}

    def contrast_factors(self, x: torch.Tensor, y: torch.Tensor | None, a: State, beta_a: Beta, b: State,
                         beta_b: Beta, scale: float, pre: State | None = None,
                         drive: State | None = None) -> Factors | None:
        """:meth:`contrast` in rank-B form (:data:`Factors`), for families whose ∂Φ̄/∂θ is a sum of
        outer products and whose :meth:`postprocess_grads` does nothing: plain SGD then applies the
        EP update without forming the gradients. None (this default) where there is no such form."""
        return None

    def step_update(self, x: torch.Tensor, prev: State, new: State, beta: Beta, y: torch.Tensor | None = None,
                    drive: State | None = None) -> Grads:
        """The estimate of +∂L/∂θ contributed by one nudged step s_t = ``prev`` → s_{t+1} = ``new``
        (continual EP): −(1/β)[∂Φ̄_β/∂θ(s_{t+1}) − ∂Φ̄_β/∂θ(s_t)], vector-field models with
        presynaptic activity s_t. Summed over a nudged phase with fixed weights it telescopes to
        the one-sided EP update. ``beta``: a nonzero float."""
        pre = prev if self.vector_field else None
        return self.contrast(x, y, prev, beta, new, beta, -1.0 / beta, pre=pre, drive=drive)

    def step_update_factors(self, x: torch.Tensor, prev: State, new: State, beta: Beta,
                            y: torch.Tensor | None = None, drive: State | None = None) -> Factors | None:
        """:meth:`step_update` in rank-B form (:data:`Factors`), for families whose per-step update
        is a sum of outer products; None where the family has no such form."""
        return None

    # ------------------------------------------------------------------ training hooks
    def synapse_groups(self) -> list[list[nn.Parameter]]:
        """Parameters per synapse layer, input -> output: one optimizer group each, so that
        ``optim.lrs[i]`` applies to group i (backward weights join the layer they mirror)."""
        raise NotImplementedError

    def metrics(self) -> dict[str, float]:
        """Extra per-epoch metrics of the model itself (weight angles, sparsity, ...)."""
        return {}

    def state_metrics(self, x: torch.Tensor, state: State, drive: State | None = None) -> dict[str, torch.Tensor]:
        """Per-sample diagnostics of a free state, shape (B,) each (e.g. its energy); the
        evaluation reports their mean as ``test_<name>``."""
        return {}

    def on_batch_end(self) -> None:
        """Per-batch work of the model after the rule's update of a training batch, called by
        the training loop whatever the rule (e.g. the LCA-CNN's per-batch dictionary updates)."""

    def on_epoch_end(self) -> None:
        """Per-epoch work of the model after the training pass (e.g. dictionary updates)."""

    def postprocess_grads(self) -> None:
        """Hook run after an EP rule wrote ``p.grad`` (e.g. VF-CNN same-update); BPTT keeps
        the true gradients, as in code base A."""


class VectorField:
    """Mixin of vector-field models: backward weights ``B[k]`` mirror the forward synapse
    ``W[k+1]``; they share its optimizer group and their angle to it is a metric."""

    vector_field = True

    def mirrored_forward(self, k: int) -> torch.Tensor:
        """The forward weight that ``B[k]`` mirrors, in ``B[k].weight``'s layout."""
        raise NotImplementedError

    def synapse_groups(self):
        groups = super().synapse_groups()
        for k, b in enumerate(self.B):
            groups[k + 1].append(b.weight)
        return groups

    def angles(self) -> dict[str, float]:
        """``angle_B<k>``: degrees between each backward matrix and the forward one it mirrors."""
        return {f"angle_B{k + 1}": weight_angle(b.weight, self.mirrored_forward(k)) for k, b in enumerate(self.B)}

    def metrics(self) -> dict[str, float]:
        return {**super().metrics(), **self.angles()}


def weight_angle(a: torch.Tensor, b: torch.Tensor) -> float:
    """arccos(⟨a, b⟩_F / (‖a‖_F ‖b‖_F)) in degrees."""
    a, b = a.detach(), b.detach()
    cos = (a * b).sum() / (a.norm() * b.norm()).clamp_min(1e-30)
    return float(torch.rad2deg(torch.arccos(cos.clamp(-1.0, 1.0))))


def tile_batch(tensors: Sequence[torch.Tensor], k: int) -> State:
    """Repeat every tensor k times along the batch dimension: (B, ...) -> (kB, ...)."""
    return [t.repeat(k, *([1] * (t.dim() - 1))) for t in tensors]


def residual(prev: State, new: State) -> torch.Tensor:
    """‖s_{t+1} − s_t‖ over all layers, root-mean-square over the batch (a 0-dim tensor):
    sqrt(mean_b Σ_l ‖Δs_{l,b}‖²) = sqrt(Σ_l ‖Δs_l‖²_F / B), one distance per layer."""
    dists = torch.stack([torch.dist(n, p) for p, n in zip(prev, new)])
    return torch.linalg.vector_norm(dists) / math.sqrt(new[0].shape[0])


def check_layer_sizes(archi: list[int], input_shape: tuple[int, ...], num_classes: int) -> None:
    """A layered network's sizes fit the data: first = flattened input size, last = classes."""
    n_in = 1
    for d in input_shape:
        n_in *= d
    if archi[0] != n_in or archi[-1] != num_classes:
        raise ConfigError(f"model.archi: got {archi}; allowed: first size = input size {n_in}, "
                          f"last size = number of classes {num_classes} for this data set")


def scale_init(module: nn.Module, scale: float | None) -> None:
    """Multiply every weight and bias by ``scale`` (seed flag ``--scale``)."""
    if scale is None:
        return
    with torch.no_grad():
        for p in module.parameters():
            p.mul_(scale)
