"""The LCA-CNN of code base D (reference §5.4–5.6): an LCA sparse code feeding code base A's
EP recurrent CNN through an identity copy layer.

Layers (input -> output). The image x (B, C, H, W) is coded once per minibatch by the LCA
(:class:`~eqsearch.models.lca.LCA`): a = T_λ(u) (B, F, H_c, W_c), the static input of the
network. ``state[0]`` = s_1 (B, F, H_c, W_c) is a dynamic copy of the code; ``state[1:]`` are
the neuron layers of a :class:`~eqsearch.models.cnn.CNN` (``net``) whose input is s_1.

Φ per sample (code base A's sign convention: the dynamics ascend Φ):

    Φ = ⟨s_1, a⟩ + Φ_net(s_1; s_2, ...)         (Φ_net: the CNN's Φ with x := s_1, −β·L included)
    ∂Φ/∂s_1 = a + W_2ᵀ ⋆ P_2*(s_2)              (the net's feedback into its input, CNN.input_grad)

so s_1 ← σ(a + W_2ᵀ ⋆ P_2*(s_2)) and the other layers follow the CNN (fixed-point dynamics,
softmax read-out optional). The copy has no parameters; ∂Φ/∂θ is the CNN's (``net.*``). Every
rule and estimator of the CNN applies (EP one-sided / random-sign / symmetric, C-EP, BPTT).

The code is the whole drive (``drive = [a]``): computed once per minibatch and reused by every
phase; a repeated :meth:`LCACNN.input_drive` of the same (unchanged) batch with the same
(unchanged) dictionary returns it again instead of re-running the LCA (continual EP asks for the
drive after every weight update).

Code cache (``pretrained`` only, :class:`CodeCache`): with a fixed dictionary the code of an
image is the same at every epoch, so each image's code is kept, keyed by a digest of the image's
bytes, and read back when the image comes again (in any batch, any order): the test set is coded
once per run, and the training set during the first epoch, as long as the codes fit in
``cache_bytes`` (F·H_c·W_c·4 bytes per float32 image; codes past the cap are recomputed each
time). The cache belongs to one dictionary and LCA setting: any change of either (a new
dictionary loaded, a checkpoint restored, the model moved to another device or dtype, a
dictionary step) empties it. In ``finetune`` / ``learn`` the dictionary changes between any two
codings of an image (every epoch, or every batch), so nothing is cached.

Dictionary training (``dict_training``, §5.6): ``pretrained`` keeps the loaded dictionary;
``finetune`` (loaded) and ``learn`` (random) update it from the last batch of each epoch
(``dict_update: epoch``, as code base D) or after every batch (``batch``), with two LCA steps
(:meth:`LCA.update_dictionary`): (1) the batch's code a; (2) the nudged code
a* = T_λ(σ(a + γ·W_2ᵀ ⋆ P_2*(s_2^+))), the copy layer's value at the batch's most positively
nudged state s^+ that the rule contrasted (the +β phase; the free state when a random sign drew
−β) with the feedback of the conv layers weighted by γ = ``scale_feedback`` (γ = 1: code base
D's T_λ(s_1^{+β}) at equilibrium; γ = 0: T_λ(σ(a))). The model sees those states in
:meth:`LCACNN.contrast`, which every EP rule calls; a rule without nudged phases (BPTT) has
none, so the config allows it with ``pretrained`` only.

Metrics: per epoch over the training batches ``lca_sparsity`` (fraction of non-zero code
entries), ``lca_recon_error`` (‖s − ŝ‖/‖s‖), ``lca_objective`` (the LCA objective, per image)
and ``lca_dict_change`` (‖D_end − D_start‖_F/‖D_start‖_F over the epoch); per test sample the
same three as ``test_lca_*`` (:meth:`state_metrics`).
"""

from __future__ import annotations

import hashlib
import math

import torch

from eqsearch.errors import ConfigError
from eqsearch.models.base import Beta, EnergyModel, Grads, State, is_restoring
from eqsearch.models.cnn import CNN, check_classes
from eqsearch.models.lca import LCA, build_lca, load_dictionary, memory_format_of

LCA_METRICS = ("lca_sparsity", "lca_recon_error", "lca_objective")


def image_keys(x: torch.Tensor) -> list[bytes]:
    """A 128-bit BLAKE2b digest of the bytes of each image of x (B, ...): B keys."""
    raw = x.detach().contiguous().view(torch.uint8).reshape(x.shape[0], -1).cpu().numpy()
    return [hashlib.blake2b(row, digest_size=16).digest() for row in raw]


