"""Summary tables of a search's trials: the metric by estimator × β, by loss, by weight angle,
its correlation with the EP-vs-BPTT gradient angle, over seeds, and the top trials.

Every grouped table has the columns ``n, mean, std, min, max`` of the metric over the trials of
the group (``std`` with ``ddof=1``; empty for one trial). Trials without a finite value of the
metric (errored before their first epoch) are left out; ``completed_only`` also leaves out
trials that did not run all their epochs (ASHA-stopped, diverged), whose final value is an
earlier epoch's. ``extra`` names leading group columns (``search`` when comparing searches).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from eqsearch.errors import AnalysisError
from eqsearch.search.results import COMPLETED

STATS = ("n", "mean", "std", "min", "max")
ANGLE_BIN_DEGREES = 15
DIAGNOSTICS = ("gdu_angle", "gdu_rel_error", "gdu_sign_error", "angle_grad")


@dataclass
class Summary:
    """Named tables, and a note for each table that could not be made."""

    metric: str
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)


def check_metric(trials: pd.DataFrame, metric: str) -> None:
    """Raise :class:`AnalysisError` unless ``metric`` is a numeric column of ``trials``."""
    allowed = sorted(c for c in trials.columns if not c.startswith("config.") and pd.api.types.is_numeric_dtype(trials[c]))
    if metric not in allowed:
        raise AnalysisError(f"metric {metric!r}: unknown; allowed: {', '.join(allowed)}")


def usable(trials: pd.DataFrame, metric: str, completed_only: bool = False) -> pd.DataFrame:
    """Trials with a finite ``metric`` (and, with ``completed_only``, that ran all epochs)."""
    keep = np.isfinite(trials[metric].astype(float))
    if completed_only:
        keep &= trials["stop_reason"] == COMPLETED
    return trials[keep]


def group_stats(trials: pd.DataFrame, by: list[str], metric: str) -> pd.DataFrame:
    """``n, mean, std, min, max`` of ``metric`` per group of ``by`` (groups in sorted order)."""
    g = trials.groupby(by, sort=True, observed=True, dropna=False)[metric]
    out = g.agg(["count", "mean", "std", "min", "max"]).rename(columns={"count": "n"})
    return out.reset_index()


# ---------------------------------------------------------------------- bins
def beta_edges(values: pd.Series) -> list[float]:
    """Bin edges from the 1-2-5 series (…, 0.05, 0.1, 0.2, 0.5, 1, …) covering ``values``."""
    lo, hi = float(values.min()), float(values.max())
    series = [round(m * 10.0 ** e, 12) for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 2)
              for m in (1, 2, 5)]
    start = max(e for e in series if e <= lo)
    end = min(e for e in series if e > hi)
    return [e for e in series if start <= e <= end]


def bin_labels(values: pd.Series, edges: list[float], fmt: str = "{:g}") -> pd.Series:
    """``[lo, hi)`` label of each value's bin (an ordered categorical)."""
    labels = [f"[{fmt.format(a)}, {fmt.format(b)})" for a, b in zip(edges[:-1], edges[1:])]
    cut = pd.cut(values.astype(float), bins=edges, right=False, labels=labels)
    return cut


def mean_angle(trials: pd.DataFrame) -> pd.Series | None:
    """Mean over layers of the backward/forward weight angles ``angle_B<k>`` (degrees), or None."""
    cols = sorted(c for c in trials.columns if c.startswith("angle_B"))
    if not cols:
        return None
    return trials[cols].astype(float).mean(axis=1)


# ---------------------------------------------------------------------- tables
def by_estimator_beta(trials: pd.DataFrame, metric: str, extra: list[str]) -> pd.DataFrame:
    df = trials.assign(beta_bin=bin_labels(trials["config.rule.beta"], beta_edges(trials["config.rule.beta"])))
    return group_stats(df, [*extra, "estimator", "beta_bin"], metric)


def loss_column(trials: pd.DataFrame) -> pd.Series:
    """The output loss of each trial: ``model.loss``, or ``model.cost`` for the energy models."""
    loss = trials["config.model.loss"] if "config.model.loss" in trials else pd.Series(pd.NA, index=trials.index)
    if "config.model.cost" in trials:
        loss = loss.where(loss.notna(), trials["config.model.cost"])
    return loss


