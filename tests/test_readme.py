"""The README's commands, as a newcomer copies them (and CI runs them): what they write stays out of git, and
what they install fits beside the torch and MLflow a user already has."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import tomllib
from packaging.requirements import Requirement

from tests.conftest import REPO


def _bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.DOTALL)


def test_the_files_the_readme_walkthrough_writes_are_ignored_by_git():
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    written = {name for block in _bash_blocks() for name in re.findall(r"-o (\S+)", block)}
    assert {"best.yaml", "predictions.csv", "report.html"} <= written
    ignored = subprocess.run(["git", "check-ignore", "--no-index", *sorted(written)], cwd=REPO,
                             capture_output=True, text=True).stdout.split()
    assert sorted(ignored) == sorted(written)


def test_ci_runs_the_readmes_set_up_and_test_commands_in_a_new_virtual_environment():
    set_up = _bash_blocks()[0].splitlines()
    assert set_up[0] == "python -m venv .venv && . .venv/bin/activate"
    assert set_up[1].startswith("pip install torch==2.13.0 --extra-index-url https://download.pytorch.org/whl/cpu")
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    commands = [line.split("#")[0].strip() for line in set_up]
    assert [line for line in ci if line in commands] == commands  # each once, in the README's order


def test_the_dependencies_accept_the_releases_users_have_and_refuse_none_without_a_known_break():
    """A user's newer torch or MLflow is kept (no downgrade, no multi-GB CUDA download); no upper bound where no
    break is known (hpsearch/upstream_internals.py checks the releases it has seen before a private name)."""
    requirements = {r.name: r for r in map(Requirement, tomllib.loads((REPO / "pyproject.toml").read_text())
                                           ["project"]["dependencies"])}
    for name, releases in {"torch": ["2.13.0", "2.14.1", "2.15.0"], "mlflow": ["3.17.2", "3.18.0"],
                           "pyarrow": ["25.0.1", "26.0.1"]}.items():
        assert all(requirements[name].specifier.contains(r) for r in releases), (name, requirements[name])
    assert not [str(r) for r in requirements.values() if any(s.operator in ("<", "<=", "~=") for s in r.specifier)]
