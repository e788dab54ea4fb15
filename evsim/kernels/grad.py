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

from evsim.kernels.propagate import accumulate_rows
from evsim.kernels.simd import LANES, gather, load, scatter, store


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
