"""The one validated run configuration: data, model, learning rule, optimizer, training.

A run config is a tree of dataclasses. It is built from a nested mapping (a YAML file),
then from dotted overrides (``rule.beta=0.2``, from CLI flags or a search trial), and is
validated field by field before anything runs. Every error names the field (dotted path),
the value it got and what is allowed.

Conventions: per-layer lists (``model.archi``, ``optim.lrs``, ``optim.wds``) are ordered
input -> output. ``rule.beta`` is the nudging strength |β| > 0; its sign is chosen by the
estimator.
"""


import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml


class ConfigError(ValueError):
    """A configuration value is missing, unknown or out of range."""


def _spec(*, choices: tuple | None = None, low: float | None = None, high: float | None = None,
          low_open: bool = False, doc: str = "") -> dict:
    """Metadata for a config field: allowed choices or a numeric range."""
    return {"choices": choices, "low": low, "high": high, "low_open": low_open, "doc": doc}


def _f(default, **spec):
    if isinstance(default, list):
        return field(default_factory=lambda d=default: list(d), metadata=_spec(**spec))
    return field(default=default, metadata=_spec(**spec))


DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10")
MODEL_KINDS = ("mlp", "vf_mlp", "cnn", "vf_cnn")
ACTIVATIONS = ("mysig", "sigmoid", "tanh", "hard_sigmoid", "my_hard_sig", "ctrd_hard_sig")
LOSSES = ("mse", "cel")
ALGORITHMS = ("ep", "bptt")
ESTIMATORS = ("one_sided", "random_sign", "symmetric")
OPTIMIZERS = ("sgd", "adam")


@dataclass
class DataConfig:
    """Where the examples come from and how they are batched."""

    dataset: str = _f("digits", choices=DATASETS, doc="data set")
    root: str | None = _f(None, doc="data root (torchvision layout); env EQSEARCH_DATA")
    batch_size: int = _f(16, low=1, doc="training minibatch size (seed flag --mbs)")
    test_batch_size: int = _f(1000, low=1, doc="evaluation batch size")
    max_batches: int | None = _f(None, low=1, doc="cap on training batches per epoch")
    augment: bool = _f(False, doc="CIFAR-10 flip + crop augmentation (seed flag --data-aug)")


@dataclass
class ModelConfig:
    """The energy-based network. MLP fields first, then the convolutional ones."""

    kind: str = _f("mlp", choices=MODEL_KINDS, doc="network family")
    archi: list[int] = _f([64, 256, 10], low=1, doc="MLP layer sizes, input -> output")
    act: str = _f("mysig", choices=ACTIVATIONS, doc="neuron activation σ")
    loss: str = _f("mse", choices=LOSSES, doc="output loss L")
    scale: float | None = _f(None, low=0.0, low_open=True,
                             doc="multiply the default init of weights and biases")
    channels: list[int] = _f([32, 64], low=1, doc="CNN output channels per conv layer")
    kernels: list[int] = _f([5, 5], low=1, doc="CNN kernel sizes")
    strides: list[int] = _f([1, 1], low=1, doc="CNN strides")
    paddings: list[int] = _f([0, 0], low=0, doc="CNN paddings")
    pools: str = _f("mm", doc="one letter per conv layer: m (max), a (avg), i (identity)")
    fc: list[int] = _f([10], low=1, doc="CNN fully connected sizes after the convs")
    softmax: bool = _f(False, doc="CNN: classifier is a softmax read-out, not a neuron layer")
    same_update: bool = _f(False, doc="VF-CNN: identical updates for forward/backward weights")
    dropouts: list[float] | None = _f(None, low=0.0, high=1.0, low_open=True,
                                      doc="CNN keep probabilities for [x, s_1, ...]")


@dataclass
class RuleConfig:
    """How parameter gradients are obtained."""

    alg: str = _f("ep", choices=ALGORITHMS, doc="learning rule")
    estimator: str = _f("symmetric", choices=ESTIMATORS, doc="EP gradient estimator")
    beta: float = _f(0.5, low=0.0, low_open=True, doc="nudging strength |β|")
    T1: int = _f(20, low=1, doc="free-phase steps")
    T2: int = _f(8, low=1, doc="nudged-phase steps (BPTT truncation length)")


@dataclass
class OptimConfig:
    """Torch optimizer with one parameter group per synapse layer (input -> output)."""

    name: str = _f("sgd", choices=OPTIMIZERS, doc="optimizer")
    lrs: list[float] = _f([0.3, 0.15], low=0.0, doc="learning rate per synapse layer")
    wds: list[float] | None = _f(None, low=0.0, doc="weight decay per synapse layer")
    momentum: float = _f(0.0, low=0.0, high=1.0, doc="SGD momentum")
    lr_decay: bool = _f(False, doc="cosine decay, T_max 100 epochs, eta_min 1e-5")


