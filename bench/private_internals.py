"""What each private internal of another project saved, against the public path that replaced or would replace it.

    PYTHONPATH=. python bench/private_internals.py                    # every part, about 3 minutes on 2 cores
    PYTHONPATH=. python bench/private_internals.py --parts optimizer --repeats 7

- **optimizer**: CPU microseconds per training step (forward, loss, gradients, update) of the digits-sized MLP
  (64-256-128-10, batch 64, one thread): torch's private fused kernels called directly (what ``hpsearch.training.optim``
  does on the tested torch), the public functional API with ``fused=True`` (its fallback), and ``torch.optim``'s classes
  (``fused=True``), interleaved. Also the wall time of a fresh process's optimizer construction and first step,
  where ``torch.optim``'s classes import ``torch._dynamo``.
- **usage-tag**: in a fresh process with Ray Tune imported, the CPU time and resident memory that Tune's callback
  usage tag costs (``ray.air._internal.usage.tag_callbacks``, which imports MLflow), and skipped
  (``hpsearch.upstream_internals.skip_tune_callback_usage_tag``).
- **exit**: a process that has loaded torch, MLflow (with a SQLite store), scikit-learn and Ray Tune, ended with
  ``sys.exit`` (the interpreter's teardown), with ``hpsearch.cli.main.exit_process`` (exit handlers, then ``os._exit``
  from the last one), and with CPython's private ``threading._shutdown`` + ``atexit._run_exitfuncs`` +
  ``os._exit`` (hpsearch 0.1.0): wall seconds from the exit call to the process's end, as the parent sees it.

Each figure is the median over the repeats, every value in brackets.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

OPTIMIZER_CODE = r"""
import json, sys, time
import torch
from torch import nn
torch.set_num_threads(1)
variant, name, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
torch.manual_seed(0)
net = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))
X, y = torch.randn(64, 64), torch.randint(0, 10, (64,))
params = list(net.parameters())
settings = dict(lr=1e-3, weight_decay=1e-4, momentum=0.9)
start = time.perf_counter()  # the optimizer's construction and its first step
if variant == "public":  # hpsearch.training.optim's fallback where torch's private ops are missing
    from hpsearch.training.optim import FusedOptimizer
    opt = FusedOptimizer(name, params, private_op=False, **settings)
    step = opt.step
elif variant == "private":  # hpsearch 0.1.0: torch's fused ops called directly
    steps_t = torch.zeros(())
    exp_avg = [torch.zeros_like(p) for p in params]
    exp_avg_sq = [torch.zeros_like(p) for p in params]
    buffers = []
    def step(loss):
        global buffers
        grads = list(torch.autograd.grad(loss, params))
        if name == "sgd":
            first = not buffers
            if first:
                buffers = [torch.empty_like(g) for g in grads]
            torch._fused_sgd_(params, grads, buffers, weight_decay=1e-4, momentum=0.9, lr=1e-3, dampening=0.0,
                              nesterov=False, maximize=False, is_first_step=first, grad_scale=None, found_inf=None)
            return
        steps_t.add_(1)
        kernel = torch._fused_adamw_ if name == "adamw" else torch._fused_adam_
        kernel(params, grads, exp_avg, exp_avg_sq, [], [steps_t] * len(params), amsgrad=False, lr=1e-3, beta1=0.9,
               beta2=0.999, weight_decay=1e-4, eps=1e-8, maximize=False, grad_scale=None, found_inf=None)
else:  # torch.optim's class, fused
    cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name]
    extra = {"momentum": 0.9} if name == "sgd" else {}
    opt = cls(params, lr=1e-3, weight_decay=1e-4, fused=True, **extra)
    def step(loss):
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

step(nn.functional.cross_entropy(net(X), y))
first = time.perf_counter() - start
for _ in range(50):
    step(nn.functional.cross_entropy(net(X), y))
cpu = time.process_time()
for _ in range(steps):
    step(nn.functional.cross_entropy(net(X), y))
