"""Training-loop speed: :func:`hpsearch.training.fit.fit` against a DataLoader loop, same network, batch and optimizer.

    python bench/loop.py [--epochs-digits 10] [--epochs-table 3] [--repeats 3] [--threads 1] [--eval-batch N]

Both loops train the same MLP (``hpsearch.model.network.build_model``: 256-128 hidden units), Adam at 1e-3, batch 64,
on one thread, and evaluate the validation split after every epoch; prints one JSON line per data set with the
median samples per second and the mean final validation accuracy of each loop.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import pandas as pd
import torch
from sklearn.datasets import load_digits, make_classification
from torch.utils.data import DataLoader, TensorDataset

from hpsearch.data.sources import prepare
from hpsearch.training import fit as train
from hpsearch.training.fit import TrialConfig, fit, model_spec

CLOCK = time.perf_counter  # --clock cpu: time.process_time, steadier on a loaded machine (one thread only)


def datasets() -> dict:
    digits = load_digits(as_frame=True).frame
    X, y = make_classification(n_samples=50_000, n_features=20, n_informative=10, random_state=0)
    table = pd.DataFrame(X).add_prefix("x").assign(target=y)
    split = (0.7, 0.15, 0.15)
    return {"digits": prepare(digits, "target", task=None, split=split, seed=0, source="digits"),
            "table50k": prepare(table, "target", task=None, split=split, seed=0, source="table")}


def run_fit(data, config) -> tuple[float, float]:
    last = {}
    start = CLOCK()
    fit(config, data, lambda metrics, save: last.update(metrics))
    return CLOCK() - start, last["val_accuracy"]


def run_dataloader(data, config) -> tuple[float, float]:
    """The textbook loop: a DataLoader over a TensorDataset, shuffled, then a full-batch validation pass."""
    torch.manual_seed(config.seed)
    spec = model_spec(config, data)
    model = train.build_model(spec)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    loss_fn = train._loss_function(data.task)
    X, y = torch.as_tensor(data.train.X), torch.as_tensor(data.train.y)
    Xv, yv = torch.as_tensor(data.val.X), torch.as_tensor(data.val.y)
    loader = DataLoader(TensorDataset(X, y), batch_size=config.batch_size, shuffle=True)
    start = CLOCK()
    for _ in range(config.max_epochs):
        model.train()
        for xb, yb in loader:
            out = model(xb)
            loss = loss_fn(out.squeeze(1) if data.task == "binary" else out, yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            out = model(Xv)
            predicted = (out.squeeze(1) > 0).float() if data.task == "binary" else out.argmax(1)
            accuracy = (predicted == yv).float().mean().item()
    return CLOCK() - start, accuracy


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs-digits", type=int, default=10)
    parser.add_argument("--epochs-table", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--eval-batch", type=int, default=None, help="override hpsearch.training.fit.EVAL_BATCH")
    parser.add_argument("--only", choices=("fit", "dataloader"), default=None)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    args = parser.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    if args.eval_batch:
        train.EVAL_BATCH = args.eval_batch
    for name, data in datasets().items():
        epochs = args.epochs_digits if name == "digits" else args.epochs_table
        rows = len(data.train) * epochs
        result = {"data": name, "rows": len(data.train), "epochs": epochs, "threads": args.threads}
        loops = {"fit": run_fit, "dataloader": run_dataloader}
        times = {k: [] for k in loops}
        accuracy = {k: [] for k in loops}
        warm = TrialConfig(hidden_sizes=(256, 128), batch_size=64, max_epochs=1)
        run_fit(data, warm), run_dataloader(data, warm)  # first calls pay torch's one-time set-up
        for seed in range(args.repeats):  # interleaved, one seed per repeat, the same seed for both loops
            config = TrialConfig(hidden_sizes=(256, 128), lr=1e-3, batch_size=64, optimizer="adam",
                                 max_epochs=epochs, seed=seed)
            for key, loop in loops.items():
                if args.only in (None, key):
                    seconds, acc = loop(data, config)
                    times[key].append(seconds)
                    accuracy[key].append(acc)
        for key in loops:
            if times[key]:
                result[f"{key}_samples_s"] = rows / statistics.median(times[key])
                result[f"{key}_accuracy"] = float(np.mean(accuracy[key]))
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
