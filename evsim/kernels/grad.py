"""Weight and input gradients of a layer, accumulated from events.

``dL/dW[i, j] = sum_{t,b} x[t,b,i] * gU[t,b,j]`` is non-zero only for presynaptic
neurons that fired, so it is accumulated event by event from the events grouped
by row (:func:`evsim.kernels.events.group_by_row`). Kernels loop over rows in
parallel: each thread writes only its own rows, never a shared entry.

``grad_u`` is the ``[T*B, N]`` view of dL/du (N = alive neurons).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from evsim.kernels.machine import KIND
from evsim.kernels.propagate import accumulate_rows
from evsim.kernels.simd import LANES, fma, gather, load, scatter, splat, store


def weight_grad_rows(row_ptr, slot, val, grad_u, out) -> None:
    """Dense gradient ``out[i, :] = sum over row i's events of val * grad_u[slot, :]``
    (``val`` None: every value is 1).

    ``out`` float32 ``[n_pre, N]``; rows with no events are zeroed. The dense rows
    include would-be gradients of synapses that do not exist (used by regeneration).
    """
    accumulate_rows(row_ptr, slot, val, grad_u, out)


@njit(parallel=True, cache=True)
def _weight_grad_csr(row_ptr, slot, val, indptr, columns, grad_u, out):
    """Gradient on existing synapses only, aligned with CSR ``data`` (``out[k]`` for synapse k);
    ``val`` None means every value is 1. ``grad_u`` C-contiguous, possibly wider than the
    alive neurons (padded rows). Sixteen synapses per gather from an event's row of
    ``grad_u``."""
    n_rows = indptr.shape[0] - 1
    width = grad_u.shape[1]
    flat = grad_u.reshape(grad_u.size)
    for i in prange(n_rows):
        start, stop = indptr[i], indptr[i + 1]
        out[start:stop] = 0.0
        for e in range(row_ptr[i], row_ptr[i + 1]):
            o = slot[e] * width
            for k in range(start, stop, LANES):
                lanes = min(LANES, stop - k)
                g = gather(flat, o, columns, k, lanes)
                store(out, k, load(out, k, lanes) + (g if val is None else val[e] * g), lanes)


@njit(parallel=True, cache=True)
def _gather_csr(dense, indptr, columns, out):
    """``out[k] = dense[row(k), columns[k]]``: a C-contiguous ``[n_pre, >= N]`` array in CSR
    data order."""
    n_rows = indptr.shape[0] - 1
    width = dense.shape[1]
    flat = dense.reshape(dense.size)
    for i in prange(n_rows):
        stop = indptr[i + 1]
        for k in range(indptr[i], stop, LANES):
            lanes = min(LANES, stop - k)
            store(out, k, gather(flat, i * width, columns, k, lanes), lanes)


@njit(parallel=True, cache=True)
def _scatter_csr(data, indptr, columns, dense):
    """Write CSR ``data`` into a C-contiguous ``[n_pre, >= N]`` execution copy (other entries
    untouched); a row's columns are distinct."""
    n_rows = indptr.shape[0] - 1
    width = dense.shape[1]
    flat = dense.reshape(dense.size)
    for i in prange(n_rows):
        stop = indptr[i + 1]
        for k in range(indptr[i], stop, LANES):
            lanes = min(LANES, stop - k)
            scatter(flat, i * width, columns, k, load(data, k, lanes), lanes)


@njit(parallel=True, cache=True)
def _input_grad_csr(grad_u, indptr, columns, data, out):
    """``out[s, i] = sum_k data[k] * grad_u[s, columns[k]]`` over row i's synapses (``[T*B, n_pre]``)."""
    n_slots = grad_u.shape[0]
    n_rows = indptr.shape[0] - 1
    for s in prange(n_slots):
        g = grad_u[s]
        for i in range(n_rows):
            acc = np.float32(0.0)
            for k in range(indptr[i], indptr[i + 1]):
                acc += data[k] * g[columns[k]]
            out[s, i] = acc


