"""Inference through a stride-1 3 x 3 convolution, its LIF step and 2 x 2 average pooling in
one pass (:func:`evsim.kernels.conv_lif_pool.conv_lif_pool`), by each kernel: the event
path, the direct convolution, Winograd's F(2x2, 3x3) and F(4x4, 3x3), over a grid of
layer shapes.

As ``bench_winograd`` (its shapes, 15 % of input cells nonzero; the event path also at
2 and 6 %), one kernel after the other in each round, best of ``--repeat``; per kernel
the per-slot time is fitted (relative error) to ``a * outputs + b * multiply_adds`` (the
outputs each dense kernel computes, padding included, and its 16-lane multiply-adds:
``conv_paths.pooled_work``; the event path's outputs stepped and 16-lane adds:
``conv_paths.pooled_events_work``), the model :func:`evsim.kernels.conv_paths.pooled_path`
uses to choose between them (``PathCosts.pooled``). The machine is shared: run it more
than once.

Run: NUMBA_NUM_THREADS=1 python -m benchmarks.bench_pooled_paths [--slots 600] [--repeat 3] [--json out.json]
"""
from __future__ import annotations

import argparse

import numpy as np

from benchmarks.bench_winograd import SHAPES, layer
from benchmarks.common import best_time, machine, relative_cost_fit, save_json

KERNELS = ("direct", "winograd", "winograd4")
EVENT_DENSITIES = (0.02, 0.06, 0.15)


def _time_per_slot(ev, geo, steps, kernels, filters, path, repeat) -> float:
    from evsim.kernels.conv_lif_pool import conv_lif_pool

    batch = 100
    bias = np.zeros(filters, np.float32)
    pooled = np.empty((steps, batch, filters * (geo.out_height // 2) * (geo.out_width // 2)), np.uint8)
    channel_of = np.arange(filters)
    seconds = best_time(lambda: conv_lif_pool(ev, *kernels, geo, bias, 0.2, 0.5, True, path, channel_of, pooled),
                        repeat=repeat)
    return 1e9 * seconds / (steps * batch)


def measure(channels: int, filters: int, size: int, slots: int, repeat: int, rng) -> dict:
    from evsim.kernels.conv_paths import pooled_events_work, pooled_work

    out = {"channels": channels, "filters": filters, "size": size}
    for density in EVENT_DENSITIES:
        geo, steps, ev, kernels = layer(channels, filters, size, slots, rng, density)
        out[f"events_{density}_outputs"], out[f"events_{density}_adds"] = pooled_events_work(geo, filters, density)
        out[f"events_{density}_ns_per_slot"] = _time_per_slot(ev, geo, steps, kernels, filters, "events", repeat)
    work = pooled_work(channels, filters, geo.out_height, geo.out_width)
    out.update({"slots": steps * 100, **{f"{k}_outputs": work[k][0] for k in KERNELS},
                **{f"{k}_fmas": work[k][1] for k in KERNELS}})
    for name in KERNELS:  # on the 15 % events, the last of EVENT_DENSITIES
        out[f"{name}_ns_per_slot"] = _time_per_slot(ev, geo, steps, kernels, filters, name, repeat)
    return out


def fit(rows: list[dict], kernel: str) -> tuple[float, float]:
    """``(ns per output computed, ns per multiply-add)`` of one kernel's per-slot time
    (:func:`benchmarks.common.relative_cost_fit`); for ``"events"``, ns per output stepped
    and per 16-lane add, over every density measured."""
    if kernel == "events":
        return relative_cost_fit([(r[f"events_{d}_outputs"], r[f"events_{d}_adds"]) for r in rows
                                  for d in EVENT_DENSITIES],
                                 [r[f"events_{d}_ns_per_slot"] for r in rows for d in EVENT_DENSITIES])
    return relative_cost_fit([(r[f"{kernel}_outputs"], r[f"{kernel}_fmas"]) for r in rows],
                             [r[f"{kernel}_ns_per_slot"] for r in rows])


def picks(rows: list[dict], models: dict) -> tuple[int, int]:
    """How many of the (shape, density) points the models pick the measured fastest
    kernel for, of how many: the dense kernels' times, measured at 15 %, stand at every
    density (they compute every output whatever the input)."""
    right = total = 0
    for r in rows:
        for d in EVENT_DENSITIES:
            modelled = {k: np.dot(models[k], (r[f"{k}_outputs"], r[f"{k}_fmas"])) for k in KERNELS}
            modelled["events"] = np.dot(models["events"], (r[f"events_{d}_outputs"], r[f"events_{d}_adds"]))
            measured = {k: r[f"{k}_ns_per_slot"] for k in KERNELS}
            measured["events"] = r[f"events_{d}_ns_per_slot"]
            right += min(modelled, key=modelled.get) == min(measured, key=measured.get)
            total += 1
    return right, total


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
              + ", ".join(f"{k} {row[f'{k}_ns_per_slot'] / 1e3:6.1f}" for k in KERNELS) + "; events at "
              + ", ".join(f"{d:.0%} {row[f'events_{d}_ns_per_slot'] / 1e3:6.1f}" for d in EVENT_DENSITIES),
              flush=True)
    models = {k: fit(rows, k) for k in ("events",) + KERNELS}
    for name, (per_unit, per_work) in models.items():
        print(f"{name}: {per_unit:.3f} ns per output {'stepped' if name == 'events' else 'computed'}, "
              f"{per_work:.3f} ns per {'add' if name == 'events' else 'multiply-add'}")
    right, total = picks(rows, models)
    print(f"the models pick the fastest kernel for {right} of {total} (shape, density) points")
    save_json(args.json, {"machine": machine(), "rows": rows, "models": models})


if __name__ == "__main__":
    main()
