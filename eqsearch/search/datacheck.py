"""The search's data check, in a child process that runs while Ray starts.

Before its first trial a search loads every data set its trials can reach (the base's, and each
value of a searched ``data.dataset`` or ``data.root``), so that a missing or unreadable one fails
the search once, with the loader's message (:class:`~eqsearch.errors.DataError`), instead of
failing every trial. Loading imports torch (~2 s here) and keeps the tensors; in the driver that
would come before ``ray.init`` and stay in its memory. :class:`DataCheck` instead starts
``python -m eqsearch.search.datacheck JOB`` (JOB: the run configs to load, as JSON; one JSON
line on its stdout: ``{"error": null}`` or ``{"error": "data.dataset 'mnist': ..."}``), and the
driver asks for its answer (:meth:`DataCheck.result`) once Ray is up, before any trial starts.
"""

from __future__ import annotations

import json
import subprocess
import sys

from eqsearch.errors import SpecError


def data_trees(spec) -> list[dict]:
    """The run config tree of every distinct (data.dataset, data.root) a trial of ``spec`` can
    reach: the base's, or each value of those two fields where the space chooses them."""
    choices = {p.field: list(p.args) for p in spec.params if p.field in ("data.dataset", "data.root")
               and p.kind == "choice"}
    base = spec.base_config
    out, seen = [], set()
    for dataset in choices.get("data.dataset", [base.data.dataset]):
        for root in choices.get("data.root", [base.data.root]):
            if (dataset, root) not in seen:
                seen.add((dataset, root))
                out.append(base.replace({"data.dataset": dataset, "data.root": root}).to_dict())
    return out


class DataCheck:
    """The child process that loads ``spec``'s data sets; started at construction."""

    def __init__(self, spec):
        self.source = spec.source
        self.proc = subprocess.Popen([sys.executable, "-m", __name__, json.dumps(data_trees(spec))],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def result(self) -> None:
        """Wait for the check (once); :class:`SpecError` naming the space file and the data set that
        did not load, RuntimeError (with the child's error output) if the check itself crashed."""
        out, err = self.proc.communicate()
        lines = out.strip().splitlines()
        if self.proc.returncode != 0 or not lines:
            raise RuntimeError(f"the data check of {self.source} failed (exit {self.proc.returncode}):\n{err[-3000:]}")
        error = json.loads(lines[-1])["error"]
        if error:
            raise SpecError(f"{self.source}: {error}")

    def close(self) -> None:
        """End the child if its answer was never asked for (the search failed before)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pipe in (self.proc.stdout, self.proc.stderr):
            if not pipe.closed:
                pipe.close()


def main() -> None:
    from eqsearch.config import from_dict
    from eqsearch.data import load_dataset
    from eqsearch.errors import DataError

    error = None
    for tree in json.loads(sys.argv[1]):
        try:
            load_dataset(from_dict(tree).data)
        except DataError as exc:
            error = f"data.dataset {tree['data']['dataset']!r}: {exc}"
            break
    print(json.dumps({"error": error}), flush=True)


if __name__ == "__main__":
    main()
