"""Average pooling of event maps: ``k x k`` windows, stride ``k`` (PyTorch's ``AvgPool2d(k)``).

Forward: slot s's output unit ``c*Ho*Wo + oy*Wo + ox`` is the sum of the window's input
values divided by ``k*k``; spikes become 0.25, 0.5, ... for ``k = 2``. Events in, events
out (:class:`evsim.kernels.events.Events`, indices ascending per slot, only nonzero
outputs). Rows and columns past ``Ho*k``, ``Wo*k`` are dropped (PyTorch floors).

Backward: ``dL/dx[s, c, y, x] = dL/dy[s, c, y // k, x // k] / (k*k)`` inside the pooled
area, 0 outside; dense ``[T*B, C*H*W]``, or only at the cells a mask marks.
"""
from __future__ import annotations

import numpy as np
from numba import get_num_threads, njit, prange

from evsim.aligned import aligned_empty
from evsim.kernels.conv_geometry import PoolGeometry, _compact_events, pool_bands
from evsim.kernels.propagate import _balanced_bounds
from evsim.kernels.simd import lowest_bit, nonzero_bits


@njit(parallel=True, cache=True)
def _avg_pool_events(ptr, idx, val, bounds, channels_hw, width, kernel, out_height, out_width, n_out, tmp_idx,
                     tmp_val, counts):
    """Slot s's pooled events into ``tmp_idx/tmp_val[ptr[s]:]`` (at most one output per
    input event), their number into ``counts[s]``.

    A task sums a slot's events into a dense row of window sums (the events in their
    order, so each window adds its cells in the order the input gives them) and marks
    the windows touched in a byte row; the outputs are then read off in ascending order,
    64 windows per step of :func:`evsim.kernels.simd.nonzero_bits`, one step per touched
    window, which puts them back to zero. No sort and no branch on where a band of rows
    ends (that walk took 4-9 ns per input event: mispredicted at every band).
    """
    bands = pool_bands(n_out // (out_height * out_width), channels_hw // width, width, kernel, out_height, out_width)
    divisor = np.float32(kernel * kernel)
    one = np.uint64(1)
    for task in prange(bounds.shape[0] - 1):
        sums = np.zeros(n_out, dtype=np.float32)
        touched = np.zeros(n_out, dtype=np.uint8)
        for s in range(bounds[task], bounds[task + 1]):
            for e in range(ptr[s], ptr[s + 1]):
                i = idx[e]
                if bands[i, 0] >= 0:  # not past the last whole window
                    o = bands[i, 0] * out_width + bands[i, 1]
                    sums[o] += val[e]
                    touched[o] = 1
            m = ptr[s]
            for w in range(0, n_out, 64):
                bits = nonzero_bits(touched, w, min(64, n_out - w))
                while bits:
                    j = w + lowest_bit(bits)
                    bits &= bits - one
                    total = sums[j]
                    sums[j] = 0.0
                    touched[j] = 0
                    if total != 0:
                        tmp_idx[m] = j
                        tmp_val[m] = total / divisor
                        m += 1
            counts[s] = m - ptr[s]


def avg_pool_events(ptr: np.ndarray, idx: np.ndarray, val: np.ndarray, geometry: PoolGeometry):
    """Pooled events of the input events.

    Parameters
    ----------
    ptr, idx, val : input events, int64 ``[T*B + 1]``, int32 ``c*H*W + y*W + x``
        (ascending per slot), float32.
    geometry : :func:`evsim.kernels.conv_geometry.pool_geometry`.

    Returns
    -------
    (ptr, idx, val) : the output events, int64 ``[T*B + 1]``, int32 units
        ``c*Ho*Wo + oy*Wo + ox`` ascending per slot, float32 window sums / ``k*k``;
        windows whose sum is 0 give no event.
    """
    g = geometry
    n_slots = ptr.shape[0] - 1
    tmp_idx = np.empty(idx.shape[0], dtype=np.int32)
    tmp_val = np.empty(idx.shape[0], dtype=np.float32)
    counts = np.empty(n_slots, dtype=np.int64)
    bounds = _balanced_bounds(ptr, get_num_threads())
    _avg_pool_events(ptr, idx, val, bounds, g.height * g.width, g.width, g.kernel, g.out_height, g.out_width,
                     g.n_out, tmp_idx, tmp_val, counts)
    out_ptr = np.zeros(n_slots + 1, dtype=np.int64)
    np.cumsum(counts, out=out_ptr[1:])
    out_idx = np.empty(out_ptr[-1], dtype=np.int32)
    out_val = np.empty(out_ptr[-1], dtype=np.float32)
    _compact_events(ptr, counts, tmp_idx, tmp_val, out_ptr, out_idx, out_val)
    return out_ptr, out_idx, out_val


@njit(parallel=True, cache=True)
def _avg_pool_backward(grad_out, mask, channels, height, width, kernel, out_height, out_width, grad_in):
    """``grad_in[s]`` from ``grad_out[s]`` for the input ``channels`` (written in their
    order), one slot per task; ``mask`` None: every cell. Each output's share is divided
    once and written to its window row by row."""
    hw = height * width
    out_cells = out_height * out_width
    divisor = np.float32(kernel * kernel)
    for s in prange(grad_in.shape[0]):
        grad_in[s, :] = 0.0
        for j in range(channels.shape[0]):
            c = channels[j]
            for oy in range(out_height):
                o = c * out_cells + oy * out_width
                for ox in range(out_width):
                    share = grad_out[s, o + ox] / divisor
                    for dy in range(kernel):
                        i0 = (oy * kernel + dy) * width + ox * kernel
                        for dx in range(kernel):
                            if mask is None or mask[s, c * hw + i0 + dx]:
                                grad_in[s, j * hw + i0 + dx] = share


def avg_pool_backward(grad_out: np.ndarray, geometry: PoolGeometry, mask: np.ndarray | None = None,
                      channels: np.ndarray | None = None) -> np.ndarray:
    """dL/dx of the pooling.

    Parameters
    ----------
    grad_out : float32 ``[T*B, C*Ho*Wo]``: dL/d(pooled output).
    geometry : the pooling.
    mask : optional uint8 or bool ``[T*B, C*H*W]``: dL/dx only where nonzero (0 elsewhere).
        It saves no time here: on conv1's output (15x32x32, 2,000 slots) the masked
        variant took 106-260 ms against 31-71 ms unmasked (1 thread, benchmarks/RESULTS.md),
        reading the mask and branching per cell; the masking pays where the kernel below
        uses it to skip work.
    channels : optional ints: compute dL/dx of these input channels only, in this order
        (a convolution's alive filters below: a dead filter's map is never written).

    Returns
    -------
    float32 ``[T*B, len(channels)*H*W]`` (every channel without ``channels``).
    """
    g = geometry
    grad_out = np.ascontiguousarray(grad_out, dtype=np.float32)
    n_slots = grad_out.shape[0]
    if grad_out.ndim != 2 or grad_out.shape[1] != g.n_out:
        raise ValueError(f"grad_out must be [T*B, {g.n_out}], got {grad_out.shape}")
    if mask is not None:
        if mask.dtype == np.bool_:
            mask = mask.view(np.uint8)
        if mask.dtype != np.uint8 or mask.shape != (n_slots, g.n_in):
            raise ValueError(f"mask must be uint8 or bool [{n_slots}, {g.n_in}], got {mask.dtype} {mask.shape}")
    channels = np.arange(g.channels, dtype=np.int64) if channels is None else np.asarray(channels, dtype=np.int64)
    if channels.ndim != 1 or (channels.size and (channels.min() < 0 or channels.max() >= g.channels)):
        raise ValueError(f"channels must be channel indices in [0, {g.channels}), got {channels!r}")
    grad_in = aligned_empty((n_slots, channels.size * g.height * g.width))
    _avg_pool_backward(grad_out, mask, channels, g.height, g.width, g.kernel, g.out_height, g.out_width, grad_in)
    return grad_in
