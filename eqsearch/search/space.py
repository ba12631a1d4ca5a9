"""Search space files: YAML -> a validated :class:`SearchSpec` and an Optuna define-by-run space.

One file holds everything a search needs::

    name: quickstart                 # names the search (results folder, MLflow experiment)
    trainable: ep                    # training loop (trainables.TRAINABLES); default: the model family's
    base:                            # a run config (data/model/rule/optim/train), validated
      data: {dataset: digits}
      train: {epochs: 6}             # also ASHA's max_t
    space:                           # dotted field -> distribution, sampled in this order
      rule.beta: {loguniform: [0.05, 1.0]}
      rule.T2: {int: [4, 16]}
      optim.lrs[0]: {loguniform: [0.02, 0.5]}        # one element of a per-layer list
      rule.estimator: {choice: [one_sided, symmetric]}
      model.act: {choice: [mysig, tanh], when: {model.kind: [mlp]}}   # condition
    search: {metric: test_acc, mode: max, num_samples: 8, max_concurrent: 2, seed: 0, sampler: tpe}
    scheduler: {asha: {grace_period: 1, reduction_factor: 2}}   # or null: every trial runs all epochs
    resources: {cpu: 1, gpu: 0}      # per trial; fractions allowed
    tracking: {experiment: quickstart, mlflow_uri: null}        # null: sqlite in the results folder

Distributions: ``uniform: [low, high]``, ``loguniform: [low, high]``, ``int: [low, high]``
(inclusive; add ``log: true`` for a log scale), ``choice: [v1, v2, ...]`` (scalars).
``when: {field: [values]}`` makes a parameter exist only when every named field (a parameter
sampled earlier in the file, or a base field) has one of the values.

Validation happens before anything starts: every key is checked, every searched field must be a
real config field, and the bounds and choices of each distribution must give a valid run config
(so a bad value fails now, not in trial 37). A rule between two searched fields (``rule.T2 <=
rule.T1`` under BPTT) cannot be checked per field: a trial whose sampled pair breaks it ends as
``invalid`` with the reason, and the search goes on. Errors name the file, the key, the value and what
is allowed.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from eqsearch.config import PARAM_KEY, RunConfig, field_names, from_dict, overrides_from_params
from eqsearch.errors import ConfigError, SpecError
from eqsearch.families import family_of

KINDS = ("uniform", "loguniform", "int", "choice")
FIXED_BY_SEARCH = {"train.epochs": "it is ASHA's max_t; set it in base",
                   "train.threads": "it follows the trial's CPUs",
                   "train.device": "it follows the trial's GPUs"}
TOP_KEYS = ("name", "description", "trainable", "base", "space", "search", "scheduler", "resources", "tracking")
SEARCH_DEFAULTS = {"metric": "test_acc", "mode": "max", "num_samples": 8, "max_concurrent": 2, "seed": 0,
                   "sampler": "tpe"}
SAMPLERS = ("tpe", "random")  # Optuna's TPESampler (optimisation) or RandomSampler (an unbiased study)
ASHA_DEFAULTS = {"grace_period": 1, "reduction_factor": 2}
RESOURCE_DEFAULTS = {"cpu": 1.0, "gpu": 0.0}
METRICS = ("test_acc", "best_test_acc", "train_acc", "test_loss", "train_loss")
_KEY = PARAM_KEY


@dataclass(frozen=True)
class Param:
    """One searched key: ``field`` (dotted) or one element ``field[index]`` of a list field."""

    key: str
    kind: str
    args: tuple
    log: bool = False
    when: tuple[tuple[str, tuple], ...] = ()

    @property
    def field(self) -> str:
        return _KEY.match(self.key)["field"]

    @property
    def index(self) -> int | None:
        i = _KEY.match(self.key)["index"]
        return None if i is None else int(i)

    def suggest(self, trial) -> Any:
        """Sample this parameter on an Optuna trial."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.key, list(self.args))
        if self.kind == "int":
            return trial.suggest_int(self.key, self.args[0], self.args[1], log=self.log)
        return trial.suggest_float(self.key, self.args[0], self.args[1], log=self.kind == "loguniform")

    def active(self, values: Mapping[str, Any]) -> bool:
        return all(values.get(k) in allowed for k, allowed in self.when)