class CodeCache:
    """LCA codes of images under one dictionary and LCA setting (module docstring), at most
    ``limit`` bytes of them. Not part of the model's state: a deep copy starts empty."""

    def __init__(self, limit: int):
        self.limit = limit
        self.codes: dict[bytes, torch.Tensor] = {}  # image key -> its code (F, H_c, W_c)
        self.size = 0  # bytes held
        self.owner: tuple | None = None  # (dictionary, (its version, the LCA setting)) of the codes

    def __deepcopy__(self, memo) -> "CodeCache":
        return CodeCache(self.limit)

    def encode(self, lca: LCA, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """The code (B, F, H_c, W_c) of every image of x (B, C, H, W), s its preprocessed form:
        the kept code of an image coded before, the LCA on the others (kept while they fit)."""
        d = lca.dictionary
        setting = (d._version, lca.lam, lca.tau, lca.iters, lca.threshold, lca.nonneg, lca.standardize)
        if self.owner is None or self.owner[0] is not d or self.owner[1] != setting:
            self.codes.clear()
            self.size, self.owner = 0, (d, setting)
        keys = image_keys(x)
        missing = [i for i, k in enumerate(keys) if k not in self.codes]
        fresh = dict(zip(missing, lca.encode(s[missing]))) if missing else {}
        for i, code in fresh.items():
            entry = code.numel() * code.element_size()
            if keys[i] not in self.codes and self.size + entry <= self.limit:  # (an image twice in x: once)
                self.codes[keys[i]] = code.clone()
                self.size += entry
        a = torch.stack([fresh[i] if i in fresh else self.codes[k] for i, k in enumerate(keys)])
        return a.contiguous(memory_format=memory_format_of(d))


class LCACNN(EnergyModel):
    """LCA front-end + identity copy layer + EP CNN (module docstring)."""

    def __init__(self, lca: LCA, net: CNN, dict_training: str = "learn", dict_update: str = "epoch",
                 scale_feedback: float = 1.0, cache_bytes: int = 0):
        super().__init__()
        if net.input_shape != lca.code_shape:
            raise ValueError(f"the CNN's input {net.input_shape} is not the LCA code {lca.code_shape}")
        self.lca, self.net = lca, net
        self.loss = net.loss
        self.dict_training, self.dict_update, self.scale_feedback = dict_training, dict_update, scale_feedback
        # codes kept across batches while the dictionary is fixed (module docstring)
        self.cache = CodeCache(cache_bytes) if dict_training == "pretrained" and cache_bytes > 0 else None
        self._memo: tuple | None = None     # (x, its version, dictionary, its version, s, a) of the last code
        self._nudged: tuple | None = None   # (x, a, state, β) of the most positively nudged state contrasted
        self._sums: torch.Tensor | None = None  # Σ over this epoch's training samples of the LCA_METRICS
        self._samples = 0
        self._start: torch.Tensor | None = None  # the dictionary when the epoch's first batch was coded
        self._epoch_metrics = dict.fromkeys(LCA_METRICS + ("lca_dict_change",), math.nan)

    # ------------------------------------------------------------------ the code
    def code(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(s, a): the standardised batch (B, C, H, W) and its LCA code (B, F, H_c, W_c), computed
        once per batch and dictionary (read from the code cache where it has them)."""
        d = self.lca.dictionary
        m = self._memo
        if m is not None and m[0] is x and m[1] == x._version and m[2] is d and m[3] == d._version:
            return m[4], m[5]
        s = self.lca.preprocess(x)
        a = self.lca.encode(s) if self.cache is None else self.cache.encode(self.lca, x, s)
        self._memo = (x, x._version, d, d._version, s, a)
        return s, a

    def input_drive(self, x: torch.Tensor, generator: torch.Generator | None = None) -> State:
        """[a]: the LCA code of x, (B, F, H_c, W_c)."""
        return [self.code(x)[1]]

    def init_state(self, drive: State, generator: torch.Generator | None = None) -> State:
        return [torch.zeros_like(drive[0])] + self.net.init_state(drive)

    # ------------------------------------------------------------------ dynamics
    def activation(self, i: int):
        return self.net.act if i == 0 else self.net.activation(i - 1)

    def state_grad(self, state: State, drive: State, beta: Beta = 0.0, y: torch.Tensor | None = None) -> State:
        """[a + W_2ᵀ ⋆ P_2*(s_2)] + the CNN's ∂Φ_β/∂s with s_1 as its input (closed form)."""
        inner = self.net.input_drive(state[0])
        return [drive[0] + self.net.input_grad(state[1:], inner)] + self.net.state_grad(state[1:], inner, beta, y)

    def logits(self, state: State) -> torch.Tensor:
        return self.net.logits(state[1:])

    # ------------------------------------------------------------------ Φ and ∂Φ/∂θ
    def phi(self, x, state, beta=0.0, y=None, pre=None, drive=None):
        """Φ_β per sample (B,); the code from ``drive`` (else from the LCA)."""
        a = drive[0] if drive is not None else self.code(x)[1]
        return (state[0] * a).flatten(1).sum(1) + self.net.phi(state[0], state[1:], beta, y)

    def dphi_dtheta(self, x, state, beta=0.0, y=None, pre=None, drive=None) -> Grads:
        """The CNN's batch-mean ∂Φ_β/∂θ with s_1 as its input, keyed ``net.<name>``."""
        return {f"net.{k}": g for k, g in self.net.dphi_dtheta(state[0], state[1:], beta, y).items()}

    def contrast(self, x, y, a, beta_a, b, beta_b, scale, pre=None, drive=None):
        """The CNN's contrast; in training, also notes the more positively nudged of the two
        states for the dictionary updates (module docstring)."""
        if self.training and self.dict_training != "pretrained" and drive is not None:
            self._observe(x, drive[0], a, beta_a)
            self._observe(x, drive[0], b, beta_b)
        return super().contrast(x, y, a, beta_a, b, beta_b, scale, pre=pre, drive=drive)

    def _observe(self, x: torch.Tensor, code: torch.Tensor, state: State, beta: Beta) -> None:
        level = float(beta.max()) if torch.is_tensor(beta) else float(beta)
        seen = self._nudged
        if seen is None or seen[1] is not code or level >= seen[3]:
            self._nudged = (x, code, [t.detach() for t in state], level)

    # ------------------------------------------------------------------ dictionary
    def nudged_code(self, a: torch.Tensor, state: State) -> torch.Tensor:
        """a* = T_λ(σ(a + γ·W_2ᵀ ⋆ P_2*(s_2))) at ``state`` (module docstring)."""
        feedback = self.net.input_grad(state[1:], self.net.input_drive(state[0]))
        return self.lca.transfer(self.net.act(a + self.scale_feedback * feedback))

    @torch.no_grad()
    def update_dictionary(self) -> None:
        """The two dictionary steps from the noted batch (none noted: nothing to do)."""
        seen, self._nudged = self._nudged, None
        if seen is None:
            return
        x, a, state, _ = seen
        s = self.lca.preprocess(x)
        self.lca.update_dictionary(s, a)
        self.lca.update_dictionary(s, self.nudged_code(a, state))

    def on_batch_end(self) -> None:
        if self._memo is not None:
            _, _, d, _, s, a = self._memo
            if self._start is None:
                self._start = d.detach().clone()
            with torch.no_grad():
                batch = torch.stack([self.lca.sparsity(a).sum(), self.lca.recon_error(s, a).sum(),
                                     self.lca.objective(s, a).sum()]).double()
            self._sums = batch if self._sums is None else self._sums + batch
            self._samples += a.shape[0]
        if self.dict_training != "pretrained" and self.dict_update == "batch":
            self.update_dictionary()

    def on_epoch_end(self) -> None:
        if self.dict_training != "pretrained" and self.dict_update == "epoch":
            self.update_dictionary()
        if self._sums is not None and self._samples:
            means = (self._sums / self._samples).tolist()  # one host sync per epoch
            self._epoch_metrics.update(zip(LCA_METRICS, means))
        if self._start is not None:
            d = self.lca.dictionary
            self._epoch_metrics["lca_dict_change"] = float((d - self._start).norm() / self._start.norm())
        self._sums, self._samples, self._start = None, 0, None

    # ------------------------------------------------------------------ training hooks
    def synapse_groups(self):
        return self.net.synapse_groups()

    def metrics(self) -> dict[str, float]:
        """The last finished epoch's ``lca_*`` metrics of the training batches (NaN before one)."""
        return dict(self._epoch_metrics)

    def state_metrics(self, x: torch.Tensor, state: State, drive: State | None = None) -> dict[str, torch.Tensor]:
        """``lca_sparsity``, ``lca_recon_error``, ``lca_objective`` of each sample's code (B,)."""
        s, a = self.code(x)
        return dict(zip(LCA_METRICS, (self.lca.sparsity(a), self.lca.recon_error(s, a), self.lca.objective(s, a))))


def build(cfg, input_shape: tuple[int, ...], num_classes: int) -> LCACNN:
    """The network of an ``lca_cnn`` model section: the LCA (dictionary loaded for pretrained /
    finetune, random from torch's generator for learn), then the CNN on its code. A model built
    to be restored from a checkpoint (:func:`~eqsearch.models.base.restoring`) takes its
    dictionary from there: ``model.dictionary`` is not read (the file may have moved or changed)."""
    if len(input_shape) != 3:
        raise ConfigError(f"model.kind: lca_cnn needs image inputs (C, H, W); this data set has input shape "
                          f"{tuple(input_shape)}")
    check_classes(cfg.fc, num_classes)
    lca = build_lca(cfg.lca, input_shape)
    if cfg.loads_dictionary and not is_restoring():
        d, settings = load_dictionary(cfg.dictionary)
        if d.shape != lca.dictionary.shape:
            f, c, k, _ = d.shape
            raise ConfigError(f"model.dictionary: {cfg.dictionary!r} holds {f} atoms of {c}×{k}×{k}; allowed: a "
                              f"dictionary of model.lca.features={cfg.lca.features} atoms of {input_shape[0]} "
                              f"channel(s) × model.lca.ksize={cfg.lca.ksize} (it was learned on "
                              f"{settings.get('dataset', '?')})")
        lca.set_dictionary(d)
    net = CNN(lca.code_shape, cfg.channels, cfg.kernels, cfg.strides, cfg.paddings, cfg.pools, cfg.fc,
              act=cfg.act, loss=cfg.loss, softmax=cfg.softmax, scale=cfg.scale)
    return LCACNN(lca, net, cfg.dict_training, cfg.dict_update, cfg.scale_feedback,
                  cache_bytes=int(cfg.code_cache_mb * 2 ** 20))
