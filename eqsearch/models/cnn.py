"""Convolutional EP networks of code base A: the symmetric P_CNN and the vector-field VF_CNN.

Layers (input -> output). Conv synapse j (j < N_c) = ``W[j]`` = Conv2d(C_j -> C_{j+1}, k_j,
stride S_j, padding p_j, bias) followed by 2×2 pooling P_j (``pools[j]``: m / a / i); then one
Linear per ``fc`` entry, the first one reading vec(s) of the last conv layer. Neuron layer i
(0-based, ``state[i]``) is the output of synapse i: (B, C, H, W) for conv layers (after
pooling), (B, n) for fc layers. In ``softmax`` mode the last fc synapse is a read-out
(classifier), not a neuron layer: ``W[-1]`` maps vec(s_last) to logits.

Symmetric Φ per sample (sign convention of code base A: the dynamics ascend Φ), s_{-1} ≡ x,
ŝ = m ⊙ s the dropout-masked activity (m = 1 without dropout):

    Φ = Σ_i ⟨ŝ_i, P_i(W_i ⋆ ŝ_{i−1} + b_i)⟩  (fc: ⟨ŝ_i, W_i vec(ŝ_{i−1}) + b_i⟩)  − β·L
    L = L(s_last, y)                               (no read-out; mse or linear-output cel)
    L = CE(W_out vec(s_last) + b_out, y)           (softmax read-out)

The bias is added before pooling. Closed form of ∂Φ/∂s_i (what :meth:`CNN.state_grad` computes):

    ∂Φ/∂s_i = m_i ⊙ [P_i(W_i ⋆ ŝ_{i−1} + b_i) + W_{i+1}ᵀ ⋆ P*_{i+1}(ŝ_{i+1})] − β·∂L/∂s_i

where P*_{i+1} is the adjoint of pooling at the arg-max of the *current* pooling input
W_{i+1} ⋆ ŝ_i + b_{i+1} and W ᵀ⋆ the transposed convolution (fc: W_{i+1}ᵀ ŝ_{i+1}). In softmax
mode the nudge into s_last is β·W_outᵀ(softmax(W_out vec(s_last) + b_out) − ŷ). The update is
s_i ← σ(p_i·∂Φ/∂s_i) with p_i the keep probability (so the postsynaptic 1/p cancels and a
dropped neuron gets σ(0)); σ on every layer except the linear output of cel without read-out.
The first layer's drive P_0(W_0 ⋆ m_0 x + b_0) (and its arg-max) is computed once per batch.

Vector field (VF_CNN): ``B[k]`` has the shape of ``W[k+1]`` (no bias; none for the read-out)
and is used transposed for the feedback into s_k. Each layer follows its own
φ_k = ⟨ŝ_k, P_k(W_k ⋆ ŝ_{k−1} + b_k)⟩ + ⟨ŝ_{k+1}, P_{k+1}(B_k ⋆ ŝ_k)⟩ (the last one carries −β·L),
so the max-pool feedback uses the arg-max of B_k ⋆ ŝ_k.

Dropout (code base A's ``dropout`` branch, §2.9, without its indexing slip): ``dropouts`` are
keep probabilities for [x, s_0, s_1, ...]; masks m = Bernoulli(p)/p are drawn once per
minibatch in training mode (from the run's generator) and are all-ones in evaluation. The
layer the loss reads must keep p = 1 (enforced by the config).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from eqsearch.activations import IDENTITY, Activation, get_activation
from eqsearch.errors import ConfigError
from eqsearch.losses import loss_grad, loss_per_sample
from eqsearch.models.base import Beta, EnergyModel, Grads, State, VectorField, is_zero, scale_init
from eqsearch.models.pooling import pool, pool_adjoint, pooled_size


@dataclass(frozen=True)
class ConvGeometry:
    """Static shapes of one conv synapse: z = W ⋆ s + b has spatial ``z_size``; the
    transposed convolution needs ``output_padding`` to give back the input size."""

    stride: int
    padding: int
    output_padding: tuple[int, int]
    z_size: tuple[int, int]
    pool: str


def conv_geometry(input_shape: tuple[int, ...], channels, kernels, strides, paddings,
                  pools) -> tuple[list[ConvGeometry], list[tuple[int, int, int]]]:
    """Geometry of every conv synapse and the (C, H, W) of every conv neuron layer.

    Raises :class:`ConfigError` when a spatial size drops below 1."""
    if len(input_shape) != 3:
        raise ConfigError(f"model.kind: a CNN needs image inputs (C, H, W); this data set has "
                          f"input shape {tuple(input_shape)}")
    _, h, w = input_shape
    geo, shapes = [], []
    for j, (c, k, s, p, kind) in enumerate(zip(channels, kernels, strides, paddings, pools)):
        zh, zw = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        ph, pw = pooled_size(kind, zh), pooled_size(kind, zw)
        if min(zh, zw, ph, pw) < 1:
            raise ConfigError(
                f"model.kernels/strides/paddings/pools: conv layer {j + 1} (kernel {k}, stride {s}, "
                f"padding {p}, pool {kind!r}) maps a {h}×{w} input to {zh}×{zw} then {ph}×{pw}; "
                "allowed: settings that keep every spatial size >= 1 for this input size")
        out_pad = (h - ((zh - 1) * s - 2 * p + k), w - ((zw - 1) * s - 2 * p + k))
        geo.append(ConvGeometry(s, p, out_pad, (zh, zw), kind))
        shapes.append((c, ph, pw))
        h, w = ph, pw
    return geo, shapes


class CNN(EnergyModel):
    """Symmetric convolutional EP network (P_CNN)."""

    def __init__(self, input_shape: tuple[int, int, int], channels: list[int], kernels: list[int],
                 strides: list[int], paddings: list[int], pools: str, fc: list[int],
                 act: str = "mysig", loss: str = "mse", softmax: bool = False,
                 dropouts: list[float] | None = None, scale: float | None = None):
        super().__init__()
        self.geo, conv_shapes = conv_geometry(input_shape, channels, kernels, strides, paddings, pools)
        self.input_shape = tuple(input_shape)
        self.n_conv = len(channels)
        self.loss = loss
        self.softmax = softmax
        self.act = get_activation(act)
        self.keep = list(dropouts) if dropouts else None
        layers: list[nn.Module] = []
        c_in = input_shape[0]
        for c, k, g in zip(channels, kernels, self.geo):
            layers.append(nn.Conv2d(c_in, c, k, g.stride, g.padding))
            c_in = c
        c, h, w = conv_shapes[-1]
        n_in = c * h * w
        for n in fc:
            layers.append(nn.Linear(n_in, n))
            n_in = n
        self.W = nn.ModuleList(layers)
        shapes: list[tuple[int, ...]] = conv_shapes + [(n,) for n in fc]
        self.shapes = shapes[:-1] if softmax else shapes  # neuron layers only
        scale_init(self.W, scale)

    # ------------------------------------------------------------------ building blocks
    def _synapse(self, j: int, below: torch.Tensor, weight: torch.Tensor,
                 bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Synapse j's coupling term P_j(weight ⋆ below + bias) (fc: weight·vec(below) + bias)
        and, for max-pool, the arg-max indices of its pooling input."""
        if j < self.n_conv:
            g = self.geo[j]
            return pool(g.pool, F.conv2d(below, weight, bias, g.stride, g.padding))
        return F.linear(below.flatten(1), weight, bias), None

    def _synapse_adjoint(self, j: int, above: torch.Tensor, weight: torch.Tensor,
                         indices: torch.Tensor | None) -> torch.Tensor:
        """weightᵀ ⋆ P*_j(above): the gradient of ⟨above, synapse_j(below)⟩ in ``below``,
        shape (B, *input shape of synapse j)."""
        if j < self.n_conv:
            g = self.geo[j]
            grad_z = pool_adjoint(g.pool, above, indices, g.z_size)
            return F.conv_transpose2d(grad_z, weight, None, g.stride, g.padding, g.output_padding)
        shape = self.shapes[j - 1] if j > 0 else self.input_shape
        return (above @ weight).view(-1, *shape)

    def _synapse_grads(self, j: int, below: torch.Tensor, post: torch.Tensor, weight: torch.Tensor,
                       bias: torch.Tensor | None, indices: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Batch-mean ∂⟨post, synapse_j(below)⟩/∂(weight[, bias]) at the arg-max of
        weight ⋆ below + bias (``indices`` when already known)."""
        n = below.shape[0]
        if j < self.n_conv:
            g = self.geo[j]
            if g.pool == "m" and indices is None:
                indices = self._synapse(j, below, weight, bias)[1]
            grad_z = pool_adjoint(g.pool, post, indices, g.z_size)
            dw = torch.nn.grad.conv2d_weight(below, weight.shape, grad_z, g.stride, g.padding) / n
            return [dw] if bias is None else [dw, grad_z.sum((0, 2, 3)) / n]
        dw = post.t() @ below.flatten(1) / n
        return [dw] if bias is None else [dw, post.mean(0)]

    def _readout(self, s_last: torch.Tensor) -> torch.Tensor:
        return F.linear(s_last.flatten(1), self.W[-1].weight, self.W[-1].bias)

    def _feedback(self, i: int, act: State, indices: list) -> torch.Tensor:
        """Feedback into s_i: W_{i+1}ᵀ ⋆ P*_{i+1}(ŝ_{i+1}) at the current arg-max ``indices[i+1]``."""
        return self._synapse_adjoint(i + 1, act[i + 1], self.W[i + 1].weight, indices[i + 1])

    def _mirror_phi(self, own: State, inp: State) -> torch.Tensor:
        """Extra per-sample terms of Φ beyond the forward couplings (none when symmetric)."""
        return own[0].new_zeros(own[0].shape[0])

    # ------------------------------------------------------------------ drive and masks
    @property
    def _memory_format(self) -> torch.memory_format:
        """channels-last when the conv weights were moved there (``model.to(memory_format=...)``;
        a weight with one input channel or 1×1 kernels is ambiguous, so any conv decides)."""
        cl = any(w.weight.is_contiguous(memory_format=torch.channels_last) and not w.weight.is_contiguous()
                 for w in self.W[:self.n_conv])
        return torch.channels_last if cl else torch.contiguous_format

    def _draw_masks(self, x: torch.Tensor, generator: torch.Generator | None) -> tuple[State, State]:
        """Per-minibatch dropout: masks Bernoulli(p)/p for [x, s_0, ...] and the 0/1 gates
        p·m of the neuron layers."""
        b = x.shape[0]
        gen_device = generator.device if generator is not None else torch.device("cpu")
        masks, gates = [], []
        for k, (p, shape) in enumerate(zip(self.keep, [self.input_shape] + self.shapes)):
            if p >= 1.0:
                gate = x.new_ones((b,) + tuple(shape))
            else:
                draw = torch.rand((b,) + tuple(shape), generator=generator, device=gen_device)
                gate = (draw < p).to(device=x.device, dtype=x.dtype)
            masks.append(gate / p)
            if k > 0:
                gates.append(gate)
        return masks, gates

    def input_drive(self, x: torch.Tensor, generator: torch.Generator | None = None) -> State:
        """[P_0(W_0 ⋆ m_0 x + b_0) (B, C_1, H_1, W_1), its arg-max (max-pool only),
        then in training with dropout the masks [m_x, m_0, ...] and gates [p_0 m_0, ...]]."""
        x = x.contiguous(memory_format=self._memory_format)
        masks, gates = self._draw_masks(x, generator) if self.training and self.keep else ([], [])
        up, idx = self._synapse(0, x * masks[0] if masks else x, self.W[0].weight, self.W[0].bias)
        return [up] + ([idx] if idx is not None else []) + masks + gates

    def _unpack(self, drive: State) -> tuple[torch.Tensor, torch.Tensor | None, State | None, State | None]:
        """(first-layer drive, its arg-max or None, masks or None, gates or None)."""
        has_idx = self.geo[0].pool == "m"
        idx0 = drive[1] if has_idx else None
        rest = drive[2 if has_idx else 1:]
        if not rest:
            return drive[0], idx0, None, None
        n = len(self.shapes) + 1
        return drive[0], idx0, rest[:n], rest[n:]

    @staticmethod
    def _masked(state: State, masks: State | None) -> State:
        return state if masks is None else [s * m for s, m in zip(state, masks[1:])]

    def input_grad(self, state: State, drive: State) -> torch.Tensor:
        """∂Φ/∂x at ``state``: m_x ⊙ W_0ᵀ ⋆ P_0*(ŝ_0) at the drive's arg-max, shape (B, *input_shape);
        what a network stacked on a dynamic layer (the LCA-CNN's copy layer) feeds back into it."""
        _, idx0, masks, _ = self._unpack(drive)
        post = state[0] * masks[1] if masks else state[0]
        grad = self._synapse_adjoint(0, post, self.W[0].weight, idx0)
        return grad * masks[0] if masks else grad

    def init_state(self, drive: State, generator: torch.Generator | None = None) -> State:
        b, fmt = drive[0].shape[0], self._memory_format
        return [drive[0].new_zeros((b,) + tuple(sh)).contiguous(
            memory_format=fmt if len(sh) == 3 else torch.contiguous_format) for sh in self.shapes]

    # ------------------------------------------------------------------ dynamics
    def _nudge(self, s_last: torch.Tensor, beta: Beta, y: torch.Tensor) -> torch.Tensor:
        """β·∂L/∂s_last, shape of s_last (β a float or a (B, 1) tensor)."""
        if self.softmax:
            r = beta * loss_grad("cel", self._readout(s_last), y)
            return (r @ self.W[-1].weight).view_as(s_last)
        return beta * loss_grad(self.loss, s_last, y)

    def activation(self, i: int) -> Activation:
        """σ of neuron layer i; the identity for the linear output of cel without read-out."""
        if i == len(self.shapes) - 1 and self.loss == "cel" and not self.softmax:
            return IDENTITY
        return self.act

    def state_grad(self, state: State, drive: State, beta: Beta = 0.0,
                   y: torch.Tensor | None = None) -> State:
        """p_i·∂Φ_β/∂s_i for every layer at once (Jacobi), closed form, no autograd: with
        dropout, the 0/1 gate p_i·m_i of the layer multiplies its gradient (p_i = 1 without)."""
        up0, idx0, masks, gates = self._unpack(drive)
        act = self._masked(state, masks)
        ups, indices = [up0], [idx0]
        for i in range(1, len(state)):
            up, idx = self._synapse(i, act[i - 1], self.W[i].weight, self.W[i].bias)
            ups.append(up)
            indices.append(idx)
        return [self._layer_grad(i, state, act, ups, indices, gates, beta, y) for i in range(len(state))]

    def _layer_grad(self, i: int, state: State, act: State, ups: list, indices: list, gates: State | None,
                    beta: Beta, y: torch.Tensor | None) -> torch.Tensor:
        """p_i·∂Φ_β/∂s_i from the layer's coupling term ``ups[i]`` (its input through synapse i)
        and the feedback of s_{i+1} at the arg-max ``indices[i+1]``."""
        g = ups[i]
        if i < len(state) - 1:
            g = g + self._feedback(i, act, indices)
        if gates is not None:
            g = g * gates[i]
        if i == len(state) - 1 and not is_zero(beta):
            g = g - self._nudge(state[i], beta, y)
        return g

    def stepper(self, drive: State, beta: Beta = 0.0, y: torch.Tensor | None = None, order: str = "sync",
                frozen: bool = True):
        """async: :class:`AlternatingStep` (every synapse computed once per sweep, as in a sync
        step) unless ``train.compile`` turned ``fused_steps`` off; otherwise the generic stepper."""
        if order == "async" and self.fused_steps:
            return AlternatingStep(self, drive, beta, y)
        return super().stepper(drive, beta, y, order, frozen)

    def logits(self, state: State) -> torch.Tensor:
        return self._readout(state[-1]) if self.softmax else state[-1]

    # ------------------------------------------------------------------ Φ and ∂Φ/∂θ
    def phi(self, x, state, beta=0.0, y=None, pre=None, drive=None):
        """Φ_β per sample (B,) with plain autograd-able ops; dropout masks from ``drive``."""
        masks = self._unpack(drive)[2] if drive is not None else None
        own = self._masked(state, masks)
        inp = self._masked(state if pre is None else pre, masks)
        below = x * masks[0] if masks else x
        total = self._mirror_phi(own, inp)
        for i, post in enumerate(own):
            up, _ = self._synapse(i, below, self.W[i].weight, self.W[i].bias)
            total = total + (post * up).flatten(1).sum(1)
            below = inp[i]
        if not is_zero(beta):
            b = beta.flatten() if torch.is_tensor(beta) else beta
            total = total - b * loss_per_sample(self.loss, self.logits(state), y)
        return total

    def dphi_dtheta(self, x, state, beta=0.0, y=None, pre=None, drive=None) -> Grads:
        """Batch-mean ∂Φ_β/∂θ per parameter (``W.i.weight``, ``W.i.bias``, ``B.k.weight``).
        Conv: correlation of P*(ŝ_i) (arg-max of this state's pooling input) with ŝ_{i−1};
        read-out: −β·∂CE/∂(W_out, b_out) at ``state``."""
        idx0, masks = (None, None) if drive is None else self._unpack(drive)[1:3]
        own = self._masked(state, masks)
        inp = self._masked(state if pre is None else pre, masks)
        below = x * masks[0] if masks else x
        grads: Grads = {}
        for i, post in enumerate(own):
            w = self.W[i]
            dw, db = self._synapse_grads(i, below, post, w.weight, w.bias, idx0 if i == 0 else None)
            grads[f"W.{i}.weight"], grads[f"W.{i}.bias"] = dw, db
            below = inp[i]
        if self.softmax:
            s_flat = state[-1].flatten(1)
            r = beta * loss_grad("cel", self._readout(state[-1]), y)  # (B, classes)
            out = len(self.W) - 1
            grads[f"W.{out}.weight"] = -(r.t() @ s_flat) / s_flat.shape[0]
            grads[f"W.{out}.bias"] = -r.mean(0)
        grads.update(self._mirror_grads(own, inp))
        return grads

    def _mirror_grads(self, own: State, inp: State) -> Grads:
        return {}

    def synapse_groups(self):
        return [list(w.parameters()) for w in self.W]


class AlternatingStep:
    """One even/odd sweep of a :class:`CNN` (``rule.order`` async): layers 0, 2, ... from s_t,
    then 1, 3, ... from those, each by σ(∂Φ_β/∂s_i) as in :meth:`CNN.state_grad`.

    Layer i needs its coupling term up_i = P_i(W_i ⋆ ŝ_{i−1}) and the arg-max of up_{i+1}, which
    depends on ŝ_i itself. A half step computes the coupling terms of its own layers (their
    inputs just changed) and takes those of the other parity from the half step before, whose
    inputs have not changed since: each synapse runs once per sweep, as in a synchronous step.
    A state other than the one this stepper returned last starts from scratch.
    """

    def __init__(self, model: CNN, drive: State, beta: Beta, y: torch.Tensor | None):
        self.model, self.beta, self.y = model, beta, y
        self.up0, self.idx0, self.masks, self.gates = model._unpack(drive)
        self.ups: list | None = None       # coupling terms of the last half step's input state
        self.indices: list | None = None
        self.last: State | None = None     # the state those belong to (identity)

    def _half(self, state: State, parity: int, fresh: bool) -> State:
        m = self.model
        act = m._masked(state, self.masks)
        n = len(state)
        if fresh:
            self.ups, self.indices = [self.up0] + [None] * (n - 1), [self.idx0] + [None] * (n - 1)
        for i in range(1, n):
            if fresh or i % 2 == parity:
                self.ups[i], self.indices[i] = m._synapse(i, act[i - 1], m.W[i].weight, m.W[i].bias)
        new = list(state)
        for i in range(parity, n, 2):
            g = m._layer_grad(i, state, act, self.ups, self.indices, self.gates, self.beta, self.y)
            new[i] = m.activation(i)(g)
        return new

    def __call__(self, state: State) -> State:
        fresh = self.last is None or any(a is not b for a, b in zip(state, self.last))
        half = self._half(state, 0, fresh)
        self.last = self._half(half, 1, False)
        return self.last


class VFCNN(VectorField, CNN):
    """Vector-field CNN (VF_CNN): backward weights ``B[k]`` shaped like ``W[k+1]``.

    ``same_update``: the update is computed from unmixed φ (``pre`` ignored) and the weight
    gradients of ``B[k]`` and ``W[k+1]`` are both replaced by their average, so that W − B
    changes only through weight decay / momentum (reference §2.5).
    """

    def __init__(self, *args, same_update: bool = False, scale: float | None = None, **kwargs):
        super().__init__(*args, scale=None, **kwargs)
        mirrored = self.W[1:len(self.shapes)]  # every synapse that feeds a neuron layer, except the first
        self.B = nn.ModuleList(
            nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, bias=False)
            if isinstance(m, nn.Conv2d) else nn.Linear(m.in_features, m.out_features, bias=False)
            for m in mirrored)
        self.same_update = same_update
        scale_init(self, scale)

    def _feedback(self, i, act, indices):
        """B_iᵀ ⋆ P*_{i+1}(ŝ_{i+1}) at the arg-max of B_i ⋆ ŝ_i (computed only for max-pool)."""
        j = i + 1
        weight = self.B[i].weight
        idx = None
        if j < self.n_conv and self.geo[j].pool == "m":
            idx = self._synapse(j, act[i], weight, None)[1]
        return self._synapse_adjoint(j, act[j], weight, idx)

    def _mirror_phi(self, own, inp):
        total = own[0].new_zeros(own[0].shape[0])
        for k, b in enumerate(self.B):
            up, _ = self._synapse(k + 1, own[k], b.weight, None)
            total = total + (inp[k + 1] * up).flatten(1).sum(1)
        return total

    def _mirror_grads(self, own, inp):
        return {f"B.{k}.weight": self._synapse_grads(k + 1, own[k], inp[k + 1], b.weight, None)[0]
                for k, b in enumerate(self.B)}

    def dphi_dtheta(self, x, state, beta=0.0, y=None, pre=None, drive=None):
        return super().dphi_dtheta(x, state, beta, y, None if self.same_update else pre, drive)

    def postprocess_grads(self) -> None:
        if not self.same_update:
            return
        for k, b in enumerate(self.B):
            w = self.W[k + 1].weight
            if w.grad is None or b.weight.grad is None:
                continue
            avg = 0.5 * (w.grad + b.weight.grad)
            w.grad, b.weight.grad = avg, avg.clone()

    def mirrored_forward(self, k: int) -> torch.Tensor:
        return self.W[k + 1].weight


def check_classes(fc: list[int], num_classes: int) -> None:
    """The last fully connected size is the number of classes."""
    if fc[-1] != num_classes:
        raise ConfigError(f"model.fc: got {fc}; allowed: last size = number of classes {num_classes} "
                          "for this data set")


def build(cfg, input_shape: tuple[int, ...], num_classes: int) -> CNN:
    """The network of a ``cnn`` / ``vf_cnn`` model section (default init, then ``scale``)."""
    check_classes(cfg.fc, num_classes)
    args = (input_shape, cfg.channels, cfg.kernels, cfg.strides, cfg.paddings, cfg.pools, cfg.fc)
    kwargs = dict(act=cfg.act, loss=cfg.loss, softmax=cfg.softmax, dropouts=cfg.dropouts, scale=cfg.scale)
    if cfg.kind == "vf_cnn":
        return VFCNN(*args, same_update=cfg.same_update, **kwargs)
    return CNN(*args, **kwargs)