def by_loss(trials: pd.DataFrame, metric: str, extra: list[str]) -> pd.DataFrame:
    return group_stats(trials.assign(loss=loss_column(trials)), [*extra, "loss"], metric)


def by_model(trials: pd.DataFrame, metric: str, extra: list[str]) -> pd.DataFrame | None:
    """The metric per model kind × loss, when a search compares several kinds (e.g. two energies)."""
    if trials["config.model.kind"].nunique() < 2:
        return None
    return group_stats(trials.assign(loss=loss_column(trials)), [*extra, "config.model.kind", "loss"], metric)


def by_initial_angle(trials: pd.DataFrame, metric: str, extra: list[str]) -> pd.DataFrame | None:
    """The metric per initial backward/forward weight angle (``model.angle`` of code base B's VF
    models), when trials differ in it."""
    col = "config.model.angle"
    if col not in trials or trials[col].dropna().nunique() < 2:
        return None
    return group_stats(trials[trials[col].notna()], [*extra, col], metric)


def by_weight_angle(trials: pd.DataFrame, metric: str, extra: list[str]) -> pd.DataFrame | None:
    angle = mean_angle(trials)
    if angle is None or not angle.notna().any():
        return None
    edges = list(range(0, 180 + ANGLE_BIN_DEGREES, ANGLE_BIN_DEGREES))
    df = trials.assign(angle_bin=bin_labels(angle, edges, "{:d}"))
    return group_stats(df[angle.notna()], [*extra, "angle_bin"], metric)


def diagnostic_correlation(trials: pd.DataFrame, metric: str, extra: list[str]) -> pd.DataFrame | None:
    """Pearson and Spearman correlation of each logged GDU diagnostic with ``metric``."""
    rows = []
    present = [d for d in DIAGNOSTICS if d in trials.columns]
    groups = trials.groupby(extra, sort=True) if extra else [((), trials)]
    for key, df in groups:
        for d in present:
            pair = df[[d, metric]].astype(float).dropna()
            if len(pair) < 2:
                continue
            key_cols = dict(zip(extra, key if isinstance(key, tuple) else (key,)))
            rows.append({**key_cols, "diagnostic": d, "n": len(pair),
                         "pearson": pair[d].corr(pair[metric]),
                         "spearman": pair[d].corr(pair[metric], method="spearman")})
    return pd.DataFrame(rows) if rows else None


def over_seeds(trials: pd.DataFrame, metric: str, extra: list[str]) -> pd.DataFrame | None:
    """Mean ± std over seeds of every configuration that was run with several seeds.

    A configuration is the trial's values of the config fields that vary (``train.seed``
    aside), written ``field=value, ...``."""
    varied = [c for c in trials.columns if c.startswith("config.") and c != "config.train.seed"
              and trials[c].astype(str).nunique(dropna=False) > 1]
    label = trials[varied].astype(str).apply(
        lambda r: ", ".join(f"{c[len('config.'):]}={v}" for c, v in r.items()), axis=1) if varied else "all"
    stats = group_stats(trials.assign(configuration=label), [*extra, "configuration"], metric)
    repeated = stats[stats["n"] > 1]
    return repeated.reset_index(drop=True) if not repeated.empty else None


def stop_reasons(trials: pd.DataFrame, extra: list[str]) -> pd.DataFrame:
    g = trials.groupby([*extra, "stop_reason"], sort=True)
    return g.agg(n=("trial_id", "count"), epochs_run=("epochs_run", "sum"),
                 wall_seconds=("wall_seconds", "sum"), relaxation_steps=("relaxation_steps", "sum")).reset_index()


def top_trials(trials: pd.DataFrame, metric: str, mode: str, k: int, searched: list[str],
               extra: list[str]) -> pd.DataFrame:
    ranked = trials.sort_values(metric, ascending=mode == "min", kind="stable").head(k)
    cols = [*extra, "trial_name", "stop_reason", "epochs_run", metric, "best_test_acc", "wall_seconds",
            "relaxation_steps", *searched]
    return ranked[list(dict.fromkeys(c for c in cols if c in ranked.columns))].reset_index(drop=True)


