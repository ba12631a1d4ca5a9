"""Analysis commands: ``summarize``, ``compare``, ``export`` and ``report``.

A SOURCE is a results folder of ``eqsearch search`` (read from its durable files, or from its
MLflow store with ``--from-mlflow``), or ``mlflow:EXPERIMENT[/PARENT_RUN_ID]`` with
``--mlflow-uri``. Bad input ends with one ``error:`` line and exit status 2.
"""

from __future__ import annotations

import functools
from pathlib import Path

import click

from eqsearch.cli import main
from eqsearch.cli.search_commands import fail
from eqsearch.config import ConfigError


def source_options(f):
    """Options shared by every analysis command: where the search is read from."""
    f = click.option("--mlflow-uri", default=None, help="MLflow tracking URI for mlflow:EXPERIMENT sources")(f)
    f = click.option("--from-mlflow", is_flag=True, help="read a results folder's search from its MLflow store")(f)
    return f


def table_options(f):
    f = click.option("--metric", default=None, help="metric of the tables (default: the search's, test_acc)")(f)
    f = click.option("--completed-only", is_flag=True, help="only trials that ran all their epochs")(f)
    f = click.option("--top", type=int, default=5, show_default=True, help="rows of the top-trials table")(f)
    f = click.option("--at-epoch", type=int, default=None,
                     help="compare every trial at this epoch (default: the largest epoch most trials reached)")(f)
    return f


def clean_errors(f):
    """Turn bad input into one error line and exit status 2."""
    from eqsearch.errors import AnalysisError

    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        try:
            return f(*args, **kwargs)
        except (AnalysisError, ConfigError, FileNotFoundError) as exc:
            fail(str(exc))

    return wrapper


def load(source: str, mlflow_uri: str | None, from_mlflow: bool):
    from analysis.load import load_search

    return load_search(source, mlflow_uri, from_mlflow)


def default_out(source: str, name: str, folder: str) -> Path:
    """``SOURCE/<folder>`` for a results folder, ``./<folder>-<name>`` for an MLflow source."""
    path = Path(source)
    return path / folder if path.is_dir() else Path(f"{folder}-{name}")


def show(summary, title: str) -> None:
    """Print every table of a summary with rich (notes for the skipped ones)."""
    from rich.console import Console
    from rich.table import Table

    from analysis.tables import fmt

    console = Console()
    if not console.is_terminal:  # a pipe or a file: do not fold the wide tables
        console.width = 200
    console.rule(title)
    console.print(summary.fidelity().replace("`", ""))
    for name, df in summary.tables.items():
        table = Table(title=name, title_justify="left")
        for c in df.columns:
            table.add_column(str(c).removeprefix("config."), overflow="fold")
        for row in df.itertuples(index=False):
            table.add_row(*(fmt(v) for v in row))
        console.print(table)
    for name, note in summary.notes.items():
        console.print(f"[dim]{name}: skipped: {note}[/dim]")


def tables_and_plots(search, metric, completed_only, top, at_epoch, plots_dir: Path | None):
    """The summary of ``search`` and, when ``plots_dir`` is given, its plots."""
    from analysis.tables import summarize as make

    summary = make(search.trials, search.curves, metric or search.metric, search.mode, searched=search.searched(),
                   completed_only=completed_only, top=top, epoch=at_epoch)
    if plots_dir is None:
        return summary, {}, {}
    from analysis.plots import make_plots

    made, skipped = make_plots(search, summary, plots_dir, top)
    return summary, made, skipped


@main.command()
@click.argument("source")
@source_options
@table_options
@click.option("--no-plots", is_flag=True, help="tables only")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="folder of the CSV, Markdown and PNG files (default SOURCE/analysis)")
@clean_errors
def summarize(source: str, mlflow_uri, from_mlflow, metric, completed_only, top, at_epoch, no_plots, out) -> None:
    """Tables of a search (metric by estimator × β, by loss, by weight angle, vs gradient angle; CSV + Markdown) and its plots."""
    from analysis.tables import write_summary

    search = load(source, mlflow_uri, from_mlflow)
    out = out or default_out(source, search.name, "analysis")
    summary, made, skipped = tables_and_plots(search, metric, completed_only, top, at_epoch,
                                              None if no_plots else out / "plots")
    show(summary, f"{search.name}: {len(search.trials)} trials ({search.source})")
    paths = write_summary(summary, out, f"Search {search.name}")
    click.echo(f"tables: {paths[-1]} and {len(paths) - 1} CSV files beside it")
    for name, why in skipped.items():
        click.echo(f"plot {name} skipped: {why}")
    if made:
        click.echo(f"plots:  {len(made)} PNG files in {out / 'plots'}")


