"""Two searches writing to one store at once, and a search that writes only where it should."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from hpsearch.cli.main import main
from tests.conftest import REPO, write_space

pytestmark = pytest.mark.e2e


def test_two_searches_at_once_into_the_default_store_both_finish_with_all_their_runs(workdir: Path):
    body = "search = Search(data='sklearn:wine', params={{'lr': loguniform(1e-3, 1e-1)}}, num_samples=4, " \
           "max_epochs=2, experiment='{name}')"
    spaces = [write_space(workdir, body.format(name=name), name=f"{name}.py") for name in ("first", "second")]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    processes = [subprocess.Popen([sys.executable, "-m", "hpsearch", "run", str(space)], cwd=workdir, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for space in spaces]
    results = [(p, *p.communicate(timeout=400)) for p in processes]
    for process, _, err in results:
        assert process.returncode == 0, err[-2000:]
        assert "database is locked" not in err
    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    for name in ("first", "second"):
        runs = client.search_runs([client.get_experiment_by_name(name).experiment_id])
        assert len(runs) == 5 and all(r.info.status == "FINISHED" for r in runs)


def test_a_search_writes_only_mlruns_and_ray_results_even_for_a_hostile_experiment_name(ray_session, workdir):
    space = write_space(workdir, "search = Search(data='sklearn:iris', num_samples=1, max_epochs=1)")
    assert main(["run", str(space), "--experiment", "../../escaped"]) == 0
    assert sorted(p.name for p in workdir.iterdir()) == ["mlruns", "ray_results", "space.py"]
    assert [p.name for p in (workdir / "ray_results").iterdir()][0].startswith("escaped-")
    assert not any(p.name.startswith("escaped") for p in workdir.parent.iterdir())
    assert not any(p.name.startswith("escaped") for p in workdir.parent.parent.iterdir())
    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("../../escaped")
    assert experiment.artifact_location == (workdir / "mlruns" / "artifacts").as_uri()


def test_stores_in_wal_mode_commit_without_fsync_and_other_sqlite_stores_keep_their_setting(tmp_path: Path):
    import sqlite3

    import sqlalchemy

    from hpsearch.tracking.connection import connect

    connect(f"sqlite:///{tmp_path / 'other.db'}")  # installs the setting for the process
    wal = tmp_path / "wal.db"
    with sqlite3.connect(wal) as connection:
        connection.execute("PRAGMA journal_mode=WAL")
    synchronous = {}
    for name in ("wal.db", "rollback.db"):
        with sqlalchemy.create_engine(f"sqlite:///{tmp_path / name}").connect() as connection:
            synchronous[name] = connection.exec_driver_sql("PRAGMA synchronous").scalar()
    assert synchronous == {"wal.db": 1, "rollback.db": 2}  # NORMAL in WAL mode, SQLite's default FULL otherwise
