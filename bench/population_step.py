"""A population's step against one trial's: issue 20's first target (>= 5x samples x members per second).

    python bench/population_step.py [--members 16] [--units 64] [--epochs 5] [--repeats 5] [--clock cpu|wall]

Digits, ``members`` MLPs of two hidden layers of ``units`` units (Adam, batch 64, each member its own seed, learning
rate and weight decay), ``epochs`` epochs with the validation pass after each: once as one
:class:`hpsearch.training.population.Population`, once one after another with :func:`hpsearch.training.fit.fit`.
The two are interleaved, repeat after repeat, and the medians compared, so that a load from other processes on the
shared cores hits both alike; the time is the process's CPU time by default (steadier than wall time on shared cores,
and the same thing on one thread), and the load average is printed with the table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from hpsearch import Search
from hpsearch.data.sources import load_dataset
from hpsearch.training.fit import TrialConfig, fit
from hpsearch.training.population import Population

# The cores are shared with other processes: on one thread, the CPU time this process gets is the steadier measure
# (--clock wall for wall time).
CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
CLOCK = CLOCKS["cpu"]


def configs(members: int, units: int, epochs: int) -> dict[str, TrialConfig]:
    return {f"m{i}": TrialConfig(hidden_sizes=(units, units), lr=1e-3 * (1 + i % 4), weight_decay=1e-4 * (i % 3),
                                 optimizer="adam", batch_size=64, max_epochs=epochs, seed=i)
            for i in range(members)}


def one_after_another(trials: dict[str, TrialConfig], data) -> float:
    start = CLOCK()
    for config in trials.values():
        fit(config, data, lambda metrics, save: None)
    return CLOCK() - start


def batched(trials: dict[str, TrialConfig], data, epochs: int) -> float:
    start = CLOCK()
    population = Population(trials, data)
    for _ in range(epochs):
        population.train_epoch()
    return CLOCK() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=16)
    parser.add_argument("--units", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=list(CLOCKS), default="cpu")
    args = parser.parse_args()
    global CLOCK
    CLOCK = CLOCKS[args.clock]
    torch.set_num_threads(args.threads)
    data = load_dataset(Search(data="sklearn:digits"), Path("."))
    trials = configs(args.members, args.units, args.epochs)
    load = os.getloadavg()[0]
    batched(trials, data, 1), one_after_another(dict(list(trials.items())[:2]), data)  # warm-up
    times: dict[str, list[float]] = {"one after another": [], "population": []}
    for _ in range(args.repeats):
        times["one after another"].append(one_after_another(trials, data))
        times["population"].append(batched(trials, data, args.epochs))
    work = len(data.train) * args.epochs * args.members
    print(f"digits: {len(data.train)} training samples, {args.members} members of {args.units}-{args.units}, "
          f"{args.epochs} epochs, {args.threads} thread(s), {args.repeats} interleaved repeats, {args.clock} time, "
          f"load average {load:.1f} before, {os.getloadavg()[0]:.1f} after")
    print(f"{'':<18} {'median s':>9} {'min s':>7} {'samples x members / s':>22}")
    for name, seconds in times.items():
        median = statistics.median(seconds)
        print(f"{name:<18} {median:>9.3f} {min(seconds):>7.3f} {work / median:>22,.0f}")
    ratio = statistics.median(times["one after another"]) / statistics.median(times["population"])
    print(f"population / one trial (samples x members per second): {ratio:.1f}x")


if __name__ == "__main__":
    main()
