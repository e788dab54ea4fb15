"""Stride-1 3 x 3 convolution with its LIF step by Winograd's minimal filtering F(2x2, 3x3)
(Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016).

Each 2 x 2 block of outputs (a tile) is ``A^T [sum_c (G g_c G^T) * (B^T d_c B)] A``, ``d_c``
the tile's 4 x 4 input window in channel ``c``, ``g_c`` the 3 x 3 kernel: 16 multiply-adds
per tile, channel and filter instead of the direct convolution's 36. The transforms add
and subtract only (and halve, in ``G``), so with dyadic weights and inputs the currents are
exact, as the direct convolution's are; otherwise they differ from it by float32 rounding.
On conv2 of the paper's N-MNIST network (15 -> 40 channels) one slot takes 17 us against
the direct convolution's 24 (1 thread, AVX-512), the transforms a quarter of the products' time
(benchmarks/RESULTS.md). The same tiles serve the transposed convolution of the backward
pass (:func:`evsim.kernels.conv_input_grad.conv_input_grad_winograd`).

Layout, one slot (a sample at a step) at a time:

- the slot's input goes into a zero-padded map ``[C, Hp, Wp]`` (:func:`shift_events` for
  events, :func:`fill_rows` for pooling-window counts and for dL/du);
- tiles are numbered row by row with ``TX`` tiles a row (the tile columns padded to 8
  or a multiple of 16), 16 to a vector: with ``TX = 8`` a vector holds two tile rows.
  Its two halves of 8 tiles each come from one 16-cell row load each: the input
  transform runs on whole rows and :func:`even_lanes` keeps every other cell (a tile's
  left column); the output transform's two columns are woven back into rows by
  :func:`interleave_low` and :func:`interleave_high`;
- ``V [16, n_vec / BV, C_used, BV, 16]`` the transformed inputs (``BV`` tile vectors a
  register block spans, a block's vectors of each channel together and the channels in
  order, so the products read one stream), ``U [F_pad / FB, 16, C_used, FB]`` the
  transformed kernels, a register block's ``FB`` filters together; per transform position
  ``xi`` the products are a small GEMM done in register blocks of ``BV`` tile vectors x
  ``FB`` filters (:data:`WINOGRAD_BLOCKS`), kept for the 16 positions in ``sums`` until the
  output transform and the LIF step (:func:`evsim.kernels.propagate.lif_leak_vector`)
  take them.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from evsim.kernels.conv_direct import fill_rows, padded_to_blocks, shift_events, zeros_on_lines
from evsim.kernels.conv_geometry import ConvGeometry, dense_filter_matrix
from evsim.kernels.machine import KIND
from evsim.kernels.propagate import lif_leak_update, lif_leak_vector
from evsim.kernels.simd import (LANES, even_lanes, fma, interleave_high, interleave_low, load, splat, store,
                                store_bytes, stream, upper_halves)

# The products' register blocks, tile vectors x filters, per kind of machine. AVX-512: 4 x 5,
# the direct convolution's shape. AVX2: 1 x 4, eight of its sixteen registers summing (on
# conv2 of the paper's network 1.6-2.1x the products' speed of its former 2 x 2 blocks with
# the channels 256 bytes apart; benchmarks/RESULTS.md).
WINOGRAD_BLOCKS = {"avx512": (4, 5), "avx2": (1, 4)}
BLOCK_VECTORS, FILTER_BLOCK = WINOGRAD_BLOCKS[KIND]
# G of F(2x2, 3x3): U = G g G^T.
_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])


def applies(geometry: ConvGeometry) -> bool:
    """Whether this path computes the convolution: 3 x 3 kernels at stride 1."""
    return geometry.kernel == 3 and geometry.stride == 1


def tile_layout(out_height: int, out_width: int, kind: str = KIND) -> tuple[int, int, int, int]:
    """``(TX, n_vec, Hp, Wp)``: tiles a row, tile vectors (a multiple of the ``kind``
    machine's block, :data:`WINOGRAD_BLOCKS`), and the padded map's rows and width, for an
    ``out_height x out_width`` output."""
    tiles_x = -(-out_width // 2)
    tile_cols = 8 if tiles_x <= 8 else -(-tiles_x // LANES) * LANES
    tile_rows = -(-out_height // 2)
    n_vec = -(-tile_rows * tile_cols // LANES)
    block = WINOGRAD_BLOCKS[kind][0]
    n_vec = -(-n_vec // block) * block
    rows = 2 * (n_vec * LANES // tile_cols) + 2
    return tile_cols, n_vec, rows, 2 * tile_cols + LANES


def multiply_adds(used_channels: int, n_out: int, out_height: int, out_width: int, kind: str = KIND) -> int:
    """16-lane multiply-adds of one slot on a ``kind`` machine: 16 positions x the used
    channels x the filters summed (:func:`evsim.kernels.conv_direct.padded_to_blocks` of
    the kind's filter block) x the tile vectors."""
    n_vec = tile_layout(out_height, out_width, kind)[1]
    return 16 * used_channels * padded_to_blocks(n_out, WINOGRAD_BLOCKS[kind][1]) * n_vec


def _transformed(kernels: np.ndarray, used: np.ndarray) -> np.ndarray:
    """``G g G^T`` of ``kernels`` float32 ``[O, I, 3, 3]`` for the inputs ``used``, a
    register block's outputs together: float32 ``[O_pad / FB, 16, I_used, FB]`` (``FB``
    :data:`FILTER_BLOCK`; zeros for missing kernels and padding outputs), computed in
    float64 and rounded once."""
    n_out = kernels.shape[0]
    transformed = np.einsum("ia,fcab,jb->ijcf", _G, kernels[:, used].astype(np.float64), _G)
    n_blocks = -(-n_out // FILTER_BLOCK)
    table = np.zeros((16, used.size, n_blocks * FILTER_BLOCK), dtype=np.float32)
    table[:, :, :n_out] = transformed.reshape(16, used.size, n_out)
    return np.ascontiguousarray(table.reshape(16, used.size, n_blocks, FILTER_BLOCK).transpose(2, 0, 1, 3))


def padded_filters(weights: np.ndarray) -> int:
    """The outputs (filters, or channels of a transposed convolution) of the transformed
    kernels ``weights`` (:func:`_transformed`), padded to whole register blocks."""
    return weights.shape[0] * weights.shape[3]


def winograd_weights(indptr: np.ndarray, columns: np.ndarray, data: np.ndarray, geometry: ConvGeometry,
                     n_filters: int) -> tuple[np.ndarray, np.ndarray]:
    """``(used, U)`` of a convolution's forward: the input channels with a kernel (int64)
    and the transformed kernels (:func:`_transformed`, ``[F_pad / FB, 16, C_used, FB]``)."""
    kernels = dense_filter_matrix(indptr, columns, data, n_filters).reshape(n_filters, geometry.in_channels, 3, 3)
    used = np.flatnonzero(np.diff(indptr))
    return used, _transformed(kernels, used)


def transposed_weights(indptr: np.ndarray, columns: np.ndarray, data: np.ndarray, geometry: ConvGeometry,
                       n_filters: int) -> tuple[np.ndarray, np.ndarray]:
    """``(used, U)`` of the transposed convolution (dL/du of the ``n_filters`` alive
    filters into dL/dx): the filters with a kernel and the transformed flipped kernels,
    ``[16, F_used, C_pad]``."""
    kernels = dense_filter_matrix(indptr, columns, data, n_filters).reshape(n_filters, geometry.in_channels, 3, 3)
    used = np.flatnonzero(np.bincount(columns, minlength=n_filters))
    return used, _transformed(np.ascontiguousarray(kernels[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)), used)


@njit(cache=True, inline="always")
def _halves(v, tile_cols):
    """``(row_lo, x_lo, row_hi, x_hi)``: where the windows (padded input) and the outputs of
    tile vector ``v``'s two halves of 8 tiles start."""
    if tile_cols == 8:
        return 4 * v, 0, 4 * v + 2, 0
    per_row = tile_cols // LANES
    row, x = 2 * (v // per_row), 2 * LANES * (v % per_row)
    return row, x, row, x + LANES


@njit(cache=True, inline="always")
def _row_transform(padded, lo, hi):
    """``B^T`` along a window row, for the 16 tiles whose rows start at ``lo`` (tiles 0-7)
    and ``hi`` (8-15) of the flat padded map: four vectors, one per column of ``d B``."""
    a0, a1, a2, a3 = load(padded, lo, LANES), load(padded, lo + 1, LANES), load(padded, lo + 2, LANES), \
        load(padded, lo + 3, LANES)
    b0, b1, b2, b3 = load(padded, hi, LANES), load(padded, hi + 1, LANES), load(padded, hi + 2, LANES), \
        load(padded, hi + 3, LANES)
    return (even_lanes(a0 - a2, b0 - b2), even_lanes(a1 + a2, b1 + b2), even_lanes(a2 - a1, b2 - b1),
            even_lanes(a1 - a3, b1 - b3))


@njit(cache=True)
def input_transform(padded, rows, width, used, tile_cols, n_vec, out):
    """``(B^T d B)[xi]`` of tile ``16v + l``'s window in used channel ``used[i]`` of the
    padded map (flat ``[C, rows, width]``) into ``out`` ``[16, n_vec / BV, C_used, BV, 16]``
    (the layout of the module's docstring)."""
    plane = rows * width
    n_used = used.shape[0]
    stride = n_used * n_vec * LANES
    for i in range(n_used):
        first = used[i] * plane
        for v in range(n_vec):
            row_lo, x_lo, row_hi, x_hi = _halves(v, tile_cols)
            lo, hi = first + row_lo * width + x_lo, first + row_hi * width + x_hi
            x00, x01, x02, x03 = _row_transform(padded, lo, hi)
            x10, x11, x12, x13 = _row_transform(padded, lo + width, hi + width)
            x20, x21, x22, x23 = _row_transform(padded, lo + 2 * width, hi + 2 * width)
            x30, x31, x32, x33 = _row_transform(padded, lo + 3 * width, hi + 3 * width)
            o = ((v // BLOCK_VECTORS * n_used + i) * BLOCK_VECTORS + v % BLOCK_VECTORS) * LANES
            store(out, o, x00 - x20, LANES)
            store(out, o + stride, x01 - x21, LANES)
            store(out, o + 2 * stride, x02 - x22, LANES)
            store(out, o + 3 * stride, x03 - x23, LANES)
            store(out, o + 4 * stride, x10 + x20, LANES)
            store(out, o + 5 * stride, x11 + x21, LANES)
            store(out, o + 6 * stride, x12 + x22, LANES)
            store(out, o + 7 * stride, x13 + x23, LANES)
            store(out, o + 8 * stride, x20 - x10, LANES)
            store(out, o + 9 * stride, x21 - x11, LANES)
            store(out, o + 10 * stride, x22 - x12, LANES)
            store(out, o + 11 * stride, x23 - x13, LANES)
            store(out, o + 12 * stride, x10 - x30, LANES)
            store(out, o + 13 * stride, x11 - x31, LANES)
            store(out, o + 14 * stride, x12 - x32, LANES)
            store(out, o + 15 * stride, x13 - x33, LANES)


@njit(cache=True, inline="always")
def _block_products_4x5(transformed, weights, xi, n_used, n_vec, v0, f0, sums):
    """The 20 sums over the used channels of position ``xi`` for tile vectors
    ``v0..v0+3`` x filters ``f0..f0+4``, into ``sums[((xi*5 + m)*4 + k)*16 + lane]``."""
    zero = splat(np.float32(0.0))
    a00, a01, a02, a03 = zero, zero, zero, zero
    a10, a11, a12, a13 = zero, zero, zero, zero
    a20, a21, a22, a23 = zero, zero, zero, zero
    a30, a31, a32, a33 = zero, zero, zero, zero
    a40, a41, a42, a43 = zero, zero, zero, zero
    p = (xi * n_vec + v0) * n_used * LANES
    block = f0 // 5
    for i in range(n_used):
        r0 = load(transformed, p, LANES)
        r1 = load(transformed, p + LANES, LANES)
        r2 = load(transformed, p + 2 * LANES, LANES)
        r3 = load(transformed, p + 3 * LANES, LANES)
        p += 4 * LANES
        w = weights[block, xi, i, 0]
        a00, a01, a02, a03 = fma(w, r0, a00), fma(w, r1, a01), fma(w, r2, a02), fma(w, r3, a03)
        w = weights[block, xi, i, 1]
        a10, a11, a12, a13 = fma(w, r0, a10), fma(w, r1, a11), fma(w, r2, a12), fma(w, r3, a13)
        w = weights[block, xi, i, 2]
        a20, a21, a22, a23 = fma(w, r0, a20), fma(w, r1, a21), fma(w, r2, a22), fma(w, r3, a23)
        w = weights[block, xi, i, 3]
        a30, a31, a32, a33 = fma(w, r0, a30), fma(w, r1, a31), fma(w, r2, a32), fma(w, r3, a33)
        w = weights[block, xi, i, 4]
        a40, a41, a42, a43 = fma(w, r0, a40), fma(w, r1, a41), fma(w, r2, a42), fma(w, r3, a43)
    s = xi * 20 * LANES
    store(sums, s, a00, LANES)
    store(sums, s + 16, a01, LANES)
    store(sums, s + 32, a02, LANES)
    store(sums, s + 48, a03, LANES)
    store(sums, s + 64, a10, LANES)
    store(sums, s + 80, a11, LANES)
    store(sums, s + 96, a12, LANES)
    store(sums, s + 112, a13, LANES)
    store(sums, s + 128, a20, LANES)
    store(sums, s + 144, a21, LANES)
    store(sums, s + 160, a22, LANES)
    store(sums, s + 176, a23, LANES)
    store(sums, s + 192, a30, LANES)
    store(sums, s + 208, a31, LANES)
    store(sums, s + 224, a32, LANES)
    store(sums, s + 240, a33, LANES)
    store(sums, s + 256, a40, LANES)
    store(sums, s + 272, a41, LANES)
    store(sums, s + 288, a42, LANES)
    store(sums, s + 304, a43, LANES)


@njit(cache=True, inline="always")
def _filter_products_4(transformed, weights, xi, n_used, n_vec, v0, f, sums):
    """:func:`_block_products_4x5` for filter ``f`` alone, into the block's first sums: a
    last block of one filter (:func:`evsim.kernels.conv_direct.padded_to_blocks`)."""
    zero = splat(np.float32(0.0))
    a0, a1, a2, a3 = zero, zero, zero, zero
    p = (xi * n_vec + v0) * n_used * LANES
    for i in range(n_used):
        w = weights[f // 5, xi, i, f % 5]
        a0 = fma(w, load(transformed, p, LANES), a0)
        a1 = fma(w, load(transformed, p + LANES, LANES), a1)
        a2 = fma(w, load(transformed, p + 2 * LANES, LANES), a2)
        a3 = fma(w, load(transformed, p + 3 * LANES, LANES), a3)
        p += 4 * LANES
    s = xi * 20 * LANES
    store(sums, s, a0, LANES)
    store(sums, s + 16, a1, LANES)
    store(sums, s + 32, a2, LANES)
    store(sums, s + 48, a3, LANES)


@njit(cache=True, inline="always")
def _block_products_1x4(transformed, weights, xi, n_used, n_vec, v, f0, sums):
    """The 4 sums of position ``xi`` for tile vector ``v`` x filters ``f0..f0+3``, into
    ``sums[(xi*4 + m)*16 + lane]``."""
    zero = splat(np.float32(0.0))
    a0, a1, a2, a3 = zero, zero, zero, zero
    p = (xi * n_vec + v) * n_used * LANES
    block = f0 // 4
    for i in range(n_used):
        r = load(transformed, p, LANES)
        p += LANES
        a0 = fma(weights[block, xi, i, 0], r, a0)
        a1 = fma(weights[block, xi, i, 1], r, a1)
        a2 = fma(weights[block, xi, i, 2], r, a2)
        a3 = fma(weights[block, xi, i, 3], r, a3)
    s = xi * 4 * LANES
    store(sums, s, a0, LANES)
    store(sums, s + LANES, a1, LANES)
    store(sums, s + 2 * LANES, a2, LANES)
    store(sums, s + 3 * LANES, a3, LANES)


@njit(cache=True, inline="always")
def _filter_products_1(transformed, weights, xi, n_used, n_vec, v, f, sums):
    """:func:`_block_products_1x4` for filter ``f`` alone, into the block's first sums."""
    a = splat(np.float32(0.0))
    p = (xi * n_vec + v) * n_used * LANES
    for i in range(n_used):
        a = fma(weights[f // 4, xi, i, f % 4], load(transformed, p, LANES), a)
        p += LANES
    store(sums, xi * 4 * LANES, a, LANES)


# This machine's register block (see WINOGRAD_BLOCKS).
_block_products, _filter_products = {"avx512": (_block_products_4x5, _filter_products_4),
                                     "avx2": (_block_products_1x4, _filter_products_1)}[KIND]


@njit(cache=True, inline="always")
def _products(transformed, weights, n_used, n_vec, v0, f0, n_out, sums):
    """The products of the block at filter ``f0`` and tile vector ``v0``, all 16 positions."""
    if n_out - f0 == 1:
        for xi in range(16):
            _filter_products(transformed, weights, xi, n_used, n_vec, v0, f0, sums)
    else:
        for xi in range(16):
            _block_products(transformed, weights, xi, n_used, n_vec, v0, f0, sums)


@njit(cache=True, inline="always")
def _column_sums(sums, s, step):
    """``A^T`` down the 4 positions ``s, s + 4*step, ...`` of one column ``j``: rows 0 and 1."""
    m0, m1 = load(sums, s, LANES), load(sums, s + 4 * step, LANES)
    m2, m3 = load(sums, s + 8 * step, LANES), load(sums, s + 12 * step, LANES)
    return m0 + m1 + m2, m1 - m2 - m3


@njit(cache=True, inline="always")
def _tile_outputs(sums, s, step, bias):
    """``A^T M A`` of the tile vector at ``s`` of the block's products (positions ``step``
    apart) plus ``bias``: the 16 tiles' outputs (0, 0), (0, 1), (1, 0) and (1, 1)."""
    s00, s10 = _column_sums(sums, s, step)
    s01, s11 = _column_sums(sums, s + step, step)
    s02, s12 = _column_sums(sums, s + 2 * step, step)
    s03, s13 = _column_sums(sums, s + 3 * step, step)
    return s00 + s01 + s02 + bias, s01 - s02 - s03 + bias, s10 + s11 + s12 + bias, s11 - s12 - s13 + bias


@njit(cache=True, inline="always")
def _row_unit(y, x, f, out_height, out_width):
    """``(unit, n)``: the flat index of output ``(f, y, x)`` and how many of the 16 outputs
    from it along the row lie inside the map (0 when it starts outside)."""
    if y >= out_height or x >= out_width:
        return 0, 0
    return (f * out_height + y) * out_width + x, min(LANES, out_width - x)


@njit(cache=True)
def winograd_slot_lif(transformed, weights, n_used, n_vec, tile_cols, n_out, out_height, out_width, bias, leak,
                      decay, v_th, hard, spikes, u_out, sums):
    """One slot's currents from its transformed input (:func:`input_transform`) and the
    LIF step on them: ``spikes`` uint8 and ``u_out`` float32 (length 0: not recorded) the
    slot's ``[F*Ho*Wo]``, ``leak`` the state (:func:`evsim.kernels.propagate.lif_leak_vector`),
    ``bias`` float32 per filter (padded), ``sums`` the block scratch (:func:`sums_scratch`).
    With ``leak`` empty there is no LIF step: the currents plus bias go into ``u_out``
    (the transposed convolution of a backward pass)."""
    record = u_out.shape[0] > 0
    neurons = leak.shape[0] > 0
    step = FILTER_BLOCK * BLOCK_VECTORS * LANES
    rows_at = 16 * step
    for f0 in range(0, n_out, FILTER_BLOCK):
        for v0 in range(0, n_vec, BLOCK_VECTORS):
            _products(transformed, weights, n_used, n_vec, v0, f0, n_out, sums)
            for m in range(min(FILTER_BLOCK, n_out - f0)):
                f = f0 + m
                b = splat(bias[f])
                for k in range(BLOCK_VECTORS):
                    o00, o01, o10, o11 = _tile_outputs(sums, (m * BLOCK_VECTORS + k) * LANES, step, b)
                    # The tiles' two columns woven into four rows of 16 outputs (kept after
                    # the products; walking them as a tuple compiled to a jump table).
                    store(sums, rows_at, interleave_low(o00, o01), LANES)
                    store(sums, rows_at + LANES, interleave_high(o00, o01), LANES)
                    store(sums, rows_at + 2 * LANES, interleave_low(o10, o11), LANES)
                    store(sums, rows_at + 3 * LANES, interleave_high(o10, o11), LANES)
                    row_lo, x_lo, row_hi, x_hi = _halves(v0 + k, tile_cols)
                    for r in range(4):
                        if r % 2 == 0:
                            unit, n = _row_unit(row_lo + r // 2, x_lo, f, out_height, out_width)
                        else:
                            unit, n = _row_unit(row_hi + r // 2, x_hi, f, out_height, out_width)
                        drive = load(sums, rows_at + r * LANES, LANES)
                        if not neurons:
                            if n == LANES:
                                store(u_out, unit, drive, LANES)
                            elif n > 0:
                                store(u_out, unit, drive, n)
                        elif n == LANES:  # a plain store (see evsim.kernels.conv_direct.direct_slot_lif)
                            u = lif_leak_vector(drive, leak, unit, LANES, decay, v_th, hard, spikes)
                            if record:
                                stream(u_out, unit, u, LANES)
                        elif n > 0:
                            u = lif_leak_vector(drive, leak, unit, n, decay, v_th, hard, spikes)
                            if record:
                                store(u_out, unit, u, n)


@njit(cache=True)
def winograd_slot_lif_pool(transformed, weights, n_used, n_vec, tile_cols, n_out, out_height, out_width, bias, leak,
                           decay, v_th, hard, channel_of, pooled, sums):
    """One slot of :func:`winograd_slot_lif` for inference, then 2 x 2 average pooling of
    its spikes (PyTorch's floor rule). A tile is a pooling window, so its four outputs
    stay in their lanes: the LIF state is kept in tile order (``leak``
    ``[n_out * n_vec * 4 * 16]``, position ``((f*n_vec + v)*4 + 2a + b)*16 + lane``), the
    four spikes of a window are summed lane by lane, and only the counts are written (0-4;
    the pooled value is a quarter of it), filter ``f`` to channel ``channel_of[f]`` of
    ``pooled`` uint8 ``[C_pool, Ho // 2, Wo // 2]``."""
    step = FILTER_BLOCK * BLOCK_VECTORS * LANES
    pooled_height, pooled_width = out_height // 2, out_width // 2
    for f0 in range(0, n_out, FILTER_BLOCK):
        for v0 in range(0, n_vec, BLOCK_VECTORS):
            _products(transformed, weights, n_used, n_vec, v0, f0, n_out, sums)
            for m in range(min(FILTER_BLOCK, n_out - f0)):
                f = f0 + m
                b = splat(bias[f])
                first = channel_of[f] * pooled_height
                for k in range(BLOCK_VECTORS):
                    v = v0 + k
                    o00, o01, o10, o11 = _tile_outputs(sums, (m * BLOCK_VECTORS + k) * LANES, step, b)
                    j = (f * n_vec + v) * 4 * LANES
                    window = lif_leak_update(o00, leak, j, LANES, decay, v_th, hard)[1]
                    window = window + lif_leak_update(o01, leak, j + LANES, LANES, decay, v_th, hard)[1]
                    window = window + lif_leak_update(o10, leak, j + 2 * LANES, LANES, decay, v_th, hard)[1]
                    window = window + lif_leak_update(o11, leak, j + 3 * LANES, LANES, decay, v_th, hard)[1]
                    row_lo, x_lo, row_hi, x_hi = _halves(v, tile_cols)
                    if tile_cols == 8:  # two tile rows of at most 8 windows
                        if row_lo // 2 < pooled_height:
                            store_bytes(pooled, (first + row_lo // 2) * pooled_width, window, pooled_width)
                        if row_hi // 2 < pooled_height:
                            store_bytes(pooled, (first + row_hi // 2) * pooled_width, upper_halves(window, window),
                                        pooled_width)
                    elif row_lo // 2 < pooled_height and x_lo // 2 < pooled_width:
                        store_bytes(pooled, (first + row_lo // 2) * pooled_width + x_lo // 2, window,
                                    min(LANES, pooled_width - x_lo // 2))


@njit(cache=True)
def sums_scratch():
    """The products of one register block at all 16 positions, and four rows of outputs,
    on a cache line."""
    return zeros_on_lines((16 * FILTER_BLOCK * BLOCK_VECTORS + 4) * LANES)


@njit(cache=True)
def winograd_slot_inputs(ptr, idx, val, s, image, channels, height, width, pad, rows, width_pad, padded, used,
                         tile_cols, n_vec, transformed):
    """Slot ``s``'s events into the padded map and through the input transform."""
    shift_events(ptr, idx, val, s, image, channels, height, width, pad, 1, rows, width_pad, padded)
    input_transform(padded, rows, width_pad, used, tile_cols, n_vec, transformed)


@njit(cache=True)
def winograd_map_inputs(source, scale, channels, height, width, pad, rows, width_pad, padded, used, tile_cols, n_vec,
                        transformed):
    """A slot's map of byte counts ``source`` ``[C*H*W]``, each times ``scale``, into the
    padded map and through the input transform."""
    fill_rows(source, 0, channels, height, width, pad, 1, rows, width_pad, padded, scale)
    input_transform(padded, rows, width_pad, used, tile_cols, n_vec, transformed)
