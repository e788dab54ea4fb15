"""Training and inference throughput: evsim vs snnTorch (PyTorch CPU) vs dense NumPy/BLAS BPTT.

Run (the full measurement; a few minutes on the 2-core machine, which must be otherwise
idle: with another process on a core, every 2-thread number collapses)::

    python -m benchmarks.bench_train --json bench_train.json
    python -m benchmarks.bench_train --quick          # smoke run: small network, about a minute

Options: ``--threads 1,2`` (every configuration at each thread count), ``--activities
0.01,0.02,0.05,0.1``, ``--batch 64``, ``--time-steps 20``, ``--sizes 2312,800,10``,
``--repeat 5``, ``--warmup 2``, ``--weight-scale 1``, ``--detach-reset``, ``--in-process``,
``--quick``, ``--json FILE``. snnTorch needs the optional extra (``pip install -e
'.[bench]'``: ``torch==2.13.0`` CPU build and ``snntorch``); without it the snnTorch
column is skipped with a notice.

Each engine runs at each thread count in a fresh Python process (``--engine E
--threads N``, started by the main run, which merges the rows): a process then holds
only that engine's thread pool, as a user's would. In one process, the idle pools of the
other runtimes (Numba's OpenMP, PyTorch's own OpenMP, OpenBLAS) can spin on the cores
another engine needs; ``--in-process`` measures that way anyway.

What is measured
----------------
A 2312-800-10 LIF network (N-MNIST-sized input), T = 20, batch 64, binary spike input
with a fraction ``activity`` of the (time step, input) cells active
(:func:`benchmarks.common.spike_input`), labels uniform over 10 classes. All engines
start from the *same* weights and biases (evsim's ``Network.mlp`` init, copied), so they
see the same spikes; each checks its output counts against evsim's on the batch before
training (reported as agreement). Under this init (uniform ±1/sqrt(n_in), PyTorch's)
the hidden layer barely fires at first (rate about 1e-4 at 5 % input activity), but
the timed training steps change the weights: a few Adam steps bring it to 2-6 %.
Inference is timed after training, on those weights, so it is timed with an active
hidden layer (spikes to convert, a second layer with input); the table reports the
hidden firing rate at the start and on the weights inference was timed on.
``--weight-scale 2`` (hidden rate about 3 % at 5 % input from the start) or ``3``
(about 10 %) gives trained-network-like activity from the first step. Throughput is
samples/s = batch / (best-of-N wall time of one batch), after untimed warm-up calls
that absorb JIT compilation and first-step allocations.

- *training*: forward over T steps, MSE on firing rates (``evsim.loss.mse_rate``:
  ``mean((counts / T - onehot)^2)``), BPTT, one Adam step (lr 1e-3, betas 0.9/0.999,
  eps 1e-8);
- *inference*: forward only (output spike counts).

Engines
-------
``evsim``        exactly what ``Trainer.train_epoch`` does for one batch: the batch's
                 frames as evsim's event loaders keep them (:class:`SparseFrames`, built
                 once from the binary input, as the dataset cache is) ->
                 ``encode_events`` (timed) -> ``Network.forward`` -> ``mse_rate`` ->
                 ``Network.backward`` -> ``Optimizer("adam").step``;
                 Numba threads = ``--threads``, BLAS held to one thread
                 (``threadpool_limits(1, "blas")``, as ``Trainer.fit`` does).
``evsim, dense input``  the same network fed the dense float32 ``[T, B, n_in]`` input
                 that snnTorch gets, turned into events by ``dense_to_events`` (timed):
                 what a user pays who hands evsim dense arrays.
``evsim pruned`` the same network with 400 of its 800 hidden neurons killed
                 (``layer.kill``, a seeded random half). Each layer's forward and backward
                 are timed separately, to check the issue's target: pruning half the
                 hidden neurons cuts the affected layers' time (here both layers: the
                 hidden layer loses half its neurons, the output layer half its inputs)
                 by >= 40 %.
``snnTorch``     the usual snnTorch loop: ``nn.Linear(2312, 800) -> snn.Leaky ->
                 nn.Linear(800, 10) -> snn.Leaky``, stepped over T in Python, spike counts
                 summed, ``F.mse_loss(counts / T, onehot)``, ``torch.optim.Adam``;
                 ``torch.set_num_threads(threads)``; inference under ``torch.no_grad()``.
``dense NumPy``  :class:`benchmarks.dense_bptt.DenseMLP`: the same BPTT with dense BLAS
                 matmuls (one ``X[T*B, n_in] @ W`` per layer) and NumPy Adam, BLAS threads
                 = ``threads``. Its gradients are tested equal to evsim's
                 (``tests/test_dense_bptt_baseline.py``).

Neuron model and snnTorch's semantics
-------------------------------------
evsim (``evsim/neuron.py``, ``evsim/kernels/lif.py``): ``u[t] = 0.2 u[t-1] (1 - o[t-1]) +
W x[t] + b``, ``o[t] = u[t] > 0.5``, surrogate ``do/du = 1 if |u - 0.5| < 0.5 else 0``.
``snn.Leaky(beta=0.2, threshold=0.5, reset_mechanism="zero", spike_grad=Rect)`` with
``Rect`` a custom autograd function (forward ``x > 0``, backward ``1 if |x| < 0.5``)
computes the same forward: its reset signal at step t is ``H(u[t-1] - v_th)`` from the
previous membrane (``reset_delay=True``, the default), applied as ``(1 - reset) * u``
before the leak ``beta * u + I``; spikes are strict ``u > v_th``. Differences:

1. snnTorch *detaches* the reset signal (``mem_reset`` returns ``.detach()``), so no
   gradient flows through the reset term; evsim's default (``detach_reset=False``, the
   STBP / SD-SNN reference code) backpropagates through it. The leak term
   ``beta * (1 - o) * dL/du`` is kept by both. snnTorch's gradient is therefore
   evsim's with ``detach_reset=True``; pass ``--detach-reset`` to make evsim and the
   dense baseline compute exactly snnTorch's gradient (the cost is the same either way).
2. snnTorch evaluates the surrogate function twice per step (once for the spike, once,
   detached, for the reset signal), and keeps ``mem`` as module state between calls; the
   loop resets it with ``reset_mem()`` at the start of every batch, so no state leaks
   across batches.
3. snnTorch's ``Linear`` runs per time step (``x[t] @ W.T``, a [64, 2312] matmul each),
   as in its tutorials; the dense NumPy baseline batches all T steps into one matmul,
   so it is the stronger dense baseline.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numba
import numpy as np
from threadpoolctl import threadpool_limits

from benchmarks.common import machine, save_json, spike_input, stored_frames
from benchmarks.dense_bptt import DenseMLP
from evsim.data.encoding import encode_events
from evsim.data.frames import SparseFrames
from evsim.kernels.events import Events, dense_to_events
from evsim.loss import mse_rate
from evsim.network import Network
from evsim.neuron import LIFParameters
from evsim.optim import Optimizer

SIZES = (2312, 800, 10)
QUICK_SIZES = (578, 200, 10)
LR = 1e-3
SNNTORCH_MISSING = "snnTorch not installed (pip install -e '.[bench]'): skipping the snnTorch column"


# ----------------------------------------------------------------------- timing
class LayerClock:
    """Times every ``forward``/``backward`` call of each layer of a network.

    Shadows the bound methods on the layer *instances* (``Network`` calls
    ``layer.forward(...)``, so it goes through the wrapper); ``Network``'s own code runs
    unchanged. ``forward_s``/``backward_s`` accumulate seconds per layer until
    :meth:`reset`.
    """

    def __init__(self, network: Network):
        self.layers = network.layers
        n = len(self.layers)
        self.forward_s = [0.0] * n
        self.backward_s = [0.0] * n
        for k, layer in enumerate(self.layers):
            layer.forward = self._timed(layer.forward, self.forward_s, k)
            layer.backward = self._timed(layer.backward, self.backward_s, k)

    @staticmethod
    def _timed(fn, acc, k):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            acc[k] += time.perf_counter() - start
            return out
        return timed

    def reset(self) -> None:
        for k in range(len(self.layers)):
            self.forward_s[k] = self.backward_s[k] = 0.0

    def layer_seconds(self) -> list[float]:
        return [f + b for f, b in zip(self.forward_s, self.backward_s)]


def timed_runs(fn, repeat: int, warmup: int, clock: LayerClock | None = None) -> tuple[float, list[float] | None]:
    """Best wall time of ``fn()`` over ``repeat`` runs after ``warmup`` untimed runs, and,
    with a ``clock``, each layer's best forward+backward time over the same runs."""
    for _ in range(warmup):
        fn()
    best, per_layer = float("inf"), None
    for _ in range(repeat):
        if clock is not None:
            clock.reset()
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
        if clock is not None:
            secs = clock.layer_seconds()
            per_layer = secs if per_layer is None else [min(a, b) for a, b in zip(per_layer, secs)]
    return best, per_layer


