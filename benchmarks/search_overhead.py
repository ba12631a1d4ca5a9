"""Overhead of the search platform: N trials of a space (default: 8 of quickstart) through
`eqsearch search` (Ray Tune + Optuna + ASHA + MLflow, 2 trials at a time) vs the same N configs,
each for the epochs it ran in the search, through `fit()` in a plain loop over 2 worker processes
(1 torch thread each, as in the search; each process pays torch's import as a trial's does).

Prints per repeat and as medians: both wall times and the overhead ratio; the fixed cost (search
minus loop: Ray's start and stop, the MLflow store, the trial processes, the summary), which does
not grow with the trials' work; the cost per epoch inside a trial (Tune's time between two
reports minus the epoch's own ``epoch_seconds``: report, checkpoint, logging), also as a share of
the epoch; and the loop length from which the fixed cost is under 15 %.

Each repeat also splits its search's time, to tell the platform's cost from the host's drift
(on a shared machine two runs minutes apart differ by several per cent): the search's time
outside its trials (start until its first trial starts, and after the last one ends), and the
epochs' own time, the sum of ``epoch_seconds`` of the same configs and epochs, in the search
and in the loop. Their ratio is the epochs' slowdown inside the search (the driver's and Ray's
processes on the same cores, or the host being slower then).

    .venv/bin/python benchmarks/search_overhead.py [--repeats 3] [--num-samples 8] [--space quickstart]
        [--set FIELD=VALUE ...]     # e.g. --space mnist_mlp_estimators --set data.root=../shared/data
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from multiprocessing import get_context
from pathlib import Path

import yaml

BAR = 0.15  # the overhead the issue allows


def train(args: tuple[dict, int]) -> float:
    """One trial's config for ``epochs`` epochs, through fit() (in a worker process); returns the
    sum of its epochs' ``epoch_seconds``."""
    import torch

    from eqsearch.config import from_dict
    from eqsearch.training import fit

    torch.set_num_threads(1)
    tree, epochs = args
    tree["train"].update(epochs=epochs, threads=1)
    return sum(m["epoch_seconds"] for m in fit(from_dict(tree)))


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


def trial_reports(results: Path) -> list[list[dict]]:
    """Every trial's Tune reports (one per epoch), from its ``result.json``."""
    return [[json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            for path in sorted(results.glob("tune/*/*/result.json"))]


def per_epoch_cost(reports: list[list[dict]]) -> tuple[list[float], list[float]]:
    """(Tune's time between reports minus the epoch's ``epoch_seconds``, ``epoch_seconds``) of
    every report after a trial's first (the first also holds the trial's set-up)."""
    costs, epochs = [], []
    for rows in reports:
        for row in rows[1:]:
            costs.append(row["time_this_iter_s"] - row["epoch_seconds"])
            epochs.append(row["epoch_seconds"])
    return costs, epochs


def trial_span(reports: list[list[dict]]) -> float:
    """Seconds from the first trial's start to the last trial's last report (Tune's timestamps:
    whole seconds; a trial starts its first report's ``time_this_iter_s`` before it)."""
    starts = [rows[0]["timestamp"] - rows[0]["time_this_iter_s"] for rows in reports if rows]
    ends = [rows[-1]["timestamp"] for rows in reports if rows]
    return max(ends) - min(starts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--num-samples", type=int, default=8)
    ap.add_argument("--space", default="quickstart", help="a shipped space's name or a space file")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="FIELD=VALUE",
                    help="override a base config field of the space (as `eqsearch search --set`)")
    args = ap.parse_args()
    exe = Path(sys.executable).with_name("eqsearch")
    sets = [a for kv in args.sets for a in ("--set", kv)]
    search_s, loop_s, costs, epoch_s, outside_s, slowdown = [], [], [], [], [], []
    for rep in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="eqs-bench-") as tmp:
            results = Path(tmp) / "results"
            t0 = time.perf_counter()
            done = subprocess.run([str(exe), "search", args.space, "--results", str(results), "--num-samples",
                                   str(args.num_samples), "--no-dashboard", "--quiet", *sets],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            search_s.append(time.perf_counter() - t0)
            if done.returncode != 0:  # e.g. a bad --space or --set: eqsearch's own message
                sys.exit(f"eqsearch search failed (status {done.returncode}):\n{done.stderr.strip()}")
            jobs = trial_configs(results)
            reports = trial_reports(results)
            if not any(reports):  # every trial failed before its first epoch
                sys.exit("eqsearch search ran no epoch of any trial: nothing to compare")
            c, e = per_epoch_cost(reports)
            costs += c
            epoch_s += e
            search_epochs = sum(row["epoch_seconds"] for rows in reports for row in rows)
            outside_s.append(search_s[-1] - trial_span(reports))
        t0 = time.perf_counter()
        with get_context("spawn").Pool(2) as pool:
            loop_epochs = sum(pool.map(train, jobs, chunksize=1))
        loop_s.append(time.perf_counter() - t0)
        slowdown.append(search_epochs / loop_epochs)
        epochs = sum(e for _, e in jobs)
        print(f"repeat {rep + 1}: search {search_s[-1]:.1f} s, fit() loop {loop_s[-1]:.1f} s "
              f"({len(jobs)} trials, {epochs} epochs): overhead {search_s[-1] / loop_s[-1] - 1:+.1%}; "
              f"search outside its trials {outside_s[-1]:.1f} s; epochs' own time {search_epochs:.1f} s "
              f"in the search vs {loop_epochs:.1f} s in the loop ({slowdown[-1] - 1:+.1%})", flush=True)
    s, lp = statistics.median(search_s), statistics.median(loop_s)
    fixed = statistics.median(a - b for a, b in zip(search_s, loop_s))
    print(f"median: search {s:.1f} s, fit() loop {lp:.1f} s; overhead {s / lp - 1:+.0%} (ratio {s / lp:.2f})")
    print(f"fixed cost (search - loop, median): {fixed:.1f} s: under {BAR:.0%} of a loop from {fixed / BAR:.0f} s")
    print(f"search outside its trials (median): {statistics.median(outside_s):.1f} s; epochs' own time "
          f"in the search vs the loop (median): {statistics.median(slowdown) - 1:+.1%}")
    if costs:
        c, e = statistics.median(costs), statistics.median(epoch_s)
        print(f"inside a trial, per epoch after its first (median of {len(costs)}): {c * 1000:.0f} ms "
              f"({c / e:.1%} of the epoch's {e:.2f} s)")


if __name__ == "__main__":
    main()
