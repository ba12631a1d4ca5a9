"""PNG plots of one search and of several searches side by side (matplotlib, Agg backend).

One search (:func:`search_figures`, written by :func:`make_plots`): learning curves of the top
trials, the metric against β per estimator and against the weight / gradient angles,
parameter importance, parallel coordinates, and the trials that reached each epoch (ASHA's
rungs). Several searches (:func:`comparison_figures`, :func:`make_comparison_plots`): the best
metric so far against the trial number and against the cumulative training time, and the
metric's distribution per search.

Every figure keeps three rules: each axis shows a value scale in its own units (log axes with
a few plain-number ticks from the 1-2-5 series and no minor labels, categorical axes with
their category names); no two tick labels overlap; two different quantities never share an
axis (one panel each).

Fidelity: the scatter, importance, parallel-coordinate and distribution plots show the
summary's equal-fidelity frame (every trial's metric at one epoch, :mod:`analysis.fidelity`)
and their titles name the epoch; the learning curves and rungs mark that epoch with a dotted
line. Filled marks and solid lines: trials that ran the full budget; hollow marks and dashed
lines: trials that stopped early (ASHA, divergence).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullFormatter  # noqa: E402

from analysis.load import Search  # noqa: E402
from analysis.tables import Summary, mean_angle, usable  # noqa: E402

DPI = 110
MAX_LOG_TICKS = 6
PAD = 0.05  # margin of a parallel axis beyond its data, as a fraction of its height
CHAR_INCHES = 0.075  # about the width of one character of an 8-10 pt label


# ---------------------------------------------------------------------- shared pieces
def full_budget(trials: pd.DataFrame) -> pd.Series:
    """Which trials ran their whole epoch budget (the others stopped early)."""
    return trials["epochs_run"] >= trials["max_epochs"]


def log_ticks(lo: float, hi: float, most: int = MAX_LOG_TICKS) -> list[float]:
    """Tick values for a log axis over [lo, hi] (lo > 0): the densest of the series 1…9, 1-2-3-5,
    1-2-5, 1-3, 1 (times powers of ten) with at most ``most`` ticks and none closer to the next
    than a tenth of the axis; every k-th power of ten where even those are too many; linear
    ticks where the range holds fewer than two."""
    span = math.log10(hi / lo)
    decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
    for subs in (range(1, 10), (1, 2, 3, 5), (1, 2, 5), (1, 3), (1,)):
        ticks = [t for t in (float(f"{m}e{e}") for e in decades for m in subs) if lo <= t <= hi]
        if len(ticks) <= most and np.all(np.diff(np.log10(ticks)) >= span / 10):
            break
    else:
        ticks = ticks[::math.ceil(len(ticks) / most)]
    if len(ticks) < 2:
        ticks = [t for t in MaxNLocator(4).tick_values(lo, hi) if lo <= t <= hi]
    return ticks


def log_axis(ax, which: str) -> None:
    """Label the log-scaled ``which`` ("x" or "y") axis of ``ax`` with :func:`log_ticks` over its
    current limits, written as plain numbers (0.05, 0.1, ...), minor ticks unlabelled."""
    axis = getattr(ax, f"{which}axis")
    lo, hi = sorted(getattr(ax, f"get_{which}lim")())
    axis.set_major_locator(FixedLocator(log_ticks(lo, hi)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def marks(ax, x, y, full: pd.Series, color: str, label: str | None = None) -> None:
    """Scatter (x, y): filled where ``full`` (ran the full budget), hollow elsewhere."""
    full = np.asarray(full, dtype=bool)
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ax.scatter(x[full], y[full], color=color, label=label)
    ax.scatter(x[~full], y[~full], facecolors="none", edgecolors=color)


def fidelity_legend(ax, lines: bool = False, extra: tuple = ()) -> None:
    """The axes' legend outside on the right, with keys for the fidelity marks: filled / hollow
    (``lines``: solid / dashed) for the trials that ran the full budget / stopped early."""
    style = {"linestyle": "-"} if lines else {"linestyle": "", "marker": "o"}
    stopped = {"linestyle": "--"} if lines else {"linestyle": "", "marker": "o", "markerfacecolor": "none"}
    keys = [Line2D([], [], color="grey", label="ran the full budget", **style),
            Line2D([], [], color="grey", label="stopped early", **stopped), *extra]
    handles, _ = ax.get_legend_handles_labels()
    ax.legend(handles=handles + keys, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))


def epoch_line(ax, epoch: int | None) -> tuple:
    """A dotted vertical line at the compared epoch; its legend key (none without an epoch)."""
    if epoch is None:
        return ()
    ax.axvline(epoch, color="black", linestyle=":", linewidth=1)
    return (Line2D([], [], color="black", linestyle=":", label=f"compared epoch ({epoch})"),)


def slot_inches(labels, minimum: float) -> float:
    """Width of one labelled slot of a categorical x axis, so that its labels do not overlap."""
    longest = max((len(line) for label in labels for line in str(label).splitlines()), default=0)
    return max(minimum, CHAR_INCHES * longest + 0.4)


def short(column: str) -> str:
    """A column's name as the plots write it (``config.rule.beta`` -> ``rule.beta``)."""
    return column.removeprefix("config.")


