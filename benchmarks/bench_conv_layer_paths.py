"""The paper's N-MNIST network with each of its two convolutions' forward forced onto each
stride-1 path (events, direct, Winograd): training step and ``predict`` per combination,
to see which layer a path table's choice matters for.

Run: python -m benchmarks.bench_conv_layer_paths [--threads 1] [--batches 3]
"""
from __future__ import annotations

import argparse
import itertools

import numba
import numpy as np
from threadpoolctl import threadpool_limits

import evsim
import evsim.layers.conv as conv_layers
from benchmarks.bench_conv import BATCH, frames
from benchmarks.bench_conv_paths import best_ms

STRIDE_1_PATHS = ("events", "direct", "winograd")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batches", type=int, default=3, help="timed batches after the first (default 3)")
    args = parser.parse_args()
    numba.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    batches = [evsim.dense_to_events(frames(rng, 0.06)) for _ in range(args.batches + 1)]
    labels = rng.integers(0, 10, BATCH)
    chosen = conv_layers.forward_path
    forced = {}  # input channels (2: conv1, 15: conv2) -> path

    def forward_path(density, geometry=None, n_filters=0, costs=None):
        if geometry is not None and geometry.stride == 1:
            return forced[geometry.in_channels]
        return chosen(density, geometry, n_filters, costs)

    conv_layers.forward_path = forward_path
    with threadpool_limits(limits=1, user_api="blas"):
        for conv1, conv2 in itertools.product(STRIDE_1_PATHS, STRIDE_1_PATHS):
            forced[2], forced[15] = conv1, conv2
            print(f"conv1 {conv1:8s} conv2 {conv2:8s} train {{:7.1f}} ms  predict {{:7.1f}} ms".format(
                *best_ms(batches, labels)), flush=True)


if __name__ == "__main__":
    main()
