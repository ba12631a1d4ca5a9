"""The engine contract, checked for every registered model kind (as optuna runs one test over
every sampler): a family joins these tests by registering (with its ``example``).

For each kind, on its tiny float64 example: the state gradient equals autograd of Φ, the
model's step equals its dynamics applied to that gradient, ∂Φ/∂θ and the EP contrast equal
autograd, gradients map to the trained parameters strictly by name, and a checkpoint restores
the same network.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import pytest
import torch

from eqsearch.errors import GradientMappingError
from eqsearch.families import families, family_of, kinds
from eqsearch.fields import build_section, setting
from eqsearch.losses import as_target
from eqsearch.rules import contrast, write_grads
from tests.conftest import assert_grads_close, autograd_param_grads

B = 3
NUM_CLASSES = 3


def build(kind: str, seed: int = 0):
    family = family_of(kind)
    cfg = build_section(family.config, {**family.example, "kind": kind}, "model")
    torch.manual_seed(seed)
    return family.build(cfg, family.example_input, NUM_CLASSES).double()


def batch(model, kind: str, seed: int = 1):
    """Inputs, labels, the drive and two random states in (0.1, 0.9) (inside every clamp)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((B,) + family_of(kind).example_input, generator=g, dtype=torch.float64)
    y = torch.randint(0, NUM_CLASSES, (B,), generator=g)
    drive = model.input_drive(x, torch.Generator().manual_seed(seed))
    shapes = [s.shape for s in model.init_state(drive, torch.Generator().manual_seed(seed))]
    states = [[0.1 + 0.8 * torch.rand(sh, generator=g, dtype=torch.float64) for sh in shapes] for _ in range(3)]
    return x, y, drive, states


BETAS = [0.0, 0.6, "per_sample"]


def as_beta(beta):
    return torch.tensor([[0.5], [-0.4], [1.1]], dtype=torch.float64) if beta == "per_sample" else beta


def test_every_family_is_registered_with_an_example():
    assert {"mlp", "vf_mlp", "cnn", "vf_cnn"} <= set(kinds())
    for family in families():
        assert family.example and family.example_input, family.name


@pytest.mark.parametrize("kind", kinds())
@pytest.mark.parametrize("beta", BETAS)
def test_state_grad_equals_autograd_of_phi_and_step_follows_the_dynamics(kind, beta):
    model = build(kind)
    x, y, drive, (state, pre, _) = batch(model, kind)
    beta = as_beta(beta)
    target = as_target(y, NUM_CLASSES, torch.float64)
    leaves = [s.clone().requires_grad_(True) for s in state]
    inputs = [s.detach() for s in state] if model.vector_field else None  # VF: each layer's own φ_l
    phi = model.phi(x, leaves, beta, target, pre=inputs, drive=drive).sum()
    oracle = torch.autograd.grad(phi, leaves)
    got = model.state_grad(state, drive, beta, target)
    assert len(got) == len(oracle)
    for k, (a, b) in enumerate(zip(got, oracle)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=lambda m, k=k: f"layer {k}: {m}")
    fused = model.step(state, drive, beta, target)
    generic = model.dynamics.step(model, state, drive, beta, target)
    for a, b in zip(fused, generic):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", kinds())
