"""Energy-based networks (torch modules) of every family, and :func:`build_model`.

Which module builds which ``model.kind`` is the registry's business (:mod:`eqsearch.families`);
everything downstream (rules, ``fit()``, trainables) works through :class:`EnergyModel`.
"""

from __future__ import annotations

from eqsearch.families import family_of
from eqsearch.models.base import EnergyModel, Grads, State, residual, tile_batch, weight_angle
from eqsearch.models.cnn import CNN, VFCNN
from eqsearch.models.lca import LCA
from eqsearch.models.lca_cnn import LCACNN
from eqsearch.models.mlp import MLP, VFMLP

__all__ = ["EnergyModel", "Grads", "State", "MLP", "VFMLP", "CNN", "VFCNN", "LCA", "LCACNN", "build_model",
           "residual", "tile_batch", "weight_angle"]


def build_model(cfg, input_shape: tuple[int, ...], num_classes: int) -> EnergyModel:
    """Instantiate the network of the model section ``cfg`` (default PyTorch init, then ``scale``)."""
    return family_of(cfg.kind).build(cfg, input_shape, num_classes)
