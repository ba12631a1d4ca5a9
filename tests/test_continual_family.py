"""Code base B's networks as a family and the continual rule (C-EP / C-VF): code base B's flags,
η → 0 telescoping through the real optimizer, randbeta draws, code base A's --alg CEP."""

from __future__ import annotations

import copy
import csv

import pytest
import torch
from click.testing import CliRunner

from eqsearch.cli import main
from eqsearch.cli.run_flags import build_parser, cep_weight_decays, config_from_args
from eqsearch.config import ConfigError, RuleConfig, from_dict
from eqsearch.models.continual import ContinualMLP
from eqsearch.optim import build_optimizer
from eqsearch.rules import ContinualRule, EPRule
from eqsearch.rules.ep import draw_sign
from eqsearch.training import read_metrics


def args(text: str):
    return build_parser("eqsearch train", "").parse_args(text.split())


def test_output_first_lists_are_converted_at_the_cli():
    cfg = config_from_args(args("--size_tab 10 256 512 784 --lr_tab 0.01 0.02 0.03 --T 30 --Kmax 8 --beta 0.3 "
                                "--cep --learning-rule vf --angle 45 --discrete --batch-size 16"))
    assert cfg.model.archi == [784, 512, 256, 10]
    assert cfg.optim.lrs == [0.03, 0.02, 0.01]  # the input layer's lr is the last of --lr_tab
    assert (cfg.model.kind, cfg.model.angle, cfg.rule.alg, cfg.rule.T1, cfg.rule.T2, cfg.rule.beta,
            cfg.data.batch_size) == ("vf_disc", 45.0, "cep", 30, 8, 0.3, 16)
    opt, _ = build_optimizer(cfg.optim, ContinualMLP(cfg.model.archi, vector_field=True))
    assert [g["lr"] for g in opt.param_groups] == [0.03, 0.02, 0.01]
    assert opt.param_groups[0]["params"][0].shape == (512, 784)  # lr 0.03 on W_in
    cont = config_from_args(args("--size_tab 10 512 784 --dt 0.08 --no-clamp --activation-function tanh"))
    assert (cont.model.kind, cont.model.dt, cont.model.clamp, cont.model.activation) == ("ep_cont", 0.08, False, "tanh")
    rb = config_from_args(args("--size_tab 10 512 784 --randbeta 0.3"))
    assert (rb.rule.estimator, rb.rule.randbeta) == ("random_sign", 0.3)


@pytest.mark.parametrize("text, message", [
    ("--size_tab 10 512 784 --angle 30", r"model\.angle: got 30\.0 with model\.kind='ep_cont'"),
    ("--size_tab 10 784 --cep", r"model\.archi: got \[784, 10\]; allowed: input, at least one hidden layer"),
    ("--size_tab 10 512 784 --debug-cep --set rule.T2=0", r"rule\.T2: got 0"),
    ("--size_tab 10 512 784 --model MLP", r"flags of several code bases were mixed"),
    ("--size_tab 10 512 784 --randbeta 1.5", r"rule\.randbeta: got 1\.5"),
])
def test_bad_code_base_b_flags_name_the_field(text, message):
    with pytest.raises(ConfigError, match=message):
        config_from_args(args(text))


# the commands of code base B's README (reference §3.10), on digits-sized layers
PAPER = [
    "--lr_tab 0.04 0.08 --T 30 --Kmax 10 --beta 0.1",
    "--lr_tab 0.0028 0.0056 --T 40 --Kmax 15 --beta 0.2 --cep",
    "--lr_tab 0.0038 0.0076 --T 40 --Kmax 15 --beta 0.20 --cep --learning-rule vf --randbeta 0.5",
    "--lr_tab 0.0038 0.0076 --T 40 --Kmax 15 --beta 0.20 --cep --learning-rule vf --randbeta 0.5 --angle 112.5",
]


@pytest.mark.parametrize("extra", ["--discrete", "--dt 0.2", "--dt 0.08 --no-clamp --activation-function tanh"])
@pytest.mark.parametrize("command", PAPER)
def test_code_base_b_commands_run_a_few_batches(command, extra, tmp_path):
    argv = ["train", "--action", "train", "--size_tab", "10", "32", "64", *command.split(), *extra.split(),
            "--set", "data.dataset=digits", "--max-batches", "3", "--epochs", "1", "--out", str(tmp_path), "--quiet"]
    r = CliRunner().invoke(main, argv)
    assert r.exit_code == 0, r.output
    (m,) = read_metrics(tmp_path)
    assert 0.0 <= m["test_acc"] <= 1.0
    assert ("angle_B1" in m) == ("vf" in command)


