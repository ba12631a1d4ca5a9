"""Learning rules: EP estimators against truncated BPTT, and their internal consistency."""

from __future__ import annotations

import pytest
import torch

from eqsearch.config import RuleConfig
from eqsearch.models import MLP, VFMLP, tile_batch
from eqsearch.rules import BPTTRule, EPRule, contrast, free_phase, relax


def tiny(cls=MLP, loss="mse"):
    torch.manual_seed(0)
    return cls([5, 8, 6, 3], act="tanh", loss=loss).double()


def batch(n=7):
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


def flat_grads(model, rule, x, y, seed=0):
    model.zero_grad(set_to_none=True)
    rule.estimate(model, x, y, torch.Generator().manual_seed(seed))
    return torch.cat([p.grad.flatten() for p in model.parameters()])


@pytest.mark.parametrize("loss", ["mse", "cel"])
def test_estimator_bias_shrinks_like_beta_one_sided_and_beta_squared_symmetric(loss):
    """Converged phases (T1 = 400, T2 = 200): EP → BPTT with O(β) / O(β²) bias."""
    model, (x, y) = tiny(loss=loss), batch()
    ref = flat_grads(model, BPTTRule(RuleConfig(alg="bptt", T1=400, T2=200)), x, y)

    def err(est, beta):
        g = flat_grads(model, EPRule(RuleConfig(estimator=est, beta=beta, T1=400, T2=200)), x, y)
        return float((g - ref).norm() / ref.norm())

    one = [err("one_sided", b) for b in (0.1, 0.05, 0.025)]
    sym = [err("symmetric", b) for b in (0.1, 0.05, 0.025)]
    for big, small in zip(one, one[1:]):
        assert big / small == pytest.approx(2.0, rel=0.1)
    for big, small in zip(sym, sym[1:]):
        assert big / small == pytest.approx(4.0, rel=0.1)
    assert sym[-1] < 0.01 and sym[-1] < one[-1] / 5


def test_random_sign_averaged_over_signs_equals_symmetric():
    model, (x, y) = tiny(), batch()
    cfg = RuleConfig(estimator="random_sign", beta=0.3, T1=60, T2=30)
    draws = {}
    for seed in range(40):
        g = flat_grads(model, EPRule(cfg), x, y, seed)
        draws.setdefault(tuple(g[:3].tolist()), g)
    assert len(draws) == 2  # both signs were drawn, nothing else
    average = sum(draws.values()) / 2
    sym = flat_grads(model, EPRule(RuleConfig(estimator="symmetric", beta=0.3, T1=60, T2=30)), x, y)
    torch.testing.assert_close(average, sym, rtol=1e-10, atol=1e-12)


def test_random_sign_draws_are_balanced_and_seeded():
    rule = EPRule(RuleConfig(estimator="random_sign"))
    model = tiny()
    x, y = batch()
    _, free, _ = free_phase(model, x, 5)
    gen = torch.Generator().manual_seed(3)
    signs = [rule.nudged_states(model, model.input_drive(x), free, y, gen)[0][1][1] > 0 for _ in range(400)]
    assert 160 < sum(signs) < 240
    gen2 = torch.Generator().manual_seed(3)
    again = [rule.nudged_states(model, model.input_drive(x), free, y, gen2)[0][1][1] > 0 for _ in range(400)]
    assert signs == again


@pytest.mark.parametrize("cls", [MLP, VFMLP])
def test_symmetric_phases_as_one_2b_batch_equal_two_separate_phases(cls):
    model, (x, y) = tiny(cls), batch()
    rule = EPRule(RuleConfig(estimator="symmetric", beta=0.4, T1=30, T2=12))
    batched = flat_grads(model, rule, x, y)
    drive, free, _ = free_phase(model, x, 30)
    plus, _ = relax(model, drive, free, 12, 0.4, y)
    minus, _ = relax(model, drive, free, 12, -0.4, y)
    pre = free if model.vector_field else None
    grads = contrast(model, x, y, plus, 0.4, minus, -0.4, pre=pre)
    separate = torch.cat([grads[name].flatten() for name, _ in model.named_parameters()])
    torch.testing.assert_close(batched, separate, rtol=1e-12, atol=1e-14)


def test_vf_one_sided_update_is_receiving_change_times_free_sender():
    """§2.5: ĝ_{W_l} = −(1/β) mean[(s_l^β − s_l*) ⊗ s_{l−1}*]."""
    model, (x, y) = tiny(VFMLP), batch()
    drive, free, _ = free_phase(model, x, 20)
    nudged, _ = relax(model, drive, free, 10, 0.5, y)
    grads = contrast(model, x, y, free, 0.0, nudged, 0.5, pre=free)
    want = -((nudged[1] - free[1]).t() @ free[0]) / (0.5 * x.shape[0])
    torch.testing.assert_close(grads["W.1.weight"], want)
    want_b = -((nudged[0] - free[0]).t() @ free[1]) / (0.5 * x.shape[0])
    torch.testing.assert_close(grads["B.0.weight"], want_b)


def test_tile_batch_repeats_along_batch_only():
    t = torch.arange(6.0).view(3, 2)
    out = tile_batch([t], 2)[0]
    assert out.shape == (6, 2) and torch.equal(out[3:], t)
