"""Convolutional EP (P_CNN, VF_CNN): closed form vs the autograd-of-Φ oracle, read-out,
same-update, dropout, GDU check, data augmentation and a short training run."""

from __future__ import annotations

import pytest
import torch

from eqsearch.config import ConfigError, from_dict
from eqsearch.data import Dataset, augment
from eqsearch.gdu import gdu_check
from eqsearch.losses import loss_per_sample
from eqsearch.models import CNN, VFCNN, build_model
from eqsearch.rules import EPRule, contrast, free_phase, relax
from eqsearch.training import Trainer
from tests.conftest import assert_grads_close, autograd_param_grads

SIZE = 11  # odd on purpose: floor in conv and pooling sizes, output_padding of the adjoint

# (pools, strides, paddings, fc, loss, softmax): every pooling kind, strides 1 / 2, paddings 0 / 1,
# with and without the read-out, with and without a hidden fc layer
ARCHS = {
    "max_pad10_mse": ("mm", [1, 1], [1, 0], [10], "mse", False),
    "avg_id_stride2_readout_fc": ("ai", [2, 1], [0, 1], [5, 10], "cel", True),
    "id_max_stride2_cel_linear": ("im", [1, 2], [1, 1], [10], "cel", False),
    "max_avg_stride2_readout": ("ma", [2, 2], [1, 1], [10], "cel", True),
}


def make(kind: str, arch: str, dropouts=None, same_update=False, act="tanh", seed=0) -> CNN:
    pools, strides, paddings, fc, loss, softmax = ARCHS[arch]
    torch.manual_seed(seed)
    args = ((3, SIZE, SIZE), [4, 5], [3, 3], strides, paddings, pools, fc)
    kw = dict(act=act, loss=loss, softmax=softmax, dropouts=dropouts)
    model = VFCNN(*args, same_update=same_update, **kw) if kind == "vf_cnn" else CNN(*args, **kw)
    return model.double()


def random_batch(model: CNN, b: int = 3, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 3, SIZE, SIZE, generator=g, dtype=torch.float64)
    state = [torch.rand((b,) + tuple(sh), generator=g, dtype=torch.float64) for sh in model.shapes]
    y = torch.randint(0, 10, (b,), generator=g)
    return x, state, y


def oracle_step(model: CNN, x, state, drive, beta, y):
    """σ(p·∂Φ/∂s) by autograd (VF: each layer's own φ, inputs from a detached copy)."""
    leaves = [s.clone().requires_grad_(True) for s in state]
    pre = [s.detach() for s in state] if model.vector_field else None
    phi = model.phi(x, leaves, beta, y, pre=pre, drive=drive).sum()
    grads = torch.autograd.grad(phi, leaves)
    keep = model.keep[1:] if (model.keep and model.training) else [1.0] * len(state)
    out = []
    for i, (g, p) in enumerate(zip(grads, keep)):
        g = p * g
        linear = i == len(state) - 1 and model.loss == "cel" and not model.softmax
        out.append(g if linear else model.act(g))
    return out


BETAS = {"free": 0.0, "nudged": 0.7, "per_sample": "tensor"}


def as_beta(name: str, b: int):
    if BETAS[name] == "tensor":
        return torch.tensor([[0.5], [-0.5], [1.0]], dtype=torch.float64)[:b]
    return BETAS[name]