def test_plotcurves_is_the_gdu_check(tmp_path):
    r = CliRunner().invoke(main, ["train", "--action", "plotcurves", "--size_tab", "10", "16", "64", "--discrete",
                                  "--activation-function", "tanh", "--beta", "0.01", "--T", "60", "--Kmax", "5",
                                  "--cep", "--lr_tab", "0.00002", "0.00002", "--learning-rule", "vf",
                                  "--set", "data.dataset=digits", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "gdu.png").stat().st_size > 5000
    rows = list(csv.DictReader((tmp_path / "gdu.csv").open()))
    assert {r["key"] for r in rows} == {"W.0.weight", "W.0.bias", "W.1.weight", "W.1.bias", "B.0.weight", "s1", "s2"}
    curves = list(csv.DictReader((tmp_path / "gdu_curves.csv").open()))
    assert {c["estimator"] for c in curves} == {"continual"} and {c["kind"] for c in curves} == {"neurons", "synapses"}
    assert {int(c["t"]) for c in curves} == set(range(5))  # Kmax nudged steps
    assert len({(c["key"], c["element"]) for c in curves}) == 5 * len(rows)  # 5 elements per layer


@pytest.mark.parametrize("kind", ["ep_disc", "ep_cont"])
def test_gdu_curves_of_continual_ep_tend_to_ep_and_neurons_count_per_unit_time(kind):
    """Continual EP's GDU series with η → 0 is EP's (tied: the per-step updates are the same);
    continuous-time neuron updates are (s_{t+1} − s_t)/(β·dt): they match −∂L/∂s, not dt times it."""
    from eqsearch.gdu import gdu_check

    model = ContinualMLP([6, 8, 4], activation="tanh", discrete=kind == "ep_disc", dt=None if kind == "ep_disc" else 0.1,
                         clamp=None if kind == "ep_disc" else False, generator=torch.Generator().manual_seed(0)).double()
    g = torch.Generator().manual_seed(5)
    x, y = torch.rand(3, 6, generator=g, dtype=torch.float64), torch.randint(0, 4, (3,), generator=g)
    T1, T2 = (300, 10) if kind == "ep_disc" else (1500, 40)
    rows, series = gdu_check(model, x, y, T1, T2, 1e-4)
    zero = {n: 0.0 for n, _ in model.named_parameters()}
    _, cont = gdu_check(model, x, y, T1, T2, 1e-4, continual_lrs=zero)
    for key, v in series["one_sided"].items():
        torch.testing.assert_close(cont["continual"][key], v)
    _, moved = gdu_check(model, x, y, T1, T2, 1e-4, continual_lrs={n: 0.5 for n in zero})
    assert not torch.allclose(moved["continual"]["W.1.weight"], series["one_sided"]["W.1.weight"])
    for r in rows:  # B's continuous-time output layer has no ρ': close to BPTT, not equal
        assert r["sign_error"] < 0.1, r
        if kind == "ep_cont" and r["kind"] == "neurons":
            assert r["rel_error"] < 0.5, r  # ≥ 1 − dt = 0.9 if the step were not divided by dt


def tiny(kind: str, seed: int = 0):
    torch.manual_seed(seed)
    return ContinualMLP([6, 5, 4], activation="sigm", discrete=kind.endswith("disc"),
                        vector_field=kind.startswith("vf")).double()


@pytest.mark.parametrize("kind", ["ep_disc", "ep_cont"])
def test_continual_ep_with_a_vanishing_step_equals_the_ep_update(kind):
    """Σ_t of the per-step updates, applied by SGD with lr → 0, telescopes to one-sided EP."""
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(5, 6, generator=g, dtype=torch.float64), torch.randint(0, 4, (5,), generator=g)
    rule = RuleConfig(alg="cep", estimator="one_sided", beta=0.3, T1=40, T2=12)
    model = tiny(kind)
    ref = copy.deepcopy(model)
    EPRule(rule).estimate(ref, x, y, torch.Generator())
    lr = 1e-7  # small enough that the weights barely drift, large enough to leave float64 rounding
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ContinualRule(rule).train_batch(model, x, y, opt, torch.Generator())
    for name, p in model.named_parameters():
        total = -(p.detach() - before[name]) / lr
        torch.testing.assert_close(total, dict(ref.named_parameters())[name].grad, rtol=1e-4, atol=1e-7)


class CountingSGD(torch.optim.SGD):
    """SGD through its own ``step`` (a subclass: the rule's plain-SGD shortcut does not apply)."""

    steps = 0

    def step(self, closure=None):
        CountingSGD.steps += 1
        return super().step(closure)


@pytest.mark.parametrize("kind", ["ep_disc", "ep_cont", "vf_disc", "vf_cont"])
@pytest.mark.parametrize("estimator", ["one_sided", "random_sign", "symmetric"])
def test_plain_sgd_shortcut_equals_the_optimizer_path(kind, estimator):
    """Per-step addmm_ updates and the tracked first-layer drive give the optimizer's weights, at a
    learning rate that moves them, over several batches and per-layer rates."""
    g = torch.Generator().manual_seed(4)
    batches = [(torch.rand(5, 6, generator=g, dtype=torch.float64), torch.randint(0, 4, (5,), generator=g))
               for _ in range(3)]
    rule = ContinualRule(RuleConfig(alg="cep", estimator=estimator, randbeta=0.5, beta=0.3, T1=20, T2=8))
    fast, slow = tiny(kind), tiny(kind)
    groups = lambda m: [{"params": ps, "lr": lr} for ps, lr in zip(m.synapse_groups(), (0.2, 0.07))]  # noqa: E731
    opt_fast, opt_slow = torch.optim.SGD(groups(fast)), CountingSGD(groups(slow))
    start = {n: p.detach().clone() for n, p in fast.named_parameters()}
    CountingSGD.steps = 0
    for x, y in batches:
        res = [rule.train_batch(m, x, y, o, torch.Generator().manual_seed(9))
               for m, o in ((fast, opt_fast), (slow, opt_slow))]
        torch.testing.assert_close(res[0].logits, res[1].logits, rtol=1e-10, atol=1e-12)
    assert CountingSGD.steps == 3 * 8 * (2 if estimator == "symmetric" else 1)
    for (n, p), q in zip(fast.named_parameters(), slow.parameters()):
        assert (q - start[n]).abs().max() > 1e-4, n  # the weights did move
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12)


