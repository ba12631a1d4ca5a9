"""Code base C's energy models (Scellier & Bengio's layered energies): ``cond_gaussian`` and
``restr_hopfield``, relaxed by explicit gradient descent on E (reference §4)."""

from __future__ import annotations

from dataclasses import dataclass

from eqsearch.errors import ConfigError
from eqsearch.families.registry import Family, register
from eqsearch.fields import setting

NONLINEARITIES = ("relu", "leaky_relu", "sigmoid", "tanh", "hard_sigmoid", "softplus")
COSTS = ("squared_error", "cross_entropy")


@dataclass
class EnergyConfig:
    """The ``model:`` section of ``cond_gaussian`` / ``restr_hopfield``. The relaxation lengths are
    the rule's ``T1`` (free) and ``T2`` (nudged): code base C's ``n_relax`` is both."""

    kind: str = setting("cond_gaussian", choices=("cond_gaussian", "restr_hopfield"),
                        help="the energy E (reference §4.3)")
    archi: list[int] = setting([64, 256, 10], low=1, help="layer sizes u_0 (input) ... u_L (output)")
    nonlinearity: str = setting("sigmoid", choices=NONLINEARITIES, help="φ_l of the layers l >= 1")
    cost: str = setting("squared_error", choices=COSTS, help="C, added to E with weight β, on the raw u_L")
    dt: float = setting(0.1, low=0.0, low_open=True, help="Euler step of u ← u − (dt/τ)·∂E/∂u")
    tau: float = setting(1.0, low=0.0, low_open=True, help="time constant τ")
    fast_ff_init: bool = setting(False, help="cond_gaussian: start each free phase at its exact feed-forward "
                                             "equilibrium (then rule.T1 may be 0)")
    init: str = setting("normal", choices=("normal", "zeros"), help="initial state without fast_ff_init: "
                                                                    "N(0, 1) per batch (code base C) or zeros")

    def synapse_count(self) -> int:
        return len(self.archi) - 1

    def summary(self) -> str:
        ff = " fast-ff-init" if self.fast_ff_init else ""
        return (f"{self.kind} {'-'.join(map(str, self.archi))} φ={self.nonlinearity} cost={self.cost} "
                f"dt={self.dt} τ={self.tau}{ff}")

    def check(self, where: str) -> None:
        if len(self.archi) < 2:
            raise ConfigError(f"{where}.archi: got {self.archi}; allowed: at least 2 sizes (input and output)")
        if self.fast_ff_init and self.kind != "cond_gaussian":
            raise ConfigError(f"{where}.fast_ff_init: got true with model.kind={self.kind!r}; allowed: true only "
                              "for cond_gaussian (the only energy with a feed-forward zero-energy state)")


# code base C's etc/energy_*.json (reference §4.9) as dotted fields: n_relax is T2 and, without
# fast_ff_init, T1 (with it the free phase is the feed-forward pass, T1 = 0, as in C)
PRESETS = {
    "cond_gaussian": {
        "data.dataset": "mnist", "data.batch_size": 100, "data.normalize": "mnist",
        "model.kind": "cond_gaussian", "model.archi": [784, 1000, 10], "model.nonlinearity": "sigmoid",
        "model.cost": "cross_entropy", "model.dt": 0.1, "model.tau": 1.0, "model.fast_ff_init": True,
        "rule.alg": "ep", "rule.estimator": "one_sided", "rule.beta": 1.0, "rule.T1": 0, "rule.T2": 20,
        "optim.name": "adam", "optim.lrs": [0.001, 0.001], "train.epochs": 50},
    "restr_hopfield": {
        "data.dataset": "mnist", "data.batch_size": 100, "data.normalize": "mnist",
        "model.kind": "restr_hopfield", "model.archi": [784, 1000, 10], "model.nonlinearity": "sigmoid",
        "model.cost": "squared_error", "model.dt": 0.1, "model.tau": 1.0, "model.fast_ff_init": False,
        "rule.alg": "ep", "rule.estimator": "one_sided", "rule.beta": 1.0, "rule.T1": 50, "rule.T2": 50,
        "optim.name": "adam", "optim.lrs": [0.001, 0.001], "train.epochs": 100},
}

FAMILY = register(Family(
    name="energy", kinds=("cond_gaussian", "restr_hopfield"), config=EnergyConfig,
    builder="eqsearch.models.energy:build", description="code base C's energies", presets=PRESETS,
    example={"archi": [6, 5, 4, 3], "nonlinearity": "tanh", "cost": "cross_entropy"}, example_input=(6,)))