@pytest.mark.parametrize("kind", ["cnn", "vf_cnn"])
@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("beta", list(BETAS))
def test_step_matches_autograd(kind, arch, beta):
    model = make(kind, arch)
    x, state, y = random_batch(model)
    beta = as_beta(beta, 3)
    drive = model.input_drive(x)
    with torch.no_grad():
        fast = model.step(state, drive, beta, y)
    for f, o in zip(fast, oracle_step(model, x, state, drive, beta, y)):
        torch.testing.assert_close(f, o, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", ["cnn", "vf_cnn"])
@pytest.mark.parametrize("arch", list(ARCHS))
def test_dphi_dtheta_matches_autograd(kind, arch):
    model = make(kind, arch)
    x, state, y = random_batch(model)
    _, pre, _ = random_batch(model, seed=2)
    pre = pre if model.vector_field else None
    for beta in (0.0, -0.3):
        fast = model.dphi_dtheta(x, state, beta, y, pre=pre)  # β = 0: the read-out does not enter Φ
        oracle = autograd_param_grads(model, model.phi(x, state, beta, y, pre=pre).mean())
        assert_grads_close(fast, oracle, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["cnn", "vf_cnn"])
def test_dropout_step_and_update_match_autograd(kind):
    model = make(kind, "avg_id_stride2_readout_fc", dropouts=[0.8, 0.6, 0.7, 1.0])
    model.train()
    x, state, y = random_batch(model)
    drive = model.input_drive(x, torch.Generator().manual_seed(3))
    masks = model._unpack(drive)[2]
    assert masks is not None and any((m == 0).any() for m in masks)
    with torch.no_grad():
        fast = model.step(state, drive, 0.4, y)
    for f, o in zip(fast, oracle_step(model, x, state, drive, 0.4, y)):
        torch.testing.assert_close(f, o, rtol=1e-10, atol=1e-10)
    fast = model.dphi_dtheta(x, state, 0.4, y, drive=drive)
    oracle = autograd_param_grads(model, model.phi(x, state, 0.4, y, drive=drive).mean())
    assert_grads_close(fast, oracle, rtol=1e-10, atol=1e-12)
    model.eval()
    assert len(model.input_drive(x)) == 1  # no masks in evaluation


def test_dropout_masks_fixed_for_the_batch_and_seeded():
    model = make("cnn", "max_avg_stride2_readout", dropouts=[0.5, 0.5, 1.0]).train()
    x, _, _ = random_batch(model)
    d1 = model.input_drive(x, torch.Generator().manual_seed(5))
    d2 = model.input_drive(x, torch.Generator().manual_seed(5))
    for a, b in zip(d1, d2):
        assert torch.equal(a, b)
    mask_x = model._unpack(d1)[2][0]
    assert set(mask_x.unique().tolist()) <= {0.0, 2.0}


@pytest.mark.parametrize("kind", ["cnn", "vf_cnn"])
@pytest.mark.parametrize("symmetric", [False, True])
def test_readout_gets_true_cross_entropy_gradient(kind, symmetric):
    model = make(kind, "max_avg_stride2_readout")
    x, free, y = random_batch(model)
    _, plus, _ = random_batch(model, seed=4)
    _, minus, _ = random_batch(model, seed=5)
    pre = free if model.vector_field else None
    if symmetric:
        grads = contrast(model, x, y, plus, 0.5, minus, -0.5, pre=pre)
        states = [plus, minus]
    else:
        grads = contrast(model, x, y, free, 0.0, plus, 0.5, pre=pre)
        states = [plus]
    readout = list(model.W[-1].parameters())
    true = [torch.zeros_like(p) for p in readout]
    for s in states:
        ce = loss_per_sample("cel", model.logits(s), y).mean()
        for t, g in zip(true, torch.autograd.grad(ce, readout)):
            t += g / len(states)
    out = len(model.W) - 1
    torch.testing.assert_close(grads[f"W.{out}.weight"], true[0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grads[f"W.{out}.bias"], true[1], rtol=1e-10, atol=1e-12)


def synthetic(n: int, shape=(3, 32, 32), classes: int = 10, seed: int = 0) -> Dataset:
    """Images whose class sets the mean of one colour channel and a bright quadrant."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    x = 0.3 * torch.randn((n,) + shape, generator=g)
    x[torch.arange(n), y % shape[0]] += 0.5
    h = shape[1] // 2
    for q in range(4):
        sel = (y // shape[0]) % 4 == q
        x[sel, :, (q // 2) * h:(q // 2 + 1) * h, (q % 2) * h:(q % 2 + 1) * h] += 0.4
    return Dataset("synthetic", x[: n * 3 // 4], y[: n * 3 // 4], x[n * 3 // 4:], y[n * 3 // 4:], classes)


def cnn_config(**over) -> dict:
    base = {"data": {"dataset": "cifar10", "batch_size": 16},
            "model": {"kind": "cnn", "channels": [4, 8], "kernels": [3, 3], "strides": [1, 1],
                      "paddings": [1, 1], "pools": "mm", "fc": [10], "act": "my_hard_sig",
                      "loss": "cel", "softmax": True},
            "rule": {"estimator": "symmetric", "beta": 0.5, "T1": 15, "T2": 5},
            "optim": {"lrs": [0.1, 0.08, 0.05], "momentum": 0.9},
            "train": {"epochs": 3, "seed": 0}}
    for key, value in over.items():
        section, name = key.split(".")
        base[section][name] = value
    return base


def test_short_training_lowers_the_loss():
    data = synthetic(320)
    trainer = Trainer(from_dict(cnn_config(**{"data.augment": True})), data=data)
    before = trainer.evaluate("train")["train_loss"]
    for _ in range(3):
        trainer.train_epoch()
    after = trainer.evaluate("train")["train_loss"]
    assert after < 0.9 * before


def test_same_update_keeps_w_minus_b_constant():
    cfg = from_dict(cnn_config(**{"model.kind": "vf_cnn", "model.same_update": True,
                                  "data.max_batches": 3, "train.epochs": 1}))
    trainer = Trainer(cfg, data=synthetic(64))
    m = trainer.model
    before = [(m.W[k + 1].weight - b.weight).detach().clone() for k, b in enumerate(m.B)]
    w_before = m.W[1].weight.detach().clone()
    trainer.train_epoch()
    assert not torch.equal(m.W[1].weight, w_before)
    for k, b in enumerate(m.B):
        torch.testing.assert_close(m.W[k + 1].weight - b.weight, before[k], rtol=0, atol=1e-6)
    assert set(m.angles()) == {"angle_B1"}


def test_bptt_keeps_true_gradients_under_same_update():
    """Same-update averages EP's W/B updates only; BPTT's gradients are left as they are."""
    from eqsearch.config import RuleConfig
    from eqsearch.rules import BPTTRule

    m = make("vf_cnn", "max_pad10_mse", same_update=True)
    x, _, y = random_batch(m)
    BPTTRule(RuleConfig(alg="bptt", T1=6, T2=3)).estimate(m, x, y, torch.Generator())
    assert not torch.allclose(m.W[1].weight.grad, m.B[0].weight.grad)


def test_vf_without_same_update_moves_w_and_b_differently():
    cfg = from_dict(cnn_config(**{"model.kind": "vf_cnn", "data.max_batches": 2, "train.epochs": 1}))
    trainer = Trainer(cfg, data=synthetic(64))
    m = trainer.model
    diff = (m.W[1].weight - m.B[0].weight).detach().clone()
    trainer.train_epoch()
    assert not torch.allclose(m.W[1].weight - m.B[0].weight, diff)


@pytest.mark.parametrize("kind", ["cnn", "vf_cnn"])
def test_gdu_check_runs_and_matches_bptt_for_a_smooth_cnn(kind):
    torch.manual_seed(0)
    model = VFCNN if kind == "vf_cnn" else CNN
    net = model((1, 8, 8), [3, 4], [3, 3], [1, 1], [1, 1], "aa", [10], act="mysig", loss="mse",
                scale=0.5).double()
    if kind == "vf_cnn":  # EP matches BPTT only for (nearly) symmetric feedback
        with torch.no_grad():
            for k, b in enumerate(net.B):
                b.weight.copy_(net.W[k + 1].weight)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 8, 8, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (4,), generator=g)
    rows, _ = gdu_check(net, x, y, T1=40, T2=6, beta=1e-4, symmetric=True)
    weights = [r for r in rows if r["estimator"] == "symmetric" and r["key"].endswith("weight")]
    assert weights and max(r["angle"] for r in weights) < 1.0
    assert max(r["rel_error"] for r in weights) < 0.05


def test_gdu_check_with_max_pool_and_readout_matches_bptt_including_the_readout():
    """The read-out's direct term is kept: its BPTT series sums to the truncated-BPTT gradient
    and EP's (symmetric, β → 0) matches it like every other synapse."""
    net = make("cnn", "max_avg_stride2_readout", act="mysig")
    x, _, y = random_batch(net)
    T1, T2 = 60, 4
    rows, series = gdu_check(net, x, y, T1=T1, T2=T2, beta=1e-4, symmetric=True)
    synapses = [r for r in rows if r["estimator"] == "symmetric" and r["kind"] == "synapses"]
    assert {r["key"] for r in synapses} == {n for n, _ in net.named_parameters()}
    for r in synapses:
        assert r["rel_error"] < 1e-6 and r["angle"] < 1e-3, r
    drive, state, _, _ = free_phase(net, x, T1 - T2)
    end, _ = relax(net, net.input_drive(x), [s.detach() for s in state], T2)
    readout = net.W[-1].weight
    (true,) = torch.autograd.grad(loss_per_sample("cel", net.logits(end), y).mean(), [readout])
    out = f"W.{len(net.W) - 1}.weight"
    torch.testing.assert_close(series["bptt"][out].sum(0), true, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["cnn", "vf_cnn"])
def test_symmetric_phases_as_one_2b_batch_equal_two_separate_phases(kind):
    """The ±β phases of the symmetric estimator run as one batch of 2B (per-sample β) on CNNs
    too: the rule's update equals the contrast of two separately relaxed nudged phases."""
    from eqsearch.config import RuleConfig

    model = make(kind, "max_pad10_mse")
    x, _, y = random_batch(model)
    EPRule(RuleConfig(estimator="symmetric", beta=0.5, T1=6, T2=4)).estimate(model, x, y, torch.Generator())
    batched = {n: p.grad.clone() for n, p in model.named_parameters()}
    drive, free, _, _ = free_phase(model, x, 6)
    plus, _ = relax(model, drive, free, 4, 0.5, y)
    minus, _ = relax(model, drive, free, 4, -0.5, y)
    assert not torch.allclose(plus[-1], minus[-1])  # the phases really are nudged apart
    pre = free if model.vector_field else None
    assert_grads_close(batched, contrast(model, x, y, plus, 0.5, minus, -0.5, pre=pre), rtol=1e-9, atol=1e-11)


def test_augment_flips_and_crops_with_edge_padding():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).view(2, 3, 6, 6)
    out = augment(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    g = torch.Generator().manual_seed(0)
    flip = torch.rand(2, generator=g) < 0.5
    dy, dx = torch.randint(0, 9, (2, 2), generator=g)
    for i in range(2):
        src = x[i].flip(2) if flip[i] else x[i]
        padded = torch.nn.functional.pad(src[None], (4,) * 4, mode="replicate")[0]
        torch.testing.assert_close(out[i], padded[:, dy[i]:dy[i] + 6, dx[i]:dx[i] + 6])


@pytest.mark.parametrize("over, field", [
    ({"model.kernels": [3]}, "model.kernels"),
    ({"model.pools": "mx"}, "model.pools"),
    ({"model.pools": "m"}, "model.pools"),
    ({"model.loss": "mse"}, "model.softmax"),
    ({"model.same_update": True}, "model.same_update"),
    ({"model.dropouts": [1.0, 1.0]}, "model.dropouts"),
    ({"model.dropouts": [1.0, 1.0, 0.5]}, "model.dropouts"),
])
def test_config_errors_name_the_field(over, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        from_dict(cnn_config(**over))


def test_spatial_size_and_class_count_errors():
    cfg = from_dict(cnn_config(**{"model.kernels": [5, 5], "model.paddings": [0, 0]}))
    with pytest.raises(ConfigError, match="spatial size"):
        build_model(cfg.model, (3, 8, 8), 10)
    with pytest.raises(ConfigError, match="model.fc"):
        build_model(cfg.model, (3, 32, 32), 5)


@pytest.mark.parametrize("kind", ["cnn", "vf_cnn"])
def test_channels_last_gives_the_same_dynamics_and_update(kind):
    model = make(kind, "max_avg_stride2_readout")
    x, state, y = random_batch(model)
    drive = model.input_drive(x)
    ref_step = model.step(state, drive, 0.3, y)
    ref_grads = model.dphi_dtheta(x, state, 0.3, y)
    model.to(memory_format=torch.channels_last)
    drive = model.input_drive(x)
    assert drive[0].is_contiguous(memory_format=torch.channels_last)
    assert model.init_state(drive)[0].is_contiguous(memory_format=torch.channels_last)
    for a, b in zip(ref_step, model.step(state, drive, 0.3, y)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert_grads_close(model.dphi_dtheta(x, state, 0.3, y), ref_grads, rtol=1e-10, atol=1e-12)
