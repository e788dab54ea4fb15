"""The pooling kernels on conv1's output of the paper's N-MNIST network (15x32x32 spike
maps, 2x2 windows; T = 20, batch 100): average and max pooling forward on events,
backward (dense, and average pooling masked), and for scale the conversion of the
spike maps to events. Best of 5 after a warm-up call.

Run: python -m benchmarks.bench_pool_kernels [--threads 1,2] [--activities 5,10,20]
"""
from __future__ import annotations

import argparse
import time

import numba
import numpy as np


def best_ms(fn, repeat: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * min(times)


def main() -> None:
    from evsim.kernels.avg_pool import avg_pool_backward, avg_pool_events
    from evsim.kernels.conv_geometry import pool_geometry
    from evsim.kernels.events import dense_to_events
    from evsim.kernels.max_pool import max_pool_backward, max_pool_events

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--activities", default="5,10,20", help="spiking cells in %% (default 5,10,20)")
    args = parser.parse_args()
    geo = pool_geometry(15, 32, 32, 2)
    rng = np.random.default_rng(0)
    for n_threads in (int(t) for t in args.threads.split(",")):
        numba.set_num_threads(n_threads)
        for activity in (float(a) / 100 for a in args.activities.split(",")):
            spikes = (rng.random((20, 100, geo.n_in)) < activity).astype(np.uint8)
            ev = dense_to_events(spikes)
            grad_out = rng.standard_normal((2000, geo.n_out)).astype(np.float32)
            mask = (rng.random((2000, geo.n_in)) < activity).astype(np.uint8)
            ptr, idx, _, argmax = max_pool_events(ev.ptr, ev.idx, ev.val, geo)
            times = {"avg forward": best_ms(lambda: avg_pool_events(ev.ptr, ev.idx, ev.val, geo)),
                     "avg backward": best_ms(lambda: avg_pool_backward(grad_out, geo)),
                     "avg backward masked": best_ms(lambda: avg_pool_backward(grad_out, geo, mask)),
                     "max forward": best_ms(lambda: max_pool_events(ev.ptr, ev.idx, ev.val, geo)),
                     "max backward": best_ms(lambda: max_pool_backward(grad_out, ptr, idx, argmax, geo)),
                     "spikes to events": best_ms(lambda: dense_to_events(spikes))}
            cells = ", ".join(f"{name} {ms:.1f}" for name, ms in times.items())
            print(f"threads {n_threads} spikes {activity:.0%} ({ev.count} events): {cells} ms", flush=True)


if __name__ == "__main__":
    main()
