"""Data sets as in-memory tensors, so that an epoch does no per-sample Python work.

``digits`` (scikit-learn, embedded) needs no files. ``mnist`` and ``fashion_mnist`` are read
through torchvision from a data root in its layout (``<root>/MNIST/raw/*.gz``): the root is
``data.root``, else the environment variable ``EQSEARCH_DATA``. A read-only root that holds
only the ``.gz`` files (such as a shared folder) is copied to a cache first, because
torchvision extracts beside the archives.

Pixels are scaled to [0, 1] (code base A's MNIST normalisation: mean 0, std 1);
``data.normalize: mnist`` then applies code base C's (x − 0.1307) / 0.3081. ``cifar10``
is read from ``<root>/cifar-10-batches-py`` (torchvision's layout, never downloaded here) and
normalised per channel as (x − mean) / (3·std) (code base A, reference §2.4.2). Training-time
augmentation (:func:`augment`) works on whole batches of tensors.

``synthetic_cifar`` is a CIFAR-10-shaped stand-in that needs no files (smoke runs, tests and
benchmarks of the CIFAR-10 commands): 3×32×32 oriented colour gratings, one orientation and
colour per class (10 classes), random phase, plus Gaussian noise; 2000 training and 400 test
images, the same on every machine.

Hold-out (``data.holdout`` = f > 0): a seeded random fraction f of the training set
(:func:`holdout_split`, seed ``data.holdout_seed``) is removed from training; it is what
``eqsearch lca-pretrain`` learns a dictionary on (:func:`load_holdout`), so that an LCA-CNN
trained with the same two settings never trains on the dictionary's images (code base D meant
this split; reference §5.10).
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch

from eqsearch.cache import cache_root
from eqsearch.config import DataConfig
from eqsearch.errors import ConfigError, DataError


@dataclass
class Dataset:
    """Train and test tensors. ``x_*``: (N, *input_shape) float32; ``y_*``: (N,) int64."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def to(self, device: torch.device) -> "Dataset":
        return Dataset(self.name, self.x_train.to(device), self.y_train.to(device),
                       self.x_test.to(device), self.y_test.to(device), self.num_classes)


def _digits() -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.data, dtype=torch.float32).view(-1, 1, 8, 8) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.int64)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    n_test = 360
    test, train = order[:n_test], order[n_test:]
    return Dataset("digits", x[train], y[train], x[test], y[test], 10)


_TORCHVISION = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}


def resolve_root(root: str | None) -> Path:
    """The data root: ``root``, else $EQSEARCH_DATA; a clear error when neither exists."""
    chosen = root or os.environ.get("EQSEARCH_DATA")
    if not chosen:
        raise DataError("data.root: not set; pass --data-root DIR (or set EQSEARCH_DATA) pointing "
                        "at a folder in torchvision's layout, e.g. DIR/MNIST/raw/*.gz")
    path = Path(chosen).expanduser()
    if not path.is_dir():
        raise DataError(f"data.root: {str(path)!r} is not a folder; create it, or point --data-root "
                        "at a folder holding e.g. MNIST/raw/*.gz (torchvision downloads there when "
                        "the machine has network)")
    return path


def _writable(path: Path) -> bool:
    """Whether eqsearch may write into ``path``: the OS allows it and the folder has write bits
    (root may write anywhere, yet a folder without write bits, such as a shared data folder, is
    meant to stay as it is)."""
    return os.access(path, os.W_OK) and bool(path.stat().st_mode & 0o222)


def _writable_root(root: Path, folder: str) -> Path:
    """``root`` itself, or a cache copy of ``root/folder/raw`` when ``root`` is read-only."""
    raw = root / folder / "raw"
    if _writable(root) and all(_writable(p) for p in (root / folder, raw) if p.exists()):
        return root
    if not raw.is_dir():
        return root
    cache = cache_root() / "data"
    target = cache / folder / "raw"
    target.mkdir(parents=True, exist_ok=True)
    for f in raw.glob("*.gz"):
        if not (target / f.name).exists():
            shutil.copy2(f, target / f.name)
    return cache


TENSOR_CACHE = "eqsearch_tensors.pt"  # next to raw/: the parsed images and labels


def _raw_signature(raw: Path) -> list[tuple[str, int, int]]:
    """(name, size, mtime ns) of every file in ``raw``: what the tensor cache was parsed from."""
    return sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in raw.iterdir() if f.is_file()) \
        if raw.is_dir() else []


