"""Energy models of code base C (EnergyNet): closed forms against autograd, relaxation, EP (float64)."""

from __future__ import annotations

import pytest
import torch

from eqsearch.dynamics import Euler
from eqsearch.losses import loss_per_sample
from eqsearch.models.energy import COSTS, ENERGIES, NONLINEARITIES, EnergyNet

DIMS = [6, 5, 4, 3]
B = 4
PER_SAMPLE_BETA = torch.tensor([[0.7], [-0.3], [0.0], [1.2]], dtype=torch.float64)


def make(energy="cond_gaussian", cost="squared_error", nonlinearity="sigmoid", seed=0, **kw):
    torch.manual_seed(seed)
    return EnergyNet(DIMS, energy=energy, cost=cost, nonlinearity=nonlinearity, **kw).double()


def data(seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, 2, 3, generator=g, dtype=torch.float64)  # flattened to 6 by the model
    labels = torch.randint(0, DIMS[-1], (B,), generator=g)
    y = torch.nn.functional.one_hot(labels, DIMS[-1]).double()
    return x, y, g


def leaves_of(state):
    return [s.detach().clone().requires_grad_(True) for s in state]


def relax(model, drive, state, steps, beta=0.0, y=None):
    with torch.no_grad():
        for _ in range(steps):
            state = model.step(state, drive, beta, y)
    return state


def relax_to_convergence(model, drive, state, beta=0.0, y=None, tol=1e-14, max_steps=40000):
    """Plain model.step loop until max |Δu| < tol (asserts it got there)."""
    with torch.no_grad():
        for _ in range(max_steps):
            new = model.step(state, drive, beta, y)
            delta = max(float((n - s).abs().max()) for n, s in zip(new, state))
            state = new
            if delta < tol:
                return state
    raise AssertionError(f"relaxation did not converge: last max |du| = {delta:.3g}")


GRID = [(e, c, n) for e in ENERGIES for c in COSTS for n in sorted(NONLINEARITIES)]


