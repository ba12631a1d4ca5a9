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
    assert "fused/matmuls" in out.stdout and "matrix products" in out.stdout


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



TRIAL_LIKE = """
import threading, time
def name(comm):
    with open(f"/proc/self/task/{threading.get_native_id()}/comm", "w") as f:
        f.write(comm)
def spin(seconds, comm=None):
    if comm:
        name(comm)
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass
    time.sleep(0.5)  # alive for a few more readings: a thread's last CPU before it exits is not read
name("ray::ImplicitFu")  # as Ray's setproctitle: Python threads started later carry it
threads = [threading.Thread(target=spin, args=(1.0,)), threading.Thread(target=spin, args=(0.4, "worker.io"))]
for t in threads:
    t.start()
spin(0.2)
for t in threads:
    t.join()
time.sleep(0.6)
"""


def test_search_overhead_reads_a_trial_process_by_thread(monkeypatch):
    """``ProcessCPU``: a descendant named like a Ray trial worker counts as trials, split into its
    Python threads besides the main one, its main thread and Ray's named threads; the root is the
    driver."""
    import sys
    import time

    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    from search_overhead import ProcessCPU

    driver = (f"import subprocess, sys; subprocess.run(['ray::ImplicitFunc.train', '-c', {TRIAL_LIKE!r}], "
              f"executable=sys.executable)")
    proc = subprocess.Popen([sys.executable, "-c", driver])
    cpu = ProcessCPU(proc.pid, every=0.1)
    cpu.start()
    proc.wait(timeout=60)
    time.sleep(0.2)
    cpu.done.set()
    cpu.join()
    totals = cpu.totals()
    assert 0.9 <= totals["trial_threads"] <= 1.2, totals
    assert 0.3 <= totals["trial_ray_threads"] <= 0.5, totals
    assert 0.15 <= totals["trial_main"] <= 0.6, totals  # its spin and the imports
    assert totals["trials"] == pytest.approx(totals["trial_threads"] + totals["trial_ray_threads"]
                                             + totals["trial_main"], abs=0.25)  # a thread's last 0.1 s
    assert totals["other"] == 0.0 and totals["driver"] < 0.5


def test_trial_in_actor_times_the_same_epochs_in_a_ray_actor_and_a_plain_process():
    """``trial_in_actor.py``: both sides run, in turns, and the ratio of their medians is printed;
    a bad space is refused with eqsearch's message."""
    import re
    import sys

    script = str(SCRIPT.parent / "trial_in_actor.py")
    out = subprocess.run([sys.executable, script, "--rounds", "2", "--set", "data.max_batches=5"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    sides = re.findall(r"^round (\d) +(actor|plain): epochs ([\d.]+) s", out.stdout, re.M)
    assert [(r, side) for r, side, _ in sides] == [("1", "actor"), ("1", "plain"), ("2", "plain"), ("2", "actor")]
    assert all(float(s) > 0 for _, _, s in sides)
    assert re.search(r"^actor / plain \(medians of 2\): epochs [\d.]+, thread CPU [\d.]+$", out.stdout, re.M)
    bad = subprocess.run([sys.executable, script, "--set", "rule.T1=-3"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "rule.T1" in bad.stderr and "Traceback" not in bad.stderr


def test_the_matmul_floor_replays_exactly_a_batchs_products(monkeypatch):
    """``matmul_floor.record_matmuls``: the products of a batch, in order, on copies that keep the
    operands' layouts (a transposed weight stays transposed, an ``out=`` buffer stays one); the
    replay writes only into those copies; other operators are counted, not kept."""
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    from matmul_floor import record_matmuls

    g = torch.Generator().manual_seed(0)
    x, w, b, v = (torch.randn(*s, generator=g, dtype=torch.float64) for s in ((4, 6), (5, 6), (5,), (5, 3)))
    out = torch.empty(4, 3, dtype=torch.float64)

    def batch():
        h = torch.addmm(b, x, w.t()).sigmoid_()  # (4, 5): a product, then σ
        torch.mm(h, v, out=out)                  # (4, 3) into a buffer
        out.add_(1.0)

    replay = record_matmuls(batch)
    after_batch = out.clone()
    aten = torch.ops.aten
    assert [func.overloadpacket for func, _, _ in replay.calls] == [aten.addmm, aten.mm]
    assert replay.operators == 5 and replay.flops == 2 * 4 * 5 * 6 + 2 * 4 * 3 * 5  # t, addmm, sigmoid_, mm, add_
    (_, (bias, a, wt), _), (_, (h, vv), kw) = replay.calls
    assert wt.stride() == w.t().stride() and wt.data_ptr() != w.data_ptr() and torch.equal(wt, w.t())
    recorded_out = kw["out"]
    assert recorded_out.data_ptr() != out.data_ptr()
    recorded_out.zero_()
    replay()
    assert torch.equal(out, after_batch)  # the batch's own tensors are left alone
    assert torch.allclose(recorded_out, torch.addmm(b, x, w.t()).sigmoid() @ v)
