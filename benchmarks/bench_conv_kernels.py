"""Event against dense paths of the convolution kernels, on the paper's N-MNIST shapes.

Layers (T = 20, batch 100: 2,000 slots): ``conv1`` 2x32x32 -> 15C3 pad 1 (input: count
frames, values 1-3), ``conv2`` 15x16x16 -> 40C3 pad 1 (input: conv1 spikes after AP2,
values 0.25-1). At each input activity (fraction of nonzero cells) every variant of
each kernel is timed in the same round, best of ``--repeat`` after a warm-up call:

- forward currents: ``events`` (row layout), ``csr`` (gather/scatter), ``dense``
  (im2col + GEMM), ``dense_direct`` (the register-blocked direct convolution), and each dense variant again as ``dense_blas1`` with BLAS held to
  one thread (OpenBLAS threads that spin-wait starve Numba's on this shared machine);
  crossovers are against the faster of the two;
- weight gradient: ``events``, ``csr``, ``dense``, ``dense_direct`` (register-blocked
  products of the shifted input and dL/du; dL/du dense, as the LIF backward leaves it);
- input gradient (conv2 only; conv1's input is the data): ``scatter`` and
  ``scatter_csr`` (dL/du with the activity's fraction of nonzeros), ``gather`` and
  ``gather_csr`` (mask with that fraction marked), ``dense`` (GEMM + col2im) and
  ``dense_direct`` (the transposed convolution by the register-blocked direct
  convolution, no im2col).

For each kernel it prints the activity at which the fastest event variant stops
beating the dense one, two ways: ``first`` interpolates the time ratio between the
last measured activity where events win and the first where they lose (one slow
measurement moves it), ``fit`` intersects least-squares lines of time against
activity (the event paths' cost grows with the events, the GEMM's barely), which one
outlier moves less. ``inf``: the event path won at every activity measured, or the
lines do not cross below 100 %. The machine is shared: run it more than once and
report ranges.

Run: python -m benchmarks.bench_conv_kernels [--threads 1,2] [--activities 1,2,5,10,20,30]
[--repeat 3] [--json out.json]; ``--summarize a.json b.json ...`` prints, per thread
count, layer and kernel, the range over runs of each variant's time at each activity
and of the crossovers.
"""
from __future__ import annotations

import argparse
import time

import numba
import numpy as np
from threadpoolctl import threadpool_limits

from benchmarks.common import linear_fit, machine, save_json

N_STEPS, BATCH = 20, 100
LAYERS = {"conv1": dict(channels=2, size=32, filters=15, values=(1.0, 2.0, 3.0)),
          "conv2": dict(channels=15, size=16, filters=40, values=(0.25, 0.5, 0.75, 1.0))}


def build(layer: str, activity: float, seed: int = 0):
    """Input events, block CSR (every kernel stored), dL/du and mask of one layer at ``activity``."""
    from evsim.kernels.conv_geometry import conv_geometry
    from evsim.kernels.events import dense_to_events

    spec = LAYERS[layer]
    rng = np.random.default_rng(seed)
    channels, size, n_filters = spec["channels"], spec["size"], spec["filters"]
    geo = conv_geometry(channels, size, size, 3, 1, 1)
    shape = (N_STEPS, BATCH, geo.n_in)
    x = (rng.random(shape, dtype=np.float32) < activity) * rng.choice(np.float32(spec["values"]), size=shape)
    events = dense_to_events(x.astype(np.float32))
    indptr = (np.arange(channels + 1) * n_filters).astype(np.int32)
    columns = np.tile(np.arange(n_filters, dtype=np.int32), channels)
    data = (rng.integers(-8, 9, (channels * n_filters, 3, 3)) / 64).astype(np.float32)
    n_slots = N_STEPS * BATCH
    n_out = n_filters * geo.out_cells
    grad_u = np.where(rng.random((n_slots, n_out), dtype=np.float32) < activity,
                      rng.standard_normal((n_slots, n_out), dtype=np.float32), np.float32(0))
    mask = (rng.random((n_slots, geo.n_in)) < activity).astype(np.uint8)
    return geo, events, (indptr, columns, data), grad_u, mask