@dataclass
class SearchSpec:
    """A validated search space file, with CLI overrides applied."""

    name: str
    source: str
    base: dict
    params: list[Param]
    trainable: str = "ep"
    description: str = ""
    search: dict = field(default_factory=lambda: dict(SEARCH_DEFAULTS))
    asha: dict | None = field(default_factory=lambda: dict(ASHA_DEFAULTS))
    resources: dict = field(default_factory=lambda: dict(RESOURCE_DEFAULTS))
    tracking: dict = field(default_factory=dict)

    @property
    def base_config(self) -> RunConfig:
        return from_dict(self.base)

    @property
    def max_epochs(self) -> int:
        return self.base_config.train.epochs

    def run_config(self, params: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> RunConfig:
        """The run config of one trial: base, then the sampled ``params``, then ``extra``."""
        return from_dict(self.base, {**overrides_from_params(self.base, params), **(extra or {})})

    def define_by_run(self) -> "DefineByRun":
        return DefineByRun(self.params, from_dict(self.base).flat())

    def to_tree(self) -> dict:
        """The YAML form (what ``search.yaml`` in the results folder holds)."""
        space = {}
        for p in self.params:
            d: dict[str, Any] = {p.kind: list(p.args)}
            if p.log:
                d["log"] = True
            if p.when:
                d["when"] = {k: list(v) for k, v in p.when}
            space[p.key] = d
        return {"name": self.name, "description": self.description, "trainable": self.trainable,
                "base": self.base, "space": space, "search": self.search,
                "scheduler": {"asha": self.asha} if self.asha else None,
                "resources": self.resources, "tracking": self.tracking}

    def to_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_tree(), sort_keys=False))


class DefineByRun:
    """Optuna define-by-run space (picklable, so the searcher state can be saved)."""

    def __init__(self, params: list[Param], base_flat: dict):
        self.params = params
        self.base_flat = base_flat

    def __call__(self, trial) -> None:
        values = dict(self.base_flat)
        for p in self.params:
            if p.active(values):
                values[p.key] = p.suggest(trial)


# ---------------------------------------------------------------------- loading
def load_spec(path: str | Path, settings: Mapping[str, Any] | None = None,
              sets: Mapping[str, Any] | None = None) -> SearchSpec:
    """Read and validate a search space file.

    ``settings``: overrides of search settings as dotted keys (``search.num_samples``,
    ``resources.cpu``, ``tracking.mlflow_uri``, ...); ``sets``: overrides of base config fields
    (``rule.T1``). Raises :class:`SpecError` naming file, key, value and what is allowed.
    """
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: no such search space file")
    try:
        tree = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: invalid YAML: {exc}") from None
    if not isinstance(tree, dict):
        raise SpecError(f"{path}: expected a mapping with keys {', '.join(TOP_KEYS)}; got {tree!r}")
    tree = copy.deepcopy(tree)
    for key, value in (settings or {}).items():
        section, _, name = key.partition(".")
        if section == "scheduler":
            tree.setdefault("scheduler", {"asha": {}})
            if tree["scheduler"] is None:
                raise SpecError(f"{path}: --{name.replace('_', '-')}: the file has scheduler: null (no ASHA)")
            tree["scheduler"].setdefault("asha", {})[name] = value
        else:
            if not isinstance(tree.setdefault(section, {}), dict):
                raise SpecError(f"{path}: {section}: expected a mapping; got {tree[section]!r}")
            tree[section][name] = value
    return spec_from_tree(tree, str(path), sets)


def spec_from_tree(tree: Mapping, source: str, sets: Mapping[str, Any] | None = None) -> SearchSpec:
    where = f"{source}: "
    unknown = [k for k in tree if k not in TOP_KEYS]
    if unknown:
        raise SpecError(f"{where}{unknown[0]}: unknown key; allowed: {', '.join(TOP_KEYS)}")
    name = tree.get("name") or Path(source).stem
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise SpecError(f"{where}name: got {name!r}; allowed: letters, digits, _ . -")
    base = tree.get("base") or {}
    if not isinstance(base, dict):
        raise SpecError(f"{where}base: expected a run config mapping (data, model, rule, optim, train); got {base!r}")
    try:
        base_cfg = from_dict(base, sets, source=f"{where}base.")
    except ConfigError as exc:
        raise SpecError(str(exc)) from None
    base = base_cfg.to_dict()
    trainable = tree.get("trainable") or family_of(base_cfg.model.kind).trainable
    from trainables import TRAINABLES  # registry of training loops; imports no Ray

    if trainable not in TRAINABLES:
        raise SpecError(f"{where}trainable: got {trainable!r}; allowed: {', '.join(TRAINABLES)}")
    params = _parse_space(tree.get("space"), base, where)
    return SearchSpec(
        name=name, source=source, base=base, params=params, trainable=trainable,
        description=str(tree.get("description") or ""),
        search=_section(tree, "search", SEARCH_DEFAULTS, where, _check_search),
        asha=_parse_scheduler(tree, where),
        resources=_section(tree, "resources", RESOURCE_DEFAULTS, where, _check_resources),
        tracking=_section(tree, "tracking", {"experiment": name, "mlflow_uri": None}, where, _check_tracking),
    )


