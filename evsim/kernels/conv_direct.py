"""Stride-1 convolution of a dense map, register-blocked: the core of the dense paths of a
convolution's currents and of the error it sends down.

``out[o, y, x] = sum_{i, ky, kx} w[i, ky, kx, o] * src[i, y + ky - P, x + kx - P]``
(zero outside ``src``). A slot's map is first copied into ``shifted``, one copy per
``kx`` with the row already moved by ``kx - P`` and zero borders, float32
``[K, C_src, H_out + K + 2, W_pad]`` (``W_pad`` = the output width in whole 16-lane
vectors), so every load below is a whole, aligned vector; the copy is made once per slot
and its borders stay zero from slot to slot. Then each register block of output rows x
output channels x 16 cells keeps its sums in registers through all the taps
``(i, ky, kx)``: with AVX-512, 4 rows x 5 channels, per tap 4 row loads and 5 weights
feeding 20 fused multiply-adds; with AVX2, 2 x 2 (:data:`BLOCK_ROWS`,
:data:`BLOCK_CHANNELS`). A last block of one channel is summed alone rather than padded.
Unaligned row loads instead split and ran at a third of the multiply-add rate
(benchmarks/RESULTS.md). Each sum runs over the taps in order whatever the block, so the
results do not depend on the machine's kind.

``taps`` lists the ``(i, ky, kx)`` to sum (channels without any kernel left out) as
offsets into ``shifted`` and rows of ``weights`` ``[n_taps, O_pad]`` (``O_pad`` a multiple
of :data:`BLOCK_CHANNELS`, zeros for missing kernels and padding channels).
"""
from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import overload

from evsim.kernels.conv_geometry import ConvGeometry, dense_filter_matrix
from evsim.kernels.machine import KIND
from evsim.kernels.propagate import lif_leak_update
from evsim.kernels.simd import (LANES, even_lanes, fma, load, load_bytes, odd_lanes, splat, store, store_bytes,
                                stream)

# Output rows and channels of a register block. AVX-512: 20 sums, 4 rows and a weight in
# flight fit its 32 vector registers. Wider blocks load less per multiply-add: 4 x 6 ran
# 1.2-1.3x as fast as 4 x 4 per multiply-add, 4 x 5 as fast as 4 x 6 on conv2's forward
# and 1.12x faster on conv1's forward and conv2's input gradient, whose 15 channels it
# does not pad (the paper's networks have 15 and 40; benchmarks/RESULTS.md). AVX2 holds a
# 16-lane vector in two of its 16 registers: 4 x 5 spilled, and 2 x 2 (8 sums, 16
# registers with its rows and weight) ran 1.3-1.8x as fast on the paper's layers
# (bench_register_blocks; RESULTS.md, "Register blocks for AVX2"). One-row blocks ran
# faster still on conv2's input gradient, but the fused pooling takes rows in pairs.
# A last block of one channel (36 filters of 40
# alive, say) is summed alone, in about a third of a 4 x 5 block's time; two or more alone
# cost as much as the padded block.
REGISTER_BLOCKS = {"avx512": (4, 5), "avx2": (2, 2)}
BLOCK_ROWS, BLOCK_CHANNELS = REGISTER_BLOCKS[KIND]
# The weight gradient's register block: taps x blocks of dL/du (AVX2: 2 x 2 ran 1.9-2.0x
# as fast as 4 x 4 on the paper's layers).
PRODUCT_REGISTER_BLOCKS = {"avx512": (4, 4), "avx2": (2, 2)}
PRODUCT_TAPS, PRODUCT_BLOCKS = PRODUCT_REGISTER_BLOCKS[KIND]