# ---------------------------------------------------------------------- one search
def learning_curves(search: Search, metric: str, top: int, epoch: int | None = None) -> Figure | None:
    """``metric`` (y) per epoch (x) of the ``top`` best trials (ranked by their final value), one
    line each (dashed, hollow: stopped early), the compared ``epoch`` dotted; None without
    per-epoch values of ``metric``."""
    if metric not in search.curves.columns:
        return None
    best = usable(search.trials, metric).sort_values(metric, ascending=search.mode == "min", kind="stable").head(top)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for k, row in enumerate(best.itertuples(index=False)):
        c = search.curves[search.curves["trial_id"] == row.trial_id]
        full = row.epochs_run >= row.max_epochs
        ax.plot(c["epoch"], c[metric], linestyle="-" if full else "--", marker="o", color=f"C{k}",
                markerfacecolor=None if full else "none", label=f"{row.trial_name} ({row.estimator})")
    key = epoch_line(ax, epoch)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(f"{search.name}: {metric} of the top {len(best)} trials")
    fidelity_legend(ax, lines=True, extra=key)
    return fig


def metric_vs_beta(trials: pd.DataFrame, metric: str, title: str) -> Figure | None:
    """``metric`` (y) against β (x, log scale), one colour per estimator, hollow: stopped early;
    None without ``rule.beta``."""
    if "config.rule.beta" not in trials or trials["config.rule.beta"].isna().all():
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    full = full_budget(trials)
    for k, (est, df) in enumerate(trials.groupby("estimator", sort=True)):
        marks(ax, df["config.rule.beta"], df[metric], full.loc[df.index], f"C{k}", est)
    ax.set_xscale("log")
    log_axis(ax, "x")
    ax.set_xlabel("β (log scale)")
    ax.set_ylabel(metric)
    ax.set_title(f"{title}: {metric} vs β")
    fidelity_legend(ax)
    return fig


def metric_vs_angle(trials: pd.DataFrame, metric: str, title: str) -> Figure | None:
    """``metric`` (y) against each logged angle (x, degrees), one panel per angle: the mean
    backward/forward weight angle, the initial weight angle ``model.angle``, the EP-vs-BPTT
    gradient angle and Ψ; one colour per estimator, hollow: stopped early. None when no angle
    is logged."""
    series = {}
    angle = mean_angle(trials)
    if angle is not None and angle.notna().any():
        series["weight angle (mean angle_B, degrees)"] = angle
    if "config.model.angle" in trials.columns and trials["config.model.angle"].dropna().nunique() > 1:
        series["initial weight angle (model.angle, degrees)"] = trials["config.model.angle"].astype(float)
    if "gdu_angle" in trials.columns and trials["gdu_angle"].notna().any():
        series["EP-vs-BPTT gradient angle (gdu_angle, degrees)"] = trials["gdu_angle"].astype(float)
    if "angle_grad" in trials.columns and trials["angle_grad"].notna().any():
        series["total update vs BPTT, Ψ (angle_grad, degrees)"] = trials["angle_grad"].astype(float)
    if not series:
        return None
    fig, axes = plt.subplots(1, len(series), figsize=(5.5 * len(series) + 1.5, 4.5), squeeze=False)
    full = full_budget(trials)
    for ax, (label, x) in zip(axes[0], series.items()):
        for k, (est, df) in enumerate(trials.groupby("estimator", sort=True)):
            marks(ax, x.loc[df.index], df[metric], full.loc[df.index], f"C{k}", est)
        ax.xaxis.set_major_locator(MaxNLocator(5))  # few enough for long labels (0.000550) not to touch
        ax.set_xlabel(label)
        ax.set_ylabel(metric)
    fidelity_legend(axes[0][-1])
    fig.suptitle(f"{title}: {metric} vs angle")
    return fig


