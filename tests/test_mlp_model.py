"""Closed-form dynamics and ∂Φ/∂θ of the MLPs against autograd of Φ (float64)."""

from __future__ import annotations

import pytest
import torch

from eqsearch.activations import ACTIVATIONS
from eqsearch.models import MLP, VFMLP, EnergyModel
from eqsearch.rules import contrast
from tests.conftest import assert_grads_close, autograd_param_grads, random_state

ARCHI = [6, 5, 4, 3]
B = 4


def make(kind, act="tanh", loss="mse", seed=0):
    torch.manual_seed(seed)
    cls = VFMLP if kind == "vf_mlp" else MLP
    return cls(ARCHI, act=act, loss=loss).double()


def data(seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, ARCHI[0], generator=g, dtype=torch.float64), torch.randint(0, ARCHI[-1], (B,), generator=g), g


def oracle_step(model, x, state, beta, y):
    """σ(∂Φ/∂s) by autograd of Φ; for VF models each layer differentiates its own φ_l."""
    leaves = [s.clone().requires_grad_(True) for s in state]
    if model.vector_field:
        phi = model.phi(x, leaves, beta, y, pre=[s.detach() for s in state])
    else:
        phi = model.phi(x, leaves, beta, y)
    grads = torch.autograd.grad(phi.sum(), leaves)
    out = [model.act(g) for g in grads[:-1]]
    out.append(model.act(grads[-1]) if model.loss == "mse" else grads[-1])
    return out


@pytest.mark.parametrize("kind", ["mlp", "vf_mlp"])
@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
@pytest.mark.parametrize("loss", ["mse", "cel"])
def test_step_equals_autograd_of_phi(kind, act, loss):
    model = make(kind, act, loss)
    x, y, g = data()
    state = random_state(model, B, g, -0.5, 1.5)
    drive = model.input_drive(x)
    per_sample = torch.tensor([[0.3], [-0.7], [0.0], [1.1]], dtype=torch.float64)
    for beta in (0.0, 0.37, -0.2, per_sample):
        got = model.step(state, drive, beta, y)
        want = oracle_step(model, x, state, beta, y)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["mlp", "vf_mlp"])
@pytest.mark.parametrize("loss", ["mse", "cel"])
def test_dphi_dtheta_equals_autograd(kind, loss):
    model = make(kind, loss=loss)
    x, y, g = data()
    state = random_state(model, B, g)
    pre = random_state(model, B, g) if model.vector_field else None
    got = model.dphi_dtheta(x, state, 0.4, y, pre=pre)
    assert_grads_close(got, autograd_param_grads(model, model.phi(x, state, 0.4, y, pre=pre).mean()))


@pytest.mark.parametrize("kind", ["mlp", "vf_mlp"])
def test_ep_update_equals_autograd_of_phi_difference(kind):
    """contrast() == −∂/∂θ [Φ̄(s_b; β_b) − Φ̄(s_a; β_a)] / (β_b − β_a) (code base A's backward)."""
    model = make(kind, loss="cel")
    x, y, g = data()
    a, b = random_state(model, B, g), random_state(model, B, g)
    pre = random_state(model, B, g) if model.vector_field else None
    got = contrast(model, x, y, a, 0.3, b, -0.3, pre=pre)
    diff = (model.phi(x, b, -0.3, y, pre=pre).mean() - model.phi(x, a, 0.3, y, pre=pre).mean()) / (-0.6)
    assert_grads_close(got, autograd_param_grads(model, -diff))


def test_vf_angles_start_near_90_degrees_and_tied_weights_give_zero():
    torch.manual_seed(0)
    model = VFMLP([50, 400, 300, 10])
    assert 80 < model.angles()["angle_B1"] < 100
    with torch.no_grad():
        model.B[0].weight.copy_(model.W[1].weight.t())
    assert model.angles()["angle_B1"] == pytest.approx(0.0, abs=1e-2)


def test_symmetric_mlp_equals_vf_mlp_with_tied_weights():
    sym = make("mlp")
    vf = make("vf_mlp")
    with torch.no_grad():
        for k, b in enumerate(vf.B):
            b.weight.copy_(vf.W[k + 1].weight.t())
    x, y, g = data()
    state = random_state(sym, B, g)
    for p, q in zip(sym.step(state, sym.input_drive(x), 0.2, y), vf.step(state, vf.input_drive(x), 0.2, y)):
        torch.testing.assert_close(p, q)


@pytest.mark.parametrize("kind", ["mlp", "vf_mlp"])
def test_fused_contrast_equals_generic_contrast(kind):
    model = make(kind, loss="cel")
    x, y, g = data()
    a, b = random_state(model, B, g), random_state(model, B, g)
    pres = [None, random_state(model, B, g)] if model.vector_field else [None]
    for pre in pres:
        fused = model.contrast(x, y, a, 0.2, b, -0.2, -2.5, pre=pre)
        generic = EnergyModel.contrast(model, x, y, a, 0.2, b, -0.2, -2.5, pre=pre)
        assert_grads_close(fused, generic, rtol=1e-12, atol=1e-14)
