"""Overhead of the search platform: 8 quickstart trials through `eqsearch search` (Ray Tune +
Optuna + ASHA + MLflow, 2 trials at a time) vs the same 8 configs, each for the epochs it ran in
the search, through `fit()` in a plain loop over 2 worker processes (1 torch thread each, as in
the search). Prints per-repeat times, the medians and the overhead ratio.

    .venv/bin/python benchmarks/search_overhead.py [--repeats 3] [--num-samples 8]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from multiprocessing import get_context
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SPACE = ROOT / "search_spaces" / "quickstart.yaml"


def train(args: tuple[dict, int]) -> None:
    """One trial's config for ``epochs`` epochs, through fit() (in a worker process)."""
    import torch

    from eqsearch.config import from_dict
    from eqsearch.training import fit

    torch.set_num_threads(1)
    tree, epochs = args
    tree["train"].update(epochs=epochs, threads=1)
    for _ in fit(from_dict(tree)):
        pass


def trial_configs(results: Path) -> list[tuple[dict, int]]:
    """(run config tree, epochs run) of every trial of a finished search."""
    from eqsearch.config import from_dict
    from eqsearch.search import results as R

    jobs = []
    for row in R.read_trials(results):
        flat = {k[len("config."):]: yaml.safe_load(v) if v != "" else None for k, v in row.items()
                if k.startswith("config.")}
        jobs.append((from_dict(None, flat).to_dict(), int(row["epochs_run"])))
    return jobs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--num-samples", type=int, default=8)
    args = ap.parse_args()
    exe = Path(sys.executable).with_name("eqsearch")
    search_s, loop_s = [], []
    for rep in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="eqs-bench-") as tmp:
            results = Path(tmp) / "results"
            t0 = time.perf_counter()
            subprocess.run([str(exe), "search", str(SPACE), "--results", str(results), "--num-samples",
                            str(args.num_samples), "--no-dashboard", "--quiet"], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            search_s.append(time.perf_counter() - t0)
            jobs = trial_configs(results)
        t0 = time.perf_counter()
        with get_context("spawn").Pool(2) as pool:
            pool.map(train, jobs, chunksize=1)
        loop_s.append(time.perf_counter() - t0)
        epochs = sum(e for _, e in jobs)
        print(f"repeat {rep + 1}: search {search_s[-1]:.1f} s, fit() loop {loop_s[-1]:.1f} s "
              f"({len(jobs)} trials, {epochs} epochs)", flush=True)
    s, lp = statistics.median(search_s), statistics.median(loop_s)
    print(f"median: search {s:.1f} s, fit() loop {lp:.1f} s; overhead {s / lp - 1:+.0%} (ratio {s / lp:.2f})")


if __name__ == "__main__":
    main()