def importance(imp: pd.DataFrame | None, metric: str, title: str) -> Figure | None:
    """One bar per searched parameter: its share of the variance of ``metric`` (x, 0 to 1) from
    the summary's ``param_importance`` table (Optuna's fANOVA), the share written at the bar's
    end; None without that table."""
    if imp is None:
        return None
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(imp) + 1.5))
    bars = ax.barh([short(p) for p in imp["parameter"]][::-1], imp["importance"][::-1])
    ax.bar_label(bars, fmt="%.2f", fontsize=8, padding=2)
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"share of the variance of {metric} (Optuna fANOVA, {int(imp['n'].iloc[0])} trials)")
    ax.set_title(f"{title}: parameter importance")
    return fig


@dataclass(frozen=True)
class ParallelAxis:
    """One axis of a parallel-coordinates plot: how a column's values map to heights in [0, 1]
    of the shared frame, and the scale that axis shows in the column's own units."""

    column: str
    kind: str  # "linear", "integer", "log" or "category"
    lo: float
    hi: float
    categories: tuple[str, ...] = ()

    @classmethod
    def of(cls, column: str, values: pd.Series, log: bool = True) -> "ParallelAxis":
        """Numbers on a linear axis (integers with integer ticks; ``log``: a log axis where they
        are positive and span more than a decade), anything else as sorted categories."""
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            x = values.astype(float).dropna()
            lo, hi = float(x.min()), float(x.max())
            if log and lo > 0 and hi / lo > 10:
                return cls(column, "log", lo, hi)
            kind = "integer" if (x == x.round()).all() else "linear"
        else:
            cats = tuple(sorted(values.dropna().astype(str).unique()))
            kind, lo, hi = "category", 0.0, float(len(cats) - 1)
        if lo == hi:  # one value: in the middle of the axis
            half = abs(lo) / 2 or 1.0
            lo, hi = lo - half, hi + half
        return cls(column, kind, lo, hi, cats if kind == "category" else ())

    def _forward(self, x):
        """Values on the axis' linear measure: log10 for a log axis, unchanged otherwise."""
        return np.log10(x) if self.kind == "log" else x

    def position(self, values: pd.Series) -> pd.Series:
        """Heights in [0, 1] of ``values`` (NaN where missing)."""
        if self.kind == "category":
            x = values.astype(str).map({c: float(i) for i, c in enumerate(self.categories)})
            x = x.where(values.notna())
        else:
            x = self._forward(values.astype(float))
        lo, hi = self._forward(self.lo), self._forward(self.hi)
        return (x - lo) / (hi - lo)

    def limits(self) -> tuple[float, float]:
        """The axis' range in its own units: the frame's heights -PAD and 1 + PAD."""
        lo, hi = self._forward(self.lo), self._forward(self.hi)
        ends = (lo - PAD * (hi - lo), hi + PAD * (hi - lo))
        return tuple(10.0 ** e for e in ends) if self.kind == "log" else ends

    def draw(self, ax) -> None:
        """Give the y axis of ``ax`` this axis' scale: limits, log scale, ticks, category names."""
        if self.kind == "log":
            ax.set_yscale("log")
        ax.set_ylim(*self.limits())
        if self.kind == "log":
            log_axis(ax, "y")
        elif self.kind == "category":
            ax.set_yticks(range(len(self.categories)), labels=self.categories)
        else:
            ax.yaxis.set_major_locator(MaxNLocator(6, integer=self.kind == "integer"))

    def label(self) -> str:
        """The name written under the axis, with "(log scale)" for a log axis."""
        return short(self.column) + ("\n(log scale)" if self.kind == "log" else "")


