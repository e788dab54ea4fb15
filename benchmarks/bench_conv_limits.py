"""What bounds the paper's N-MNIST network on this machine: the floors under bench_conv's targets.

bench_conv asks for inference 8x the PyTorch step loop and the SD-SNN-like structure 1.5x
the unpruned network. This measures, at 1 thread (the per-layer times; 2 threads split
the same work), the quantities those targets run into:

- the core's 16-lane fused multiply-add peak: the larger of 12 independent chains in
  registers and the direct convolution's rate on conv2's shapes, alone (one slot's
  kernel repeated, its data in cache);
- per layer, the inference forward (no membrane) and the training forward and backward
  of one batch of bench_conv's input, for every synapse and for the SD-SNN-like structure;
- from them: the **inference floor** with both cores at the multiply-add peak for the
  convolutions' dense arithmetic (the multiply-adds of the kernel each convolution runs
  in ``Network.predict`` at its input's density: on AVX2 Winograd's F(4x4, 3x3) for both
  of the paper's, fused with the pooling) plus
  the fully connected layers' measured time halved (``Network.predict`` runs each
  pooling inside the convolution below it), against the PyTorch inference time when
  torch is installed; and the **pruned structure's
  Amdahl bound**: every layer's time with exactly its dead units' share removed (conv2's
  dead filters, fc1's dead neurons, the pooling above conv2) against the full network,
  and the share of conv2's filters that bound would need dead to reach 1.5x.

Run: python -m benchmarks.bench_conv_limits [--json out.json]
"""
from __future__ import annotations

import argparse
import importlib.util
import time

import numba
import numpy as np
from numba import njit
from threadpoolctl import threadpool_limits

import evsim
from benchmarks.bench_conv import BATCH, N_STEPS, SPEC, frames, pruned
from benchmarks.common import best_time, machine, save_json
from evsim.kernels.conv_direct import (block_scratch, direct_multiply_adds, direct_slot, direct_taps, shifted_shape,
                                       zeros_on_lines)
from evsim.kernels.conv_paths import dense_multiply_adds, event_density, forward_path, pooled_path
from evsim.layers.conv import SpikingConv2d
from evsim.layers.pool import Pool2d
from evsim.kernels.simd import LANES, fma, splat, store


@njit(cache=True)
def _fma_chains(n, out):
    """12 independent multiply-add chains in registers, ``n`` rounds."""
    w, x = splat(np.float32(1.0000001)), splat(np.float32(0.5))
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = a8 = a9 = a10 = a11 = splat(np.float32(0.0))
    for _ in range(n):
        a0, a1, a2, a3 = fma(w, a0, x), fma(w, a1, x), fma(w, a2, x), fma(w, a3, x)
        a4, a5, a6, a7 = fma(w, a4, x), fma(w, a5, x), fma(w, a6, x), fma(w, a7, x)
        a8, a9, a10, a11 = fma(w, a8, x), fma(w, a9, x), fma(w, a10, x), fma(w, a11, x)
    store(out, 0, a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11, LANES)


def fma_peak() -> float:
    """16-lane multiply-adds per second of one core, best of 15 (on a shared host a best
    of 3 has come out at a third of it, and the floors with it)."""
    out, n = np.zeros(LANES, dtype=np.float32), 2_000_000
    return 12 * n / best_time(lambda: _fma_chains(n, out), repeat=15)


@njit(cache=True)
def _repeat_slot(n, shifted, width_pad, offsets, weights, n_out, height, width, out):
    block = block_scratch()
    for _ in range(n):
        direct_slot(shifted, width_pad, offsets, weights, n_out, height, width, out, 0, block)


def direct_rate() -> float:
    """The direct convolution's 16-lane multiply-adds per second on conv2 (15 -> 40
    channels, 3x3, 16x16), one slot repeated in cache."""
    channels, filters, kernel, size = 15, 40, 3, 16
    shape = shifted_shape(channels, kernel, size, size)
    rng = np.random.default_rng(0)
    weights = rng.random((channels, kernel, kernel, filters), dtype=np.float32)
    offsets, table = direct_taps(weights, np.arange(channels), shape)
    shifted = zeros_on_lines(int(np.prod(shape)))  # on cache lines, as the kernels keep them
    shifted[:] = rng.random(shifted.size, dtype=np.float32)
    out = np.zeros(filters * size * size, dtype=np.float32)
    n = 2000
    best = best_time(lambda: _repeat_slot(n, shifted, shape[3], offsets, table, filters, size, size, out), repeat=3)
    return n * direct_multiply_adds(channels, kernel, filters, size, size) / best


