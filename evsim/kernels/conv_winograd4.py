"""Inference through a stride-1 3 x 3 convolution by Winograd's F(4x4, 3x3), its LIF step
and the 2 x 2 average pooling after it (Lavin & Gray 2016, the transforms of their
section 4.2).

Each 4 x 4 block of outputs (a tile) is ``A^T [sum_c (G g_c G^T) * (B^T d_c B)] A`` over
its 6 x 6 input window ``d_c``: 36 multiply-adds per tile, channel and filter for 16
outputs, 2.25 an output against F(2x2, 3x3)'s 4 (:mod:`evsim.kernels.conv_winograd`) and
the direct convolution's 9. ``G`` holds sixths; the kernels take ``3 G``
(:data:`G_SCALED`), whose entries are quarters, halves, eighths and 3, so a tile's sums
are nine times its currents and are divided by 9 once, correctly rounded, after the
output transform. Where weights and inputs are dyadic with few bits (quantised weights,
spike counts) every step before that division is exact, so the currents are the direct
convolution's exactly and a membrane exactly at the threshold does not spike here and
spike there. Otherwise they differ from the direct convolution's by float32 rounding,
which grows with the largest input of a tile's 6 x 6 window (the transforms add inputs
with weights up to 8 x 5 x 5), so a membrane that lands within that of the threshold may
spike on one path and not the other (``tests/test_conv_winograd4.py`` compares the spikes
with a float64 twin away from the threshold; the fused pass leaves inputs above
:data:`evsim.kernels.conv_paths.WINOGRAD4_INPUT_LIMIT` to the other kernels). Inference
only: training keeps the paths whose currents are exact with dyadic weights.

A tile's 16 outputs hold its four pooling windows whole, so the LIF state stays in tile
order and only the windows' spike counts are written. Layout, one slot at a time:

- tiles are numbered row by row, ``tile_cols`` a row (a multiple of 4), 16 to a vector
  (lane = tile);
- the slot's input goes into a zero-padded map (as for F(2x2, 3x3)); a window cell of 16
  tiles is every fourth lane of four row loads, one per group of four tiles, so the input
  transform reads the map directly;
- ``V [36, C_used, n_vec, 16]`` the transformed windows, ``U [F_pad / 4, 36, C_used, 4]``
  the transformed kernels; per position the products are a GEMM done one tile vector x
  :data:`FILTER_BLOCK` filters at a time, their 36 x 4 sums kept in L1 (9 KB) until the
  output transform and the LIF step take them.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from evsim.kernels.conv_direct import zeros_on_lines
from evsim.kernels.conv_geometry import ConvGeometry, dense_filter_matrix
from evsim.kernels.propagate import lif_leak_update
from evsim.kernels.simd import LANES, even_lanes, fma, load, odd_lanes, splat, store, store_byte_pairs

# B^T, G and A^T of F(4x4, 3x3) at the points 0, 1, -1, 2, -2 and infinity.
B_T = np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0],
                [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], dtype=np.float64)
G = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6], [1 / 24, 1 / 12, 1 / 6],
              [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], dtype=np.float64)
A_T = np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
               dtype=np.float64)
# The kernels' transform, dyadic, and what its tile sums are divided by: (3G) g (3G)^T = 9 G g G^T.
G_SCALED = 3 * G
SUMS_SCALE = np.float32(9.0)
# Filters a register block sums (x one tile vector): four 16-lane sums, eight AVX2
# registers, leaving the rest for the loaded windows and the broadcast weights.
FILTER_BLOCK = 4
POSITIONS = 36


def applies(geometry: ConvGeometry) -> bool:
    """Whether this path computes the convolution: 3 x 3 kernels at stride 1, an output
    map with at least one 2 x 2 pooling window."""
    return geometry.kernel == 3 and geometry.stride == 1 and min(geometry.out_height, geometry.out_width) >= 2


def tile_layout(out_height: int, out_width: int) -> tuple[int, int, int, int]:
    """``(tile_cols, n_vec, rows, width)``: tiles a row (a multiple of 4, so that each group
    of four lanes lies in one tile row), 16-lane tile vectors, and the zero-padded input
    map's rows and width (every group's 16-cell row loads inside it)."""
    tile_cols, tile_rows = 4 * -(-out_width // 16), -(-out_height // 4)
    n_vec = -(-tile_cols * tile_rows // LANES)
    last_row = (4 * (4 * n_vec - 1)) // tile_cols
    return tile_cols, n_vec, 4 * last_row + 6, 4 * tile_cols + 4


def group_bases(out_height: int, out_width: int) -> np.ndarray:
    """int64 ``[n_vec * 4]``: where in a channel of the padded map the window of the first
    tile of each group of four lanes starts (tile ``4g`` at ``(4ty)*width + 4tx``)."""
    tile_cols, n_vec, _, width = tile_layout(out_height, out_width)
    first = 4 * np.arange(4 * n_vec)
    return (4 * (first // tile_cols) * width + 4 * (first % tile_cols)).astype(np.int64)


def multiply_adds(used_channels: int, n_out: int, out_height: int, out_width: int) -> int:
    """16-lane multiply-adds of one slot: 36 positions x the used channels x the filters
    padded to :data:`FILTER_BLOCK` x the tile vectors."""
    return POSITIONS * used_channels * -(-n_out // FILTER_BLOCK) * FILTER_BLOCK * tile_layout(out_height, out_width)[1]


def winograd4_weights(indptr: np.ndarray, columns: np.ndarray, data: np.ndarray, geometry: ConvGeometry,
                      n_filters: int) -> tuple[np.ndarray, np.ndarray]:
    """``(used, U)``: the input channels with a kernel (int64) and ``(3G) g (3G)^T`` of their
    kernels (:data:`G_SCALED`), computed in float64 and rounded once, a register block's weights together:
    float32 ``[F_pad / 4, 36, C_used, 4]`` (``F_pad`` a multiple of :data:`FILTER_BLOCK`;
    zeros for missing kernels and padding filters), flat. (Filter-minor over all filters,
    a block's weights lay 160 bytes apart and the products ran 1.3x slower.)"""
    kernels = dense_filter_matrix(indptr, columns, data, n_filters).reshape(n_filters, geometry.in_channels, 3, 3)
    used = np.flatnonzero(np.diff(indptr))
    transformed = np.einsum("ia,fcab,jb->ijcf", G_SCALED, kernels[:, used].astype(np.float64), G_SCALED)
    n_blocks = -(-n_filters // FILTER_BLOCK)
    table = np.zeros((POSITIONS, used.size, n_blocks * FILTER_BLOCK), dtype=np.float32)
    table[:, :, :n_filters] = transformed.reshape(POSITIONS, used.size, n_filters)
    return used, np.ascontiguousarray(table.reshape(POSITIONS, used.size, n_blocks, FILTER_BLOCK)
                                      .transpose(2, 0, 1, 3)).ravel()


@njit(cache=True, inline="always")
def _window_row(padded, b0, b1, b2, b3, offset):
    """The six cells of a window row (``offset``: the row times the map's width) of the 16
    tiles whose groups of four start at ``b0..b3``: column ``q`` is every fourth lane from
    ``q`` of the groups' 16-cell loads, columns 0-3 from one load each and 4-5 from one
    more (8 loads and 14 shuffles for six columns, against 24 and 18 one column apiece)."""
    l0, l1 = load(padded, b0 + offset, LANES), load(padded, b1 + offset, LANES)
    l2, l3 = load(padded, b2 + offset, LANES), load(padded, b3 + offset, LANES)
    even_01, odd_01 = even_lanes(l0, l1), odd_lanes(l0, l1)
    even_23, odd_23 = even_lanes(l2, l3), odd_lanes(l2, l3)
    m0, m1 = load(padded, b0 + offset + 4, LANES), load(padded, b1 + offset + 4, LANES)
    m2, m3 = load(padded, b2 + offset + 4, LANES), load(padded, b3 + offset + 4, LANES)
    return (even_lanes(even_01, even_23), even_lanes(odd_01, odd_23), odd_lanes(even_01, even_23),
            odd_lanes(odd_01, odd_23), even_lanes(even_lanes(m0, m1), even_lanes(m2, m3)),
            even_lanes(odd_lanes(m0, m1), odd_lanes(m2, m3)))


@njit(cache=True, inline="always")
def _b_t(d0, d1, d2, d3, d4, d5):
    """``B^T`` applied to six vectors (a window's column or row)."""
    four = np.float32(4.0)
    two = np.float32(2.0)
    e0 = four * d0 - np.float32(5.0) * d2 + d4
    e1 = d3 + d4 - four * (d1 + d2)
    e2 = four * (d1 - d2) + d4 - d3
    e3 = two * (d3 - d1) + d4 - d2
    e4 = two * (d1 - d3) + d4 - d2
    e5 = four * d1 - np.float32(5.0) * d3 + d5
    return e0, e1, e2, e3, e4, e5


@njit(cache=True)
def input_transform(padded, rows, width, used, group_base, n_vec, half, transformed):
    """``transformed[((xi*C_used + i)*n_vec + v)*16 + lane] = (B^T d B)[xi]`` of the window
    ``d`` of tile ``16v + lane`` in channel ``used[i]`` of the padded map (flat ``[C, rows,
    width]``, zeros around the input; :func:`group_bases`); ``half`` a 36 x 16 scratch
    holding ``d B`` between the two passes."""
    n_used = used.shape[0]
    stride = n_used * n_vec * LANES
    for i in range(n_used):
        first = used[i] * rows * width
        for v in range(n_vec):
            b0, b1 = first + group_base[4 * v], first + group_base[4 * v + 1]
            b2, b3 = first + group_base[4 * v + 2], first + group_base[4 * v + 3]
            for r in range(6):  # along each row of the windows: d B
                d0, d1, d2, d3, d4, d5 = _window_row(padded, b0, b1, b2, b3, r * width)
                e0, e1, e2, e3, e4, e5 = _b_t(d0, d1, d2, d3, d4, d5)
                h = 6 * r * LANES
                store(half, h, e0, LANES)
                store(half, h + LANES, e1, LANES)
                store(half, h + 2 * LANES, e2, LANES)
                store(half, h + 3 * LANES, e3, LANES)
                store(half, h + 4 * LANES, e4, LANES)
                store(half, h + 5 * LANES, e5, LANES)
            o = (i * n_vec + v) * LANES
            for q in range(6):  # down each column of d B: B^T d B
                h = q * LANES
                e0, e1, e2, e3, e4, e5 = _b_t(load(half, h, LANES), load(half, h + 6 * LANES, LANES),
                                              load(half, h + 12 * LANES, LANES), load(half, h + 18 * LANES, LANES),
                                              load(half, h + 24 * LANES, LANES), load(half, h + 30 * LANES, LANES))
                p = o + q * stride
                store(transformed, p, e0, LANES)
                store(transformed, p + 6 * stride, e1, LANES)
                store(transformed, p + 12 * stride, e2, LANES)
                store(transformed, p + 18 * stride, e3, LANES)
                store(transformed, p + 24 * stride, e4, LANES)
                store(transformed, p + 30 * stride, e5, LANES)


@njit(cache=True, inline="always")
def _block_products(transformed, weights, n_used, n_vec, v, f0, sums):
    """The sums over the used channels at every position for tile vector ``v`` x filters
    ``f0..f0+3``: ``sums[(xi*4 + m)*16 + lane]``."""
    zero = splat(np.float32(0.0))
    for xi in range(POSITIONS):
        a0, a1, a2, a3 = zero, zero, zero, zero
        w = (f0 // FILTER_BLOCK * POSITIONS + xi) * n_used * FILTER_BLOCK
        for i in range(n_used):
            r = load(transformed, ((xi * n_used + i) * n_vec + v) * LANES, LANES)
            a0 = fma(weights[w], r, a0)
            a1 = fma(weights[w + 1], r, a1)
            a2 = fma(weights[w + 2], r, a2)
            a3 = fma(weights[w + 3], r, a3)
            w += FILTER_BLOCK
        s = xi * FILTER_BLOCK * LANES
        store(sums, s, a0, LANES)
        store(sums, s + LANES, a1, LANES)
        store(sums, s + 2 * LANES, a2, LANES)
        store(sums, s + 3 * LANES, a3, LANES)


@njit(cache=True, inline="always")
def _a_t(m0, m1, m2, m3, m4, m5):
    """``A^T`` applied to six vectors: four."""
    two, four, eight = np.float32(2.0), np.float32(4.0), np.float32(8.0)
    p12, m12 = m1 + m2, m1 - m2
    p34, m34 = m3 + m4, m3 - m4
    return p12 + p34 + m0, m12 + two * m34, p12 + four * p34, m12 + eight * m34 + m5


@njit(cache=True, inline="always")
def _window_rows(half, row, j, b, leak, decay, v_th, hard):
    """``A^T`` along output row ``row`` of a tile vector (its column sums in ``half``),
    divided by :data:`SUMS_SCALE`, plus ``b``, through the LIF step (state at ``j``): the
    spikes of its left pair of outputs (0 and 1) summed, and of its right pair."""
    h = 6 * row * LANES
    o0, o1, o2, o3 = _a_t(load(half, h, LANES), load(half, h + LANES, LANES), load(half, h + 2 * LANES, LANES),
                          load(half, h + 3 * LANES, LANES), load(half, h + 4 * LANES, LANES),
                          load(half, h + 5 * LANES, LANES))
    k = j + 4 * row * LANES
    left = lif_leak_update(o0 / SUMS_SCALE + b, leak, k, LANES, decay, v_th, hard)[1]
    left = left + lif_leak_update(o1 / SUMS_SCALE + b, leak, k + LANES, LANES, decay, v_th, hard)[1]
    right = lif_leak_update(o2 / SUMS_SCALE + b, leak, k + 2 * LANES, LANES, decay, v_th, hard)[1]
    right = right + lif_leak_update(o3 / SUMS_SCALE + b, leak, k + 3 * LANES, LANES, decay, v_th, hard)[1]
    return left, right


@njit(cache=True, inline="always")
def _store_window_row(pooled, first, runs, v, a, left, right):
    """Row ``a`` of the 2 x 2 windows of tile vector ``v`` (``left`` the counts of windows
    ``(a, 0)``, ``right`` of ``(a, 1)``): each tile's two counts one 16-bit word, each
    group's four words a run of eight bytes where :func:`window_runs` puts it (or part
    of it, or nowhere). (Weaving the counts into rows of bytes took a quarter of conv1's
    pass on AVX2.)"""
    pairs = left + np.float32(256.0) * right
    g = 4 * v
    if runs[3 * g + a] >= 0:
        store_byte_pairs(pooled, first + runs[3 * g + a], pairs, 0, runs[3 * g + 2])
    if runs[3 * g + 3 + a] >= 0:
        store_byte_pairs(pooled, first + runs[3 * g + 3 + a], pairs, 1, runs[3 * g + 5])
    if runs[3 * g + 6 + a] >= 0:
        store_byte_pairs(pooled, first + runs[3 * g + 6 + a], pairs, 2, runs[3 * g + 8])
    if runs[3 * g + 9 + a] >= 0:
        store_byte_pairs(pooled, first + runs[3 * g + 9 + a], pairs, 3, runs[3 * g + 11])


@njit(cache=True)
def winograd4_slot_lif_pool(transformed, weights, n_used, n_vec, n_out, bias, leak, decay, v_th, hard, channel_of,
                            runs, pooled_cells, pooled, sums, half):
    """One slot's currents from its transformed windows (:func:`input_transform`), their
    LIF step and 2 x 2 average pooling: ``leak`` the state in tile order
    (``[n_out * n_vec * 16 * 16]``, output ``(a, b)`` of tile ``16v + lane`` at
    ``((f*n_vec + v)*16 + 4a + b)*16 + lane``), ``bias`` float32 per filter,
    ``pooled`` uint8 ``[C_pool, Ho // 2, Wo // 2]`` (``pooled_cells`` a channel) receiving
    filter ``f``'s window counts (0-4) in channel ``channel_of[f]`` where ``runs``
    (:func:`window_runs`) says; ``sums`` (:func:`sums_scratch`) and ``half`` (36 x 16)
    scratch."""
    step = FILTER_BLOCK * LANES
    for f0 in range(0, n_out, FILTER_BLOCK):
        for v in range(n_vec):
            _block_products(transformed, weights, n_used, n_vec, v, f0, sums)
            for m in range(min(FILTER_BLOCK, n_out - f0)):
                f = f0 + m
                b = splat(bias[f])
                for q in range(6):  # A^T down each column of the 6 x 6 sums
                    s = (q * FILTER_BLOCK + m) * LANES
                    c0, c1, c2, c3 = _a_t(load(sums, s, LANES), load(sums, s + 6 * step, LANES),
                                          load(sums, s + 12 * step, LANES), load(sums, s + 18 * step, LANES),
                                          load(sums, s + 24 * step, LANES), load(sums, s + 30 * step, LANES))
                    store(half, q * LANES, c0, LANES)
                    store(half, (6 + q) * LANES, c1, LANES)
                    store(half, (12 + q) * LANES, c2, LANES)
                    store(half, (18 + q) * LANES, c3, LANES)
                j = (f * n_vec + v) * 16 * LANES
                first = channel_of[f] * pooled_cells
                left0, right0 = _window_rows(half, 0, j, b, leak, decay, v_th, hard)
                left1, right1 = _window_rows(half, 1, j, b, leak, decay, v_th, hard)
                _store_window_row(pooled, first, runs, v, 0, left0 + left1, right0 + right1)
                left2, right2 = _window_rows(half, 2, j, b, leak, decay, v_th, hard)
                left3, right3 = _window_rows(half, 3, j, b, leak, decay, v_th, hard)
                _store_window_row(pooled, first, runs, v, 1, left2 + left3, right2 + right3)


def window_runs(out_height: int, out_width: int) -> np.ndarray:
    """int64 ``[n_vec * 4, 3]``: for each group of four tiles (lanes ``4g..4g+3``), where
    its two rows of eight 2 x 2 windows start in a pooled channel (``(2ty + a)*(Wo//2) +
    2tx``; -1 where PyTorch's floor rule drops the row, or the group is padding), and how
    many of the eight lie inside (the floor rule, padding tiles)."""
    tile_cols, n_vec, _, _ = tile_layout(out_height, out_width)
    pooled_height, pooled_width = out_height // 2, out_width // 2
    first = 4 * np.arange(4 * n_vec)
    ty, tx = first // tile_cols, first % tile_cols
    runs = np.full((4 * n_vec, 3), -1, dtype=np.int64)
    for a in range(2):
        y = 2 * ty + a
        inside = (y < pooled_height) & (2 * tx < pooled_width)
        runs[inside, a] = (y * pooled_width + 2 * tx)[inside]
    runs[:, 2] = np.clip(pooled_width - 2 * tx, 0, 8)
    return runs.ravel()


@njit(cache=True)
def sums_scratch():
    """The products of one register block at the 36 positions, on a cache line."""
    return zeros_on_lines(POSITIONS * FILTER_BLOCK * LANES)
