"""Every error eqsearch raises on purpose, in one place.

Each message names what is wrong (a field, a file, a value) and what is allowed, so that the CLI
can print it as one line.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value is missing, unknown or out of range."""


class SpecError(ConfigError):
    """A search space file (or a CLI override of it) is invalid."""


class DataError(RuntimeError):
    """A data set cannot be found or read; the message says how to get it."""


class GradientMappingError(RuntimeError):
    """A learning rule produced gradients that do not match the model's trained parameters."""


class DivergedError(RuntimeError):
    """Training produced a non-finite loss; ``reason`` says where."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class AnalysisError(ValueError):
    """The input is not a search (or names an unknown metric or field)."""
