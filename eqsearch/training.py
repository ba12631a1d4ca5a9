"""The one training loop: :func:`fit`, used by the CLI and by every Ray Tune trainable.

``fit(cfg, run_dir)`` yields one metrics dict per epoch. Metric names (one name everywhere:
console, Tune, MLflow, analysis): ``epoch``, ``train_acc``, ``train_loss``, ``test_acc``,
``test_loss``, ``best_test_acc``, ``epoch_seconds``, ``residual_free``, ``residual_nudged`` (rules
with a nudged phase), ``train_steps`` (relaxation steps run per training batch: fewer than
``rule.steps_per_batch()`` when ``rule.tol`` ends phases early), ``lr``, plus the model's own metrics (``EnergyModel.metrics``: ``angle_B<k>``
for vector-field models, ...) and ``gdu_rel_error``, ``gdu_sign_error``, ``gdu_angle`` with
``train.check_thm``. Accuracies are fractions in [0, 1].

A run folder holds ``config.yaml``, ``metrics.csv``, ``checkpoint_latest.pt`` and
``checkpoint_best.pt``. Resuming restores model, optimizer, scheduler and epoch; every random
draw of epoch e comes from a generator seeded by (seed, e), so a resumed run continues
bit-identically on the CPU.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import torch

from eqsearch.config import RunConfig, TrainConfig
from eqsearch.data import Dataset, augment, batches, load_dataset, num_batches
from eqsearch.errors import DivergedError
from eqsearch.families import family_of
from eqsearch.losses import loss_per_sample
from eqsearch.models import build_model
from eqsearch.models.base import restoring
from eqsearch.optim import build_optimizer, step_scheduler
from eqsearch.rules import build_rule, compile_phases, free_phase
from eqsearch.run_folder import (BEST, CONFIG_FILE, LATEST, METRICS_FILE, append_metrics, load_run_config,
                                 read_metrics, write_metrics)

__all__ = ["Trainer", "fit", "prepare_run", "restored_trainer", "resolve_device", "epoch_generator", "BEST", "CONFIG_FILE", "LATEST",
           "METRICS_FILE", "append_metrics", "load_run_config", "read_metrics"]

GDU_SAMPLES = 5  # samples used by the per-epoch GDU check (code base A's --check-thm)
ANGLE_GRAD_SAMPLES = 20  # samples of the per-epoch angle Ψ (train.angle_grad)


def resolve_device(spec: str, notify: Callable[[str], None] | None = None) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:k`` or a bare index ``k``; the CPU (with a notice) without a GPU."""
    spec = spec.strip()
    if spec == "cpu":
        return torch.device("cpu")
    name = f"cuda:{spec}" if spec.isdigit() else spec
    if not torch.cuda.is_available():
        (notify or (lambda m: print(m, file=sys.stderr)))(
            f"notice: train.device={spec!r} asked for a GPU but none is available; using the CPU")
        return torch.device("cpu")
    return torch.device(name)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator of every random draw of one epoch (data order, β signs)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def evaluation_generator(seed: int) -> torch.Generator:
    """The generator of an evaluation's random draws (random initial states): the same at
    every evaluation of a run, so that scores differ only through the parameters."""
    return torch.Generator().manual_seed(seed * 1_000_003 - 1)


def apply_speed_options(train: TrainConfig, model: torch.nn.Module) -> None:
    """``train.tf32`` (CUDA matmuls / convolutions), ``train.channels_last`` (4-D weights,
    hence CNN inputs and states), ``train.compile`` (``step``: the step function; ``phase``: each
    phase in compiled chunks of steps, :func:`~eqsearch.rules.relax.compile_phases`)."""
    if train.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if train.channels_last:
        model.to(memory_format=torch.channels_last)
    if train.compile == "step":
        model.fused_steps = False
        model.step = torch.compile(model.step)
    elif train.compile == "phase":
        compile_phases(model)