def shifted_shape(channels: int, kernel: int, out_height: int, out_width: int) -> tuple[int, int, int, int]:
    """Shape of the shifted copies of a ``channels``-channel map feeding an
    ``out_height x out_width`` output: rows for every block of :data:`BLOCK_ROWS`."""
    rows = -(-out_height // BLOCK_ROWS) * BLOCK_ROWS + kernel - 1
    return kernel, channels, rows, -(-out_width // LANES) * LANES


def direct_multiply_adds(in_channels: int, kernel: int, n_out: int, out_height: int, out_width: int,
                         kind: str = KIND) -> int:
    """16-lane multiply-adds :func:`direct_slot` does for one slot on a ``kind`` machine:
    every tap of every source channel, for the :func:`summed_channels` and each output row
    in whole vectors."""
    return in_channels * kernel * kernel * summed_channels(n_out, kind) * out_height * -(-out_width // LANES)


def summed_channels(n_out: int, kind: str = KIND) -> int:
    """Output channels a slot's sums are computed for on a ``kind`` machine: ``n_out``
    padded to whole register blocks (:func:`padded_to_blocks`)."""
    return padded_to_blocks(n_out, REGISTER_BLOCKS[kind][1])


def padded_to_blocks(n_out: int, block: int) -> int:
    """``n_out`` outputs padded to whole register blocks of ``block``, except a last block
    of one output, summed alone."""
    tail = n_out % block
    return n_out - tail + (tail if tail <= 1 else block)


def _tap_grid(used_channels: np.ndarray, kernel: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(c, ky, kx)`` int64 of every tap of the used source channels, channel-major."""
    c, ky, kx = np.meshgrid(np.asarray(used_channels, dtype=np.int64), np.arange(kernel), np.arange(kernel),
                            indexing="ij")
    return c.ravel(), ky.ravel(), kx.ravel()


def tap_offsets(used_channels: np.ndarray, shape: tuple[int, int, int, int]) -> np.ndarray:
    """int64 offsets into the shifted copies of ``shape`` of every tap ``(c, ky, kx)`` of the
    source channels ``used_channels`` (those with a kernel), channel-major."""
    kernel, channels, rows, width = shape
    c, ky, kx = _tap_grid(used_channels, kernel)
    return np.ascontiguousarray(((kx * channels + c) * rows + ky) * width)


def direct_taps(weights: np.ndarray, used_channels: np.ndarray, shape: tuple[int, int, int, int]):
    """``(offsets, rows)`` of the taps to sum: ``weights`` float32 ``[C_src, K, K, O]``,
    ``used_channels`` the source channels with a kernel; ``offsets`` from
    :func:`tap_offsets`, ``rows`` float32 ``[n_taps, O_pad]`` (a multiple of :data:`BLOCK_CHANNELS`)."""
    n_out = weights.shape[3]
    c, ky, kx = _tap_grid(used_channels, shape[0])
    table = np.zeros((c.size, -(-n_out // BLOCK_CHANNELS) * BLOCK_CHANNELS), dtype=np.float32)
    table[:, :n_out] = weights[c, ky, kx]
    return tap_offsets(used_channels, shape), table


def _kernels(indptr: np.ndarray, columns: np.ndarray, data: np.ndarray, geometry: ConvGeometry,
             n_filters: int) -> np.ndarray:
    """float32 ``[F_alive, C, K, K]``, zeros for missing kernels."""
    g = geometry
    return dense_filter_matrix(indptr, columns, data, n_filters).reshape(n_filters, g.in_channels, g.kernel, g.kernel)


def forward_taps(indptr: np.ndarray, columns: np.ndarray, data: np.ndarray, geometry: ConvGeometry, n_filters: int):
    """``(shape, offsets, rows)`` of a convolution's forward (source: its input map; output
    channels: its ``n_filters`` alive filters) from its block CSR."""
    g = geometry
    shape = shifted_shape(g.in_channels, g.kernel, g.out_height, g.out_width)
    weights = np.ascontiguousarray(_kernels(indptr, columns, data, g, n_filters).transpose(1, 2, 3, 0))
    offsets, rows = direct_taps(weights, np.flatnonzero(np.diff(indptr)), shape)
    return shape, offsets, rows


def backward_taps(indptr: np.ndarray, columns: np.ndarray, data: np.ndarray, geometry: ConvGeometry,
                  n_filters: int):
    """``(shape, offsets, rows)`` of a stride-1 convolution's transposed convolution: the
    convolution of dL/du (source: the ``n_filters`` alive filters) with the flipped
    kernels into the input channels."""
    g = geometry
    shape = shifted_shape(n_filters, g.kernel, g.height, g.width)
    flipped = _kernels(indptr, columns, data, g, n_filters)[:, :, ::-1, ::-1]
    offsets, rows = direct_taps(np.ascontiguousarray(flipped.transpose(0, 2, 3, 1)),
                                np.flatnonzero(np.bincount(columns, minlength=n_filters)), shape)
    return shape, offsets, rows


@njit(cache=True)
def zeros_on_lines(n):
    """float32 zeros ``[n]`` starting on a cache line: the row loads of
    :func:`direct_slot` are then whole lines (split ones made it 1.3x slower)."""
    buffer = np.zeros(n + LANES, dtype=np.float32)
    skip = (-(buffer.ctypes.data // 4)) % LANES
    return buffer[skip:skip + n]


def _cells(source, offset, n, scale):
    """Cells ``offset..offset+n`` of ``source`` as float32 lanes (compiled by the overload below)."""
    raise NotImplementedError("njit only")


@overload(_cells)
def _cells_overload(source, offset, n, scale):
    """float32 cells as they are; byte cells (the 2 x 2 window counts a fused convolution
    and pooling hand on, a quarter of a float32 map's memory) times ``scale``, exact for a
    power of two. Chosen at compile time: no test in the loop."""
    if source.dtype == types.uint8:
        return lambda source, offset, n, scale: scale * load_bytes(source, offset, n)
    return lambda source, offset, n, scale: load(source, offset, n)


@njit(cache=True)
def fill_rows(source, first, channels, height, width, pad, kernel, rows, width_pad, shifted, scale=np.float32(1.0)):
    """The shifted copies of a dense map ``source[first + c*H*W + y*W + x]`` (float32, or
    byte counts read times ``scale``): row ``y`` of channel ``c`` into row ``y + pad`` of
    copy ``kx``, moved by ``kx - pad`` (16 lanes at a time). Cells outside the map are
    left as they are (zeros)."""
    for kx in range(kernel):
        lo, hi = max(0, pad - kx), min(width_pad, width + pad - kx)
        for c in range(channels):
            for y in range(max(0, -pad), min(height, rows - pad)):
                dst = ((kx * channels + c) * rows + y + pad) * width_pad
                src = first + (c * height + y) * width + kx - pad
                for x in range(lo, hi, LANES):
                    n = min(LANES, hi - x)
                    store(shifted, dst + x, _cells(source, src + x, n, scale), n)


@njit(cache=True)
def shift_events(ptr, idx, val, s, image, channels, height, width, pad, kernel, rows, width_pad, shifted):
    """The shifted copies of slot ``s``'s events: written into the zero map ``image``
    ``[C*H*W]``, copied by :func:`fill_rows`, and zeroed in ``image`` again."""
    for e in range(ptr[s], ptr[s + 1]):
        image[idx[e]] = val[e]
    fill_rows(image, 0, channels, height, width, pad, kernel, rows, width_pad, shifted)
    for e in range(ptr[s], ptr[s + 1]):
        image[idx[e]] = 0.0


@njit(cache=True)
def block_scratch():
    """The scratch a task passes to :func:`direct_slot` and :func:`direct_slot_lif`: one
    register block's sums, on a cache line."""
    return zeros_on_lines(BLOCK_CHANNELS * BLOCK_ROWS * LANES)


@njit(cache=True, inline="always")
def _block_sums_4x5(shifted, width_pad, offsets, weights, c0, base, block):
    """The 20 sums of the 4 x 5 register block at output channel ``c0`` and flat position
    ``base`` (``y0*W_pad + x0``) of the shifted copies, into ``block``
    ``[5 * 4 * 16]`` (channel-major, then row)."""
    zero = splat(np.float32(0.0))
    a00, a01, a02, a03 = zero, zero, zero, zero
    a10, a11, a12, a13 = zero, zero, zero, zero
    a20, a21, a22, a23 = zero, zero, zero, zero
    a30, a31, a32, a33 = zero, zero, zero, zero
    a40, a41, a42, a43 = zero, zero, zero, zero
    for j in range(offsets.shape[0]):
        p = offsets[j] + base
        r0 = load(shifted, p, LANES)
        r1 = load(shifted, p + width_pad, LANES)
        r2 = load(shifted, p + 2 * width_pad, LANES)
        r3 = load(shifted, p + 3 * width_pad, LANES)
        w = weights[j, c0]
        a00, a01, a02, a03 = fma(w, r0, a00), fma(w, r1, a01), fma(w, r2, a02), fma(w, r3, a03)
        w = weights[j, c0 + 1]
        a10, a11, a12, a13 = fma(w, r0, a10), fma(w, r1, a11), fma(w, r2, a12), fma(w, r3, a13)
        w = weights[j, c0 + 2]
        a20, a21, a22, a23 = fma(w, r0, a20), fma(w, r1, a21), fma(w, r2, a22), fma(w, r3, a23)
        w = weights[j, c0 + 3]
        a30, a31, a32, a33 = fma(w, r0, a30), fma(w, r1, a31), fma(w, r2, a32), fma(w, r3, a33)
        w = weights[j, c0 + 4]
        a40, a41, a42, a43 = fma(w, r0, a40), fma(w, r1, a41), fma(w, r2, a42), fma(w, r3, a43)
    store(block, 0, a00, LANES)
    store(block, 16, a01, LANES)
    store(block, 32, a02, LANES)
    store(block, 48, a03, LANES)
    store(block, 64, a10, LANES)
    store(block, 80, a11, LANES)
    store(block, 96, a12, LANES)
    store(block, 112, a13, LANES)
    store(block, 128, a20, LANES)
    store(block, 144, a21, LANES)
    store(block, 160, a22, LANES)
    store(block, 176, a23, LANES)
    store(block, 192, a30, LANES)
    store(block, 208, a31, LANES)
    store(block, 224, a32, LANES)
    store(block, 240, a33, LANES)
    store(block, 256, a40, LANES)
    store(block, 272, a41, LANES)
    store(block, 288, a42, LANES)
    store(block, 304, a43, LANES)


@njit(cache=True, inline="always")
def _channel_sums_4(shifted, width_pad, offsets, weights, c, base, block):
    """:func:`_block_sums_4x5` for output channel ``c`` alone, into the block's first sums:
    a last block of one channel."""
    zero = splat(np.float32(0.0))
    a0, a1, a2, a3 = zero, zero, zero, zero
    for j in range(offsets.shape[0]):
        p = offsets[j] + base
        w = weights[j, c]
        a0 = fma(w, load(shifted, p, LANES), a0)
        a1 = fma(w, load(shifted, p + width_pad, LANES), a1)
        a2 = fma(w, load(shifted, p + 2 * width_pad, LANES), a2)
        a3 = fma(w, load(shifted, p + 3 * width_pad, LANES), a3)
    store(block, 0, a0, LANES)
    store(block, 16, a1, LANES)
    store(block, 32, a2, LANES)
    store(block, 48, a3, LANES)


@njit(cache=True, inline="always")
def _block_sums_2x2(shifted, width_pad, offsets, weights, c0, base, block):
    """The 4 sums of the 2 x 2 register block at output channel ``c0`` and flat position
    ``base``, into ``block`` ``[2 * 2 * 16]`` (channel-major, then row)."""
    zero = splat(np.float32(0.0))
    a00, a01, a10, a11 = zero, zero, zero, zero
    for j in range(offsets.shape[0]):
        p = offsets[j] + base
        r0 = load(shifted, p, LANES)
        r1 = load(shifted, p + width_pad, LANES)
        w = weights[j, c0]
        a00, a01 = fma(w, r0, a00), fma(w, r1, a01)
        w = weights[j, c0 + 1]
        a10, a11 = fma(w, r0, a10), fma(w, r1, a11)
    store(block, 0, a00, LANES)
    store(block, 16, a01, LANES)
    store(block, 32, a10, LANES)
    store(block, 48, a11, LANES)


@njit(cache=True, inline="always")
def _channel_sums_2(shifted, width_pad, offsets, weights, c, base, block):
    """:func:`_block_sums_2x2` for output channel ``c`` alone, into the block's first sums."""
    zero = splat(np.float32(0.0))
    a0, a1 = zero, zero
    for j in range(offsets.shape[0]):
        p = offsets[j] + base
        w = weights[j, c]
        a0 = fma(w, load(shifted, p, LANES), a0)
        a1 = fma(w, load(shifted, p + width_pad, LANES), a1)
    store(block, 0, a0, LANES)
    store(block, 16, a1, LANES)


# This machine's register block (see BLOCK_ROWS).
_block_sums, _channel_sums = {"avx512": (_block_sums_4x5, _channel_sums_4),
                               "avx2": (_block_sums_2x2, _channel_sums_2)}[KIND]


@njit(cache=True, inline="always")
def _sums(shifted, width_pad, offsets, weights, c0, n_out, base, block):
    """The sums of the block at output channel ``c0``."""
    if n_out - c0 == 1:
        _channel_sums(shifted, width_pad, offsets, weights, c0, base, block)
    else:
        _block_sums(shifted, width_pad, offsets, weights, c0, base, block)


@njit(cache=True)
def direct_slot(shifted, width_pad, offsets, weights, n_out, out_height, out_width, out, o, block):
    """One slot: ``out[o + c*Ho*Wo + y*Wo + x]`` for the ``n_out`` output channels, from
    the shifted copies (flat) and the taps (``block``: :func:`block_scratch`). See the
    module docstring."""
    cells = out_height * out_width
    for c0 in range(0, n_out, BLOCK_CHANNELS):
        n_channels = min(BLOCK_CHANNELS, n_out - c0)
        for y0 in range(0, out_height, BLOCK_ROWS):
            n_rows = min(BLOCK_ROWS, out_height - y0)
            for x0 in range(0, out_width, LANES):
                lanes = min(LANES, out_width - x0)
                _sums(shifted, width_pad, offsets, weights, c0, n_out, y0 * width_pad + x0, block)
                for c in range(n_channels):
                    for r in range(n_rows):
                        at = o + (c0 + c) * cells + (y0 + r) * out_width + x0
                        sums = load(block, (c * BLOCK_ROWS + r) * LANES, LANES)
                        if lanes == LANES:  # a plain store (see direct_slot_lif)
                            store(out, at, sums, LANES)
                        else:
                            store(out, at, sums, lanes)


@njit(cache=True, inline="always")
def window_counts(top, bottom):
    """The spikes (1.0 or 0.0) in each 2 x 2 window of two rows of 16 cells: lanes 0-7."""
    rows = top + bottom
    return even_lanes(rows, rows) + odd_lanes(rows, rows)


@njit(cache=True)
def direct_slot_lif(shifted, width_pad, offsets, weights, n_out, out_height, out_width, bias, leak, decay, v_th, hard,
                    channel_of, pooled, spikes, u_out, block):
    """One slot of a stride-1 convolution and its LIF step: the sums of :func:`direct_slot`
    go through :func:`evsim.kernels.propagate.lif_leak_update` while in the core's cache
    and are never written out. ``bias`` float32 per output channel (padded to
    :data:`BLOCK_CHANNELS`); ``leak`` float32 ``[n_out*Ho*Wo]`` the state; ``block``:
    :func:`block_scratch`. Written where given (each of length 0 to write none): the
    slot's rows of ``spikes`` (uint8) and membrane ``u_out`` (float32), and the 2 x 2
    average pooling of its spikes (PyTorch's floor rule), pooled while the block's spikes
    are in the cache: each window's spike count (0-4; the pooled value is a quarter of
    it), output channel ``c`` to channel ``channel_of[c]`` of ``pooled`` uint8
    ``[C_pool, Ho // 2, Wo // 2]`` (flat). Inference without traces writes only the
    counts; a training forward all three, or the first two where no pooling follows."""
    cells = out_height * out_width
    pooled_height, pooled_width = out_height // 2, out_width // 2
    write_spikes, record, pools = spikes.shape[0] > 0, u_out.shape[0] > 0, pooled.shape[0] > 0
    for c0 in range(0, n_out, BLOCK_CHANNELS):
        n_channels = min(BLOCK_CHANNELS, n_out - c0)
        for y0 in range(0, out_height, BLOCK_ROWS):
            n_rows = min(BLOCK_ROWS, out_height - y0)
            for x0 in range(0, out_width, LANES):
                lanes = min(LANES, out_width - x0)
                _sums(shifted, width_pad, offsets, weights, c0, n_out, y0 * width_pad + x0, block)
                for c in range(n_channels):
                    b = splat(bias[c0 + c])
                    for r in range(n_rows):
                        unit = (c0 + c) * cells + (y0 + r) * out_width + x0
                        at = (c * BLOCK_ROWS + r) * LANES
                        drive = load(block, at, LANES) + b
                        # Whole vectors compile to plain loads and stores (masked ones ran
                        # 10-20 % slower here).
                        if lanes == LANES:
                            u, fired = lif_leak_update(drive, leak, unit, LANES, decay, v_th, hard)
                            if write_spikes:
                                store_bytes(spikes, unit, fired, LANES)
                            if record:
                                stream(u_out, unit, u, LANES)
                        else:
                            u, fired = lif_leak_update(drive, leak, unit, lanes, decay, v_th, hard)
                            if write_spikes:
                                store_bytes(spikes, unit, fired, lanes)
                            if record:
                                store(u_out, unit, u, lanes)
                        if pools:
                            store(block, at, fired, LANES)
                    if pools:
                        first = channel_of[c0 + c] * pooled_height + y0 // 2
                        for pair in range(n_rows // 2):
                            at = (c * BLOCK_ROWS + 2 * pair) * LANES
                            store_bytes(pooled, (first + pair) * pooled_width + x0 // 2,
                                        window_counts(load(block, at, LANES), load(block, at + LANES, LANES)),
                                        lanes // 2)


@njit(cache=True)
def direct_products_4x4(shifted, width_pad, offsets, grad, n_blocks, out_height, sums):
    """The weight gradient's sums of one slot: for every tap ``j`` (``offsets``, a multiple
    of 4 long) and block ``f`` of ``grad`` (dL/du with its rows padded to ``width_pad``
    with zeros, ``grad[(f*Ho + y)*W_pad + x]``),
    ``sums[(j*G4 + f)*16 + lane] += sum_y shifted[offsets[j] + y*W_pad + x] * grad[f, y, x]``
    lane by lane (``x = x0 + lane``; ``G4`` = ``n_blocks`` rounded up to 4). A block of 4
    taps x 4 blocks keeps its 16 sums in registers through the rows; the zero padding of
    dL/du cancels the lanes past the map's width."""
    plane = out_height * width_pad
    blocks4 = -(-n_blocks // 4) * 4
    zero = splat(np.float32(0.0))
    last = n_blocks - 1
    for j0 in range(0, offsets.shape[0], 4):
        t0, t1, t2, t3 = offsets[j0], offsets[j0 + 1], offsets[j0 + 2], offsets[j0 + 3]
        for f0 in range(0, n_blocks, 4):
            g0, g1 = f0 * plane, min(f0 + 1, last) * plane
            g2, g3 = min(f0 + 2, last) * plane, min(f0 + 3, last) * plane
            a00, a01, a02, a03 = zero, zero, zero, zero
            a10, a11, a12, a13 = zero, zero, zero, zero
            a20, a21, a22, a23 = zero, zero, zero, zero
            a30, a31, a32, a33 = zero, zero, zero, zero
            for p in range(0, plane, LANES):
                e0, e1 = load(grad, g0 + p, LANES), load(grad, g1 + p, LANES)
                e2, e3 = load(grad, g2 + p, LANES), load(grad, g3 + p, LANES)
                r = load(shifted, t0 + p, LANES)
                a00, a01, a02, a03 = fma(r, e0, a00), fma(r, e1, a01), fma(r, e2, a02), fma(r, e3, a03)
                r = load(shifted, t1 + p, LANES)
                a10, a11, a12, a13 = fma(r, e0, a10), fma(r, e1, a11), fma(r, e2, a12), fma(r, e3, a13)
                r = load(shifted, t2 + p, LANES)
                a20, a21, a22, a23 = fma(r, e0, a20), fma(r, e1, a21), fma(r, e2, a22), fma(r, e3, a23)
                r = load(shifted, t3 + p, LANES)
                a30, a31, a32, a33 = fma(r, e0, a30), fma(r, e1, a31), fma(r, e2, a32), fma(r, e3, a33)
            s = (j0 * blocks4 + f0) * LANES
            _add_sums(sums, s, blocks4 * LANES, a00, a01, a02, a03, a10, a11, a12, a13)
            _add_sums(sums, s + 2 * blocks4 * LANES, blocks4 * LANES, a20, a21, a22, a23, a30, a31, a32, a33)


@njit(cache=True)
def direct_products_2x2(shifted, width_pad, offsets, grad, n_blocks, out_height, sums):
    """:func:`direct_products_4x4` in blocks of 2 taps x 2 blocks of dL/du (``offsets`` a
    multiple of 2 long, ``G2`` = ``n_blocks`` rounded up to 2 in place of ``G4``)."""
    plane = out_height * width_pad
    blocks2 = -(-n_blocks // 2) * 2
    zero = splat(np.float32(0.0))
    last = n_blocks - 1
    for j0 in range(0, offsets.shape[0], 2):
        t0, t1 = offsets[j0], offsets[j0 + 1]
        for f0 in range(0, n_blocks, 2):
            g0, g1 = f0 * plane, min(f0 + 1, last) * plane
            a00, a01, a10, a11 = zero, zero, zero, zero
            for p in range(0, plane, LANES):
                e0, e1 = load(grad, g0 + p, LANES), load(grad, g1 + p, LANES)
                r = load(shifted, t0 + p, LANES)
                a00, a01 = fma(r, e0, a00), fma(r, e1, a01)
                r = load(shifted, t1 + p, LANES)
                a10, a11 = fma(r, e0, a10), fma(r, e1, a11)
            s = (j0 * blocks2 + f0) * LANES
            t = s + blocks2 * LANES
            store(sums, s, load(sums, s, LANES) + a00, LANES)
            store(sums, s + LANES, load(sums, s + LANES, LANES) + a01, LANES)
            store(sums, t, load(sums, t, LANES) + a10, LANES)
            store(sums, t + LANES, load(sums, t + LANES, LANES) + a11, LANES)


# This machine's weight-gradient block (see PRODUCT_TAPS).
direct_products = {"avx512": direct_products_4x4, "avx2": direct_products_2x2}[KIND]


@njit(cache=True)
def pad_rows(source, first, n_blocks, out_height, out_width, width_pad, padded):
    """``padded[(f*Ho + y)*W_pad + x] = source[first + (f*Ho + y)*Wo + x]`` for ``x < Wo``
    (the lanes past it keep their zeros)."""
    for r in range(n_blocks * out_height):
        for x in range(0, out_width, LANES):
            n = min(LANES, out_width - x)
            store(padded, r * width_pad + x, load(source, first + r * out_width + x, n), n)


@njit(cache=True, inline="always")
def _add_sums(sums, s, tap_stride, a0, a1, a2, a3, b0, b1, b2, b3):
    """Add two taps' sums over 4 blocks (``a`` at ``s``, ``b`` one tap on) into ``sums``."""
    store(sums, s, load(sums, s, LANES) + a0, LANES)
    store(sums, s + LANES, load(sums, s + LANES, LANES) + a1, LANES)
    store(sums, s + 2 * LANES, load(sums, s + 2 * LANES, LANES) + a2, LANES)
    store(sums, s + 3 * LANES, load(sums, s + 3 * LANES, LANES) + a3, LANES)
    t = s + tap_stride
    store(sums, t, load(sums, t, LANES) + b0, LANES)
    store(sums, t + LANES, load(sums, t + LANES, LANES) + b1, LANES)
    store(sums, t + 2 * LANES, load(sums, t + 2 * LANES, LANES) + b2, LANES)
    store(sums, t + 3 * LANES, load(sums, t + 3 * LANES, LANES) + b3, LANES)