def _torchvision(name: str, root: str | None) -> Dataset:
    """MNIST / Fashion-MNIST parsed by torchvision (which also extracts or downloads the raw
    files). The parsed uint8 tensors are kept in ``FOLDER/eqsearch_tensors.pt`` with the raw
    files' names, sizes and times; while those match, a run loads that file instead of
    importing torchvision (~3 s here)."""
    folder = _TORCHVISION[name]
    base = resolve_root(root)
    usable = _writable_root(base, folder)
    cache = usable / folder / TENSOR_CACHE
    saved = _cached_tensors(cache, _raw_signature(usable / folder / "raw"))
    if saved is None:
        saved = _parse_torchvision(name, base, usable, folder)
        saved["signature"] = [list(t) for t in _raw_signature(usable / folder / "raw")]  # after any extraction
        partial = cache.with_name(f"{cache.name}.{os.getpid()}.part")  # trials may parse at once
        torch.save(saved, partial)
        os.replace(partial, cache)

    def images(u8: torch.Tensor) -> torch.Tensor:
        return u8.unsqueeze(1).float().div_(255.0)

    return Dataset(name, images(saved["x_train"]), saved["y_train"], images(saved["x_test"]), saved["y_test"], 10)


def _cached_tensors(cache: Path, signature: list) -> dict | None:
    """The tensor cache when it was parsed from exactly these raw files; None otherwise (or when
    it cannot be read)."""
    if not signature or not cache.is_file():
        return None
    try:
        saved = torch.load(cache, weights_only=True)
    except Exception:  # a truncated or foreign file: parse again
        return None
    return saved if saved.get("signature") == [list(t) for t in signature] else None


def _parse_torchvision(name: str, base: Path, usable: Path, folder: str) -> dict:
    """{x_train, y_train, x_test, y_test}: (N, 28, 28) uint8 images, (N,) int64 labels."""
    from torchvision import datasets

    cls = getattr(datasets, folder)
    try:
        train = cls(str(usable), train=True, download=True)
        test = cls(str(usable), train=False, download=True)
    except Exception as exc:  # torchvision raises RuntimeError / URLError when files are missing
        raise DataError(f"data.root: {name} not found under {str(base)!r} ({exc}); put torchvision's "
                        f"raw files in {base}/{folder}/raw/*.gz or run once with network access") from None
    return {"x_train": train.data, "y_train": train.targets.long(), "x_test": test.data, "y_test": test.targets.long()}


CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)  # code base A divides by 3 × these


def _cifar10(root: str | None) -> Dataset:
    """CIFAR-10 as (N, 3, 32, 32) float32 tensors, normalised with mean / (3·std)."""
    from torchvision import datasets

    base = resolve_root(root)
    try:
        train = datasets.CIFAR10(str(base), train=True, download=False)
        test = datasets.CIFAR10(str(base), train=False, download=False)
    except RuntimeError as exc:
        raise DataError(f"data.root: cifar10 not found under {str(base)!r} ({exc}); put torchvision's "
                        f"extracted archive in {base}/cifar-10-batches-py (data_batch_1..5, test_batch, "
                        "batches.meta)") from None
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std3 = 3.0 * torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)

    def tensors(ds):
        x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).float().div_(255.0)
        return x.sub_(mean).div_(std3).contiguous(), torch.tensor(ds.targets, dtype=torch.int64)

    (xtr, ytr), (xte, yte) = tensors(train), tensors(test)
    return Dataset("cifar10", xtr, ytr, xte, yte, 10)


