"""Propagation paths vs dense BLAS for one 2312 -> 800 layer, T = 20, batch 64.

For input activity {1, 2, 5, 10 %} x synapse density {100, 50, 10 %}, times:
- ``rows``: event-driven row accumulation + LIF (evsim),
- ``csr``: event-driven CSR scatter + LIF (evsim),
- ``blas``: dense ``x @ W`` on the [T*B, 2312] input (the matmul alone, no LIF,
  which flatters BLAS).
Ratios ``blas / path`` > 1 mean the event-driven path is faster.

Run: python benchmarks/bench_propagation.py [--json out.json]
"""
from __future__ import annotations

import argparse

import numpy as np

from benchmarks.common import best_time, machine, save_json, spike_input
from evsim.kernels.events import dense_to_events
from evsim.layers import SparseLinear
from evsim.neuron import LIFParameters
from evsim.synapses import SynapseStore

N_IN, N_OUT, T, B = 2312, 800, 20, 64


def run(activities=(0.01, 0.02, 0.05, 0.10), densities=(1.0, 0.5, 0.1), repeat=5) -> list[dict]:
    rng = np.random.default_rng(0)
    lif = LIFParameters()
    rows = []
    for density in densities:
        store = SynapseStore.uniform(N_IN, N_OUT, rng, density)
        dense_w = store.to_dense()
        layers = {path: SparseLinear(store, path=path) for path in ("rows", "csr")}
        for activity in activities:
            x = spike_input(rng, T, B, N_IN, activity)
            events = dense_to_events(x)
            x2 = x.reshape(T * B, N_IN)
            t_blas = best_time(lambda: x2 @ dense_w, repeat)
            row = {"activity": activity, "density": density, "events": events.count, "blas_ms": 1e3 * t_blas}
            for path, layer in layers.items():
                t = best_time(lambda: layer.forward(events, lif), repeat)
                row[f"{path}_ms"] = 1e3 * t
                row[f"{path}_speedup"] = t_blas / t
            rows.append(row)
            print(f"activity {activity:5.0%}  density {density:5.0%}  blas {row['blas_ms']:7.2f} ms  "
                  f"rows {row['rows_ms']:7.2f} ms ({row['rows_speedup']:5.1f}x)  "
                  f"csr {row['csr_ms']:7.2f} ms ({row['csr_speedup']:5.1f}x)", flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| activity | synapse density | BLAS x@W (ms) | rows (ms) | rows vs BLAS | csr (ms) | csr vs BLAS |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['activity']:.0%} | {r['density']:.0%} | {r['blas_ms']:.2f} | {r['rows_ms']:.2f} | "
                     f"{r['rows_speedup']:.1f}x | {r['csr_ms']:.2f} | {r['csr_speedup']:.1f}x |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write results as JSON to this file")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rows = run(repeat=args.repeat)
    print()
    print(markdown(rows))
    save_json(args.json, {"benchmark": "propagation", "machine": machine(), "rows": rows})


if __name__ == "__main__":
    main()
