"""The per-phase steppers (``model.stepper``): the fused MLP step, the even/odd (async) order and
plain SGD applied from the update's factors, each against the generic path it replaces (float64).

The contract part runs over every registered kind, on the examples of ``test_contract``.
"""

from __future__ import annotations

import pytest
import torch

from eqsearch.config import RuleConfig, from_dict
from eqsearch.errors import ConfigError
from eqsearch.families import kinds
from eqsearch.losses import as_target
from eqsearch.models import MLP, VFMLP, EnergyModel
from eqsearch.models.mlp import FusedStep
from eqsearch.rules import EPRule, LearningRule, free_phase, relax
from tests.test_contract import BETAS, NUM_CLASSES, as_beta, batch, build


def generic_sweep(model, state, drive, beta, y):
    """The async order from its definition: a whole step keeping layers 0, 2, ..., then a whole
    step from that keeping 1, 3, ... (the base class's half step)."""
    half = EnergyModel.half_step(model, state, drive, beta, y, 0)
    return EnergyModel.half_step(model, half, drive, beta, y, 1)


def close(a, b, tol=1e-12):
    assert len(a) == len(b)
    for k, (u, v) in enumerate(zip(a, b)):
        torch.testing.assert_close(u, v, rtol=tol, atol=tol, msg=lambda m, k=k: f"layer {k}: {m}")


@pytest.mark.parametrize("kind", kinds())
@pytest.mark.parametrize("beta", BETAS)
def test_every_stepper_follows_the_model_step_in_both_orders(kind, beta):
    """Three steps through the stepper a relaxation builds (no graph, fixed weights) equal three
    of ``model.step`` (sync) and three even/odd sweeps built from it (async)."""
    model = build(kind)
    x, y, drive, (state, _, _) = batch(model, kind)
    beta = as_beta(beta)
    target = as_target(y, NUM_CLASSES, torch.float64)
    with torch.no_grad():
        for order, reference in (("sync", lambda s: model.step(s, drive, beta, target)),
                                 ("async", lambda s: generic_sweep(model, s, drive, beta, target))):
            step = model.stepper(drive, beta, target, order)
            got, want = state, state
            for _ in range(3):
                got, want = step(got), reference(want)
                close(got, want)
            assert all(torch.equal(s, t) for s, t in zip(state, batch(model, kind)[3][0])), "input overwritten"


@pytest.mark.parametrize("kind", kinds())
def test_async_relaxation_reaches_the_fixed_point_of_the_sync_one(kind):
    """Weights scaled to 0.3 of the example's, so that the dynamics contract to one fixed point."""
    model = build(kind)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.3)
    x, y, drive, _ = batch(model, kind)
    with torch.no_grad():
        start = model.init_state(drive, torch.Generator().manual_seed(1))
        sync, res_sync = relax(model, drive, start, 3000)
        asyn, res_async = relax(model, drive, start, 3000, order="async")
    assert float(res_sync) < 1e-9 and float(res_async) < 1e-9
    close(asyn, sync, tol=1e-7)


@pytest.mark.parametrize("n", [3, 8])  # 8 > every width: every layer computed transposed
@pytest.mark.parametrize("loss", ["mse", "cel"])
@pytest.mark.parametrize("cls", [MLP, VFMLP])
@pytest.mark.parametrize("order", ["sync", "async"])
def test_fused_mlp_step_equals_the_plain_step_in_every_layout(n, loss, cls, order):
    torch.manual_seed(0)
    model = cls([6, 5, 4, 3], act="mysig", loss=loss).double()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 6, generator=g, dtype=torch.float64)
    y = as_target(torch.randint(0, 3, (n,), generator=g), 3, torch.float64)
    with torch.no_grad():
        drive = model.input_drive(x)
        state = [torch.rand(n, w, generator=g, dtype=torch.float64) for w in (5, 4, 3)]
        for beta in (0.0, 0.4, torch.linspace(-1, 1, n, dtype=torch.float64).view(n, 1)):
            step = model.stepper(drive, beta, y, order)
            assert isinstance(step, FusedStep)
            assert step.flip == ((True,) * 3 if n == 8 else (False,) * 3)
            reference = (lambda s: model.step(s, drive, beta, y)) if order == "sync" else \
                (lambda s: generic_sweep(model, s, drive, beta, y))
            got, want = state, state
            for _ in range(4):
                got, want = step(got), reference(want)
                close(got, want)


