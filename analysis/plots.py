"""PNG plots of a search (matplotlib, Agg backend): learning curves of the top trials, the
metric against β per estimator and against the weight / gradient angles, parameter importance
and parallel coordinates, and the trials that reached each epoch (ASHA's rungs).

The scatter, importance and parallel-coordinate plots show the summary's equal-fidelity frame
(every trial's metric at one epoch, :mod:`analysis.fidelity`); their titles name the epoch.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.load import Search  # noqa: E402
from analysis.tables import Summary, mean_angle, usable  # noqa: E402

DPI = 110


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def learning_curves(search: Search, metric: str, top: int, path: Path) -> Path | None:
    """``metric`` per epoch of the ``top`` best trials (ranked by their final value)."""
    if metric not in search.curves.columns:
        return None
    best = usable(search.trials, metric).sort_values(metric, ascending=search.mode == "min", kind="stable").head(top)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for row in best.itertuples(index=False):
        c = search.curves[search.curves["trial_id"] == row.trial_id]
        ax.plot(c["epoch"], c[metric], marker="o", label=f"{row.trial_name} ({row.estimator})")
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(f"{search.name}: {metric} of the top {len(best)} trials")
    ax.legend(fontsize=8)
    return _save(fig, path)


def metric_vs_beta(trials: pd.DataFrame, metric: str, title: str, path: Path) -> Path:
    """``metric`` against β (log scale), one colour per estimator; hollow marks: stopped early."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    done = trials["epochs_run"] >= trials["max_epochs"]
    for k, (est, df) in enumerate(trials.groupby("estimator", sort=True)):
        color = f"C{k}"
        full = done.loc[df.index]
        ax.scatter(df.loc[full, "config.rule.beta"], df.loc[full, metric], color=color, label=est)
        ax.scatter(df.loc[~full, "config.rule.beta"], df.loc[~full, metric], facecolors="none", edgecolors=color)
    ax.set_xscale("log")
    ax.set_xlabel("β")
    ax.set_ylabel(metric)
    ax.set_title(f"{title}: {metric} vs β (hollow: stopped before the full budget)", fontsize=9)
    ax.legend(fontsize=8)
    return _save(fig, path)


def metric_vs_angle(trials: pd.DataFrame, metric: str, title: str, path: Path) -> Path | None:
    """``metric`` against the mean backward/forward weight angle and the EP-vs-BPTT gradient
    angle, where logged; None when neither is."""
    series = {}
    angle = mean_angle(trials)
    if angle is not None and angle.notna().any():
        series["weight angle (mean angle_B, degrees)"] = angle
    if "config.model.angle" in trials.columns and trials["config.model.angle"].dropna().nunique() > 1:
        series["initial weight angle (model.angle, degrees)"] = trials["config.model.angle"].astype(float)
    if "gdu_angle" in trials.columns and trials["gdu_angle"].notna().any():
        series["EP-vs-BPTT gradient angle (gdu_angle)"] = trials["gdu_angle"].astype(float)
    if "angle_grad" in trials.columns and trials["angle_grad"].notna().any():
        series["total update vs BPTT, Ψ (angle_grad)"] = trials["angle_grad"].astype(float)
    if not series:
        return None
    fig, axes = plt.subplots(1, len(series), figsize=(6 * len(series), 4.5), squeeze=False)
    for ax, (label, x) in zip(axes[0], series.items()):
        for k, (est, df) in enumerate(trials.groupby("estimator", sort=True)):
            ax.scatter(x.loc[df.index], df[metric], color=f"C{k}", label=est)
        ax.set_xlabel(label)
        ax.set_ylabel(metric)
        ax.legend(fontsize=8)
    fig.suptitle(f"{title}: {metric} vs angle")
    return _save(fig, path)


def importance(imp: pd.DataFrame | None, metric: str, title: str, path: Path) -> Path | None:
    """Bar chart of the summary's ``param_importance`` table (Optuna's fANOVA shares)."""
    if imp is None:
        return None
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(imp) + 1.5))
    labels = [p.removeprefix("config.") for p in imp["parameter"]]
    ax.barh(labels[::-1], imp["importance"][::-1])
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"share of the variance of {metric} (optuna fANOVA)")
    ax.set_title(f"{title}: parameter importance")
    return _save(fig, path)


