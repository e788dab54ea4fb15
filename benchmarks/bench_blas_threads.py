"""Training-batch time with BLAS held to one thread vs left multithreaded, in one run.

784-800-10 network on rate-coded MNIST digits (batch 100, T = 20), forward + backward +
Adam; the two settings alternate, 10 timed batches each per round, 3 rounds.

Run: python -m benchmarks.bench_blas_threads [--json out.json]
"""
from __future__ import annotations

import argparse
import contextlib
import time

import numpy as np
from threadpoolctl import threadpool_limits

from benchmarks.common import machine, save_json
from evsim.data import load_dataset
from evsim.config import TrainConfig
from evsim.train import Trainer


def batch_seconds(trainer: Trainer, inputs, labels, n: int) -> float:
    net = trainer.network
    times = []
    for _ in range(n):
        start = time.perf_counter()
        counts, traces = net.forward(trainer._events(inputs))
        _, grad = trainer.loss_fn(counts, labels, trainer.config.time_steps)
        grads = net.backward(traces, grad)
        trainer.optimizer.step(net.parameters(grads))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json")
    args = parser.parse_args()
    dataset = load_dataset("mnist")
    trainer = Trainer(TrainConfig(hidden=(800,)), dataset)
    x, y = dataset.train.inputs[:100], dataset.train.labels[:100]
    batch_seconds(trainer, x, y, 3)  # warm-up: JIT compilation
    results = {"blas_1_thread": [], "blas_default": []}
    for _ in range(3):
        for name, limit in (("blas_1_thread", 1), ("blas_default", None)):
            ctx = threadpool_limits(limits=1, user_api="blas") if limit else contextlib.nullcontext()
            with ctx:
                results[name].append(batch_seconds(trainer, x, y, 10))
    one, default = np.median(results["blas_1_thread"]), np.median(results["blas_default"])
    print(f"median batch: BLAS 1 thread {1e3 * one:.1f} ms, BLAS default {1e3 * default:.1f} ms, "
          f"ratio {default / one:.2f}x")
    save_json(args.json, {"benchmark": "blas_threads", "machine": machine(), "seconds": results})


if __name__ == "__main__":
    main()
