"""The MLflow side of a search without Ray: a new SQLite store comes from the cached empty one."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import mlflow

from eqsearch.search.tracking import Tracker, seed_sqlite_store


def rows(db: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(db) as con:
        found = con.execute(sql).fetchall()
    con.close()
    return found


def test_a_new_store_is_a_copy_of_the_cached_empty_store_with_its_own_default_experiment(tmp_path, monkeypatch):
    monkeypatch.setenv("EQSEARCH_CACHE", str(tmp_path / "cache"))
    template = tmp_path / "cache" / "mlflow" / f"store-{mlflow.__version__}.db"
    first = Tracker(f"sqlite:///{tmp_path / 'a' / 'mlflow.db'}", "exp", notify=lambda _: None,
                    artifacts=tmp_path / "a" / "mlartifacts")
    made = template.stat().st_mtime_ns
    assert rows(template, "SELECT * FROM experiments") == []  # MLflow's Default goes into each copy, not here
    second = Tracker(f"sqlite:///{tmp_path / 'b' / 'mlflow.db'}", "exp", notify=lambda _: None,
                     artifacts=tmp_path / "b" / "mlartifacts")
    assert template.stat().st_mtime_ns == made  # made once, then copied
    for tracker, folder in ((first, "a"), (second, "b")):
        db = tmp_path / folder / "mlflow.db"
        assert rows(db, "SELECT version_num FROM alembic_version") == rows(template, "SELECT version_num FROM alembic_version")
        assert tracker.client.get_experiment("0").name == "Default"
        exp = tracker.client.get_experiment_by_name("exp")
        assert exp.artifact_location == (tmp_path / folder / "mlartifacts").resolve().as_uri()
        run = tracker.client.create_run(exp.experiment_id)
        tracker.client.log_metric(run.info.run_id, "test_acc", 0.5, step=1)
        assert [m.value for m in tracker.client.get_metric_history(run.info.run_id, "test_acc")] == [0.5]


def test_an_existing_store_is_never_replaced(tmp_path, monkeypatch):
    monkeypatch.setenv("EQSEARCH_CACHE", str(tmp_path / "cache"))
    db = tmp_path / "mlflow.db"
    tracker = Tracker(f"sqlite:///{db}", "exp", notify=lambda _: None)
    run = tracker.client.create_run(tracker.experiment_id)
    seed_sqlite_store(f"sqlite:///{db}")
    assert Tracker(f"sqlite:///{db}", "exp", notify=lambda _: None).client.get_run(run.info.run_id)
    seed_sqlite_store(f"sqlite:///{tmp_path / 'opts.db'}?timeout=20")  # driver options: left to MLflow
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "mlflow.db"]


def test_a_cache_that_cannot_be_written_leaves_the_new_store_to_mlflow(tmp_path, monkeypatch):
    (tmp_path / "cache").write_text("")  # a file where the cache folder should be
    monkeypatch.setenv("EQSEARCH_CACHE", str(tmp_path / "cache"))
    (tmp_path / "r").mkdir()
    tracker = Tracker(f"sqlite:///{tmp_path / 'r' / 'mlflow.db'}", "exp", notify=lambda _: None)
    assert tracker.client.get_experiment("0").name == "Default"
    assert tracker.client.get_experiment_by_name("exp") is not None
