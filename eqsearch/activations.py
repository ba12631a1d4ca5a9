"""Neuron activations σ of code base A (§2.2 of the reference), by their seed names."""

from __future__ import annotations

from typing import Callable

import torch

Activation = Callable[[torch.Tensor], torch.Tensor]


def mysig(x: torch.Tensor) -> torch.Tensor:
    """Logistic with slope 1 at 0.5: 1 / (1 + exp(-4 (x - 0.5)))."""
    return torch.sigmoid(4.0 * x - 2.0)


def hard_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """clamp(x, 0, 1) (the final code's meaning of the name)."""
    return x.clamp(0.0, 1.0)


def my_hard_sig(x: torch.Tensor) -> torch.Tensor:
    """clamp(x / 2, 0, 1): slope 1/2 on [0, 2]; every CIFAR-10 result of code base A."""
    return (0.5 * x).clamp(0.0, 1.0)


def ctrd_hard_sig(x: torch.Tensor) -> torch.Tensor:
    """clamp(x, -1/2, 1/2)."""
    return x.clamp(-0.5, 0.5)


ACTIVATIONS: dict[str, Activation] = {
    "mysig": mysig,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "hard_sigmoid": hard_sigmoid,
    "my_hard_sig": my_hard_sig,
    "ctrd_hard_sig": ctrd_hard_sig,
}


def get_activation(name: str) -> Activation:
    return ACTIVATIONS[name]