@dataclass
class TrainConfig:
    """The epoch loop."""

    epochs: int = _f(5, low=1, doc="epochs")
    seed: int = _f(0, low=0, doc="seed of every random draw")
    device: str = _f("cpu", doc="cpu, cuda, cuda:k or a bare GPU index")
    threads: int | None = _f(None, low=1, doc="torch CPU threads")
    check_thm: bool = _f(False, doc="GDU check (EP vs BPTT) once per epoch")
    compile: bool = _f(False, doc="torch.compile the relaxation step (see benchmarks/ep_cnn.py)")
    channels_last: bool = _f(True, doc="CNN: channels-last weights and states (CPU: ~2× faster, "
                                       "benchmarks/ep_cnn.py)")
    tf32: bool = _f(False, doc="CUDA: allow TF32 in matmuls and convolutions")


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    rule: RuleConfig = field(default_factory=RuleConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    # ------------------------------------------------------------------ conversion
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """``{"rule.beta": 0.5, ...}``: the dotted form used by overrides, Tune and MLflow."""
        return {f"{s}.{k}": v for s, sec in self.to_dict().items() for k, v in sec.items()}

    def to_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    def replace(self, overrides: Mapping[str, Any]) -> "RunConfig":
        """A validated copy with dotted overrides applied."""
        return from_dict(self.to_dict(), overrides)


_SECTION_TYPES = {"data": DataConfig, "model": ModelConfig, "rule": RuleConfig,
                  "optim": OptimConfig, "train": TrainConfig}


def field_names() -> list[str]:
    """Every dotted field name, e.g. ``rule.beta``."""
    return [f"{s}.{f.name}" for s, cls in _SECTION_TYPES.items() for f in dataclasses.fields(cls)]


def _allowed(f: dataclasses.Field) -> str:
    m = f.metadata
    if m.get("choices"):
        return "one of " + ", ".join(map(str, m["choices"]))
    base = _base_type(f.type)
    parts = []
    if m.get("low") is not None:
        parts.append(f"{'>' if m['low_open'] else '>='} {m['low']}")
    if m.get("high") is not None:
        parts.append(f"<= {m['high']}")
    what = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        _elem_type(base) if _is_list(base) else base, "a value")
    if _is_list(base):
        what = f"a list of {what.split(' ', 1)[1]}s"
    if _is_optional(f.type):
        what += " or null"
    return what + (" " + " and ".join(parts) if parts else "")


def _is_optional(t) -> bool:
    return isinstance(t, types.UnionType) and type(None) in typing.get_args(t)


def _base_type(t):
    if _is_optional(t):
        return next(a for a in typing.get_args(t) if a is not type(None))
    return t


def _is_list(t) -> bool:
    return typing.get_origin(t) is list


def _elem_type(t):
    return typing.get_args(t)[0]


def _coerce_scalar(value, typ, where: str, f: dataclasses.Field):
    bad = ConfigError(f"{where}: got {value!r}; allowed: {_allowed(f)}")
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise bad
    if typ is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                raise bad from None
        raise bad
    if typ is float:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise bad from None
        raise bad
    if typ is str:
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            return str(value)
        raise bad
    raise TypeError(f"unsupported config type {typ}")


def _check_range(value, where: str, f: dataclasses.Field) -> None:
    m = f.metadata
    if m.get("choices") and value not in m["choices"]:
        raise ConfigError(f"{where}: got {value!r}; allowed: {_allowed(f)}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        low, high = m.get("low"), m.get("high")
        if low is not None and (value < low or (m["low_open"] and value == low)):
            raise ConfigError(f"{where}: got {value!r}; allowed: {_allowed(f)}")
        if high is not None and value > high:
            raise ConfigError(f"{where}: got {value!r}; allowed: {_allowed(f)}")


def _coerce(value, f: dataclasses.Field, where: str):
    if value is None:
        if _is_optional(f.type):
            return None
        raise ConfigError(f"{where}: got null; allowed: {_allowed(f)}")
    typ = _base_type(f.type)
    if _is_list(typ):
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value] if not isinstance(value, str) else value.replace(",", " ").split()
        if not isinstance(value, (list, tuple)) or not value:
            raise ConfigError(f"{where}: got {value!r}; allowed: {_allowed(f)}")
        out = [_coerce_scalar(v, _elem_type(typ), where, f) for v in value]
        for v in out:
            _check_range(v, where, f)
        return out
    out = _coerce_scalar(value, typ, where, f)
    _check_range(out, where, f)
    return out


def _build_section(name: str, values: Mapping[str, Any], source: str) -> Any:
    cls = _SECTION_TYPES[name]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"{source}{name}.{key}: unknown field; allowed: {', '.join(fields)}")
        kwargs[key] = _coerce(value, fields[key], f"{source}{name}.{key}")
    return cls(**kwargs)


