"""The registry of model families: one entry per family, the only list of model kinds.

A :class:`Family` ties together everything the rest of eqsearch needs to know about a kind of
network: the ``model:`` config section it takes (a dataclass of :mod:`eqsearch.fields`
settings with ``synapse_count()``, ``check(where)`` and optionally ``check_rule(rule, where)``
for checks against the ``rule`` section), the builder of its torch module
(``"module:function"``, imported only when a model is built, so that configs and the CLI
load without torch), its names and defaults in the seed code bases' flags, and the Ray Tune
trainable a search uses by default.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from eqsearch.errors import ConfigError


@dataclass(frozen=True)
class Family:
    """One model family. ``kinds`` are its ``model.kind`` values; ``config`` its model section."""

    name: str
    kinds: tuple[str, ...]
    config: type
    builder: str
    description: str = ""
    seed_models: dict[str, str] = field(default_factory=dict)   # code base A's --model NAME -> kind
    seed_defaults: dict[str, Any] = field(default_factory=dict)  # dotted fields, code base A's defaults
    trainable: str = "ep"
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> dotted fields (--preset NAME)
    # a tiny instance per kind for the contract test: model fields (kind added), input shape, classes
    example: dict[str, Any] = field(default_factory=dict)
    example_input: tuple[int, ...] = ()
    # torch CPU threads of a run that leaves train.threads unset (None: torch's default, one per
    # core); a family whose steps are small matrix products runs faster on one thread
    cpu_threads: int | None = None

    def build(self, cfg, input_shape: tuple[int, ...], num_classes: int):
        """The torch module of ``cfg`` (this family's model section) for the data's shapes."""
        module, _, func = self.builder.partition(":")
        return getattr(importlib.import_module(module), func)(cfg, tuple(input_shape), num_classes)


_FAMILIES: dict[str, Family] = {}  # model.kind -> family


def register(family: Family) -> Family:
    """Add a family; a kind may belong to one family only."""
    for kind in family.kinds:
        if kind in _FAMILIES:
            raise ValueError(f"model kind {kind!r} is registered twice ({_FAMILIES[kind].name}, {family.name})")
        _FAMILIES[kind] = family
    return family


def kinds() -> tuple[str, ...]:
    """Every registered ``model.kind``."""
    return tuple(_FAMILIES)


def families() -> list[Family]:
    """Every registered family, once each, in registration order."""
    out: list[Family] = []
    for family in _FAMILIES.values():
        if all(family is not f for f in out):
            out.append(family)
    return out


def family_of(kind: str, where: str = "model.kind") -> Family:
    if kind not in _FAMILIES:
        raise ConfigError(f"{where}: got {kind!r}; allowed: {', '.join(_FAMILIES)}")
    return _FAMILIES[kind]
