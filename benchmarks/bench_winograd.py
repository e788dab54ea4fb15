"""The two dense one-pass forwards of a stride-1 3 x 3 convolution: the register-blocked
direct convolution against Winograd's F(2x2, 3x3), over a grid of layer shapes.

Each shape (input channels C, filters F, map side H, pad 1) gets input with 15 % of cells
nonzero (values 0.25-1, as conv2 of the paper's N-MNIST network receives), ``--slots``
slots (samples x steps), and both kernels timed in the same round without the membrane
(inference) and recording it (training), best of ``--repeat`` after a warm-up call.
Per kernel, the per-slot time is fitted by least squares of the relative error to ``a * units + b *
multiply_adds`` (the 16-lane multiply-adds each kernel does a slot; units = F*Ho*Wo),
the model :func:`evsim.kernels.conv_paths.forward_path` uses to choose between them.
The machine is shared: run it more than once.

Run: python -m benchmarks.bench_winograd [--slots 600] [--repeat 3] [--json out.json]
"""
from __future__ import annotations

import argparse

import numpy as np

from benchmarks.common import best_time, machine, relative_cost_fit, save_json

# (C, F, H): the paper's two layers, then wider and narrower ones around them.
SHAPES = [(2, 15, 32), (15, 40, 16), (4, 16, 32), (8, 16, 16), (15, 40, 8), (32, 32, 8), (40, 40, 16), (15, 20, 24),
          (64, 64, 8), (3, 8, 34)]


def layer(channels: int, filters: int, size: int, slots: int, rng, density: float = 0.15):
    """``(geometry, steps, events, (indptr, columns, data))``: a 3 x 3 convolution (pad 1)
    of ``channels`` -> ``filters`` on ``size x size`` maps, every kernel stored, and input
    events of about ``slots`` slots (batches of 100) with ``density`` of cells nonzero."""
    from evsim.kernels.conv_geometry import conv_geometry
    from evsim.kernels.events import dense_to_events

    geo = conv_geometry(channels, size, size, 3, 1, 1)
    batch = 100
    steps = max(1, slots // batch)
    shape = (steps, batch, geo.n_in)
    x = (rng.random(shape, dtype=np.float32) < density) * rng.choice(np.float32([0.25, 0.5, 0.75, 1.0]), size=shape)
    ev = dense_to_events(x.astype(np.float32))
    weight = rng.normal(0, 0.5 / np.sqrt(9 * channels), (filters, channels * 9)).astype(np.float32)
    indptr = (np.arange(channels + 1) * filters).astype(np.int32)  # every kernel stored
    columns = np.tile(np.arange(filters, dtype=np.int32), channels)
    data = np.ascontiguousarray(weight.reshape(filters, channels, 3, 3).transpose(1, 0, 2, 3)).reshape(-1, 3, 3)
    return geo, steps, ev, (indptr, columns, data)


def measure(channels: int, filters: int, size: int, slots: int, repeat: int, rng) -> dict:
    from evsim.kernels.conv_direct import direct_multiply_adds
    from evsim.kernels.conv_lif import conv_lif_direct, conv_lif_winograd
    from evsim.kernels.conv_winograd import multiply_adds

    geo, steps, ev, (indptr, columns, data) = layer(channels, filters, size, slots, rng)
    batch = 100
    bias = np.zeros(filters, np.float32)
    spikes = np.empty((steps, batch, filters * geo.out_cells), np.uint8)
    u = np.empty(spikes.shape, np.float32)
    out = {"channels": channels, "filters": filters, "size": size, "slots": steps * batch,
           "units": filters * geo.out_cells,
           "direct_fmas": direct_multiply_adds(channels, 3, filters, geo.out_height, geo.out_width),
           "winograd_fmas": multiply_adds(channels, filters, geo.out_height, geo.out_width)}
    for name, kernel in (("direct", conv_lif_direct), ("winograd", conv_lif_winograd)):
        for mode, membrane in (("infer", None), ("record", u)):
            seconds = best_time(lambda: kernel(ev.ptr, ev.idx, ev.val, indptr, columns, data, geo,
                                               bias, 0.2, 0.5, True, membrane, spikes), repeat=repeat)
            out[f"{name}_{mode}_ns_per_slot"] = 1e9 * seconds / (steps * batch)
    return out


def fit(rows: list[dict], kernel: str, mode: str) -> tuple[float, float]:
    """``(ns per unit, ns per multiply-add)`` of one kernel's per-slot time
    (:func:`benchmarks.common.relative_cost_fit`)."""
    return relative_cost_fit([(r["units"], r[f"{kernel}_fmas"]) for r in rows],
                             [r[f"{kernel}_{mode}_ns_per_slot"] for r in rows])


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
        print(f"C {channels:2d} F {filters:2d} H {size:2d}: us per slot, inference direct "
              f"{row['direct_infer_ns_per_slot'] / 1e3:6.1f} winograd {row['winograd_infer_ns_per_slot'] / 1e3:6.1f}; "
              f"recording direct {row['direct_record_ns_per_slot'] / 1e3:6.1f} winograd "
              f"{row['winograd_record_ns_per_slot'] / 1e3:6.1f}", flush=True)
    models = {f"{k}_{m}": fit(rows, k, m) for k in ("direct", "winograd") for m in ("infer", "record")}
    for name, (per_unit, per_fma) in models.items():
        print(f"{name}: {per_unit:.3f} ns per unit, {per_fma:.3f} ns per multiply-add")
    for mode in ("infer", "record"):
        right = 0
        for r in rows:
            d = np.dot(models[f"direct_{mode}"], (r["units"], r["direct_fmas"]))
            w = np.dot(models[f"winograd_{mode}"], (r["units"], r["winograd_fmas"]))
            right += (w < d) == (r[f"winograd_{mode}_ns_per_slot"] < r[f"direct_{mode}_ns_per_slot"])
        print(f"{mode}: the models pick the faster kernel for {right} of {len(rows)} shapes")
    scale = table_scale(rows)
    per_unit, per_fma = models["winograd_record"]
    print(f"on this machine's table's scale (its direct model over this run's direct times, x{scale:.3f}): "
          f"winograd_record {scale * per_unit:.3f} ns per unit, {scale * per_fma:.3f} ns per multiply-add")
    save_json(args.json, {"machine": machine(), "rows": rows, "models": models, "table_scale": scale})


def table_scale(rows: list[dict]) -> float:
    """The geometric mean over the shapes of this machine's path table's direct model
    (:data:`evsim.kernels.conv_paths.HOST`) over this run's recording direct times: a
    kernel's fit times it is on the scale of the table's other constants, measured in
    other runs and minutes. The direct kernel is the yardstick: when only Winograd's
    changes, its constants are refitted against the direct one's, which stay."""
    from evsim.kernels.conv_paths import HOST

    ratios = [(HOST.direct_ns_per_unit * r["units"] + HOST.direct_ns_per_fma * r["direct_fmas"])
              / r["direct_record_ns_per_slot"] for r in rows]
    return float(np.exp(np.mean(np.log(ratios))))


if __name__ == "__main__":
    main()
