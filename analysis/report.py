"""One page with the tables and plots of a search (or of a comparison of searches), and the
folder that compares several searches.

The HTML page is self-contained: its plots are embedded as ``data:`` URIs (base64 PNG) and
its style is inline, so the page can be mailed or moved alone. The Markdown page links the
plot files relative to itself.
"""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path

import pandas as pd

from analysis.plots import full_budget, make_comparison_plots
from analysis.tables import Summary, fmt, summary_markdown, top_trials, usable, write_summary

STYLE = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto}table{border-collapse:collapse;"
         "font-size:13px}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}img{max-width:100%}")


def _html_table(df) -> str:
    head = "".join(f"<th>{html.escape(str(c).removeprefix('config.'))}</th>" for c in df.columns)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(fmt(v))}</td>" for v in r) + "</tr>"
                   for r in df.itertuples(index=False))
    return f"<table><tr>{head}</tr>{rows}</table>"


def data_uri(png: Path) -> str:
    """The PNG file ``png`` as a ``data:image/png;base64,...`` URI."""
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")


def write_report(summary: Summary, plots: dict[str, Path], skipped: dict[str, str], title: str, path: Path) -> Path:
    """Write ``path``: ``.html``, self-contained (plots embedded as data: URIs, inline style),
    or ``.md`` (plots linked relative to it)."""
    if path.suffix == ".md":
        rel = {name: os.path.relpath(p, path.parent) for name, p in plots.items()}
        text = summary_markdown(summary, title) + "".join(f"\n## {n}\n\n![{n}]({p})\n" for n, p in rel.items())
        text += "".join(f"\nPlot {n} skipped: {why}.\n" for n, why in skipped.items())
    else:
        parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                 f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
                 f"<p>{html.escape(summary.fidelity())}</p>"]
        parts += [f"<h2>{html.escape(n)}</h2>{_html_table(df)}" for n, df in summary.tables.items()]
        parts += [f"<h2>{html.escape(n)}</h2><p>Skipped: {html.escape(note)}.</p>" for n, note in summary.notes.items()]
        parts += [f"<h2>{html.escape(n)}</h2><img src='{data_uri(p)}' alt='{html.escape(n)}'>"
                  for n, p in plots.items()]
        parts += [f"<p>Plot {html.escape(n)} skipped: {html.escape(why)}.</p>" for n, why in skipped.items()]
        text = "\n".join(parts) + "\n</body></html>\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def top_per_search(trials: pd.DataFrame, metric: str, mode: str, k: int, searched: list[str],
                   completed_only: bool = False) -> pd.DataFrame | None:
    """The ``k`` best trials of each search (column ``search``) among those that ran the full
    budget, by their final ``metric``; None when no trial of any search did."""
    df = usable(trials, metric, completed_only)
    df = df[full_budget(df)]
    parts = [top_trials(g, metric, mode, k, searched, ["search"]) for _, g in df.groupby("search", sort=False)]
    return pd.concat(parts, ignore_index=True) if parts else None


def write_comparison(summary: Summary, trials: pd.DataFrame, mode: str, searched: list[str], top: int,
                     completed_only: bool, title: str, out: Path) -> tuple[list[Path], dict[str, str]]:
    """Write the comparison of the searches of ``trials`` into ``out``: the joint ``summary``'s
    tables side by side (one CSV each and ``summary.md``; ``top_trials`` holds the ``top`` best
    of each search), the comparison plots in ``out/plots`` and the self-contained
    ``report.html``. Returns (the paths written, plot name -> why skipped)."""
    best = top_per_search(trials, summary.metric, mode, top, searched, completed_only)
    if best is not None:
        summary.tables["top_trials"] = best
        summary.notes.pop("top_trials", None)
    plots, skipped = make_comparison_plots(trials, summary, mode, out / "plots")
    paths = write_summary(summary, out, title)
    page = write_report(summary, plots, skipped, title, out / "report.html")
    return [*paths, *plots.values(), page], skipped
