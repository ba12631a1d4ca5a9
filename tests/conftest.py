"""Shared fixtures: tiny float64 networks and the optional real data of ../shared."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _isolate_cache(tmp_path_factory, monkeypatch):
    """Keep data caches of tests out of the user's home."""
    monkeypatch.setenv("EQSEARCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data with the MNIST files, or skip."""
    if not (SHARED_DATA / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("../shared/data (MNIST raw files) is not present")
    return SHARED_DATA


def random_state(model, batch: int, gen: torch.Generator, low: float = 0.0, high: float = 1.0):
    """Random neuron states in [low, high) for ``model``'s layers (float64)."""
    drive = model.input_drive(torch.zeros(batch, *model_input_shape(model), dtype=torch.float64))
    return [low + (high - low) * torch.rand(s.shape, generator=gen, dtype=torch.float64)
            for s in model.init_state(drive)]


def model_input_shape(model):
    return (model.archi[0],)
