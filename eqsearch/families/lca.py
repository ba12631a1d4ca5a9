"""Code base D's LCA-CNN (reference §5): an LCA sparse-coding front-end whose code feeds code base
A's EP recurrent CNN through an identity copy layer; ``lca_cnn``.

The ``model:`` section has the CNN's layer fields for the conv layers *after* the copy layer
(code base D's ``--channels 64 256 512`` is ``lca.features: 64, channels: [256, 512]``; the
flags are converted by :mod:`eqsearch.cli.run_flags`), the LCA's settings in the nested section
``model.lca`` (also used by ``eqsearch lca-pretrain``), and how the dictionary trains
(``dict_training``, §5.6).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from eqsearch.errors import ConfigError
from eqsearch.families.cnn import ConvLayers
from eqsearch.families.mlp import ACTIVATIONS, LOSSES
from eqsearch.families.registry import Family, register
from eqsearch.fields import setting

DICT_TRAINING = ("pretrained", "finetune", "learn")


@dataclass
class LCAConfig:
    """The convolutional LCA layer (``model.lca``; reference §5.2)."""

    features: int = setting(64, low=1, help="dictionary atoms F (channels of the code and of the copy layer)")
    ksize: int = setting(9, low=1, help="atom size k (k × k)")
    stride: int = setting(2, low=1, help="stride S of the code (32×32, k 9, S 2 -> a 16×16 code)")
    lam: float = setting(0.25, low=0.0, help="threshold λ")
    tau: float = setting(100.0, low=1.0, help="time constant τ (Euler step 1/τ)")
    iters: int = setting(600, low=1, help="LCA iterations per code")
    eta: float = setting(0.05, low=0.0, help="dictionary learning rate η")
    threshold: str = setting("soft", choices=("soft", "hard"), help="transfer T_λ: soft or hard threshold")
    nonneg: bool = setting(True, help="non-negative code (one-sided threshold)")
    standardize: bool = setting(True, help="per-image zero mean, unit variance before coding")
    clip: float | None = setting(None, low=0.0, low_open=True, help="clip each dictionary step to ±clip (null: none)")

    def summary(self) -> str:
        return (f"LCA F={self.features} k={self.ksize} S={self.stride} λ={self.lam} τ={self.tau} "
                f"iters={self.iters} η={self.eta} {self.threshold}{'' if self.nonneg else ' signed'}")


@dataclass
class LCACNNConfig(ConvLayers):
    """The ``model:`` section of ``lca_cnn`` (defaults: code base D's CIFAR-10 LCA-RCNN, §5.9)."""

    kind: str = setting("lca_cnn", choices=("lca_cnn",), help="LCA front-end + EP recurrent CNN (code base D)")
    channels: list[int] = setting([256, 512], low=1, help="output channels per conv layer after the copy layer")
    kernels: list[int] = setting([3, 3], low=1, help="kernel size per conv layer")
    strides: list[int] = setting([1, 1], low=1, help="stride per conv layer")
    paddings: list[int] = setting([1, 1], low=0, help="padding per conv layer")
    pools: str = setting("mm", help="one letter per conv layer: m (max), a (average), i (identity)")
    act: str = setting("my_hard_sig", choices=ACTIVATIONS, help="neuron activation σ (the copy layer's too)")
    loss: str = setting("cel", choices=LOSSES, help="mse or cel")
    softmax: bool = setting(True, help="with cel: the classifier is a softmax read-out, not a neuron layer")
    dict_training: str = setting("learn", choices=DICT_TRAINING,
                                 help="pretrained (loaded, fixed), finetune (loaded, then updated), learn (from "
                                      "random, updated)")
    dictionary: str | None = setting(None, help="pretrained / finetune: the dictionary.pt written by eqsearch "
                                                "lca-pretrain (learn ignores it: it starts from random)")
    dict_update: str = setting("epoch", choices=("epoch", "batch"),
                               help="finetune / learn: update the dictionary from each epoch's last batch, or "
                                    "from every batch")
    scale_feedback: float = setting(1.0, low=0.0, help="finetune / learn: weight of the conv layers' feedback in "
                                                        "the nudged code the dictionary is fitted to (0: none)")
    code_cache_mb: float = setting(1024.0, low=0.0,
                                   help="pretrained: MiB of LCA codes kept across epochs, so that each image is "
                                        "coded once per run (F·H_c·W_c·4 bytes per image; 0: none)")
    lca: LCAConfig = setting(LCAConfig(), help="the LCA layer")

    def summary(self) -> str:
        return (f"{self.kind} {self.lca.summary()} dict {self.dict_training} -> channels {self.channels} pools "
                f"{self.pools} fc {self.fc} act={self.act} loss={self.loss}{' softmax' if self.softmax else ''}")

    def __post_init__(self) -> None:
        if self.dictionary:  # absolute, so that a trial running in its own folder (Ray Tune) finds the file
            self.dictionary = str(Path(self.dictionary).expanduser().resolve())

    @property
    def loads_dictionary(self) -> bool:
        """Whether the model starts from ``dictionary`` (pretrained, finetune) or from random (learn)."""
        return self.dict_training != "learn"

    def check(self, where: str) -> None:
        self.check_layers(where)
        if self.loads_dictionary and not self.dictionary:
            raise ConfigError(f"{where}.dictionary: got null with {where}.dict_training={self.dict_training!r}; "
                              "allowed: the path of a dictionary.pt written by eqsearch lca-pretrain")

    def check_rule(self, rule, where: str) -> None:
        if rule.alg == "bptt" and self.dict_training != "pretrained":
            raise ConfigError(f"{where}.dict_training: got {self.dict_training!r} with rule.alg='bptt'; allowed: "
                              "pretrained (finetune and learn fit the dictionary to EP's nudged states, which "
                              "BPTT has not)")


FAMILY = register(Family(
    name="lca", kinds=("lca_cnn",), config=LCACNNConfig, builder="eqsearch.models.lca_cnn:build",
    description="code base D's LCA-CNN (LCA sparse code -> EP recurrent CNN)",
    seed_models={"LCACNN": "lca_cnn"},
    # code base D's defaults (reference §5.8) that are valid as they stand; its layer lists (the
    # copy layer first) are converted by eqsearch.cli.run_flags
    seed_defaults={"model.fc": [10], "model.act": "mysig", "model.loss": "mse", "model.softmax": False,
                   "model.lca.features": 784, "model.lca.lam": 0.25, "model.lca.tau": 100.0,
                   "model.lca.eta": 0.001, "model.lca.stride": 1, "model.lca.ksize": 7, "model.lca.iters": 600,
                   "model.scale_feedback": 1.0},
    example={"channels": [4], "kernels": [3], "strides": [1], "paddings": [1], "pools": "m", "fc": [3],
             "act": "mysig", "loss": "cel", "softmax": True, "dict_training": "learn",
             "lca": {"features": 3, "ksize": 3, "stride": 1, "lam": 0.1, "tau": 5.0, "iters": 8}},
    example_input=(2, 6, 6)))
