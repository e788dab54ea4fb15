"""The paper's N-MNIST network with each of its two convolutions' forward forced onto each
stride-1 path (events, direct, Winograd): training step and ``predict`` per combination,
to see which layer a path table's choice matters for.

Run: python -m benchmarks.bench_conv_layer_paths [--threads 1] [--batches 3]
"""
from __future__ import annotations

import itertools

from threadpoolctl import threadpool_limits

import evsim.layers.conv as conv_layers
from benchmarks.bench_conv_paths import batches_from_arguments, best_ms

STRIDE_1_PATHS = ("events", "direct", "winograd")


def main() -> None:
    batches, labels = batches_from_arguments(__doc__.splitlines()[0])
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
