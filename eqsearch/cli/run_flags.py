"""Flags of the run commands (``train``, ``gducheck``): eqsearch's own and the seed code bases'.

Native: ``--config FILE`` (YAML run config), ``--set FIELD=VALUE`` (any dotted field,
repeatable), ``--data-root``, ``--out``, ``--max-batches``, ``--device``, ``--threads``,
``--resume``. Flags given on the command line override the file.

Code base A (Laborieux et al.) flags are accepted exactly as its README writes them, e.g.
``--model MLP --task MNIST --archi 784 512 10 --act mysig --betas 0.0 0.1 --T1 30 --T2 10
--mbs 50 --lrs 0.08 0.04``. Without ``--config``, a command line that uses them starts from
code base A's defaults (one-sided EP unless ``--thirdphase`` / ``--random-sign``, mbs 20,
T1 20, T2 4, β 0.01, 1 epoch, ...), so a pasted command means what it meant there.

Code base D (EPLCANet, reference §5.8) adds ``--model LCACNN``, ``--lca_*``, ``--dict_training``
and ``--scale_feedback`` to A's CNN flags. With ``--model LCACNN`` its layer lists are written
as there: ``--channels`` starts with the LCA copy layer (= ``--lca_feats``), entry 0 of
``--kernels`` / ``--strides`` / ``--paddings`` / ``--pools`` and entries past ``--channels`` are
ignored, and ``--lrs`` / ``--wds`` start with the parameter-free identity synapse (dropped).
``--dict_training ''`` with ``--model CNN`` is the plain RCNN. Runs with these flags hold out
the half of the training set that ``eqsearch lca-pretrain`` learns on by default
(``data.holdout`` 0.5, the split code base D meant).

The flags are parsed by argparse (nargs lists such as ``--lrs 0.08 0.04``, the code bases' exact
spellings) and their help is rendered by click (:class:`ClickStyleParser`), so that these commands
read like every other one. One parser holds every flag; a command leaves out (``refuse``) the ones
it does not read: they are not listed and fail with one error naming the flag and the command.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from typing import Any, NoReturn

import click

from eqsearch.config import OPTIMIZERS, ConfigError, RunConfig, field_help, from_dict, load_yaml, parse_assignment
from eqsearch.families import families, family_of
from eqsearch.families.mlp import ACTIVATIONS, LOSSES

# Defaults of code base A's main.py (reference §2.10), as dotted eqsearch fields; the model
# fields come from the family of --model (its ``seed_defaults``).
SEED_DEFAULTS: dict[str, Any] = {
    "data.dataset": "mnist", "data.batch_size": 20, "model.kind": "mlp",
    "rule.alg": "ep", "rule.estimator": "one_sided", "rule.beta": 0.01, "rule.T1": 20, "rule.T2": 4,
    "optim.name": "sgd", "optim.momentum": 0.0, "train.epochs": 1,
}

SEED_MODELS = {name: kind for f in families() for name, kind in f.seed_models.items()}
PRESETS = {name: fields for f in families() for name, fields in f.presets.items()}
SEED_TASKS = {"MNIST": "mnist", "CIFAR10": "cifar10", "FashionMNIST": "fashion_mnist", "digits": "digits"}


def seed_task(text: str) -> str:
    """A ``--task`` name in any letter case (code base D writes FASHIONMNIST), as SEED_TASKS spells it."""
    by_case = {k.lower(): k for k in SEED_TASKS}
    if text.lower() not in by_case:
        raise argparse.ArgumentTypeError(f"got {text!r}; allowed: {', '.join(SEED_TASKS)}")
    return by_case[text.lower()]
SEED_FLAGS = ("cep_debug", "model", "task", "archi", "betas", "mbs", "lrs", "alg", "todo", "thirdphase",
              "random_sign", "act", "loss", "optim", "T1", "T2", "channels", "kernels", "strides",
              "paddings", "pools", "fc", "softmax", "same_update", "mmt", "wds", "lr_decay", "scale",
              "data_aug", "dropouts", "load_path", "save", "check_thm")


def _metavar(action: argparse.Action) -> str:
    """The value part of a flag as click writes it: FILE, INTEGER, FLOAT..., [a|b]; '' for a switch."""
    if action.nargs == 0:
        return ""
    if action.metavar is not None:
        text = " ".join(action.metavar) if isinstance(action.metavar, tuple) else action.metavar
    elif action.choices is not None:
        text = "[" + "|".join(c or "''" for c in action.choices) + "]"
    else:
        text = {int: "INTEGER", float: "FLOAT"}.get(action.type, "TEXT")
    return " " + text + ("..." if action.nargs == "+" else "")


class ClickStyleParser(argparse.ArgumentParser):
    """argparse's parsing with click's help and usage errors: ``Usage: PROG [OPTIONS]``, the
    description, one section per argument group, then the run config fields ``--set`` takes."""

    def format_usage(self) -> str:
        return f"Usage: {self.prog} [OPTIONS]\n"

    def format_help(self) -> str:
        f = click.HelpFormatter()
        f.write_usage(self.prog, "[OPTIONS]")
        if self.description:
            f.write_paragraph()
            with f.indentation():
                f.write_text(inspect.cleandoc(self.description))
        sections = [(g.title, g.description, [(", ".join(a.option_strings) + _metavar(a), a.help)
                                              for a in g._group_actions if a.help != argparse.SUPPRESS])
                    for g in self._action_groups]
        sections.append(("Run config fields (--set FIELD=VALUE, or a YAML --config)",
                         "A model field applies to the model.kind values in brackets.",
                         [(name, f"{what}; {text}" if text else what) for name, what, text in field_help()]))
        for title, description, rows in sections:
            if rows:
                with f.section(title):
                    if description:  # indented once more: no line of it reads as a flag's row
                        with f.indentation():
                            f.write_text(description)
                    f.write_dl(rows)
        return f.getvalue()

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.format_usage()}Try '{self.prog} --help' for help.\n\nError: {message}\n")


class NotTaken(argparse.Action):
    """A flag of the parser that this command does not read: one error naming both."""

    def __call__(self, parser, namespace, values, option_string=None) -> NoReturn:
        parser.error(f"{option_string}: not a flag of {parser.prog}; allowed: the flags that "
                     f"'{parser.prog} --help' lists")


def build_parser(prog: str, description: str, refuse: frozenset[str] = frozenset()) -> argparse.ArgumentParser:
    """The flags of the run commands; those in ``refuse`` (spelled as typed, e.g. ``--resume``) are
    left out of the help and fail when given, keeping their default in the namespace."""
    p = ClickStyleParser(prog=prog, description=description, add_help=False)

    def add(group: argparse._ArgumentGroup, *flags: str, **kw: Any) -> None:
        if flags[0] in refuse:
            group.add_argument(*flags, dest=kw.get("dest"), default=kw.get("default"), nargs="*", action=NotTaken,
                               help=argparse.SUPPRESS)
        else:
            group.add_argument(*flags, **kw)

    g = p.add_argument_group("Options (eqsearch's own)")
    add(g, "--config", metavar="FILE", help="YAML run config (sections data, model, rule, optim, train); the "
        "other flags override it")
    add(g, "--set", dest="assign", action="append", default=[], metavar="FIELD=VALUE",
        help="set one run config field (listed below), e.g. --set rule.estimator=symmetric; repeatable, applied last")
    add(g, "--data-root", metavar="DIR", help="data root in torchvision's layout (data.root; env EQSEARCH_DATA)")
    add(g, "--out", metavar="DIR", help="folder to write (default runs/<time>-<model.kind, or gducheck>-<data set>)")
    add(g, "--max-batches", type=int, metavar="N", help="cap on training batches per epoch (data.max_batches; "
        "smoke runs)")
    add(g, "--device", metavar="DEVICE", help="cpu, cuda, cuda:k or a GPU index k (train.device; the CPU, with a "
        "notice, if there is no GPU)")
    add(g, "--threads", type=int, metavar="N", help="torch CPU threads (train.threads)")
    add(g, "--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its latest checkpoint (its config; "
        "other flags override it)")
    add(g, "--epochs", type=int, metavar="N", help="epochs (train.epochs; with --resume: the new total)")
    add(g, "--seed", type=int, metavar="N", help="seed of the initial weights and of every random draw (train.seed)")
    add(g, "--quiet", action="store_true", help="no progress bar")
    add(g, "-h", "--help", action="help", help="Show this message and exit.")

    a = p.add_argument_group(
        "Code base A flags (Laborieux et al., reference §2.10)",
        "Spelled as its main.py does; lists run input -> output. Without --config, unset ones take its defaults "
        f"(one-sided EP, --mbs {SEED_DEFAULTS['data.batch_size']}, --T1 {SEED_DEFAULTS['rule.T1']}, "
        f"--T2 {SEED_DEFAULTS['rule.T2']}, β {SEED_DEFAULTS['rule.beta']}, {SEED_DEFAULTS['train.epochs']} epoch).")
    add(a, "--model", choices=sorted(SEED_MODELS), help="network (model.kind): "
        + ", ".join(f"{name} = {kind}" for name, kind in SEED_MODELS.items()))
    add(a, "--task", type=seed_task, metavar="[" + "|".join(SEED_TASKS) + "]",
        help="data set (data.dataset), any letter case: " + ", ".join(f"{k} = {v}" for k, v in SEED_TASKS.items()))
    add(a, "--archi", type=int, nargs="+", help="MLP layer sizes, input -> output (model.archi)")
    add(a, "--act", help=f"neuron activation σ (model.act): {', '.join(ACTIVATIONS)}")
    add(a, "--loss", help=f"loss (model.loss): {' or '.join(LOSSES)} (mse: σ on the output; cel: cross-entropy "
        "on a linear output)")
    add(a, "--optim", help=f"optimizer (optim.name): {', '.join(OPTIMIZERS)}")
    add(a, "--lrs", type=float, nargs="+", help="learning rate per synapse layer, input -> output (optim.lrs)")
    add(a, "--wds", type=float, nargs="+", help="weight decay per synapse layer (optim.wds; rescaled with --alg CEP)")
    add(a, "--mmt", type=float, help="SGD momentum, 0 to 1 (optim.momentum)")
    add(a, "--mbs", type=int, help="training minibatch size (data.batch_size; gducheck: its first at most 20 "
        "samples)")
    add(a, "--T1", type=int, help="free-phase steps (rule.T1)")
    add(a, "--T2", type=int, help="nudged-phase steps (rule.T2; BPTT: the truncation length)")
    add(a, "--betas", type=float, nargs=2, metavar=("BETA1", "BETA2"),
        help="β1 of the free phase, 0.0; β2 > 0 of the nudge (rule.beta; the estimator picks its signs)")
    add(a, "--alg", choices=["EP", "BPTT", "CEP"],
        help="learning rule (rule.alg): EP = ep; BPTT = bptt, truncated to T2 steps; CEP = cep, code base A's "
        "continual EP (§2.8): an optimizer step at every nudged step, --wds rescaled to (1 − (1 − 0.1·wd)^(1/T2))/lr")
    add(a, "--cep-debug", dest="cep_debug", action="store_true", default=None,
        help="with --alg CEP: tiny continual steps, then one EP-like step (rule.cep_debug)")
    add(a, "--todo", choices=["train", "gducheck", "evaluate"],
        help="train; gducheck (= eqsearch gducheck); evaluate the run of --load-path (= eqsearch evaluate)")
    add(a, "--random-sign", action="store_true", default=None,
        help="random sign of β2 per minibatch (rule.estimator random_sign)")
    add(a, "--thirdphase", action="store_true", default=None,
        help="+β and −β nudged phases (rule.estimator symmetric; --alg CEP: continual +β, back to s*, then −β)")
    add(a, "--lr-decay", action="store_true", default=None, help="cosine learning-rate decay (optim.lr_decay)")
    add(a, "--check-thm", action="store_true", default=None,
        help="GDU check (EP vs BPTT) once per epoch (train.check_thm)")
    add(a, "--scale", type=float, help="factor on the default init of weights and biases (model.scale)")
    add(a, "--save", action="store_true", default=None, help="accepted; a run folder is always written")
    add(a, "--load-path", metavar="DIR", help="run folder to resume (train), to check (gducheck) or to evaluate "
        "(--todo evaluate)")
    add(a, "--channels", type=int, nargs="+", help="CNN output channels per conv layer (model.channels)")
    add(a, "--kernels", type=int, nargs="+", help="kernel size per conv layer (model.kernels)")
    add(a, "--strides", type=int, nargs="+", help="stride per conv layer (model.strides)")
    add(a, "--paddings", type=int, nargs="+", help="padding per conv layer (model.paddings)")
    add(a, "--pools", help="one letter per conv layer: m (max), a (average), i (identity) 2×2 pooling (model.pools)")
    add(a, "--fc", type=int, nargs="+", help="fully connected sizes after the convs, the last = classes (model.fc)")
    add(a, "--softmax", action="store_true", default=None,
        help="CNN with --loss cel: a softmax read-out instead of an output neuron layer (model.softmax)")
    add(a, "--same-update", action="store_true", default=None,
        help="VFCNN: identical updates for forward and backward weights (model.same_update)")
    add(a, "--data-aug", action="store_true", default=None, help="CIFAR-10 flip + crop augmentation (data.augment)")
    add(a, "--dropouts", type=float, nargs="+", help="keep probabilities of [x, s_1, ...], the last 1.0 "
        "(model.dropouts)")

    b = p.add_argument_group(
        "Code base B flags (Ernoult et al., continual EP / C-VF, reference §3.9)",
        "Lists run output -> input as there (reversed here). Without --config, unset ones take its defaults "
        f"({B_DEFAULTS['model.kind']} {'-'.join(map(str, B_DEFAULTS['model.archi']))}, --T {B_DEFAULTS['rule.T1']}, "
        f"--Kmax {B_DEFAULTS['rule.T2']}, --beta {B_DEFAULTS['rule.beta']}, ...).")
    add(b, "--size_tab", type=int, nargs="+", help="layer sizes, OUTPUT first, e.g. 10 512 784 (model.archi)")
    add(b, "--lr_tab", type=float, nargs="+", help="learning rate per layer, OUTPUT first (optim.lrs)")
    add(b, "--T", type=int, help="free-phase steps (rule.T1)")
    add(b, "--Kmax", type=int, help="nudged-phase steps (rule.T2)")
    add(b, "--beta", type=float, help="nudging strength (rule.beta)")
    add(b, "--cep", action="store_true", default=None, help="continual updates: C-EP, or C-VF with --learning-rule vf "
        "(rule.alg cep)")
    add(b, "--learning-rule", dest="learning_rule", choices=["ep", "vf"],
        help="tied (ep) or untied (vf) weights (model.kind ep_* or vf_*)")
    add(b, "--randbeta", type=float, help="probability of keeping +β per minibatch, 0: always +β (rule.randbeta, "
        "rule.estimator random_sign)")
    add(b, "--angle", type=float, help="vf: initial angle (degrees) between backward and forward weights "
        "(model.angle)")
    add(b, "--discrete", action="store_true", default=None,
        help="prototypical dt = 1 dynamics (model.kind *_disc; else *_cont)")
    add(b, "--dt", type=float, help="Euler step of the continuous-time dynamics (model.dt)")
    add(b, "--no-clamp", dest="no_clamp", action="store_true", default=None,
        help="continuous time: no [0, 1] clamp of the states (model.clamp false)")
    add(b, "--activation-function", dest="activation_function", choices=["sigm", "hardsigm", "tanh"],
        help="ρ of the neurons (model.activation)")
    add(b, "--batch-size", dest="b_batch_size", type=int, help="training minibatch size (data.batch_size)")
    add(b, "--test-batch-size", dest="b_test_batch_size", type=int,
        help="evaluation batch size (data.test_batch_size)")
    add(b, "--action", choices=["train", "plotcurves"], help="train, or plotcurves: the GDU check (= eqsearch "
        "gducheck)")
    add(b, "--device-label", dest="device_label", type=int, help="CUDA index; -1 = CPU (train.device)")
    add(b, "--angle-grad", dest="angle_grad", action="store_true", default=None,
        help="log Ψ, the angle between the total C-EP update and the BPTT gradient (train.angle_grad)")
    add(b, "--debug-cep", dest="debug_cep", action="store_true", default=None,
        help="C-EP debug procedure: tiny continual steps, then one EP-like step (rule.cep_debug)")

    c = p.add_argument_group("Code base C flags (smonsays, energies and presets, reference §4.10)",
                             "Unset ones take the preset of --energy (or of --preset).")
    add(c, "--preset", choices=sorted(PRESETS), help="start from code base C's defaults of this energy (its "
        "etc/*.json); other flags override them")
    add(c, "--energy", choices=["cond_gaussian", "restr_hopfield"], help="energy model (model.kind), with its preset")
    add(c, "--c_energy", choices=["cross_entropy", "squared_error"], help="cost function (model.cost)")
    add(c, "--dimensions", type=int, nargs="+", help="layer sizes, input first (model.archi)")
    add(c, "--nonlinearity", choices=["leaky_relu", "relu", "sigmoid", "tanh", "hard_sigmoid", "softplus"],
        help="φ of the layers l >= 1 (model.nonlinearity)")
    add(c, "--fast_ff_init", action="store_true", default=None,
        help="cond_gaussian: start the free phase at its feed-forward equilibrium (model.fast_ff_init)")
    add(c, "--no_fast_ff_init", action="store_true", default=None,
        help="relax the free phase from the initial state instead (model.fast_ff_init false)")
    add(c, "--learning_rate", type=float, help="one learning rate for every layer (optim.lrs)")
    add(c, "--optimizer", choices=["adam", "adagrad", "sgd"], help="torch optimizer (optim.name)")
    add(c, "--batch_size", type=int, help="minibatch size (data.batch_size)")
    add(c, "--log_dir", help="names the run folder runs/<log_dir> unless --out is given")

    d = p.add_argument_group(
        "Code base D flags (EPLCANet, LCA-CNN, reference §5.8)",
        "With code base A's CNN flags; for --model LCACNN, --channels ... --pools, --lrs and --wds are written as "
        "there, the LCA copy layer first. These runs hold out half the training set (data.holdout 0.5), what "
        "eqsearch lca-pretrain learns its dictionary on.")
    add(d, "--dict_training", choices=DICT_MODES, help="'' (plain CNN, with --model CNN); with --model LCACNN: "
        "pretrained, finetune or learn (model.dict_training)")
    add(d, "--lca_feats", type=int, help="dictionary atoms, = the first entry of --channels (model.lca.features)")
    add(d, "--lca_lambda", type=float, help="LCA threshold λ (model.lca.lam)")
    add(d, "--lca_tau", type=float, help="LCA time constant τ (model.lca.tau)")
    add(d, "--lca_eta", type=float, help="dictionary learning rate (model.lca.eta)")
    add(d, "--lca_iters", type=int, help="LCA iterations per code (model.lca.iters)")
    add(d, "--lca_stride", type=int, help="stride of the code (model.lca.stride)")
    add(d, "--lca_ksize", type=int, help="atom size k, k × k (model.lca.ksize)")
    add(d, "--scale_feedback", type=float, help="weight of the conv layers' feedback in the code the dictionary is "
        "fine-tuned to (model.scale_feedback)")
    return p

B_FLAGS = ("size_tab", "lr_tab", "T", "Kmax", "beta", "cep", "learning_rule", "randbeta", "angle", "discrete", "dt",
           "no_clamp", "activation_function", "b_batch_size", "b_test_batch_size", "action", "device_label",
           "angle_grad", "debug_cep")
# code base B's defaults (reference §3.9) as dotted fields; the layer sizes of its paper commands
B_DEFAULTS: dict[str, Any] = {
    "data.dataset": "mnist", "data.batch_size": 20, "data.test_batch_size": 1000, "model.kind": "ep_cont",
    "model.archi": [784, 512, 10], "model.activation": "sigm", "model.dt": 0.2, "model.clamp": True,
    "rule.alg": "ep", "rule.estimator": "one_sided", "rule.beta": 1.0, "rule.T1": 100, "rule.T2": 25,
    "optim.name": "sgd", "optim.momentum": 0.0, "optim.lrs": [0.1, 0.05], "train.epochs": 1,
}


def _b_overrides(ns: argparse.Namespace) -> dict[str, Any]:
    """Dotted overrides for the code base B flags that were given (output -> input lists reversed)."""
    o: dict[str, Any] = {}
    if ns.size_tab is not None:
        o["model.archi"] = list(reversed(ns.size_tab))
    if ns.lr_tab is not None:
        o["optim.lrs"] = list(reversed(ns.lr_tab))
    direct = {"T": "rule.T1", "Kmax": "rule.T2", "beta": "rule.beta", "angle": "model.angle", "dt": "model.dt",
              "activation_function": "model.activation", "b_batch_size": "data.batch_size",
              "b_test_batch_size": "data.test_batch_size"}
    for flag, key in direct.items():
        if getattr(ns, flag) is not None:
            o[key] = getattr(ns, flag)
    if ns.learning_rule is not None or ns.discrete:  # else the kind of B's defaults, or of --config
        o["model.kind"] = f"{ns.learning_rule or 'ep'}_{'disc' if ns.discrete else 'cont'}"
    if ns.discrete:
        o.pop("model.dt", None)
    if ns.no_clamp:
        o["model.clamp"] = False
    if ns.cep:
        o["rule.alg"] = "cep"
    if ns.debug_cep:
        o["rule.cep_debug"] = True
    if ns.angle_grad:
        o["train.angle_grad"] = True
    if ns.randbeta:
        o.update({"rule.estimator": "random_sign", "rule.randbeta": ns.randbeta})
    if ns.device_label is not None:
        o["train.device"] = "cpu" if ns.device_label < 0 else str(ns.device_label)
    return o


def uses_b_flags(ns: argparse.Namespace) -> bool:
    return any(getattr(ns, f) not in (None, False) for f in B_FLAGS)


C_FLAGS = ("energy", "c_energy", "dimensions", "nonlinearity", "fast_ff_init", "no_fast_ff_init", "learning_rate",
           "optimizer", "batch_size", "log_dir")


def _c_overrides(ns: argparse.Namespace, archi: list[int] | None) -> dict[str, Any]:
    """Dotted overrides for the code base C flags that were given; ``archi`` sizes the lrs."""
    o: dict[str, Any] = {}
    direct = {"energy": "model.kind", "c_energy": "model.cost", "dimensions": "model.archi",
              "nonlinearity": "model.nonlinearity", "optimizer": "optim.name", "batch_size": "data.batch_size"}
    for flag, key in direct.items():
        if getattr(ns, flag) is not None:
            o[key] = getattr(ns, flag)
    if ns.fast_ff_init and ns.no_fast_ff_init:
        raise ConfigError("--fast_ff_init / --no_fast_ff_init: got both; allowed: one of them")
    if ns.fast_ff_init or ns.no_fast_ff_init:
        o["model.fast_ff_init"] = bool(ns.fast_ff_init)
    if ns.learning_rate is not None:
        sizes = o.get("model.archi") or archi or []
        o["optim.lrs"] = [ns.learning_rate] * max(1, len(sizes) - 1)
    return o


def _seed_overrides(ns: argparse.Namespace) -> dict[str, Any]:
    """Dotted overrides for the code base A flags that were given."""
    o: dict[str, Any] = {}
    direct = {"archi": "model.archi", "act": "model.act", "loss": "model.loss", "optim": "optim.name",
              "lrs": "optim.lrs", "wds": "optim.wds", "mmt": "optim.momentum", "mbs": "data.batch_size",
              "T1": "rule.T1", "T2": "rule.T2", "scale": "model.scale", "channels": "model.channels",
              "kernels": "model.kernels", "strides": "model.strides", "paddings": "model.paddings",
              "pools": "model.pools", "fc": "model.fc", "dropouts": "model.dropouts"}
    for flag, key in direct.items():
        if getattr(ns, flag) is not None:
            o[key] = getattr(ns, flag)
    flags = {"lr_decay": "optim.lr_decay", "check_thm": "train.check_thm", "cep_debug": "rule.cep_debug", "softmax": "model.softmax",
             "same_update": "model.same_update", "data_aug": "data.augment"}
    for flag, key in flags.items():
        if getattr(ns, flag):
            o[key] = True
    if ns.model:
        o["model.kind"] = SEED_MODELS[ns.model]
    if ns.task:
        o["data.dataset"] = SEED_TASKS[ns.task]
    if ns.alg:
        o["rule.alg"] = ns.alg.lower()
    if ns.betas is not None:
        b1, b2 = ns.betas
        if b1 != 0.0:
            raise ConfigError(f"--betas: got beta1={b1}; allowed: beta1 = 0.0 (free phase without nudge)")
        if b2 <= 0.0:
            raise ConfigError(f"--betas: got beta2={b2}; allowed: beta2 > 0 (the estimator chooses signs)")
        o["rule.beta"] = b2
    if ns.thirdphase:
        o["rule.estimator"] = "symmetric"
    elif ns.random_sign:
        o["rule.estimator"] = "random_sign"
    elif any(getattr(ns, f) is not None for f in ("betas", "alg", "model", "task")):
        o.setdefault("rule.estimator", "one_sided")
    return o


DICT_MODES = ["", "pretrained", "finetune", "learn", "no_lca"]
D_LCA_FLAGS = {"lca_feats": "model.lca.features", "lca_lambda": "model.lca.lam", "lca_tau": "model.lca.tau",
               "lca_eta": "model.lca.eta", "lca_iters": "model.lca.iters", "lca_stride": "model.lca.stride",
               "lca_ksize": "model.lca.ksize", "scale_feedback": "model.scale_feedback"}
D_DEFAULTS: dict[str, Any] = {"data.holdout": 0.5}  # the half code base D meant to keep for dictionary learning
D_LISTS = {"model.channels": "channels", "model.kernels": "kernels", "model.strides": "strides",
           "model.paddings": "paddings", "model.pools": "pools"}


def uses_d_flags(ns: argparse.Namespace) -> bool:
    return ns.model == "LCACNN" or any(getattr(ns, f) is not None for f in ("dict_training", *D_LCA_FLAGS))


def _d_overrides(ns: argparse.Namespace, o: dict[str, Any], tree: dict, seeded: bool) -> None:
    """Code base D's flags into the overrides ``o`` (in place), converting its LCA_CNN layer lists
    (copy layer first) to eqsearch's. ``tree``: the --config file's tree; ``seeded``: ``o`` holds
    code base A's defaults (no --config), whose CNN lists are then D's defaults too."""
    model = tree.get("model") or {}
    kind = o.get("model.kind", model.get("kind"))

    def current(key: str):  # the value so far of a model field: override, else --config, else the default
        if key in o:
            return o[key]
        section, tree_part = family_of(kind).config(), model
        *parents, name = key.split(".")[1:]
        for p in parents:
            section, tree_part = getattr(section, p), tree_part.get(p) or {}
        return tree_part.get(name, getattr(section, name))

    given = [f for f in D_LCA_FLAGS if getattr(ns, f) is not None]
    mode = ns.dict_training
    if kind != "lca_cnn":
        if given:
            raise ConfigError(f"--{given[0]}: given with model.kind={kind!r}; allowed: the LCA flags with "
                              "--model LCACNN")
        if mode not in (None, ""):
            raise ConfigError(f"--dict_training: got {mode!r} with model.kind={kind!r}; allowed: '' (the plain CNN), "
                              "or pretrained, finetune or learn with --model LCACNN")
        if kind == "cnn":  # P_CNN of code base D ignores entries past --channels
            n = len(current("model.channels"))
            o.update({key: o[key][:n] for key in D_LISTS if key in o})
        return
    o.update({D_LCA_FLAGS[f]: getattr(ns, f) for f in given})
    if mode is None and seeded:
        mode = "no_lca"  # code base D's default
    if mode in ("", "no_lca"):
        raise ConfigError(f"--dict_training: got {mode!r} with --model LCACNN; allowed: pretrained, finetune or learn")
    if mode is not None:
        o["model.dict_training"] = mode
    cnn_defaults = family_of("cnn").seed_defaults
    lists = {k: o[k] if k in o else cnn_defaults[k] for k in D_LISTS if k in o or seeded}
    if lists:
        if "model.channels" not in lists:
            raise ConfigError(f"--{D_LISTS[next(iter(lists))]}: given without --channels; allowed: code base D's "
                              "layer lists with --channels (the LCA copy layer first)")
        channels = lists["model.channels"]
        feats = current("model.lca.features")
        if len(channels) < 2 or channels[0] != feats:
            raise ConfigError(f"--channels: got {channels}; allowed: the LCA copy layer first, equal to --lca_feats "
                              f"({feats}), then at least one conv layer")
        n = len(channels)
        for key, value in lists.items():
            if len(value) < n:
                raise ConfigError(f"--{D_LISTS[key]}: got {value!r}; allowed: at least {n} entries, one per entry of "
                                  "--channels (entry 0, the copy layer's, is ignored)")
            o[key] = value[1:n]
    for key in ("optim.lrs", "optim.wds"):
        if key in o:
            synapses = len(current("model.channels")) + len(current("model.fc"))
            if len(o[key]) != synapses + 1:
                raise ConfigError(f"--{key[6:]}: got {o[key]}; allowed: {synapses + 1} values, one per synapse of code "
                                  "base D's LCA_CNN (the copy layer's identity first, unused; then each conv and fc)")
            o[key] = o[key][1:]


def uses_seed_flags(ns: argparse.Namespace) -> bool:
    return any(getattr(ns, f) not in (None, False) for f in SEED_FLAGS)


def uses_c_flags(ns: argparse.Namespace) -> bool:
    return any(getattr(ns, f) not in (None, False) for f in C_FLAGS)


def config_from_args(ns: argparse.Namespace, base: RunConfig | None = None) -> RunConfig:
    """Merge (base or --config or code base A defaults), flags and --set into one config."""
    tree: dict = base.to_dict() if base is not None else {}
    overrides: dict[str, Any] = {}
    source = ""
    uses_a = uses_seed_flags(ns) or uses_d_flags(ns)  # D's flags extend A's
    if sum((uses_a, uses_b_flags(ns), uses_c_flags(ns))) > 1:
        raise ConfigError("flags of several code bases were mixed (A / D: --model, --archi, --lca_feats, ...; B: "
                          "--size_tab, --cep, ...; C: --energy, --dimensions, ...); allowed: one code base's flags "
                          "per command")
    preset = ns.preset or ((ns.energy or "cond_gaussian") if uses_c_flags(ns) and base is None else None)
    if ns.config:
        tree = load_yaml(ns.config)
        source = f"{ns.config}: "
    elif base is None and uses_a:
        overrides.update(SEED_DEFAULTS)
        kind = SEED_MODELS[ns.model] if ns.model else SEED_DEFAULTS["model.kind"]
        overrides.update(family_of(kind).seed_defaults)
        if uses_d_flags(ns):
            overrides.update(D_DEFAULTS)
    elif base is None and uses_b_flags(ns):
        overrides.update(B_DEFAULTS)
    if uses_b_flags(ns):
        overrides.update(_b_overrides(ns))
    if preset:
        overrides.update(PRESETS[preset])
    overrides.update(_seed_overrides(ns))
    if uses_d_flags(ns):
        _d_overrides(ns, overrides, tree, seeded=base is None and not ns.config)
    tree_archi = (tree.get("model") or {}).get("archi")
    overrides.update(_c_overrides(ns, overrides.get("model.archi", tree_archi)))
    native = {"data_root": "data.root", "max_batches": "data.max_batches", "device": "train.device",
              "threads": "train.threads", "epochs": "train.epochs", "seed": "train.seed"}
    for flag, key in native.items():
        if getattr(ns, flag) is not None:
            overrides[key] = getattr(ns, flag)
    if ns.alg == "CEP" and overrides.get("optim.wds"):
        overrides["optim.wds"] = cep_weight_decays(overrides["optim.wds"], overrides.get("optim.lrs") or [],
                                                   overrides.get("rule.T2", SEED_DEFAULTS["rule.T2"]))
    for text in ns.assign:
        key, value = parse_assignment(text)
        overrides[key] = value
    return from_dict(tree, overrides, source=source)


def cep_weight_decays(wds: list[float], lrs: list[float], T2: int) -> list[float]:
    """Code base A's ``--alg CEP`` rescaling (reference §2.8): wd' = (1 − (1 − 0.1·wd)^(1/T2)) / lr, so
    that the T2 per-step decays of one batch compound to a factor (1 − 0.1·wd)."""
    if len(lrs) != len(wds):
        raise ConfigError(f"--wds: got {wds}; allowed: one value per entry of --lrs ({lrs})")
    return [(1.0 - (1.0 - 0.1 * wd) ** (1.0 / T2)) / lr if lr > 0 else wd for wd, lr in zip(wds, lrs)]


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse; argparse's own errors exit with status 2 and a usage line."""
    ns = parser.parse_args(argv)
    if ns.todo == "evaluate" and not ns.load_path:
        parser.error("--todo evaluate needs --load-path RUN_DIR")
    return ns


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)