def layer_times(network: evsim.Network, drive, labels, repeat: int = 3) -> dict:
    """Best-of-``repeat`` seconds per layer: inference forward, training forward, backward.
    The training forward is timed step by step as ``Network.forward`` runs it: a
    convolution run in one pass with the pooling after it takes the pair's time, the
    pooling none."""
    n = len(network.layers)
    infer, forward, backward = np.full(n, np.inf), np.full(n, np.inf), np.full(n, np.inf)
    for _ in range(repeat):
        events = drive
        for k, layer in enumerate(network.layers):
            start = time.perf_counter()
            events, _ = layer.forward(events, network.lif, False)
            infer[k] = min(infer[k], time.perf_counter() - start)
        events, k = drive, 0
        while k < n:
            start = time.perf_counter()
            events, ran = network.forward_layer(k, events)
            forward[k] = min(forward[k], time.perf_counter() - start)
            forward[k + 1:k + len(ran)] = 0.0
            k += len(ran)
        counts, traces = network.forward(drive)
        spent = {}
        originals = [layer.backward for layer in network.layers]
        for k, layer in enumerate(network.layers):
            def timed(*args, _backward=originals[k], _k=k, **kwargs):
                start = time.perf_counter()
                result = _backward(*args, **kwargs)
                spent[_k] = time.perf_counter() - start
                return result
            layer.backward = timed
        try:
            network.backward(traces, evsim.mse_rate(counts, labels, N_STEPS)[1])
        finally:
            for layer, original in zip(network.layers, originals):
                layer.backward = original
        for k in range(n):
            backward[k] = min(backward[k], spent.get(k, 0.0))
    return {"inference": infer.tolist(), "forward": forward.tolist(), "backward": backward.tolist()}


def conv_multiply_adds(network: evsim.Network, drive) -> int:
    """16-lane multiply-adds a slot of the network's convolutions does in
    ``Network.predict`` on the dense kernel each takes at its input's density (events
    taken as free): the fused pass's (:func:`evsim.kernels.conv_paths.pooled_path`, which
    may be Winograd's F(4x4, 3x3) or the events' taps) where a 2 x 2 average pooling
    follows, else the forward's."""
    total, events = 0, drive
    for k, layer in enumerate(network.layers):
        if isinstance(layer, SpikingConv2d):
            g, filters = layer.geometry, layer.alive_filters.size
            density = event_density(events.ptr, layer.n_in)
            path = forward_path(density, g, filters)
            above = network.layers[k + 1] if k + 1 < len(network.layers) else None
            if isinstance(above, Pool2d) and above.mode == "avg" and above.geometry.kernel == 2 and g.stride == 1:
                path = pooled_path(g, filters, density) or path
            if path in ("direct", "winograd", "winograd4"):
                total += dense_multiply_adds(g.in_channels, g.kernel, filters, g.out_height, g.out_width)[path]
        events, _ = layer.forward(events, network.lif, False)
    return total


def dead_shares(network: evsim.Network) -> list[float]:
    """Per layer, the share of its work a structure's dead units remove exactly: a
    convolution's dead filters, a linear layer's dead neurons, and for a pooling the
    dead filters of the convolution below it (it never touches their maps)."""
    shares, below = [], 0.0
    for layer in network.layers:
        if hasattr(layer, "alive_filters"):
            below = 1 - layer.alive_filters.size / layer.filters
            shares.append(below)
        elif hasattr(layer, "alive_index") and not hasattr(layer, "geometry"):
            shares.append(1 - layer.alive_index.size / layer.n_out)
        else:
            shares.append(below)
            below = 0.0
    return shares