# ---------------------------------------------------------------------- engines
def input_events(x: SparseFrames | np.ndarray, n_steps: int) -> Events:
    """The first layer's events: stored frames as ``Trainer`` encodes them, or a dense
    ``[T, B, n_in]`` array."""
    if isinstance(x, SparseFrames):
        return encode_events(x, "frames", n_steps, None)
    return dense_to_events(x)


@dataclass
class Evsim:
    """One evsim network with its optimizer, driven like ``Trainer.train_epoch``."""

    network: Network
    n_steps: int
    optimizer: Optimizer = field(default_factory=lambda: Optimizer("adam", LR))

    def __post_init__(self):
        self.clock = LayerClock(self.network)

    def train_step(self, x: SparseFrames | np.ndarray, labels: np.ndarray) -> float:
        counts, traces = self.network.forward(input_events(x, self.n_steps))
        loss, grad_counts = mse_rate(counts, labels, self.n_steps)
        if not np.isfinite(loss):
            raise RuntimeError(f"evsim training diverged (loss {loss})")
        grads = self.network.backward(traces, grad_counts)
        self.optimizer.step(self.network.parameters(grads), LR)
        return loss

    def infer(self, x: SparseFrames | np.ndarray) -> np.ndarray:
        counts, _ = self.network.forward(input_events(x, self.n_steps))
        return counts

    def hidden_rate(self, x: np.ndarray) -> float:
        """Mean firing rate of the alive hidden neurons (spikes per neuron per step)."""
        _, traces = self.network.forward(dense_to_events(x))
        return float(traces[0].spikes.mean())


