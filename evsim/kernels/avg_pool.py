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

from evsim.kernels.conv_geometry import PoolGeometry, _compact_events
from evsim.kernels.propagate import _balanced_bounds


@njit(parallel=True, cache=True)
def _avg_pool_events(ptr, idx, val, bounds, channels_hw, width, kernel, out_height, out_width, n_out, tmp_idx,
                     tmp_val, counts):
    """Slot s's pooled events into ``tmp_idx/tmp_val[ptr[s]:]`` (at most one output per
    input event), their number into ``counts[s]``. Each task sums its run of slots in a
    private dense map of the outputs, remembers which it touched, sorts those and clears
    only them."""
    out_cells = out_height * out_width
    divisor = np.float32(kernel * kernel)
    for task in prange(bounds.shape[0] - 1):
        sums = np.zeros(n_out, dtype=np.float32)
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
                if not seen[u]:
                    seen[u] = 1
                    touched[n] = u
                    n += 1
                sums[u] += val[e]
            order = np.sort(touched[:n])
            m = ptr[s]
            for u in order:
                total = sums[u]
                sums[u] = 0.0
                seen[u] = 0
                if total != 0:
                    tmp_idx[m] = u
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
def _avg_pool_backward(grad_out, mask, height, width, kernel, out_height, out_width, grad_in):
    """``grad_in[s]`` from ``grad_out[s]``, one slot per task; ``mask`` None: every cell."""
    hw = height * width
    out_cells = out_height * out_width
    divisor = np.float32(kernel * kernel)
    channels = grad_in.shape[1] // hw
    for s in prange(grad_in.shape[0]):
        grad_in[s, :] = 0.0
        for c in range(channels):
            for y in range(out_height * kernel):
                o = c * out_cells + (y // kernel) * out_width
                i0 = c * hw + y * width
                for x in range(out_width * kernel):
                    if mask is None or mask[s, i0 + x]:
                        grad_in[s, i0 + x] = grad_out[s, o + x // kernel] / divisor


def avg_pool_backward(grad_out: np.ndarray, geometry: PoolGeometry, mask: np.ndarray | None = None) -> np.ndarray:
    """dL/dx of the pooling.

    Parameters
    ----------
    grad_out : float32 ``[T*B, C*Ho*Wo]``: dL/d(pooled output).
    geometry : the pooling.
    mask : optional uint8 or bool ``[T*B, C*H*W]``: dL/dx only where nonzero (0 elsewhere).

    Returns
    -------
    float32 ``[T*B, C*H*W]``.
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
    grad_in = np.empty((n_slots, g.n_in), dtype=np.float32)
    _avg_pool_backward(grad_out, mask, g.height, g.width, g.kernel, g.out_height, g.out_width, grad_in)
    return grad_in
