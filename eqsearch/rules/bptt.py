"""Truncated BPTT through the same closed-form dynamics (reference §2.6).

T1 − T2 free steps without graph, then T2 steps with graph, the loss (batch mean) at the final
state, ``backward()``: the true gradient of the loss truncated to the last T2 steps.
"""

from __future__ import annotations

import torch

from eqsearch.losses import loss_per_sample
from eqsearch.rules.base import BatchResult, LearningRule
from eqsearch.rules.relax import relax


class BPTTRule(LearningRule):
    """Back-propagation through the last T2 of the T1 free steps; no nudged phase."""

    def estimate(self, model, x, y, generator) -> BatchResult:
        """Write the truncated-BPTT gradient into ``p.grad`` (no parameter change)."""
        T1, T2, order = self.cfg.T1, self.cfg.T2, self.cfg.order
        drive = model.input_drive(x, generator)  # with graph; reused by the no-graph steps
        with torch.no_grad():
            state, _ = relax(model, drive, model.init_state(drive, generator), T1 - T2, order=order)
        state, res_last = relax(model, drive, [s.detach() for s in state], T2, order=order)
        logits = model.logits(state)
        model.zero_grad(set_to_none=True)
        loss_per_sample(model.loss, logits, y).mean().backward()  # true gradients: no EP post-processing
        return BatchResult(logits.detach(), res_last.detach())
