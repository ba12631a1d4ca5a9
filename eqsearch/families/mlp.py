"""Code base A's multilayer networks: ``mlp`` (P_MLP, tied weights) and ``vf_mlp`` (VF_MLP)."""

from __future__ import annotations

from dataclasses import dataclass

from eqsearch.errors import ConfigError
from eqsearch.families.registry import Family, register
from eqsearch.fields import setting

ACTIVATIONS = ("mysig", "sigmoid", "tanh", "hard_sigmoid", "my_hard_sig", "ctrd_hard_sig")
LOSSES = ("mse", "cel")


@dataclass
class MLPConfig:
    """The ``model:`` section of ``mlp`` / ``vf_mlp``."""

    kind: str = setting("mlp", choices=("mlp", "vf_mlp"), help="mlp (tied weights) or vf_mlp (untied backward weights)")
    archi: list[int] = setting([64, 256, 10], low=1, help="layer sizes, input -> output")
    act: str = setting("mysig", choices=ACTIVATIONS, help="neuron activation σ")
    loss: str = setting("mse", choices=LOSSES, help="mse (σ on the output) or cel (linear output, cross-entropy)")
    scale: float | None = setting(None, low=0.0, low_open=True, help="multiply the default init of weights and biases")

    def summary(self) -> str:
        return f"{self.kind} {'-'.join(map(str, self.archi))} act={self.act} loss={self.loss}"

    def synapse_count(self) -> int:
        """Entries of optim.lrs / optim.wds: one per weight matrix."""
        return len(self.archi) - 1

    def check(self, where: str) -> None:
        if len(self.archi) < 2:
            raise ConfigError(f"{where}.archi: got {self.archi}; allowed: at least 2 sizes (input and output)")


FAMILY = register(Family(
    name="mlp", kinds=("mlp", "vf_mlp"), config=MLPConfig, builder="eqsearch.models.mlp:build",
    description="code base A's P_MLP / VF_MLP",
    seed_models={"MLP": "mlp", "VFMLP": "vf_mlp"},
    seed_defaults={"model.archi": [784, 512, 10], "model.act": "mysig", "model.loss": "mse"},
    example={"archi": [6, 5, 4, 3], "act": "tanh", "loss": "mse"}, example_input=(6,),
    # one thread: the seed MLP batch 3.3 ms vs 3.6 ms on two (benchmarks/ep_mlp.py), and no
    # OpenMP contention when the machine is busy (a digits epoch 0.4 s vs 2.5-3.9 s on two)
    cpu_threads=1))
