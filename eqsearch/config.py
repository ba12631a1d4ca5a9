"""The one validated run configuration: data, model, learning rule, optimizer, training.

A run config is a tree of section dataclasses (:mod:`eqsearch.fields`). It is built from a
nested mapping (a YAML file), then from dotted overrides (``rule.beta=0.2``, from CLI flags or a
search trial), and is validated field by field before anything runs. Every error names the
field (dotted path), the value it got and what is allowed.

The ``model`` section is the one of the model family that ``model.kind`` names (the registry of
:mod:`eqsearch.families`): an MLP run has ``model.archi``, a CNN run ``model.channels``, and a
field of another family is an unknown field.

Conventions: per-layer lists (``model.archi``, ``optim.lrs``, ``optim.wds``) are ordered
input -> output. ``rule.beta`` is the nudging strength |β| > 0; its sign is chosen by the
estimator.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from eqsearch.errors import ConfigError
from eqsearch.families import families, family_of
from eqsearch.fields import allowed, build_section, flatten, leaf_fields, set_dotted, setting

__all__ = ["ConfigError", "DataConfig", "RuleConfig", "OptimConfig", "TrainConfig", "RunConfig", "from_dict",
           "load_config", "load_yaml", "field_names", "parse_assignment", "overrides_from_params",
           "resource_overrides", "SECTIONS"]

DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10", "synthetic_cifar")
ALGORITHMS = ("ep", "bptt", "cep")
ESTIMATORS = ("one_sided", "random_sign", "symmetric")
ORDERS = ("sync", "async")  # layer update order of a relaxation step (rule.order)
COMPILE_MODES = ("none", "step", "phase")  # what train.compile hands to torch.compile ("off" would read as YAML false)
OPTIMIZERS = ("sgd", "adam", "adagrad")


@dataclass
class DataConfig:
    """Where the examples come from and how they are batched."""

    dataset: str = setting("digits", choices=DATASETS, help="data set")
    root: str | None = setting(None, help="data root in torchvision's layout (env EQSEARCH_DATA)")
    batch_size: int = setting(16, low=1, help="training minibatch size")
    test_batch_size: int = setting(1000, low=1, help="evaluation batch size")
    max_batches: int | None = setting(None, low=1, help="cap on training batches per epoch")
    augment: bool = setting(False, help="CIFAR-10 flip + crop augmentation")
    normalize: str = setting("none", choices=("none", "mnist"),
                             help="none (pixels in [0, 1]) or mnist: (x − 0.1307) / 0.3081 (code base C)")
    holdout: float = setting(0.0, low=0.0, high=0.9, help="fraction of the training set held out of training (what "
                                                          "eqsearch lca-pretrain learns a dictionary on)")
    holdout_seed: int = setting(0, low=0, help="seed of the hold-out draw (give lca-pretrain the same)")


@dataclass
class RuleConfig:
    """How the parameters learn from a batch (the learning rule and its relaxation lengths)."""

    alg: str = setting("ep", choices=ALGORITHMS, help="learning rule: ep, bptt or cep (continual EP / C-VF: an "
                                                      "optimizer step at every nudged step)")
    estimator: str = setting("symmetric", choices=ESTIMATORS, help="EP gradient estimator")
    beta: float = setting(0.5, low=0.0, low_open=True, help="nudging strength |β|")
    T1: int = setting(20, low=0, help="free-phase steps")
    T2: int = setting(8, low=1, help="nudged-phase steps (BPTT: truncation length)")
    tol: float = setting(0.0, low=0.0, help="end a phase early once ‖s_t − s_{t−1}‖ < tol (0: fixed T1 / T2 steps)")
    tol_every: int = setting(5, low=1, help="check the residual for tol every this many steps")
    order: str = setting("sync", choices=ORDERS, help="layer update order of a step: sync (every layer from s_t, "
                                                      "the code bases' dynamics) or async (even layers, then odd "
                                                      "layers from the new even ones)")
    cep_debug: bool = setting(False, help="cep: the debug procedure (tiny continual steps, then one EP-like step)")
    randbeta: float = setting(0.5, low=0.0, high=1.0, help="random_sign: probability of keeping +β per minibatch")

    @property
    def label(self) -> str:
        """The gradient estimator as the analysis groups it: the EP estimator, ``cep_<estimator>``
        for continual EP, or ``bptt``."""
        if self.alg == "bptt":
            return "bptt"
        return f"cep_{self.estimator}" if self.alg == "cep" else self.estimator

    @property
    def symmetric(self) -> bool:
        """Whether the update contrasts a +β and a −β phase."""
        return self.alg != "bptt" and self.estimator == "symmetric"

    def steps_per_batch(self) -> int:
        """Relaxation steps of one training batch: T1 free steps plus T2 per nudged phase (two
        for the symmetric estimator); BPTT's last T2 steps are inside its T1. With ``tol`` this
        is the most a batch runs (the metric ``train_steps`` says how many ran)."""
        if self.alg == "bptt":
            return self.T1
        if self.alg == "cep" and self.symmetric:  # +β phase, return towards s*, −β phase
            return self.T1 + 3 * self.T2
        return self.T1 + self.T2 * (2 if self.symmetric else 1)


@dataclass
class OptimConfig:
    """Torch optimizer with one parameter group per synapse layer (input -> output)."""

    name: str = setting("sgd", choices=OPTIMIZERS, help="optimizer")
    lrs: list[float] = setting([0.3, 0.15], low=0.0, help="learning rate per synapse layer")
    wds: list[float] | None = setting(None, low=0.0, help="weight decay per synapse layer")
    momentum: float = setting(0.0, low=0.0, high=1.0, help="SGD momentum")
    lr_decay: bool = setting(False, help="cosine decay, T_max 100 epochs, eta_min 1e-5")


@dataclass
class TrainConfig:
    """The epoch loop."""

    epochs: int = setting(5, low=1, help="epochs")
    seed: int = setting(0, low=0, help="seed of every random draw")
    device: str = setting("cpu", help="cpu, cuda, cuda:k or a bare GPU index")
    threads: int | None = setting(None, low=1, help="torch CPU threads (unset: the model family's choice, "
                                                    "1 for MLPs, else one per core)")
    check_thm: bool = setting(False, help="GDU check (EP vs BPTT) once per epoch")
    angle_grad: bool = setting(False, help="log angle_grad: Ψ between the total (C-)EP update and the BPTT gradient, "
                                           "before training (angle_grad_initial) and after every epoch")
    compile: str = setting("none", choices=COMPILE_MODES,
                           help="torch.compile: none; step (the step function); phase (each phase in compiled "
                                "chunks of 10 steps, mode reduce-overhead: on CUDA one CUDA-graph replay per chunk)")
    channels_last: bool = setting(True, help="CNN: channels-last weights and states (CPU: ~2x faster)")
    tf32: bool = setting(False, help="CUDA: allow TF32 in matmuls and convolutions")


SECTIONS = ("data", "model", "rule", "optim", "train")
_FIXED_SECTIONS = {"data": DataConfig, "rule": RuleConfig, "optim": OptimConfig, "train": TrainConfig}
DEFAULT_KIND = "mlp"


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: Any = field(default_factory=lambda: family_of(DEFAULT_KIND).config())
    rule: RuleConfig = field(default_factory=RuleConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @property
    def family(self):
        """The registry entry of ``model.kind``."""
        return family_of(self.model.kind)

    # ------------------------------------------------------------------ conversion
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """``{"rule.beta": 0.5, ...}``: the dotted form used by overrides, Tune and MLflow."""
        out: dict[str, Any] = {}
        for name in SECTIONS:
            out.update(flatten(getattr(self, name), name))
        return out

    def to_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    def replace(self, overrides: Mapping[str, Any]) -> "RunConfig":
        """A validated copy with dotted overrides applied."""
        return from_dict(self.to_dict(), overrides)


def _section_types(kind: str | None = None) -> dict[str, type]:
    model = family_of(kind or DEFAULT_KIND).config
    return {"data": DataConfig, "model": model, **{k: v for k, v in _FIXED_SECTIONS.items() if k != "data"}}


def field_names(kind: str | None = None) -> list[str]:
    """Every dotted leaf field, e.g. ``rule.beta``; the model fields of ``kind``, or of every
    registered family when ``kind`` is None."""
    names: dict[str, None] = {}
    models = [family_of(kind).config] if kind else [f.config for f in families()]
    for name in SECTIONS:
        for cls in (models if name == "model" else [_FIXED_SECTIONS[name]]):
            names.update(dict.fromkeys(leaf_fields(cls, name)))
    return list(names)


def field_help() -> list[tuple[str, str, str]]:
    """(dotted field, what it accepts, help) for every field; model fields per family."""
    rows = []
    for name in SECTIONS:
        if name != "model":
            rows += [(k, allowed(f, t), f.metadata.get("help", "")) for k, (f, t) in
                     leaf_fields(_FIXED_SECTIONS[name], name).items()]
            continue
        for family in families():
            rows += [(f"{k} [{'/'.join(family.kinds)}]", allowed(f, t), f.metadata.get("help", ""))
                     for k, (f, t) in leaf_fields(family.config, name).items() if k != "model.kind"]
    return rows


def from_dict(tree: Mapping[str, Any] | None = None, overrides: Mapping[str, Any] | None = None,
              source: str = "") -> RunConfig:
    """Build and validate a :class:`RunConfig`.

    ``tree`` is the nested form (``{"rule": {"beta": 0.2}}``); ``overrides`` are dotted keys
    (``{"rule.beta": 0.2}``, ``{"model.lca.lam": 0.1}``) applied on top. ``source`` prefixes
    error messages (a file name).
    """
    merged: dict[str, Any] = {s: {} for s in SECTIONS}
    for section, values in (tree or {}).items():
        if section not in SECTIONS:
            raise ConfigError(f"{source}{section}: unknown section; allowed: {', '.join(SECTIONS)}")
        if not isinstance(values, Mapping):
            raise ConfigError(f"{source}{section}: expected a mapping of fields, got {values!r}")
        merged[section] = copy.deepcopy(dict(values))
    for key, value in (overrides or {}).items():
        section, _, rest = key.partition(".")
        if section not in SECTIONS or not rest:
            raise ConfigError(f"{source}{key}: unknown field; allowed: {', '.join(field_names())}")
        set_dotted(merged, key, value)
    kind = merged["model"].get("kind", DEFAULT_KIND)
    if not isinstance(kind, str):
        raise ConfigError(f"{source}model.kind: got {kind!r}; allowed: a model kind")
    family_of(kind, f"{source}model.kind")
    types_ = _section_types(kind)
    cfg = RunConfig(**{s: build_section(types_[s], merged[s], f"{source}{s}") for s in SECTIONS})
    validate(cfg, source)
    return cfg


def validate(cfg: RunConfig, source: str = "") -> None:
    """Checks that involve more than one field (the model section checks its own)."""
    cfg.model.check(f"{source}model")
    check_rule = getattr(cfg.model, "check_rule", None)  # a model section's checks against the rule
    if check_rule is not None:
        check_rule(cfg.rule, f"{source}model")
    n = cfg.model.synapse_count()
    if len(cfg.optim.lrs) != n:
        raise ConfigError(f"{source}optim.lrs: got {cfg.optim.lrs} ({len(cfg.optim.lrs)} values); "
                          f"allowed: exactly {n} values, one per synapse layer (input -> output)")
    if cfg.optim.wds is not None and len(cfg.optim.wds) != n:
        raise ConfigError(f"{source}optim.wds: got {cfg.optim.wds} ({len(cfg.optim.wds)} values); "
                          f"allowed: exactly {n} values, one per synapse layer, or null")
    if cfg.rule.T2 > cfg.rule.T1 and cfg.rule.alg == "bptt":
        raise ConfigError(f"{source}rule.T2: got {cfg.rule.T2}; allowed: <= rule.T1 ({cfg.rule.T1}) "
                          "for BPTT, which back-propagates through the last T2 of the T1 steps")
    _check_device(cfg.train.device, source)


def _check_device(device: str, source: str) -> None:
    d = device.strip()
    if d == "cpu" or d == "cuda" or d.isdigit() or (d.startswith("cuda:") and d[5:].isdigit()):
        return
    raise ConfigError(f"{source}train.device: got {device!r}; allowed: cpu, cuda, cuda:k or a GPU index k")


# ---------------------------------------------------------------------- searched parameters
PARAM_KEY = re.compile(r"^(?P<field>[a-z_]+(\.[A-Za-z0-9_]+)+)(\[(?P<index>\d+)\])?$")


def overrides_from_params(base: Mapping, params: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted overrides for :func:`from_dict` from sampled parameters: ``field`` or one list
    element ``field[i]`` (merged into the base's list). Keys that are not parameters (the base
    tree in a Tune config) are skipped."""
    flat: dict[str, Any] | None = None
    out: dict[str, Any] = {}
    for key, value in params.items():
        m = PARAM_KEY.match(key)
        if m is None:
            continue
        name, index = m["field"], m["index"]
        if index is None:
            out[name] = value
            continue
        if name not in out:
            flat = flat if flat is not None else from_dict(base).flat()
            out[name] = list(flat[name])
        out[name][int(index)] = value
    return out


def resource_overrides(cpus: float, gpus: float) -> dict[str, Any]:
    """Run config fields that follow a trial's resources: torch threads = its CPUs (never more:
    over-subscribed OpenMP threads are many times slower), the device cuda when it has a GPU."""
    return {"train.threads": max(1, int(cpus)), "train.device": "cuda" if gpus > 0 else "cpu"}


# ---------------------------------------------------------------------- files and flags
def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping; a syntax error names the file and line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: expected a mapping of sections ({', '.join(SECTIONS)})")
    return tree


def load_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> RunConfig:
    return from_dict(load_yaml(path), overrides, source=f"{path}: ")


def parse_assignment(text: str) -> tuple[str, Any]:
    """``"rule.beta=0.2"`` -> ``("rule.beta", 0.2)`` with the value read as YAML."""
    key, sep, raw = text.partition("=")
    if not sep:
        raise ConfigError(f"--set {text!r}: expected FIELD=VALUE, e.g. rule.beta=0.2")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    return key.strip(), value
