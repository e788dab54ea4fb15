"""The paper's N-MNIST convolutional SNN: evsim against the PyTorch step-loop version, in one run.

2x32x32-15C3-AP2-40C3-AP2-300-10, T = 20, batch 100, input with the activity of real
N-MNIST frames (``--activity``, 6 % of cells nonzero, counts 1-3). Training (forward +
BPTT + Adam) and inference samples/s at each thread count (inference: the output counts
by ``Network.predict``; also ``forward(record=False)``, which keeps the events and spikes
of every layer for counting operations, as evaluation does), for

- evsim with every synapse,
- evsim with the structure SD-SNN typically leaves (65 % of the FC-300 neurons and 10 %
  of the 40 second-layer filters dead; how much faster it can be at most, removing its
  dead units' work exactly, is what ``benchmarks.bench_conv_limits`` measures),
- the PyTorch network of ``benchmarks/torch_conv.py`` (the authors' code: a Python loop
  over time steps), when torch is installed, and the same network in snnTorch, when
  snnTorch is installed too.

BLAS is held to one thread for evsim, as training does (``evsim.train``). The first
evsim batch's time is reported as the JIT compile cost (kernels are cached on disk
after the first run, so the cost shows in a fresh checkout). The contestants are timed
in rounds, one batch of each in turn (:func:`interleaved`), best of ``--batches``:
machines are shared and noisy, so compare ratios within one run.

Run: python -m benchmarks.bench_conv [--threads 1,2] [--batches 3] [--json out.json]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import time
from pathlib import Path

import numba
import numpy as np
from threadpoolctl import threadpool_limits

import evsim

SPEC = "2x32x32-15C3-AP2-40C3-AP2-300-10"
N_STEPS, BATCH = 20, 100


def frames(rng: np.random.Generator, activity: float) -> np.ndarray:
    """Input ``[T, B, 2048]`` with ``activity`` of cells nonzero, counts 1-3."""
    shape = (N_STEPS, BATCH, 2048)
    return ((rng.random(shape) < activity) * rng.integers(1, 4, shape)).astype(np.float32)


def pruned(network: evsim.Network, rng: np.random.Generator) -> evsim.Network:
    """The structure SD-SNN typically leaves: 65 % of FC-300 and 10 % of conv2's filters dead."""
    conv2, fc1 = network.layers[2], network.layers[4]
    conv2.kill(rng.choice(conv2.filters, 4, replace=False))
    fc1.kill(rng.choice(fc1.n_out, 195, replace=False))
    return network


def evsim_steps(network: evsim.Network, batches: list[np.ndarray], rng) -> tuple[dict, dict]:
    """``(steps, first)``: ``{"train", "inference", "inference_traced"}`` -> ``step(k)`` on
    timed batch ``k`` (``batches[k + 1]``), after the first batch of each has run, and
    those first calls' seconds (the JIT compile cost on an empty cache)."""
    optimizer = evsim.Optimizer("adam", 1e-3)
    events = [evsim.dense_to_events(x) for x in batches]
    labels = rng.integers(0, 10, BATCH)

    def train(drive):
        counts, traces = network.forward(drive)
        grads = network.backward(traces, evsim.mse_rate(counts, labels, N_STEPS)[1])
        optimizer.step(network.parameters(grads))

    first = {}
    start = time.perf_counter()
    train(events[0])
    first["first_batch_s"] = time.perf_counter() - start
    # Inference: output counts by Network.predict (fused convolution-LIF-pooling, what
    # PyTorch's inference also gives); "traced": forward(record=False), which also keeps
    # every layer's events and spikes for counting operations.
    start = time.perf_counter()
    network.predict(events[0])
    first["first_predict_s"] = time.perf_counter() - start
    network.forward(events[0], record=False)
    steps = {"train": lambda k: train(events[k + 1]), "inference": lambda k: network.predict(events[k + 1]),
             "inference_traced": lambda k: network.forward(events[k + 1], record=False)}
    return steps, first


