"""Time per sample against synaptic operations: does evsim's work scale with events?

Run (the full measurement, a few minutes on the 2-core machine)::

    python -m benchmarks.bench_scaling --json bench_scaling.json --png benchmarks/scaling.png
    python -m benchmarks.bench_scaling --quick --png /tmp/scaling.png   # smoke run, seconds

Options: ``--activities 0.01,0.02,0.05,0.1,0.2``, ``--densities 1,0.5,0.25,0.1``,
``--pruned 0,0.25,0.5,0.75`` (fractions of hidden neurons killed), ``--prune-activity
0.05``, ``--paths auto`` (add ``rows``/``csr`` to force a propagation path as well),
``--batch 64``, ``--time-steps 20``, ``--threads N`` (default: Numba's), ``--repeat 5``,
``--warmup 2``, ``--quick``, ``--json FILE``, ``--png FILE``.

What is measured
----------------
A 2312-800-10 LIF network (evsim defaults), T = 20, batch 64, binary spike input
(:func:`benchmarks.common.spike_input`):

- *grid*: input activity {1, 2, 5, 10, 20 %} of (time step, input) cells x synapse
  density {100, 50, 25, 10 %} (``SynapseStore.uniform(n_in, n_out, rng, density)`` in
  every layer). The layer's ``auto`` path picks ``rows`` or ``csr`` by density
  (``evsim.layers.CSR_DENSITY_THRESHOLD``); the path each point ran is reported, per
  layer (``rows/rows`` = both layers on the rows path).
- *pruning*: dense synapses, activity ``--prune-activity``, with {0, 25, 50, 75 %} of
  the hidden neurons killed (``layer.kill``, seeded random choice).

For every point: best-of-N wall time per sample of ``Network.forward`` (from
precomputed input events: the dense-to-events conversion of the input, an O(T·B·n_in)
scan independent of the network, is left out) and of forward + ``mse_rate`` +
``Network.backward`` (the optimizer step is O(synapses) per *batch*, not per event, so it
is reported apart, per density, as ``adam_ms_per_sample``). BLAS is held to one thread,
as in training.

SOPs are exact: :func:`evsim.energy.count_network` on the traces of the timed forward
pass (every delivered event times its row's real fan-out; pruned synapses cost
nothing). ``visits`` counts what the chosen path actually touches: for the ``rows`` path
every delivered event adds a whole dense row of the alive neurons (missing synapses
included, as zeros), for ``csr`` only the existing synapses (= SOPs).

Fits: ``time = a + b * SOPs`` (``np.polyfit``) per sweep, mode and path, with slope
(ns per SOP), intercept (us per sample) and R²; the same against ``visits``; and for
the grid, the same per synapse density (one network, activity varied). If work
scales with events, not matrix size, the grid's fit against SOPs is linear (R² near 1)
whatever the density. The PNG shows log-log scatter (colour = synapse density, marker
= path, black diamonds = pruning sweep) with the fitted lines (dashed: the pooled grid;
dotted: the pruning sweep; thin, coloured: each density), one panel per mode.
"""
from __future__ import annotations

import argparse
import time

import numba
import numpy as np
from threadpoolctl import threadpool_limits

from benchmarks.common import best_time, linear_fit, machine, save_json, spike_input
from evsim.energy import count_network
from evsim.kernels.events import dense_to_events
from evsim.layers import SparseLinear
from evsim.loss import mse_rate
from evsim.network import Network
from evsim.neuron import LIFParameters
from evsim.optim import Optimizer
from evsim.synapses import SynapseStore

SIZES = (2312, 800, 10)
QUICK_SIZES = (578, 200, 10)
MODES = ("forward", "train")
MODE_TITLES = {"forward": "forward", "train": "forward + backward (BPTT)"}


def build_network(sizes, density: float, path: str, lif: LIFParameters, seed: int, pruned: float = 0.0) -> Network:
    """MLP with uniform ±1/sqrt(n_in) weights and biases at synapse ``density`` in every
    layer, and a fraction ``pruned`` of the hidden neurons killed."""
    rng = np.random.default_rng([seed, int(round(density * 1e4))])
    layers = []
    for n_in, n_out in zip(sizes, sizes[1:]):
        store = SynapseStore.uniform(n_in, n_out, rng, density)
        bound = 1.0 / np.sqrt(n_in)
        layers.append(SparseLinear(store, rng.uniform(-bound, bound, n_out).astype(np.float32), path=path))
    network = Network(layers, lif)
    if pruned:
        hidden = network.layers[0]
        dead = np.random.default_rng([seed, 2]).choice(hidden.n_out, int(round(pruned * hidden.n_out)), replace=False)
        hidden.kill(np.sort(dead))
    return network


