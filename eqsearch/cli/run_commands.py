"""Run commands: ``train``, ``evaluate``, ``gducheck`` and ``demo``.

torch and the engine are imported inside the commands, so that ``eqsearch --help`` starts at once.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

import click

from eqsearch.cli import main
from eqsearch.cli.run_flags import build_parser, config_from_args, fail, parse
from eqsearch.config import RunConfig
from eqsearch.errors import ConfigError, DataError, DivergedError
from eqsearch.run_folder import BEST, LATEST, load_run_config

PASSTHROUGH = {"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []}


def default_run_dir(cfg: RunConfig, what: str | None = None) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{stamp}-{what or cfg.model.kind}-{cfg.data.dataset}"


def describe(cfg: RunConfig) -> str:
    r = cfg.rule
    rule = "BPTT" if r.alg == "bptt" else f"{r.alg.upper()} {r.estimator} beta={r.beta}"
    return (f"{cfg.model.summary()} | {rule} T1={r.T1} T2={r.T2} | "
            f"{cfg.optim.name} lrs={cfg.optim.lrs} | {cfg.data.dataset} mbs={cfg.data.batch_size} "
            f"epochs={cfg.train.epochs} seed={cfg.train.seed}")


def run_training(cfg: RunConfig, out: Path, resume: bool = False, quiet: bool = False) -> list[dict]:
    """Train with progress output; returns the metrics of the epochs run now."""
    from eqsearch.progress import RunProgress
    from eqsearch.training import fit, prepare_run

    try:
        trainer = prepare_run(cfg, out, resume=resume)
    except (ConfigError, DataError) as exc:
        fail(str(exc))
    click.echo(describe(cfg), err=True)
    click.echo(f"run folder: {out}  (device {trainer.device}, {trainer.batches_per_epoch} batches/epoch)", err=True)
    history = []
    with RunProgress(cfg.train.epochs, trainer.batches_per_epoch, trainer.epoch, enabled=not quiet) as prog:
        try:
            for m in fit(cfg, out, trainer=trainer, on_batch=prog.on_batch):
                prog.epoch_done(m)
                history.append(m)
        except DivergedError as exc:
            fail(f"training diverged: {exc.reason}; metrics of the finished epochs are in {out}")
    if history:
        last = history[-1]
        click.echo(f"final test accuracy {last['test_acc']:.4f} (best {last['best_test_acc']:.4f}) after "
                   f"{last['epoch']} epochs; run folder {out}")
    else:
        click.echo(f"nothing to do: {out} already has {trainer.epoch} of {cfg.train.epochs} epochs")
    return history


TRAIN_HELP = """Train one network.

Flags: eqsearch's own, or one code base's as it spells them (A / D, B or C; see the sections
below), then --set for any run config field.

\b
  eqsearch train                                   # digits MLP on the embedded defaults
  eqsearch train --config run.yaml --set rule.beta=0.2
  eqsearch train --model MLP --task MNIST --archi 784 512 10 --act mysig --todo train \\
      --betas 0.0 0.1 --T1 30 --T2 10 --mbs 50 --lrs 0.08 0.04 --optim sgd --data-root DIR
  eqsearch train --resume runs/RUN --epochs 10    # continue a run
"""


@main.command(help=TRAIN_HELP, context_settings=PASSTHROUGH, add_help_option=False)
@click.argument("argv", nargs=-1, type=click.UNPROCESSED)
def train(argv: tuple[str, ...]) -> None:
    ns = parse(build_parser("eqsearch train", TRAIN_HELP), list(argv))
    if ns.todo == "gducheck" or ns.action == "plotcurves":
        return _gducheck(ns)
    if ns.todo == "evaluate":
        return _evaluate(Path(ns.load_path), "best", "both", ns.device, ns.data_root)
    resume_dir = ns.resume or ns.load_path
    try:
        if resume_dir:
            if not (Path(resume_dir) / LATEST).exists():
                fail(f"--resume: {resume_dir!r} has no {LATEST}; allowed: a run folder written by eqsearch train")
            cfg = config_from_args(ns, base=load_run_config(resume_dir))
        else:
            cfg = config_from_args(ns)
    except ConfigError as exc:
        fail(str(exc))
    out = Path(resume_dir or ns.out or (Path("runs") / ns.log_dir if ns.log_dir else default_run_dir(cfg)))
    run_training(cfg, out, resume=bool(resume_dir), quiet=ns.quiet)


def _evaluate(run_dir: Path, which: str, split: str, device: str | None, data_root: str | None) -> None:
    ckpt = run_dir / (BEST if which == "best" else LATEST)
    if not ckpt.exists():
        fail(f"{run_dir}: no {ckpt.name}; allowed: a run folder written by eqsearch train")
    from eqsearch.training import restored_trainer

    overrides = {k: v for k, v in (("train.device", device), ("data.root", data_root)) if v is not None}
    try:
        cfg = load_run_config(run_dir, overrides)
        trainer = restored_trainer(cfg, ckpt)
    except (ConfigError, DataError) as exc:
        fail(str(exc))
    splits = ["train", "test"] if split == "both" else [split]
    for s in splits:
        m = trainer.evaluate(s)
        click.echo(f"{s} accuracy {m[f'{s}_acc']:.4f}  loss {m[f'{s}_loss']:.4f}  "
                   f"({ckpt.name}, epoch {trainer.epoch})")


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--checkpoint", type=click.Choice(["best", "latest"]), default="best", show_default=True)
@click.option("--split", type=click.Choice(["test", "train", "both"]), default="test", show_default=True)
@click.option("--device", default=None, help="cpu, cuda, cuda:k or a GPU index")
@click.option("--data-root", default=None, help="data root (if it moved since training)")
def evaluate(run_dir: Path, checkpoint: str, split: str, device: str | None, data_root: str | None) -> None:
    """Score a saved run (T1 free steps, argmax of the output)."""
    _evaluate(run_dir, checkpoint, split, device, data_root)


GDU_HELP = """Check EP's per-step updates against truncated-BPTT gradients (GDU theorem), per layer.

