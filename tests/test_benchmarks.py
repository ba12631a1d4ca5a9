"""The prepared device run, ``benchmarks/gpu.sh``, on the CPU path (no GPU here): every engine
benchmark it calls runs and prints its table; asking for CUDA where there is none fails at once."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu.sh"


def run(**env) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **env})


def test_gpu_script_runs_every_benchmark_on_the_cpu_path():
    out = run(DEVICE="cpu", QUICK="1")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    for label in ("MLP (code base A)", "CNN (code base A)", "CNN compiled", "CNN fewer steps", "energies (code base C)",
                  "continual EP (code base B)", "LCA-CNN (code base D)", "precision drift"):
        assert f"######## {label}" in out.stdout and f"-- {label}:" in out.stdout, label
    assert "!!" not in out.stdout
    assert "speed-up vs autograd" in out.stdout and "bfloat16" in out.stdout and "async" in out.stdout
    assert "compiled/fused" in out.stdout and "engine compile=phase" in out.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_gpu_script_refuses_cuda_without_a_device():
    out = run(DEVICE="cuda")
    assert out.returncode == 2 and "sees no CUDA device" in out.stderr


def _tune_reports(root, rows):
    """Write ``rows`` (trial name -> list of report dicts) as Tune's result.json files under ``root``."""
    import json

    for name, reports in rows.items():
        folder = root / "tune" / "space" / name
        folder.mkdir(parents=True)
        folder.joinpath("result.json").write_text("".join(json.dumps(r) + "\n" for r in reports))


def test_search_overhead_counts_the_cost_of_each_report_after_a_trials_first(tmp_path, monkeypatch):
    """``per_epoch_cost``: Tune's time between reports minus the epoch's own seconds, first
    reports (which hold the trial's set-up) left out."""
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    from search_overhead import per_epoch_cost, trial_reports

    rows = {"ep_a": [(1.9, 0.1), (0.12, 0.1), (0.25, 0.2)], "ep_b": [(2.0, 0.1)]}
    _tune_reports(tmp_path, {name: [{"time_this_iter_s": t, "epoch_seconds": e} for t, e in reports]
                             for name, reports in rows.items()})
    costs, epochs = per_epoch_cost(trial_reports(tmp_path))
    assert costs == pytest.approx([0.02, 0.05]) and epochs == [0.1, 0.2]


def test_search_overhead_spans_from_the_first_trials_start_to_the_last_report(tmp_path, monkeypatch):
    """``trial_span``: a trial starts its first report's time_this_iter_s before that report's
    timestamp; the span ends at the latest report of any trial."""
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    from search_overhead import trial_reports, trial_span

    _tune_reports(tmp_path, {"ep_a": [{"timestamp": 110, "time_this_iter_s": 6.0}, {"timestamp": 114, "time_this_iter_s": 4.0}],
                             "ep_b": [{"timestamp": 107, "time_this_iter_s": 5.0}, {"timestamp": 120, "time_this_iter_s": 13.0}]})
    assert trial_span(trial_reports(tmp_path)) == pytest.approx(120 - 102)