# ---------------------------------------------------------------------- 1, 2: closed forms
@pytest.mark.parametrize("energy,cost,nonlinearity", GRID)
def test_state_grad_equals_autograd_of_phi(energy, cost, nonlinearity):
    model = make(energy, cost, nonlinearity)
    x, y, g = data()
    drive = model.input_drive(x)
    state = model.init_state(drive, generator=g)
    for beta in (0.0, 0.7, PER_SAMPLE_BETA):
        leaves = leaves_of(state)
        want = torch.autograd.grad(model.phi(x, leaves, beta, y).sum(), leaves)
        got = model.state_grad(state, drive, beta, y)
        assert len(got) == len(DIMS) - 1
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("energy,cost,nonlinearity", GRID)
def test_dphi_dtheta_equals_autograd_of_phi(energy, cost, nonlinearity):
    model = make(energy, cost, nonlinearity)
    x, y, g = data()
    drive = model.input_drive(x)
    state = model.init_state(drive, generator=g)
    names = [n for n, _ in model.named_parameters()]
    params = [p for _, p in model.named_parameters()]
    for beta in (0.0, 0.7, PER_SAMPLE_BETA):
        want = torch.autograd.grad(model.phi(x, state, beta, y).mean(), params)
        for d in (drive, None):
            got = model.dphi_dtheta(x, state, beta, y, drive=d)
            assert list(got) == names
            for n, w in zip(names, want):
                torch.testing.assert_close(got[n], w, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("energy", ENERGIES)
def test_contrast_is_scaled_difference_of_dphi_dtheta(energy):
    model = make(energy, "cross_entropy")
    x, y, g = data()
    drive = model.input_drive(x)
    a = model.init_state(drive, generator=g)
    b = model.init_state(drive, generator=g)
    got = model.contrast(x, y, a, 0.0, b, 0.5, -2.0, drive=drive)
    ga, gb = model.dphi_dtheta(x, a, 0.0, y), model.dphi_dtheta(x, b, 0.5, y)
    assert list(got) == [n for n, _ in model.named_parameters()]
    for n in got:
        torch.testing.assert_close(got[n], -2.0 * (gb[n] - ga[n]), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("energy", ENERGIES)
@pytest.mark.parametrize("cost", COSTS)
def test_phi_energy_and_loss_are_consistent(energy, cost):
    model = make(energy, cost)
    x, y, g = data()
    state = model.init_state(model.input_drive(x), generator=g)
    e = model.energy(x, state)
    assert e.shape == (B,)
    torch.testing.assert_close(model.phi(x, state), -e)
    # Φ_0 − Φ_β = β·C and C is the training loss eqsearch.losses computes for model.loss
    loss = loss_per_sample(model.loss, model.logits(state), y)
    torch.testing.assert_close(model.phi(x, state) - model.phi(x, state, 0.7, y), 0.7 * loss)
    torch.testing.assert_close(model.phi(x, state) - model.phi(x, state, PER_SAMPLE_BETA, y),
                               PER_SAMPLE_BETA.flatten() * loss)
    labels = y.argmax(1)
    torch.testing.assert_close(loss_per_sample(model.loss, state[-1], labels), loss)


def test_written_energies_match_the_reference_formulas():
    """E of §4.3 written out once by hand for a 2-layer net (guards phi, the oracle itself)."""
    torch.manual_seed(0)
    x, _, g = data()
    x = x.flatten(1)
    cg = EnergyNet([6, 5, 3], "cond_gaussian", nonlinearity="tanh").double()
    u1, u2 = torch.randn(B, 5, generator=g, dtype=torch.float64), torch.randn(B, 3, generator=g, dtype=torch.float64)
    w0, b0, w1, b1 = cg.W[0].weight, cg.W[0].bias, cg.W[1].weight, cg.W[1].bias
    want = ((u1 - x @ w0.T - b0) ** 2).sum(1) + ((u2 - torch.tanh(u1) @ w1.T - b1) ** 2).sum(1)
    torch.testing.assert_close(cg.energy(x, [u1, u2]), want)
    hop = EnergyNet([6, 5, 3], "restr_hopfield", nonlinearity="tanh").double()
    hop.load_state_dict(cg.state_dict())
    r1, r2 = torch.tanh(u1), torch.tanh(u2)
    want = (0.5 * (x ** 2).sum(1) + 0.5 * (u1 ** 2).sum(1) + 0.5 * (u2 ** 2).sum(1)
            - ((r1 @ w0) * x).sum(1) - (r1 * b0).sum(1) - ((r2 @ w1) * r1).sum(1) - (r2 * b1).sum(1))
    torch.testing.assert_close(hop.energy(x, [u1, u2]), want)


# ---------------------------------------------------------------------- 3: relaxation lowers E
@pytest.mark.parametrize("energy", ENERGIES)
def test_default_relaxation_lowers_the_free_energy_monotonically(energy):
    model = make(energy, nonlinearity="sigmoid")
    assert model.dynamics == Euler(0.1)
    x, _, g = data()
    drive = model.input_drive(x)
    state = model.init_state(drive, generator=g)
    with torch.no_grad():
        energies = [float(model.energy(x, state).mean())]
        for _ in range(40):
            state = model.step(state, drive)
            energies.append(float(model.energy(x, state).mean()))
    for prev, new in zip(energies, energies[1:]):
        assert new <= prev + 1e-12
    assert energies[-1] < energies[0] - 0.5  # it actually moved


# ---------------------------------------------------------------------- 4: fast feed-forward init
def test_fast_ff_init_is_the_zero_energy_free_equilibrium():
    model = make("cond_gaussian", "cross_entropy", "sigmoid", fast_ff_init=True)
    x, y, g = data()
    with torch.no_grad():
        drive = model.input_drive(x)
        ff = model.init_state(drive, generator=g)
        assert float(model.energy(x, ff).abs().max()) <= 1e-12
        for s in model.state_grad(ff, drive):  # it is a fixed point: T1 = 0 is the free phase
            assert float(s.abs().max()) <= 1e-12
        assert all(v.abs().max() <= 1e-12 for v in model.dphi_dtheta(x, ff, drive=drive).values())

    # relaxing the same model from N(0, 1) reaches it
    slow = make("cond_gaussian", "cross_entropy", "sigmoid")
    noise = slow.init_state(drive, generator=g)
    relaxed = relax_to_convergence(slow, drive, noise, tol=1e-14)
    # Tolerance: at the stop, |∇E| ≤ |Δu|/dt ≤ 1e-13 per unit, and near the minimum
    # |u − u*| ≤ |∇E| / λ_min(∇²E); λ_min is computed, so the bound is not a guess.
    sizes = DIMS[1:]

    def total_energy(z):
        return slow.energy(x, list(z.view(B, -1).split(sizes, 1))).sum()

    z_star = torch.cat(ff, 1).flatten()
    lam_min = float(torch.linalg.eigvalsh(torch.autograd.functional.hessian(total_energy, z_star))[0])
    assert lam_min > 0
    with torch.no_grad():
        grad_norm = float(torch.cat(slow.state_grad(relaxed, drive), 1).norm())
    bound = 2 * grad_norm / lam_min + 1e-13
    assert bound < 1e-10
    dist = float(torch.cat([r - f for r, f in zip(relaxed, ff)], 1).norm())
    assert dist <= bound
    assert float(torch.cat([n - f for n, f in zip(noise, ff)], 1).norm()) > 1.0  # it started far away


def test_fast_ff_init_rejected_for_restr_hopfield():
    with pytest.raises(ValueError, match="model.fast_ff_init"):
        EnergyNet(DIMS, energy="restr_hopfield", fast_ff_init=True)


@pytest.mark.parametrize("key,kw", [("energy", {"energy": "ising"}), ("cost", {"cost": "hinge"}),
                                    ("nonlinearity", {"nonlinearity": "gelu"}), ("init", {"init": "uniform"})])
def test_bad_names_are_rejected(key, kw):
    with pytest.raises(ValueError, match=f"model.{key}"):
        EnergyNet(DIMS, **kw)


# ---------------------------------------------------------------------- 5: EP → true gradient
def true_gradient(model, x, y, s_star):
    """dL̄/dθ at the free equilibrium by implicit differentiation (L̄ = batch-mean loss):
    ds*/dθ = −H⁻¹ ∂²E/∂s∂θ, so dL̄/dθ = −∂/∂θ [vᵀ ∂E/∂s] with v = H⁻¹ ∂L̄/∂s (H = ∇²_s Σ_B E)."""
    sizes = DIMS[1:]

    def split(z):
        return list(z.view(B, -1).split(sizes, 1))

    z = torch.cat(s_star, 1).flatten().detach()
    with torch.no_grad():
        hess = torch.autograd.functional.hessian(lambda v: model.energy(x, split(v)).sum(), z)
    zl = z.clone().requires_grad_(True)
    dl_dz = torch.autograd.grad(loss_per_sample(model.loss, split(zl)[-1], y).mean(), zl)[0]
    v = torch.linalg.solve(hess, dl_dz)
    zl = z.clone().requires_grad_(True)
    de_dz = torch.autograd.grad(model.energy(x, split(zl)).sum(), zl, create_graph=True)[0]
    grads = torch.autograd.grad(-(v * de_dz).sum(), list(model.parameters()))
    return torch.cat([gr.flatten() for gr in grads])


@pytest.mark.parametrize("energy,cost", [("cond_gaussian", "cross_entropy"), ("restr_hopfield", "squared_error")])
def test_implicit_gradient_oracle_matches_bptt(energy, cost):
    """The oracle of the next test agrees with BPTT through a long relaxation started at s*."""
    model = make(energy, cost, "sigmoid")
    x, y, g = data()
    drive = [d.detach() for d in model.input_drive(x)]
    s_star = relax_to_convergence(model, drive, model.init_state(drive, generator=g))
    true = true_gradient(model, x, y, s_star)
    state, live_drive = [s.detach() for s in s_star], model.input_drive(x)
    for _ in range(1500):
        state = model.step(state, live_drive)
    bptt = torch.autograd.grad(loss_per_sample(model.loss, state[-1], y).mean(), list(model.parameters()))
    torch.testing.assert_close(torch.cat([b.flatten() for b in bptt]), true, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("energy,cost", [("cond_gaussian", "cross_entropy"), ("restr_hopfield", "squared_error"),
                                         ("restr_hopfield", "cross_entropy")])
def test_one_sided_ep_converges_to_the_true_gradient(energy, cost):
    model = make(energy, cost, "sigmoid")
    x, y, g = data()
    drive = [d.detach() for d in model.input_drive(x)]  # per-batch constants, as the rules hold them
    s_star = relax_to_convergence(model, drive, model.init_state(drive, generator=g))
    true = true_gradient(model, x, y, s_star)
    with torch.no_grad():
        g_free = model.dphi_dtheta(x, s_star, drive=drive)
        errors = []
        betas = [0.1, 0.05, 0.025, 0.0125]
        for beta in betas:
            s_beta = relax_to_convergence(model, drive, s_star, beta, y)
            g_beta = model.dphi_dtheta(x, s_beta, beta, y, drive=drive)
            est = torch.cat([(-(g_beta[n] - g_free[n]) / beta).flatten() for n in g_free])
            # the fused contrast gives the same estimate
            fused = model.contrast(x, y, s_star, 0.0, s_beta, beta, -1.0 / beta, drive=drive)
            torch.testing.assert_close(torch.cat([t.flatten() for t in fused.values()]), est)
            errors.append(float((est - true).norm()))
    ratios = [a / b for a, b in zip(errors, errors[1:])]
    assert all(1.8 < r < 2.2 for r in ratios), (errors, ratios)
    assert errors[-1] < 0.05 * float(true.norm()), (errors, float(true.norm()))


# ---------------------------------------------------------------------- 6: init draws
def test_init_state_draws_come_from_the_generator():
    model = make("restr_hopfield")
    x, _, _ = data()
    drive = model.input_drive(x)
    a = model.init_state(drive, generator=torch.Generator().manual_seed(5))
    b = model.init_state(drive, generator=torch.Generator().manual_seed(5))
    c = model.init_state(drive, generator=torch.Generator().manual_seed(6))
    assert [s.shape for s in a] == [(B, d) for d in DIMS[1:]]
    assert all(s.dtype == torch.float64 for s in a)
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert all(not torch.equal(p, q) for p, q in zip(a, c))
    # roughly N(0, 1)
    many = model.init_state([drive[0].new_zeros(4000, DIMS[0]), None], generator=torch.Generator().manual_seed(1))
    flat = torch.cat(many, 1)
    assert abs(float(flat.mean())) < 0.05 and abs(float(flat.std()) - 1) < 0.05
    zeros = make("restr_hopfield", init="zeros").init_state(drive)
    assert all(float(s.abs().max()) == 0 for s in zeros)


def test_parameters_and_groups():
    model = make("cond_gaussian")
    assert [n for n, _ in model.named_parameters()] == ["W.0.weight", "W.0.bias", "W.1.weight", "W.1.bias",
                                                        "W.2.weight", "W.2.bias"]
    groups = model.synapse_groups()
    assert [[tuple(p.shape) for p in grp] for grp in groups] == [[(5, 6), (5,)], [(4, 5), (4,)], [(3, 4), (3,)]]
    assert sum(len(grp) for grp in groups) == len(list(model.parameters()))
    assert make(cost="cross_entropy").loss == "cel" and make(cost="squared_error").loss == "mse"
    assert EnergyNet(DIMS, dt=0.2, tau=4.0).dynamics == Euler(0.05)
