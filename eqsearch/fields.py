"""Typed, validated configuration sections: dataclasses whose fields carry allowed values.

A section is a dataclass; each field is declared with :func:`setting` (default, allowed choices
or numeric range, one-line help). A field whose type is itself a section dataclass is a nested
section (a YAML mapping, dotted paths such as ``model.lca.lam``). :func:`build_section` turns a
mapping into a section, coercing and checking every value; every error names the dotted field,
the value it got and what is allowed. Imports nothing of eqsearch but its errors, so that the
family modules, the run config and the CLI can all use it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import field
from typing import Any, Mapping

from eqsearch.errors import ConfigError


def setting(default, *, choices: tuple | None = None, low: float | None = None, high: float | None = None,
            low_open: bool = False, help: str = ""):
    """A section field: its default, allowed choices or range [low, high] (``low_open``: > low),
    and the one-line help shown by ``eqsearch train --help``."""
    meta = {"choices": choices, "low": low, "high": high, "low_open": low_open, "help": help}
    if isinstance(default, list):
        return field(default_factory=lambda d=default: list(d), metadata=meta)
    if dataclasses.is_dataclass(default):
        return field(default_factory=lambda d=default: dataclasses.replace(d), metadata=meta)
    return field(default=default, metadata=meta)


def is_section(t) -> bool:
    return isinstance(t, type) and dataclasses.is_dataclass(t)


def _is_optional(t) -> bool:
    return isinstance(t, types.UnionType) and type(None) in typing.get_args(t)


def _base_type(t):
    if _is_optional(t):
        return next(a for a in typing.get_args(t) if a is not type(None))
    return t


def _is_list(t) -> bool:
    return typing.get_origin(t) is list


def _field_type(cls, f: dataclasses.Field):
    """The resolved annotation of ``f`` (sections may use postponed annotations)."""
    return typing.get_type_hints(cls)[f.name]


def allowed(f: dataclasses.Field, typ) -> str:
    """What ``f`` accepts, in words (used by error messages and help)."""
    m = f.metadata
    if m.get("choices"):
        return "one of " + ", ".join(map(str, m["choices"]))
    base = _base_type(typ)
    parts = []
    if m.get("low") is not None:
        parts.append(f"{'>' if m['low_open'] else '>='} {m['low']}")
    if m.get("high") is not None:
        parts.append(f"<= {m['high']}")
    elem = typing.get_args(base)[0] if _is_list(base) else base
    what = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(elem, "a value")
    if _is_list(base):
        what = f"a list of {what.split(' ', 1)[1]}s"
    if _is_optional(typ):
        what += " or null"
    return what + (" " + " and ".join(parts) if parts else "")


def _coerce_scalar(value, typ, bad: ConfigError):
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise bad
    if isinstance(value, bool):
        raise bad
    if typ is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, (int, str)):
            try:
                return int(value)
            except ValueError:
                raise bad from None
        raise bad
    if typ is float:
        if isinstance(value, (int, float, str)):
            try:
                return float(value)
            except ValueError:
                raise bad from None
        raise bad
    if typ is str:
        if isinstance(value, (str, int)):
            return str(value)
        raise bad
    raise TypeError(f"unsupported config type {typ}")


def _check_range(value, f: dataclasses.Field, typ, where: str) -> None:
    m = f.metadata
    bad = ConfigError(f"{where}: got {value!r}; allowed: {allowed(f, typ)}")  # the value as coerced
    if m.get("choices") and value not in m["choices"]:
        raise bad
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        low, high = m.get("low"), m.get("high")
        if low is not None and (value < low or (m["low_open"] and value == low)):
            raise bad
        if high is not None and value > high:
            raise bad


def coerce(value, f: dataclasses.Field, typ, where: str):
    """``value`` as the type of field ``f``, checked against its choices / range."""
    if value is None:
        if _is_optional(typ):
            return None
        raise ConfigError(f"{where}: got null; allowed: {allowed(f, typ)}")
    base = _base_type(typ)
    # a word field given a boolean: YAML (a config file, --set, trials.csv) read off / no as false
    hint = " (YAML reads on / off, yes / no as booleans)" if isinstance(value, bool) and base is str else ""
    bad = ConfigError(f"{where}: got {value!r}{hint}; allowed: {allowed(f, typ)}")
    if _is_list(base):
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = value.replace(",", " ").split() if isinstance(value, str) else [value]
        if not isinstance(value, (list, tuple)) or not value:
            raise bad
        out = [_coerce_scalar(v, typing.get_args(base)[0], bad) for v in value]
        for v in out:
            _check_range(v, f, typ, where)
        return out
    out = _coerce_scalar(value, base, bad)
    _check_range(out, f, typ, where)
    return out


def build_section(cls, values: Mapping[str, Any] | Any, where: str):
    """An instance of section ``cls`` from a mapping (nested sections from nested mappings).

    ``where`` is the dotted path of the section in error messages (with any file prefix)."""
    if isinstance(values, cls):
        values = dataclasses.asdict(values)
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where}: expected a mapping of fields, got {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"{where}.{key}: unknown field; allowed: {', '.join(fields)}")
        typ = _field_type(cls, fields[key])
        at = f"{where}.{key}"
        kwargs[key] = build_section(typ, value, at) if is_section(typ) else coerce(value, fields[key], typ, at)
    return cls(**kwargs)


def flatten(section, prefix: str) -> dict[str, Any]:
    """``{"model.archi": [...], "model.lca.lam": 0.1, ...}``: dotted leaf fields of a section."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        key = f"{prefix}.{f.name}"
        if dataclasses.is_dataclass(value):
            out.update(flatten(value, key))
        else:
            out[key] = value
    return out


def leaf_fields(cls, prefix: str) -> dict[str, tuple[dataclasses.Field, Any]]:
    """Dotted name -> (field, type) of every leaf field of section ``cls``."""
    out = {}
    for f in dataclasses.fields(cls):
        typ = _field_type(cls, f)
        key = f"{prefix}.{f.name}"
        if is_section(typ):
            out.update(leaf_fields(typ, key))
        else:
            out[key] = (f, typ)
    return out


def set_dotted(tree: dict, path: str, value) -> None:
    """``tree["a"]["b"] = value`` for ``path = "a.b"``, creating mappings on the way."""
    *parents, last = path.split(".")
    node = tree
    for p in parents:
        nxt = node.get(p)
        if not isinstance(nxt, dict):
            nxt = {} if nxt is None or not dataclasses.is_dataclass(nxt) else dataclasses.asdict(nxt)
            node[p] = nxt
        node = nxt
    node[last] = value
