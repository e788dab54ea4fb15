"""Event-driven propagation through a layer.

Two execution paths with the same sums in different orders (equal to float32 rounding;
bit for bit when every partial sum is exact, as with dyadic weights):

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

import numpy as np
from numba import get_num_threads, njit, prange

from evsim.kernels.simd import LANES, gather, greater, load, scatter, splat, store, store_bytes

# Bytes of the summed matrix a column tile may span: half of a 2 MB L2, so the tile
# stays in the core's L2 while every event of every slot reads it. It narrows the
# tiles of matrices taller than 3,276 rows (an 80-column tile is 2312 x 320 B = 740 KB
# for the default network's input layer).
TILE_BYTES = 1 << 20
# Vectors of a tile: a row's sums stay in registers through all of its events, and five
# sums plus eight rows in flight fit AVX-512's 32 registers (ten spill: 0.7-0.9x).
# A layer n columns wide then takes ceil(n / 80) passes over its events.
TILE_VECTORS = 5


def tile_bounds(n_matrix_rows: int, n_columns: int) -> np.ndarray:
    """Column boundaries of tiles of whole 16-float vectors (one 512-bit register each)
    within :data:`TILE_BYTES`. Where the budget allows :data:`TILE_VECTORS` vectors,
    every tile but the last is that wide (the unmasked case of :func:`_tile_sums`); for
    taller matrices, the fewest tiles of near-equal width, so none is a thin remainder."""
    n_vectors = -(-n_columns // LANES)
    max_vectors = min(TILE_VECTORS, max(1, TILE_BYTES // (4 * LANES * max(n_matrix_rows, 1))))
    if max_vectors == TILE_VECTORS:
        return np.append(np.arange(0, max(n_columns, 1), TILE_VECTORS * LANES, dtype=np.int64), n_columns)
    n_tiles = max(1, -(-n_vectors // max_vectors))
    bounds = np.arange(n_tiles + 1, dtype=np.int64) * n_vectors // n_tiles * LANES
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


@njit(cache=True)
def _offsets(idx, e, n_columns, c0):
    """Flat offsets of the tile rows of events ``e..e+3``."""
    return (idx[e] * n_columns + c0, idx[e + 1] * n_columns + c0,
            idx[e + 2] * n_columns + c0, idx[e + 3] * n_columns + c0)


@njit(cache=True)
def _row(flat, a, val, e, j, n):
    """Lanes ``j..j+n`` of the row at offset ``a``, times ``val[e]`` (1 if ``val`` is None:
    Numba compiles that case without the multiplication)."""
    if val is None:
        return load(flat, a + j, n)
    return val[e] * load(flat, a + j, n)


@njit(cache=True)
def _sum4(flat, a, val, e, j, n):
    """Sum of the rows of events ``e..e+3`` at offsets ``a``, as a balanced tree."""
    return ((_row(flat, a[0], val, e, j, n) + _row(flat, a[1], val, e + 1, j, n))
            + (_row(flat, a[2], val, e + 2, j, n) + _row(flat, a[3], val, e + 3, j, n)))


@njit(cache=True)
def _sum8(flat, a, val, e, j, n):
    """Sum of the rows of events ``e..e+7`` at offsets ``a``, as a balanced tree."""
    return _sum4(flat, a[0:4], val, e, j, n) + _sum4(flat, a[4:8], val, e + 4, j, n)


@njit(cache=True)
def _lanes(k, n_vectors, last):
    """Lanes (0-16) of vector ``k`` of a tile of ``n_vectors`` vectors, the last with ``last`` lanes."""
    if k < n_vectors - 1:
        return LANES
    return last if k == n_vectors - 1 else 0


@njit(cache=True)
def _tile_sums(idx, val, start, stop, flat, n_columns, c0, out, o, n_vectors, last):
    """``out[o:o + width] = sum_e val[e] * matrix[idx[e], c0:c0 + width]`` over events
    ``start:stop``, ``flat`` being the C-contiguous ``matrix`` with ``n_columns``
    columns, raveled, and ``out`` raveled; ``val`` None means every value is 1 (spikes).
    The tile is ``n_vectors`` (1 to :data:`TILE_VECTORS`) 16-lane vectors wide, the last
    one with ``last`` lanes.

    The tile's sums stay in registers through all of the events, eight rows per pass,
    then one: kept in memory and loaded and stored per pass instead, each pass waited
    on the last one's store (1.24-1.38x, benchmarks/RESULTS.md). Vectors past
    ``n_vectors`` are skipped. Called with literal ``n_vectors`` and ``last`` (a whole
    widest tile), LLVM inlines the call, the tests fold away and no load is masked;
    masking every load cost 1.2x. Rows are addressed by flat offsets rather than
    slices: a slice costs a bounds normalisation per row, as much as summing a
    96-column tile row. Not inlined by Numba (``inline="always"``): as fast, but
    compiling took 4x longer.
    """
    n0, n1, n2 = _lanes(0, n_vectors, last), _lanes(1, n_vectors, last), _lanes(2, n_vectors, last)
    n3, n4 = _lanes(3, n_vectors, last), _lanes(4, n_vectors, last)
    s0 = s1 = s2 = s3 = s4 = splat(np.float32(0.0))
    e = start
    while e + 8 <= stop:
        a = _offsets(idx, e, n_columns, c0) + _offsets(idx, e + 4, n_columns, c0)
        s0 = s0 + _sum8(flat, a, val, e, 0, n0)
        if n_vectors > 1:
            s1 = s1 + _sum8(flat, a, val, e, LANES, n1)
        if n_vectors > 2:
            s2 = s2 + _sum8(flat, a, val, e, 2 * LANES, n2)
        if n_vectors > 3:
            s3 = s3 + _sum8(flat, a, val, e, 3 * LANES, n3)
        if n_vectors > 4:
            s4 = s4 + _sum8(flat, a, val, e, 4 * LANES, n4)
        e += 8
    while e < stop:
        a = idx[e] * n_columns + c0
        s0 = s0 + _row(flat, a, val, e, 0, n0)
        if n_vectors > 1:
            s1 = s1 + _row(flat, a, val, e, LANES, n1)
        if n_vectors > 2:
            s2 = s2 + _row(flat, a, val, e, 2 * LANES, n2)
        if n_vectors > 3:
            s3 = s3 + _row(flat, a, val, e, 3 * LANES, n3)
        if n_vectors > 4:
            s4 = s4 + _row(flat, a, val, e, 4 * LANES, n4)
        e += 1
    store(out, o, s0, n0)
    if n_vectors > 1:
        store(out, o + LANES, s1, n1)
    if n_vectors > 2:
        store(out, o + 2 * LANES, s2, n2)
    if n_vectors > 3:
        store(out, o + 3 * LANES, s3, n3)
    if n_vectors > 4:
        store(out, o + 4 * LANES, s4, n4)


@njit(parallel=True, cache=True)
def _accumulate_rows(ptr, idx, val, matrix, tiles, work, out):
    """``out[r, :] = sum_e val[e] * matrix[idx[e], :]`` over row r's events ``ptr[r]:ptr[r+1]``
    (``val`` None: every value is 1).

    The sparse-times-dense product behind both the forward pass (rows = slots,
    ``matrix`` = weights) and the weight gradient (rows = presynaptic neurons,
    ``matrix`` = dL/du per slot). ``work[task]`` lists one task's pieces, each
    ``(first tile, end tile, first row, end row)`` of the column tiles ``tiles`` (each at
    most :data:`TILE_VECTORS` vectors wide); every output entry belongs to one piece,
    and there is one task per thread (:func:`split_work`). A task walks its rows once
    per tile, so the tile of ``matrix`` stays in its core's L2 cache instead of
    streaming whole rows from memory. ``matrix`` and ``out`` must be C-contiguous;
    ``matrix`` may be wider than ``out`` (padded rows: its extra columns are not read).
    """
    n_columns = matrix.shape[1]
    flat = matrix.reshape(matrix.size)
    out_flat = out.reshape(out.size)
    for task in prange(work.shape[0]):
        for piece in range(work.shape[1]):
            for k in range(work[task, piece, 0], work[task, piece, 1]):
                c0 = tiles[k]
                n_vectors = (tiles[k + 1] - c0 + LANES - 1) // LANES
                last = tiles[k + 1] - c0 - (n_vectors - 1) * LANES
                for r in range(work[task, piece, 2], work[task, piece, 3]):
                    a, b, o = ptr[r], ptr[r + 1], r * out.shape[1] + c0
                    if n_vectors == TILE_VECTORS and last == LANES:  # literals: see _tile_sums
                        _tile_sums(idx, val, a, b, flat, n_columns, c0, out_flat, o, TILE_VECTORS, LANES)
                    else:
                        _tile_sums(idx, val, a, b, flat, n_columns, c0, out_flat, o, n_vectors, last)


def split_work(ptr: np.ndarray, n_tiles: int, n_threads: int) -> np.ndarray:
    """One task per thread, as ``[n_threads, 2, 4]`` pieces ``(first tile, end tile, first
    row, end row)``: each thread takes ``n_tiles // n_threads`` whole tiles (all rows),
    and the tiles left over are split between the threads by runs of rows of equal work.

    A whole tile is read from memory by one core only, not by every core. Before, an
    odd number of tiles (400 columns: 5) was split by rows only, so that each core
    streamed the whole matrix. Adding tiles to make the split even costs more per row
    than it saves (the weight gradient measured 0.8-0.97x that way).
    """
    whole = n_tiles // n_threads
    runs = _balanced_bounds(ptr, n_threads)
    work = np.empty((n_threads, 2, 4), dtype=np.int64)
    for t in range(n_threads):
        work[t, 0] = (t * whole, (t + 1) * whole, 0, ptr.shape[0] - 1)
        work[t, 1] = (whole * n_threads, n_tiles, runs[t], runs[t + 1])
    return work


def accumulate_rows(ptr, idx, val, matrix, out) -> None:
    """:func:`_accumulate_rows` with the tiles, the work split (:func:`split_work`) and the
    unit-value test chosen here (``val`` None or all ones: no multiplications)."""
    if not out.flags.c_contiguous:
        raise ValueError("accumulate_rows: out must be C-contiguous (sums are stored by flat offsets)")
    if val is not None and np.all(val == 1):
        val = None  # spikes: compiled without the multiplications
    matrix = np.ascontiguousarray(matrix)  # flat offsets need row-major rows (a no-op for every caller today)
    tiles = tile_bounds(matrix.shape[0], out.shape[1])
    _accumulate_rows(ptr, idx, val, matrix, tiles, split_work(ptr, tiles.size - 1, get_num_threads()), out)


@njit(cache=True, inline="always")
def lif_leak_update(drive, leak, j, n, decay, v_th, hard):
    """One LIF step (:mod:`evsim.neuron`) of neurons ``j..j+n`` in one 16-lane vector:
    ``u = decay * u' * (1 - o') + I`` (hard reset) or ``decay * u' - v_th * o' + I``
    (subtraction), ``u'``, ``o'`` the previous step's membrane and spikes, ``I`` =
    ``drive`` (the summed current plus bias); spike where ``u > v_th`` (strict, as in
    the reference code). The state is one array: ``leak[j:j+n]`` holds what the next step
    adds its drive to, ``decay * u * (1 - o)`` or ``decay * u - v_th * o`` (zeros before
    the first step), computed here for the next step: the same float32 operations in the
    same order as keeping ``u`` and ``o``, with one state load and store instead of two
    each. Returns the membrane ``u`` and the spikes (1.0 or 0.0 per lane)."""
    u = load(leak, j, n) + drive
    fired = greater(u, v_th)
    if hard:
        store(leak, j, decay * u * (splat(np.float32(1.0)) - fired), n)
    else:
        store(leak, j, decay * u - v_th * fired, n)
    return u, fired


@njit(cache=True, inline="always")
def lif_leak_vector(drive, leak, j, n, decay, v_th, hard, spikes):
    """:func:`lif_leak_update`, the spikes written into ``spikes[j:j+n]`` as bytes;
    returns the membrane."""
    u, fired = lif_leak_update(drive, leak, j, n, decay, v_th, hard)
    store_bytes(spikes, j, fired, n)
    return u


@njit(cache=True, inline="always")
def _lif_lanes(current, bias, leak, spikes, j, n, decay, v_th, hard):
    """:func:`lif_leak_vector` on lanes ``j..j+n`` of a row of summed currents, which
    becomes the membrane."""
    store(current, j, lif_leak_vector(load(current, j, n) + load(bias, j, n), leak, j, n, decay, v_th, hard, spikes),
          n)


@njit(parallel=True, cache=True)
def _lif_scan(current_u, o_out, bias, decay, v_th, hard, n_tasks):
    """LIF over time from summed currents; ``current_u`` ``[T, B, N]`` becomes the membrane
    trace. In explicit 16-lane vectors: LLVM's own vectorisation of the scalar update
    used 8 lanes and checked for aliasing on every step (1.3-1.5x slower for 400 and 800
    neurons; benchmarks/RESULTS.md)."""
    n_steps, batch, n = current_u.shape
    whole = n - n % LANES
    n_tasks = max(1, min(batch, n_tasks))
    for task in prange(n_tasks):  # scratch once per task (see evsim.kernels.lif._lif_backward)
        leak = np.zeros(n, dtype=np.float32)
        for b in range(task * batch // n_tasks, (task + 1) * batch // n_tasks):
            leak[:] = 0.0
            for t in range(n_steps):
                current, spikes = current_u[t, b], o_out[t, b]
                for j in range(0, whole, LANES):
                    _lif_lanes(current, bias, leak, spikes, j, LANES, decay, v_th, hard)
                if whole < n:
                    _lif_lanes(current, bias, leak, spikes, whole, n - whole, decay, v_th, hard)


def propagate_rows(ptr, idx, val, weight, bias, decay, v_th, hard, u_out, o_out) -> None:
    """Rows path: ``u_out``/``o_out`` ``[T, B, N]`` from events and the ``[n_pre, N]`` weights."""
    n_steps, batch, n = u_out.shape
    accumulate_rows(ptr, idx, val, weight, u_out.reshape(n_steps * batch, n))
    _lif_scan(u_out, o_out, bias, decay, v_th, hard, get_num_threads())


def propagate_static(current, bias, decay, v_th, hard, u_out, o_out) -> None:
    """Static drive: ``u_out``/``o_out`` ``[T, B, N]`` from the same current ``[B, N]`` at every step."""
    u_out[:] = current
    _lif_scan(u_out, o_out, bias, decay, v_th, hard, get_num_threads())


@njit(parallel=True, cache=True)
def _csr_currents(ptr, idx, val, indptr, columns, data, out):
    """``out[s, :] = sum_e val[e] * W[idx[e], :]`` by scattering each event's CSR row
    (``columns`` are compacted alive-neuron indices, distinct within a row); one slot per
    task. Sixteen synapses per gather, add and scatter: 1.6-1.9x the scalar scatter
    (benchmarks/RESULTS.md)."""
    n = out.shape[1]
    flat = out.reshape(out.size)
    for s in prange(out.shape[0]):
        o = s * n
        flat[o:o + n] = 0.0
        for e in range(ptr[s], ptr[s + 1]):
            i = idx[e]
            v = val[e]
            stop = indptr[i + 1]
            for k in range(indptr[i], stop, LANES):
                lanes = min(LANES, stop - k)
                scatter(flat, o, columns, k, gather(flat, o, columns, k, lanes) + v * load(data, k, lanes), lanes)


def propagate_csr(ptr, idx, val, indptr, columns, data, bias, decay, v_th, hard, u_out, o_out) -> None:
    """CSR path: ``u_out``/``o_out`` ``[T, B, N]`` from events and the CSR synapses."""
    n_steps, batch, n = u_out.shape
    _csr_currents(ptr, idx, val, indptr, columns, data, u_out.reshape(n_steps * batch, n))
    _lif_scan(u_out, o_out, bias, decay, v_th, hard, get_num_threads())