def variants(layer: str, geo, events, csr, grad_u, mask) -> dict:
    """``{kernel: {variant: callable}}`` over preallocated outputs."""
    from evsim.kernels.conv_forward import (conv_currents_csr, conv_currents_dense, conv_currents_direct,
                                            conv_currents_events)
    from evsim.kernels.conv_input_grad import (conv_input_grad_dense, conv_input_grad_gather,
                                               conv_input_grad_direct, conv_input_grad_gather_csr,
                                               conv_input_grad_scatter, conv_input_grad_scatter_csr)
    from evsim.kernels.conv_weight_grad import (conv_weight_grad_csr, conv_weight_grad_dense, conv_weight_grad_direct,
                                                conv_weight_grad_events)

    ev = (events.ptr, events.idx, events.val)
    indptr, columns, data = csr
    currents = np.empty_like(grad_u)
    grad_in = np.empty((grad_u.shape[0], geo.n_in), dtype=np.float32)
    kernels = {
        "forward": {"events": lambda: conv_currents_events(*ev, *csr, geo, currents),
                    "csr": lambda: conv_currents_csr(*ev, *csr, geo, currents),
                    "dense": lambda: conv_currents_dense(*ev, *csr, geo, currents)},
        "weight_grad": {"events": lambda: conv_weight_grad_events(*ev, grad_u, indptr, columns, geo),
                        "csr": lambda: conv_weight_grad_csr(*ev, grad_u, indptr, columns, geo),
                        "dense": lambda: conv_weight_grad_dense(*ev, grad_u, indptr, columns, geo)},
    }
    for fns in kernels.values():  # the GEMM with BLAS on one thread while Numba's kernels use the others
        fns["dense_blas1"] = _one_blas_thread(fns["dense"])
    kernels["forward"]["dense_direct"] = lambda: conv_currents_direct(*ev, *csr, geo, currents)
    kernels["weight_grad"]["dense_direct"] = lambda: conv_weight_grad_direct(*ev, grad_u, indptr, columns, geo)
    if layer == "conv2":
        kernels["input_grad"] = {
            "scatter": lambda: conv_input_grad_scatter(grad_u, *csr, geo, grad_in),
            "scatter_csr": lambda: conv_input_grad_scatter_csr(grad_u, *csr, geo, grad_in),
            "gather": lambda: conv_input_grad_gather(grad_u, mask, *csr, geo, grad_in),
            "gather_csr": lambda: conv_input_grad_gather_csr(grad_u, mask, *csr, geo, grad_in),
            "dense": lambda: conv_input_grad_dense(grad_u, *csr, geo, grad_in),
            "dense_direct": lambda: conv_input_grad_direct(grad_u, *csr, geo, grad_in)}
        kernels["input_grad"]["dense_blas1"] = _one_blas_thread(kernels["input_grad"]["dense"])
    return kernels


def _one_blas_thread(fn):
    def run():
        with threadpool_limits(1, user_api="blas"):
            fn()
    return run


def best_ms(fn, repeat: int) -> float:
    fn()  # warm-up: JIT compilation, first touch of buffers
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * min(times)


def crossover(activities, event_ms, dense_ms) -> float:
    """Activity where event time = dense time, linear in the ratio between the measured
    points; 0 if dense wins at the lowest, inf if the event path wins at the highest."""
    ratio = np.asarray(event_ms) / np.asarray(dense_ms)
    if ratio[0] >= 1:
        return 0.0
    for k in range(1, len(ratio)):
        if ratio[k] >= 1:
            a0, a1 = activities[k - 1], activities[k]
            return a0 + (1 - ratio[k - 1]) * (a1 - a0) / (ratio[k] - ratio[k - 1])
    return float("inf")


def fitted_crossover(activities, event_ms, dense_ms) -> float:
    """Activity where the least-squares lines of event and dense time cross (inf if the
    event line stays below the dense one up to 100 %, 0 if it is above from 0)."""
    ev, de = linear_fit(activities, event_ms), linear_fit(activities, dense_ms)
    below_at = [ev["intercept"] + ev["slope"] * a < de["intercept"] + de["slope"] * a for a in (0.0, 100.0)]
    if below_at[0] and below_at[1]:
        return float("inf")
    if not below_at[0]:
        return 0.0
    return (de["intercept"] - ev["intercept"]) / (ev["slope"] - de["slope"])


