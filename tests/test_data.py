"""Data sets: embedded digits, torchvision roots, batching."""

from __future__ import annotations

import shutil

import pytest
import torch

from eqsearch.config import DataConfig
from eqsearch.data import DataError, batches, load_dataset, num_batches


def test_digits_is_embedded_and_split_deterministically():
    a, b = load_dataset(DataConfig()), load_dataset(DataConfig())
    assert a.x_train.shape == (1437, 1, 8, 8) and a.x_test.shape == (360, 1, 8, 8)
    assert float(a.x_train.max()) <= 1.0 and float(a.x_train.min()) >= 0.0
    assert torch.equal(a.y_test, b.y_test) and a.num_classes == 10


def test_batches_cover_every_sample_once_in_seeded_order():
    x, y = torch.arange(10.0).view(10, 1), torch.arange(10)
    got = list(batches(x, y, 4, torch.Generator().manual_seed(0)))
    assert [len(b[1]) for b in got] == [4, 4, 2]
    assert sorted(torch.cat([b[1] for b in got]).tolist()) == list(range(10))
    again = list(batches(x, y, 4, torch.Generator().manual_seed(0)))
    assert all(torch.equal(p[1], q[1]) for p, q in zip(got, again))
    assert num_batches(10, 4, max_batches=2) == 2


def test_missing_root_says_how_to_get_the_data(monkeypatch, tmp_path):
    monkeypatch.delenv("EQSEARCH_DATA", raising=False)
    with pytest.raises(DataError, match="pass --data-root DIR"):
        load_dataset(DataConfig(dataset="mnist"))
    with pytest.raises(DataError, match="MNIST/raw"):
        load_dataset(DataConfig(dataset="mnist", root=str(tmp_path / "none")))


@pytest.mark.realdata
def test_read_only_root_is_copied_to_the_cache_and_left_untouched(shared_data, tmp_path, monkeypatch):
    """A root without write bits holding only the .gz files: torchvision extracts into the cache
    copy, and the root gains no file (it would if eqsearch handed it to torchvision)."""
    root = tmp_path / "ro"
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in (shared_data / "MNIST" / "raw").glob("*.gz"):
        shutil.copy(f, raw / f.name)
    before = sorted(p.name for p in raw.iterdir())
    for d in (raw, raw.parent, root):
        d.chmod(0o555)
    cache = tmp_path / "cache"
    monkeypatch.setenv("EQSEARCH_CACHE", str(cache))
    try:
        ds = load_dataset(DataConfig(dataset="mnist", root=str(root)))
    finally:
        for d in (root, raw.parent, raw):
            d.chmod(0o755)
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    assert ds.y_train.max() == 9 and float(ds.x_train.max()) == 1.0
    assert sorted(p.name for p in raw.iterdir()) == before
    assert (cache / "data" / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file()


@pytest.mark.realdata
def test_shared_fashion_mnist_loads(shared_data):
    ds = load_dataset(DataConfig(dataset="fashion_mnist", root=str(shared_data)))
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    assert ds.y_train.max() == 9


@pytest.mark.realdata
def test_parsed_tensors_are_cached_and_reparsed_when_a_raw_file_changes(shared_data, tmp_path):
    """The first load parses with torchvision and keeps the tensors next to raw/; a later load in
    a fresh process takes them without importing torchvision; a changed raw file is parsed again."""
    import os
    import subprocess
    import sys

    from eqsearch.data import TENSOR_CACHE

    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in (shared_data / "MNIST" / "raw").glob("*.gz"):
        shutil.copy(f, raw / f.name)
    first = load_dataset(DataConfig(dataset="mnist", root=str(tmp_path)))
    cache = tmp_path / "MNIST" / TENSOR_CACHE
    assert cache.is_file()
    code = ("import sys; from eqsearch.config import DataConfig; from eqsearch.data import load_dataset; "
            f"ds = load_dataset(DataConfig(dataset='mnist', root={str(tmp_path)!r})); "
            "print('torchvision' in sys.modules, int(ds.y_train.sum()), "
            "int(ds.x_test.double().mul(255).round().sum()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    # integer sums: the same whatever the thread count of either process (float sums are not)
    assert out == ["False", str(int(first.y_train.sum())), str(int(first.x_test.double().mul(255).round().sum()))]
    stamp = cache.stat().st_mtime_ns
    extracted = raw / "t10k-labels-idx1-ubyte"
    os.utime(extracted, ns=(extracted.stat().st_atime_ns, extracted.stat().st_mtime_ns + 10**9))
    again = load_dataset(DataConfig(dataset="mnist", root=str(tmp_path)))
    assert cache.stat().st_mtime_ns != stamp and torch.equal(again.y_test, first.y_test)
    cache.write_bytes(b"not a tensor file")  # unreadable: parsed again, not an error
    assert torch.equal(load_dataset(DataConfig(dataset="mnist", root=str(tmp_path))).y_train, first.y_train)
