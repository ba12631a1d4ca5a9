"""The search spaces shipped with eqsearch (YAML files beside this module, installed as package
data so that ``eqsearch search quickstart`` works from any install)."""

from __future__ import annotations

from pathlib import Path

DIR = Path(__file__).resolve().parent


def shipped() -> dict[str, Path]:
    """Name (file stem) -> path of every shipped space."""
    return {p.stem: p for p in sorted(DIR.glob("*.yaml"))}


def resolve(space: str | Path) -> Path:
    """``space`` itself when it is a file, else the shipped space of that name (if any)."""
    path = Path(space)
    if path.is_file() or path.suffix in (".yaml", ".yml"):
        return path
    return shipped().get(str(space), path)