def test_cvf_with_angle_zero_starts_as_cep():
    g = torch.Generator().manual_seed(2)
    x, y = torch.rand(5, 6, generator=g, dtype=torch.float64), torch.randint(0, 4, (5,), generator=g)
    rule = ContinualRule(RuleConfig(alg="cep", estimator="one_sided", beta=0.3, T1=30, T2=1))
    ep, vf = tiny("ep_disc"), tiny("vf_disc")
    vf.load_state_dict({**ep.state_dict(), **{f"B.{k}.weight": ep.W[k + 1].weight.t() for k in range(len(vf.B))}})
    res = [rule.train_batch(m, x, y, torch.optim.SGD(m.parameters(), lr=0.0), torch.Generator()) for m in (ep, vf)]
    torch.testing.assert_close(res[0].logits, res[1].logits)
    assert vf.angles()["angle_B1"] == pytest.approx(0.0, abs=1e-4)


def test_randbeta_draws_follow_their_probability():
    gen = torch.Generator().manual_seed(0)
    for p in (0.2, 0.5, 0.9):
        cfg = RuleConfig(estimator="random_sign", randbeta=p)
        signs = [draw_sign(cfg, gen) for _ in range(4000)]
        assert abs(signs.count(1.0) / len(signs) - p) < 0.03
    assert {draw_sign(RuleConfig(estimator="one_sided"), gen) for _ in range(50)} == {1.0}


def test_code_base_a_alg_cep_trains_the_mlp_and_rescales_weight_decay(tmp_path):
    r = CliRunner().invoke(main, ["train", "--model", "MLP", "--task", "digits", "--archi", "64", "32", "10",
                                  "--alg", "CEP", "--betas", "0.0", "0.2", "--T1", "20", "--T2", "8", "--mbs", "16",
                                  "--lrs", "0.02", "0.01", "--epochs", "2", "--thirdphase", "--out", str(tmp_path),
                                  "--quiet"])
    assert r.exit_code == 0, r.output
    ms = read_metrics(tmp_path)
    assert ms[-1]["train_loss"] < ms[0]["train_loss"] or ms[-1]["test_acc"] > 0.3
    cfg = config_from_args(args("--model MLP --alg CEP --T2 10 --lrs 0.1 0.05 --wds 0.01 0.02"))
    assert cfg.rule.alg == "cep"
    assert cfg.optim.wds == pytest.approx(cep_weight_decays([0.01, 0.02], [0.1, 0.05], 10))
    lr, wd = 0.1, 0.01
    assert (1 - lr * cfg.optim.wds[0]) ** 10 == pytest.approx(1 - 0.1 * wd)  # T2 decays compound to 1 − 0.1·wd


def test_cep_run_config_trains_through_fit():
    from eqsearch.training import fit

    cfg = from_dict(overrides={"model.kind": "vf_disc", "model.archi": [64, 64, 10], "model.angle": 0.0,
                               "rule.alg": "cep", "rule.estimator": "one_sided", "rule.beta": 0.2, "rule.T1": 30,
                               "rule.T2": 10, "optim.lrs": [0.01, 0.005], "data.batch_size": 16, "train.epochs": 3})
    history = list(fit(cfg))
    accs = [m["test_acc"] for m in history]
    assert accs[-1] > 0.4 and accs[-1] > accs[0], accs  # 10 % is chance
    assert history[-1]["angle_B1"] > 0.0  # the backward weights learn their own way


