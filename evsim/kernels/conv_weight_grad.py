"""Weight gradient of a spiking 2-D convolution, for a given set of (channel, filter) kernels.

``dW[c -> f, ky, kx] = sum_s sum_{events (c, y, x, v) of slot s} v * dL/du[s, f, oy, ox]``
over the events' valid taps (``y + P - ky = oy*S``, likewise in x; see
:mod:`evsim.kernels.conv_geometry`). The kernels asked for come as a block CSR
``(indptr, columns)`` whose ``columns`` index *blocks of* ``grad_u``: block f is
``grad_u[:, f*Ho*Wo:(f+1)*Ho*Wo]``. For the kernels that exist, ``grad_u`` is the
layer's dL/du and ``columns`` the store's (compacted alive filters). For would-be
gradients of missing kernels (regeneration), including kernels into dead filters, the
caller passes a ``grad_u`` whose blocks are the filters it asks about (for instance the
alive filters' dL/du followed by the dead filters' errors sent back from above,
``[T*B, G*Ho*Wo]``), and ``columns`` indexing those blocks: one kernel serves both.

``events``  a slot's dL/du is transposed to a cell-major scratch ``[Ho*Wo, G_pad]``
            (only for slots with events); then per input event and valid tap, the
            output cell's row (all blocks) times ``v`` is added to the sums of the
            (channel, tap) row ``[G_pad]``: plain vector adds. The sums hold every
            (channel, block) pair; the pairs asked for are picked at the end.
``csr``     per input event and valid tap, sixteen kernels at a time: gather sixteen
            entries of ``grad_u``, add ``v`` times them to the tap's sixteen sums.

In both event variants each thread sums its own run of slots into private sums,
reduced at the end in a fixed order (deterministic for a given thread count).
``direct``  (stride 1) each slot's events written into a dense map, then register-blocked
            products of its shifted rows and dL/du (:mod:`evsim.kernels.conv_direct`)
            give every (channel, block) pair; slots without events or whose dL/du is
            all zero are skipped.
``dense``   im2col of a chunk of slots, then ``[G, n*Ho*Wo] @ [n*Ho*Wo, C*K*K]``
            (one BLAS GEMM per chunk), summed over chunks; the asked-for kernels are
            then picked out of the ``[G, C*K*K]`` result.

Every variant returns float32 ``[nnz, K, K]``, aligned with ``columns``.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import get_num_threads, njit, prange

from evsim.kernels.conv_direct import (PRODUCT_BLOCKS, PRODUCT_TAPS, direct_products, pad_rows, shift_events,
                                       shifted_shape, tap_offsets, zeros_on_lines)
from evsim.kernels.conv_forward import DENSE_CHUNK_BYTES
from evsim.kernels.conv_geometry import (ConvGeometry, _im2col_events, _slots_to_blocks, _to_cell_major,
                                         block_offsets, check_block_csr, check_events, check_grad, chunk_slots,
                                         kernel_rows, padded_lanes, unit_taps, add_event_kernels, add_event_rows)
from evsim.kernels.propagate import _balanced_bounds
from evsim.kernels.simd import LANES, all_zero


@njit(parallel=True, cache=True)
def _conv_weight_grad_csr(ptr, idx, val, indptr, offsets, grad_u, bounds, channels_hw, width, kernel, stride,
                          pad, out_height, out_width, partial):
    """``partial[task]`` float32 ``[K*K*nnz]`` (tap-major) = the gradient summed over slots
    ``bounds[task]:bounds[task + 1]``; ``offsets`` = ``columns * Ho*Wo`` (int32)."""
    n = grad_u.shape[1]
    grads = grad_u.reshape(grad_u.size)
    units = unit_taps(indptr.shape[0] - 1, channels_hw // width, width, kernel, stride, pad, out_height, out_width)
    for task in prange(bounds.shape[0] - 1):
        acc = partial[task]
        acc[:] = 0.0
        for s in range(bounds[task], bounds[task + 1]):
            if not all_zero(grad_u[s], 0, n):
                add_event_kernels(ptr, idx, val, s, s * n, units, indptr, offsets, kernel, stride, out_width, grads,
                                  acc, True)


@njit(parallel=True, cache=True)
def _conv_weight_grad_rows(ptr, idx, val, grad_u, wanted, bounds, channels_hw, width, kernel, stride, pad,
                           out_height, out_width, partial):
    """``partial[task]`` float32 ``[C*K*K*G_pad]`` (row layout: ``(c, tap, block)``) = the
    gradient of every pair summed over slots ``bounds[task]:bounds[task + 1]``; events of
    channels with ``wanted[c]`` False are skipped."""
    cells = out_height * out_width
    n_blocks = grad_u.shape[1] // cells
    lanes = partial.shape[1] // (wanted.shape[0] * kernel * kernel)
    units = unit_taps(wanted.shape[0], channels_hw // width, width, kernel, stride, pad, out_height, out_width)
    for task in prange(bounds.shape[0] - 1):
        acc = partial[task]
        acc[:] = 0.0
        scratch = np.zeros(cells * lanes, dtype=np.float32)  # padding lanes stay 0
        for s in range(bounds[task], bounds[task + 1]):
            if ptr[s] == ptr[s + 1] or all_zero(grad_u[s], 0, grad_u.shape[1]):
                continue
            _to_cell_major(grad_u, s, n_blocks, cells, lanes, scratch)
            add_event_rows(ptr, idx, val, s, units, wanted, kernel, stride, out_width, lanes, scratch, acc, True)


@njit(parallel=True, cache=True)
def _conv_weight_grad_direct(ptr, idx, val, grad_u, offsets, bounds, n_channels, height, width, pad, kernel, rows,
                             width_pad, out_height, out_width, partial):
    """Stride 1. Each task takes the slots ``bounds[task]:bounds[task+1]``: a slot's events
    into the task's input map and shifted copies (as the direct forward), then
    :func:`evsim.kernels.conv_direct.direct_products` into the task's lane sums, reduced
    over the lanes into ``partial[task]`` ``[n_taps, G_pad]`` at the end."""
    n_blocks = grad_u.shape[1] // (out_height * out_width)
    n = grad_u.shape[1]
    for task in prange(bounds.shape[0] - 1):
        image = np.zeros(n_channels * height * width, dtype=np.float32)
        shifted = zeros_on_lines(kernel * n_channels * rows * width_pad)
        sums = zeros_on_lines(offsets.shape[0] * partial.shape[2] * LANES)
        grad = zeros_on_lines(n_blocks * out_height * width_pad)
        for s in range(bounds[task], bounds[task + 1]):
            if ptr[s] == ptr[s + 1] or all_zero(grad_u[s], 0, n):
                continue
            direct_slot_products(ptr, idx, val, s, grad_u[s], image, n_channels, height, width, pad, kernel, rows,
                                 width_pad, offsets, n_blocks, out_height, out_width, shifted, grad, sums)
        lane_totals(sums, partial[task])


@njit(cache=True)
def direct_slot_products(ptr, idx, val, s, grad_row, image, n_channels, height, width, pad, kernel, rows, width_pad,
                         offsets, n_blocks, out_height, out_width, shifted, grad, sums):
    """Slot ``s``'s events into the shifted maps and its dL/du ``grad_row`` ``[G*Ho*Wo]``
    into padded rows, then their products added to the lane sums ``sums``
    (:func:`evsim.kernels.conv_direct.direct_products`)."""
    shift_events(ptr, idx, val, s, image, n_channels, height, width, pad, kernel, rows, width_pad, shifted)
    pad_rows(grad_row, 0, n_blocks, out_height, out_width, width_pad, grad)
    direct_products(shifted, width_pad, offsets, grad, n_blocks, out_height, sums)


@njit(cache=True)
def lane_totals(sums, out):
    """``out[j, f]`` ``[n_taps, G_pad]`` = the sum of the 16 lanes of tap ``j`` and block
    ``f`` in the lane sums ``sums``."""
    for j in range(out.shape[0]):
        for f in range(out.shape[1]):
            a = (j * out.shape[1] + f) * LANES
            out[j, f] = np.sum(sums[a:a + LANES])


def _checked(ptr, idx, val, grad_u, indptr, columns, geometry: ConvGeometry) -> tuple[int, int]:
    """``(blocks of grad_u, kernels asked for)`` once every argument of a weight-gradient
    kernel fits: the kernels index without bounds checks."""
    n_blocks = check_grad(grad_u, grad_u.shape[0], geometry.out_cells)
    check_events(ptr, idx, val, grad_u.shape[0])
    nnz = columns.shape[0]
    check_block_csr(indptr, columns, np.empty((nnz, geometry.kernel, geometry.kernel), dtype=np.float32), geometry,
                    n_blocks)
    return n_blocks, nnz


def _sum_tasks(partial: np.ndarray) -> np.ndarray:
    """The per-task partial sums added in a fixed order: the same sums for the same thread count."""
    total = partial[0].copy()
    for task in range(1, partial.shape[0]):
        total += partial[task]
    return total


def conv_weight_grad_events(ptr: np.ndarray, idx: np.ndarray, val: np.ndarray, grad_u: np.ndarray,
                            indptr: np.ndarray, columns: np.ndarray, geometry: ConvGeometry) -> np.ndarray:
    """Event-driven weight gradient of the kernels ``(indptr, columns)`` (row layout).

    Parameters
    ----------
    ptr, idx, val : the layer's input events (int64 ``[T*B + 1]``, int32, float32).
    grad_u : float32 ``[T*B, G*Ho*Wo]``, C-contiguous: dL/du per block (filter).
    indptr, columns : int32 ``[C_in + 1]``, int32 ``[nnz]``: the kernels asked for,
        ``columns`` indexing the blocks of ``grad_u`` (ascending within a row).
    geometry : the convolution.

    Returns
    -------
    float32 ``[nnz, K, K]``, aligned with ``columns``.
    """
    g = geometry
    n_blocks, _ = _checked(ptr, idx, val, grad_u, indptr, columns, g)
    bounds = _balanced_bounds(ptr, get_num_threads())
    lanes = padded_lanes(n_blocks)
    partial = np.empty((bounds.size - 1, g.in_channels * g.taps * lanes), dtype=np.float32)
    _conv_weight_grad_rows(ptr, idx, val, grad_u, np.diff(indptr) > 0, bounds, g.height * g.width, g.width,
                           g.kernel, g.stride, g.pad, g.out_height, g.out_width, partial)
    return rows_to_kernels(partial, indptr, columns, g)


def rows_to_kernels(partial: np.ndarray, indptr: np.ndarray, columns: np.ndarray,
                    geometry: ConvGeometry) -> np.ndarray:
    """The kernels ``(indptr, columns)`` asked for, float32 ``[nnz, K, K]``, out of the tasks'
    row-layout sums ``partial`` ``[tasks, C*K*K*G_pad]`` (:func:`~evsim.kernels.conv_geometry.add_event_rows`)."""
    g = geometry
    total = _sum_tasks(partial).reshape(g.in_channels, g.taps, -1)
    return np.ascontiguousarray(total[kernel_rows(indptr), :, columns]).reshape(columns.size, g.kernel, g.kernel)


def conv_weight_grad_csr(ptr: np.ndarray, idx: np.ndarray, val: np.ndarray, grad_u: np.ndarray,
                         indptr: np.ndarray, columns: np.ndarray, geometry: ConvGeometry) -> np.ndarray:
    """Event-driven weight gradient of the kernels ``(indptr, columns)``, by 16-lane gathers
    from ``grad_u`` (the ``csr`` variant). Same arguments and result as
    :func:`conv_weight_grad_events`.
    """
    g = geometry
    n_blocks, nnz = _checked(ptr, idx, val, grad_u, indptr, columns, g)
    bounds = _balanced_bounds(ptr, get_num_threads())
    partial = np.empty((bounds.size - 1, g.taps * nnz), dtype=np.float32)
    _conv_weight_grad_csr(ptr, idx, val, indptr, block_offsets(columns, g.out_cells), grad_u, bounds,
                             g.height * g.width, g.width, g.kernel, g.stride, g.pad, g.out_height, g.out_width,
                             partial)
    total = _sum_tasks(partial)
    return np.ascontiguousarray(total.reshape(g.taps, nnz).T).reshape(nnz, g.kernel, g.kernel)


def conv_weight_grad_direct(ptr: np.ndarray, idx: np.ndarray, val: np.ndarray, grad_u: np.ndarray,
                            indptr: np.ndarray, columns: np.ndarray, geometry: ConvGeometry) -> np.ndarray:
    """Weight gradient of a stride-1 convolution by register-blocked products of each
    slot's shifted input map and dL/du (:func:`evsim.kernels.conv_direct.direct_products`):
    the gradient of every (channel with a kernel asked for, block) pair, dense arithmetic
    independent of the activity, then the kernels asked for picked out. Strided
    convolutions go to :func:`conv_weight_grad_dense`. Same arguments and result as
    :func:`conv_weight_grad_events`."""
    g = geometry
    if g.stride != 1:
        return conv_weight_grad_dense(ptr, idx, val, grad_u, indptr, columns, geometry)
    n_blocks, nnz = _checked(ptr, idx, val, grad_u, indptr, columns, g)
    plan = DirectPlan.of(indptr, g, n_blocks)
    bounds = _balanced_bounds(ptr, get_num_threads())
    partial = plan.partial(bounds.size - 1)
    _conv_weight_grad_direct(ptr, idx, val, grad_u, plan.offsets, bounds, g.in_channels, g.height, g.width, g.pad,
                             g.kernel, plan.rows, plan.width_pad, g.out_height, g.out_width, partial)
    return plan.kernels(partial, indptr, columns, g)


class DirectPlan(NamedTuple):
    """The direct weight gradient's layout for a convolution: the shifted maps' ``rows``
    and ``width_pad``, the source ``channels`` with a kernel asked for, their taps'
    ``offsets`` into the shifted maps (``n_taps``, then padded to whole register blocks)
    and the blocks of dL/du padded to whole register blocks."""
    rows: int
    width_pad: int
    channels: np.ndarray
    offsets: np.ndarray
    n_taps: int
    blocks_padded: int

    @classmethod
    def of(cls, indptr: np.ndarray, geometry: ConvGeometry, n_blocks: int) -> "DirectPlan":
        g = geometry
        shape = shifted_shape(g.in_channels, g.kernel, g.out_height, g.out_width)
        channels = np.flatnonzero(np.diff(indptr))
        offsets = tap_offsets(channels, shape)
        n_taps = offsets.size
        offsets = np.concatenate([offsets, np.repeat(offsets[:1], -n_taps % PRODUCT_TAPS)])  # whole register blocks
        return cls(shape[2], shape[3], channels, offsets, n_taps, -(-n_blocks // PRODUCT_BLOCKS) * PRODUCT_BLOCKS)

    def partial(self, n_tasks: int) -> np.ndarray:
        """The tasks' totals, float32 ``[tasks, taps padded, G_pad]`` (:func:`lane_totals`)."""
        return np.empty((n_tasks, self.offsets.size, self.blocks_padded), dtype=np.float32)

    def kernels(self, partial: np.ndarray, indptr: np.ndarray, columns: np.ndarray,
                geometry: ConvGeometry) -> np.ndarray:
        """The kernels ``(indptr, columns)`` asked for, float32 ``[nnz, K, K]``, out of the
        tasks' totals."""
        g = geometry
        total = np.zeros((g.in_channels, g.kernel, g.kernel, self.blocks_padded), dtype=np.float32)
        total[self.channels] = _sum_tasks(partial)[:self.n_taps].reshape(self.channels.size, g.kernel, g.kernel,
                                                                          self.blocks_padded)
        return np.ascontiguousarray(total[kernel_rows(indptr), :, :, columns])