@njit(parallel=True, cache=True)
def _input_grad_rows_4x4(grad_u, n_alive, strips, rows, out):
    """``out[s] = grad_u[s, :n_alive] @ weights.T`` for the slots ``rows`` (int64,
    ascending), zero for the others: the slots whose dL/du is all zero (half of them in the
    FC-300 layer of the paper's N-MNIST network: samples no error reaches) cost nothing.
    ``strips`` is ``weights`` ``[n_in, n_alive]`` in 64-column strips
    (:func:`weight_strips`). Blocks of 4 slots x 64 columns keep their 16 sums in
    registers through the ``n_alive`` terms: 4 weight vectors and 4 scalars per 16
    multiply-adds. On Numba's threads, where a BLAS product would run on the single thread
    training gives BLAS."""
    n_rows = rows.shape[0]
    zero = splat(np.float32(0.0))
    # Strips outermost: one strip (n_alive x 256 B) stays in cache while every block of
    # slots passes it (slots outermost streamed the whole matrix from memory once per
    # block: 1.6 G multiply-adds a second).
    for strip in prange(strips.shape[0]):
        weights = strips[strip]
        j = strip * 4 * LANES
        for r0 in range(0, n_rows, 4):
            s0 = rows[r0]
            s1 = rows[min(r0 + 1, n_rows - 1)]
            s2 = rows[min(r0 + 2, n_rows - 1)]
            s3 = rows[min(r0 + 3, n_rows - 1)]
            a00, a01, a02, a03 = zero, zero, zero, zero
            a10, a11, a12, a13 = zero, zero, zero, zero
            a20, a21, a22, a23 = zero, zero, zero, zero
            a30, a31, a32, a33 = zero, zero, zero, zero
            for k in range(n_alive):
                w0 = load(weights[k], 0, LANES)
                w1 = load(weights[k], LANES, LANES)
                w2 = load(weights[k], 2 * LANES, LANES)
                w3 = load(weights[k], 3 * LANES, LANES)
                g0, g1, g2, g3 = grad_u[s0, k], grad_u[s1, k], grad_u[s2, k], grad_u[s3, k]
                a00, a01, a02, a03 = fma(g0, w0, a00), fma(g0, w1, a01), fma(g0, w2, a02), fma(g0, w3, a03)
                a10, a11, a12, a13 = fma(g1, w0, a10), fma(g1, w1, a11), fma(g1, w2, a12), fma(g1, w3, a13)
                a20, a21, a22, a23 = fma(g2, w0, a20), fma(g2, w1, a21), fma(g2, w2, a22), fma(g2, w3, a23)
                a30, a31, a32, a33 = fma(g3, w0, a30), fma(g3, w1, a31), fma(g3, w2, a32), fma(g3, w3, a33)
            _store4(out[s0], j, a00, a01, a02, a03)
            _store4(out[s1], j, a10, a11, a12, a13)
            _store4(out[s2], j, a20, a21, a22, a23)
            _store4(out[s3], j, a30, a31, a32, a33)
    _zero_other_rows(rows, out)


@njit(parallel=True, cache=True)
def _input_grad_rows_2x2(grad_u, n_alive, strips, rows, out):
    """:func:`_input_grad_rows_4x4` in register blocks of 2 slots x 32 columns, on
    32-column strips: AVX2 holds a 16-lane vector in two of its 16 registers, so the
    4 x 4 block's 16 sums spilled (RESULTS.md, "Register blocks for AVX2"). The same sums
    in the same order."""
    n_rows = rows.shape[0]
    zero = splat(np.float32(0.0))
    for strip in prange(strips.shape[0]):
        weights = strips[strip]
        j = strip * 2 * LANES
        for r0 in range(0, n_rows, 2):
            s0, s1 = rows[r0], rows[min(r0 + 1, n_rows - 1)]
            a00, a01, a10, a11 = zero, zero, zero, zero
            for k in range(n_alive):
                w0 = load(weights[k], 0, LANES)
                w1 = load(weights[k], LANES, LANES)
                g0, g1 = grad_u[s0, k], grad_u[s1, k]
                a00, a01 = fma(g0, w0, a00), fma(g0, w1, a01)
                a10, a11 = fma(g1, w0, a10), fma(g1, w1, a11)
            store(out[s0], j, a00, LANES)
            store(out[s0], j + LANES, a01, LANES)
            store(out[s1], j, a10, LANES)
            store(out[s1], j + LANES, a11, LANES)
    _zero_other_rows(rows, out)


# This machine's register block (evsim.kernels.machine) and the strip width it reads.
input_grad_rows, STRIP_WIDTH = {"avx512": (_input_grad_rows_4x4, 4 * LANES),
                                "avx2": (_input_grad_rows_2x2, 2 * LANES)}[KIND]


def weight_strips(weights: np.ndarray, width: int = STRIP_WIDTH) -> np.ndarray:
    """``weights`` ``[n_in, N]`` as ``[ceil(n_in / width), N, width]``, each strip of
    ``width`` inputs contiguous (zero past ``n_in``).

    In a row-major ``[N, n_in]`` copy, a strip's rows lie ``n_in`` floats apart: for the
    FC-300 layer of the paper's N-MNIST network 10 KB, 160 cache lines, so in an L1 of 64
    sets its 300 rows fell into 2-4 of them and were fetched again for every block of
    slots (1.96-2.10x slower on AVX2, benchmarks/bench_fc_input_grad.py)."""
    n_in, n_alive = weights.shape
    n_strips = -(-n_in // width)
    strips = np.zeros((n_strips, n_alive, width), dtype=np.float32)
    full = n_in // width
    strips[:full] = weights[:full * width].reshape(full, width, n_alive).transpose(0, 2, 1)
    if full < n_strips:
        strips[full, :, :n_in - full * width] = weights[full * width:].T
    return strips


@njit(parallel=True, cache=True)
def _zero_other_rows(rows, out):
    """Zero the rows of ``out`` not in ``rows``."""
    zero_rows = np.ones(out.shape[0], dtype=np.bool_)
    zero_rows[rows] = False
    for s in prange(out.shape[0]):
        if zero_rows[s]:
            out[s, :] = 0.0


@njit(cache=True, inline="always")
def _store4(row, j, a0, a1, a2, a3):
    store(row, j, a0, LANES)
    store(row, j + LANES, a1, LANES)
    store(row, j + 2 * LANES, a2, LANES)
    store(row, j + 3 * LANES, a3, LANES)
