"""EP (and BPTT) training of every ``model.kind`` the engine builds: mlp, vf_mlp, cnn, vf_cnn."""

from __future__ import annotations


def ep(config: dict) -> None:
    """Ray Tune function trainable of the EP training loop.

    The engine (torch) is imported here, in the trial's process: the search's driver, which only
    hands this function to Tune, never loads it."""
    from trainables.common import run_trial

    run_trial(config)