def from_dict(tree: Mapping[str, Any] | None = None, overrides: Mapping[str, Any] | None = None,
              source: str = "") -> RunConfig:
    """Build and validate a :class:`RunConfig`.

    ``tree`` is the nested form (``{"rule": {"beta": 0.2}}``); ``overrides`` are dotted keys
    (``{"rule.beta": 0.2}``) applied on top. ``source`` prefixes error messages (a file name).
    """
    merged: dict[str, dict] = {s: {} for s in _SECTION_TYPES}
    for section, values in (tree or {}).items():
        if section not in _SECTION_TYPES:
            raise ConfigError(f"{source}{section}: unknown section; allowed: {', '.join(_SECTION_TYPES)}")
        if not isinstance(values, Mapping):
            raise ConfigError(f"{source}{section}: expected a mapping of fields, got {values!r}")
        merged[section].update(values)
    for key, value in (overrides or {}).items():
        section, _, name = key.partition(".")
        if section not in _SECTION_TYPES or not name:
            raise ConfigError(f"{key}: unknown field; allowed: {', '.join(field_names())}")
        merged[section][name] = value
    cfg = RunConfig(**{s: _build_section(s, v, source) for s, v in merged.items()})
    validate(cfg, source)
    return cfg


def validate(cfg: RunConfig, source: str = "") -> None:
    """Checks that involve more than one field."""
    from eqsearch.models import synapse_count  # local: models depend on config

    if cfg.model.kind in ("mlp", "vf_mlp") and len(cfg.model.archi) < 2:
        raise ConfigError(f"{source}model.archi: got {cfg.model.archi}; allowed: at least 2 sizes "
                          "(input and output)")
    n = synapse_count(cfg.model)
    if len(cfg.optim.lrs) != n:
        raise ConfigError(f"{source}optim.lrs: got {cfg.optim.lrs} ({len(cfg.optim.lrs)} values); "
                          f"allowed: exactly {n} values, one per synapse layer (input -> output)")
    if cfg.optim.wds is not None and len(cfg.optim.wds) != n:
        raise ConfigError(f"{source}optim.wds: got {cfg.optim.wds} ({len(cfg.optim.wds)} values); "
                          f"allowed: exactly {n} values, one per synapse layer, or null")
    if cfg.rule.T2 > cfg.rule.T1 and cfg.rule.alg == "bptt":
        raise ConfigError(f"{source}rule.T2: got {cfg.rule.T2}; allowed: <= rule.T1 ({cfg.rule.T1}) "
                          "for BPTT, which back-propagates through the last T2 of the T1 steps")
    _check_cnn(cfg.model, source)
    _check_device(cfg.train.device, source)


POOL_LETTERS = "mai"


def _check_cnn(m: ModelConfig, source: str) -> None:
    """Cross-field checks of the convolutional fields (only for cnn / vf_cnn, except the
    flags that exist only for CNNs)."""
    if m.same_update and m.kind != "vf_cnn":
        raise ConfigError(f"{source}model.same_update: got true with model.kind={m.kind!r}; "
                          "allowed: true only for vf_cnn")
    if m.dropouts is not None and m.kind not in ("cnn", "vf_cnn"):
        raise ConfigError(f"{source}model.dropouts: got {m.dropouts} with model.kind={m.kind!r}; "
                          "allowed: null, or keep probabilities for cnn / vf_cnn")
    if m.kind not in ("cnn", "vf_cnn"):
        return
    n = len(m.channels)
    for name in ("kernels", "strides", "paddings", "pools"):
        value = getattr(m, name)
        if len(value) != n:
            raise ConfigError(f"{source}model.{name}: got {value!r} ({len(value)} entries); allowed: "
                              f"exactly {n} entries, one per conv layer (model.channels = {m.channels})")
    bad = sorted(set(m.pools) - set(POOL_LETTERS))
    if bad:
        raise ConfigError(f"{source}model.pools: got {m.pools!r}; allowed: one letter per conv layer, "
                          "each m (max), a (average) or i (identity)")
    if m.softmax and m.loss != "cel":
        raise ConfigError(f"{source}model.softmax: got true with model.loss={m.loss!r}; allowed: "
                          "the softmax read-out only with loss cel")
    if m.dropouts is not None:
        layers = n + len(m.fc) - (1 if m.softmax else 0)
        if len(m.dropouts) != layers + 1:
            raise ConfigError(f"{source}model.dropouts: got {m.dropouts} ({len(m.dropouts)} values); "
                              f"allowed: {layers + 1} keep probabilities, for the input and each of the "
                              f"{layers} neuron layers")
        if m.dropouts[-1] != 1.0:
            raise ConfigError(f"{source}model.dropouts: got last keep probability {m.dropouts[-1]}; "
                              "allowed: 1.0 (the layer the loss reads is not dropped)")


def _check_device(device: str, source: str) -> None:
    d = device.strip()
    if d == "cpu" or d == "cuda" or d.isdigit() or (d.startswith("cuda:") and d[5:].isdigit()):
        return
    raise ConfigError(f"{source}train.device: got {device!r}; allowed: cpu, cuda, cuda:k or a GPU index k")


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
        raise ConfigError(f"{path}: expected a mapping of sections (data, model, rule, optim, train)")
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
