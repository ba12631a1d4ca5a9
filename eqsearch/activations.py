"""Neuron activations σ of code base A (§2.2 of the reference), by their seed names.

Each σ is written as σ(g) = f(a·g + c): an affine map (gain ``a``, shift ``c``) followed by
an outer function ``f``. The relaxation folds a and c into per-batch constants and matmul
scaling, so that a step applies only ``f`` (e.g. mysig = sigmoid(4g − 2): a = 4, c = −2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


def _clamp01(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(0.0, 1.0)


def _clamp_half(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(-0.5, 0.5)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _clamp01_(x: torch.Tensor) -> torch.Tensor:
    return x.clamp_(0.0, 1.0)


def _clamp_half_(x: torch.Tensor) -> torch.Tensor:
    return x.clamp_(-0.5, 0.5)


@dataclass(frozen=True)
class Activation:
    """σ(g) = outer(gain·g + shift); ``outer_`` is ``outer`` in place (it returns its argument)."""

    name: str
    outer: Callable[[torch.Tensor], torch.Tensor]
    outer_: Callable[[torch.Tensor], torch.Tensor]
    gain: float = 1.0
    shift: float = 0.0

    def __call__(self, g: torch.Tensor) -> torch.Tensor:
        """σ(g); the affine map costs a pass over g only when it is not the identity."""
        if self.gain != 1.0:
            g = g * self.gain
        if self.shift != 0.0:
            g = g + self.shift
        return self.outer(g)


ACTIVATIONS: dict[str, Activation] = {
    # logistic with slope 1 at 0.5: 1 / (1 + exp(−4(g − 0.5)))
    "mysig": Activation("mysig", torch.sigmoid, torch.sigmoid_, 4.0, -2.0),
    "sigmoid": Activation("sigmoid", torch.sigmoid, torch.sigmoid_),
    "tanh": Activation("tanh", torch.tanh, torch.tanh_),
    # clamp(g, 0, 1) (the final code's meaning of the name)
    "hard_sigmoid": Activation("hard_sigmoid", _clamp01, _clamp01_),
    # clamp(g/2, 0, 1): slope 1/2 on [0, 2]; every CIFAR-10 result of code base A
    "my_hard_sig": Activation("my_hard_sig", _clamp01, _clamp01_, 0.5),
    # clamp(g, −1/2, 1/2)
    "ctrd_hard_sig": Activation("ctrd_hard_sig", _clamp_half, _clamp_half_),
}

IDENTITY = Activation("identity", _identity, _identity)


def get_activation(name: str) -> Activation:
    return ACTIVATIONS[name]
