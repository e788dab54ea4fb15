"""The paper's N-MNIST network's training step and ``predict`` under each machine kind's
path table (:mod:`evsim.kernels.conv_paths`: AVX-512's, then AVX2's), and with the event
paths forced on top of the second, one kernel kind after another: what a table costs on a
machine other than the one it was measured on.

Run: python -m benchmarks.bench_conv_paths [--threads 1] [--batches 3]
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import numba
import numpy as np
from threadpoolctl import threadpool_limits

import evsim
from benchmarks.bench_conv import BATCH, N_STEPS, SPEC, frames
from evsim.kernels import conv_paths

# Each step forces one more kind of kernel onto its event path (the layers read the table
# at every call, so replacing it takes effect at once).
FORCED = (("forward events", {"direct_ns_per_fma": 1e9, "winograd_ns_per_fma": 1e9}),
          ("+ weight gradient events", {"weight_grad_direct_above": 2.0}),
          ("+ input gradient gather", {"input_grad_gather_below": 2.0}))


def best_ms(batches: list, labels: np.ndarray) -> tuple[float, float]:
    """Best training step and ``predict`` of a fresh network over ``batches[1:]`` (ms)."""
    network = evsim.Network.from_spec(SPEC, rng=1)
    optimizer = evsim.Optimizer("adam", 1e-3)

    def train(drive):
        counts, traces = network.forward(drive)
        optimizer.step(network.parameters(network.backward(traces, evsim.mse_rate(counts, labels, N_STEPS)[1])))

    train(batches[0])
    network.predict(batches[0])
    times = {"train": [], "predict": []}
    for drive in batches[1:]:
        for name, step in (("train", train), ("predict", network.predict)):
            start = time.perf_counter()
            step(drive)
            times[name].append(time.perf_counter() - start)
    return 1e3 * min(times["train"]), 1e3 * min(times["predict"])


def batches_from_arguments(description: str) -> tuple[list, np.ndarray]:
    """``--threads`` and ``--batches`` read and the threads set; the event batches (6 % of
    cells active, as real N-MNIST frames) and one batch's labels."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batches", type=int, default=3, help="timed batches after the first (default 3)")
    args = parser.parse_args()
    numba.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    batches = [evsim.dense_to_events(frames(rng, 0.06)) for _ in range(args.batches + 1)]
    return batches, rng.integers(0, 10, BATCH)


def main() -> None:
    batches, labels = batches_from_arguments(__doc__.splitlines()[0])
    with threadpool_limits(limits=1, user_api="blas"):
        for name, costs in (("AVX-512 table", conv_paths.AVX512), ("AVX2 table", conv_paths.AVX2)):
            conv_paths.HOST = costs
            print(f"{name:28s} train {{:7.1f}} ms  predict {{:7.1f}} ms".format(*best_ms(batches, labels)), flush=True)
        for name, constants in FORCED:
            conv_paths.HOST = dataclasses.replace(conv_paths.HOST, **constants)
            print(f"{name:28s} train {{:7.1f}} ms  predict {{:7.1f}} ms".format(*best_ms(batches, labels)), flush=True)


if __name__ == "__main__":
    main()
