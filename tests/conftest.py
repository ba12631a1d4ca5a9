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


def autograd_param_grads(model, scalar: torch.Tensor) -> dict[str, torch.Tensor]:
    """∂scalar/∂θ by autograd, keyed by parameter name (zeros where θ does not enter)."""
    names, params = zip(*model.named_parameters())
    grads = torch.autograd.grad(scalar, params, allow_unused=True)
    return {n: torch.zeros_like(p) if g is None else g for n, p, g in zip(names, params, grads)}


def assert_grads_close(got: dict, want: dict, rtol: float = 1e-12, atol: float = 1e-12) -> None:
    """Same parameter names, and every gradient close."""
    assert sorted(got) == sorted(want)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=rtol, atol=atol, msg=lambda m, n=name: f"{n}: {m}")