def param_importance(trials: pd.DataFrame, metric: str, searched: list[str]) -> pd.DataFrame | None:
    """How strongly each searched parameter goes with ``metric``: |Spearman ρ| for a numeric
    parameter, the correlation ratio η for a categorical one (both in [0, 1]), over the
    trials where the parameter exists. A simple, model-free proxy for parameter importance."""
    rows = []
    for col in searched:
        pair = trials[[col, metric]].dropna()
        if len(pair) < 3 or pair[col].astype(str).nunique() < 2:
            continue
        if pd.api.types.is_numeric_dtype(pair[col]) and not pd.api.types.is_bool_dtype(pair[col]):
            rho = pair[col].astype(float).corr(pair[metric].astype(float), method="spearman")
            rows.append({"parameter": col, "kind": "spearman |rho|", "importance": abs(rho), "n": len(pair)})
        else:
            y = pair[metric].astype(float)
            means = y.groupby(pair[col].astype(str)).transform("mean")
            total = ((y - y.mean()) ** 2).sum()
            eta = math.sqrt(((means - y.mean()) ** 2).sum() / total) if total > 0 else 0.0
            rows.append({"parameter": col, "kind": "correlation ratio eta", "importance": eta, "n": len(pair)})
    if not rows:
        return None
    return pd.DataFrame(rows).sort_values("importance", ascending=False, kind="stable").reset_index(drop=True)


def summarize(trials: pd.DataFrame, metric: str = "test_acc", mode: str = "max", *, searched: list[str] = (),
              extra: list[str] = (), completed_only: bool = False, top: int = 5) -> Summary:
    """All tables of one search (or of several, with ``extra=["search"]``)."""
    check_metric(trials, metric)
    extra = list(extra)
    s = Summary(metric)
    s.tables["stop_reasons"] = stop_reasons(trials, extra)
    df = usable(trials, metric, completed_only)
    if df.empty:
        s.notes["all"] = f"no trial has a finite {metric}" + (" and ran all epochs" if completed_only else "")
        return s
    s.tables["top_trials"] = top_trials(df, metric, mode, top, list(searched), extra)
    s.tables["by_estimator_beta"] = by_estimator_beta(df, metric, extra)
    s.tables["by_loss"] = by_loss(df, metric, extra)
    optional = {
        "by_model": (by_model, "one model kind in every trial"),
        "by_initial_angle": (by_initial_angle, "no trials with different model.angle (code base B's vf_* models)"),
        "by_weight_angle": (by_weight_angle, "no angle_B<k> metrics: only vector-field models (vf_mlp, vf_cnn) "
                                             "log the backward/forward weight angle"),
        "gradient_angle_correlation": (diagnostic_correlation, "no GDU diagnostics (gdu_angle, ...) in two or more "
                                                               "trials: search with train.check_thm: true"),
        "over_seeds": (over_seeds, "no configuration was run with more than one seed"),
    }
    for name, (fn, note) in optional.items():
        table = fn(df, metric, extra)
        if table is None:
            s.notes[name] = note
        else:
            s.tables[name] = table
    if not extra:  # the searched parameters of one search
        importance = param_importance(df, metric, list(searched))
        if importance is None:
            s.notes["param_importance"] = "no searched parameter with 2+ values over 3+ trials"
        else:
            s.tables["param_importance"] = importance
    return s


# ---------------------------------------------------------------------- output
def fmt(value) -> str:
    """A table cell as text: floats with 4 significant digits, missing values empty."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _cell(text: str) -> str:
    """A Markdown table cell: a literal ``|`` (as in ``spearman |rho|``) must not split the cell."""
    return text.replace("|", "\\|")


def markdown(df: pd.DataFrame) -> str:
    """A GitHub Markdown table."""
    head = "| " + " | ".join(_cell(str(c)) for c in df.columns) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(_cell(fmt(v)) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def summary_markdown(s: Summary, title: str) -> str:
    parts = [f"# {title}", "", f"Metric: `{s.metric}` (final epoch of each trial)."]
    for name, table in s.tables.items():
        parts += ["", f"## {name}", "", markdown(table)]
    for name, note in s.notes.items():
        parts += ["", f"## {name}", "", f"Skipped: {note}."]
    return "\n".join(parts) + "\n"


def write_summary(s: Summary, out: Path, title: str) -> list[Path]:
    """Write one CSV per table and ``summary.md``; returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, table in s.tables.items():
        path = out / f"{name}.csv"
        table.to_csv(path, index=False)
        paths.append(path)
    md = out / "summary.md"
    md.write_text(summary_markdown(s, title))
    return [*paths, md]
