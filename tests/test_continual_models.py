"""Code base B's four networks (EPdisc, EPcont, VFdisc, VFcont; reference §3.4-§3.6), float64.

Closed-form dynamics against autograd of Φ / φ_l, closed-form ∂Φ/∂θ and per-step (continual)
updates against autograd, convergence of the continuous-time flow at the README dt, telescoping
of the continual updates to the EP / VF update, the initial-angle procedure, and C-VF with
tied initialisation against C-EP.
"""

from __future__ import annotations

import math

import pytest
import torch

from eqsearch.errors import ConfigError
from eqsearch.models.base import residual
from eqsearch.models.continual import RHO, ContinualMLP, OutsideNudge
from eqsearch.rules import contrast, relax, write_grads
from tests.conftest import assert_grads_close, autograd_param_grads

SMALL = [5, 4, 3]
DEEP = [6, 5, 4, 3]
BATCH = 4
SETTINGS = [(True, False), (False, False), (True, True), (False, True)]  # (discrete, vector_field)
SETTING_IDS = ["EPdisc", "EPcont", "VFdisc", "VFcont"]


def make(sizes, discrete, vf, act="sigm", dt=None, clamp=None, angle=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ContinualMLP(sizes, act, discrete=discrete, dt=dt, clamp=clamp, vector_field=vf, angle=angle,
                        generator=g).double()


def data(sizes, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(BATCH, sizes[0], generator=g, dtype=torch.float64)
    labels = torch.randint(0, sizes[-1], (BATCH,), generator=g)
    y = torch.nn.functional.one_hot(labels, sizes[-1]).double()
    return x, y, g


def rand_state(sizes, g, low=0.0, high=1.0):
    return [low + (high - low) * torch.rand(BATCH, n, generator=g, dtype=torch.float64) for n in sizes[1:]]


def betas():
    per_sample = torch.tensor([[0.3], [-0.7], [0.5], [1.1]], dtype=torch.float64)
    return [0.0, 0.37, -0.2, per_sample]


def autograd_state_grad(model, x, state, beta, y):
    """∂Φ_β/∂s by autograd; vector-field models: each layer through its own φ_l (pre detached)."""
    leaves = [s.clone().requires_grad_(True) for s in state]
    pre = [s.detach() for s in state] if model.vector_field else None
    return list(torch.autograd.grad(model.phi(x, leaves, beta, y, pre=pre).sum(), leaves))


def close(a, b, tol=1e-12):
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)


# ---------------------------------------------------------------------------------- 1. dynamics
@pytest.mark.parametrize("sizes", [SMALL, DEEP])
def test_continuous_tied_hardsigm_clamped_is_gradient_flow(sizes):
    """EPcont with hardsigm on the interior of [0, 1]: velocity = −∂(E + β·L)/∂s, step = clamp(s + dt·g)."""
    model = make(sizes, discrete=False, vf=False, act="hardsigm", dt=0.2, clamp=True)
    x, y, g = data(sizes)
    state = rand_state(sizes, g, 0.05, 0.95)
    drive = model.input_drive(x)
    for beta in betas():
        got = model.state_grad(state, drive, beta, y)
        for a, b in zip(got, autograd_state_grad(model, x, state, beta, y)):
            close(a, b)
        for n, s, v in zip(model.step(state, drive, beta, y), state, got):
            close(n, (s + 0.2 * v).clamp(0.0, 1.0))


@pytest.mark.parametrize("sizes", [SMALL, DEEP])
def test_continuous_tied_sigm_output_drops_rho_prime(sizes):
    """EPcont with sigm: hidden layers follow −∂E/∂s; the output is B's linear form
    −s_N + W_N ρ(s_{N−1}) + b_N + β(ŷ − s_N), which is NOT −∂E/∂s_N (no ρ'(s_N))."""
    model = make(sizes, discrete=False, vf=False, act="sigm")
    x, y, g = data(sizes)
    state = rand_state(sizes, g)
    drive = model.input_drive(x)
    rho = RHO["sigm"].act
    for beta in betas()[1:]:
        got = model.state_grad(state, drive, beta, y)
        want = autograd_state_grad(model, x, state, beta, y)
        for a, b in zip(got[:-1], want[:-1]):
            close(a, b)
        w = model.W[-1]
        explicit = -state[-1] + rho(state[-2]) @ w.weight.t() + w.bias + beta * (y - state[-1])
        close(got[-1], explicit)
        assert not torch.allclose(got[-1], want[-1], atol=1e-3)


@pytest.mark.parametrize("sizes", [SMALL, DEEP])
@pytest.mark.parametrize("discrete", [True, False], ids=["VFdisc", "VFcont"])
def test_vector_field_layers_follow_their_own_phi(sizes, discrete):
    """VF: ∂φ_l/∂s_l (inputs from a detached copy of the state) is the closed-form state_grad."""
    model = make(sizes, discrete=discrete, vf=True, act="sigm", angle=60.0)
    x, y, g = data(sizes)
    state = rand_state(sizes, g)
    drive = model.input_drive(x)
    for beta in betas():
        for a, b in zip(model.state_grad(state, drive, beta, y), autograd_state_grad(model, x, state, beta, y)):
            close(a, b)


@pytest.mark.parametrize("sizes", [SMALL, DEEP])
@pytest.mark.parametrize("vf", [False, True], ids=["EPdisc", "VFdisc"])
@pytest.mark.parametrize("act", sorted(RHO))
def test_discrete_step_is_rho_of_primitive_gradient_plus_outside_nudge(sizes, vf, act):
    """§3.4: s ← ρ(∂Φ/∂s), output ρ(W_N s_{N−1} + b_N) + β(ŷ − s_N); state_grad is ∂Φ_β/∂s of B's
    primitive; the fused step equals the generic OutsideNudge dynamics."""
    model = make(sizes, discrete=True, vf=vf, act=act, angle=30.0 if vf else None)
    assert model.dynamics == OutsideNudge()
    x, y, g = data(sizes)
    state = rand_state(sizes, g)
    drive = model.input_drive(x)
    rho = RHO[act].act
    free = autograd_state_grad(model, x, state, 0.0, y)
    for beta in betas():
        for a, b in zip(model.state_grad(state, drive, beta, y), autograd_state_grad(model, x, state, beta, y)):
            close(a, b)
        got = model.step(state, drive, beta, y)
        for a, b in zip(got, model.dynamics.step(model, state, drive, beta, y)):
            close(a, b)
        for a, b in zip(got[:-1], free[:-1]):
            close(a, rho(b))
        w = model.W[-1]
        close(got[-1], rho(state[-2] @ w.weight.t() + w.bias) + beta * (y - state[-1]))
        # hidden layer next to the input, written out: ρ(W_1 x + b_1 + feedback)
        fb = state[1] @ (model.B[0].weight.t() if vf else model.W[1].weight)
        close(got[0], rho(x @ model.W[0].weight.t() + model.W[0].bias + fb))


# ---------------------------------------------------------------------------------- 2. ∂Φ/∂θ
@pytest.mark.parametrize("sizes", [SMALL, DEEP])
@pytest.mark.parametrize("discrete,vf", SETTINGS, ids=SETTING_IDS)
def test_dphi_dtheta_equals_autograd(sizes, discrete, vf):
    model = make(sizes, discrete=discrete, vf=vf, angle=45.0 if vf else None)
    x, y, g = data(sizes)
    state = rand_state(sizes, g)
    pre = rand_state(sizes, g) if vf else None
    want = autograd_param_grads(model, model.phi(x, state, 0.4, y, pre=pre).mean())
    assert_grads_close(model.dphi_dtheta(x, state, 0.4, y, pre=pre), want)
    assert_grads_close(model.dphi_dtheta(x, state, 0.4, y, pre=pre, drive=model.input_drive(x)), want)
    assert "W.0.bias" in want and want["W.0.bias"].abs().sum() > 0  # b_in is trained (B's VFdisc: not)


@pytest.mark.parametrize("sizes", [SMALL, DEEP])
@pytest.mark.parametrize("discrete,vf", SETTINGS, ids=SETTING_IDS)
def test_step_update_equals_autograd_of_phi_difference(sizes, discrete, vf):
    """step_update = −mean_b (1/β_b) ∂/∂θ [φ(s_{t+1}) − φ(s_t)], VF with pre = s_t for both."""
    model = make(sizes, discrete=discrete, vf=vf, angle=45.0 if vf else None)
    x, y, g = data(sizes)
    prev, new = rand_state(sizes, g), rand_state(sizes, g)
    pre = prev if vf else None
    for beta in betas()[1:]:
        b = beta.flatten() if torch.is_tensor(beta) else beta
        diff = ((model.phi(x, new, pre=pre) - model.phi(x, prev, pre=pre)) / b).mean()
        got = model.step_update(x, prev, new, beta, y)
        assert_grads_close(got, autograd_param_grads(model, -diff))
        assert_grads_close(model.step_update(x, prev, new, beta, y, drive=model.input_drive(x)), got)
    write_grads(model, got)  # names and shapes fit the strict writer
    with pytest.raises(ValueError):
        model.step_update(x, prev, new, 0.0, y)


# ---------------------------------------------------------------------------------- 3. convergence
@pytest.mark.parametrize("vf", [False, True], ids=["EPcont", "VFcont"])
@pytest.mark.parametrize("act,dt,clamp,beta,steps", [("sigm", 0.2, True, 0.5, 300), ("tanh", 0.08, False, 0.005, 800)],
                         ids=["EB-1h-dt0.2", "GDU-dt0.08"])
@torch.no_grad()
def test_continuous_dynamics_converge_at_readme_dt(vf, act, dt, clamp, beta, steps):
    """Residual ‖s_{t+1} − s_t‖ falls (monotonically after a transient, down to round-off) in the
    free and in the nudged phase, at the dt of the README commands (§3.10)."""
    sizes = [30, 20, 10]
    model = make(sizes, discrete=False, vf=vf, act=act, dt=dt, clamp=clamp, angle=45.0 if vf else None)
    x, y, _ = data(sizes)
    drive = model.input_drive(x)
    res = []
    hook = lambda p, n: res.append(float(residual(p, n)))  # noqa: E731
    state = model.init_state(drive)
    for phase_beta in (0.0, beta):  # the nudged phase continues from the free state
        res.clear()
        state, _ = relax(model, drive, state, steps, phase_beta, y, on_step=hook)
        assert res[-1] < 1e-4 * res[0]
        assert all(b <= a * (1 + 1e-9) for a, b in zip(res[50:], res[51:]) if a > 1e-13)


# ---------------------------------------------------------------------------------- 4. telescoping
CASES = [dict(discrete=True, act="sigm"), dict(discrete=False, act="sigm", dt=0.2, clamp=True),
         dict(discrete=False, act="tanh", dt=0.08, clamp=False)]
CASE_IDS = ["disc-sigm", "cont-sigm-clamp", "cont-tanh"]


@torch.no_grad()
def nudged_with_updates(model, x, y, beta, T1, T2):
    drive = model.input_drive(x)
    free, _ = relax(model, drive, model.init_state(drive), T1)
    total = {}

    def on_step(prev, new):
        for k, v in model.step_update(x, prev, new, beta, y, drive=drive).items():
            total[k] = total.get(k, 0) + v

    nudged, _ = relax(model, drive, free, T2, beta, y, on_step=on_step)
    return free, nudged, total


@pytest.mark.parametrize("sizes", [SMALL, DEEP])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("beta", [0.2, -0.2])
def test_continual_ep_updates_telescope_to_ep_update(sizes, case, beta):
    model = make(sizes, vf=False, **case)
    x, y, _ = data(sizes)
    free, nudged, total = nudged_with_updates(model, x, y, beta, 60, 12)
    assert_grads_close(total, contrast(model, x, y, free, 0.0, nudged, beta), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_continual_vf_updates_telescope_to_vf_update(case):
    """Σ_t step_update = VF update (presynaptic s*): exactly for biases and W_1, to O(β) for the rest."""
    sizes = DEEP
    model = make(sizes, vf=True, angle=45.0, **case)
    x, y, _ = data(sizes)
    errs = []
    for beta in (0.05, 0.005):
        free, nudged, total = nudged_with_updates(model, x, y, beta, 400, 12)
        std = contrast(model, x, y, free, 0.0, nudged, beta, pre=free)
        assert sorted(total) == sorted(dict(model.named_parameters()))
        for name in std:
            if name.endswith("bias") or name == "W.0.weight":
                close(total[name], std[name], 1e-9)
        others = [n for n in std if n.endswith("weight") and n != "W.0.weight"]
        num = math.sqrt(sum(float((total[n] - std[n]).pow(2).sum()) for n in others))
        den = math.sqrt(sum(float(std[n].pow(2).sum()) for n in others))
        errs.append(num / den)
    assert errs[0] < 0.1
    assert 5.0 < errs[0] / errs[1] < 20.0  # the mismatch is O(β)


# ---------------------------------------------------------------------------------- 5. angle
@pytest.mark.parametrize("angle", [0.0, 45.0, 90.0, 180.0])
def test_initial_angle_is_measured_within_one_degree(angle):
    sizes = [3, 784, 512]
    model = make(sizes, discrete=True, vf=True, angle=angle, seed=3)
    assert model.B[0].weight.shape == (784, 512) and model.W[1].weight.shape == (512, 784)
    measured = model.angles()
    assert list(measured) == ["angle_B1"] and model.metrics() == measured
    assert abs(measured["angle_B1"] - angle) < 1.0
    base = make(sizes, discrete=True, vf=True, angle=None, seed=3)
    for name, p in base.W.named_parameters():
        assert torch.equal(p, dict(model.W.named_parameters())[name])  # angle only touches B
    wt = model.W[1].weight.t()
    if angle == 0.0:
        assert torch.equal(model.B[0].weight, wt) and torch.equal(base.B[0].weight, wt)
    elif angle == 180.0:
        assert torch.equal(model.B[0].weight, -wt)
    else:
        again = make(sizes, discrete=True, vf=True, angle=angle, seed=3)
        other = make(sizes, discrete=True, vf=True, angle=angle, seed=4)
        assert torch.equal(again.B[0].weight, model.B[0].weight)  # drawn from the generator
        assert not torch.equal(other.B[0].weight.abs(), model.B[0].weight.abs())
        assert torch.equal(model.B[0].weight.abs(), wt.abs())  # sign flips only


def test_angles_of_deep_vf_and_tied_models():
    model = make(DEEP, discrete=False, vf=True, angle=90.0)
    assert sorted(model.angles()) == ["angle_B1", "angle_B2"]
    assert make(DEEP, discrete=True, vf=False).angles() == {}
    with pytest.raises(ConfigError):
        make(DEEP, discrete=True, vf=False, angle=10.0)


# ---------------------------------------------------------------------------------- 6. C-VF vs C-EP
@pytest.mark.parametrize("sizes", [SMALL, DEEP])
@pytest.mark.parametrize("case", [dict(discrete=True, act="sigm"), dict(discrete=False, act="hardsigm", dt=0.2)],
                         ids=["disc-sigm", "cont-hardsigm-clamp"])
@pytest.mark.parametrize("beta", [0.3, -0.2])
def test_cvf_with_tied_init_matches_cep_for_one_step(sizes, case, beta):
    """Angle 0, same seed: same W, B = Wᵀ, same next state; the same update for every bias and W_1;
    for W_l (l ≥ 2), C-EP's update is the sum of C-VF's W_l and B_{l−1}ᵀ updates plus the
    second-order term −(1/β)·mean_b Δs_l Δs_{l−1}ᵀ
    (C-EP: Δ(s_l s_{l−1}ᵀ); C-VF: Δs_l s_{l−1}ᵀ + s_l Δs_{l−1}ᵀ)."""
    ep = make(sizes, vf=False, **case)
    vf = make(sizes, vf=True, angle=0.0, **case)
    for name, p in ep.named_parameters():
        assert torch.equal(p, dict(vf.named_parameters())[name])
    x, y, g = data(sizes)
    prev = rand_state(sizes, g, 0.05, 0.95)
    new_ep = ep.step(prev, ep.input_drive(x), beta, y)
    new_vf = vf.step(prev, vf.input_drive(x), beta, y)
    for a, b in zip(new_ep, new_vf):
        close(a, b)
    gep = ep.step_update(x, prev, new_ep, beta, y)
    gvf = vf.step_update(x, prev, new_vf, beta, y)
    assert sorted(gvf) == sorted(list(gep) + [f"B.{k}.weight" for k in range(len(sizes) - 2)])
    for name, v in gep.items():
        if name.endswith("bias") or name == "W.0.weight":
            close(v, gvf[name])
        else:
            k = int(name.split(".")[1])
            d_post, d_pre = new_ep[k] - prev[k], new_ep[k - 1] - prev[k - 1]
            second = -(d_post.t() @ d_pre) / (beta * BATCH)
            close(v, gvf[name] + gvf[f"B.{k - 1}.weight"].t() + second)


# ---------------------------------------------------------------------------------- misc
def test_groups_logits_and_config_errors():
    model = make(DEEP, discrete=True, vf=True)
    groups = model.synapse_groups()
    assert [len(gr) for gr in groups] == [2, 3, 3]
    assert groups[1][2] is model.B[0].weight and groups[2][2] is model.B[1].weight
    assert model.loss == "mse"
    state = rand_state(DEEP, torch.Generator().manual_seed(0))
    assert model.logits(state) is state[-1]
    cont = make(DEEP, discrete=False, vf=False)
    assert (cont.dt, cont.clamp) == (0.2, True) and cont.dynamics.clamp == (0.0, 1.0)
    for bad in (dict(sizes=[5, 3]), dict(activation="relu"), dict(discrete=True, dt=0.5),
                dict(discrete=True, clamp=True), dict(discrete=False, dt=0.0),
                dict(vector_field=True, angle=200.0)):
        kw = {"sizes": DEEP, **bad}
        with pytest.raises(ConfigError):
            ContinualMLP(**kw)