def augment(x: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Code base A's ``--data-aug`` on a batch (B, C, H, W): horizontal flip with p = ½, then a
    random H×W crop of the image padded by ``padding`` pixels on each side with edge values.

    Draws (per sample: flip, row and column offsets) come from ``generator`` on the CPU; the
    work is three batched tensor ops on x's device (no per-sample Python or PIL)."""
    b, _, h, w = x.shape
    flip = torch.rand(b, generator=generator) < 0.5
    offsets = torch.randint(0, 2 * padding + 1, (2, b), generator=generator)
    x = torch.where(flip.to(x.device).view(b, 1, 1, 1), x.flip(3), x)
    padded = torch.nn.functional.pad(x, (padding,) * 4, mode="replicate")
    rows = (offsets[0].view(b, 1) + torch.arange(h)).to(x.device)  # (B, H)
    cols = (offsets[1].view(b, 1) + torch.arange(w)).to(x.device)  # (B, W)
    batch = torch.arange(b, device=x.device).view(b, 1, 1)
    # advanced indexing on dims 0, 2, 3 -> (B, H, W, C)
    return padded.permute(0, 2, 3, 1)[batch, rows.view(b, h, 1), cols.view(b, 1, w)].permute(0, 3, 1, 2)


SYNTHETIC_TRAIN, SYNTHETIC_TEST = 2000, 400


def _synthetic_cifar() -> Dataset:
    """Oriented colour gratings with noise, (N, 3, 32, 32), class = orientation and colour."""
    g = torch.Generator().manual_seed(0)
    n = SYNTHETIC_TRAIN + SYNTHETIC_TEST
    y = torch.randint(0, 10, (n,), generator=g)
    angle = torch.arange(10) * (math.pi / 10)
    period = 5.0 + 3.0 * (torch.arange(10) % 3)
    colour = torch.rand(10, 3, generator=g) - 0.5
    rows, cols = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    proj = angle[y].cos().view(n, 1, 1) * cols + angle[y].sin().view(n, 1, 1) * rows
    phase = 2 * math.pi * torch.rand(n, 1, 1, generator=g)
    grating = torch.sin(2 * math.pi * proj / period[y].view(n, 1, 1) + phase)
    x = colour[y].view(n, 3, 1, 1) * grating.unsqueeze(1) + 0.2 * torch.randn(n, 3, 32, 32, generator=g)
    return Dataset("synthetic_cifar", x[:SYNTHETIC_TRAIN], y[:SYNTHETIC_TRAIN], x[SYNTHETIC_TRAIN:],
                   y[SYNTHETIC_TRAIN:], 10)


LOADERS: dict[str, Callable[[DataConfig], Dataset]] = {
    "digits": lambda cfg: _digits(),
    "mnist": lambda cfg: _torchvision("mnist", cfg.root),
    "fashion_mnist": lambda cfg: _torchvision("fashion_mnist", cfg.root),
    "cifar10": lambda cfg: _cifar10(cfg.root),
    "synthetic_cifar": lambda cfg: _synthetic_cifar(),
}


MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # code base C's Normalize (reference §4.8)


def _load_all(cfg: DataConfig) -> Dataset:
    """The whole data set of ``cfg`` (no hold-out), with ``data.normalize`` applied."""
    if cfg.dataset not in LOADERS:
        raise ConfigError(f"data.dataset: got {cfg.dataset!r}; allowed: {', '.join(LOADERS)}")
    ds = LOADERS[cfg.dataset](cfg)
    if cfg.normalize == "mnist":
        ds = Dataset(ds.name, (ds.x_train - MNIST_MEAN) / MNIST_STD, ds.y_train,
                     (ds.x_test - MNIST_MEAN) / MNIST_STD, ds.y_test, ds.num_classes)
    return ds


def holdout_split(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept, held-out) sorted indices of n training examples: round(fraction·n) drawn at random
    by a generator seeded with ``seed`` are held out."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    k = int(round(fraction * n))
    return order[k:].sort().values, order[:k].sort().values


def load_dataset(cfg: DataConfig) -> Dataset:
    """The data set of ``cfg`` as tensors, ``data.normalize`` applied to both splits, and the
    hold-out (``data.holdout``) removed from the training set."""
    ds = _load_all(cfg)
    if cfg.holdout > 0:
        kept, _ = holdout_split(ds.x_train.shape[0], cfg.holdout, cfg.holdout_seed)
        ds = Dataset(ds.name, ds.x_train[kept], ds.y_train[kept], ds.x_test, ds.y_test, ds.num_classes)
    return ds


def load_holdout(cfg: DataConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) of the held-out training examples of ``cfg`` (``data.holdout`` > 0), or of the
    whole training set when ``data.holdout`` is 0."""
    ds = _load_all(cfg)
    if cfg.holdout == 0:
        return ds.x_train, ds.y_train
    _, held = holdout_split(ds.x_train.shape[0], cfg.holdout, cfg.holdout_seed)
    return ds.x_train[held], ds.y_train[held]


def batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, generator: torch.Generator | None = None,
            max_batches: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Minibatches of (x, y); shuffled by ``generator`` when given. The last batch may be short."""
    n = x.shape[0]
    order = torch.randperm(n, generator=generator).to(x.device) if generator is not None else None
    count = num_batches(n, batch_size, max_batches)
    for k in range(count):
        if order is None:
            yield x[k * batch_size:(k + 1) * batch_size], y[k * batch_size:(k + 1) * batch_size]
        else:
            idx = order[k * batch_size:(k + 1) * batch_size]
            yield x.index_select(0, idx), y.index_select(0, idx)


def num_batches(n: int, batch_size: int, max_batches: int | None = None) -> int:
    count = -(-n // batch_size)
    return min(count, max_batches) if max_batches else count