def _fastest_dense(row: dict) -> float:
    """The fastest of a round's dense variants (names starting with ``dense``)."""
    return min(ms for name, ms in row.items() if name.startswith("dense"))


def summarize(paths) -> None:
    """Ranges over the runs saved by ``--json`` of every time and crossover."""
    import json

    runs = [json.loads(open(p).read())["runs"] for p in paths]
    keys = sorted({(r["threads"], r["layer"], r["kernel"]) for run in runs for r in run})
    for key in keys:
        entries = [r for run in runs for r in run if (r["threads"], r["layer"], r["kernel"]) == key]
        activities = entries[0]["activities"]
        print(f"threads {key[0]} {key[1]} {key[2]} ({len(entries)} runs), ms min-max:")
        for name in entries[0]["ms"][0]:
            cells = "  ".join(f"{a:g}%: {min(e['ms'][k][name] for e in entries):.0f}-"
                              f"{max(e['ms'][k][name] for e in entries):.0f}" for k, a in enumerate(activities))
            print(f"  {name:12s} {cells}")
        for name in entries[0]["crossover_by_variant"]:
            first = [e["crossover_by_variant"][name] for e in entries]
            fit = [fitted_crossover(activities, [row[name] for row in e["ms"]],
                                    [_fastest_dense(row) for row in e["ms"]])
                   for e in entries]
            print(f"  crossover {name}: first {min(first):.1f}-{max(first):.1f}%, fit {min(fit):.1f}-{max(fit):.1f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    parser.add_argument("--activities", default="1,2,5,10,20,30",
                        help="input activities in %% (default 1,2,5,10,20,30)")
    parser.add_argument("--layers", default="conv1,conv2")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", help="write results as JSON to this file")
    parser.add_argument("--summarize", nargs="+", metavar="JSON", help="print ranges over saved runs and exit")
    args = parser.parse_args()
    if args.summarize:
        summarize(args.summarize)
        return
    activities = [float(a) for a in args.activities.split(",")]
    results = {"machine": machine(), "runs": []}
    for n_threads in (int(t) for t in args.threads.split(",")):
        numba.set_num_threads(n_threads)
        with threadpool_limits(n_threads):
            for layer in args.layers.split(","):
                table: dict = {}
                for activity in activities:
                    built = build(layer, activity / 100)
                    for kernel, fns in variants(layer, *built).items():
                        row = {name: best_ms(fn, args.repeat) for name, fn in fns.items()}
                        table.setdefault(kernel, []).append(row)
                        cells = "  ".join(f"{name} {ms:7.1f}" for name, ms in row.items())
                        print(f"threads {n_threads} {layer} {activity:4.0f}% {kernel:12s} {cells}  ms", flush=True)
                for kernel, rows in table.items():
                    names = [n for n in rows[0] if not n.startswith("dense")]
                    fastest = [min(r[n] for n in names) for r in rows]
                    dense = [_fastest_dense(r) for r in rows]
                    cross = crossover(activities, fastest, dense)
                    fitted = {n: fitted_crossover(activities, [r[n] for r in rows], dense) for n in names}
                    per_variant = {n: crossover(activities, [r[n] for r in rows], dense)
                                   for n in names}
                    text = ", ".join(f"{n} first {c:.1f}% fit {fitted[n]:.1f}%" for n, c in per_variant.items())
                    print(f"CROSSOVER threads {n_threads} {layer} {kernel}: event paths win below {cross:.1f}% "
                          f"({text})", flush=True)
                    results["runs"].append({"threads": n_threads, "layer": layer, "kernel": kernel,
                                            "activities": activities, "ms": rows, "crossover": cross,
                                            "crossover_by_variant": per_variant,
                                            "fitted_crossover_by_variant": fitted})
    save_json(args.json, results)


if __name__ == "__main__":
    main()
