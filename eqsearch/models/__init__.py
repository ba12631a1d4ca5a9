"""Energy-based networks, built from a :class:`~eqsearch.config.ModelConfig`.

A new family registers a builder in ``BUILDERS`` and a synapse count in ``synapse_count``;
everything downstream (rules, ``fit()``, trainables) works through :class:`EnergyModel`.
"""

from __future__ import annotations

from typing import Callable

from eqsearch.config import ConfigError, ModelConfig
from eqsearch.models.base import EnergyModel, State, residual, tile_batch, weight_angle
from eqsearch.models.cnn import CNN, VFCNN
from eqsearch.models.mlp import MLP, VFMLP

__all__ = ["EnergyModel", "State", "MLP", "VFMLP", "CNN", "VFCNN", "build_model", "synapse_count",
           "residual", "tile_batch", "weight_angle"]


def _build_mlp(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> EnergyModel:
    n_in = 1
    for d in input_shape:
        n_in *= d
    if cfg.archi[0] != n_in or cfg.archi[-1] != num_classes:
        raise ConfigError(f"model.archi: got {cfg.archi}; allowed: first size = input size {n_in}, "
                          f"last size = number of classes {num_classes} for this data set")
    cls = VFMLP if cfg.kind == "vf_mlp" else MLP
    return cls(cfg.archi, act=cfg.act, loss=cfg.loss, scale=cfg.scale)


def _build_cnn(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> EnergyModel:
    if cfg.fc[-1] != num_classes:
        raise ConfigError(f"model.fc: got {cfg.fc}; allowed: last size = number of classes {num_classes} "
                          "for this data set")
    args = (input_shape, cfg.channels, cfg.kernels, cfg.strides, cfg.paddings, cfg.pools, cfg.fc)
    kwargs = dict(act=cfg.act, loss=cfg.loss, softmax=cfg.softmax, dropouts=cfg.dropouts, scale=cfg.scale)
    if cfg.kind == "vf_cnn":
        return VFCNN(*args, same_update=cfg.same_update, **kwargs)
    return CNN(*args, **kwargs)


BUILDERS: dict[str, Callable[[ModelConfig, tuple[int, ...], int], EnergyModel]] = {
    "mlp": _build_mlp,
    "vf_mlp": _build_mlp,
    "cnn": _build_cnn,
    "vf_cnn": _build_cnn,
}


def build_model(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> EnergyModel:
    """Instantiate the network of ``cfg`` (default PyTorch init, then ``scale``)."""
    if cfg.kind not in BUILDERS:
        raise ConfigError(f"model.kind: got {cfg.kind!r}; allowed: {', '.join(BUILDERS)}")
    return BUILDERS[cfg.kind](cfg, input_shape, num_classes)


def synapse_count(cfg: ModelConfig) -> int:
    """Number of synapse layers (= entries of optim.lrs / optim.wds); for CNNs the softmax
    read-out (the last ``fc`` entry) counts as a synapse with its own lr."""
    if cfg.kind in ("cnn", "vf_cnn"):
        return len(cfg.channels) + len(cfg.fc)
    return len(cfg.archi) - 1