def _section(tree: Mapping, key: str, defaults: dict, where: str, check) -> dict:
    given = tree.get(key) or {}
    if not isinstance(given, dict):
        raise SpecError(f"{where}{key}: expected a mapping; got {given!r}")
    for k in given:
        if k not in defaults:
            raise SpecError(f"{where}{key}.{k}: unknown key; allowed: {', '.join(defaults)}")
    out = {**defaults, **given}
    check(out, f"{where}{key}.")
    return out


def _bad(where: str, value, allowed: str) -> SpecError:
    return SpecError(f"{where}: got {value!r}; allowed: {allowed}")


def _int_at_least(d: dict, key: str, low: int, where: str) -> None:
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise _bad(f"{where}{key}", v, f"an integer >= {low}")


def _number(d: dict, key: str, where: str, low: float, low_open: bool) -> None:
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < low or (low_open and v == low):
        raise _bad(f"{where}{key}", v, f"a number {'>' if low_open else '>='} {low}")
    d[key] = float(v)


def _check_search(d: dict, where: str) -> None:
    if d["metric"] not in METRICS:
        raise _bad(f"{where}metric", d["metric"], ", ".join(METRICS))
    if d["mode"] not in ("max", "min"):
        raise _bad(f"{where}mode", d["mode"], "max, min")
    _int_at_least(d, "num_samples", 1, where)
    _int_at_least(d, "max_concurrent", 1, where)
    _int_at_least(d, "seed", 0, where)
    if d["sampler"] not in SAMPLERS:
        raise _bad(f"{where}sampler", d["sampler"], ", ".join(SAMPLERS))


def _check_resources(d: dict, where: str) -> None:
    _number(d, "cpu", where, 0.0, True)
    _number(d, "gpu", where, 0.0, False)


def _check_tracking(d: dict, where: str) -> None:
    if not isinstance(d["experiment"], str) or not d["experiment"]:
        raise _bad(f"{where}experiment", d["experiment"], "a non-empty string")
    uri = d["mlflow_uri"]
    if uri is not None and not (isinstance(uri, str) and re.match(r"^(https?|sqlite|postgresql|mysql)", uri)):
        raise _bad(f"{where}mlflow_uri", uri, "null (sqlite in the results folder), http(s)://host:port or a database URI")


def _parse_scheduler(tree: Mapping, where: str) -> dict | None:
    if "scheduler" in tree and tree["scheduler"] is None:
        return None
    sched = tree.get("scheduler", {"asha": {}})
    if not isinstance(sched, dict) or set(sched) - {"asha"}:
        raise _bad(f"{where}scheduler", sched, "{asha: {grace_period, reduction_factor}} or null")
    asha = _section(sched, "asha", ASHA_DEFAULTS, f"{where}scheduler.", lambda d, w: None)
    _int_at_least(asha, "grace_period", 1, f"{where}scheduler.asha.")
    _int_at_least(asha, "reduction_factor", 2, f"{where}scheduler.asha.")
    return asha


