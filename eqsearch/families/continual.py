"""Code base B's networks (Ernoult et al., continual EP): discrete-time ("prototypical") and
continuous-time (energy-based, Euler step ``dt``) layered networks with tied (EP) or untied (VF)
weights, trained by EP, C-EP, VF or C-VF (reference §3)."""

from __future__ import annotations

from dataclasses import dataclass

from eqsearch.errors import ConfigError
from eqsearch.families.registry import Family, register
from eqsearch.fields import setting

KINDS = ("ep_disc", "vf_disc", "ep_cont", "vf_cont")


@dataclass
class ContinualConfig:
    """The ``model:`` section of ``ep_disc`` / ``vf_disc`` (dt = 1) and ``ep_cont`` / ``vf_cont``."""

    kind: str = setting("ep_disc", choices=KINDS, help="ep_/vf_ (tied / untied weights) × disc / cont dynamics")
    archi: list[int] = setting([64, 256, 10], low=1, help="layer sizes, input -> output (at least one hidden layer)")
    activation: str = setting("sigm", choices=("sigm", "hardsigm", "tanh"), help="ρ (code base B's §3.2)")
    dt: float = setting(0.2, low=0.0, low_open=True, help="Euler step of the continuous-time models")
    clamp: bool = setting(True, help="continuous-time models: clamp the states to [0, 1]")
    angle: float | None = setting(None, low=0.0, high=180.0, help="vf_*: initial angle (degrees) between each "
                                                                   "backward matrix and the forward one it mirrors")

    @property
    def discrete(self) -> bool:
        return self.kind.endswith("_disc")

    def synapse_count(self) -> int:
        return len(self.archi) - 1

    def summary(self) -> str:
        dyn = "dt=1" if self.discrete else f"dt={self.dt}{' clamp' if self.clamp else ''}"
        angle = f" angle={self.angle}" if self.angle is not None else ""
        return f"{self.kind} {'-'.join(map(str, self.archi))} ρ={self.activation} {dyn}{angle}"

    def check(self, where: str) -> None:
        if len(self.archi) < 3:
            raise ConfigError(f"{where}.archi: got {self.archi}; allowed: input, at least one hidden layer, output")
        if self.angle is not None and not self.kind.startswith("vf_"):
            raise ConfigError(f"{where}.angle: got {self.angle} with model.kind={self.kind!r}; allowed: null, or "
                              "an angle for vf_disc / vf_cont")


FAMILY = register(Family(
    name="continual", kinds=KINDS, config=ContinualConfig, builder="eqsearch.models.continual:build",
    description="code base B's EPdisc / VFdisc / EPcont / VFcont",
    example={"archi": [6, 5, 4, 3], "activation": "hardsigm", "clamp": False, "angle": None},
    example_input=(6,)))