def filter_share_for(target: float, forward: list, backward: list, shares: list, network: evsim.Network) -> float:
    """The share of the last convolution's filters that would have to be dead (the pooling
    after it following) for the Amdahl bound to reach ``target``, every other layer's dead
    share as it is; above 1: out of reach whatever that convolution loses."""
    conv = max(k for k, layer in enumerate(network.layers) if hasattr(layer, "alive_filters"))
    pair = [conv, conv + 1] if conv + 1 < len(network.layers) and not hasattr(network.layers[conv + 1], "store") \
        else [conv]
    spent = [f + b for f, b in zip(forward, backward)]
    in_pair = sum(spent[k] for k in pair)
    others = sum(t * (1 - s) for k, (t, s) in enumerate(zip(spent, shares)) if k not in pair)
    return (in_pair + others - sum(spent) / target) / in_pair


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--activity", type=float, default=0.06)
    parser.add_argument("--json")
    args = parser.parse_args()
    numba.set_num_threads(1)
    rng = np.random.default_rng(0)
    drive = evsim.dense_to_events(frames(rng, args.activity))
    labels = rng.integers(0, 10, BATCH)
    chains, rate = fma_peak(), direct_rate()
    # A real kernel's rate bounds the peak from below: on a shared host the register-only
    # chains have measured a quarter below the direct convolution (a neighbour on the same
    # multiply-add units), which would put the floors too low.
    peak = max(chains, rate)
    print(f"one core: multiply-add peak {peak / 1e9:.2f} G/s (16 lanes; register-only chains {chains / 1e9:.2f}, "
          f"the direct convolution on conv2 {rate / 1e9:.2f}, {rate / chains:.0%} of the chains)")
    with threadpool_limits(limits=1, user_api="blas"):
        full = evsim.Network.from_spec(SPEC, rng=1)
        sparse = pruned(evsim.Network.from_spec(SPEC, rng=1), np.random.default_rng(0))
        times = {"full": layer_times(full, drive, labels), "pruned": layer_times(sparse, drive, labels)}
    names = [type(layer).__name__ for layer in full.layers]
    for structure, t in times.items():
        for kind in ("inference", "forward", "backward"):
            print(f"{structure:6s} {kind:9s} ms per layer: "
                  + ", ".join(f"{name} {ms * 1e3:.1f}" for name, ms in zip(names, t[kind])))
    slots = N_STEPS * BATCH
    conv_work = slots * conv_multiply_adds(full, drive)
    conv_floor = conv_work / (2 * peak)
    # Network.predict runs each pooling inside the convolution below it.
    is_conv_or_pool = [hasattr(layer, "geometry") for layer in full.layers]
    rest = sum(ms for ms, fused in zip(times["full"]["inference"], is_conv_or_pool) if not fused) / 2
    floor = conv_floor + rest
    with threadpool_limits(limits=1, user_api="blas"):
        predict_s = best_time(lambda: full.predict(drive), repeat=3)
    result = {"machine": machine(), "fma_peak_per_core": peak, "fma_chains_per_core": chains, "direct_rate_conv2": rate, "layer_s": times,
              "layers": names, "inference_floor_s_2_cores": floor, "conv_floor_s_2_cores": conv_floor,
              "predict_s_1_thread": predict_s}
    print(f"inference floor at 2 cores: convolutions {conv_work / 1e6:.0f} M multiply-adds at peak = "
          f"{conv_floor * 1e3:.1f} ms, fully connected layers {rest * 1e3:.1f} ms (measured, halved) -> "
          f"{floor * 1e3:.1f} ms a batch, {BATCH / floor:.0f} samples/s")
    print(f"Network.predict at 1 thread: {predict_s * 1e3:.1f} ms a batch, {predict_s / (2 * floor):.2f}x the floor's "
          f"time on one core")
    if importlib.util.find_spec("torch") is not None:
        from benchmarks.torch_conv import measure as measure_torch
        torch_rate = measure_torch(2, 3, args.activity)["inference_samples_s_best"]
        result["torch_inference_samples_s_2_threads"] = torch_rate
        print(f"PyTorch inference at 2 threads {torch_rate:.0f} samples/s: the floor is "
              f"{BATCH / floor / torch_rate:.1f}x it (target 8x)")
    shares = dead_shares(sparse)
    total = sum(times["full"]["forward"]) + sum(times["full"]["backward"])
    ideal = sum((f + b) * (1 - s) for f, b, s in zip(times["full"]["forward"], times["full"]["backward"], shares))
    measured = sum(times["pruned"]["forward"]) + sum(times["pruned"]["backward"])
    needed = filter_share_for(1.5, times["full"]["forward"], times["full"]["backward"], shares, sparse)
    result.update({"dead_shares": shares, "pruned_bound": total / ideal, "pruned_measured": total / measured,
                   "conv_filter_share_for_1_5x": needed})
    print("dead share per layer: " + ", ".join(f"{name} {s:.0%}" for name, s in zip(names, shares)))
    print(f"training step: full {total * 1e3:.0f} ms; pruned structure, every dead unit's work removed exactly "
          f"(Amdahl) {ideal * 1e3:.0f} ms = {total / ideal:.2f}x; measured {measured * 1e3:.0f} ms = "
          f"{total / measured:.2f}x (target 1.5x)")
    print(f"1.5x would need {needed:.0%} of the last convolution's filters dead, the other layers' dead shares "
          f"as they are" + (" (out of reach)" if needed > 1 else ""))
    save_json(args.json, result)


if __name__ == "__main__":
    main()