Writes into --out: gdu.csv (relative error, sign error and angle per layer), gdu_curves.csv
(the per-step curves of 5 elements per layer: t, EP, BPTT) and gdu.png (those curves, neurons
and synapses). --thirdphase adds the symmetric estimator; a continual rule (--cep, --alg CEP)
applies each step's update with the run's learning rates (code base B's --cep --lr_tab).
The batch: the first --mbs / --batch-size training samples (at most 20). Flags of training
only (the training loop, optimizer, estimator draws) are not taken.

\b
  eqsearch gducheck --model MLP --task MNIST --archi 784 512 10 --act tanh \\
      --betas 0.0 0.01 --T1 30 --T2 10 --mbs 50 --data-root DIR
  eqsearch train --action plotcurves --batch-size 1 --size_tab 10 512 784 \\
      --activation-function tanh --discrete --beta 0.01 --T 150 --Kmax 10   # code base B
"""
# flags that set what only training reads (its loop, optimizer, estimator draws, outputs): refused by gducheck
TRAIN_ONLY = frozenset({
    "--resume", "--epochs", "--max-batches", "--quiet",
    "--todo", "--save", "--check-thm", "--lr-decay", "--data-aug", "--random-sign", "--optim", "--mmt", "--wds",
    "--cep-debug",
    "--action", "--randbeta", "--angle-grad", "--debug-cep", "--test-batch-size",
    "--optimizer", "--log_dir",
    "--lca_eta",
})


@main.command(help=GDU_HELP, context_settings=PASSTHROUGH, add_help_option=False)
@click.argument("argv", nargs=-1, type=click.UNPROCESSED)
def gducheck(argv: tuple[str, ...]) -> None:
    _gducheck(parse(build_parser("eqsearch gducheck", GDU_HELP, refuse=TRAIN_ONLY), list(argv)))


def _write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _gducheck(ns) -> None:
    import torch

    from eqsearch.gdu import curve_rows, gdu_check, plot_gdu
    from eqsearch.training import Trainer, restored_trainer

    try:
        base = load_run_config(ns.load_path) if ns.load_path else None
        cfg = config_from_args(ns, base=base)
        if ns.load_path:
            trainer = restored_trainer(cfg, Path(ns.load_path) / BEST, dtype=torch.float64)
        else:
            trainer = Trainer(cfg, dtype=torch.float64)
    except (ConfigError, DataError) as exc:
        fail(str(exc))
    out = Path(ns.out or default_run_dir(cfg, "gducheck"))
    out.mkdir(parents=True, exist_ok=True)
    samples = min(20, cfg.data.batch_size)
    x = trainer.data.x_train[:samples].double()
    y = trainer.data.y_train[:samples]
    r = cfg.rule
    lrs = None
    if r.alg == "cep":
        lr_of = {id(p): g["lr"] for g in trainer.optimizer.param_groups for p in g["params"]}
        lrs = {n: lr_of[id(p)] for n, p in trainer.model.named_parameters()}
    rows, series = gdu_check(trainer.model, x, y, r.T1, r.T2, r.beta, symmetric=r.symmetric, continual_lrs=lrs,
                             order=r.order)
    _write_csv(out / "gdu.csv", rows)
    _write_csv(out / "gdu_curves.csv", curve_rows(series))
    plot_gdu(series, rows, out / "gdu.png")
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"GDU check: {samples} samples, T1={r.T1}, T2={r.T2}, beta={r.beta}")
    for col in ("estimator", "key", "rel error", "sign error", "angle (deg)"):
        table.add_column(col)
    for row in rows:
        table.add_row(row["estimator"], row["key"], f"{row['rel_error']:.3g}", f"{row['sign_error']:.3g}",
                      f"{row['angle']:.2f}")
    Console().print(table)
    click.echo(f"wrote {out / 'gdu.csv'}, {out / 'gdu_curves.csv'} and {out / 'gdu.png'}")


@main.command()
@click.option("--results", type=click.Path(path_type=Path), default=None,
              help="results folder (default results/quickstart-<time>)")
@click.option("--no-dashboard", is_flag=True, help="do not start the Ray dashboard")
def demo(results: Path | None, no_dashboard: bool) -> None:
    """Run the quickstart search (digits MLP, about a minute on 2 cores) and print the best config."""
    import search_spaces
    from eqsearch.cli.search_commands import default_results, launch
    from eqsearch.search.space import load_spec

    spec = load_spec(search_spaces.shipped()["quickstart"])
    outcome = launch(spec, results or default_results(spec), None, not no_dashboard, quiet=False)
    best_yaml = outcome.results / "best.yaml"
    if best_yaml.exists():
        click.echo(f"\nbest run config ({best_yaml}):\n{best_yaml.read_text()}")
