"""Event-driven propagation through a layer.

Two execution paths with identical results:

``rows``  (dense-ish layers) the layer keeps a dense ``[n_pre, N]`` matrix of its
          weights (pruned synapses are 0); each event adds a whole contiguous row.
          The currents of all ``T * B`` slots are summed first (the input of a
          feed-forward layer does not depend on its state), tile by tile of
          columns, then the LIF dynamics run over time (:func:`_accumulate_rows`).
``csr``   (very sparse layers) each event scatters its CSR row: ``I[col] += v * w``
          over the synapses that exist only (~1-2.5 G SOP/s, but no zeros touched).

Both paths sum the currents of all slots first, then run the same LIF scan.

Per slot ``s = t * B + b``: ``I = bias + sum_e val[e] * W[idx[e], :]``, then the LIF update.
"""
from __future__ import annotations

import math

import numpy as np
from numba import get_num_threads, njit, prange

from evsim.kernels.lif import _lif_update

# Bytes of the summed matrix a column tile may span: half of a 2 MB L2, so the tile
# stays in the core's L2 while every event of every slot reads it (tiles of about this
# size measured fastest; benchmarks/RESULTS.md, bench_train's table of changes).
TILE_BYTES = 1 << 20


def tile_bounds(n_matrix_rows: int, n_columns: int) -> np.ndarray:
    """Column boundaries of the fewest tiles within :data:`TILE_BYTES`, of near-equal
    width in whole 16-float vectors (one 512-bit register), so no tile is a thin remainder."""
    n_vectors = -(-n_columns // 16)
    max_vectors = max(1, TILE_BYTES // (4 * 16 * max(n_matrix_rows, 1)))
    n_tiles = max(1, -(-n_vectors // max_vectors))
    bounds = np.arange(n_tiles + 1, dtype=np.int64) * n_vectors // n_tiles * 16
    bounds[-1] = n_columns
    return bounds


@njit(cache=True)
def _balanced_bounds(ptr, n_chunks):
    """Split rows ``0..n`` into ``n_chunks`` runs of about equal work (events + rows)."""
    n_rows = ptr.shape[0] - 1
    total = ptr[n_rows] - ptr[0] + n_rows
    bounds = np.empty(n_chunks + 1, dtype=np.int64)
    bounds[0] = 0
    r = 0
    for c in range(1, n_chunks):
        target = total * c // n_chunks
        while r < n_rows and ptr[r] - ptr[0] + r < target:
            r += 1
        bounds[c] = r
    bounds[n_chunks] = n_rows
    return bounds


@njit(cache=True, inline="always")
def _offsets(idx, e, n_columns, c0):
    """Flat offsets of the tile rows of events ``e..e+3``, unsigned: with unsigned
    indices the compiler drops negative-index wrap-around and vectorises the sums."""
    return (np.uint64(idx[e]) * n_columns + c0, np.uint64(idx[e + 1]) * n_columns + c0,
            np.uint64(idx[e + 2]) * n_columns + c0, np.uint64(idx[e + 3]) * n_columns + c0)


@njit(cache=True, inline="always")
def _sum_rows(idx, val, start, stop, flat, n_columns, c0, unit, acc):
    """``acc += sum_e val[e] * matrix[idx[e], c0:c0 + len(acc)]`` over events ``start:stop``,
    ``flat`` being the C-contiguous ``matrix`` with ``n_columns`` columns, raveled.

    Sixteen rows per pass, then four, then one: ``acc`` is loaded and stored once
    per pass. Rows are addressed by flat offsets rather than slices: a slice costs a
    bounds normalisation per row, as much as summing a 96-column tile row
    (benchmarks/RESULTS.md). With ``unit`` (every value is 1, as for spikes) the
    multiplications are skipped.
    """
    n = np.uint64(n_columns)
    c = np.uint64(c0)
    width = np.uint64(acc.shape[0])
    e = start
    while e + 16 <= stop:
        a0, a1, a2, a3 = _offsets(idx, e, n, c)
        a4, a5, a6, a7 = _offsets(idx, e + 4, n, c)
        b0, b1, b2, b3 = _offsets(idx, e + 8, n, c)
        b4, b5, b6, b7 = _offsets(idx, e + 12, n, c)
        if unit:
            for j in range(width):
                acc[j] += ((((flat[a0 + j] + flat[a1 + j]) + (flat[a2 + j] + flat[a3 + j]))
                            + ((flat[a4 + j] + flat[a5 + j]) + (flat[a6 + j] + flat[a7 + j])))
                           + (((flat[b0 + j] + flat[b1 + j]) + (flat[b2 + j] + flat[b3 + j]))
                              + ((flat[b4 + j] + flat[b5 + j]) + (flat[b6 + j] + flat[b7 + j]))))
        else:
            v0, v1, v2, v3 = val[e], val[e + 1], val[e + 2], val[e + 3]
            v4, v5, v6, v7 = val[e + 4], val[e + 5], val[e + 6], val[e + 7]
            w0, w1, w2, w3 = val[e + 8], val[e + 9], val[e + 10], val[e + 11]
            w4, w5, w6, w7 = val[e + 12], val[e + 13], val[e + 14], val[e + 15]
            for j in range(width):
                acc[j] += ((((v0 * flat[a0 + j] + v1 * flat[a1 + j]) + (v2 * flat[a2 + j] + v3 * flat[a3 + j]))
                            + ((v4 * flat[a4 + j] + v5 * flat[a5 + j]) + (v6 * flat[a6 + j] + v7 * flat[a7 + j])))
                           + (((w0 * flat[b0 + j] + w1 * flat[b1 + j]) + (w2 * flat[b2 + j] + w3 * flat[b3 + j]))
                              + ((w4 * flat[b4 + j] + w5 * flat[b5 + j]) + (w6 * flat[b6 + j] + w7 * flat[b7 + j]))))
        e += 16
    while e + 4 <= stop:
        a0, a1, a2, a3 = _offsets(idx, e, n, c)
        v0, v1, v2, v3 = val[e], val[e + 1], val[e + 2], val[e + 3]
        for j in range(width):
            acc[j] += (v0 * flat[a0 + j] + v1 * flat[a1 + j]) + (v2 * flat[a2 + j] + v3 * flat[a3 + j])
        e += 4
    while e < stop:
        a0 = np.uint64(idx[e]) * n + c
        v0 = val[e]
        for j in range(width):
            acc[j] += v0 * flat[a0 + j]
        e += 1


@njit(parallel=True, cache=True)
def _accumulate_rows(ptr, idx, val, matrix, tiles, n_groups, n_row_chunks, unit, out):
    """``out[r, :] = sum_e val[e] * matrix[idx[e], :]`` over row r's events ``ptr[r]:ptr[r+1]``.

    The sparse-times-dense product behind both the forward pass (rows = slots,
    ``matrix`` = weights) and the weight gradient (rows = presynaptic neurons,
    ``matrix`` = dL/du per slot). The work is a grid of ``n_groups`` column groups
    (equal runs of the column tiles ``tiles``; ``n_groups`` divides their number)
    times ``n_row_chunks`` runs of output rows of equal work, one task each. A task
    walks its rows once per tile, so the tile of ``matrix`` stays in its core's L2
    cache instead of streaming whole rows from memory; with one group per thread,
    each tile is read from memory by one core only, not by every core.
    ``matrix`` must be C-contiguous.
    """
    n_columns = matrix.shape[1]
    flat = matrix.reshape(matrix.size)
    bounds = _balanced_bounds(ptr, n_row_chunks)
    per_group = (tiles.shape[0] - 1) // n_groups
    for task in prange(n_groups * n_row_chunks):
        group, chunk = task // n_row_chunks, task % n_row_chunks
        scratch = np.empty(out.shape[1], dtype=np.float32)
        for k in range(group * per_group, (group + 1) * per_group):
            c0, c1 = tiles[k], tiles[k + 1]
            acc = scratch[:c1 - c0]
            for r in range(bounds[chunk], bounds[chunk + 1]):
                acc[:] = 0.0
                _sum_rows(idx, val, ptr[r], ptr[r + 1], flat, n_columns, c0, unit, acc)
                out[r, c0:c1] = acc


def accumulate_rows(ptr, idx, val, matrix, out) -> None:
    """:func:`_accumulate_rows` with the tiles, the work split and the unit-value test chosen here.

    Threads split the tiles where their number allows (each core then streams only
    its own tiles, and equal widths are equal work), and the rows otherwise: adding
    tiles to make the split even would cost more per row than it saves in memory
    traffic (the weight gradient measured 0.8-0.9x that way).
    """
    unit = bool(np.all(val == 1))
    matrix = np.ascontiguousarray(matrix)  # flat offsets need row-major rows (a no-op for every caller today)
    tiles = tile_bounds(matrix.shape[0], out.shape[1])
    n_threads = get_num_threads()
    n_groups = math.gcd(tiles.size - 1, n_threads)
    _accumulate_rows(ptr, idx, val, matrix, tiles, n_groups, n_threads // n_groups, unit, out)


@njit(parallel=True, cache=True)
def _lif_scan(current_u, o_out, bias, decay, v_th, hard):
    """LIF over time from summed currents; ``current_u`` ``[T, B, N]`` becomes the membrane trace."""
    n_steps, batch, n = current_u.shape
    for b in prange(batch):
        current = np.empty(n, dtype=np.float32)
        u = np.zeros(n, dtype=np.float32)
        o = np.zeros(n, dtype=np.float32)
        for t in range(n_steps):
            for j in range(n):
                current[j] = current_u[t, b, j] + bias[j]
            _lif_update(current, u, o, decay, v_th, hard, current_u[t, b], o_out[t, b])


def propagate_rows(ptr, idx, val, weight, bias, decay, v_th, hard, u_out, o_out) -> None:
    """Rows path: ``u_out``/``o_out`` ``[T, B, N]`` from events and the ``[n_pre, N]`` weights."""
    n_steps, batch, n = u_out.shape
    accumulate_rows(ptr, idx, val, weight, u_out.reshape(n_steps * batch, n))
    _lif_scan(u_out, o_out, bias, decay, v_th, hard)


@njit(parallel=True, cache=True)
def _csr_currents(ptr, idx, val, indptr, columns, data, out):
    """``out[s, :] = sum_e val[e] * W[idx[e], :]`` by scattering each event's CSR row
    (``columns`` are compacted alive-neuron indices); one slot per task."""
    for s in prange(out.shape[0]):
        current = out[s]
        current[:] = 0.0
        for e in range(ptr[s], ptr[s + 1]):
            i = idx[e]
            v = val[e]
            for k in range(indptr[i], indptr[i + 1]):
                current[columns[k]] += v * data[k]


def propagate_csr(ptr, idx, val, indptr, columns, data, bias, decay, v_th, hard, u_out, o_out) -> None:
    """CSR path: ``u_out``/``o_out`` ``[T, B, N]`` from events and the CSR synapses."""
    n_steps, batch, n = u_out.shape
    _csr_currents(ptr, idx, val, indptr, columns, data, u_out.reshape(n_steps * batch, n))
    _lif_scan(u_out, o_out, bias, decay, v_th, hard)