def test_dphi_dtheta_and_contrast_equal_autograd(kind):
    model = build(kind)
    x, y, drive, (a, b, pre) = batch(model, kind)
    target = as_target(y, NUM_CLASSES, torch.float64)
    pre = pre if model.vector_field else None
    got = model.dphi_dtheta(x, a, 0.6, target, pre=pre, drive=drive)
    assert_grads_close(got, autograd_param_grads(model, model.phi(x, a, 0.6, target, pre=pre, drive=drive).mean()),
                       rtol=1e-10, atol=1e-12)
    got = contrast(model, x, target, a, 0.3, b, -0.4, pre=pre, drive=drive)
    diff = (model.phi(x, b, -0.4, target, pre=pre, drive=drive).mean()
            - model.phi(x, a, 0.3, target, pre=pre, drive=drive).mean())
    assert_grads_close(got, autograd_param_grads(model, diff / 0.7), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", kinds())
def test_gradients_map_to_parameters_strictly_by_name(kind):
    model = build(kind)
    x, y, drive, (a, b, _) = batch(model, kind)
    grads = contrast(model, x, y, a, 0.0, b, 0.5, pre=a if model.vector_field else None, drive=drive)
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(grads) == trained
    write_grads(model, grads)
    params = dict(model.named_parameters())
    if not getattr(model, "same_update", False):  # same-update averages the mirrored pairs
        for name, g in grads.items():
            assert torch.equal(params[name].grad, g), name
    missing = dict(grads)
    missing.pop(sorted(missing)[0])
    with pytest.raises(GradientMappingError, match="missing"):
        write_grads(model, missing)
    with pytest.raises(GradientMappingError, match="not parameters"):
        write_grads(model, {**grads, "dictionary.weight": next(iter(grads.values()))})
    first = sorted(grads)[0]
    with pytest.raises(GradientMappingError, match="shape"):
        write_grads(model, {**grads, first: grads[first].flatten()[:1]})


@pytest.mark.parametrize("kind", kinds())
def test_checkpoint_round_trip_restores_the_same_network(kind):
    model = build(kind, seed=0)
    x, y, drive, (state, _, _) = batch(model, kind)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    other = build(kind, seed=123)
    before = other.step(state, other.input_drive(x, torch.Generator().manual_seed(1)), 0.3, y)
    buf.seek(0)
    other.load_state_dict(torch.load(buf))
    after = other.step(state, other.input_drive(x, torch.Generator().manual_seed(1)), 0.3, y)
    want = model.step(state, drive, 0.3, y)
    assert any(not torch.equal(p, q) for p, q in zip(before, want))
    for p, q in zip(after, want):
        assert torch.equal(p, q)
    assert other.metrics().keys() == model.metrics().keys()


def test_public_api_and_epoch_hooks_reach_the_model(monkeypatch):
    """``eqsearch`` re-exports its API lazily, and fit() calls the model's per-epoch hooks."""
    import subprocess
    import sys

    import eqsearch
    from eqsearch.models.mlp import MLP

    code = "import sys, eqsearch; eqsearch.from_dict; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"  # configs load without torch
    calls = []
    monkeypatch.setattr(MLP, "on_epoch_end", lambda self: calls.append("end"))
    monkeypatch.setattr(MLP, "metrics", lambda self: {"lca_probe": 1.5})
    cfg = eqsearch.from_dict(overrides={"data.max_batches": 2, "train.epochs": 2})
    history = list(eqsearch.fit(cfg))
    assert calls == ["end", "end"] and all(m["lca_probe"] == 1.5 for m in history)


@dataclass
class Inner:
    lam: float = setting(0.1, low=0.0, help="threshold")


@dataclass
class Outer:
    kind: str = setting("x", choices=("x",))
    lca: Inner = setting(Inner())


def test_nested_config_sections_build_flatten_and_take_dotted_overrides():
    from eqsearch.errors import ConfigError
    from eqsearch.fields import build_section, flatten, set_dotted

    tree: dict = {"kind": "x"}
    set_dotted(tree, "lca.lam", 0.5)
    section = build_section(Outer, tree, "model")
    assert section.lca.lam == 0.5 and flatten(section, "model") == {"model.kind": "x", "model.lca.lam": 0.5}
    with pytest.raises(ConfigError, match=r"model\.lca\.lam: got -1\.0; allowed: a number >= 0\.0"):
        build_section(Outer, {"lca": {"lam": -1}}, "model")
    with pytest.raises(ConfigError, match=r"model\.lca\.mu: unknown field; allowed: lam"):
        build_section(Outer, {"lca": {"mu": 1}}, "model")
