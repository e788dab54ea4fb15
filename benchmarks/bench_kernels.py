"""The hot steps of one training batch of the 2312-800 layer, each timed alone, and the
compute ceiling of the row sums.

Steps (T = 20, batch 64, binary input at ``--activity``): converting the dense input to
events (``events``), making the same events from frames stored as events, as the
event loaders keep them (``frame_events``; not timed against checkouts that predate
them), the layer's forward pass (row sums + LIF + output events), its weight gradient
(``backward`` without input gradient), grouping events by input row, and one Adam step
over its 1.85 M weights. Rounds run every step once in turn, so the machine's stalls
hit all of them alike; the best and the median over rounds are reported.

``ceiling`` is the forward pass on the same number of events with every index folded
into the first 16 input rows: the rows it sums stay in L1, so it measures what the
row-sum kernel can compute when memory costs nothing.

To compare with another commit, run the same script against that checkout's package
(only public APIs are used, so older checkouts work)::

    git worktree add /tmp/base REV
    python -m benchmarks.bench_kernels --evsim /tmp/base

Run: python -m benchmarks.bench_kernels [--threads 1,2] [--activity 0.05] [--json out.json]
"""
from __future__ import annotations

import argparse
import sys
import time

import numba
import numpy as np

from benchmarks.common import machine, save_json, spike_input, stored_frames

N_IN, N_OUT, N_STEPS, BATCH = 2312, 800, 20, 64


def build(activity: float, seed: int = 0):
    """The layer, its input events, a forward trace and the callables to time."""
    from evsim.kernels.events import Events, dense_to_events, group_by_row
    from evsim.layers import BackwardRequest, SparseLinear
    from evsim.neuron import LIFParameters
    from evsim.optim import Optimizer

    rng = np.random.default_rng(seed)
    layer = SparseLinear.uniform(N_IN, N_OUT, rng)
    lif = LIFParameters()
    x = spike_input(rng, N_STEPS, BATCH, N_IN, activity)
    events = dense_to_events(x)
    folded = Events(events.ptr, (events.idx % 16).astype(np.int32), events.val, N_STEPS, BATCH)
    _, trace = layer.forward(events, lif)
    grad_spikes = rng.standard_normal(trace.u.shape).astype(np.float32)
    layer.backward(trace, grad_spikes, lif, BackwardRequest(input_grad=False))
    params = [(layer.store.data, np.full_like(layer.store.data, 1e-3), layer.store.state)]
    optimizer = Optimizer("adam", 1e-3)
    frames = stored_frames(x)
    steps = {
        "events": lambda: dense_to_events(x),
        "frame_events": None if frames is None else frames.events,
        "forward": lambda: layer.forward(events, lif),
        "weight_grad": lambda: layer.backward(trace, grad_spikes, lif, BackwardRequest(input_grad=False)),
        "group_by_row": lambda: group_by_row(events, N_IN),
        "adam": lambda: optimizer.step(params),
        "ceiling": lambda: layer.forward(folded, lif),
    }
    return steps, events.count


def measure(n_threads: int, activity: float, rounds: int) -> dict:
    numba.set_num_threads(n_threads)
    steps, n_events = build(activity)
    steps = {name: fn for name, fn in steps.items() if fn is not None}
    for fn in steps.values():  # compile and warm up
        fn()
    seconds = {name: [] for name in steps}
    for _ in range(rounds):
        for name, fn in steps.items():
            start = time.perf_counter()
            fn()
            seconds[name].append(time.perf_counter() - start)
    row = {"threads": n_threads, "activity": activity, "events": n_events, "adds": n_events * N_OUT}
    for name, s in seconds.items():
        row[f"{name}_ms"] = 1e3 * min(s)
        row[f"{name}_median_ms"] = 1e3 * float(np.median(s))
    for name in ("forward", "weight_grad", "ceiling"):
        row[f"{name}_gadds_per_core"] = row["adds"] / (row[f"{name}_ms"] * 1e-3) / 1e9 / n_threads
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    parser.add_argument("--activity", type=float, default=0.05, help="fraction of active input cells (default 0.05)")
    parser.add_argument("--rounds", type=int, default=30, help="rounds of every step (default 30)")
    parser.add_argument("--evsim", help="import evsim from this checkout instead (to compare commits)")
    parser.add_argument("--json", help="write results as JSON to this file")
    args = parser.parse_args(argv)
    if not 0 < args.activity <= 1:
        parser.error(f"--activity must be in (0, 1], got {args.activity}")
    if args.evsim:
        sys.path.insert(0, args.evsim)
    import evsim

    print(f"evsim from {evsim.__path__[0]}; {N_IN}-{N_OUT} layer, T = {N_STEPS}, batch {BATCH}, "
          f"activity {args.activity:.0%}, best / median of {args.rounds} rounds (ms)")
    rows = []
    names = ("events", "frame_events", "forward", "weight_grad", "group_by_row", "adam", "ceiling")
    print("| threads | " + " | ".join(names) + " | forward G adds/s/core | weight grad G adds/s/core | ceiling G adds/s/core |")
    print("| --- " * (len(names) + 4) + "|")
    for n_threads in (int(t) for t in args.threads.split(",")):
        r = measure(n_threads, args.activity, args.rounds)
        rows.append(r)
        cells = " | ".join(f"{r[f'{n}_ms']:.2f} / {r[f'{n}_median_ms']:.2f}" if f"{n}_ms" in r else "n/a"
                           for n in names)
        print(f"| {n_threads} | {cells} | {r['forward_gadds_per_core']:.1f} | {r['weight_grad_gadds_per_core']:.1f} | "
              f"{r['ceiling_gadds_per_core']:.1f} |", flush=True)
    save_json(args.json, {"benchmark": "kernels", "machine": machine(), "evsim": evsim.__path__[0], "rows": rows})


if __name__ == "__main__":
    main()