def measure(network: Network, events, labels: np.ndarray, repeat: int, warmup: int) -> dict:
    """Forward and forward+backward time per sample, exact SOPs and path visits per sample."""
    batch, n_steps = events.batch, events.n_steps

    def train():
        counts, traces = network.forward(events)
        _, grad = mse_rate(counts, labels, n_steps)
        network.backward(traces, grad)

    t_forward = best_time(lambda: network.forward(events), repeat, warmup)
    t_train = best_time(train, repeat, warmup)
    counts, traces = network.forward(events)
    report = count_network(network, traces, analog_input=False, batch=batch)
    visits = 0.0
    for layer, trace, counted in zip(network.layers, traces, report.layers):
        n_events = float(trace.events_in.val.sum())
        visits += n_events * layer.alive_index.size if layer.path == "rows" else counted.sops
    return {
        "path": "/".join(layer.path for layer in network.layers),
        "synapses": network.synapses,
        "alive_hidden": int(network.layers[0].alive_index.size),
        "input_events_per_sample": float(events.count) / batch,
        "hidden_rate": float(traces[0].spikes.mean()) if traces[0].spikes.size else 0.0,
        "sops_per_sample": sum(layer.sops for layer in report.layers) / batch,
        "sops_per_layer": [layer.sops / batch for layer in report.layers],
        "visits_per_sample": visits / batch,
        "forward_us_per_sample": 1e6 * t_forward / batch,
        "train_us_per_sample": 1e6 * t_train / batch,
    }


def adam_us_per_sample(network: Network, grads, batch: int, repeat: int, warmup: int) -> float:
    """One Adam step on the network's gradients ``grads``, per sample."""
    optimizer = Optimizer("adam", 1e-3)

    def step():
        optimizer.step(network.parameters(grads))
    return 1e6 * best_time(step, repeat, warmup) / batch


def run(sizes=SIZES, n_steps=20, batch=64, activities=(0.01, 0.02, 0.05, 0.10, 0.20), densities=(1.0, 0.5, 0.25, 0.10),
        pruned=(0.0, 0.25, 0.5, 0.75), prune_activity=0.05, paths=("auto",), repeat=5, warmup=2, seed=0,
        echo=print) -> tuple[list[dict], list[dict]]:
    """Returns ``(points, fits)``."""
    lif = LIFParameters()
    inputs = {}

    def batch_of(activity):
        if activity not in inputs:
            rng = np.random.default_rng([seed, int(round(activity * 1e4))])
            x = spike_input(rng, n_steps, batch, sizes[0], activity)
            inputs[activity] = (dense_to_events(x), rng.integers(0, sizes[-1], batch))
        return inputs[activity]

    points = []

    def record(point):
        points.append(point)
        echo(f"  {point['sweep']:7s} path {point['path']:9s} density {point['density']:4.0%}  "
             f"pruned {point['pruned']:4.0%}  activity {point['activity']:4.0%}  "
             f"SOPs/sample {point['sops_per_sample']:12,.0f}  forward {point['forward_us_per_sample']:9.1f} us  "
             f"fwd+bwd {point['train_us_per_sample']:9.1f} us", flush=True)

    with threadpool_limits(limits=1, user_api="blas"):
        for path in paths:
            for density in densities:
                network = build_network(sizes, density, path, lif, seed)
                for activity in activities:
                    events, labels = batch_of(activity)
                    record({"sweep": "grid", "path_option": path, "density": density, "pruned": 0.0,
                            "activity": activity, **measure(network, events, labels, repeat, warmup)})
                events, labels = batch_of(activities[-1])
                counts, traces = network.forward(events)
                grads = network.backward(traces, mse_rate(counts, labels, n_steps)[1])
                adam = adam_us_per_sample(network, grads, batch, repeat, warmup)
                for point in points:
                    if point["sweep"] == "grid" and point["path_option"] == path and point["density"] == density:
                        point["adam_us_per_sample"] = adam
            for fraction in pruned:
                network = build_network(sizes, 1.0, path, lif, seed, fraction)
                events, labels = batch_of(prune_activity)
                record({"sweep": "pruning", "path_option": path, "density": 1.0, "pruned": fraction,
                        "activity": prune_activity, **measure(network, events, labels, repeat, warmup)})
    return points, fit_all(points)