@main.command()
@click.argument("source")
@source_options
@table_options
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="the page: .html or .md (default SOURCE/analysis/report.html)")
@clean_errors
def report(source: str, mlflow_uri, from_mlflow, metric, completed_only, top, at_epoch, out) -> None:
    """One page with a search's tables and plots: self-contained HTML (plots embedded), or Markdown
    linking the plot files with --out X.md."""
    from analysis.report import write_report

    search = load(source, mlflow_uri, from_mlflow)
    out = out or default_out(source, search.name, "analysis") / "report.html"
    if out.suffix not in (".html", ".md"):
        fail(f"--out {out}: allowed: a file name ending in .html or .md")
    summary, made, skipped = tables_and_plots(search, metric, completed_only, top, at_epoch, out.parent / "plots")
    click.echo(f"report: {write_report(summary, made, skipped, f'Search {search.name}', out)}")


@main.command()
@click.argument("sources", nargs=-1, required=True)
@source_options
@table_options
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="folder of the tables, plots and page (default: FIRST_SOURCE/comparison when the first "
                   "source is a results folder; required otherwise)")
@clean_errors
def compare(sources: tuple[str, ...], mlflow_uri, from_mlflow, metric, completed_only, top, at_epoch, out) -> None:
    """Compare several searches (results folders or mlflow:EXPERIMENT): the summary tables side by side
    (one group per search) and the top trials of each search (CSV + summary.md), plots of the best
    metric so far against the trial number and the cumulative training time and of the metric per
    search at the compared epoch (plots/*.png), and a self-contained report.html, all in --out."""
    from analysis.load import combine
    from analysis.report import write_comparison
    from analysis.tables import summarize as make

    if out is None:
        if not Path(sources[0]).is_dir():
            fail(f"{sources[0]}: not a results folder, so there is no default output folder; allowed: "
                 "--out DIR, or a results folder as the first source (default FIRST_SOURCE/comparison)")
        out = Path(sources[0]) / "comparison"
    searches = [load(s, mlflow_uri, from_mlflow) for s in sources]
    trials, curves = combine(searches)
    searched = sorted({c for s in searches for c in s.searched()})
    summary = make(trials, curves, metric or searches[0].metric, searches[0].mode, searched=searched,
                   extra=["search"], completed_only=completed_only, top=top, epoch=at_epoch)
    for label, s in zip(trials.drop_duplicates("search")["search"], searches):
        click.echo(f"{label}: {s.source}")
    paths, skipped = write_comparison(summary, trials, searches[0].mode, searched, top, completed_only,
                                      "Comparison of " + ", ".join(s.name for s in searches), out)
    show(summary, f"{len(searches)} searches")
    for name, why in skipped.items():
        click.echo(f"plot {name} skipped: {why}")
    click.echo(f"wrote {len(paths)} files in {out}: " + ", ".join(str(p.relative_to(out)) for p in paths))


@main.command()
@click.argument("source")
@source_options
@click.option("--top", type=int, default=1, show_default=True, help="number of best trials to export")
@click.option("--metric", default=None, help="rank by this metric (default: the search's)")
@click.option("--full-epochs", is_flag=True, help="keep the search's train.epochs (default: the epochs the trial ran)")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="folder (default SOURCE/export)")
@clean_errors
def export(source: str, mlflow_uri, from_mlflow, top, metric, full_epochs, out) -> None:
    """Write the best trials' run configs and the `eqsearch train --config` commands that rerun them."""
    from analysis.export import export_top

    search = load(source, mlflow_uri, from_mlflow)
    for e in export_top(search, out or default_out(source, search.name, "export"), top, metric, full_epochs):
        click.echo(f"#{e.rank} {e.trial_name} ({metric or search.metric} {e.value:.4f}): {e.command}")
