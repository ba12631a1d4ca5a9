"""The few Ray Tune calls a trainable makes, in one place (the other trainable modules import no Ray).

Inside a trial: the trial's resources, its folder, the checkpoint Tune restored it from, and
``report`` (metrics of one epoch plus a checkpoint made of one file).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from ray import tune


def trial_resources() -> tuple[float, float]:
    """(CPUs, GPUs) given to the running trial."""
    req = tune.get_context().get_trial_resources().required_resources
    return float(req.get("CPU", 1.0)), float(req.get("GPU", 0.0))


def trial_dir() -> Path:
    """The trial's folder; files written there are kept with the trial's results."""
    return Path(tune.get_context().get_trial_dir())


@contextlib.contextmanager
def restored_file(name: str) -> Iterator[Path | None]:
    """The file ``name`` of the checkpoint Tune restores this trial from, or None (fresh trial)."""
    ckpt = tune.get_checkpoint()
    if ckpt is None:
        yield None
        return
    with ckpt.as_directory() as d:
        path = Path(d) / name
        yield path if path.exists() else None


def report(metrics: dict, checkpoint_file: Path) -> None:
    """Report one epoch's metrics with ``checkpoint_file`` as the trial's checkpoint.

    When the scheduler stops the trial, Ray raises ``SystemExit`` from here.
    """
    with tempfile.TemporaryDirectory(prefix="eqs-ckpt-") as tmp:
        shutil.copy2(checkpoint_file, Path(tmp) / checkpoint_file.name)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))