def fit_all(points: list[dict]) -> list[dict]:
    """Linear fits of time per sample against SOPs and against path visits, per sweep, mode
    and path; for the grid also per synapse density (one network, activity varied)."""
    fits = []
    groups = sorted({(p["sweep"], p["path"], None) for p in points}, key=str)
    groups += sorted({("grid", p["path"], p["density"]) for p in points if p["sweep"] == "grid"},
                     key=lambda group: (group[1], -group[2]))
    for sweep, path, density in groups:
        group = [p for p in points if p["sweep"] == sweep and p["path"] == path
                 and (density is None or p["density"] == density)]
        for mode in MODES:
            y = [p[f"{mode}_us_per_sample"] for p in group]
            for against in ("sops", "visits"):
                fit = linear_fit([p[f"{against}_per_sample"] for p in group], y)
                fits.append({"sweep": sweep, "path": path, "density": density, "mode": mode, "against": against,
                             "ns_per_op": 1e3 * fit["slope"], "intercept_us": fit["intercept"],
                             "r2": fit["r2"], "points": fit["points"]})
    return fits


# --------------------------------------------------------------------- report
def markdown(points: list[dict], fits: list[dict]) -> str:
    out = ["| sweep | path | synapse density | hidden pruned | activity | SOPs / sample | forward (us / sample) "
           "| fwd + bwd (us / sample) | forward ns / SOP | Adam step (us / sample) |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for p in points:
        ns = 1e3 * p["forward_us_per_sample"] / p["sops_per_sample"] if p["sops_per_sample"] else float("nan")
        adam = f"{p['adam_us_per_sample']:.1f}" if "adam_us_per_sample" in p else ""
        out.append(f"| {p['sweep']} | {p['path']} | {p['density']:.0%} | {p['pruned']:.0%} | {p['activity']:.0%} "
                   f"| {p['sops_per_sample']:,.0f} | {p['forward_us_per_sample']:.1f} | {p['train_us_per_sample']:.1f} "
                   f"| {ns:.2f} | {adam} |")
    out += ["", "Fits time/sample = a + b x (ops/sample):", "",
            "| sweep | path | mode | x | points | slope b (ns / op) | intercept a (us / sample) | R² |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for f in fits:
        sweep = f["sweep"] if f["density"] is None else f"{f['sweep']}, density {f['density']:.0%}"
        out.append(f"| {sweep} | {f['path']} | {MODE_TITLES[f['mode']]} | {f['against']} | {f['points']} "
                   f"| {f['ns_per_op']:.3f} | {f['intercept_us']:.1f} | {f['r2']:.3f} |")
    return "\n".join(out)


def plot(points: list[dict], fits: list[dict], path: str, title: str) -> None:
    """Log-log time per sample vs SOPs per sample, one panel per mode, with the fitted lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    densities = sorted({p["density"] for p in points if p["sweep"] == "grid"}, reverse=True)
    colours = dict(zip(densities, plt.cm.viridis(np.linspace(0.0, 0.85, max(len(densities), 1)))))
    markers = {"rows": "o", "csr": "s"}
    fig, axes = plt.subplots(1, len(MODES), figsize=(6.2 * len(MODES), 6.4), squeeze=False)
    for ax, mode in zip(axes[0], MODES):
        for p in points:
            if p["sops_per_sample"] <= 0:
                continue
            first_path = p["path"].split("/")[0]
            if p["sweep"] == "grid":
                ax.scatter(p["sops_per_sample"], p[f"{mode}_us_per_sample"], color=colours[p["density"]],
                           marker=markers.get(first_path, "^"), s=36, zorder=3)
            else:
                ax.scatter(p["sops_per_sample"], p[f"{mode}_us_per_sample"], color="black", marker="D", s=30,
                           zorder=4)
                ax.annotate(f"{p['pruned']:.0%}", (p["sops_per_sample"], p[f"{mode}_us_per_sample"]),
                            textcoords="offset points", xytext=(5, -10), fontsize=7)
        for f in fits:
            if f["mode"] != mode or f["against"] != "sops" or not np.isfinite(f["ns_per_op"]):
                continue
            xs = np.array([p["sops_per_sample"] for p in points
                           if p["sweep"] == f["sweep"] and p["path"] == f["path"] and p["sops_per_sample"] > 0
                           and (f["density"] is None or p["density"] == f["density"])])
            if xs.size < 2:
                continue
            grid = np.geomspace(xs.min(), xs.max(), 100)
            line = f["intercept_us"] + 1e-3 * f["ns_per_op"] * grid
            keep = line > 0
            if f["density"] is not None:  # one network as activity varies: thin, in its density's colour
                ax.plot(grid[keep], line[keep], color=colours[f["density"]], linewidth=0.8, alpha=0.8,
                        label=f"fit density {f['density']:.0%}: {f['ns_per_op']:.2f} ns/SOP, R² {f['r2']:.3f}")
                continue
            ax.plot(grid[keep], line[keep], linestyle="--" if f["sweep"] == "grid" else ":",
                    color="grey" if f["sweep"] == "grid" else "black", linewidth=1.2,
                    label=f"fit {f['sweep']} {f['path']}: {f['ns_per_op']:.2f} ns/SOP + {f['intercept_us']:.0f} us, "
                          f"R² {f['r2']:.3f}")
        for density in densities:
            ax.scatter([], [], color=colours[density], marker="o", label=f"synapse density {density:.0%}")
        for name, marker in markers.items():
            if any(p["path"].split("/")[0] == name for p in points):
                ax.scatter([], [], color="white", edgecolor="black", marker=marker, label=f"path {name}")
        if any(p["sweep"] == "pruning" for p in points):
            ax.scatter([], [], color="black", marker="D", label="hidden neurons pruned (label: fraction)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("synaptic operations per sample (exact count)")
        ax.set_ylabel("time per sample (us)")
        ax.set_title(MODE_TITLES[mode])
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(","))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--activities", type=_floats, default=(0.01, 0.02, 0.05, 0.10, 0.20))
    parser.add_argument("--densities", type=_floats, default=(1.0, 0.5, 0.25, 0.10))
    parser.add_argument("--pruned", type=_floats, default=(0.0, 0.25, 0.5, 0.75),
                        help="fractions of hidden neurons killed (dense synapses, --prune-activity input)")
    parser.add_argument("--prune-activity", type=float, default=0.05)
    parser.add_argument("--paths", default="auto", help="comma-separated from auto,rows,csr (default auto)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--time-steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="Numba threads (default: all)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {'-'.join(map(str, QUICK_SIZES))} network, T=10, batch 16, activities 2,10 %%, "
                             "densities 100,10 %%, pruned 0,50 %%, repeat 2")
    parser.add_argument("--json", help="write results as JSON to this file")
    parser.add_argument("--png", default="benchmarks/scaling.png", help="plot file (default benchmarks/scaling.png)")
    args = parser.parse_args(argv)
    paths = tuple(args.paths.split(","))
    if any(p not in ("auto", "rows", "csr") for p in paths):
        parser.error(f"--paths must be from auto,rows,csr, got {args.paths!r}")
    for name in ("activities", "densities"):
        if any(not 0 < v <= 1 for v in getattr(args, name)):
            parser.error(f"--{name} must be in (0, 1], got {getattr(args, name)}")
    if any(not 0 <= v < 1 for v in args.pruned):
        parser.error(f"--pruned must be in [0, 1), got {args.pruned}")
    if args.threads:
        if not 1 <= args.threads <= numba.config.NUMBA_NUM_THREADS:
            parser.error(f"--threads must be between 1 and {numba.config.NUMBA_NUM_THREADS}, got {args.threads}")
        numba.set_num_threads(args.threads)
    sizes, n_steps, batch, activities, densities, pruned, repeat, warmup = (
        SIZES, args.time_steps, args.batch, args.activities, args.densities, args.pruned, args.repeat, args.warmup)
    if args.quick:
        sizes, n_steps, batch, activities, densities, pruned, repeat, warmup = (
            QUICK_SIZES, 10, 16, (0.02, 0.10), (1.0, 0.10), (0.0, 0.5), 2, 1)
    title = (f"evsim {'-'.join(map(str, sizes))} LIF, T = {n_steps}, batch {batch}, "
             f"{numba.get_num_threads()} thread{'s' if numba.get_num_threads() != 1 else ''}: time per sample vs SOPs")
    print(title, flush=True)
    start = time.perf_counter()
    points, fits = run(sizes, n_steps, batch, activities, densities, pruned, args.prune_activity, paths, repeat, warmup)
    print()
    print(markdown(points, fits))
    plot(points, fits, args.png, title)
    print(f"\nplot: {args.png}  ({time.perf_counter() - start:.0f} s)")
    save_json(args.json, {"benchmark": "scaling", "machine": machine(),
                          "config": {"sizes": list(sizes), "time_steps": n_steps, "batch": batch,
                                     "activities": list(activities), "densities": list(densities),
                                     "pruned": list(pruned), "prune_activity": args.prune_activity,
                                     "paths": list(paths), "repeat": repeat, "warmup": warmup, "quick": args.quick},
                          "points": points, "fits": fits})


if __name__ == "__main__":
    main()
