"""Register block shapes of the dense convolution kernels on this machine, one slot's inner
loops alone: the direct convolution's sums (``rows x channels`` blocks, as
:func:`evsim.kernels.conv_direct.direct_slot` runs them; Winograd's products have the same
loop over tile vectors) and the weight gradient's products (``taps x blocks``, as
:func:`evsim.kernels.conv_direct.direct_products_4x4`), on the paper's N-MNIST layers.

Each shape's loop is generated from one template, so the shapes differ only in their
blocks; the sums are those of the kernels (16-lane vectors of :mod:`evsim.kernels.simd`).
Prints the best of ``--repeat`` rounds of 20 calls, as time a slot and as 16-lane
float32 multiply-adds a second (padding included). AVX-512 holds 32 vector registers of 16 lanes;
AVX2 16 of 8, so a 16-lane sum takes two: the block that fits differs.

Run: python -m benchmarks.bench_register_blocks [--repeat 15]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from numba import njit

from evsim.kernels.machine import KIND
from evsim.kernels.simd import LANES, fma, load, splat, store

# (name, input channels, output channels or dL/du blocks, map side): conv1, conv2, and
# conv2's transposed convolution (the input gradient).
LAYERS = [("conv1", 2, 15, 32), ("conv2", 15, 40, 16), ("conv2 input grad", 40, 15, 16)]
SUM_BLOCKS = [(4, 5), (4, 3), (2, 3), (3, 2), (2, 2), (1, 4), (1, 5), (2, 4)]
PRODUCT_BLOCKS = [(4, 4), (2, 2), (2, 3), (3, 2), (2, 4), (4, 2), (1, 4)]
NAMESPACE = {"np": np, "splat": splat, "load": load, "fma": fma, "store": store, "LANES": LANES}


def _compiled(lines: list[str], name: str):
    namespace = dict(NAMESPACE)
    exec("\n".join(lines), namespace)  # noqa: S102 - the benchmark's own template
    return njit(namespace[name])


def sums_kernel(rows: int, channels: int):
    """The direct convolution's slot with ``rows x channels`` register blocks."""
    lines = ["def slot(shifted, width_pad, offsets, weights, n_out, out_height, out_width, block):",
             "    zero = splat(np.float32(0.0))",
             f"    for c0 in range(0, n_out, {channels}):",
             f"        for y0 in range(0, out_height, {rows}):",
             "            for x0 in range(0, out_width, LANES):",
             "                base = y0 * width_pad + x0"]
    lines += [f"                a{c}_{r} = zero" for c in range(channels) for r in range(rows)]
    lines += ["                for j in range(offsets.shape[0]):", "                    p = offsets[j] + base"]
    lines += [f"                    r{r} = load(shifted, p + {r} * width_pad, LANES)" for r in range(rows)]
    for c in range(channels):
        lines.append(f"                    w = weights[j, c0 + {c}]")
        lines += [f"                    a{c}_{r} = fma(w, r{r}, a{c}_{r})" for r in range(rows)]
    lines += [f"                store(block, {(c * rows + r) * LANES}, a{c}_{r}, LANES)"
              for c in range(channels) for r in range(rows)]
    return _compiled(lines, "slot")


def products_kernel(taps: int, blocks: int):
    """The weight gradient's products of one slot with ``taps x blocks`` register blocks."""
    lines = ["def products(shifted, width_pad, offsets, grad, n_blocks, out_height, sums):",
             "    plane = out_height * width_pad",
             f"    padded = -(-n_blocks // {blocks}) * {blocks}",
             "    zero = splat(np.float32(0.0))",
             f"    for j0 in range(0, offsets.shape[0], {taps}):"]
    lines += [f"        t{t} = offsets[j0 + {t}]" for t in range(taps)]
    lines.append(f"        for f0 in range(0, n_blocks, {blocks}):")
    lines += [f"            g{b} = min(f0 + {b}, n_blocks - 1) * plane" for b in range(blocks)]
    lines += [f"            a{t}_{b} = zero" for t in range(taps) for b in range(blocks)]
    lines.append("            for p in range(0, plane, LANES):")
    lines += [f"                e{b} = load(grad, g{b} + p, LANES)" for b in range(blocks)]
    for t in range(taps):
        lines.append(f"                r = load(shifted, t{t} + p, LANES)")
        lines += [f"                a{t}_{b} = fma(r, e{b}, a{t}_{b})" for b in range(blocks)]
    lines.append("            s = (j0 * padded + f0) * LANES")
    for t in range(taps):
        for b in range(blocks):
            lines.append(f"            q = s + ({t} * padded + {b}) * LANES")
            lines.append(f"            store(sums, q, load(sums, q, LANES) + a{t}_{b}, LANES)")
    return _compiled(lines, "products")