def parallel_coordinates(trials: pd.DataFrame, metric: str, mode: str, searched: list[str],
                         title: str) -> Figure | None:
    """One line per trial across one vertical axis per searched parameter and a last axis of
    ``metric``, coloured by ``metric`` (best drawn on top; dashed: stopped early). Each axis
    carries its own scale in its own units: linear or, for positive values over more than a
    decade, log (labelled "log scale"); categories by name; a missing (conditional) value
    breaks the line. Each axis' ``get_label()`` is its column. None without searched
    parameters."""
    columns = [c for c in searched if c in trials and trials[c].notna().any()]
    if not columns:
        return None
    axes = [ParallelAxis.of(c, trials[c]) for c in columns] + [ParallelAxis.of(metric, trials[metric], log=False)]
    heights = pd.DataFrame({a.column: a.position(trials[a.column]) for a in axes}, index=trials.index)
    n = len(axes)
    fig, host = plt.subplots(figsize=(n * slot_inches([a.label() for a in axes], 1.5) + 2, 5))
    host.set_xlim(0, n - 1)
    host.set_ylim(-PAD, 1 + PAD)
    host.yaxis.set_visible(False)
    for spine in host.spines.values():
        spine.set_visible(False)
    host.set_xticks(range(n), labels=[a.label() for a in axes], fontsize=8)
    host.tick_params(axis="x", length=0, pad=8)
    for i, a in enumerate(axes):
        twin = host.twinx()
        twin.set_label(a.column)
        for side in ("top", "bottom", "right"):
            twin.spines[side].set_visible(False)
        twin.spines["left"].set_position(("axes", i / (n - 1)))
        twin.yaxis.tick_left()
        twin.tick_params(axis="y", labelsize=8)
        a.draw(twin)
        plt.setp(twin.get_yticklabels(), bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1})
    y = trials[metric].astype(float)
    cmap, norm = plt.get_cmap("viridis"), plt.Normalize(y.min(), y.max())
    full = full_budget(trials)
    for i in np.argsort(y.to_numpy() if mode == "max" else -y.to_numpy(), kind="stable"):  # the best last
        line, = host.plot(range(n), heights.iloc[i], color=cmap(norm(y.iloc[i])), alpha=0.85,
                          linestyle="-" if full.iloc[i] else "--")
        line.set_gid(str(trials["trial_name"].iloc[i]))
    host.set_title(f"{title}: parallel coordinates (colour: {metric})")
    fidelity_legend(host, lines=True)
    return fig


def rungs(trials: pd.DataFrame, title: str, epoch: int | None = None) -> Figure:
    """Bars of the trials (y) that ran each epoch (x), stacked by how they ended (ASHA's rungs
    show as steps), the compared ``epoch`` dotted."""
    max_epochs = int(trials["max_epochs"].max())
    epochs = np.arange(1, max_epochs + 1)
    fig, ax = plt.subplots(figsize=(7, 4))
    bottom = np.zeros(len(epochs))
    for reason, df in trials.groupby("stop_reason", sort=True):
        counts = np.array([(df["epochs_run"] >= e).sum() for e in epochs])
        ax.bar(epochs, counts, bottom=bottom, label=reason)
        bottom += counts
    key = epoch_line(ax, epoch)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("trials that ran this epoch")
    ax.set_title(f"{title}: trials surviving each epoch")
    ax.legend(handles=ax.get_legend_handles_labels()[0] + list(key), fontsize=8, loc="upper left",
              bbox_to_anchor=(1.01, 1))
    return fig


def search_figures(search: Search, summary: Summary, top: int = 5) -> tuple[dict[str, Figure], dict[str, str]]:
    """Every plot of ``search`` and its ``summary``: (name -> figure, name -> why skipped)."""
    metric = summary.metric
    df = summary.frame
    made: dict[str, Figure | None] = {}
    skipped = {}
    made["learning_curves"] = learning_curves(search, metric, top, summary.epoch)
    if df is None or df.empty:
        skipped["all"] = f"no trial has a finite {metric}"
    else:
        title = f"{search.name} at epoch {summary.epoch} ({len(df)} trials)"
        made["metric_vs_beta"] = metric_vs_beta(df, metric, title)
        made["metric_vs_angle"] = metric_vs_angle(df, metric, title)
        made["importance"] = importance(summary.tables.get("param_importance"), metric, title)
        made["parallel_coordinates"] = parallel_coordinates(df, metric, search.mode, search.searched(), title)
    made["rungs"] = rungs(search.trials, search.name, summary.epoch) if not search.trials.empty else None
    reasons = {"learning_curves": f"no per-epoch {metric}", "metric_vs_beta": "no rule.beta in the trials",
               "metric_vs_angle": "no angle_B<k> or gdu_angle metrics (vector-field models / train.check_thm)",
               "importance": summary.notes.get("param_importance", "no importance table"),
               "parallel_coordinates": "no searched parameters", "rungs": "no trials"}
    skipped.update({k: reasons[k] for k, v in made.items() if v is None})
    return {k: v for k, v in made.items() if v is not None}, skipped


