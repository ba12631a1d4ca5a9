"""The ``eqsearch`` command. Each module under ``eqsearch.cli`` registers its commands here."""

from __future__ import annotations

import atexit
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

# The process's exit status, for :func:`_end_process` (1 until a command's status is known: an
# uncaught exception exits 1).
_status = 1


def _end_process() -> None:
    """The last exit handler (registered before any library registers its own): once the others
    have run (Ray's shutdown, multiprocessing's children, MLflow's and logging's flushes), end the
    process with its status and skip the interpreter's teardown of the loaded modules, which
    only frees memory: 0.5-0.9 s measured here once torch is loaded, 1.5 s after a search (torch,
    Ray's core worker, MLflow, Optuna)."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_status)


def _exit_status(code) -> int:
    """The status Python gives ``SystemExit(code)``: None is 0, an int itself; other values are
    printed to stderr and give 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def run() -> None:
    """The console script: :func:`main`; the process ends through :func:`_end_process`."""
    global _status
    atexit.register(_end_process)
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code
    _status = _exit_status(code)
    raise SystemExit(_status)