def parallel_coordinates(trials: pd.DataFrame, metric: str, searched: list[str], title: str,
                         path: Path) -> Path | None:
    """One line per trial across the searched parameters (each scaled to [0, 1]; log scale for
    positive ranges over a decade; categories evenly spaced), coloured by ``metric``."""
    if not searched:
        return None
    axes_vals = {}
    for col in searched:
        v = trials[col]
        if pd.api.types.is_numeric_dtype(v) and not pd.api.types.is_bool_dtype(v):
            x = v.astype(float)
            if x.min() > 0 and x.max() / x.min() > 10:
                x = np.log10(x)
            span = x.max() - x.min()
            axes_vals[col] = (x - x.min()) / span if span > 0 else x * 0 + 0.5
        else:
            cats = sorted(v.dropna().astype(str).unique())
            codes = v.astype(str).map({c: i for i, c in enumerate(cats)})
            axes_vals[col] = codes / max(len(cats) - 1, 1)
    y = trials[metric].astype(float)
    span = y.max() - y.min()
    axes_vals[metric] = (y - y.min()) / span if span > 0 else y * 0 + 0.5
    frame = pd.DataFrame(axes_vals)
    fig, ax = plt.subplots(figsize=(max(7, 1.4 * len(frame.columns)), 4.5))
    cmap = plt.get_cmap("viridis")
    for i in np.argsort(y.to_numpy()):  # best drawn last (on top) when mode is max
        ax.plot(range(len(frame.columns)), frame.iloc[i], color=cmap(frame[metric].iloc[i]), alpha=0.8)
    ax.set_xticks(range(len(frame.columns)))
    ax.set_xticklabels([c.removeprefix("config.") for c in frame.columns], rotation=30, ha="right", fontsize=8)
    ax.set_yticks([])
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(y.min(), y.max()))
    fig.colorbar(sm, ax=ax, label=metric)
    ax.set_title(f"{title}: parallel coordinates")
    return _save(fig, path)


def rungs(trials: pd.DataFrame, title: str, path: Path) -> Path:
    """Trials that reached each epoch, stacked by how they ended (ASHA's rungs show as steps)."""
    max_epochs = int(trials["max_epochs"].max())
    epochs = np.arange(1, max_epochs + 1)
    fig, ax = plt.subplots(figsize=(7, 4))
    bottom = np.zeros(len(epochs))
    for reason, df in trials.groupby("stop_reason", sort=True):
        counts = np.array([(df["epochs_run"] >= e).sum() for e in epochs])
        ax.bar(epochs, counts, bottom=bottom, label=reason)
        bottom += counts
    ax.set_xticks(epochs)
    ax.set_xlabel("epoch")
    ax.set_ylabel("trials that ran this epoch")
    ax.set_title(f"{title}: trials surviving each epoch")
    ax.legend(fontsize=8)
    return _save(fig, path)


def make_plots(search: Search, summary: Summary, out: Path, top: int = 5) -> tuple[dict[str, Path], dict[str, str]]:
    """Write every plot of ``search`` and its ``summary`` into ``out``; returns (name -> path,
    name -> why skipped)."""
    metric = summary.metric
    out.mkdir(parents=True, exist_ok=True)
    df = summary.frame
    made: dict[str, Path | None] = {}
    skipped = {}
    made["learning_curves"] = learning_curves(search, metric, top, out / "learning_curves.png")
    if df is None or df.empty:
        skipped["all"] = f"no trial has a finite {metric}"
    else:
        title = f"{search.name} at epoch {summary.epoch} ({len(df)} trials)"
        made["metric_vs_beta"] = metric_vs_beta(df, metric, title, out / "metric_vs_beta.png")
        made["metric_vs_angle"] = metric_vs_angle(df, metric, title, out / "metric_vs_angle.png")
        made["importance"] = importance(summary.tables.get("param_importance"), metric, title, out / "importance.png")
        made["parallel_coordinates"] = parallel_coordinates(df, metric, search.searched(), title,
                                                            out / "parallel_coordinates.png")
    made["rungs"] = rungs(search.trials, search.name, out / "rungs.png") if not search.trials.empty else None
    reasons = {"learning_curves": f"no per-epoch {metric}",
               "metric_vs_angle": "no angle_B<k> or gdu_angle metrics (vector-field models / train.check_thm)",
               "importance": summary.notes.get("param_importance", "no importance table"),
               "parallel_coordinates": "no searched parameters", "rungs": "no trials"}
    skipped.update({k: reasons[k] for k, v in made.items() if v is None})
    return {k: v for k, v in made.items() if v is not None}, skipped
