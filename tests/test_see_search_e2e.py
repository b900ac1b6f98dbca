"""End-to-end: a small real search logs its plots to MLflow; the report opens offline; the MLflow UI shows it all.

One search (module scope) feeds every test here. The browser checks use Debian's Chromium driven by Playwright
(``.ci/run`` installs both); they skip with the reason when either is missing.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import plotly.io
import pytest
from mlflow import MlflowClient

from hpsearch.cli.main import main
from hpsearch.tracking.ui import wait_until_up
from tests.conftest import REPO, SPACES
from tests.serving import free_port

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DIGITS_SEARCHED = {"n_layers", "units_0", "units_1", "units_2", "lr", "dropout", "weight_decay", "batch_size",
                   "optimizer"}


@pytest.fixture(scope="module")
def search(ray_session, tmp_path_factory) -> dict:
    """Four trials of the digits space, two epochs each, run in-process in a fresh folder."""
    folder = tmp_path_factory.mktemp("see")
    previous = Path.cwd()
    os.chdir(folder)
    try:
        code = main(["run", str(SPACES / "digits.py"), "--num-samples", "4", "--max-epochs", "2",
                     "--experiment", "see"])
    finally:
        os.chdir(previous)
    assert code == 0
    client = MlflowClient(f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("see")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    parent = next(r for r in runs if r.data.tags.get("hpsearch.kind") == "search")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return {"folder": folder, "client": client, "experiment": experiment, "parent": parent, "children": children}


def test_the_search_logs_its_plots_to_the_parent_run_and_a_loss_curve_to_each_trial(search):
    client, parent, children = search["client"], search["parent"], search["children"]
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    for name in ("learning_curves", "best_so_far", "parallel_coordinates", "param_importances", "best_trial_loss",
                 "confusion_matrix"):
        assert f"plots/{name}.png" in logged
    assert {"plots/interactive.html", "plots/figures.json", "plots/architecture.txt"} <= logged
    for child in children:
        assert [a.path for a in client.list_artifacts(child.info.run_id, "plots")] == ["plots/loss_curve.png"]

    folder = Path(client.download_artifacts(parent.info.run_id, "plots", str(search["folder"] / "got")))
    figures = {f["name"]: plotly.io.from_json(json.dumps(f["figure"]))
               for f in json.loads((folder / "figures.json").read_text())}
    curves = {trace.name.split(" ")[0]: trace.x for trace in figures["learning_curves"].data}
    epochs = {c.info.run_name: int(c.data.metrics["epochs_trained"]) for c in children}
    assert {name: len(x) for name, x in curves.items()} == epochs  # one series per trial, a point per epoch
    importances = json.loads((folder / "param_importances.json").read_text())
    assert set(importances) == DIGITS_SEARCHED
    assert "total parameters" in (folder / "architecture.txt").read_text()
    confusion = _array(figures["confusion_matrix"].data[0].z)
    assert confusion.shape == (10, 10) and confusion.sum() == 270  # each row of the test split (15% of 1,797)


def test_the_report_is_one_offline_page_with_the_settings_the_best_trial_and_the_plots(search, tmp_path):
    out = tmp_path / "report.html"
    previous = Path.cwd()
    os.chdir(search["folder"])
    try:
        assert main(["report", "see", "-o", str(out)]) == 0
    finally:
        os.chdir(previous)
    page = out.read_text()
    best = search["parent"].data.tags["hpsearch.best_trial"]
    assert f"best trial <b>{best}</b>" in page and "<tr class=best><td>1</td><td>" + best in page
    space = page.split("<h3>Space</h3>", 1)[1].split("</table>", 1)[0]  # the space as the space file wrote it
    assert "space.lr" not in page and "loguniform(0.0001, 0.1)" in space
    assert "layers(1, 3, units=(16, 256))" in space and "units_" not in space and "n_layers" not in space
    assert "<script src=" not in page  # plotly.js is inline: opens without a server or a network
    assert page.count("data:image/png;base64,") >= 6

    with _browser() as browser:
        view = browser.new_page()
        view.goto(out.as_uri())
        view.wait_for_selector(".js-plotly-plot .main-svg", timeout=30_000)
        assert view.locator(".js-plotly-plot").count() == 6
        assert view.evaluate("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
        view.screenshot(path=str(tmp_path / "report.png"), full_page=False)


def test_the_mlflow_ui_shows_the_search_its_trials_and_the_plots(search, tmp_path):
    parent, experiment_id = search["parent"], search["experiment"].experiment_id
    port = free_port()
    with _ui_server(search["folder"], port) as (url, printed), _browser() as browser:
        page = browser.new_page()
        runs = f"{url}/#/experiments/{experiment_id}/runs"  # the experiment's runs, not MLflow 3's GenAI overview
        assert f"experiment 'see', its searches and trials: {runs}" in printed
        page.goto(runs)
        row = page.locator("[role=row]", has_text=parent.info.run_name).first
        row.wait_for(timeout=90_000)  # a React app: wait for the runs table to be drawn
        row.locator("button[data-component-id*=runnamecellrenderer]").click()  # expand the search's trials
        for child in search["children"]:
            page.get_by_text(child.info.run_name, exact=True).wait_for(timeout=30_000)
        page.screenshot(path=str(tmp_path / "mlflow_runs.png"))

        page.goto(f"{url}/#/experiments/{experiment_id}/runs/{parent.info.run_id}/artifacts")
        page.get_by_text("plots", exact=True).first.click(timeout=60_000)
        for name in ("learning_curves.png", "param_importances.png", "interactive.html", "architecture.txt"):
            page.get_by_text(name, exact=True).wait_for(timeout=30_000)
        page.get_by_text("learning_curves.png", exact=True).click()
        image = page.locator("img[src*='learning_curves.png'], img[src^='blob:']").first
        image.wait_for(timeout=30_000)
        page.wait_for_function("[...document.images].some(i => i.naturalWidth > 400)", timeout=30_000)
        page.screenshot(path=str(tmp_path / "mlflow_artifacts.png"))
    print(f"screenshots in {tmp_path}")


# ------------------------------------------------------------------------------------------------ helpers
@contextmanager
def _browser() -> Iterator:
    """Headless Debian Chromium under Playwright; skips when either is missing (never downloads a browser)."""
    playwright_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium")
    profile = Path(os.environ.get("TMPDIR", "/tmp"))
    with playwright_api.sync_playwright() as playwright:
        import tempfile

        with tempfile.TemporaryDirectory(dir=profile, prefix="chromium-profile-") as user_data:
            context = playwright.chromium.launch_persistent_context(
                user_data, executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS,
                viewport={"width": 1400, "height": 900})
            try:
                yield context
            finally:
                context.close()


@contextmanager
def _ui_server(folder: Path, port: int) -> Iterator[tuple[str, str]]:
    """``python -m hpsearch ui --port P`` in ``folder``, as a user starts it; killed by its pid at the end."""
    process = subprocess.Popen(
        [sys.executable, "-m", "hpsearch", "ui", "--port", str(port)], cwd=folder, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, start_new_session=True)
    try:
        printed = "".join(process.stdout.readline() for _ in range(3))
        url = f"http://127.0.0.1:{port}"
        assert f"open {url}" in printed
        wait_until_up(url, timeout_s=120)
        yield url, printed
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # the UI and its server workers: the session the test started
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _array(value: object) -> np.ndarray:
    """A plotly JSON array: a list, or plotly's typed array ``{"dtype", "bdata", "shape"}``."""
    if isinstance(value, dict):
        shape = tuple(int(n) for n in str(value.get("shape", "-1")).split(","))
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"]).reshape(shape)
    return np.asarray(value)