per_step = (time.process_time() - cpu) / steps * 1e6
print(json.dumps({"first_step_s": first, "step_us": per_step, "dynamo": "torch._dynamo" in sys.modules}))
"""

USAGE_TAG_CODE = r"""
import json, resource, sys, time
from ray import tune
import ray.tune.tune  # what tune.run imports before it tags
if sys.argv[1] == "skipped":
    from hpsearch.upstream_internals import skip_tune_callback_usage_tag
    skip_tune_callback_usage_tag()
from ray.air._internal import usage
def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize() / 2**20
before_rss, cpu = rss_mb(), time.process_time()
usage.tag_callbacks([tune.Callback()])
print(json.dumps({"cpu_s": time.process_time() - cpu, "rss_mb": rss_mb() - before_rss,
                  "mlflow": "mlflow" in sys.modules}))
"""

EXIT_CODE = r"""
import atexit, os, sys, tempfile, threading, time
import torch, sklearn.ensemble, ray.tune, mlflow
folder = tempfile.mkdtemp()
client = mlflow.MlflowClient(f"sqlite:///{folder}/mlflow.db")
client.create_run(client.create_experiment("e"))
variant = sys.argv[1]
print(time.time(), flush=True)
if variant == "teardown":
    sys.exit(0)
elif variant == "atexit-hook":
    from hpsearch.cli.main import exit_process
    exit_process(0)
else:  # hpsearch 0.1.0
    threading._shutdown()
    atexit._run_exitfuncs()
    os._exit(0)
"""


def _python(code: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _exit_seconds(variant: str) -> float:
    process = subprocess.Popen([sys.executable, "-c", EXIT_CODE, variant], stdout=subprocess.PIPE, text=True)
    said = float(process.stdout.readline())
    process.wait()
    return time.time() - said


def _median(values: list[float], digits: int) -> str:
    return f"{statistics.median(values):.{digits}f} [{', '.join(f'{v:.{digits}f}' for v in values)}]"


def optimizer(repeats: int) -> None:
    print("| optimizer | private kernels, us/step | public functional API, us/step | torch.optim class, us/step "
          "| construction + first step s: private / public / class "
          "| torch._dynamo imported: private / public / class |")
    print("|---|---|---|---|---|---|")
    for name in ("adam", "adamw", "sgd"):
        runs: dict[str, list[dict]] = {"private": [], "public": [], "class": []}
        for _ in range(repeats):
            for variant in runs:
                runs[variant].append(_python(OPTIMIZER_CODE, variant, name, "2000"))
        step = {v: [r["step_us"] for r in rs] for v, rs in runs.items()}
        first = {v: statistics.median(r["first_step_s"] for r in rs) for v, rs in runs.items()}
        dynamo = " / ".join(str(rs[0]["dynamo"]) for rs in runs.values())
        print(f"| {name} | {_median(step['private'], 0)} | {_median(step['public'], 0)} | "
              f"{_median(step['class'], 0)} | {first['private']:.3f} / {first['public']:.3f} / "
              f"{first['class']:.3f} | {dynamo} |")


def usage_tag(repeats: int) -> None:
    runs: dict[str, list[dict]] = {"tagged": [], "skipped": []}
    for _ in range(repeats):
        for variant in runs:
            runs[variant].append(_python(USAGE_TAG_CODE, variant))
    print("| Tune's callback usage tag | CPU s | RSS growth MB | MLflow imported |")
    print("|---|---|---|---|")
    for variant, rs in runs.items():
        print(f"| {variant} | {_median([r['cpu_s'] for r in rs], 3)} | {_median([r['rss_mb'] for r in rs], 1)} | "
              f"{rs[0]['mlflow']} |")


def exit_time(repeats: int) -> None:
    runs: dict[str, list[float]] = {"teardown": [], "atexit-hook": [], "private": []}
    for _ in range(repeats):
        for variant in runs:
            runs[variant].append(_exit_seconds(variant))
    print("| how the process ends | s from the exit call to the end |")
    print("|---|---|")
    for variant, seconds in runs.items():
        print(f"| {variant} | {_median(seconds, 2)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="optimizer,usage-tag,exit")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("PYTHONPATH", ".")
    parts = {"optimizer": optimizer, "usage-tag": usage_tag, "exit": exit_time}
    for part in args.parts.split(","):
        print(f"\n{part} ({args.repeats} repeats, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n")
        parts[part](args.repeats)


if __name__ == "__main__":
    main()
