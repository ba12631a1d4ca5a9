"""The LCA-CNN (reference §5.4–5.6): one code per minibatch for every rule, the code cache of
the pretrained mode (LCA runs counted, cached codes against fresh ones, invalidation, the memory
cap), the three dictionary modes, the nudged code of the fine-tuning step, config errors, the
hold-out split, metrics, checkpoints, resuming without the dictionary file and a short training
run that lowers the loss. (Φ, step and update against autograd: the contract test.)"""

from __future__ import annotations

import copy

import pytest
import torch

from eqsearch.config import DataConfig, from_dict
from eqsearch.data import Dataset, holdout_split, load_dataset, load_holdout
from eqsearch.errors import ConfigError
from eqsearch.losses import as_target
from eqsearch.models import build_model
from eqsearch.models.lca import LCA, load_dictionary, save_dictionary
from eqsearch.models.lca_cnn import LCACNN
from eqsearch.optim import build_optimizer
from eqsearch.rules import build_rule
from eqsearch.training import LATEST, Trainer, fit, prepare_run

SHAPE = (3, 12, 12)
MODEL = {"model.kind": "lca_cnn", "model.channels": [5], "model.kernels": [3], "model.strides": [1],
         "model.paddings": [1], "model.pools": "m", "model.fc": [4], "model.act": "my_hard_sig",
         "model.lca.features": 6, "model.lca.ksize": 5, "model.lca.stride": 2, "model.lca.iters": 12,
         "model.lca.tau": 5.0, "model.lca.lam": 0.3, "model.lca.eta": 0.1}
TINY = {**MODEL, "data.batch_size": 4, "data.test_batch_size": 8, "rule.T1": 4, "rule.T2": 2, "rule.beta": 0.5,
        "optim.lrs": [0.05, 0.05], "train.epochs": 1, "train.channels_last": False}


def tiny_data(n_train: int = 12, n_test: int = 8) -> Dataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn((n_train + n_test,) + SHAPE, generator=g)
    y = torch.randint(0, 4, (n_train + n_test,), generator=g)
    return Dataset("tiny", x[:n_train], y[:n_train], x[n_train:], y[n_train:], 4)


def dictionary_file(tmp_path, seed: int = 7):
    torch.manual_seed(seed)
    lca = LCA(SHAPE, 6, 5, 2, 0.3, 5.0, 12, 0.1)
    path = tmp_path / "dictionary.pt"
    save_dictionary(path, lca, {"dataset": "tiny"})
    return path, lca.dictionary.clone()


def count_codes(monkeypatch) -> list[int]:
    """The batch size of every LCA run (LCA.encode) from now on."""
    calls = []
    encode = LCA.encode
    monkeypatch.setattr(LCA, "encode", lambda self, s: calls.append(s.shape[0]) or encode(self, s))
    return calls


@pytest.mark.parametrize("alg, estimator", [("ep", "one_sided"), ("ep", "random_sign"), ("ep", "symmetric"),
                                            ("cep", "one_sided"), ("cep", "symmetric"), ("bptt", "symmetric")])
def test_the_code_is_computed_once_per_minibatch_for_every_rule(tmp_path, monkeypatch, alg, estimator):
    path, _ = dictionary_file(tmp_path)  # BPTT trains with a fixed dictionary
    mode = {"model.dict_training": "pretrained", "model.dictionary": str(path)} if alg == "bptt" else {}
    cfg = from_dict(overrides={**TINY, **mode, "rule.alg": alg, "rule.estimator": estimator})
    model = build_model(cfg.model, SHAPE, 4)
    optimizer, _ = build_optimizer(cfg.optim, model)
    rule = build_rule(cfg.rule)
    calls = count_codes(monkeypatch)
    data = tiny_data()
    gen = torch.Generator().manual_seed(0)
    for k in range(3):
        x, y = data.x_train[4 * k:4 * k + 4], data.y_train[4 * k:4 * k + 4]
        rule.train_batch(model, x, y, optimizer, gen)
        model.on_batch_end()
    assert calls == [4, 4, 4]


