"""Code base A's convolutional networks: ``cnn`` (P_CNN) and ``vf_cnn`` (VF_CNN)."""

from __future__ import annotations

from dataclasses import dataclass

from eqsearch.errors import ConfigError
from eqsearch.families.mlp import ACTIVATIONS, LOSSES
from eqsearch.families.registry import Family, register
from eqsearch.fields import setting

POOL_LETTERS = "mai"  # max, average, identity (2×2, stride 2)


@dataclass
class ConvLayers:
    """What the convolutional families share: conv layers, then fully connected ones (the last
    one the classes), the neuron activation and the loss. A family's section subclasses this and
    redeclares ``kind`` with its own kinds."""

    kind: str = setting("cnn", help="the model kind")
    channels: list[int] = setting([32, 64], low=1, help="output channels per conv layer")
    kernels: list[int] = setting([5, 5], low=1, help="kernel size per conv layer")
    strides: list[int] = setting([1, 1], low=1, help="stride per conv layer")
    paddings: list[int] = setting([0, 0], low=0, help="padding per conv layer")
    pools: str = setting("mm", help="one letter per conv layer: m (max), a (average), i (identity)")
    fc: list[int] = setting([10], low=1, help="fully connected sizes after the convs (last = classes)")
    act: str = setting("mysig", choices=ACTIVATIONS, help="neuron activation σ")
    loss: str = setting("mse", choices=LOSSES, help="mse or cel")
    softmax: bool = setting(False, help="with cel: the classifier is a softmax read-out, not a neuron layer")
    scale: float | None = setting(None, low=0.0, low_open=True, help="multiply the default init of weights and biases")

    def synapse_count(self) -> int:
        """Entries of optim.lrs / optim.wds: one per conv and fc synapse, the read-out included."""
        return len(self.channels) + len(self.fc)

    def check_layers(self, where: str) -> None:
        n = len(self.channels)
        for name in ("kernels", "strides", "paddings", "pools"):
            value = getattr(self, name)
            if len(value) != n:
                raise ConfigError(f"{where}.{name}: got {value!r} ({len(value)} entries); allowed: exactly {n} "
                                  f"entries, one per conv layer (model.channels = {self.channels})")
        if set(self.pools) - set(POOL_LETTERS):
            raise ConfigError(f"{where}.pools: got {self.pools!r}; allowed: one letter per conv layer, each m (max), "
                              "a (average) or i (identity)")
        if self.softmax and self.loss != "cel":
            raise ConfigError(f"{where}.softmax: got true with model.loss={self.loss!r}; allowed: the softmax "
                              "read-out only with loss cel")


@dataclass
class CNNConfig(ConvLayers):
    """The ``model:`` section of ``cnn`` / ``vf_cnn``: conv layers, then fully connected ones."""

    kind: str = setting("cnn", choices=("cnn", "vf_cnn"), help="cnn (tied weights) or vf_cnn (untied backward weights)")
    same_update: bool = setting(False, help="vf_cnn: identical updates for forward and backward weights")
    dropouts: list[float] | None = setting(None, low=0.0, high=1.0, low_open=True,
                                           help="keep probabilities for [x, s_1, ...] (last 1.0)")

    def summary(self) -> str:
        return (f"{self.kind} channels {self.channels} pools {self.pools} fc {self.fc} act={self.act} "
                f"loss={self.loss}{' softmax' if self.softmax else ''}")

    def check(self, where: str) -> None:
        if self.same_update and self.kind != "vf_cnn":
            raise ConfigError(f"{where}.same_update: got true with model.kind={self.kind!r}; allowed: true only "
                              "for vf_cnn")
        self.check_layers(where)
        if self.dropouts is not None:
            layers = len(self.channels) + len(self.fc) - (1 if self.softmax else 0)
            if len(self.dropouts) != layers + 1:
                raise ConfigError(f"{where}.dropouts: got {self.dropouts} ({len(self.dropouts)} values); allowed: "
                                  f"{layers + 1} keep probabilities, for the input and each of the {layers} neuron layers")
            if self.dropouts[-1] != 1.0:
                raise ConfigError(f"{where}.dropouts: got last keep probability {self.dropouts[-1]}; allowed: 1.0 "
                                  "(the layer the loss reads is not dropped)")


FAMILY = register(Family(
    name="cnn", kinds=("cnn", "vf_cnn"), config=CNNConfig, builder="eqsearch.models.cnn:build",
    description="code base A's P_CNN / VF_CNN",
    seed_models={"CNN": "cnn", "VFCNN": "vf_cnn"},
    seed_defaults={"model.channels": [32, 64], "model.kernels": [5, 5], "model.strides": [1, 1],
                   "model.paddings": [0, 0], "model.pools": "mm", "model.fc": [10], "model.act": "mysig",
                   "model.loss": "mse"},
    example={"channels": [3, 4], "kernels": [3, 3], "strides": [1, 1], "paddings": [1, 0], "pools": "ma",
             "fc": [5, 3], "act": "mysig", "loss": "cel", "softmax": True},
    example_input=(2, 8, 8)))
