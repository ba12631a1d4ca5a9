"""Learning rules: (model, batch, optimizer) -> one parameter update, and the relaxation loop.

``RULES`` maps ``rule.alg`` to its rule class; a new rule (continual EP, ...) is one module and
one entry here.
"""

from __future__ import annotations

from eqsearch.config import RuleConfig
from eqsearch.rules.base import BatchResult, LearningRule, contrast, write_grads
from eqsearch.rules.bptt import BPTTRule
from eqsearch.rules.continual import ContinualRule
from eqsearch.rules.ep import EPRule, draw_sign
from eqsearch.rules.relax import compile_phases, free_phase, relax

__all__ = ["BatchResult", "LearningRule", "EPRule", "BPTTRule", "ContinualRule", "draw_sign", "RULES", "build_rule", "contrast", "write_grads",
           "compile_phases", "free_phase", "relax"]

RULES: dict[str, type[LearningRule]] = {"ep": EPRule, "bptt": BPTTRule, "cep": ContinualRule}


def build_rule(cfg: RuleConfig) -> LearningRule:
    return RULES[cfg.alg](cfg)
