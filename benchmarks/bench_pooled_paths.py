"""Inference through a stride-1 3 x 3 convolution, its LIF step and 2 x 2 average pooling in
one pass (:func:`evsim.kernels.conv_lif_pool.conv_lif_pool`), by each dense kernel:
the direct convolution, Winograd's F(2x2, 3x3) and F(4x4, 3x3), over a grid of layer
shapes.

As ``bench_winograd`` (its shapes, 15 % of input cells nonzero), one kernel after the
other in each round, best of ``--repeat``; per kernel the per-slot time is fitted by
least squares to ``a * outputs + b * multiply_adds`` (the outputs each kernel computes,
padding included, and its 16-lane multiply-adds: ``conv_paths.pooled_work``), the model
:func:`evsim.kernels.conv_paths.pooled_path` uses to choose between them (``PathCosts.pooled``).
The machine is shared: run it more than once.

Run: NUMBA_NUM_THREADS=1 python -m benchmarks.bench_pooled_paths [--slots 600] [--repeat 3] [--json out.json]
"""
from __future__ import annotations

import argparse

import numpy as np

from benchmarks.bench_winograd import SHAPES, layer
from benchmarks.common import best_time, machine, relative_cost_fit, save_json

KERNELS = ("direct", "winograd", "winograd4")


def measure(channels: int, filters: int, size: int, slots: int, repeat: int, rng) -> dict:
    from evsim.kernels.conv_lif_pool import conv_lif_pool
    from evsim.kernels.conv_paths import pooled_work

    geo, steps, ev, (indptr, columns, data) = layer(channels, filters, size, slots, rng)
    batch = 100
    bias = np.zeros(filters, np.float32)
    pooled = np.empty((steps, batch, filters * (size // 2) ** 2), np.uint8)
    channel_of = np.arange(filters)
    work = pooled_work(channels, filters, geo.out_height, geo.out_width)
    out = {"channels": channels, "filters": filters, "size": size, "slots": steps * batch,
           **{f"{k}_outputs": work[k][0] for k in KERNELS}, **{f"{k}_fmas": work[k][1] for k in KERNELS}}
    for name in KERNELS:
        seconds = best_time(lambda: conv_lif_pool(ev, indptr, columns, data, geo, bias, 0.2, 0.5, True, name,
                                                  channel_of, pooled), repeat=repeat)
        out[f"{name}_ns_per_slot"] = 1e9 * seconds / (steps * batch)
    return out


def fit(rows: list[dict], kernel: str) -> tuple[float, float]:
    """``(ns per output computed, ns per multiply-add)`` of one kernel's per-slot time
    (:func:`benchmarks.common.relative_cost_fit`)."""
    return relative_cost_fit([(r[f"{kernel}_outputs"], r[f"{kernel}_fmas"]) for r in rows],
                             [r[f"{kernel}_ns_per_slot"] for r in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", type=int, default=600)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    for channels, filters, size in SHAPES:
        row = measure(channels, filters, size, args.slots, args.repeat, rng)
        rows.append(row)
        print(f"C {channels:2d} F {filters:2d} H {size:2d}: us per slot, "
              + ", ".join(f"{k} {row[f'{k}_ns_per_slot'] / 1e3:6.1f}" for k in KERNELS), flush=True)
    models = {k: fit(rows, k) for k in KERNELS}
    for name, (per_unit, per_fma) in models.items():
        print(f"{name}: {per_unit:.3f} ns per output computed, {per_fma:.3f} ns per multiply-add")
    right = 0
    for r in rows:
        modelled = {k: np.dot(models[k], (r[f"{k}_outputs"], r[f"{k}_fmas"])) for k in KERNELS}
        measured = {k: r[f"{k}_ns_per_slot"] for k in KERNELS}
        right += min(modelled, key=modelled.get) == min(measured, key=measured.get)
    print(f"the models pick the fastest kernel for {right} of {len(rows)} shapes")
    save_json(args.json, {"machine": machine(), "rows": rows, "models": models})


if __name__ == "__main__":
    main()
