"""BPTT memory: what a forward pass keeps for the backward pass, against T, batch,
neurons and synapses.

The trace of a layer is its input events plus the membrane (float32) and spikes
(uint8) of its alive neurons at every step: ``T x B x N_alive x 5`` bytes plus the
events, never anything per synapse. This benchmark measures the retained trace
bytes and the peak of Python-visible allocations (tracemalloc) of one training step
over a grid of T, batch, hidden size and synapse density, and fits
``bytes = a * T*B*N + b * events + c * synapses`` (N = all neurons): BPTT state is
the ``a`` term; the ``c`` term (one gradient per synapse) does not grow with T.

Run: python -m benchmarks.bench_memory [--json out.json]
"""
from __future__ import annotations

import argparse
import itertools
import tracemalloc

import numpy as np

from benchmarks.common import machine, save_json, spike_input
from evsim.layers import SparseLinear
from evsim.loss import mse_rate
from evsim.network import Network
from evsim.neuron import LIFParameters

N_IN, N_OUT, ACTIVITY = 2312, 10, 0.05


def trace_bytes(traces) -> int:
    """Bytes the forward pass retains for BPTT (events in, membranes, spikes)."""
    total = 0
    for trace in traces:
        total += trace.u.nbytes + trace.spikes.nbytes
        total += sum(a.nbytes for a in (trace.events_in.ptr, trace.events_in.idx, trace.events_in.val))
    return total


def measure(n_steps: int, batch: int, hidden: int, density: float, rng) -> dict:
    net = Network([SparseLinear.uniform(N_IN, hidden, rng, density), SparseLinear.uniform(hidden, N_OUT, rng)],
                  LIFParameters())
    x = spike_input(rng, n_steps, batch, N_IN, ACTIVITY)
    tracemalloc.start()
    counts, traces = net.forward(x)
    retained = trace_bytes(traces)
    _, grad = mse_rate(counts, rng.integers(0, N_OUT, batch), n_steps)
    net.backward(traces, grad)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"T": n_steps, "batch": batch, "hidden": hidden, "density": density, "synapses": net.synapses,
            "neurons": hidden + N_OUT, "events": sum(t.events_in.count for t in traces),
            "trace_bytes": retained, "peak_bytes": peak,
            "trace_bytes_per_TBN": retained / (n_steps * batch * (hidden + N_OUT))}


def fit(rows: list[dict], key: str) -> dict:
    """Least squares ``y = a * T*B*N + b * events + c * synapses``; coefficients in bytes and R^2.

    BPTT memory is the ``a`` term; ``b`` is the event lists; ``c`` is one gradient per
    synapse (independent of T: nothing per synapse is kept per time step).
    """
    x = np.array([[r["T"] * r["batch"] * r["neurons"], r["events"], r["synapses"]] for r in rows], float)
    y = np.array([r[key] for r in rows], float)
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    r2 = 1 - float(np.sum((y - x @ coef) ** 2) / np.sum((y - y.mean()) ** 2))
    return {"bytes_per_TBN": float(coef[0]), "bytes_per_event": float(coef[1]), "bytes_per_synapse": float(coef[2]),
            "r2": r2}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write results as JSON to this file")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    print("| T | batch | hidden | density | synapses | trace (MiB) | peak (MiB) | trace bytes / (T*B*N) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for n_steps, batch, hidden, density in itertools.product((10, 20, 40), (32, 64), (400, 800, 1600), (1.0, 0.25)):
        r = measure(n_steps, batch, hidden, density, rng)
        rows.append(r)
        print(f"| {n_steps} | {batch} | {hidden} | {density:.0%} | {r['synapses']} | {r['trace_bytes'] / 2**20:.2f} | "
              f"{r['peak_bytes'] / 2**20:.2f} | {r['trace_bytes_per_TBN']:.2f} |", flush=True)
    fits = {key: fit(rows, key) for key in ("trace_bytes", "peak_bytes")}
    # Same T, B, N at 100 % and 25 % synapses: memory must not follow the synapse count.
    pairs = [(a, b) for a in rows for b in rows if a["density"] == 1.0 and b["density"] == 0.25
             and (a["T"], a["batch"], a["hidden"]) == (b["T"], b["batch"], b["hidden"])]
    ratio = float(np.mean([a["trace_bytes"] / b["trace_bytes"] for a, b in pairs]))
    for key, f in fits.items():
        print(f"{key} = {f['bytes_per_TBN']:.2f} B x T*B*N + {f['bytes_per_event']:.2f} B x events + "
              f"{f['bytes_per_synapse']:.2f} B x synapses  (R^2 = {f['r2']:.4f})")
    print(f"trace bytes at 100 % vs 25 % synapses (same T, B, N): {ratio:.3f}x (4x synapses)")
    save_json(args.json, {"benchmark": "memory", "machine": machine(), "rows": rows, "fits": fits,
                          "dense_vs_quarter_synapses": ratio})


if __name__ == "__main__":
    main()
