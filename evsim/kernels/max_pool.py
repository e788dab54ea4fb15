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

from evsim.aligned import aligned_empty
from evsim.kernels.conv_geometry import PoolGeometry, _compact_events, pool_bands
from evsim.kernels.propagate import _balanced_bounds


@njit(parallel=True, cache=True)
def _max_pool_events(ptr, idx, val, bounds, channels_hw, width, kernel, out_height, out_width, n_out, tmp_idx,
                     tmp_val, tmp_arg, counts):
    """Slot s's output events into ``tmp_*[ptr[s]:]``, their number into ``counts[s]``.

    Band by band of ``kernel`` input rows (events ascend, so a band's are consecutive):
    a row of maxima, argmaxima and touched flags, written out in column order when the
    band ends (a scan of ``out_width`` flags per band with events; written with the bit
    walk of :func:`evsim.kernels.avg_pool._avg_pool_events`, this kernel gave wrong
    results under ``parallel=True`` with Numba 0.68, right ones without). Keeping the
    first of equal maxima (strict ``>``) keeps the lowest index.
    """
    bands = pool_bands(n_out // (out_height * out_width), channels_hw // width, width, kernel, out_height, out_width)
    for task in prange(bounds.shape[0] - 1):
        best = np.zeros(out_width, dtype=np.float32)
        arg = np.zeros(out_width, dtype=np.int32)
        seen = np.zeros(out_width, dtype=np.uint8)
        for s in range(bounds[task], bounds[task + 1]):
            m = ptr[s]
            band = -1
            for e in range(ptr[s], ptr[s + 1] + 1):
                next_band = -2  # past the last event: flush
                ox = 0
                i = 0
                if e < ptr[s + 1]:
                    i = idx[e]
                    next_band = bands[i, 0]
                    if next_band < 0:
                        continue
                    ox = bands[i, 1]
                if next_band != band:
                    if band >= 0:
                        row = band * out_width
                        for col in range(out_width):
                            if seen[col]:
                                seen[col] = 0
                                if best[col] > 0:
                                    tmp_idx[m] = row + col
                                    tmp_val[m] = best[col]
                                    tmp_arg[m] = arg[col]
                                    m += 1
                    band = next_band
                if e < ptr[s + 1]:
                    v = val[e]
                    if not seen[ox]:
                        seen[ox] = 1
                        best[ox] = v
                        arg[ox] = i
                    elif v > best[ox]:
                        best[ox] = v
                        arg[ox] = i
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
    """One slot per task: walk every output unit in order and the slot's output events together."""
    hw = height * width
    channels = grad_in.shape[1] // hw
    for s in prange(grad_in.shape[0]):
        grad_in[s, :] = 0.0
        e = ptr[s]
        u = 0
        for c in range(channels):
            for oy in range(out_height):
                first = c * hw + oy * kernel * width
                for ox in range(out_width):
                    if e < ptr[s + 1] and idx[e] == u:
                        target = argmax[e]
                        e += 1
                    else:
                        target = first + ox * kernel
                    grad_in[s, target] = grad_out[s, u]
                    u += 1


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
    grad_in = aligned_empty((n_slots, g.n_in))
    _max_pool_backward(grad_out, ptr, idx, argmax, g.height, g.width, g.kernel, g.out_height, g.out_width, grad_in)
    return grad_in