def interleaved(contestants: dict[str, dict], n_batches: int) -> dict[str, dict]:
    """Best and median samples/s of every contestant's steps, timed in rounds: round ``k``
    runs batch ``k`` of each contestant's training in turn, then of each one's inference
    (and so on), so that every contestant meets the machine's slow and fast minutes
    alike (one after the other, a neighbour's load moved one contestant's time by 1.5x
    and not the other's). evsim's system time and page faults are counted per step."""
    times = {name: {step: [] for step in steps} for name, steps in contestants.items()}
    usage = {name: {step: [0.0, 0] for step in steps} for name, steps in contestants.items()}
    step_names = list(dict.fromkeys(step for steps in contestants.values() for step in steps))
    for k in range(n_batches):
        for step in step_names:
            for name, steps in contestants.items():
                if step in steps:
                    before = resource.getrusage(resource.RUSAGE_SELF)
                    start = time.perf_counter()
                    steps[step](k)
                    times[name][step].append(time.perf_counter() - start)
                    after = resource.getrusage(resource.RUSAGE_SELF)
                    usage[name][step][0] += after.ru_stime - before.ru_stime
                    usage[name][step][1] += after.ru_minflt - before.ru_minflt
    out = {}
    for name, by_step in times.items():
        out[name] = {}
        for step, seconds in by_step.items():
            out[name][f"{step}_samples_s_best"] = BATCH / min(seconds)
            out[name][f"{step}_samples_s_median"] = BATCH / float(np.median(seconds))
            # System time is the kernel's work for the process: mostly zeroing fresh pages.
            out[name][f"{step}_system_ms_per_batch"] = 1e3 * usage[name][step][0] / n_batches
            out[name][f"{step}_page_faults_per_batch"] = usage[name][step][1] / n_batches
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--batches", type=int, default=3, help="timed batches after the first (default 3)")
    parser.add_argument("--activity", type=float, default=0.06)
    parser.add_argument("--json")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    batches = [frames(rng, args.activity) for _ in range(args.batches + 1)]
    have_torch = importlib.util.find_spec("torch") is not None
    rows = []
    for n_threads in (int(t) for t in args.threads.split(",")):
        numba.set_num_threads(n_threads)
        with threadpool_limits(limits=1, user_api="blas"):  # NumPy's OpenBLAS only; torch has its own
            contestants, first = {}, {}
            contestants["evsim"], first["evsim"] = evsim_steps(evsim.Network.from_spec(SPEC, rng=1), batches, rng)
            contestants["evsim_pruned"], first["evsim_pruned"] = evsim_steps(
                pruned(evsim.Network.from_spec(SPEC, rng=1), rng), batches, rng)
            if have_torch:
                from benchmarks.torch_conv import snntorch_net
                from benchmarks.torch_conv import steps as torch_steps
                contestants["torch"] = torch_steps(n_threads, args.batches, args.activity)
                if importlib.util.find_spec("snntorch") is not None:
                    contestants["snntorch"] = torch_steps(n_threads, args.batches, args.activity, model=snntorch_net)
            measured = interleaved(contestants, args.batches)
        full = {**measured["evsim"], **first["evsim"]}
        sparse = {**measured["evsim_pruned"], **first["evsim_pruned"]}
        row = {"threads": n_threads, "evsim": full, "evsim_pruned": sparse, "interleaved": True}
        for name in ("torch", "snntorch"):
            if name in measured:
                row[name] = {"threads": n_threads, **measured[name]}
        rows.append(row)
        line = (f"threads {n_threads}: evsim training {full['train_samples_s_best']:.0f} / inference "
                f"{full['inference_samples_s_best']:.0f} samples/s (first batch {full['first_batch_s']:.1f} s, first predict {full['first_predict_s']:.1f} s; system "
                f"time {full['train_system_ms_per_batch']:.0f} ms and {full['train_page_faults_per_batch']:.0f} page "
                f"faults per training batch); "
                f"with traces {full['inference_traced_samples_s_best']:.0f}; "
                f"pruned {sparse['train_samples_s_best']:.0f} / {sparse['inference_samples_s_best']:.0f} "
                f"({sparse['train_samples_s_best'] / full['train_samples_s_best']:.2f}x / "
                f"{sparse['inference_samples_s_best'] / full['inference_samples_s_best']:.2f}x)")
        if have_torch:
            t = row["torch"]
            line += (f"; PyTorch {t['train_samples_s_best']:.0f} / {t['inference_samples_s_best']:.0f} -> evsim "
                     f"{full['train_samples_s_best'] / t['train_samples_s_best']:.2f}x / "
                     f"{full['inference_samples_s_best'] / t['inference_samples_s_best']:.2f}x")
        if "snntorch" in row:
            t = row["snntorch"]
            line += (f"; snnTorch {t['train_samples_s_best']:.0f} / {t['inference_samples_s_best']:.0f} -> evsim "
                     f"{full['train_samples_s_best'] / t['train_samples_s_best']:.2f}x / "
                     f"{full['inference_samples_s_best'] / t['inference_samples_s_best']:.2f}x")
        print(line, flush=True)
    print("pruned / full is bounded by the share of the step its dead units' work takes (conv1 and pool1 never "
          "develop): python -m benchmarks.bench_conv_limits measures that bound", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"spec": SPEC, "activity": args.activity, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
