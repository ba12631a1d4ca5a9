"""The GDU check: per-step EP updates match truncated-BPTT gradients for small β."""

from __future__ import annotations

import torch

from eqsearch.gdu import gdu_check, plot_gdu, summarize
from eqsearch.models import MLP


def setup():
    torch.manual_seed(0)
    model = MLP([5, 8, 6, 3], act="tanh").double()
    g = torch.Generator().manual_seed(1)
    return model, torch.rand(6, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (6,), generator=g)


def test_gdu_holds_for_converged_free_phase_and_small_beta(tmp_path):
    model, x, y = setup()
    rows, series = gdu_check(model, x, y, T1=200, T2=10, beta=1e-4, symmetric=True)
    keys = {r["key"] for r in rows}
    assert {"W.0.weight", "W.0.bias", "W.2.weight", "s1", "s2", "s3"} <= keys
    for r in rows:
        if r["estimator"] == "symmetric" and r["kind"] == "synapses":
            assert r["rel_error"] < 1e-6, r
            assert r["angle"] < 1e-3, r
        if r["kind"] == "neurons":  # equal up to the positive factor σ'(·): signs agree
            assert r["sign_error"] == 0.0, r
    summary = summarize(rows, "symmetric")
    assert summary["gdu_sign_error"] < 0.01
    path = plot_gdu(series, rows, tmp_path / "gdu.png")
    assert path.stat().st_size > 5000


def test_gdu_detects_a_wrong_sign():
    """The check is not vacuous: flipping the EP side's sign gives sign errors ≈ 1."""
    model, x, y = setup()
    rows, series = gdu_check(model, x, y, T1=200, T2=5, beta=1e-3)
    from eqsearch.gdu import series_metrics

    bad = series_metrics(-series["one_sided"]["W.2.weight"], series["bptt"]["W.2.weight"])
    good = series_metrics(series["one_sided"]["W.2.weight"], series["bptt"]["W.2.weight"])
    assert good["angle"] < 1.0 and bad["angle"] > 179.0
    assert bad["sign_error"] > 0.9
