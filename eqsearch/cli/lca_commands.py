"""``eqsearch lca-pretrain``: learn an LCA dictionary on the held-out part of an image data set
(code base D's ``cifar_dictlearning.py``, reference §5.3, on the split it meant).

torch and the engine are imported inside the command, so that ``eqsearch --help`` starts at once.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import click

from eqsearch.cli import main
from eqsearch.cli.run_flags import fail
from eqsearch.config import DATASETS, DataConfig
from eqsearch.errors import ConfigError, DataError
from eqsearch.families.lca import LCAConfig
from eqsearch.fields import build_section

SETTINGS_FILE = "settings.yaml"
ATOMS_FILE = "atoms.png"


def lam_at(lam: float, step: float, every: int, epoch: int) -> float:
    """λ of epoch ``epoch`` (0-based): lam + step·⌊(epoch + 1)/every⌋, code base D's schedule
    (0.2, +0.1 at the start of epochs 4, 9, ..., 34 for step 0.1, every 5); step 0: fixed."""
    return lam + step * ((epoch + 1) // every)


def save_atoms_png(dictionary, path: Path) -> None:
    """The atoms as a grid of images (each scaled to [0, 1] on its own; 1 or 3 channels)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    d = dictionary.detach().float().cpu()
    f, c, k, _ = d.shape
    low = d.flatten(1).min(1).values.view(f, 1, 1, 1)
    high = d.flatten(1).max(1).values.view(f, 1, 1, 1)
    d = (d - low) / (high - low).clamp_min(1e-12)
    cols = int(f ** 0.5 + 0.999)
    rows = -(-f // cols)
    grid = torch.ones(c, rows * (k + 1) + 1, cols * (k + 1) + 1)
    for i in range(f):
        r, q = divmod(i, cols)
        grid[:, 1 + r * (k + 1):1 + r * (k + 1) + k, 1 + q * (k + 1):1 + q * (k + 1) + k] = d[i]
    image = grid.permute(1, 2, 0).numpy() if c == 3 else grid.mean(0).numpy()  # RGB, else grey
    fig, ax = plt.subplots(figsize=(max(3.0, cols * 0.6), max(3.0, rows * 0.6)))
    ax.imshow(image, cmap=None if c == 3 else "gray", interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(f"{f} LCA atoms {c}×{k}×{k}")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


HELP = """Learn an LCA dictionary (reference §5.3) on the held-out part of a data set.

The images are the fraction --holdout of the training set drawn with --holdout-seed, the part
that an LCA-CNN run with the same data.holdout / data.holdout_seed leaves out of EP training
(--holdout 0: the whole training set). Every batch: code it (LCA), one dictionary step. λ
follows code base D's schedule lam + lam-step·⌊(epoch + 1)/lam-every⌋ (--lam-step 0: fixed).
Writes into --out: dictionary.pt (what model.dictionary loads, with its settings),
settings.yaml, metrics.csv (per epoch) and atoms.png; all rewritten after every epoch.

\b
  eqsearch lca-pretrain --dataset fashion_mnist --data-root DIR --features 32 --ksize 7 --stride 2 \\
      --epochs 5 --out runs/dict-fashion
  eqsearch lca-pretrain --dataset cifar10 --data-root DIR --augment    # code base D's settings
"""


@main.command("lca-pretrain", help=HELP)
@click.option("--dataset", type=click.Choice(DATASETS), default="cifar10", show_default=True)
@click.option("--data-root", default=None, help="data root in torchvision's layout (env EQSEARCH_DATA)")
@click.option("--holdout", type=float, default=0.5, show_default=True,
              help="fraction of the training set to learn on (data.holdout of the LCA-CNN runs); 0: all of it")
@click.option("--holdout-seed", type=int, default=0, show_default=True, help="seed of that draw (data.holdout_seed)")
@click.option("--augment", is_flag=True, help="CIFAR-10 flip + crop augmentation (as code base D)")
@click.option("--features", type=int, default=64, show_default=True, help="dictionary atoms F")
@click.option("--ksize", type=int, default=9, show_default=True, help="atom size k")
@click.option("--stride", type=int, default=2, show_default=True, help="code stride S")
@click.option("--lam", type=float, default=0.2, show_default=True, help="threshold λ of the first epoch")
@click.option("--lam-step", type=float, default=0.1, show_default=True, help="λ increment (0: fixed λ)")
@click.option("--lam-every", type=int, default=5, show_default=True, help="epochs per λ increment")
@click.option("--tau", type=float, default=100.0, show_default=True, help="time constant τ")
@click.option("--iters", type=int, default=600, show_default=True, help="LCA iterations per batch")
@click.option("--eta", type=float, default=0.01, show_default=True, help="dictionary learning rate η")
@click.option("--threshold", type=click.Choice(["soft", "hard"]), default="soft", show_default=True)
@click.option("--signed", is_flag=True, help="signed code (two-sided threshold)")
@click.option("--clip", type=float, default=None, help="clip each dictionary step to ±clip")
@click.option("--epochs", type=int, default=35, show_default=True)
@click.option("--batch-size", type=int, default=200, show_default=True)
@click.option("--max-batches", type=int, default=None, help="cap on batches per epoch (smoke runs)")
@click.option("--seed", type=int, default=0, show_default=True, help="seed of the initial dictionary and data order")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:k or a GPU index")
@click.option("--threads", type=int, default=None, help="torch CPU threads")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="output folder (default runs/<time>-lca-pretrain-<dataset>)")
@click.option("--quiet", is_flag=True, help="no progress output")
def lca_pretrain(dataset, data_root, holdout, holdout_seed, augment, features, ksize, stride, lam, lam_step,
                 lam_every, tau, iters, eta, threshold, signed, clip, epochs, batch_size, max_batches, seed, device,
                 threads, out, quiet) -> None:
    try:
        lca_cfg = build_section(LCAConfig, {
            "features": features, "ksize": ksize, "stride": stride, "lam": lam, "tau": tau, "iters": iters,
            "eta": eta, "threshold": threshold, "nonneg": not signed, "standardize": True, "clip": clip}, "lca")
        data_cfg = build_section(DataConfig, {"dataset": dataset, "root": data_root, "holdout": holdout,
                                              "holdout_seed": holdout_seed, "batch_size": batch_size,
                                              "max_batches": max_batches, "augment": augment}, "data")
        for name, value, low in (("--lam-step", lam_step, 0.0), ("--lam-every", lam_every, 1),
                                 ("--epochs", epochs, 1)):
            if value < low:
                raise ConfigError(f"{name}: got {value}; allowed: >= {low}")
    except ConfigError as exc:
        fail(str(exc))
    out = out or Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-lca-pretrain-{dataset}"
    schedule = {"lam": lam, "lam_step": lam_step, "lam_every": lam_every}
    pretrain(lca_cfg, data_cfg, schedule, epochs, seed, device, threads, out, quiet)


def pretrain(lca_cfg: LCAConfig, data_cfg: DataConfig, schedule: dict, epochs: int, seed: int, device: str,
             threads: int | None, out: Path, quiet: bool) -> None:
    """Learn the dictionary and write the files of ``out`` after every epoch."""
    import torch
    import yaml

    from eqsearch.data import augment, batches, load_holdout, num_batches
    from eqsearch.models.lca import DICTIONARY_FILE, build_lca, save_dictionary
    from eqsearch.progress import RunProgress
    from eqsearch.run_folder import METRICS_FILE, append_metrics
    from eqsearch.training import epoch_generator, resolve_device

    if threads:
        torch.set_num_threads(threads)
    dev = resolve_device(device, lambda m: click.echo(m, err=True))
    try:
        x, y = load_holdout(data_cfg)
    except (ConfigError, DataError) as exc:
        fail(str(exc))
    x, y = x.to(dev), y.to(dev)
    torch.manual_seed(seed)
    lca = build_lca(lca_cfg, tuple(x.shape[1:])).to(dev)
    out.mkdir(parents=True, exist_ok=True)
    (out / METRICS_FILE).unlink(missing_ok=True)
    per_epoch = num_batches(x.shape[0], data_cfg.batch_size, data_cfg.max_batches)
    settings = {"lca": dataclasses.asdict(lca_cfg), "schedule": schedule, "dataset": data_cfg.dataset,
                "input_shape": list(x.shape[1:]), "holdout": data_cfg.holdout, "holdout_seed": data_cfg.holdout_seed,
                "images": int(x.shape[0]), "augment": data_cfg.augment, "batch_size": data_cfg.batch_size,
                "seed": seed}
    click.echo(f"{lca_cfg.summary()} | {data_cfg.dataset}: {x.shape[0]} held-out images "
               f"(holdout {data_cfg.holdout}, seed {data_cfg.holdout_seed}), {per_epoch} batches/epoch | out {out}",
               err=True)
    history: list[dict] = []

    def line(m: dict) -> str:
        return (f"λ {m['lam']:.3g}  sparsity {m['lca_sparsity']:.4f}  recon error {m['lca_recon_error']:.4f}  "
                f"{m['epoch_seconds']:.1f}s")

    with RunProgress(epochs, per_epoch, enabled=not quiet, describe=line, task="lca") as prog:
        for epoch in range(epochs):
            t0 = time.perf_counter()
            lca.lam = lam_at(schedule["lam"], schedule["lam_step"], schedule["lam_every"], epoch)
            gen = epoch_generator(seed, epoch)
            sums = torch.zeros(3, dtype=torch.float64, device=dev)
            seen = 0
            for k, (xb, _) in enumerate(batches(x, y, data_cfg.batch_size, gen, data_cfg.max_batches), start=1):
                if data_cfg.augment:
                    xb = augment(xb, gen)
                with torch.no_grad():
                    s, a = lca(xb)
                    sums += torch.stack([lca.sparsity(a).sum(), lca.recon_error(s, a).sum(),
                                         lca.objective(s, a).sum()]).double()
                    lca.update_dictionary(s, a)
                seen += xb.shape[0]
                prog.on_batch(k, per_epoch, None)
            sparsity, recon, objective = (sums / seen).tolist()
            m = {"epoch": epoch + 1, "lam": lca.lam, "lca_sparsity": sparsity, "lca_recon_error": recon,
                 "lca_objective": objective, "epoch_seconds": time.perf_counter() - t0}
            history.append(m)
            save_dictionary(out / DICTIONARY_FILE, lca, {**settings, "epochs": epoch + 1, "history": history})
            (out / SETTINGS_FILE).write_text(yaml.safe_dump({**settings, "epochs": epoch + 1}, sort_keys=False))
            append_metrics(out / METRICS_FILE, m)
            save_atoms_png(lca.dictionary, out / ATOMS_FILE)
            prog.epoch_done(m)
    click.echo(f"wrote {out / DICTIONARY_FILE}, {out / ATOMS_FILE}, {out / METRICS_FILE}; train an LCA-CNN on the "
               f"rest of the training set with: --set model.dict_training=pretrained --set "
               f"model.dictionary={out / DICTIONARY_FILE} --set data.holdout={data_cfg.holdout} "
               f"--set data.holdout_seed={data_cfg.holdout_seed}")