def test_fused_step_is_not_used_with_a_graph_or_changing_weights():
    model = MLP([6, 5, 3]).double()
    drive = model.input_drive(torch.rand(2, 6, dtype=torch.float64))
    assert not isinstance(model.stepper(drive), FusedStep)  # grad enabled (BPTT)
    with torch.no_grad():
        assert isinstance(model.stepper(drive), FusedStep)
        assert not isinstance(model.stepper(drive, frozen=False), FusedStep)  # continual EP


def test_scaled_weights_follow_an_in_place_weight_change():
    model = MLP([6, 5, 3]).double()
    with torch.no_grad():
        before = model.scaled_weights((False, False))[0][1].clone()
        model.W[1].weight.mul_(2.0)
        after = model.scaled_weights((False, False))[0][1]
    torch.testing.assert_close(after, 2.0 * before)


@pytest.mark.parametrize("cls", [MLP, VFMLP])
@pytest.mark.parametrize("estimator", ["one_sided", "random_sign", "symmetric"])
@pytest.mark.parametrize("order", ["sync", "async"])
def test_plain_sgd_from_the_factors_equals_estimate_then_optimizer_step(cls, estimator, order):
    """Three batches: the fused update (no gradient formed) and p.grad + SGD.step() give the
    same weights; relaxations after the first batch see the updated weights."""
    def run(fused: bool):
        torch.manual_seed(0)
        model = cls([6, 7, 5, 3], act="mysig").double()
        opt = torch.optim.SGD([{"params": p, "lr": lr} for p, lr in zip(model.synapse_groups(), [0.3, 0.2, 0.1])])
        rule = EPRule(RuleConfig(estimator=estimator, beta=0.3, T1=15, T2=6, order=order))
        gen, g = torch.Generator().manual_seed(3), torch.Generator().manual_seed(4)
        for _ in range(3):
            x, y = torch.rand(9, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (9,), generator=g)
            (rule.train_batch if fused else lambda *a: LearningRule.train_batch(rule, *a))(model, x, y, opt, gen)
        return model
    fused, generic = run(True), run(False)
    for (name, a), b in zip(fused.named_parameters(), generic.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13, msg=name)
    assert all(p.grad is None for p in fused.parameters())  # the gradients were never formed


def test_sgd_with_momentum_takes_the_optimizer_path():
    torch.manual_seed(0)
    model = MLP([6, 5, 3]).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.rand(4, 6, dtype=torch.float64), torch.tensor([0, 1, 2, 0])
    EPRule(RuleConfig(estimator="one_sided", T1=5, T2=2)).train_batch(model, x, y, opt, torch.Generator())
    assert all(p.grad is not None for p in model.parameters())


def test_the_order_is_a_validated_config_field():
    assert from_dict(overrides={"rule.order": "async"}).rule.order == "async"
    with pytest.raises(ConfigError, match=r"rule\.order: got 'gauss'.*sync, async"):
        from_dict(overrides={"rule.order": "gauss"})


def test_async_free_phase_counts_sweeps_as_steps_and_stops_at_tol():
    torch.manual_seed(0)
    model = MLP([6, 9, 7, 3]).double()
    x = torch.rand(5, 6, dtype=torch.float64)
    with torch.no_grad():
        _, _, res, done = free_phase(model, x, 200, tol=1e-6, every=5, order="async")
        _, _, res_sync, done_sync = free_phase(model, x, 200, tol=1e-6, every=5)
    assert float(res) < 1e-6 and done % 5 == 0 and done < 200
    assert float(res_sync) < 1e-6 and done <= done_sync  # Gauss-Seidel by parity needs no more sweeps


def test_unset_threads_take_the_family_choice(monkeypatch):
    from eqsearch.training import Trainer

    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    Trainer(from_dict(overrides={"data.max_batches": 1}))           # digits MLP: one thread
    Trainer(from_dict(overrides={"data.max_batches": 1, "train.threads": 2}))
    assert calls == [1, 2]
    cnn = from_dict(overrides={"model.kind": "cnn", "data.dataset": "synthetic_cifar", "model.channels": [4],
                               "model.kernels": [3], "model.strides": [1], "model.paddings": [1], "model.pools": "m",
                               "model.fc": [10], "optim.lrs": [0.1, 0.1]})
    Trainer(cnn)
    assert calls == [1, 2]  # the CNN family keeps torch's default
