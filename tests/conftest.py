"""Shared fixtures: one local Ray for every test that runs a search, and a clean working directory.

Searches run in-process (``hpsearch.cli.main``) against the one Ray instance, so the suite pays Ray's start-up
(about 5 s) once; the runner reuses a Ray that the process already has.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SPACES = REPO / "search_spaces"


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray with 2 CPUs, started once for the whole test session."""
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                 runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    yield ray
    ray.shutdown()


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty folder, so ``mlruns/`` and ``ray_results/`` are created there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_space(directory: Path, body: str, name: str = "space.py") -> Path:
    """Write a space file with the usual imports in front of ``body``."""
    path = directory / name
    path.write_text("from hpsearch import Search, asha, choice, layers, loguniform, randint, uniform\n" + body)
    return path