def test_pretrained_codes_each_image_once_per_run_and_reads_back_the_same_codes(tmp_path, monkeypatch):
    path, _ = dictionary_file(tmp_path)
    cfg = from_dict(overrides={**TINY, "model.dict_training": "pretrained", "model.dictionary": str(path)})
    trainer = Trainer(cfg, data=tiny_data())  # 3 training batches of 4, 1 test batch of 8
    model: LCACNN = trainer.model
    calls = count_codes(monkeypatch)
    first = trainer.run_epoch()
    assert calls == [4, 4, 4, 8] and len(model.cache.codes) == 20 and model.cache.size == 20 * 6 * 6 * 6 * 4
    calls.clear()
    second = trainer.run_epoch()  # another order of the training images, the same test images
    assert calls == []
    assert second["test_lca_sparsity"] == pytest.approx(first["test_lca_sparsity"], rel=1e-6)
    assert second["lca_recon_error"] == pytest.approx(first["lca_recon_error"], rel=1e-6)
    # images of a new batch, in a new order, some of them twice: read back, equal to fresh codes
    x = trainer.data.x_train[[5, 0, 9, 5, 2]].clone()
    a = model.code(x)[1]
    assert calls == []
    torch.testing.assert_close(a, model.lca(x)[1], rtol=1e-5, atol=1e-6)
    # a batch with one image never seen: the LCA runs on that image alone
    y = torch.cat([trainer.data.x_train[:2], torch.randn((1,) + SHAPE)])
    calls.clear()
    torch.testing.assert_close(model.code(y)[1], model.lca(y)[1], rtol=1e-5, atol=1e-6)
    assert calls == [1, 3] and len(model.cache.codes) == 21  # (then the fresh oracle, 3)
    assert copy.deepcopy(model).cache.codes == {}  # a copy (GDU check) starts empty
    # a new dictionary (here: a checkpoint's) empties the cache; the codes follow it
    other = Trainer(cfg.replace({"model.dict_training": "learn"}), data=trainer.data).model
    model.load_state_dict(other.state_dict())
    calls.clear()
    b = model.code(x.clone())[1]
    assert calls[0] == 5 and len(model.cache.codes) == 4  # 4 distinct images
    torch.testing.assert_close(b, model.lca(x)[1], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(a, b)


def test_the_code_cache_keeps_no_more_than_its_cap(tmp_path, monkeypatch):
    path, _ = dictionary_file(tmp_path)
    entry = 6 * 6 * 6 * 4  # one float32 code (F, H_c, W_c)
    cfg = from_dict(overrides={**TINY, "model.dict_training": "pretrained", "model.dictionary": str(path),
                               "model.code_cache_mb": 5 * entry / 2 ** 20})
    trainer = Trainer(cfg, data=tiny_data())
    calls = count_codes(monkeypatch)
    trainer.run_epoch()
    assert sum(calls) == 20 and trainer.model.cache.size == 5 * entry  # the first 5 training images
    calls.clear()
    trainer.run_epoch()
    assert sum(calls) == 12 - 5 + 8
    none = Trainer(cfg.replace({"model.code_cache_mb": 0}), data=tiny_data())
    assert none.model.cache is None


@pytest.mark.parametrize("update", ["epoch", "batch"])
def test_finetune_and_learn_code_again_after_every_dictionary_change(tmp_path, monkeypatch, update):
    path, _ = dictionary_file(tmp_path)
    for mode in ("finetune", "learn"):
        cfg = from_dict(overrides={**TINY, "model.dict_training": mode, "model.dictionary": str(path),
                                   "model.dict_update": update})
        trainer = Trainer(cfg, data=tiny_data())
        assert trainer.model.cache is None  # no image is coded twice with one dictionary
        x = trainer.data.x_test
        before = trainer.model.code(x)[1]
        calls = count_codes(monkeypatch)
        trainer.run_epoch()
        assert calls == [4, 4, 4, 8]
        after = trainer.model.code(x.clone())[1]  # the test images under the updated dictionary
        assert not torch.allclose(before, after)
        torch.testing.assert_close(after, trainer.model.lca(x)[1])
        calls.clear()
        trainer.run_epoch()
        assert calls == [4, 4, 4, 8]


@pytest.mark.parametrize("mode", ["pretrained", "finetune"])
def test_a_resumed_or_restored_run_takes_its_dictionary_from_the_checkpoint(tmp_path, mode):
    path, _ = dictionary_file(tmp_path)
    cfg = from_dict(overrides={**TINY, "model.dict_training": mode, "model.dictionary": str(path)})
    run = tmp_path / "run"
    list(fit(cfg, run, data=tiny_data()))
    saved = torch.load(run / LATEST, weights_only=False)["model"]["lca.dictionary"]
    longer = cfg.replace({"train.epochs": 2})
    path.unlink()  # the dictionary file moved away
    resumed = prepare_run(longer, run, resume=True, data=tiny_data())  # eqsearch train --resume RUN
    assert resumed.epoch == 1 and torch.equal(resumed.model.lca.dictionary, saved)
    assert [m["epoch"] for m in fit(longer, run, trainer=resumed)] == [2]
    dictionary_file(tmp_path, seed=8)  # another dictionary of the same shape where the old one was
    trial = prepare_run(longer, tmp_path / "trial", restore_from=run / LATEST, data=tiny_data())  # Tune's restore
    assert torch.equal(trial.model.lca.dictionary, torch.load(run / LATEST, weights_only=False)["model"]["lca.dictionary"])
    path.unlink()
    with pytest.raises(ConfigError, match=r"model\.dictionary: got .*dictionary\.pt', which is not a file"):
        prepare_run(cfg, tmp_path / "fresh", data=tiny_data())  # a fresh run still needs the file


@pytest.mark.parametrize("update", ["epoch", "batch"])
def test_pretrained_keeps_the_dictionary_finetune_and_learn_change_it(tmp_path, monkeypatch, update):
    path, stored = dictionary_file(tmp_path)
    steps = []
    step = LCA.update_dictionary
    monkeypatch.setattr(LCA, "update_dictionary", lambda self, s, a: steps.append(1) or step(self, s, a))
    changes = {}
    for mode in ("pretrained", "finetune", "learn"):
        overrides = {**TINY, "model.dict_training": mode, "model.dict_update": update, "model.dictionary": str(path)}
        trainer = Trainer(from_dict(overrides=overrides), data=tiny_data())
        start = trainer.model.lca.dictionary.clone()
        # loaded (and already unit-norm); learn starts from random whatever the path
        assert torch.allclose(start, stored) == (mode != "learn")
        steps.clear()
        metrics = trainer.run_epoch()
        end = trainer.model.lca.dictionary
        changes[mode] = metrics["lca_dict_change"]
        if mode == "pretrained":
            assert torch.equal(start, end) and steps == [] and metrics["lca_dict_change"] == 0.0
        else:
            assert not torch.allclose(start, end)
            # two steps (the code, the nudged code) after each batch or after the epoch's last one
            assert len(steps) == 2 * (trainer.batches_per_epoch if update == "batch" else 1)
            torch.testing.assert_close(end.flatten(1).norm(dim=1), torch.ones(6))
    assert changes["finetune"] > 0 and changes["learn"] > 0


def test_the_fine_tuning_code_uses_the_plus_beta_state_and_scales_the_feedback():
    cfg = from_dict(overrides={**TINY, "model.scale_feedback": 0.3}).model
    torch.manual_seed(0)
    model: LCACNN = build_model(cfg, SHAPE, 4).double()
    data = tiny_data()
    x, y = data.x_train[:4].double(), data.y_train[:4]
    build_rule(from_dict(overrides={**TINY, "rule.estimator": "symmetric"}).rule).estimate(
        model, x, y, torch.Generator().manual_seed(0))
    x_seen, a, state, beta = model._nudged
    assert x_seen is x and beta == 0.5  # the +β phase, not the −β one
    # the feedback into the copy layer is ∂Φ_net/∂s_1 (autograd oracle)
    leaf = state[0].clone().requires_grad_(True)
    target = as_target(y, 4, torch.float64)
    feedback = torch.autograd.grad(model.net.phi(leaf, state[1:], 0.0, target).sum(), leaf)[0]
    want = model.lca.transfer(model.net.act(a + 0.3 * feedback))
    torch.testing.assert_close(model.nudged_code(a, state), want, rtol=1e-12, atol=1e-12)
    model.scale_feedback = 0.0
    torch.testing.assert_close(model.nudged_code(a, state), model.lca.transfer(model.net.act(a)))
    one_sided = build_rule(from_dict(overrides={**TINY, "rule.estimator": "one_sided"}).rule)
    one_sided.estimate(model, x[:3], y[:3], torch.Generator().manual_seed(0))
    assert model._nudged[3] == 0.5 and model._nudged[0].shape[0] == 3  # replaced by the new batch's


@pytest.mark.parametrize("overrides, message", [
    ({"model.dict_training": "pretrained"}, r"model\.dictionary: got null with model\.dict_training='pretrained'"),
    ({"rule.alg": "bptt", "rule.T2": 2},
     r"model\.dict_training: got 'learn' with rule\.alg='bptt'; allowed: pretrained"),
    ({"model.lca.tau": 0.5}, r"model\.lca\.tau: got 0\.5; allowed: a number >= 1\.0"),
    ({"model.lca.threshold": "medium"}, r"model\.lca\.threshold: got 'medium'; allowed: one of soft, hard"),
    ({"model.dict_update": "step"}, r"model\.dict_update: got 'step'; allowed: one of epoch, batch"),
    ({"model.pools": "mm"}, r"model\.pools: got 'mm' \(2 entries\); allowed: exactly 1"),
    ({"optim.lrs": [0.1, 0.1, 0.1]}, r"optim\.lrs: got .* allowed: exactly 2 values"),
    ({"data.holdout": 0.95}, r"data\.holdout: got 0\.95; allowed: a number >= 0\.0 and <= 0\.9"),
])
def test_bad_lca_cnn_configs_name_field_value_and_allowed(overrides, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(overrides={**TINY, **overrides})


def test_a_relative_dictionary_path_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = from_dict(overrides={**TINY, "model.dict_training": "pretrained", "model.dictionary": "dict/dictionary.pt"})
    assert cfg.model.dictionary == str(tmp_path.resolve() / "dict" / "dictionary.pt")


def test_dictionary_files_that_do_not_fit_are_rejected_when_the_model_is_built(tmp_path):
    path, _ = dictionary_file(tmp_path)
    cfg = from_dict(overrides={**TINY, "model.dict_training": "finetune", "model.dictionary": str(path),
                               "model.lca.features": 7})
    with pytest.raises(ConfigError, match=r"model\.dictionary: .* holds 6 atoms of 3×5×5; allowed: a dictionary of "
                                          r"model\.lca\.features=7"):
        build_model(cfg.model, SHAPE, 4)
    cfg = cfg.replace({"model.lca.features": 6, "model.dictionary": str(tmp_path / "none.pt")})
    with pytest.raises(ConfigError, match=r"model\.dictionary: got .*none\.pt', which is not a file"):
        build_model(cfg.model, SHAPE, 4)
    d, settings = load_dictionary(tmp_path)  # a folder holding dictionary.pt
    assert d.shape == (6, 3, 5, 5) and settings == {"dataset": "tiny"}


def test_holdout_split_is_seeded_disjoint_and_removed_from_training():
    kept, held = holdout_split(10, 0.3, seed=4)
    assert len(held) == 3 and sorted(kept.tolist() + held.tolist()) == list(range(10))
    assert torch.equal(holdout_split(10, 0.3, seed=4)[1], held)
    assert not torch.equal(holdout_split(10, 0.3, seed=5)[1], held)
    cfg = DataConfig(dataset="digits", holdout=0.5, holdout_seed=3)
    train, (x_held, _) = load_dataset(cfg), load_holdout(cfg)
    whole = load_dataset(DataConfig(dataset="digits"))
    assert train.x_train.shape[0] + x_held.shape[0] == whole.x_train.shape[0]
    rows = {tuple(r.tolist()) for r in train.x_train.flatten(1)}
    assert not any(tuple(r.tolist()) in rows for r in x_held.flatten(1)[:50] if r.any())
    assert torch.equal(train.x_test, whole.x_test)
    assert torch.equal(load_holdout(DataConfig(dataset="digits"))[0], whole.x_train)


def test_metrics_checkpoint_and_a_short_run_on_synthetic_images_lowers_the_loss():
    overrides = {**MODEL, "data.dataset": "synthetic_cifar", "data.batch_size": 32, "data.test_batch_size": 200,
                 "data.max_batches": 8, "model.fc": [10], "model.channels": [12], "model.lca.features": 8,
                 "model.lca.iters": 20, "model.lca.tau": 10.0, "model.lca.lam": 0.5, "model.dict_update": "batch",
                 "rule.T1": 12, "rule.T2": 4, "rule.beta": 0.5, "optim.lrs": [0.1, 0.05], "optim.momentum": 0.9,
                 "train.epochs": 3}
    trainer = Trainer(from_dict(overrides=overrides))
    assert trainer.data.x_train.shape[1:] == (3, 32, 32)
    before = trainer.evaluate()
    history = [trainer.run_epoch() for _ in range(3)]
    assert history[-1]["test_loss"] < 0.8 * before["test_loss"]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    for m in history:
        assert 0 < m["lca_sparsity"] < 1 and 0 < m["test_lca_sparsity"] < 1
        assert 0 < m["lca_recon_error"] < 1.5 and m["lca_objective"] > 0 and m["lca_dict_change"] > 0
    state = trainer.state_dict()["model"]
    assert torch.equal(state["lca.dictionary"], trainer.model.lca.dictionary)
    other = Trainer(from_dict(overrides={**overrides, "train.seed": 1}), data=trainer.data)
    assert not torch.equal(other.model.lca.dictionary, trainer.model.lca.dictionary)
    other.load_state_dict(trainer.state_dict())
    assert torch.equal(other.model.lca.dictionary, trainer.model.lca.dictionary)
    assert other.evaluate()["test_loss"] == pytest.approx(trainer.evaluate()["test_loss"], rel=1e-6)


def test_gdu_ep_updates_match_bptt_through_the_copy_layer():
    """The symmetric EP updates of the LCA-CNN follow truncated BPTT (GDU check), with the conv
    layer fed by the copy layer and the softmax read-out."""
    from eqsearch.gdu import gdu_check

    overrides = {**TINY, "model.act": "my_hard_sig", "model.lca.lam": 0.1, "model.fc": [10]}
    torch.manual_seed(0)
    model = build_model(from_dict(overrides=overrides).model, SHAPE, 10).double()
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn((5,) + SHAPE, generator=g, dtype=torch.float64), torch.randint(0, 10, (5,), generator=g)
    rows, _ = gdu_check(model, x, y, T1=150, T2=5, beta=0.01, symmetric=True)
    synapses = [r for r in rows if r["estimator"] == "symmetric" and r["kind"] == "synapses"]
    assert {r["key"] for r in synapses} == {"net.W.0.weight", "net.W.0.bias", "net.W.1.weight", "net.W.1.bias"}
    assert max(r["angle"] for r in synapses) < 1.0, synapses
