"""The ``eqsearch`` command. Each module under ``eqsearch.cli`` registers its commands here."""

from __future__ import annotations

import logging
import os
import sys

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

# Commands whose work is over when they return: every file written and closed, nothing to shut
# down (no Ray, MLflow or child process). Their process ends with os._exit once the output is
# flushed, skipping the interpreter's teardown of torch's modules (0.5-0.9 s measured here once
# torch and torch._dynamo, which torch.optim imports, are loaded).
FAST_EXIT = frozenset({"train", "evaluate", "gducheck"})
NEEDS_TEARDOWN = ("ray", "mlflow")  # modules whose exit handlers must run


def _teardown_needed() -> bool:
    """Whether exit handlers have work: one of :data:`NEEDS_TEARDOWN` imported, or child processes
    (torch imports multiprocessing; only live children need its handler)."""
    if any(name in sys.modules for name in NEEDS_TEARDOWN):
        return True
    mp = sys.modules.get("multiprocessing")
    return bool(mp and mp.active_children())


def run() -> None:
    """The console script: :func:`main`, then a plain exit, or for a :data:`FAST_EXIT` command
    (and no exit handler with work, :func:`_teardown_needed`) an immediate one, same status."""
    command = next((a for a in sys.argv[1:] if not a.startswith("-")), None)
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code
    if command in FAST_EXIT and (code is None or isinstance(code, int)) \
            and not _teardown_needed():
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code or 0)
    sys.exit(code)
