"""Overhead of exact SOP counting during evaluation: forward vs forward + count.

2312-800-10 network (N-MNIST-sized), T = 20, batch 250, input activity {2, 5, 10 %}.
Ratios are measured in one run, interleaved.

Run: python -m benchmarks.bench_energy_overhead [--json out.json]
"""
from __future__ import annotations

import argparse

import numpy as np

from benchmarks.common import best_time, machine, save_json, spike_input
from evsim.energy import count_network
from evsim.kernels.events import dense_to_events
from evsim.network import Network


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    net = Network.mlp([2312, 800, 10], rng)
    rows = []
    for activity in (0.02, 0.05, 0.10):
        events = dense_to_events(spike_input(rng, 20, 250, 2312, activity))

        def forward():
            return net.forward(events)

        def forward_and_count():
            counts, traces = net.forward(events)
            return count_network(net, traces, False, counts.shape[0])

        t_plain = best_time(forward, args.repeat)
        t_count = best_time(forward_and_count, args.repeat)
        overhead = t_count / t_plain - 1
        rows.append({"activity": activity, "forward_ms": 1e3 * t_plain, "forward_count_ms": 1e3 * t_count,
                     "overhead": overhead})
        print(f"activity {activity:4.0%}: forward {1e3 * t_plain:7.1f} ms, with counting {1e3 * t_count:7.1f} ms, "
              f"overhead {100 * overhead:+.1f} %", flush=True)
    save_json(args.json, {"benchmark": "energy_overhead", "machine": machine(), "rows": rows})


if __name__ == "__main__":
    main()