def test_debug_cep_gives_the_standard_ep_step():
    """B's --debug-cep / A's --cep-debug: tiny continual steps, then one optimizer step on the total
    move, equal (to the weights' tiny drift) to one EP step with the same optimizer."""
    g = torch.Generator().manual_seed(3)
    x, y = torch.rand(5, 6, generator=g, dtype=torch.float64), torch.randint(0, 4, (5,), generator=g)
    cfg = RuleConfig(alg="cep", estimator="one_sided", beta=0.3, T1=40, T2=12, cep_debug=True)
    debug, ep = tiny("vf_disc"), tiny("vf_disc")
    start = {n: p.detach().clone() for n, p in ep.named_parameters()}
    opt_d = torch.optim.SGD(debug.parameters(), lr=0.05, momentum=0.9)
    opt_e = torch.optim.SGD(ep.parameters(), lr=0.05, momentum=0.9)
    ContinualRule(cfg).train_batch(debug, x, y, opt_d, torch.Generator())
    total = {n: torch.zeros_like(p) for n, p in ep.named_parameters()}  # Σ_t step_update at fixed weights
    with torch.no_grad():
        from eqsearch.rules import free_phase

        drive, state, _, _ = free_phase(ep, x, 40)
        target = torch.nn.functional.one_hot(y, 4).double()
        for _ in range(12):
            new = ep.step(state, drive, 0.3, target)
            for n, u in ep.step_update(x, state, new, 0.3, target, drive).items():
                total[n] += u
            state = new
    for n, p in ep.named_parameters():
        p.grad = total[n]
    opt_e.step()
    for (n, p), q in zip(debug.named_parameters(), ep.parameters()):
        torch.testing.assert_close(p - start[n], q.detach() - start[n], rtol=1e-3, atol=1e-9)


def test_angle_grad_is_small_for_tied_converged_ep_and_grows_with_reversed_feedback():
    from eqsearch.gdu import update_angle
    from eqsearch.models import MLP

    g = torch.Generator().manual_seed(4)
    x, y = torch.rand(8, 6, generator=g, dtype=torch.float64), torch.randint(0, 4, (8,), generator=g)
    torch.manual_seed(0)
    tied = MLP([6, 5, 4], act="tanh").double()
    grads_before = [p.grad for p in tied.parameters()]
    assert update_angle(tied, x, y, T1=200, T2=10, beta=1e-4) < 1.0  # GDU: EP follows BPTT
    assert [p.grad for p in tied.parameters()] == grads_before  # the model is left as it was
    torch.manual_seed(0)
    reversed_fb = ContinualMLP([6, 5, 4], activation="tanh", discrete=False, dt=0.1, clamp=False,
                               vector_field=True, angle=180.0).double()
    aligned = copy.deepcopy(reversed_fb)
    with torch.no_grad():
        aligned.B[0].weight.copy_(aligned.W[1].weight.t())
    psi_rev = update_angle(reversed_fb, x, y, T1=200, T2=10, beta=1e-3)
    psi_aligned = update_angle(aligned, x, y, T1=200, T2=10, beta=1e-3)
    # reversed feedback misdirects the hidden layer's update (the output layer's stays right)
    assert psi_aligned < 10.0 and psi_rev > psi_aligned + 15.0, (psi_aligned, psi_rev)


def test_angle_grad_is_logged_before_training_and_every_epoch(tmp_path):
    r = CliRunner().invoke(main, ["train", "--size_tab", "10", "16", "64", "--lr_tab", "0.01", "0.02", "--T", "20",
                                  "--Kmax", "5", "--beta", "0.2", "--cep", "--learning-rule", "vf", "--discrete",
                                  "--angle-grad", "--set", "data.dataset=digits", "--max-batches", "3", "--epochs", "2",
                                  "--out", str(tmp_path), "--quiet"])
    assert r.exit_code == 0, r.output
    ms = read_metrics(tmp_path)
    assert 0 <= ms[0]["angle_grad_initial"] <= 180 and all(0 <= m["angle_grad"] <= 180 for m in ms)


def test_code_base_b_flags_on_top_of_a_config_keep_its_model_kind(tmp_path):
    from_dict(overrides={"model.kind": "vf_disc", "model.archi": [64, 32, 10]}).to_yaml(tmp_path / "c.yaml")
    cfg = config_from_args(args(f"--config {tmp_path / 'c.yaml'} --T 33 --Kmax 7"))
    assert (cfg.model.kind, cfg.rule.T1, cfg.rule.T2) == ("vf_disc", 33, 7)
