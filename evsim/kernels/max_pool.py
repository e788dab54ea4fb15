"""Max pooling of event maps: ``k x k`` windows, stride ``k`` (PyTorch's ``MaxPool2d(k)``).

Forward: output unit ``c*Ho*Wo + oy*Wo + ox`` of slot s is the largest value in its
window, cells without an event being 0 (for spikes: 1 if any cell spiked). Values must
be nonnegative (spikes, counts, pooled spikes), so a window without events gives 0
and no event. For each output event the argmax, the flat input unit that holds the
maximum (the lowest index among ties, as PyTorch's scan order gives), is recorded.

Backward: each output's gradient goes to its argmax; an output without an event (an
all-zero window) sends it to its window's first cell, where PyTorch's argmax of an
all-zero window lies. Dense ``[T*B, C*H*W]``.
"""
from __future__ import annotations

import numpy as np
from numba import get_num_threads, njit, prange

from evsim.kernels.conv_geometry import PoolGeometry, _compact_events
from evsim.kernels.propagate import _balanced_bounds


@njit(parallel=True, cache=True)
def _max_pool_events(ptr, idx, val, bounds, channels_hw, width, kernel, out_height, out_width, n_out, tmp_idx,
                     tmp_val, tmp_arg, counts):
    """Slot s's output events into ``tmp_*[ptr[s]:]``, their number into ``counts[s]``.
    Events ascend, so keeping the first of equal maxima (strict ``>``) keeps the lowest
    index."""
    out_cells = out_height * out_width
    for task in prange(bounds.shape[0] - 1):
        best = np.zeros(n_out, dtype=np.float32)
        arg = np.empty(n_out, dtype=np.int32)
        seen = np.zeros(n_out, dtype=np.uint8)
        touched = np.empty(n_out, dtype=np.int32)
        for s in range(bounds[task], bounds[task + 1]):
            n = 0
            for e in range(ptr[s], ptr[s + 1]):
                i = idx[e]
                c = i // channels_hw
                rest = i - c * channels_hw
                oy = rest // width // kernel
                ox = rest % width // kernel
                if oy >= out_height or ox >= out_width:
                    continue
                u = c * out_cells + oy * out_width + ox
                v = val[e]
                if not seen[u]:
                    seen[u] = 1
                    touched[n] = u
                    n += 1
                    best[u] = v
                    arg[u] = i
                elif v > best[u]:
                    best[u] = v
                    arg[u] = i
            order = np.sort(touched[:n])
            m = ptr[s]
            for u in order:
                seen[u] = 0
                if best[u] > 0:
                    tmp_idx[m] = u
                    tmp_val[m] = best[u]
                    tmp_arg[m] = arg[u]
                    m += 1
            counts[s] = m - ptr[s]


def max_pool_events(ptr: np.ndarray, idx: np.ndarray, val: np.ndarray, geometry: PoolGeometry):
    """Max-pooled events and their argmax.

    Parameters
    ----------
    ptr, idx, val : input events, int64 ``[T*B + 1]``, int32 ``c*H*W + y*W + x``
        (ascending per slot), float32 nonnegative values.
    geometry : :func:`evsim.kernels.conv_geometry.pool_geometry`.

    Returns
    -------
    (ptr, idx, val, argmax) : output events (int64 ``[T*B + 1]``, int32 units
        ``c*Ho*Wo + oy*Wo + ox`` ascending per slot, float32 window maxima) and int32
        ``[n_events]``, the input unit of each output event's maximum.

    Raises
    ------
    ValueError
        A negative value (an absent cell would then be the maximum).
    """
    g = geometry
    if val.size and val.min() < 0:
        raise ValueError(f"max_pool_events: values must be nonnegative (spikes, counts), got min {val.min()}")
    n_slots = ptr.shape[0] - 1
    tmp_idx = np.empty(idx.shape[0], dtype=np.int32)
    tmp_val = np.empty(idx.shape[0], dtype=np.float32)
    tmp_arg = np.empty(idx.shape[0], dtype=np.int32)
    counts = np.empty(n_slots, dtype=np.int64)
    bounds = _balanced_bounds(ptr, get_num_threads())
    _max_pool_events(ptr, idx, val, bounds, g.height * g.width, g.width, g.kernel, g.out_height, g.out_width,
                     g.n_out, tmp_idx, tmp_val, tmp_arg, counts)
    out_ptr = np.zeros(n_slots + 1, dtype=np.int64)
    np.cumsum(counts, out=out_ptr[1:])
    out_idx = np.empty(out_ptr[-1], dtype=np.int32)
    out_val = np.empty(out_ptr[-1], dtype=np.float32)
    _compact_events(ptr, counts, tmp_idx, tmp_val, out_ptr, out_idx, out_val)
    out_arg = np.empty(out_ptr[-1], dtype=np.int32)
    _compact_events(ptr, counts, tmp_arg, tmp_val, out_ptr, out_arg, out_val)
    return out_ptr, out_idx, out_val, out_arg


@njit(parallel=True, cache=True)
def _max_pool_backward(grad_out, ptr, idx, argmax, height, width, kernel, out_height, out_width, grad_in):
    """One slot per task: walk every output unit and the slot's output events together."""
    hw = height * width
    out_cells = out_height * out_width
    n_out = grad_out.shape[1]
    for s in prange(grad_in.shape[0]):
        grad_in[s, :] = 0.0
        e = ptr[s]
        for u in range(n_out):
            if e < ptr[s + 1] and idx[e] == u:
                target = argmax[e]
                e += 1
            else:
                c = u // out_cells
                p = u - c * out_cells
                oy = p // out_width
                target = c * hw + oy * kernel * width + (p - oy * out_width) * kernel
            grad_in[s, target] = grad_out[s, u]


def max_pool_backward(grad_out: np.ndarray, ptr: np.ndarray, idx: np.ndarray, argmax: np.ndarray,
                      geometry: PoolGeometry) -> np.ndarray:
    """dL/dx of the max pooling.

    Parameters
    ----------
    grad_out : float32 ``[T*B, C*Ho*Wo]``: dL/d(pooled output).
    ptr, idx, argmax : the output events and argmax of :func:`max_pool_events`.
    geometry : the pooling.

    Returns
    -------
    float32 ``[T*B, C*H*W]``.
    """
    g = geometry
    grad_out = np.ascontiguousarray(grad_out, dtype=np.float32)
    n_slots = ptr.shape[0] - 1
    if grad_out.shape != (n_slots, g.n_out):
        raise ValueError(f"grad_out must be [{n_slots}, {g.n_out}], got {grad_out.shape}")
    grad_in = np.empty((n_slots, g.n_in), dtype=np.float32)
    _max_pool_backward(grad_out, ptr, idx, argmax, g.height, g.width, g.kernel, g.out_height, g.out_width, grad_in)
    return grad_in
