"""Flags of the run commands (``train``, ``gducheck``): native options and code base A's flags.

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
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from eqsearch.config import ConfigError, RunConfig, from_dict, load_yaml, parse_assignment
from eqsearch.families import families, family_of

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


def fields_epilog() -> str:
    """The run config fields (``--set FIELD=VALUE`` / YAML), one line each."""
    from eqsearch.config import field_help

    lines = ["run config fields (--set FIELD=VALUE, or a YAML --config; model.kind picks the model fields):"]
    lines += [f"  {name:<32} {what}" + (f"; {text}" if text else "") for name, what, text in field_help()]
    return "\n".join(lines)


def build_parser(prog: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description, epilog=fields_epilog(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("eqsearch options")
    g.add_argument("--config", metavar="FILE", help="YAML run config (sections data, model, rule, optim, train)")
    g.add_argument("--set", dest="assign", action="append", default=[], metavar="FIELD=VALUE",
                   help="override one field, e.g. --set rule.estimator=symmetric (repeatable)")
    g.add_argument("--data-root", metavar="DIR", help="data root in torchvision's layout (env EQSEARCH_DATA)")
    g.add_argument("--out", metavar="DIR", help="run folder (default runs/<time>-<model>-<data>)")
    g.add_argument("--max-batches", type=int, metavar="N", help="cap training batches per epoch (smoke runs)")
    g.add_argument("--device", help="cpu, cuda, cuda:k or a GPU index k (CPU with a notice if no GPU)")
    g.add_argument("--threads", type=int, metavar="N", help="torch CPU threads")
    g.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its latest checkpoint")
    g.add_argument("--epochs", type=int)
    g.add_argument("--seed", type=int)
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.add_argument("--preset", choices=sorted(PRESETS), help="start from a named configuration (code base C's "
                   "defaults of each energy); other flags override it")

    a = p.add_argument_group("code base A flags (Laborieux et al.; unset ones take its defaults)")
    a.add_argument("--model", choices=sorted(SEED_MODELS))
    a.add_argument("--task", type=seed_task, metavar="{" + ",".join(SEED_TASKS) + "}",
                   help="data set (any letter case)")
    a.add_argument("--archi", type=int, nargs="+")
    a.add_argument("--act")
    a.add_argument("--loss")
    a.add_argument("--optim")
    a.add_argument("--lrs", type=float, nargs="+")
    a.add_argument("--wds", type=float, nargs="+")
    a.add_argument("--mmt", type=float)
    a.add_argument("--mbs", type=int)
    a.add_argument("--T1", type=int)
    a.add_argument("--T2", type=int)
    a.add_argument("--betas", type=float, nargs=2, metavar=("BETA1", "BETA2"))
    a.add_argument("--alg", choices=["EP", "BPTT", "CEP"])
    a.add_argument("--cep-debug", dest="cep_debug", action="store_true", default=None,
                   help="with --alg CEP: the debug procedure (rule.cep_debug)")
    a.add_argument("--todo", choices=["train", "gducheck", "evaluate"])
    a.add_argument("--random-sign", action="store_true", default=None)
    a.add_argument("--thirdphase", action="store_true", default=None)
    a.add_argument("--lr-decay", action="store_true", default=None)
    a.add_argument("--check-thm", action="store_true", default=None)
    a.add_argument("--scale", type=float)
    a.add_argument("--save", action="store_true", default=None, help="accepted; a run folder is always written")
    a.add_argument("--load-path", metavar="DIR", help="run folder to resume (train) or to load (gducheck)")
    a.add_argument("--channels", type=int, nargs="+")
    a.add_argument("--kernels", type=int, nargs="+")
    a.add_argument("--strides", type=int, nargs="+")
    a.add_argument("--paddings", type=int, nargs="+")
    a.add_argument("--pools")
    a.add_argument("--fc", type=int, nargs="+")
    a.add_argument("--softmax", action="store_true", default=None)
    a.add_argument("--same-update", action="store_true", default=None)
    a.add_argument("--data-aug", action="store_true", default=None)
    a.add_argument("--dropouts", type=float, nargs="+")

    d = p.add_argument_group("code base D flags (EPLCANet; with code base A's CNN flags; for --model LCACNN, "
                             "--channels ... --pools, --lrs and --wds are written as there, the copy layer first)")
    d.add_argument("--dict_training", choices=DICT_MODES,
                   help="'' (plain CNN with --model CNN), pretrained, finetune or learn (--model LCACNN)")
    d.add_argument("--lca_feats", type=int, help="dictionary atoms (= first entry of --channels)")
    d.add_argument("--lca_lambda", type=float, help="LCA threshold λ")
    d.add_argument("--lca_tau", type=float, help="LCA time constant τ")
    d.add_argument("--lca_eta", type=float, help="dictionary learning rate")
    d.add_argument("--lca_iters", type=int, help="LCA iterations per minibatch")
    d.add_argument("--lca_stride", type=int, help="LCA stride")
    d.add_argument("--lca_ksize", type=int, help="LCA kernel size")
    d.add_argument("--scale_feedback", type=float,
                   help="weight of the conv layers' feedback in the code the dictionary is fine-tuned to")

    b = p.add_argument_group("code base B flags (Ernoult et al., continual EP; lists output -> input as there; "
                             "unset ones take its defaults)")
    b.add_argument("--size_tab", type=int, nargs="+", help="layer sizes, OUTPUT first (e.g. 10 512 784)")
    b.add_argument("--lr_tab", type=float, nargs="+", help="learning rates per layer, OUTPUT first")
    b.add_argument("--T", type=int, help="free-phase steps (rule.T1)")
    b.add_argument("--Kmax", type=int, help="nudged-phase steps (rule.T2)")
    b.add_argument("--beta", type=float, help="nudging strength (rule.beta)")
    b.add_argument("--cep", action="store_true", default=None, help="continual updates (rule.alg cep)")
    b.add_argument("--learning-rule", dest="learning_rule", choices=["ep", "vf"], help="tied (ep) or untied (vf) weights")
    b.add_argument("--randbeta", type=float, help="probability of keeping +β per minibatch (0: always +β)")
    b.add_argument("--angle", type=float, help="vf: initial angle (degrees) between backward and forward weights")
    b.add_argument("--discrete", action="store_true", default=None, help="prototypical (dt = 1) dynamics")
    b.add_argument("--dt", type=float, help="Euler step of the continuous-time dynamics")
    b.add_argument("--no-clamp", dest="no_clamp", action="store_true", default=None, help="no [0, 1] clamp")
    b.add_argument("--activation-function", dest="activation_function", choices=["sigm", "hardsigm", "tanh"])
    b.add_argument("--batch-size", dest="b_batch_size", type=int, help="training minibatch size")
    b.add_argument("--test-batch-size", dest="b_test_batch_size", type=int, help="evaluation batch size")
    b.add_argument("--action", choices=["train", "plotcurves"], help="plotcurves: the GDU check (eqsearch gducheck)")
    b.add_argument("--device-label", dest="device_label", type=int, help="CUDA index; -1 = CPU")
    b.add_argument("--angle-grad", dest="angle_grad", action="store_true", default=None,
                   help="log Ψ, the angle between the total C-EP update and the BPTT gradient (train.angle_grad)")
    b.add_argument("--debug-cep", dest="debug_cep", action="store_true", default=None,
                   help="C-EP debug procedure: tiny continual steps, then one EP-like step (rule.cep_debug)")

    c = p.add_argument_group("code base C flags (smonsays; unset ones take the preset of --energy)")
    c.add_argument("--energy", choices=["cond_gaussian", "restr_hopfield"], help="energy model (model.kind)")
    c.add_argument("--c_energy", choices=["cross_entropy", "squared_error"], help="cost function (model.cost)")
    c.add_argument("--dimensions", type=int, nargs="+", help="layer sizes, input first (model.archi)")
    c.add_argument("--nonlinearity", choices=["leaky_relu", "relu", "sigmoid", "tanh", "hard_sigmoid", "softplus"],
                   help="φ of the layers l >= 1")
    c.add_argument("--fast_ff_init", action="store_true", default=None, help="feed-forward free state (cond_gaussian)")
    c.add_argument("--no_fast_ff_init", action="store_true", default=None, help="relax the free phase instead")
    c.add_argument("--learning_rate", type=float, help="one learning rate for every layer")
    c.add_argument("--optimizer", choices=["adam", "adagrad", "sgd"], help="torch optimizer")
    c.add_argument("--batch_size", type=int, help="minibatch size")
    c.add_argument("--log_dir", help="accepted: names the run folder runs/<log_dir> unless --out is given")
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
