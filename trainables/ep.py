"""EP (and BPTT) training of every ``model.kind`` the engine builds: mlp, vf_mlp, cnn, vf_cnn."""

from __future__ import annotations

from trainables.common import run_trial


def ep(config: dict) -> None:
    """Ray Tune function trainable of the EP training loop."""
    run_trial(config)