def initial_network(sizes, lif: LIFParameters, seed: int, weight_scale: float = 1.0) -> Network:
    """The network every engine starts from: ``Network.mlp`` (PyTorch's Linear init),
    weights and biases times ``weight_scale`` (> 1 makes the hidden layer more active)."""
    network = Network.mlp(list(sizes), np.random.default_rng(seed), lif)
    if weight_scale != 1.0:
        for layer in network.layers:
            layer.store.data[:] *= np.float32(weight_scale)
            layer.bias *= np.float32(weight_scale)
    return network


def build_evsim(sizes, lif: LIFParameters, seed: int, n_steps: int, prune_hidden: float = 0.0,
                weight_scale: float = 1.0) -> Evsim:
    network = initial_network(sizes, lif, seed, weight_scale)
    if prune_hidden:
        hidden = network.layers[0]
        dead = np.random.default_rng([seed, 1]).choice(hidden.n_out, int(round(prune_hidden * hidden.n_out)),
                                                       replace=False)
        hidden.kill(np.sort(dead))
    return Evsim(network, n_steps)


def load_snntorch():
    """``(torch, snntorch)`` or None when the bench extra is not installed."""
    try:
        import snntorch
        import torch
    except ImportError:
        return None
    return torch, snntorch


def build_snntorch(modules, network: Network, lif: LIFParameters):
    """snnTorch model with ``network``'s weights, and its training-step and inference
    functions (Adam inside); returns ``(model, train_step, infer)``."""
    torch, snn = modules
    nn = torch.nn
    width = float(lif.width)

    class RectangularSpike(torch.autograd.Function):
        """Heaviside forward (x > 0), rectangular surrogate backward: 1 if |x| < width."""

        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return (x > 0).to(x.dtype)

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return grad * (x.abs() < width).to(grad.dtype)

    class SnnMLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.fcs = nn.ModuleList()
            self.lifs = nn.ModuleList()
            for layer in network.layers:
                fc = nn.Linear(layer.n_in, layer.n_out)
                with torch.no_grad():
                    fc.weight.copy_(torch.from_numpy(layer.store.to_dense().T.copy()))
                    fc.bias.copy_(torch.from_numpy(layer.bias.copy()))
                self.fcs.append(fc)
                self.lifs.append(snn.Leaky(beta=lif.decay, threshold=lif.v_th, reset_mechanism="zero",
                                           spike_grad=RectangularSpike.apply))

        def forward(self, x):
            mems = [neuron.reset_mem() for neuron in self.lifs]
            counts = 0
            for t in range(x.shape[0]):
                h = x[t]
                for k, (fc, neuron) in enumerate(zip(self.fcs, self.lifs)):
                    h, mems[k] = neuron(fc(h), mems[k])
                counts = counts + h
            return counts

    model = SnnMLP()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR, betas=(0.9, 0.999), eps=1e-8)
    n_out = network.layers[-1].n_out

    def train_step(x: np.ndarray, labels: np.ndarray) -> float:
        xt = torch.from_numpy(x)
        target = torch.nn.functional.one_hot(torch.from_numpy(labels), n_out).to(xt.dtype)
        optimizer.zero_grad(set_to_none=True)
        counts = model(xt)
        loss = torch.nn.functional.mse_loss(counts / x.shape[0], target)
        loss.backward()
        optimizer.step()
        return loss.detach().item()

    def infer(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()

    return model, train_step, infer


# ------------------------------------------------------------------------ run
ENGINES = ("evsim", "snntorch", "dense")


def snntorch_available() -> bool:
    """Whether the bench extra is installed (checked without importing torch)."""
    return all(importlib.util.find_spec(name) is not None for name in ("torch", "snntorch"))


def batch_for(activity: float, sizes, n_steps: int, batch: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The benchmark batch of one activity: the same in every process (seeded)."""
    rng = np.random.default_rng([seed, int(round(activity * 1e4))])
    return spike_input(rng, n_steps, batch, sizes[0], activity), rng.integers(0, sizes[-1], batch)


def measure_engine(engine: str, n_threads: int, sizes, n_steps: int, batch: int, activities, repeat: int,
                   warmup: int, lif: LIFParameters, weight_scale: float = 1.0, prune_hidden: float = 0.5,
                   seed: int = 0, echo=print) -> list[dict] | None:
    """Throughput of one engine at one thread count, one row per activity (None: engine missing).

    Every engine starts each activity from the same initial weights (evsim's
    ``Network.mlp`` with ``seed``) and records its output counts on the batch before
    training, so the caller can check that the engines compute the same network.
    """
    numba.set_num_threads(n_threads)
    modules = None
    if engine == "snntorch":
        modules = load_snntorch()
        if modules is None:
            return None
        modules[0].set_num_threads(n_threads)
    rows = []
    for activity in activities:
        x, labels = batch_for(activity, sizes, n_steps, batch, seed)
        row = {"activity": activity, "threads": n_threads}
        if engine == "evsim":
            full = build_evsim(sizes, lif, seed, n_steps, weight_scale=weight_scale)
            pruned = build_evsim(sizes, lif, seed, n_steps, prune_hidden, weight_scale)
            frames = stored_frames(x)
            with threadpool_limits(limits=1, user_api="blas"):
                row["evsim_counts"] = full.infer(frames).tolist()
                row["hidden_rate"] = full.hidden_rate(x)
                row["input_events_per_sample"] = float(x.sum()) / batch
                row["pruned_hidden_neurons"] = int((~pruned.network.layers[0].alive).sum())
                for name, model, given in (("evsim", full, frames), ("evsim_pruned", pruned, frames),
                                           ("evsim_dense_input", full, x)):
                    t_train, layers_train = timed_runs(lambda: model.train_step(given, labels), repeat, warmup,
                                                       model.clock)
                    t_infer, layers_infer = timed_runs(lambda: model.infer(given), repeat, warmup, model.clock)
                    row[f"{name}_train_sps"] = batch / t_train
                    row[f"{name}_infer_sps"] = batch / t_infer
                    if name == "evsim":  # the weights its inference was timed on
                        row["hidden_rate_inference"] = model.hidden_rate(x)
                    if name != "evsim_dense_input":
                        row[f"{name}_train_layer_ms"] = [1e3 * t for t in layers_train]
                        row[f"{name}_infer_layer_ms"] = [1e3 * t for t in layers_infer]
        elif engine == "snntorch":
            _, train_step, infer = build_snntorch(modules, initial_network(sizes, lif, seed, weight_scale), lif)
            row["snntorch_counts"] = infer(x).tolist()
            row["snntorch_train_sps"] = batch / timed_runs(lambda: train_step(x, labels), repeat, warmup)[0]
            row["snntorch_infer_sps"] = batch / timed_runs(lambda: infer(x), repeat, warmup)[0]
        elif engine == "dense":
            dense = DenseMLP.from_network(initial_network(sizes, lif, seed, weight_scale))
            with threadpool_limits(limits=n_threads, user_api="blas"):
                row["dense_counts"] = dense.infer(x).tolist()
                row["dense_train_sps"] = batch / timed_runs(lambda: dense.train_step(x, labels), repeat, warmup)[0]
                row["dense_infer_sps"] = batch / timed_runs(lambda: dense.infer(x), repeat, warmup)[0]
        else:
            raise ValueError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
        echo(f"  {engine:8s} threads {n_threads}  activity {activity:4.0%}  "
             + "  ".join(f"{k.removesuffix('_sps')} {v:,.0f}/s" for k, v in row.items() if k.endswith("_sps")),
             flush=True)
        rows.append(row)
    return rows


def _measure_in_child(engine: str, n_threads: int, options: list[str]) -> list[dict] | None:
    """:func:`measure_engine` in a fresh Python process (see ``--in-process``)."""
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rows.json"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
        subprocess.run([sys.executable, "-m", "benchmarks.bench_train", "--engine", engine, "--threads",
                        str(n_threads), *options, "--json", str(out)], cwd=root, env=env, check=True)
        return json.loads(out.read_text())["rows"]


def agreement(a, b) -> float:
    """Fraction of output spike counts that are equal (float summation order may flip a
    borderline spike; near 1.0 means the engines compute the same network)."""
    return float(np.mean(np.asarray(a) == np.asarray(b)))


def run(sizes=SIZES, n_steps=20, batch=64, activities=(0.01, 0.02, 0.05, 0.10), threads=(1, 2), repeat=5,
        warmup=2, lif: LIFParameters = LIFParameters(), weight_scale: float = 1.0, isolate: bool = True,
        seed: int = 0, echo=print) -> list[dict]:
    """All engines at every thread count; rows merged per (activity, threads) with ratios."""
    engines = list(ENGINES)
    if not snntorch_available():
        echo(SNNTORCH_MISSING)
        engines.remove("snntorch")
    options = ["--sizes", ",".join(map(str, sizes)), "--time-steps", str(n_steps), "--batch", str(batch),
               "--activities", ",".join(map(str, activities)), "--repeat", str(repeat), "--warmup", str(warmup),
               "--weight-scale", str(weight_scale)]
    if lif.detach_reset:
        options.append("--detach-reset")
    merged: dict[tuple, dict] = {}
    for n_threads in threads:
        for engine in engines:
            rows = (_measure_in_child(engine, n_threads, options) if isolate else
                    measure_engine(engine, n_threads, sizes, n_steps, batch, activities, repeat, warmup, lif,
                                   weight_scale, seed=seed, echo=echo))
            if rows is None:
                echo(SNNTORCH_MISSING)
                continue
            for row in rows:
                merged.setdefault((row["activity"], row["threads"]), {"batch": batch, "time_steps": n_steps,
                                                                      "sizes": list(sizes)}).update(row)
    rows = [merged[key] for key in sorted(merged)]
    for row in rows:
        reference = row.pop("evsim_counts")
        for ref in ("snntorch", "dense"):
            if f"{ref}_counts" in row:
                row[f"{ref}_agreement"] = agreement(row.pop(f"{ref}_counts"), reference)
        row["pruned_layers_train_cut"] = 1 - sum(row["evsim_pruned_train_layer_ms"]) / sum(row["evsim_train_layer_ms"])
        row["pruned_layers_infer_cut"] = 1 - sum(row["evsim_pruned_infer_layer_ms"]) / sum(row["evsim_infer_layer_ms"])
        for mode in ("train", "infer"):
            for ref in ("snntorch", "dense"):
                if f"{ref}_{mode}_sps" in row:
                    for name in ("evsim", "evsim_pruned", "evsim_dense_input"):
                        row[f"{name}_over_{ref}_{mode}"] = row[f"{name}_{mode}_sps"] / row[f"{ref}_{mode}_sps"]
    add_thread_scaling(rows)
    return rows


def add_thread_scaling(rows: list[dict]) -> None:
    """``*_thread_scaling``: samples/s relative to the fewest threads measured, same activity."""
    for row in rows:
        base = min((r for r in rows if r["activity"] == row["activity"]), key=lambda r: r["threads"])
        for key in ("evsim_train_sps", "evsim_infer_sps", "evsim_pruned_train_sps", "snntorch_train_sps",
                    "snntorch_infer_sps", "dense_train_sps", "dense_infer_sps"):
            if key in row and key in base:
                row[key.replace("_sps", "_thread_scaling")] = row[key] / base[key]


# --------------------------------------------------------------------- report
def _fmt(row: dict, key: str, spec: str = ".0f", suffix: str = "") -> str:
    return f"{row[key]:{spec}}{suffix}" if key in row else "n/a"


def markdown(rows: list[dict]) -> str:
    out = []
    for mode, title in (("train", "Training (forward + BPTT + Adam)"), ("infer", "Inference (forward)")):
        out += [f"**{title}, samples/s**", "",
                "| activity | threads | evsim | evsim, dense input | evsim, half hidden pruned | snnTorch "
                "| dense NumPy | evsim / snnTorch | dense input / snnTorch | pruned / snnTorch "
                "| evsim / dense NumPy |",
                "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in rows:
            out.append(f"| {r['activity']:.0%} | {r['threads']} | {_fmt(r, f'evsim_{mode}_sps')} "
                       f"| {_fmt(r, f'evsim_dense_input_{mode}_sps')} "
                       f"| {_fmt(r, f'evsim_pruned_{mode}_sps')} | {_fmt(r, f'snntorch_{mode}_sps')} "
                       f"| {_fmt(r, f'dense_{mode}_sps')} | {_fmt(r, f'evsim_over_snntorch_{mode}', '.2f', 'x')} "
                       f"| {_fmt(r, f'evsim_dense_input_over_snntorch_{mode}', '.2f', 'x')} "
                       f"| {_fmt(r, f'evsim_pruned_over_snntorch_{mode}', '.2f', 'x')} "
                       f"| {_fmt(r, f'evsim_over_dense_{mode}', '.2f', 'x')} |")
        out.append("")
    out += ["**Pruning half the hidden neurons: forward+backward time of the affected layers "
            "(per layer, ms per batch, best of N)**", "",
            "| activity | threads | hidden rate: start, inference | unpruned L1 + L2 (ms) | pruned L1 + L2 (ms) "
            "| layers' time cut (train) | layers' time cut (inference) |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        full, pruned = r["evsim_train_layer_ms"], r["evsim_pruned_train_layer_ms"]
        out.append(f"| {r['activity']:.0%} | {r['threads']} | {r['hidden_rate']:.4f}, {r['hidden_rate_inference']:.4f} "
                   f"| {' + '.join(f'{v:.2f}' for v in full)} = {sum(full):.2f} "
                   f"| {' + '.join(f'{v:.2f}' for v in pruned)} = {sum(pruned):.2f} "
                   f"| {r['pruned_layers_train_cut']:.0%} | {r['pruned_layers_infer_cut']:.0%} |")
    multi = [r for r in rows if r["threads"] != min(q["threads"] for q in rows if q["activity"] == r["activity"])]
    if multi:
        out += ["", "**Thread scaling (samples/s relative to the fewest threads, same activity)**", "",
                "| activity | threads | evsim train | evsim inference | snnTorch train | dense NumPy train |",
                "| --- | --- | --- | --- | --- | --- |"]
        for r in multi:
            out.append(f"| {r['activity']:.0%} | {r['threads']} | {_fmt(r, 'evsim_train_thread_scaling', '.2f', 'x')} "
                       f"| {_fmt(r, 'evsim_infer_thread_scaling', '.2f', 'x')} "
                       f"| {_fmt(r, 'snntorch_train_thread_scaling', '.2f', 'x')} "
                       f"| {_fmt(r, 'dense_train_thread_scaling', '.2f', 'x')} |")
    agree = [(r.get("snntorch_agreement"), r["dense_agreement"]) for r in rows]
    out += ["", "Output spike counts equal to evsim's on the benchmark batch: dense NumPy "
            f"{min(a[1] for a in agree):.1%} (worst case)"
            + ("" if agree[0][0] is None else f", snnTorch {min(a[0] for a in agree):.1%} (worst case)") + "."]
    return "\n".join(out)


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(","))


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=_ints, default=(1, 2), help="comma-separated thread counts (default 1,2)")
    parser.add_argument("--activities", type=_floats, default=(0.01, 0.02, 0.05, 0.10),
                        help="fractions of active (step, input) cells (default 0.01,0.02,0.05,0.1)")
    parser.add_argument("--sizes", type=_ints, default=SIZES, help="layer sizes, input first (default 2312,800,10)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--time-steps", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per measurement (best is kept)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs first (JIT compilation, allocations)")
    parser.add_argument("--detach-reset", action="store_true",
                        help="evsim and dense NumPy without gradient through the reset (snnTorch's gradient)")
    parser.add_argument("--weight-scale", type=float, default=1.0,
                        help="scale the initial weights and biases of every engine (default 1: PyTorch's init, under "
                             "which the hidden layer barely fires; 2 gives it about 3%% activity at 5%% input)")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {'-'.join(map(str, QUICK_SIZES))} network, T=10, batch 16, 5%% activity, "
                             "repeat 2")
    parser.add_argument("--in-process", action="store_true",
                        help="run all engines in this process instead of one fresh process per engine and thread "
                             "count (idle thread pools of the other runtimes then disturb the timings)")
    parser.add_argument("--engine", choices=ENGINES,
                        help="measure only this engine, in this process, at one thread count (what each child "
                             "process of a normal run does)")
    parser.add_argument("--json", help="write results as JSON to this file")
    args = parser.parse_args(argv)
    limit = numba.config.NUMBA_NUM_THREADS
    if any(t < 1 or t > limit for t in args.threads):
        parser.error(f"--threads must be between 1 and {limit} (NUMBA_NUM_THREADS), got {args.threads}")
    if any(not 0 < a <= 1 for a in args.activities):
        parser.error(f"--activities must be in (0, 1], got {args.activities}")
    if len(args.sizes) != 3:
        parser.error(f"--sizes must be three layer sizes (input, hidden, output), got {args.sizes}")
    sizes, n_steps, batch, activities, repeat, warmup = (args.sizes, args.time_steps, args.batch, args.activities,
                                                         args.repeat, args.warmup)
    if args.quick:
        sizes, n_steps, batch, activities, repeat, warmup = QUICK_SIZES, 10, 16, (0.05,), 2, 1
    lif = LIFParameters(detach_reset=args.detach_reset)

    if args.engine:
        if len(args.threads) != 1:
            parser.error("--engine measures one thread count: give --threads N")
        rows = measure_engine(args.engine, args.threads[0], sizes, n_steps, batch, activities, repeat, warmup, lif,
                              args.weight_scale)
        if rows is None:
            print(SNNTORCH_MISSING)
        save_json(args.json, {"benchmark": "train", "engine": args.engine, "rows": rows})
        return

    start = time.perf_counter()
    print(f"{'-'.join(map(str, sizes))} LIF network, T = {n_steps}, batch {batch}, threads {args.threads}, "
          f"activities {list(activities)}, best of {repeat} after {warmup} warm-up"
          f"{'' if args.in_process else ', one process per engine and thread count'}", flush=True)
    rows = run(sizes, n_steps, batch, activities, args.threads, repeat, warmup, lif, args.weight_scale,
               isolate=not args.in_process)
    print()
    print(markdown(rows))
    print(f"\n({time.perf_counter() - start:.0f} s)")
    versions = {}
    if snntorch_available():
        versions = {name: importlib.metadata.version(name) for name in ("torch", "snntorch")}
    save_json(args.json, {"benchmark": "train", "machine": {**machine(), **versions},
                          "config": {"sizes": list(sizes), "time_steps": n_steps, "batch": batch,
                                     "activities": list(activities), "threads": list(args.threads),
                                     "repeat": repeat, "warmup": warmup, "lif": lif._asdict(), "lr": LR,
                                     "weight_scale": args.weight_scale,
                                     "isolated": not args.in_process, "quick": args.quick},
                          "rows": rows})


if __name__ == "__main__":
    main()
