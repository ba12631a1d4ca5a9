"""Does a trial run slower inside Ray? One space's base config for ``--epochs`` epochs through
``fit()`` in a thread of a Ray actor (as Tune runs a function trainable: one CPU, a reused actor)
against the same epochs in a thread of a plain spawned process, one at a time, in turns (A B, B A,
...), after one warm-up run of each.

Both sides set one torch thread, as a search's trials do. Prints each run's epoch seconds (the sum
of ``epoch_seconds``) and the CPU seconds of the thread that ran ``fit()``, then the medians and
the ratio actor / plain. Unlike ``search_overhead.py``, nothing else of the platform runs (no
driver loop, no MLflow, no second trial): the ratio is the cost of being a Ray worker alone.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from multiprocessing import get_context

from eqsearch.config import parse_assignment
from search_overhead import train


def epochs_in_a_thread(tree: dict, epochs: int) -> tuple[float, float]:
    """(sum of epoch_seconds, CPU seconds of the thread) of ``fit()`` on the run config ``tree``
    for ``epochs`` epochs on one torch thread (``search_overhead.train``), run in a new thread of
    this process."""
    out: list[float] = []

    def run() -> None:
        t0 = time.thread_time()
        out.append(train((tree, epochs)))
        out.append(time.thread_time() - t0)

    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
    if len(out) != 2:
        raise RuntimeError("fit() failed in the worker thread (its traceback is above)")
    return out[0], out[1]


class Trial:
    """The Ray actor: one per benchmark, reused for every run like a search's reused actors."""

    def run(self, tree: dict, epochs: int) -> tuple[float, float]:
        return epochs_in_a_thread(tree, epochs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", default="quickstart", help="a shipped space's name or a space file (its base config)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="FIELD=VALUE",
                    help="override a base config field (as `eqsearch search --set`)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=6, help="runs of each side, in turns")
    args = ap.parse_args()

    import ray

    import search_spaces
    from eqsearch.errors import ConfigError
    from eqsearch.search.space import load_spec

    try:
        spec = load_spec(search_spaces.resolve(args.space), sets=dict(parse_assignment(s) for s in args.sets))
    except ConfigError as exc:
        sys.exit(f"error: {exc}")
    tree = spec.base_config.to_dict()

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    actor = ray.remote(num_cpus=1)(Trial).remote()
    runs: dict[str, list[tuple[float, float]]] = {"actor": [], "plain": []}
    with get_context("spawn").Pool(1) as pool:
        sides = {"actor": lambda: ray.get(actor.run.remote(tree, args.epochs)),
                 "plain": lambda: pool.apply(epochs_in_a_thread, (tree, args.epochs))}
        for side in sides.values():  # warm-up: imports, data, first allocations
            side()
        for r in range(args.rounds):
            for name in ("actor", "plain") if r % 2 == 0 else ("plain", "actor"):
                runs[name].append(sides[name]())
                print(f"round {r + 1} {name:>6}: epochs {runs[name][-1][0]:.3f} s, thread CPU "
                      f"{runs[name][-1][1]:.3f} s", flush=True)
    ray.shutdown()
    med = {name: (statistics.median(e for e, _ in rs), statistics.median(c for _, c in rs)) for name, rs in runs.items()}
    for name, (e, c) in med.items():
        print(f"{name}: median epochs {e:.3f} s, thread CPU {c:.3f} s")
    print(f"actor / plain (medians of {args.rounds}): epochs {med['actor'][0] / med['plain'][0]:.3f}, "
          f"thread CPU {med['actor'][1] / med['plain'][1]:.3f}")


if __name__ == "__main__":
    main()
