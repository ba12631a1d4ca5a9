"""One page (HTML or Markdown) with a search's tables and plots, beside the plot files."""

from __future__ import annotations

import html
import os
from pathlib import Path

from analysis.tables import Summary, fmt, summary_markdown

STYLE = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto}table{border-collapse:collapse;"
         "font-size:13px}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}img{max-width:100%}")


def _html_table(df) -> str:
    head = "".join(f"<th>{html.escape(str(c).removeprefix('config.'))}</th>" for c in df.columns)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(fmt(v))}</td>" for v in r) + "</tr>"
                   for r in df.itertuples(index=False))
    return f"<table><tr>{head}</tr>{rows}</table>"


def write_report(summary: Summary, plots: dict[str, Path], skipped: dict[str, str], title: str, path: Path) -> Path:
    """Write ``path`` (``.html`` or ``.md``); plots are linked relative to it."""
    rel = {name: os.path.relpath(p, path.parent) for name, p in plots.items()}
    if path.suffix == ".md":
        text = summary_markdown(summary, title) + "".join(f"\n## {n}\n\n![{n}]({p})\n" for n, p in rel.items())
        text += "".join(f"\nPlot {n} skipped: {why}.\n" for n, why in skipped.items())
    else:
        parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                 f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
                 f"<p>{html.escape(summary.fidelity())}</p>"]
        parts += [f"<h2>{html.escape(n)}</h2>{_html_table(df)}" for n, df in summary.tables.items()]
        parts += [f"<h2>{html.escape(n)}</h2><p>Skipped: {html.escape(note)}.</p>" for n, note in summary.notes.items()]
        parts += [f"<h2>{html.escape(n)}</h2><img src='{html.escape(p)}' alt='{html.escape(n)}'>" for n, p in rel.items()]
        parts += [f"<p>Plot {html.escape(n)} skipped: {html.escape(why)}.</p>" for n, why in skipped.items()]
        text = "\n".join(parts) + "\n</body></html>\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
