"""Search efficiency: this platform's search (Optuna TPE + ASHA, the settings of
search_spaces/quickstart.yaml) against random search without early stopping, on the quickstart's
digits MLP space, with the same CPUs (2 trials at a time, 1 CPU each), the same seeds and, by
default, the same expected epoch budget: random search runs --num-samples trials of all epochs,
TPE + ASHA as many trials as that budget buys at ASHA's expected epochs per trial
(`eqsearch.search.console.Budget`); --same-trials gives both --num-samples trials instead. Every
search runs through `eqsearch search` in its own process. --grace-period / --reduction-factor
change ASHA's settings (and so the equal budget); --only runs one method's searches and prints
their lines (to try ASHA settings against a random-search run already measured).

For each method it prints, as medians over the repeats, the best test accuracy any trial had
reported by a given wall time since the search started (Tune's per-report timestamps), the
time each method took to reach a common target (the lower of the two methods' median final
best, so that both reach it), and the ratio of those times (random / TPE + ASHA: > 1 means the
platform's search gets there sooner).

    .venv/bin/python benchmarks/search_efficiency.py [--repeats 3] [--num-samples 24] [--same-trials]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SPACE = ROOT / "search_spaces" / "quickstart.yaml"
METHODS = {"tpe+asha": {}, "random": {"sampler": "random", "scheduler": None}}
SHIPPED_ASHA = yaml.safe_load(SPACE.read_text())["scheduler"]["asha"]


def space_file(folder: Path, method: str, seed: int, num_samples: int, asha: dict) -> Path:
    """The quickstart space as ``method`` searches it, with ``seed``, ``num_samples`` and (TPE + ASHA)
    the ASHA settings ``asha``."""
    tree = yaml.safe_load(SPACE.read_text())
    tree["name"] = f"efficiency-{method.replace('+', '-')}"
    settings = dict(METHODS[method])
    tree["scheduler"] = settings.pop("scheduler") if "scheduler" in settings else {"asha": asha}
    tree["search"].update(seed=seed, num_samples=num_samples, **settings)
    path = folder / f"{tree['name']}-{seed}.yaml"
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


def equal_budget_samples(num_samples: int, asha: dict) -> int:
    """Trials of TPE + ASHA (settings ``asha``) whose expected epochs equal ``num_samples`` full trials."""
    from eqsearch.search.console import Budget

    tree = yaml.safe_load(SPACE.read_text())
    epochs = tree["base"]["train"]["epochs"]
    per_trial = Budget(epochs, asha).left()
    return round(num_samples * epochs / per_trial)


def best_so_far(results: Path, name: str) -> list[tuple[float, float]]:
    """(seconds since the search started, best test_acc reported by then), one point per new best."""
    t0 = (results / "search.json").stat().st_mtime  # written just before Tune starts the trials
    reports = []
    for path in (results / "tune" / name).glob("*/result.json"):
        for line in path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                if r.get("test_acc") is not None:
                    reports.append((r["timestamp"] - t0, r["test_acc"]))
    curve, best = [], float("-inf")
    for t, acc in sorted(reports):
        if acc > best:
            best = acc
            curve.append((max(t, 0.0), acc))
    return curve


def value_at(curve: list[tuple[float, float]], t: float) -> float | None:
    vals = [acc for s, acc in curve if s <= t]
    return vals[-1] if vals else None


def time_to(curve: list[tuple[float, float]], target: float) -> float | None:
    return next((s for s, acc in curve if acc >= target), None)


def run(method: str, seed: int, num_samples: int, asha: dict) -> tuple[list[tuple[float, float]], float]:
    """One search: its best-so-far curve and its wall time (seconds)."""
    exe = Path(sys.executable).with_name("eqsearch")
    with tempfile.TemporaryDirectory(prefix="eqs-eff-") as tmp:
        space = space_file(Path(tmp), method, seed, num_samples, asha)
        results = Path(tmp) / "results"
        subprocess.run([str(exe), "search", str(space), "--results", str(results), "--no-dashboard", "--quiet"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        name = yaml.safe_load(space.read_text())["name"]
        curve = best_so_far(results, name)
        rows = (results / "trials.csv").read_text().splitlines()
        wall = max(json.loads(line)["timestamp"] for p in (results / "tune" / name).glob("*/result.json")
                   for line in p.read_text().splitlines() if line.strip()) - (results / "search.json").stat().st_mtime
        print(f"  {method:9s} seed {seed}: best {curve[-1][1]:.4f} at {curve[-1][0]:.0f} s, {len(rows) - 1} trials "
              f"in {wall:.0f} s", flush=True)
        return curve, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--num-samples", type=int, default=24, help="trials of random search")
    ap.add_argument("--same-trials", action="store_true", help="TPE + ASHA runs --num-samples trials too")
    ap.add_argument("--grace-period", type=int, default=SHIPPED_ASHA["grace_period"])
    ap.add_argument("--reduction-factor", type=int, default=SHIPPED_ASHA["reduction_factor"])
    ap.add_argument("--only", choices=list(METHODS), help="run one method only (no comparison)")
    args = ap.parse_args()
    asha = {"grace_period": args.grace_period, "reduction_factor": args.reduction_factor}
    samples = {"random": args.num_samples,
               "tpe+asha": args.num_samples if args.same_trials else equal_budget_samples(args.num_samples, asha)}
    print(f"trials: tpe+asha {samples['tpe+asha']} (asha {asha}), random {samples['random']}"
          f"{'' if args.same_trials else ' (equal expected epochs)'}", flush=True)
    curves: dict[str, list] = {m: [] for m in METHODS}
    walls: dict[str, list] = {m: [] for m in METHODS}
    for seed in range(args.repeats):
        print(f"repeat {seed + 1}/{args.repeats}", flush=True)
        for method in [args.only] if args.only else METHODS:
            curve, wall = run(method, seed, samples[method], asha)
            curves[method].append(curve)
            walls[method].append(wall)
    if args.only:
        return
    horizon = min(min(w) for w in walls.values())  # every search of both methods ran this long
    marks = [horizon * f for f in (0.25, 0.5, 0.75, 1.0)]
    print(f"\nbest test_acc reached by wall time (median of {args.repeats} repeats):")
    print("method      " + "".join(f"{m:>9.0f} s" for m in marks) + "   final    wall")
    finals = {}
    for method in METHODS:
        cells = []
        for t in marks:
            vals = [v for v in (value_at(c, t) for c in curves[method]) if v is not None]
            cells.append(f"{statistics.median(vals):>11.4f}" if vals else f"{'-':>11s}")
        finals[method] = statistics.median(c[-1][1] for c in curves[method])
        print(f"{method:10s}" + "".join(cells) + f"  {finals[method]:.4f}  {statistics.median(walls[method]):5.0f} s")
    target = min(finals.values())
    times = {}
    for method in METHODS:
        reached = [time_to(c, target) for c in curves[method]]
        times[method] = statistics.median(t if t is not None else float("inf") for t in reached)
        print(f"time to test_acc {target:.4f}, {method}: median {times[method]:.0f} s "
              f"(per repeat: {', '.join('-' if t is None else f'{t:.0f}' for t in reached)})")
    ratio = times["random"] / times["tpe+asha"] if times["tpe+asha"] > 0 else float("inf")
    print(f"ratio random / tpe+asha: {ratio:.2f} (> 1: the platform's search reaches it sooner)")


if __name__ == "__main__":
    main()
