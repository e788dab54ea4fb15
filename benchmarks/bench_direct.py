"""Direct (analog) input, as for CIFAR-10: evsim's static drive vs the same input as events
of every step, and snnTorch on PyTorch CPU.

Run::

    python -m benchmarks.bench_direct --json bench_direct.json

What is measured
----------------
The cifar10 preset's MLP, 3072-1024-512-10 LIF, T = 20, batch 100, inputs like
normalised CIFAR-10 images (standard normal values, ``--zeros`` of them 0): the same
values at every step. Throughput is samples/s = batch / (best-of-N wall time of one
batch) for training (forward, MSE on rates, BPTT, Adam) and inference (forward).

Engines, all starting from the same weights (``bench_train.initial_network``):

``evsim``          what ``Trainer`` does: ``encode_events(x, "direct")`` is a
                   :class:`~evsim.kernels.events.StaticDrive`; the first layer's current is
                   one product per sample, its weight gradient one product with dL/du
                   summed over the steps.
``evsim, events``  the same network fed the input as events of all T steps
                   (``dense_to_events`` of the ``[T, B, 3072]`` array, timed): evsim
                   before the static drive.
``snntorch``       snnTorch (``bench_train.build_snntorch``) on the dense ``[T, B, 3072]``
                   float32 array, one ``nn.Linear`` per layer and step. Needs
                   ``pip install -e '.[bench]'``; skipped with a notice without it.

All engines run in this one process, alternating round by round (best of ``--repeat``);
Numba and PyTorch get ``--threads`` threads and NumPy's OpenBLAS is held to one, as
``Trainer.fit`` does (PyTorch's matrix products do not go through it). PyTorch's idle
pool may cost evsim a little here (``bench_train`` runs engines in separate processes for
that reason), so the evsim ratios are if anything low.
"""
from __future__ import annotations

import argparse
import time

import numba
import numpy as np
from threadpoolctl import threadpool_limits

from benchmarks.bench_train import SNNTORCH_MISSING, build_snntorch, initial_network, load_snntorch
from benchmarks.common import machine, save_json
from evsim.data.encoding import encode_events
from evsim.kernels.events import dense_to_events
from evsim.loss import mse_rate
from evsim.neuron import LIFParameters
from evsim.optim import Optimizer

SIZES = (3072, 1024, 512, 10)
LR = 1e-3


def evsim_engine(sizes, n_steps: int, seed: int, static: bool):
    """``(train_step, infer)`` of an evsim network fed a static drive or events of every step."""
    network = initial_network(sizes, LIFParameters(), seed)
    optimizer = Optimizer("adam", LR)

    def drive(x):
        if static:
            return encode_events(x, "direct", n_steps, None)
        return dense_to_events(np.ascontiguousarray(np.broadcast_to(x, (n_steps,) + x.shape)))

    def train_step(x, labels):
        counts, traces = network.forward(drive(x))
        _, grad_counts = mse_rate(counts, labels, n_steps)
        grads = network.backward(traces, grad_counts)
        optimizer.step(network.parameters(grads), LR)

    def infer(x):
        return network.forward(drive(x))[0]

    return train_step, infer


def best_of(fns: dict, repeat: int) -> dict:
    """Best seconds of each ``fns[name]()`` over ``repeat`` rounds, alternating names within a round."""
    best = {name: float("inf") for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=numba.config.NUMBA_NUM_THREADS)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--time-steps", type=int, default=20)
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--zeros", type=float, default=0.0, help="fraction of input values that are 0")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    sizes = tuple(int(s) for s in args.sizes.split(","))
    rng = np.random.default_rng(args.seed)
    x = rng.standard_normal((args.batch, sizes[0])).astype(np.float32)
    x *= rng.random(x.shape) >= args.zeros
    labels = rng.integers(0, sizes[-1], args.batch)
    dense = np.ascontiguousarray(np.broadcast_to(x, (args.time_steps,) + x.shape))

    numba.set_num_threads(args.threads)
    engines = {"evsim": evsim_engine(sizes, args.time_steps, args.seed, static=True),
               "evsim, events": evsim_engine(sizes, args.time_steps, args.seed, static=False)}
    modules = load_snntorch()
    if modules is None:
        print(SNNTORCH_MISSING)
    else:
        modules[0].set_num_threads(args.threads)
        _, torch_train, torch_infer = build_snntorch(modules, initial_network(sizes, LIFParameters(), args.seed),
                                                     LIFParameters())
        engines["snntorch"] = (lambda _, ls: torch_train(dense, ls), lambda _: torch_infer(dense))
    with threadpool_limits(1, "blas"):
        for train_step, infer in engines.values():  # warm-up: compilation, first allocations
            train_step(x, labels)
            infer(x)
        train = best_of({name: (lambda f=f: f[0](x, labels)) for name, f in engines.items()}, args.repeat)
        inference = best_of({name: (lambda f=f: f[1](x)) for name, f in engines.items()}, args.repeat)

    rows = [{"engine": name, "train_samples_s": args.batch / train[name],
             "infer_samples_s": args.batch / inference[name]} for name in engines]
    print(f"{'-'.join(map(str, sizes))} LIF, T = {args.time_steps}, batch {args.batch}, direct input "
          f"({args.zeros:.0%} zeros), {args.threads} threads, best of {args.repeat}")
    print("| engine | train samples/s | infer samples/s | evsim / engine, train | evsim / engine, infer |")
    print("| --- | --- | --- | --- | --- |")
    base = rows[0]
    for row in rows:
        print(f"| {row['engine']} | {row['train_samples_s']:,.0f} | {row['infer_samples_s']:,.0f} | "
              f"{base['train_samples_s'] / row['train_samples_s']:.2f}x | "
              f"{base['infer_samples_s'] / row['infer_samples_s']:.2f}x |")
    payload = {"config": vars(args), "machine": machine(), "rows": rows}
    save_json(args.json, payload)
    return payload


if __name__ == "__main__":
    main()
