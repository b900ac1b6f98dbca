"""One voice in every output: the same trial line, table, numbers, option names and messages in every command."""

from __future__ import annotations

import multiprocessing
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hpsearch.cli.main import main, parser
from tests.conftest import REPO, write_space

SMALL = """
search = Search(data="sklearn:iris", params={"layers": layers(1, 2, units=(4, 16)), "lr": loguniform(1e-3, 1e-1)},
                num_samples=3, max_epochs=2, scheduler="fifo", executor="local")
"""


def _help(argv: list[str], capsys) -> list[str]:
    """What ``hpsearch ARGV --help`` prints, line by line."""
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    return capsys.readouterr().out.splitlines()


def _commands(capsys) -> list[str]:
    """The commands ``hpsearch --help`` lists (each on a line of its own under COMMAND, indented by 4)."""
    return [line.split()[0] for line in _help([], capsys) if re.match(r"^ {4}[a-z]", line)]


def _arguments_without_help(lines: list[str]) -> list[str]:
    """The arguments of a ``--help`` page that have no sentence: an entry (indented by 2) with nothing after it,
    neither on its line nor on a continuation line below (indented further)."""
    missing, listing = [], False
    for number, line in enumerate(lines):
        if line.endswith(":") and not line.startswith(" "):  # "positional arguments:", "options:"
            listing = True
            continue
        if not listing or not re.match(r"^  \S", line):
            continue
        said_here = re.match(r"^  \S.*?\s{2,}\S", line)
        said_below = number + 1 < len(lines) and re.match(r"^ {3,}\S", lines[number + 1])
        if not (said_here or said_below):
            missing.append(line.strip())
    return missing


def test_every_option_of_every_command_has_a_help_sentence(capsys):
    commands = _commands(capsys)
    assert {"run", "resume", "best", "export", "report"} <= set(commands), commands
    missing = {name: _arguments_without_help(_help([name], capsys)) for name in commands}
    assert not any(missing.values()), missing


def test_best_export_and_report_say_the_same_when_no_store_is_here(workdir: Path, capsys):
    errors = []
    for command in (["best"], ["export", "-o", "best.yaml"], ["report"]):
        assert main(command) == 2
        errors.append(capsys.readouterr().err.strip())
    assert len(set(errors)) == 1 and errors[0].startswith("error: no MLflow store in this folder"), errors
    assert not list(workdir.iterdir())


def test_the_same_top_and_search_options_in_best_export_and_report():
    tops = {name: parser().parse_args([name]).top for name in ("best", "report")}
    tops["run"] = parser().parse_args(["run", "space.py"]).top
    tops["resume"] = parser().parse_args(["resume", "x"]).top
    assert len(set(tops.values())) == 1, tops
    for name in ("best", "report"):
        assert parser().parse_args([name, "--search", "abc"]).search == "abc"
    assert parser().parse_args(["export", "--search", "abc", "-o", "x.yaml"]).search == "abc"
    assert parser().parse_args(["report", "--run", "abc"]).search == "abc"  # the old name still works


def _table(lines: list[str], first: int) -> list[list[str]]:
    """The whitespace-separated cells of a text table from its header line to its first blank line (or the models
    on the test split that follow it)."""
    rows = []
    for line in lines[first:]:
        if not line.strip() or line.startswith(("best trial", "on the test split")):
            break
        rows.append(line.split())
    return rows


def test_a_local_search_run_best_and_report_speak_alike(workdir: Path, capsys):
    space = write_space(workdir, SMALL)
    assert main(["run", str(space), "--experiment", "alike"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "opening the MLflow store ..." in out
    trial_lines = [line for line in out if line.startswith("trial_")]
    assert len(trial_lines) == 3  # the line a Ray trial gets: name, status, epochs, metric, then the status
    assert all(re.match(r"trial_00\d completed after   2 epochs  val_loss=\S+  \| \[\d/3\] ", line)
               for line in trial_lines), trial_lines
    assert not any("skipped" in line for line in out)  # nothing is wrong: nothing to say about figures
    ran = _table(out, next(i for i, line in enumerate(out) if line.startswith("rank ")))

    assert main(["best", "alike"]) == 0
    best_out = capsys.readouterr().out.splitlines()
    best = _table(best_out, 1)
    assert ran == best  # same columns, same rows, same rounding
    assert "layers" in ran[0] and "n_layers" not in ran[0]
    assert all(re.fullmatch(r"\d+(-\d+)*", row[ran[0].index("layers")]) for row in ran[1:])
    for row in ran[1:]:
        for value in (row[3], row[ran[0].index("lr")]):
            assert len(re.sub(r"e.*|[^0-9]", "", value).lstrip("0")) <= 4, value

    run_id = best_out[0].split()[1]
    assert main(["report", "--search", run_id, "-o", "r.html"]) == 0
    assert capsys.readouterr().out.startswith("wrote r.html")
    page = (workdir / "r.html").read_text()
    header = re.search(r"<table><tr>(<th>rank</th>.*?)</tr>", page).group(1)  # the trials' table
    assert re.findall(r"<th>(.*?)</th>", header) == ran[0]
    assert main(["report", "alike", "-o", "r.html"]) == 0
    assert capsys.readouterr().out.startswith("overwrote r.html")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_gpus_per_trial_without_a_gpu_is_refused_before_ray_starts(workdir: Path):
    space = write_space(workdir, 'search = Search(data="sklearn:iris")')
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run([sys.executable, "-m", "hpsearch", "run", str(space), "--gpus-per-trial", "1"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == (f"error: {space}: resources.gpu: asks for 1 GPUs per trial, but this machine has "
                                   "no GPU (torch.cuda.is_available() is false); use gpu 0, or a Ray cluster with "
                                   "GPUs (--address)")
    assert "starting Ray" not in done.stdout
    assert sorted(p.name for p in workdir.iterdir()) == ["space.py"]


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_a_run_refused_after_its_store_started_leaves_no_process_behind(workdir: Path, capsys, monkeypatch):
    """The GPU check comes once the store's process has started (it loads MLflow while the data load)."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    space = write_space(workdir, 'search = Search(data="sklearn:iris")')

    assert main(["run", str(space), "--gpus-per-trial", "1"]) == 2

    assert "resources.gpu: asks for 1 GPUs per trial" in capsys.readouterr().err
    assert multiprocessing.active_children() == []


@pytest.mark.parametrize(("argv", "said"), [
    (["best", "churn", "--top", "0"], "argument --top: must be an integer >= 1, but got 0"),
    (["report", "churn", "--top", "-2"], "argument --top: must be an integer >= 1, but got -2"),
    (["run", "space.py", "--top", "0"], "argument --top: must be an integer >= 1, but got 0"),
    (["run", "space.py", "--num-sample", "4"], "unrecognized arguments: --num-sample 4"),
    (["best", "--js"], "unrecognized arguments: --js"),
    (["train", "best.yaml", "--epoch", "3"], "unrecognized arguments: --epoch 3"),
])
def test_a_mistyped_or_abbreviated_option_is_an_error_not_a_guess(argv, said, workdir: Path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().endswith(f"error: {said}")
