"""The search's data check in its child process (:mod:`eqsearch.search.datacheck`): every data set
a space can reach is loaded there, a missing one is named with the loader's message, and the
search's driver never imports torch for it."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from eqsearch.errors import SpecError
from eqsearch.search.datacheck import DataCheck, data_trees
from eqsearch.search.space import spec_from_tree


def spec(space: dict | None = None, data: dict | None = None):
    return spec_from_tree({"base": {"data": {"dataset": "digits", **(data or {})}, "optim": {"lrs": [0.3, 0.15]}},
                           "space": space or {"rule.beta": {"uniform": [0.1, 1.0]}}}, "d.yaml")


def test_the_data_sets_a_space_reaches_are_the_choices_of_dataset_and_root(tmp_path):
    s = spec({"data.dataset": {"choice": ["digits", "mnist"]},
              "data.root": {"choice": [str(tmp_path / "a"), str(tmp_path / "b")]}})
    reached = [(tree["data"]["dataset"], tree["data"]["root"]) for tree in data_trees(s)]
    assert reached == [(d, str(tmp_path / r)) for d in ("digits", "mnist") for r in ("a", "b")]
    assert [t["data"]["dataset"] for t in data_trees(spec())] == ["digits"]


def test_a_loadable_space_passes_and_a_missing_root_is_named(tmp_path):
    DataCheck(spec()).result()  # digits: embedded, loads
    check = DataCheck(spec({"data.dataset": {"choice": ["digits", "mnist"]}}, {"root": str(tmp_path / "nowhere")}))
    with pytest.raises(SpecError, match=r"^d\.yaml: data\.dataset 'mnist': data\.root: '.*nowhere' is not a folder"):
        check.result()


def test_a_check_never_asked_for_is_ended():
    check = DataCheck(spec())
    check.close()
    assert check.proc.poll() is not None and check.proc.stdout.closed


def test_a_crashed_check_reports_its_error_output():
    check = DataCheck(spec())
    check.close()
    check.proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit('broken loader')"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with pytest.raises(RuntimeError, match=r"data check of d\.yaml failed \(exit 1\):\nbroken loader"):
        check.result()


def test_the_check_runs_while_the_driver_goes_on_and_the_driver_loads_no_torch():
    """Started, the check leaves the driver free (it answers later), and importing the driver and
    running the check leave torch out of the driver's process."""
    code = ("import sys, time; from eqsearch.search.driver import DataCheck; from tests.test_datacheck import spec\n"
            "t = time.perf_counter(); c = DataCheck(spec()); started = time.perf_counter() - t\n"
            "c.result(); print(started < 0.5, 'torch' in sys.modules)")
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["True", "False"], (out.stdout, time.perf_counter() - t0)
