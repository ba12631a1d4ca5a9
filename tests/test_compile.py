"""``train.compile``: the step (``step``) or each fixed-length phase whole (``phase``, the unit
that becomes one CUDA-graph replay on a GPU) through ``torch.compile``, checked on the CPU path
against the eager engine (float64): same states, same EP estimate, same early exit.

The contract part runs over every registered kind, on the examples of ``test_contract``.
"""

from __future__ import annotations

import pytest
import torch
import yaml

from eqsearch.config import ConfigError, RuleConfig, TrainConfig, from_dict
from eqsearch.families import kinds
from eqsearch.rules import EPRule
from eqsearch.training import apply_speed_options
from tests.test_contract import batch, build


def compiled(kind: str, mode: str):
    """The kind's example model with ``train.compile = mode``, and a count of the calls that went
    through the compiled phase."""
    model = build(kind)
    apply_speed_options(TrainConfig(compile=mode, channels_last=False), model)
    calls = []
    if model.compiled_phase is not None:
        phase = model.compiled_phase
        model.compiled_phase = lambda *a: calls.append(a[3]) or phase(*a)
    return model, calls


def estimate(model, kind: str, rule: RuleConfig):
    x, y, _, _ = batch(model, kind)
    model.zero_grad(set_to_none=True)
    result = EPRule(rule).estimate(model, x, y, torch.Generator().manual_seed(3))
    return result, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_same_estimate(got, want, tol=1e-10):
    (r_got, g_got), (r_want, g_want) = got, want
    assert g_got.keys() == g_want.keys() and g_got
    for name in g_want:
        torch.testing.assert_close(g_got[name], g_want[name], rtol=tol, atol=tol, msg=lambda m, n=name: f"{n}: {m}")
    torch.testing.assert_close(r_got.logits, r_want.logits, rtol=tol, atol=tol)
    torch.testing.assert_close(r_got.residual_free, r_want.residual_free, rtol=1e-8, atol=tol)
    torch.testing.assert_close(r_got.residual_nudged, r_want.residual_nudged, rtol=1e-8, atol=tol)
    assert r_got.steps == r_want.steps


@pytest.mark.parametrize("kind", kinds())
def test_compiled_phases_give_the_eager_estimate(kind):
    """Symmetric EP: the free phase and the ±β pair (one phase on the batch tiled twice), each one
    call of the compiled phase."""
    rule = RuleConfig(T1=4, T2=2, beta=0.5, estimator="symmetric")
    model, calls = compiled(kind, "phase")
    assert_same_estimate(estimate(model, kind, rule), estimate(build(kind), kind, rule))
    assert calls == [4, 2], "not every phase went through the compiled one"
    assert not model.fused_steps


def test_a_phase_longer_than_a_chunk_runs_as_compiled_chunks():
    """T1 = 25: chunks of PHASE_CHUNK (10) steps and the rest; the state and residual are those
    of the eager 25 steps."""
    rule = RuleConfig(T1=25, T2=3, beta=0.5, estimator="one_sided")
    model, calls = compiled("mlp", "phase")
    assert_same_estimate(estimate(model, "mlp", rule), estimate(build("mlp"), "mlp", rule))
    assert calls == [10, 10, 5, 3]


def test_early_exit_runs_its_chunks_through_the_compiled_phase():
    """tol: chunks of tol_every steps, each a compiled phase; it stops where the eager one does."""
    rule = RuleConfig(T1=40, T2=6, beta=0.5, estimator="one_sided", tol=1e-3, tol_every=4)
    model, calls = compiled("mlp", "phase")
    got = estimate(model, "mlp", rule)
    assert_same_estimate(got, estimate(build("mlp"), "mlp", rule))
    assert got[0].steps < rule.T1 + rule.T2, "the example should exit early"
    assert set(calls) <= {4, 2} and sum(calls) == got[0].steps


def test_a_compiled_step_gives_the_eager_estimate():
    rule = RuleConfig(T1=4, T2=2, beta=0.5, estimator="symmetric")
    model, calls = compiled("mlp", "step")
    assert_same_estimate(estimate(model, "mlp", rule), estimate(build("mlp"), "mlp", rule))
    assert "step" in vars(model) and not model.fused_steps and not calls


def test_no_compile_keeps_the_fused_eager_engine():
    model, calls = compiled("mlp", "none")
    assert model.fused_steps and model.compiled_phase is None


def test_the_compile_mode_is_a_validated_config_field():
    assert from_dict({"train": {"compile": "phase"}}).train.compile == "phase"
    with pytest.raises(ConfigError, match=r"train\.compile.*True.*none, step, phase"):
        from_dict({"train": {"compile": True}})
    with pytest.raises(ConfigError, match=r"train\.compile: got False \(YAML reads on / off, yes / no as booleans\)"):
        from_dict({"train": yaml.safe_load("compile: off")})