def _parse_space(space, base: dict, where: str) -> list[Param]:
    if not isinstance(space, dict) or not space:
        raise SpecError(f"{where}space: expected a mapping of dotted fields to distributions; got {space!r}")
    fields = set(field_names())
    flat = from_dict(base).flat()
    params: list[Param] = []
    for key, dist in space.items():
        at = f"{where}space.{key}"
        m = _KEY.match(str(key))
        if m is None or m["field"] not in fields:
            raise SpecError(f"{at}: unknown field; allowed: a config field ({', '.join(sorted(fields))}), "
                            "optionally with [i] for one element of a list field")
        if m["field"] in FIXED_BY_SEARCH:
            raise SpecError(f"{at}: cannot be searched: {FIXED_BY_SEARCH[m['field']]}")
        if m["index"] is not None:
            current = flat.get(m["field"])
            if not isinstance(current, list) or int(m["index"]) >= len(current):
                raise SpecError(f"{at}: index {m['index']} out of range; allowed: an index into base "
                                f"{m['field']} = {current!r}")
        later = [str(k) for k in space][len(params) + 1:]
        param = _parse_dist(str(key), dist, at, params, {k: v for k, v in flat.items() if k not in later})
        context = {ref: values[0] for ref, values in param.when}  # the condition holds when it exists
        searched = {_KEY.match(str(k))["field"] for k in space} - {param.field}
        for value in _probe_values(param):
            try:
                from_dict(base, overrides_from_params(base, {**context, param.key: value}))
            except ConfigError as exc:
                if _error_field(exc) in searched:
                    continue  # a rule between two searched fields: decided per trial (``invalid``)
                raise SpecError(f"{at}: value {value!r} of {param.kind} is not a valid run config value: {exc}") from None
        params.append(param)
    return params


_ERROR_FIELD = re.compile(r"(?:^|: )([A-Za-z_][\w.]*): got ")


def _error_field(exc: ConfigError) -> str | None:
    """The dotted field a :class:`ConfigError` names ("FIELD: got VALUE; allowed: ...")."""
    m = _ERROR_FIELD.search(str(exc))
    return m.group(1) if m else None


def _parse_dist(key: str, dist, at: str, earlier: list[Param], flat: dict) -> Param:
    allowed = ("one of {uniform: [low, high]}, {loguniform: [low, high]}, {int: [low, high]}, "
               "{choice: [values]}, plus optional when: {field: [values]}")
    if not isinstance(dist, dict):
        raise _bad(at, dist, allowed)
    kinds = [k for k in dist if k in KINDS]
    extra = [k for k in dist if k not in KINDS + ("when", "log")]
    if len(kinds) != 1 or extra:
        raise _bad(at, dist, allowed)
    kind = kinds[0]
    args = dist[kind]
    log = dist.get("log", False)
    if log not in (True, False) or (log and kind != "int"):
        raise _bad(f"{at}.log", log, "true or false, with int only (loguniform is already log)")
    if kind == "choice":
        if not isinstance(args, list) or not args or any(isinstance(a, (list, dict)) for a in args):
            raise _bad(f"{at}.choice", args, "a non-empty list of scalars (numbers, strings, booleans)")
        if len(set(map(repr, args))) != len(args):
            raise _bad(f"{at}.choice", args, "distinct values")
    else:
        num = int if kind == "int" else (int, float)
        if (not isinstance(args, list) or len(args) != 2
                or any(isinstance(a, bool) or not isinstance(a, num) for a in args)):
            what = "integers" if kind == "int" else "numbers"
            raise _bad(f"{at}.{kind}", args, f"[low, high], two {what}")
        low, high = args
        if not low < high:
            raise _bad(f"{at}.{kind}", args, "low < high")
        if (kind == "loguniform" or log) and low <= 0:
            raise _bad(f"{at}.{kind}", args, "low > 0 on a log scale")
        if not all(math.isfinite(a) for a in args):
            raise _bad(f"{at}.{kind}", args, "finite bounds")
    return Param(key, kind, tuple(args), log, _parse_when(dist.get("when"), f"{at}.when", earlier, flat))


def _parse_when(when, at: str, earlier: list[Param], flat: dict) -> tuple:
    if when is None:
        return ()
    if not isinstance(when, dict) or not when:
        raise _bad(at, when, "a mapping {field: [values]} of earlier parameters or base fields")
    out = []
    by_key = {p.key: p for p in earlier}
    for ref, values in when.items():
        values = values if isinstance(values, list) else [values]
        if ref in by_key:
            p = by_key[ref]
            if p.kind == "choice":
                bad = [v for v in values if v not in p.args]
                if bad:
                    raise _bad(f"{at}.{ref}", bad[0], f"values of its choice: {', '.join(map(str, p.args))}")
        elif ref not in flat:
            raise _bad(at, ref, "a parameter listed earlier in space ("
                       + (", ".join(by_key) or "none") + ") or a base config field")
        out.append((ref, tuple(values)))
    return tuple(out)


def _probe_values(p: Param) -> list:
    """Values that stand for the whole distribution when validating it up front."""
    if p.kind == "choice":
        return list(p.args)
    return [p.args[0], p.args[1]]