def conv_weight_grad_dense(ptr: np.ndarray, idx: np.ndarray, val: np.ndarray, grad_u: np.ndarray,
                           indptr: np.ndarray, columns: np.ndarray, geometry: ConvGeometry,
                           max_bytes: int = DENSE_CHUNK_BYTES) -> np.ndarray:
    """:func:`conv_weight_grad_events` by im2col and GEMM: the gradient of every (channel,
    block) pair, ``[G, C*K*K]``, summed chunk by chunk, then the kernels asked for picked
    out. Same arguments and result."""
    g = geometry
    n_slots = grad_u.shape[0]
    n_blocks, nnz = _checked(ptr, idx, val, grad_u, indptr, columns, g)
    n_rows = g.in_channels * g.taps
    chunk = chunk_slots(n_slots, 4 * g.out_cells * (n_rows + n_blocks), max_bytes)
    total = np.zeros((n_blocks, n_rows), dtype=np.float32)
    col = np.empty((n_rows, chunk * g.out_cells), dtype=np.float32)
    blocks = np.empty((n_blocks, chunk * g.out_cells), dtype=np.float32)
    for s0 in range(0, n_slots, chunk):
        s1 = min(n_slots, s0 + chunk)
        width = (s1 - s0) * g.out_cells
        if width < col.shape[1]:  # the last, shorter chunk: contiguous buffers of its own width
            col = np.empty((n_rows, width), dtype=np.float32)
            blocks = np.empty((n_blocks, width), dtype=np.float32)
        _im2col_events(ptr, idx, val, s0, s1, g.height * g.width, g.width, g.kernel, g.stride, g.pad,
                       g.out_height, g.out_width, col)
        _slots_to_blocks(grad_u, g.out_cells, s0, blocks)
        total += blocks @ col.T
    return total.reshape(n_blocks, g.in_channels, g.kernel, g.kernel)[columns, kernel_rows(indptr)]
