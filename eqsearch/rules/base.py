"""What every learning rule shares: the batch result, the strict gradient writer, the contrast.

Sign convention: a rule leaves in every ``p.grad`` an estimate of +∂L/∂θ (L the batch-mean
loss) and lets the torch optimizer step on it. A rule owns the whole batch update
(:meth:`LearningRule.train_batch`), so EP (one optimizer step per batch), BPTT and continual EP
(one optimizer step per nudged step) are peers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from eqsearch.config import RuleConfig
from eqsearch.errors import GradientMappingError
from eqsearch.models.base import Beta, EnergyModel, Factors, Grads, State


@dataclass
class BatchResult:
    """What a rule hands back to the training loop (tensors: no host sync)."""

    logits: torch.Tensor                        # (B, C) prediction at the free state, before the update
    residual_free: torch.Tensor                 # 0-dim, ‖s_T − s_{T−1}‖ at the end of the free phase
    residual_nudged: torch.Tensor | None = None  # 0-dim, the same for the nudged phase (None: no nudged phase)
    steps: int | None = None                    # relaxation steps run (None: the rule's fixed count)


def contrast(model: EnergyModel, x: torch.Tensor, y: torch.Tensor, a: State, beta_a: Beta, b: State, beta_b: Beta,
             pre: State | None = None, drive: State | None = None) -> Grads:
    """EP estimate of +∂L/∂θ: −[G(b, β_b) − G(a, β_a)] / (β_b − β_a), G = batch-mean ∂Φ_β/∂θ.
    ``drive`` (the batch's input drive) carries per-batch draws such as dropout masks into G."""
    return model.contrast(x, y, a, beta_a, b, beta_b, -1.0 / (beta_b - beta_a), pre=pre, drive=drive)


def contrast_factors(model: EnergyModel, x: torch.Tensor, y: torch.Tensor, a: State, beta_a: Beta, b: State,
                     beta_b: Beta, pre: State | None = None, drive: State | None = None) -> Factors | None:
    """:func:`contrast` in rank-B form (:data:`~eqsearch.models.base.Factors`), None where the family
    has no such form."""
    return model.contrast_factors(x, y, a, beta_a, b, beta_b, -1.0 / (beta_b - beta_a), pre=pre, drive=drive)


def plain_sgd_lrs(optimizer: torch.optim.Optimizer, model: EnergyModel) -> dict[str, float] | None:
    """Per parameter name, the learning rate of a plain SGD optimizer (exactly ``torch.optim.SGD``,
    no momentum, weight decay, Nesterov or maximize): its step is θ ← θ − lr·g. None otherwise."""
    if type(optimizer) is not torch.optim.SGD:
        return None
    for g in optimizer.param_groups:
        if g["momentum"] or g["weight_decay"] or g["nesterov"] or g["maximize"]:
            return None
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    return {n: float(lr_of[id(p)]) for n, p in model.named_parameters() if id(p) in lr_of}


def sgd_update(param: torch.Tensor, p_fac: torch.Tensor, s_fac: torch.Tensor | None, rate: float) -> None:
    """θ ← θ − rate·g in place, g given by its factors: Pᵀ S (one ``addmm_``, the gradient never
    formed) or, for ``s_fac`` None, P.sum(0)."""
    if s_fac is None:
        param.sub_(p_fac.sum(0), alpha=rate)
    else:
        param.addmm_(p_fac.t(), s_fac, alpha=-rate)


def check_grad_names(model: EnergyModel, names) -> None:
    """Raise :class:`GradientMappingError` unless ``names`` are exactly the trained parameters."""
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    names = set(names)
    if names != trained:
        missing, extra = sorted(trained - names), sorted(names - trained)
        raise GradientMappingError(f"{type(model).__name__}: gradients do not match the trained parameters; "
                                   f"missing {missing}, not parameters {extra}")


def write_grads(model: EnergyModel, grads: Grads) -> None:
    """``p.grad = grads[name]`` for every trained parameter, then the model's post-processing.

    Strict: every parameter with ``requires_grad`` must have exactly one gradient and no
    gradient may name anything else (:class:`GradientMappingError` lists the differences)."""
    params = dict(model.named_parameters())
    check_grad_names(model, grads.keys())
    for name, g in grads.items():
        p = params[name]
        if g.shape != p.shape:
            raise GradientMappingError(f"{type(model).__name__}: gradient of {name} has shape {tuple(g.shape)}, "
                                       f"parameter {tuple(p.shape)}")
        p.grad = g.to(p.dtype)
    model.postprocess_grads()


class LearningRule:
    """(model, batch, optimizer) -> one update of the parameters."""

    def __init__(self, cfg: RuleConfig):
        self.cfg = cfg

    def estimate(self, model: EnergyModel, x: torch.Tensor, y: torch.Tensor,
                 generator: torch.Generator) -> BatchResult:
        """Relax and write the rule's estimate of +∂L/∂θ into ``p.grad`` (parameters unchanged).
        ``y``: (B,) labels; ``generator``: every random draw of the batch (β sign, dropout
        masks, initial states)."""
        raise NotImplementedError

    def train_batch(self, model: EnergyModel, x: torch.Tensor, y: torch.Tensor,
                    optimizer: torch.optim.Optimizer, generator: torch.Generator) -> BatchResult:
        """One update of the parameters from the batch: by default :meth:`estimate`, then one
        optimizer step (rules that update during the relaxation override this)."""
        result = self.estimate(model, x, y, generator)
        optimizer.step()
        return result