# ---------------------------------------------------------------------- several searches
def best_so_far(trials: pd.DataFrame, metric: str, mode: str, title: str) -> Figure:
    """Two panels, one step line per search (column ``search``): the best final ``metric`` of its
    trials so far (y) against the trial number (x, left; the order of the search's trial list)
    and against the cumulative training time of its trials (x, right; sum of ``epoch_seconds``);
    each trial's own final value as a point (hollow: stopped early)."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    for k, (label, df) in enumerate(trials.groupby("search", sort=False)):
        y = df[metric].astype(float)
        best = (y.cummax() if mode == "max" else y.cummin()).ffill()
        xs = (np.arange(1, len(df) + 1), df["wall_seconds"].astype(float).fillna(0.0).cumsum())
        for ax, x in zip(axes, xs):
            ax.step(x, best, where="post", color=f"C{k}", label=label)
            marks(ax, x, y, full_budget(df), f"C{k}")
    axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[1].xaxis.set_major_locator(MaxNLocator(5))
    axes[0].set_xlabel("trial number")
    axes[1].set_xlabel("cumulative training time of the search's trials (s)")
    for ax in axes:
        ax.set_ylabel(f"{metric} (line: the {'highest' if mode == 'max' else 'lowest'} so far)")
    fidelity_legend(axes[1])
    fig.suptitle(f"{title}: best {metric} so far (each trial's final value)")
    return fig


def metric_distribution(frame: pd.DataFrame, metric: str, title: str) -> Figure:
    """One box per search (x, by name and number of trials) of ``metric`` (y) over its trials in
    the equal-fidelity ``frame``, each trial a point beside it (hollow: stopped early)."""
    groups = [g for _, g in frame.groupby("search", sort=False)]
    labels = [f"{g['search'].iloc[0]}\n({len(g)} trials)" for g in groups]
    fig, ax = plt.subplots(figsize=(len(labels) * slot_inches(labels, 1.5) + 3, 4.5))
    ax.boxplot([g[metric].astype(float).to_numpy() for g in groups], positions=range(len(labels)),
               widths=0.4, showfliers=False)
    for k, g in enumerate(groups):
        offsets = np.linspace(-0.1, 0.1, len(g)) if len(g) > 1 else np.zeros(1)
        marks(ax, k + 0.3 + offsets, g[metric], full_budget(g), f"C{k}")
    ax.set_xticks(range(len(labels)), labels=labels)
    ax.set_xlim(-0.6, len(labels) - 0.2)
    ax.set_ylabel(metric)
    ax.set_title(f"{title}: {metric} per search")
    fidelity_legend(ax)
    return fig


def comparison_figures(trials: pd.DataFrame, summary: Summary, mode: str) -> tuple[dict[str, Figure], dict[str, str]]:
    """The plots comparing the searches of ``trials`` (column ``search``) and their joint
    ``summary``: (name -> figure, name -> why skipped)."""
    metric = summary.metric
    made = {"best_so_far": best_so_far(trials, metric, mode, f"{trials['search'].nunique()} searches")}
    if summary.frame is None or summary.frame.empty:
        return made, {"metric_distribution": f"no trial has a finite {metric}"}
    made["metric_distribution"] = metric_distribution(summary.frame, metric, f"at epoch {summary.epoch} "
                                                      f"({len(summary.frame)} trials)")
    return made, {}


# ---------------------------------------------------------------------- files
def save(figures: dict[str, Figure], out: Path) -> dict[str, Path]:
    """Write each figure to ``out/<name>.png`` (cropped to what it draws) and close it."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, fig in figures.items():
        paths[name] = out / f"{name}.png"
        fig.savefig(paths[name], dpi=DPI, bbox_inches="tight")
        plt.close(fig)
    return paths


def make_plots(search: Search, summary: Summary, out: Path, top: int = 5) -> tuple[dict[str, Path], dict[str, str]]:
    """Write every plot of ``search`` and its ``summary`` into ``out``; returns (name -> path,
    name -> why skipped)."""
    figures, skipped = search_figures(search, summary, top)
    return save(figures, out), skipped


def make_comparison_plots(trials: pd.DataFrame, summary: Summary, mode: str,
                          out: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """Write the plots comparing the searches of ``trials`` into ``out``; returns (name -> path,
    name -> why skipped)."""
    figures, skipped = comparison_figures(trials, summary, mode)
    return save(figures, out), skipped
