"""Evaluation memory per neuron and time step, the constant evsim.memory checks with.

Each measurement runs in its own process: the paper's networks with their initial
weights, synthetic inputs (frames with real N-MNIST's activity, about 6 % of cells at
counts 1-3; MNIST-like images for rate and direct coding), ``evaluate()`` at two batch
sizes. The peak resident memory (``VmHWM`` after ``/proc/self/clear_refs``, so data
loading and imports are not in it) at batch B2 less at B1, over (B2 - B1) x T x neurons,
is what one more sample costs per neuron-step.

Run: python -m benchmarks.bench_eval_memory [--json out.json]   (Linux: reads /proc)
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

import numpy as np

CASES = {  # name: (architecture, encoding, time steps, (B1, B2))
    "dvsgesture frames": ("2x128x128-15C3-AP2-40C3-AP2-300-11", "frames", 8, (8, 24)),
    "mnist rate": ("1x28x28-15C3p1-AP2-40C3p1-AP2-300-10", "rate", 16, (100, 300)),
    "mnist direct": ("1x28x28-15C3p1-AP2-40C3p1-AP2-300-10", "direct", 16, (100, 300)),
}


def _status(key: str) -> int:
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) * 1024 for line in handle if line.startswith(key + ":"))


def child(name: str, batch: int) -> dict:
    """Peak bytes above the base of one evaluate() of ``batch`` samples (run in a fresh process)."""
    import evsim
    import evsim.memory
    from evsim.data.base import Dataset, Split
    from evsim.evaluate import evaluate

    evsim.memory.physical_memory = lambda: 2 ** 60  # measure, do not refuse
    arch, encoding, steps, _ = CASES[name]
    network = evsim.Network.from_spec(arch, rng=0)
    shape = tuple(int(v) for v in arch.split("-")[0].split("x"))
    rng = np.random.default_rng(0)
    if encoding == "frames":
        cells = rng.random((batch, steps, *shape)) < 0.06
        inputs = (cells * rng.integers(1, 4, cells.shape)).astype(np.float32)
    else:
        inputs = (rng.random((batch, *shape)) * (rng.random((batch, *shape)) < 0.19)).astype(np.float32)
    labels = rng.integers(0, network.sizes[-1], batch)
    dataset = Dataset("synthetic", Split(inputs[:1], labels[:1]), Split(inputs, labels), network.sizes[-1], shape,
                      encoding, "synthetic", time_steps=steps if encoding == "frames" else None)
    evaluate(network, dataset, steps, "test", batch_size=1)  # compiled or loaded from the cache: not in the peak
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    base = _status("VmRSS")
    evaluate(network, dataset, steps, "test", batch_size=batch)
    return {"peak_above_base": _status("VmHWM") - base, "neurons": sum(network.sizes[1:]), "steps": steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the results as JSON to this file")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]))))
        return
    results = []
    print("| network, input | T | B | peak above base (MiB) | B per neuron-step |")
    print("| --- | --- | --- | --- | --- |")
    for name, (_, _, steps, batches) in CASES.items():
        runs = [json.loads(subprocess.run([sys.executable, "-m", "benchmarks.bench_eval_memory", "--child", name,
                                           str(b)], check=True, capture_output=True, text=True).stdout)
                for b in batches]
        per = (runs[1]["peak_above_base"] - runs[0]["peak_above_base"]) / (
            (batches[1] - batches[0]) * steps * runs[0]["neurons"])
        results.append({"case": name, "T": steps, "batches": batches, "peaks": [r["peak_above_base"] for r in runs],
                        "bytes_per_neuron_step": per})
        print(f"| {name} ({runs[0]['neurons']:,} neurons) | {steps} | {batches[0]} -> {batches[1]} | "
              f"{runs[0]['peak_above_base'] / 2**20:,.0f} -> {runs[1]['peak_above_base'] / 2**20:,.0f} | {per:.2f} |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