class Trainer:
    """Data, model, rule, optimizer and scheduler of one run, and its epoch counter."""

    def __init__(self, cfg: RunConfig, data: Dataset | None = None, dtype: torch.dtype = torch.float32,
                 notify: Callable[[str], None] | None = None):
        self.cfg = cfg
        threads = cfg.train.threads or family_of(cfg.model.kind).cpu_threads
        if threads:
            torch.set_num_threads(threads)
        self.device = resolve_device(cfg.train.device, notify)
        self.data = (data or load_dataset(cfg.data)).to(self.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.train.seed)
            model = build_model(cfg.model, self.data.input_shape, self.data.num_classes)
        self.model = model.to(device=self.device, dtype=dtype)
        apply_speed_options(cfg.train, self.model)
        self.dtype = dtype
        self.rule = build_rule(cfg.rule)
        self.optimizer, self.scheduler = build_optimizer(cfg.optim, self.model)
        self.epoch = 0
        self.best_test_acc = -1.0
        self.history: list[dict] = []  # every finished epoch's metrics (saved in checkpoints)

    @property
    def batches_per_epoch(self) -> int:
        d = self.cfg.data
        return num_batches(self.data.x_train.shape[0], d.batch_size, d.max_batches)

    # ------------------------------------------------------------------ one epoch
    def train_epoch(self, on_batch: Callable[[int, int, float | None], None] | None = None) -> dict:
        """One pass over the training set. ``on_batch(done, total, running_acc)`` is called after
        every batch; ``running_acc`` is filled (with one host sync) ~10 times per epoch.

        Accuracy and loss are computed per chunk of ~total/10 batches from the chunk's logits
        (copied at each batch: a rule may reuse its buffers), not per batch: two kernels per batch
        instead of a dozen."""
        cfg = self.cfg
        gen = epoch_generator(cfg.train.seed, self.epoch)
        self.model.train()
        total = self.batches_per_epoch
        sync_every = max(1, total // 10)
        correct = torch.zeros((), device=self.device)
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        res_free = torch.zeros((), device=self.device)
        res_nudged = torch.zeros((), device=self.device)
        has_nudged = False
        steps = 0
        seen = 0
        chunk: list[tuple[torch.Tensor, torch.Tensor]] = []  # (logits (B, C), labels (B,)) since the last sync
        for k, (x, y) in enumerate(batches(self.data.x_train, self.data.y_train, cfg.data.batch_size,
                                           gen, cfg.data.max_batches), start=1):
            x = x.to(self.dtype)
            if cfg.data.augment:
                x = augment(x, gen)
            result = self.rule.train_batch(self.model, x, y, self.optimizer, gen)
            self.model.on_batch_end()
            chunk.append((result.logits.detach().clone(), y))
            res_free += result.residual_free
            steps += cfg.rule.steps_per_batch() if result.steps is None else result.steps
            if result.residual_nudged is not None:
                res_nudged += result.residual_nudged
                has_nudged = True
            seen += y.shape[0]
            running = None
            if k % sync_every == 0 or k == total:
                logits, labels = (torch.cat(t) for t in zip(*chunk))
                chunk.clear()
                correct += (logits.argmax(1) == labels).sum()
                loss_sum += loss_per_sample(self.model.loss, logits, labels).double().sum()
                loss_now = float(loss_sum)
                if not math.isfinite(loss_now):
                    raise DivergedError(f"non-finite training loss at epoch {self.epoch + 1}, batch {k}")
                running = float(correct) / seen
            if on_batch:
                on_batch(k, total, running)
        self.model.on_epoch_end()
        self.epoch += 1
        step_scheduler(self.scheduler, self.epoch)
        out = {"train_acc": float(correct) / seen, "train_loss": float(loss_sum) / seen,
               "residual_free": float(res_free) / total, "train_steps": steps / total}
        if has_nudged:
            out["residual_nudged"] = float(res_nudged) / total
        return out

    @torch.no_grad()
    def evaluate(self, split: str = "test") -> dict:
        """Accuracy and loss after T1 free steps on ``split`` (train or test)."""
        x_all = self.data.x_test if split == "test" else self.data.x_train
        y_all = self.data.y_test if split == "test" else self.data.y_train
        self.model.eval()
        gen = evaluation_generator(self.cfg.train.seed)
        correct = torch.zeros((), device=self.device)
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        extra: dict[str, torch.Tensor] = {}
        rule = self.cfg.rule
        for x, y in batches(x_all, y_all, self.cfg.data.test_batch_size):
            x = x.to(self.dtype)
            drive, state, _, _ = free_phase(self.model, x, rule.T1, gen, rule.tol, rule.tol_every, rule.order)
            logits = self.model.logits(state)
            correct += (logits.argmax(1) == y).sum()
            loss_sum += loss_per_sample(self.model.loss, logits, y).sum().double()
            for name, v in self.model.state_metrics(x, state, drive).items():
                extra[name] = extra.get(name, 0.0) + v.sum().double()
        n = y_all.shape[0]
        out = {f"{split}_acc": float(correct) / n, f"{split}_loss": float(loss_sum) / n}
        out.update({f"{split}_{name}": float(v) / n for name, v in extra.items()})
        return out

    def gdu_metrics(self) -> dict:
        from eqsearch.gdu import gdu_check, summarize

        x = self.data.x_train[:GDU_SAMPLES].to(self.dtype)
        y = self.data.y_train[:GDU_SAMPLES]
        r = self.cfg.rule
        rows, _ = gdu_check(self.model, x, y, r.T1, r.T2, r.beta, symmetric=r.symmetric, order=r.order)
        return summarize(rows, "symmetric" if r.symmetric else "one_sided")

    def angle_grad(self) -> float:
        """Ψ on the first ``ANGLE_GRAD_SAMPLES`` training samples (see :func:`eqsearch.gdu.update_angle`)."""
        from eqsearch.gdu import update_angle

        r = self.cfg.rule
        x = self.data.x_train[:ANGLE_GRAD_SAMPLES].to(self.dtype)
        return update_angle(self.model, x, self.data.y_train[:ANGLE_GRAD_SAMPLES], r.T1, r.T2, r.beta, r.order)

    def run_epoch(self, on_batch=None) -> dict:
        """Train one epoch, evaluate, and return the epoch's full metrics dict."""
        t0 = time.perf_counter()
        metrics = {"epoch": self.epoch + 1}
        if self.cfg.train.angle_grad and self.epoch == 0:
            metrics["angle_grad_initial"] = self.angle_grad()
        metrics.update(self.train_epoch(on_batch))
        metrics.update(self.evaluate("test"))
        if not math.isfinite(metrics["test_loss"]):
            raise DivergedError(f"non-finite test loss after epoch {metrics['epoch']}")
        self.best_test_acc = max(self.best_test_acc, metrics["test_acc"])
        metrics["best_test_acc"] = self.best_test_acc
        metrics["lr"] = self.optimizer.param_groups[0]["lr"]
        metrics.update(self.model.metrics())
        if self.cfg.train.angle_grad:
            metrics["angle_grad"] = self.angle_grad()
        if self.cfg.train.check_thm and self.cfg.rule.alg == "ep":
            metrics.update(self.gdu_metrics())
        metrics["epoch_seconds"] = time.perf_counter() - t0
        return metrics

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "best_test_acc": self.best_test_acc, "history": self.history,
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler else None,
                "config": self.cfg.to_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler and state.get("scheduler"):
            self.scheduler.load_state_dict(state["scheduler"])
        self.epoch = state["epoch"]
        self.best_test_acc = state["best_test_acc"]
        self.history = list(state.get("history", []))

    def save(self, path: str | Path) -> None:
        tmp = Path(str(path) + ".tmp")
        torch.save(self.state_dict(), tmp)
        tmp.replace(path)

    def load(self, path: str | Path) -> None:
        self.load_state_dict(torch.load(path, map_location=self.device, weights_only=False))


def restored_trainer(cfg: RunConfig, checkpoint: str | Path, *, data: Dataset | None = None,
                     dtype: torch.dtype = torch.float32, notify: Callable[[str], None] | None = None) -> Trainer:
    """A :class:`Trainer` loaded from ``checkpoint``, its model built as one about to be restored
    (:func:`~eqsearch.models.base.restoring`: files the checkpoint replaces, such as an LCA-CNN's
    dictionary, are not read and may have moved)."""
    with restoring():
        trainer = Trainer(cfg, data=data, dtype=dtype, notify=notify)
    trainer.load(checkpoint)
    return trainer


def prepare_run(cfg: RunConfig, run_dir: str | Path | None = None, *, resume: bool = False,
                restore_from: str | Path | None = None, data: Dataset | None = None,
                notify: Callable[[str], None] | None = None) -> Trainer:
    """A :class:`Trainer` ready to continue: run folder written, checkpoint loaded.

    ``resume``: continue from ``run_dir/checkpoint_latest.pt`` (keeping ``metrics.csv``);
    ``restore_from``: continue from that checkpoint file (Tune's). Otherwise a fresh run
    (an old ``metrics.csv`` in ``run_dir`` is replaced).
    """
    run = Path(run_dir) if run_dir is not None else None
    if resume and run is not None and (run / LATEST).exists():
        restore_from = run / LATEST
    if restore_from is None:
        trainer = Trainer(cfg, data=data, notify=notify)
    else:
        trainer = restored_trainer(cfg, restore_from, data=data, notify=notify)
    if run is not None:
        run.mkdir(parents=True, exist_ok=True)
        cfg.to_yaml(run / CONFIG_FILE)
        if not resume and restore_from is None and (run / METRICS_FILE).exists():
            (run / METRICS_FILE).unlink()
        if restore_from is not None and trainer.history:
            # the checkpoint's epochs, however much of metrics.csv the folder kept (a Tune trial
            # restored into a fresh folder; a kill between the metrics row and the checkpoint)
            write_metrics(run / METRICS_FILE, trainer.history)
    return trainer


def fit(cfg: RunConfig, run_dir: str | Path | None = None, *, resume: bool = False,
        restore_from: str | Path | None = None, data: Dataset | None = None,
        on_batch: Callable[[int, int, float | None], None] | None = None,
        notify: Callable[[str], None] | None = None,
        trainer: Trainer | None = None) -> Iterator[dict]:
    """Train until ``cfg.train.epochs`` epochs are done, yielding each epoch's metrics.

    ``run_dir``: write config, metrics and checkpoints there (the latest before each yield).
    ``resume`` / ``restore_from``: see :func:`prepare_run`; ``trainer``: one already prepared
    by it. Raises :class:`DivergedError` on a non-finite loss, after the metrics of every
    completed epoch were written.
    """
    if trainer is None:
        trainer = prepare_run(cfg, run_dir, resume=resume, restore_from=restore_from, data=data, notify=notify)
    run = Path(run_dir) if run_dir is not None else None
    while trainer.epoch < cfg.train.epochs:
        metrics = trainer.run_epoch(on_batch)
        trainer.history.append(metrics)
        if run is not None:
            append_metrics(run / METRICS_FILE, metrics)
            trainer.save(run / LATEST)
            if metrics["test_acc"] >= metrics["best_test_acc"]:
                trainer.save(run / BEST)
        yield metrics