def _best(call, repeat: int) -> float:
    call()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(20):
            call()
        best = min(best, (time.perf_counter() - start) / 20)
    return best


def _shifted(rng, channels: int, side: int, rows: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Shifted copies of a random map (3 x 3 kernel) and the taps' offsets into them."""
    width_pad = -(-side // LANES) * LANES
    shifted = rng.random(3 * channels * rows * width_pad + 4 * LANES, dtype=np.float32)
    offsets = [((kx * channels + c) * rows + ky) * width_pad for c in range(channels) for ky in range(3)
               for kx in range(3)]
    return shifted, np.array(offsets, dtype=np.int64), width_pad


def time_sums(rng, rows: int, channels: int, c_in: int, c_out: int, side: int, repeat: int) -> tuple[float, float]:
    """``(us a slot, G multiply-adds a second)`` of the direct sums."""
    padded_rows = -(-side // rows) * rows
    shifted, offsets, width_pad = _shifted(rng, c_in, side, padded_rows + 2)
    n_out = -(-c_out // channels) * channels
    weights = rng.random((offsets.size, n_out), dtype=np.float32)
    block = np.zeros(rows * channels * LANES, np.float32)
    kernel = sums_kernel(rows, channels)
    seconds = _best(lambda: kernel(shifted, width_pad, offsets, weights, n_out, side, side, block), repeat)
    return 1e6 * seconds, offsets.size * n_out * padded_rows * width_pad / seconds / 1e9


def time_products(rng, taps: int, blocks: int, c_in: int, n_blocks: int, side: int,
                  repeat: int) -> tuple[float, float]:
    """``(us a slot, G multiply-adds a second)`` of the weight gradient's products."""
    shifted, offsets, width_pad = _shifted(rng, c_in, side, side + 2)
    offsets = np.concatenate([offsets, np.repeat(offsets[:1], -offsets.size % taps)])
    grad = rng.random(n_blocks * side * width_pad, dtype=np.float32)
    padded = -(-n_blocks // blocks) * blocks
    sums = np.zeros(offsets.size * padded * LANES, np.float32)
    kernel = products_kernel(taps, blocks)
    seconds = _best(lambda: kernel(shifted, width_pad, offsets, grad, n_blocks, side, sums), repeat)
    return 1e6 * seconds, offsets.size * padded * side * width_pad / seconds / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"machine kind {KIND}; evsim's blocks: direct sums 4x5 (AVX-512) / 2x2 (AVX2), products 4x4 / 2x2")
    for name, c_in, c_out, side in LAYERS:
        for rows, channels in SUM_BLOCKS:
            us, rate = time_sums(rng, rows, channels, c_in, c_out, side, args.repeat)
            print(f"{name:17s} sums     {rows}x{channels}: {us:7.1f} us a slot  {rate:5.1f} G multiply-adds/s")
    for name, c_in, n_blocks, side in LAYERS[:2]:
        for taps, blocks in PRODUCT_BLOCKS:
            us, rate = time_products(rng, taps, blocks, c_in, n_blocks, side, args.repeat)
            print(f"{name:17s} products {taps}x{blocks}: {us:7.1f} us a slot  {rate:5.1f} G multiply-adds/s")


if __name__ == "__main__":
    main()
