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
    _, free, _, _ = free_phase(model, x, 5)
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
    drive, free, _, _ = free_phase(model, x, 30)
    plus, _ = relax(model, drive, free, 12, 0.4, y)
    minus, _ = relax(model, drive, free, 12, -0.4, y)
    pre = free if model.vector_field else None
    grads = contrast(model, x, y, plus, 0.4, minus, -0.4, pre=pre)
    separate = torch.cat([grads[name].flatten() for name, _ in model.named_parameters()])
    torch.testing.assert_close(batched, separate, rtol=1e-12, atol=1e-14)


def test_vf_one_sided_update_is_receiving_change_times_free_sender():
    """§2.5: ĝ_{W_l} = −(1/β) mean[(s_l^β − s_l*) ⊗ s_{l−1}*]."""
    model, (x, y) = tiny(VFMLP), batch()
    drive, free, _, _ = free_phase(model, x, 20)
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


def test_early_exit_stops_at_the_first_check_below_tol():
    from eqsearch.rules.relax import relax_to_tol

    model, (x, _) = tiny(MLP), batch()
    drive = model.input_drive(x)
    state, residuals = model.init_state(drive), []
    for _ in range(60):
        state, r = relax(model, drive, state, 1)
        residuals.append(float(r))
    every, tol = 4, residuals[21] * 1.0001  # first below tol at step 22 (1-based) or later
    first_check = next(k for k in range(every, 61, every) if residuals[k - 1] < tol)
    got, res, done = relax_to_tol(model, drive, model.init_state(drive), 60, tol, every)
    assert done == first_check and done < 60
    want, _ = relax(model, drive, model.init_state(drive), done)
    assert all(torch.equal(a, b) for a, b in zip(got, want)) and float(res) < tol


@pytest.mark.parametrize("estimator", ["one_sided", "symmetric"])
def test_tol_never_reached_or_zero_leaves_the_update_unchanged_and_steps_are_counted(estimator):
    model, (x, y) = tiny(MLP), batch()
    base = dict(estimator=estimator, beta=0.3, T1=23, T2=9)
    plain = flat_grads(model, EPRule(RuleConfig(**base)), x, y)
    unreachable = EPRule(RuleConfig(**base, tol=1e-300, tol_every=4))  # chunked loop, no exit
    torch.testing.assert_close(flat_grads(model, unreachable, x, y), plain, rtol=0, atol=0)
    result = EPRule(RuleConfig(**base)).estimate(model, x, y, torch.Generator())
    assert result.steps == RuleConfig(**base).steps_per_batch()
    early = EPRule(RuleConfig(**base, tol=1e9, tol_every=4)).estimate(model, x, y, torch.Generator())
    assert early.steps == 4 + (8 if estimator == "symmetric" else 4)  # each phase exits at its first check


def test_train_steps_metric_reports_the_steps_run():
    from eqsearch.config import from_dict
    from eqsearch.training import fit

    cfg = from_dict(overrides={"data.max_batches": 3, "train.epochs": 1, "rule.estimator": "one_sided",
                               "rule.T1": 20, "rule.T2": 8})
    assert next(fit(cfg))["train_steps"] == 28
    early = next(fit(cfg.replace({"rule.tol": 1e9, "rule.tol_every": 5})))
    assert early["train_steps"] == 10
