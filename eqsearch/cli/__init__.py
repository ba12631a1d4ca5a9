"""The ``eqsearch`` command. Each module under ``eqsearch.cli`` registers its commands here."""

from __future__ import annotations

import click

CONTEXT = {"help_option_names": ["-h", "--help"]}


@click.group(context_settings=CONTEXT)
def main() -> None:
    """eqsearch: run, search and compare Equilibrium Propagation training runs."""


def _register() -> None:
    from eqsearch.cli import run_commands  # noqa: F401  (commands register on import)
    from eqsearch.cli import search_commands  # noqa: F401
    from eqsearch.cli import analysis_commands  # noqa: F401
    from eqsearch.cli import lca_commands  # noqa: F401


_register()
