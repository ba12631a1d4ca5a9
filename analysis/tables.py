"""Summary tables of a search's trials at equal fidelity: the metric by estimator × β, by loss,
by initial and measured weight angle, by LCA dictionary mode × λ (with the code's sparsity), its
correlation with the EP-vs-BPTT gradient angle and the code's sparsity, by relaxation (update
order × early-exit tolerance, with the steps and seconds each cost), over seeds, by ASHA rung,
parameter importance, and the top trials.

Trials of an ASHA search run different numbers of epochs, so the grouped tables and the
importance compare every trial at one epoch (:mod:`analysis.fidelity`): ``epoch`` (the CLI's
``--at-epoch``), by default the largest epoch most trials reached; trials that stopped before
it are left out, and each row counts the trials behind it. ``by_rung`` repeats the comparison
at every epoch where ASHA decided. ``top_trials`` ranks only the trials that ran the full
budget, by their final values.

Every grouped table has the columns ``n, mean, std, min, max`` of the metric over the trials of
the group (``std`` with ``ddof=1``; empty for one trial). Trials without a finite value of the
metric (errored before their first epoch) are left out; ``completed_only`` also leaves out
trials that did not complete (ASHA-stopped, diverged). ``extra`` names leading group columns
(``search`` when comparing searches).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import fidelity
from eqsearch.errors import AnalysisError
from eqsearch.search.results import COMPLETED

STATS = ("n", "mean", "std", "min", "max")
ANGLE_BIN_DEGREES = 15
DIAGNOSTICS = ("gdu_angle", "gdu_rel_error", "gdu_sign_error", "angle_grad",  # EP vs BPTT
               "test_lca_sparsity", "test_lca_recon_error")  # the LCA-CNN's code


@dataclass
class Summary:
    """Named tables, and a note for each table that could not be made."""

    metric: str
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    epoch: int | None = None  # the epoch of the equal-fidelity comparison
    frame: pd.DataFrame | None = None  # the trials compared, their metrics at ``epoch``
    total: int = 0  # trials with a finite metric

    def fidelity(self) -> str:
        """One line saying what the tables compare."""
        if self.epoch is None:
            return f"Metric: `{self.metric}`."
        n = 0 if self.frame is None else len(self.frame)
        return (f"Metric: `{self.metric}` at epoch {self.epoch} ({n} of {self.total} trials reached it; "
                "`by_rung` at every ASHA rung); `top_trials`: trials that ran the full budget, final epoch.")


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


def by_sparse_coding(trials: pd.DataFrame, metric: str, extra: list[str]) -> pd.DataFrame | None:
    """The metric per dictionary mode × LCA threshold λ (1-2-5 bins) of LCA-CNN trials, with
    their mean test sparsity (fraction of non-zero code entries), when trials differ in either."""
    mode, lam = "config.model.dict_training", "config.model.lca.lam"
    if mode not in trials or lam not in trials:
        return None
    df = trials[trials[lam].notna()]
    if df.empty or (df[mode].nunique() < 2 and df[lam].nunique() < 2):
        return None
    df = df.assign(lam_bin=bin_labels(df[lam], beta_edges(df[lam])))
    table = group_stats(df, [*extra, mode, "lam_bin"], metric)
    if "test_lca_sparsity" in df:
        sparsity = df.groupby([*extra, mode, "lam_bin"], sort=True, observed=True)["test_lca_sparsity"].mean()
        table = table.merge(sparsity.rename("mean_test_lca_sparsity").reset_index(), on=[*extra, mode, "lam_bin"])
    return table


RELAXATION_COST = ("train_steps", "epoch_seconds")  # a trial's cost at the compared epoch


def by_relaxation(trials: pd.DataFrame, metric: str, extra: list[str]) -> pd.DataFrame | None:
    """The metric per layer update order × early-exit tolerance (``rule.order`` × ``rule.tol``),
    with each group's mean cost (``mean_train_steps``: relaxation steps run per training batch;
    ``mean_epoch_seconds``), when trials differ in either: accuracy against steps."""
    order, tol = "config.rule.order", "config.rule.tol"
    if order not in trials or tol not in trials:
        return None
    df = trials[trials[order].notna() & trials[tol].notna()]
    if df.empty or (df[order].nunique() < 2 and df[tol].nunique() < 2):
        return None
    by = [*extra, order, tol]
    table = group_stats(df, by, metric)
    cost = [c for c in RELAXATION_COST if c in df]
    if cost:
        means = df.groupby(by, sort=True, observed=True)[cost].mean().add_prefix("mean_")
        table = table.merge(means.reset_index(), on=by)
    return table


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


def param_importance(trials: pd.DataFrame, metric: str, mode: str, searched: list[str]) -> pd.DataFrame | None:
    """The share of the metric's variance each searched parameter explains: Optuna's fANOVA
    evaluator (seeded) on an in-memory study holding one trial per row (its parameter values,
    the metric as its value). Parameters absent from some trials (conditional ones) or with one
    value are left out. Distributions: the observed range, on a log scale where it is positive
    and spans a decade; integers as integers; anything else as categories. None when fewer
    than 3 trials or no parameter qualifies, or the metric does not vary."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    cols = [c for c in searched if c in trials and trials[c].notna().all() and trials[c].astype(str).nunique() > 1]
    pair = trials[[*cols, metric]].dropna()
    if len(pair) < 3 or not cols or pair[metric].nunique() < 2:
        return None
    dists, values = {}, {}
    for c in cols:
        v = pair[c]
        if pd.api.types.is_bool_dtype(v) or not pd.api.types.is_numeric_dtype(v):
            values[c] = v.astype(str).tolist()
            dists[c] = CategoricalDistribution(sorted(set(values[c])))
        elif pd.api.types.is_integer_dtype(v):
            values[c] = [int(x) for x in v]
            dists[c] = IntDistribution(min(values[c]), max(values[c]))
        else:
            values[c] = [float(x) for x in v]
            lo, hi = min(values[c]), max(values[c])
            dists[c] = FloatDistribution(lo, hi, log=lo > 0 and hi / lo >= 10)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    for i, y in enumerate(pair[metric].astype(float)):
        params = {c: values[c][i] for c in cols}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=y))
    imp = optuna.importance.get_param_importances(study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    rows = [{"parameter": c, "importance": float(imp.get(c, 0.0)), "evaluator": "optuna fANOVA", "n": len(pair)}
            for c in cols]
    return pd.DataFrame(rows).sort_values("importance", ascending=False, kind="stable").reset_index(drop=True)


def by_rung(trials: pd.DataFrame, curves: pd.DataFrame, metric: str, extra: list[str]) -> pd.DataFrame | None:
    """The metric per estimator (and initial weight angle, where trials differ in it) at every
    ASHA rung (:func:`analysis.fidelity.rung_epochs`), over the trials that reached the rung;
    None for a search without rungs below the full budget."""
    epochs = fidelity.rung_epochs(trials)
    if len(epochs) < 2:
        return None
    angle = "config.model.angle"
    by = [*extra, "rung_epoch", "estimator"]
    if angle in trials and trials[angle].dropna().nunique() > 1:
        by.append(angle)
    parts = []
    for e in epochs:
        df = usable(fidelity.at_epoch(trials, curves, e), metric)
        parts.append(group_stats(df.assign(rung_epoch=e), by, metric))
    return pd.concat(parts, ignore_index=True)


def summarize(trials: pd.DataFrame, curves: pd.DataFrame, metric: str = "test_acc", mode: str = "max", *,
              searched: list[str] = (), extra: list[str] = (), completed_only: bool = False, top: int = 5,
              epoch: int | None = None) -> Summary:
    """All tables of one search (or of several, with ``extra=["search"]``), compared at
    ``epoch`` (default :func:`analysis.fidelity.default_epoch`)."""
    check_metric(trials, metric)
    extra = list(extra)
    s = Summary(metric)
    s.tables["stop_reasons"] = stop_reasons(trials, extra)
    df = usable(trials, metric, completed_only)
    s.total = len(df)
    if df.empty:
        s.notes["all"] = f"no trial has a finite {metric}" + (" and ran all epochs" if completed_only else "")
        return s
    if epoch is None:
        epoch = fidelity.default_epoch(df)
    else:
        fidelity.check_epoch(df, epoch)
    s.epoch = epoch
    cmp = usable(fidelity.at_epoch(df, curves, epoch), metric)
    s.frame = cmp
    full = df[df["epochs_run"] >= df["max_epochs"]]
    if full.empty:
        s.notes["top_trials"] = "no trial has run its full budget yet"
    else:
        s.tables["top_trials"] = top_trials(full, metric, mode, top, list(searched), extra)
    s.tables["by_estimator_beta"] = by_estimator_beta(cmp, metric, extra)
    s.tables["by_loss"] = by_loss(cmp, metric, extra)
    optional = {
        "by_model": (by_model, "one model kind in every trial"),
        "by_initial_angle": (by_initial_angle, "no trials with different model.angle (code base B's vf_* models)"),
        "by_sparse_coding": (by_sparse_coding, "no LCA-CNN trials differing in model.dict_training or model.lca.lam"),
        "by_relaxation": (by_relaxation, "no trials differing in rule.order or rule.tol"),
        "by_weight_angle": (by_weight_angle, "no angle_B<k> metrics: only vector-field models (vf_mlp, vf_cnn) "
                                             "log the backward/forward weight angle"),
        "gradient_angle_correlation": (diagnostic_correlation, "no GDU diagnostics (gdu_angle, ...) in two or more "
                                                               "trials: search with train.check_thm: true"),
        "over_seeds": (over_seeds, "no configuration was run with more than one seed"),
    }
    for name, (fn, note) in optional.items():
        table = fn(cmp, metric, extra)
        if table is None:
            s.notes[name] = note
        else:
            s.tables[name] = table
    rungs = by_rung(df, curves, metric, extra)
    if rungs is None:
        s.notes["by_rung"] = "no trial stopped at an ASHA rung before the full budget"
    else:
        s.tables["by_rung"] = rungs
    if not extra:  # the searched parameters of one search
        importance = param_importance(cmp, metric, mode, list(searched))
        if importance is None:
            s.notes["param_importance"] = (f"fewer than 3 trials at epoch {epoch}, no searched parameter with 2+ "
                                           f"values in every trial, or {metric} does not vary")
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
    parts = [f"# {title}", "", s.fidelity()]
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
