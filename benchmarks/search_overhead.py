"""Overhead of the search platform: N trials of a space (default: 8 of quickstart) through
`eqsearch search` (Ray Tune + Optuna + ASHA + MLflow, 2 trials at a time) vs the same N configs,
each for the epochs it ran in the search, through `fit()` in a plain loop over 2 worker processes
(1 torch thread each, as in the search; the two processes, like a search's two reused trial
actors, import torch once and run one config after another).

The machine's speed drifts by more than the overhead from one minute to the next, so the repeats
alternate the order: odd repeats run the search first and then the loop of its configs, even ones
the loop of the previous search's configs first and then the search (a seeded search proposes
the same configs). ASHA's stops depend on the order in which two trials' reports arrive: where the
search ran other epochs than the loop before it, the loop runs again after it on the search's own
configs, and that repeat counts as search first. The median is over the per-repeat ratios.

CPU seconds tell the platform's cost apart from the host's drift: the search's processes are read
from /proc while it runs (the trials' Ray workers; the driver; Ray's daemons and the watchdog)
and the loop's from its workers' rusage. The platform's processes other than the trials, as a
share of the cores over the search, are what the trials could not use. Within a trial worker, the
threads tell the trials' own work (Tune's function threads) from the worker's main thread and Ray's
threads; every CPU second but the trials' own threads, per CPU second of those, is the platform's
cost in CPU, which the host's speed scales alike on both sides (it counts the trial workers'
imports, which the loop's workers pay too).

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
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import yaml

from eqsearch.search.reaper import descendants

BAR = 0.15  # the overhead the issue allows
CORES = 2  # the search runs 2 trials at a time, the loop 2 workers
TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


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


class ProcessCPU(threading.Thread):
    """CPU seconds (user + system) of a process and its descendants, read from /proc every
    ``every`` seconds while it runs; by role: ``trials`` (Ray workers that ran a trial), ``driver``,
    ``other`` (Ray's daemons, idle workers, the watchdog). A trial process's threads are read too:
    ``trial_threads``, its Python threads besides the main one (Tune's function threads, one per
    trial a reused actor ran: the trials' own work and their reports; Python threads carry the
    process's name), ``trial_main`` (the worker's main thread: imports, the actor's task loop) and
    ``trial_ray_threads`` (Ray's own named threads: gRPC, the core worker's I/O, jemalloc). A
    process's or thread's last reading counts: what one did after it, before exiting, is lost
    (under ``every`` seconds of a short-lived one)."""

    def __init__(self, root: int, every: float = 0.5):
        super().__init__(daemon=True)
        self.root, self.every = root, every
        self.seen: dict[tuple[int, int], tuple[str, float]] = {}  # (pid, start) -> (role, cpu s)
        self.threads: dict[tuple[int, int], dict[int, tuple[str, float]]] = {}  # trial (pid, start) -> tid -> (kind, cpu s)
        self.done = threading.Event()

    @staticmethod
    def _cpu(stat_file: Path) -> float:
        stat = stat_file.read_text()
        fields = stat[stat.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / TICK

    def _read(self, pid: int, start: int) -> None:
        try:
            cpu = self._cpu(Path(f"/proc/{pid}/stat"))
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            return
        old_role = self.seen.get((pid, start), ("other", 0.0))[0]
        role = ("driver" if pid == self.root else
                "trials" if cmd.startswith("ray::") and "IDLE" not in cmd and "Agent" not in cmd else old_role)
        self.seen[(pid, start)] = (role, cpu)
        if role == "trials":
            threads = self.threads.setdefault((pid, start), {})
            try:
                for task in Path(f"/proc/{pid}/task").iterdir():
                    tid = int(task.name)
                    kind = ("trial_main" if tid == pid else "trial_threads"
                            if (task / "comm").read_text().startswith("ray::") else "trial_ray_threads")
                    threads[tid] = (kind, self._cpu(task / "stat"))
            except OSError:
                pass

    def run(self) -> None:
        while not self.done.is_set():
            self._read(self.root, -1)
            for pid, start in descendants(self.root).items():
                self._read(pid, start)
            self.done.wait(self.every)

    def totals(self) -> dict[str, float]:
        out = dict.fromkeys(("trials", "driver", "other", "trial_threads", "trial_main", "trial_ray_threads"), 0.0)
        for role, cpu in self.seen.values():
            out[role] += cpu
        for threads in self.threads.values():
            for kind, cpu in threads.values():
                out[kind] += cpu
        return out


@dataclass
class Run:
    wall: float  # seconds
    epochs: float  # the sum of the epochs' own ``epoch_seconds``
    cpu: dict[str, float]  # CPU seconds by role


def run_search(exe: Path, args, tmp: str) -> tuple[Run, list[tuple[dict, int]], float]:
    """One ``eqsearch search``: its Run, its trials' (config, epochs), and its seconds outside
    its trials."""
    results = Path(tmp) / "results"
    sets = [a for kv in args.sets for a in ("--set", kv)]
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(exe), "search", args.space, "--results", str(results), "--num-samples",
                             str(args.num_samples), "--no-dashboard", "--quiet", *sets],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    cpu = ProcessCPU(proc.pid)
    cpu.start()
    _, err = proc.communicate()
    wall = time.perf_counter() - t0
    cpu.done.set()
    cpu.join()
    if proc.returncode != 0:  # e.g. a bad --space or --set: eqsearch's own message
        sys.exit(f"eqsearch search failed (status {proc.returncode}):\n{err.strip()}")
    reports = trial_reports(results)
    if not any(reports):  # every trial failed before its first epoch
        sys.exit("eqsearch search ran no epoch of any trial: nothing to compare")
    epochs = sum(row["epoch_seconds"] for rows in reports for row in rows)
    return Run(wall, epochs, cpu.totals()), trial_configs(results), wall - trial_span(reports)


def run_loop(jobs: list[tuple[dict, int]]) -> Run:
    """The configs through fit() over 2 spawned worker processes."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with get_context("spawn").Pool(CORES) as pool:
        epochs = sum(pool.map(train, jobs, chunksize=1))
        pool.close()
        pool.join()  # reaped: their CPU is in RUSAGE_CHILDREN
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return Run(wall, epochs, {"trials": cpu, "driver": 0.0, "other": 0.0})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--num-samples", type=int, default=8)
    ap.add_argument("--space", default="quickstart", help="a shipped space's name or a space file")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="FIELD=VALUE",
                    help="override a base config field of the space (as `eqsearch search --set`)")
    args = ap.parse_args()
    exe = Path(sys.executable).with_name("eqsearch")
    ratios, fixed, outside, slowdown, platform, costs, epoch_s, cpu_cost = [], [], [], [], [], [], [], []
    jobs_before: list[tuple[dict, int]] | None = None
    for rep in range(args.repeats):
        loop_first = rep % 2 == 1 and jobs_before is not None
        with tempfile.TemporaryDirectory(prefix="eqs-bench-") as tmp:
            if loop_first:
                loop = run_loop(jobs_before)
            search, jobs, out_s = run_search(exe, args, tmp)
            c, e = per_epoch_cost(trial_reports(Path(tmp) / "results"))
        mismatch = loop_first and [n for _, n in jobs_before] != [n for _, n in jobs]
        if mismatch:  # ASHA stopped other epochs (reports came in another order): compare its own
            print(f"repeat {rep + 1}: the search ran {sum(n for _, n in jobs)} epochs, the loop before it "
                  f"{sum(n for _, n in jobs_before)}: the loop runs again after it, on the search's configs", flush=True)
        if not loop_first or mismatch:
            loop = run_loop(jobs)
            loop_first = False
        jobs_before = jobs
        ratios.append(search.wall / loop.wall)
        fixed.append(search.wall - loop.wall)
        outside.append(out_s)
        slowdown.append(search.epochs / loop.epochs)
        costs += c
        epoch_s += e
        share = (search.cpu["driver"] + search.cpu["other"]) / (CORES * search.wall)
        platform.append(share)
        # every CPU second of the search but the trials' own threads, per second of those
        cpu_cost.append(sum(search.cpu[k] for k in ("driver", "other", "trial_main", "trial_ray_threads"))
                        / max(search.cpu["trial_threads"], 1 / TICK))  # no reading of a trial thread: one tick
        print(f"repeat {rep + 1} ({'loop' if loop_first else 'search'} first, {len(jobs)} trials, "
              f"{sum(n for _, n in jobs)} epochs in both): "
              f"search {search.wall:.1f} s, fit() loop {loop.wall:.1f} s: overhead {ratios[-1] - 1:+.1%}; "
              f"search outside its trials {out_s:.1f} s; epochs' own time {search.epochs:.1f} s in the search "
              f"vs {loop.epochs:.1f} s in the loop ({slowdown[-1] - 1:+.1%}); CPU s: trials {search.cpu['trials']:.0f} "
              f"(Tune's function threads {search.cpu['trial_threads']:.1f}, main threads {search.cpu['trial_main']:.1f}, "
              f"Ray's threads {search.cpu['trial_ray_threads']:.1f}) vs loop workers {loop.cpu['trials']:.0f}, driver {search.cpu['driver']:.1f}, Ray's other processes "
              f"{search.cpu['other']:.1f} ({share:.1%} of the cores over the search); the platform's CPU "
              f"per CPU second of the trials' threads {cpu_cost[-1]:.1%}", flush=True)
    med = statistics.median
    print(f"median of {len(ratios)} repeats: overhead {med(ratios) - 1:+.1%} (search / loop "
          f"{min(ratios):.2f}-{max(ratios):.2f}); bar {BAR:.0%}")
    print(f"fixed cost (search - loop, median): {med(fixed):.1f} s: under {BAR:.0%} of a loop from {med(fixed) / BAR:.0f} s")
    print(f"search outside its trials (median): {med(outside):.1f} s; epochs' own time in the search vs the "
          f"loop (median): {med(slowdown) - 1:+.1%}; the platform's processes besides the trials (median): "
          f"{med(platform):.1%} of the cores; the platform's CPU per CPU second of the trials' threads (median): "
          f"{med(cpu_cost):.1%}")
    if costs:
        c, e = med(costs), med(epoch_s)
        print(f"inside a trial, per epoch after its first (median of {len(costs)}): {c * 1000:.0f} ms "
              f"({c / e:.1%} of the epoch's {e:.2f} s)")


if __name__ == "__main__":
    main()
