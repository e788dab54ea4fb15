"""Currents of a spiking 2-D convolution: ``I[s] = conv(x[s])`` for every slot ``s = t*B + b``.

Five variants with the same result (exactly, for sums that float32 holds exactly):

``events``  each input event adds, for each valid tap, its channel's row of weights
            (one ``F_pad``-lane vector row over the alive filters, zeros for missing
            kernels) to the output cell's row of a cell-major ``[Ho*Wo, F_pad]``
            scratch; the scratch is then transposed into the slot's filter-major row.
            Cost: (events) x (valid taps) x ``F_pad / 16`` vector adds, plus the
            transpose (``F*Ho*Wo`` per slot); dead filters and channels without kernels
            cost nothing.
``csr``     each input event scatters its valid taps of the kernels stored in its
            channel's row: ``I[s, f, oy, ox] += v * w[c -> f, ky, kx]``, sixteen kernels
            per gather-add-scatter. Cost: (events) x (valid taps) x (stored kernels);
            pruned kernels and dead filters cost nothing.
``direct``  (stride 1) the slot's events written into a dense map, the currents by the
            register-blocked direct convolution (:mod:`evsim.kernels.conv_direct`):
            cost independent of the activity, cheaper than ``events`` on dense input
            (pooled spikes) and on maps with few input channels.
``dense``   im2col of a chunk of slots and one BLAS GEMM ``[F, C*K*K] @ [C*K*K, n*Ho*Wo]``
            for all of them: the currents of a feed-forward layer do not depend on its
            own state, so all T steps go into one product (PyTorch's step loop runs T).
``static``  analog input that is the same at every step (direct encoding): one product
            per sample, ``[B, F*Ho*Wo]``, broadcast over the steps by the caller.

Currents are float32 ``[T*B, F_alive*Ho*Wo]``, C-contiguous, filter-major per slot
(``f*Ho*Wo + oy*Wo + ox``), ready for :func:`evsim.kernels.propagate._lif_scan` as
``[T, B, N]``. See :mod:`evsim.kernels.conv_geometry` for the index conventions.
"""
from __future__ import annotations

import numpy as np
from numba import get_num_threads, njit, prange

from evsim.kernels.conv_direct import block_scratch, direct_slot, forward_taps, shift_events, zeros_on_lines
from evsim.kernels.conv_geometry import (ConvGeometry, _blocks_to_slots, _from_cell_major, _im2col_dense,
                                         _im2col_events, block_offsets, with_kernels, check_block_csr,
                                         check_events, check_out, chunk_slots, dense_filter_matrix, row_weights,
                                         tap_major, unit_taps, add_event_kernels, add_event_rows)
from evsim.kernels.propagate import _balanced_bounds

# Bytes of im2col and GEMM result a dense chunk may hold: large enough that the GEMM
# runs at full speed, small enough to stay a fraction of the currents themselves.
DENSE_CHUNK_BYTES = 1 << 25


@njit(parallel=True, cache=True)
def _conv_currents_csr(ptr, idx, val, indptr, offsets, taps, channels_hw, width, kernel, stride, pad, out_height,
                       out_width, out):
    """``out[s] = conv(events of slot s)``, one slot per task (no shared writes).

    ``offsets`` int32 ``[nnz]``: each kernel's filter block (``columns * Ho*Wo``);
    ``taps`` float32 ``[K*K, nnz]``: tap-major weights. For each valid tap of an
    event, the row's kernels go sixteen at a time: gather the sixteen currents at
    ``offset + oy*Wo + ox``, add ``v * w``, scatter back (distinct filters within a row,
    so no two lanes hit one current).
    """
    n = out.shape[1]
    flat = out.reshape(out.size)
    weights = taps.reshape(taps.size)
    units = unit_taps(indptr.shape[0] - 1, channels_hw // width, width, kernel, stride, pad, out_height, out_width)
    for s in prange(out.shape[0]):
        o = s * n
        flat[o:o + n] = 0.0
        add_event_kernels(ptr, idx, val, s, o, units, indptr, offsets, kernel, stride, out_width, flat, weights, False)


@njit(parallel=True, cache=True)
def _conv_currents_rows(ptr, idx, val, rows, bounds, channels_hw, width, kernel, stride, pad, out_height,
                        out_width, out):
    """``out[s] = conv(events of slot s)``; each task takes the slots ``bounds[task]:bounds[task+1]``.

    ``rows`` float32 ``[C, K*K, F_pad]`` (:func:`evsim.kernels.conv_geometry.row_weights`).
    A task sums a slot into its cell-major scratch ``[Ho*Wo, F_pad]`` (the tap's whole
    row of weights into the output cell's row: plain vector loads, adds and stores, no
    gathers), then transposes it into ``out[s]``. Channels whose row is all zero (no
    kernel stored) are skipped.
    """
    n_channels, n_taps, lanes = rows.shape
    n_filters = out.shape[1] // (out_height * out_width)
    cells = out_height * out_width
    weights = rows.reshape(rows.size)
    has_kernels = with_kernels(rows)
    units = unit_taps(rows.shape[0], channels_hw // width, width, kernel, stride, pad, out_height, out_width)
    for task in prange(bounds.shape[0] - 1):
        scratch = np.empty(cells * lanes, dtype=np.float32)
        for s in range(bounds[task], bounds[task + 1]):
            scratch[:] = 0.0
            add_event_rows(ptr, idx, val, s, units, has_kernels, kernel, stride, out_width, lanes, weights, scratch, False)
            _from_cell_major(scratch, n_filters, cells, lanes, out, s)


@njit(parallel=True, cache=True)
def _conv_currents_direct(ptr, idx, val, offsets, weights, bounds, n_channels, height, width, pad, kernel, rows,
                          width_pad, out_height, out_width, out):
    """Stride 1. Each task takes the slots ``bounds[task]:bounds[task+1]``: a slot's events
    go into the task's shifted copies (:func:`evsim.kernels.conv_direct.shift_events`),
    the currents are computed from them."""
    n_filters = out.shape[1] // (out_height * out_width)
    for task in prange(bounds.shape[0] - 1):
        image = np.zeros(n_channels * height * width, dtype=np.float32)
        shifted = zeros_on_lines(kernel * n_channels * rows * width_pad)
        block = block_scratch()
        for s in range(bounds[task], bounds[task + 1]):
            shift_events(ptr, idx, val, s, image, n_channels, height, width, pad, kernel, rows, width_pad, shifted)
            direct_slot(shifted, width_pad, offsets, weights, n_filters, out_height, out_width, out, s * out.shape[1],
                        block)


def conv_currents_direct(ptr: np.ndarray, idx: np.ndarray, val: np.ndarray, indptr: np.ndarray,
                         columns: np.ndarray, data: np.ndarray, geometry: ConvGeometry, out: np.ndarray) -> None:
    """Currents of a stride-1 convolution by the register-blocked direct convolution of
    each slot's map (:mod:`evsim.kernels.conv_direct`): dense arithmetic, independent of
    the activity, at most of the machine's multiply-add rate; it wins over
    :func:`conv_currents_events` where the input is dense (conv2 of the paper's
    networks: pooled spikes, about a third of the cells nonzero). Strided convolutions go
    to :func:`conv_currents_dense`. Same arguments as :func:`conv_currents_events`."""
    g = geometry
    if g.stride != 1:
        conv_currents_dense(ptr, idx, val, indptr, columns, data, geometry, out)
        return
    n_filters = _checked(ptr, idx, val, indptr, columns, data, g, out)
    shape, offsets, weights = forward_taps(indptr, columns, data, g, n_filters)
    _conv_currents_direct(ptr, idx, val, offsets, weights, _balanced_bounds(ptr, get_num_threads()), g.in_channels,
                          g.height, g.width, g.pad, g.kernel, shape[2], shape[3], g.out_height, g.out_width, out)


def _checked(ptr, idx, val, indptr, columns, data, geometry: ConvGeometry, out) -> int:
    """The filters (blocks) of ``out`` once every argument of a forward kernel fits: the
    kernels index without bounds checks."""
    n_filters = out.shape[1] // geometry.out_cells
    check_events(ptr, idx, val, out.shape[0])
    check_out(out, out.shape[0], n_filters * geometry.out_cells)
    check_block_csr(indptr, columns, data, geometry, n_filters)
    return n_filters


def conv_currents_events(ptr: np.ndarray, idx: np.ndarray, val: np.ndarray, indptr: np.ndarray,
                         columns: np.ndarray, data: np.ndarray, geometry: ConvGeometry, out: np.ndarray) -> None:
    """Event-driven currents of a convolution (row layout; see the module docstring).

    Parameters
    ----------
    ptr, idx, val : the input events (:class:`evsim.kernels.events.Events`): int64
        ``[T*B + 1]``, int32 unit indices ``c*H*W + y*W + x``, float32 values.
    indptr, columns, data : the block CSR (int32 ``[C_in + 1]``, int32 ``[nnz]``
        compacted alive filters ascending per row, float32 ``[nnz, K, K]``).
    geometry : the convolution (:func:`evsim.kernels.conv_geometry.conv_geometry`).
    out : float32 ``[T*B, F_alive*Ho*Wo]``, C-contiguous, overwritten; ``F_alive`` is
        ``out.shape[1] // (Ho*Wo)``.

    The synaptic operations an event performs are counted by
    :func:`evsim.kernels.conv_geometry.conv_fan_out` (stored kernels x valid taps); this
    variant computes them 16 filters per vector add, zeros in the lanes of missing
    kernels of a row that holds others.
    """
    g = geometry
    n_filters = _checked(ptr, idx, val, indptr, columns, data, g, out)
    _conv_currents_rows(ptr, idx, val, row_weights(indptr, columns, data, n_filters),
                        _balanced_bounds(ptr, get_num_threads()), g.height * g.width, g.width, g.kernel, g.stride,
                        g.pad, g.out_height, g.out_width, out)


def conv_currents_csr(ptr: np.ndarray, idx: np.ndarray, val: np.ndarray, indptr: np.ndarray,
                      columns: np.ndarray, data: np.ndarray, geometry: ConvGeometry, out: np.ndarray) -> None:
    """Event-driven currents of a convolution, by gather-add-scatter over each row's stored kernels.
    Same arguments as :func:`conv_currents_events`.

    Each event costs (valid taps) x (stored kernels of its channel) accumulates, the
    count of :func:`evsim.kernels.conv_geometry.conv_fan_out`, sixteen per AVX-512
    gather and scatter. It ran 3-4x slower than :func:`conv_currents_events` at 5-10 %
    activity with every kernel stored (``benchmarks/RESULTS.md``); it touches no lane of
    a missing kernel, so it is the one to try for rows that keep few of their kernels.
    """
    g = geometry
    _checked(ptr, idx, val, indptr, columns, data, g, out)
    _conv_currents_csr(ptr, idx, val, indptr, block_offsets(columns, g.out_cells), tap_major(data),
                       g.height * g.width, g.width, g.kernel, g.stride, g.pad, g.out_height, g.out_width, out)


def conv_currents_dense(ptr: np.ndarray, idx: np.ndarray, val: np.ndarray, indptr: np.ndarray, columns: np.ndarray,
                        data: np.ndarray, geometry: ConvGeometry, out: np.ndarray,
                        max_bytes: int = DENSE_CHUNK_BYTES) -> None:
    """:func:`conv_currents_events` by im2col and one GEMM per chunk of slots.

    Chunks of ``n`` slots (``max_bytes`` of buffers): the chunk's events go into an
    im2col matrix ``[C*K*K, n*Ho*Wo]``, BLAS multiplies it by the dense ``[F, C*K*K]``
    filter matrix (zeros for missing kernels), and the ``[F, n*Ho*Wo]`` product is
    copied into the chunk's rows of ``out``. Same arguments as
    :func:`conv_currents_events`.
    """
    g = geometry
    n_slots = out.shape[0]
    n_filters = _checked(ptr, idx, val, indptr, columns, data, g, out)
    matrix = dense_filter_matrix(indptr, columns, data, n_filters)
    n_rows = g.in_channels * g.taps
    chunk = chunk_slots(n_slots, 4 * g.out_cells * (n_rows + n_filters), max_bytes)
    col = np.empty((n_rows, chunk * g.out_cells), dtype=np.float32)
    product = np.empty((n_filters, chunk * g.out_cells), dtype=np.float32)
    for s0 in range(0, n_slots, chunk):
        s1 = min(n_slots, s0 + chunk)
        width = (s1 - s0) * g.out_cells
        if width < col.shape[1]:  # the last, shorter chunk: contiguous buffers of its own width
            col, product = (np.empty((n_rows, width), dtype=np.float32),
                            np.empty((n_filters, width), dtype=np.float32))
        _im2col_events(ptr, idx, val, s0, s1, g.height * g.width, g.width, g.kernel, g.stride, g.pad,
                       g.out_height, g.out_width, col)
        np.matmul(matrix, col, out=product)
        _blocks_to_slots(product, g.out_cells, s0, out)


def conv_currents_static(values: np.ndarray, indptr: np.ndarray, columns: np.ndarray, data: np.ndarray,
                         geometry: ConvGeometry, n_filters: int, max_bytes: int = DENSE_CHUNK_BYTES) -> np.ndarray:
    """Currents of analog input that is the same at every step (a static drive).

    Parameters
    ----------
    values : float32 ``[B, C_in*H*W]``, the input of each sample.
    indptr, columns, data, geometry : as :func:`conv_currents_events`.
    n_filters : ``F_alive``, the output blocks.

    Returns
    -------
    float32 ``[B, F_alive*Ho*Wo]``: the current of every step (the caller broadcasts it
    over the T steps, as :func:`evsim.kernels.propagate.propagate_static` does).
    """
    g = geometry
    values = np.ascontiguousarray(values, dtype=np.float32)
    if values.ndim != 2 or values.shape[1] != g.n_in:
        raise ValueError(f"static drive must be [B, {g.n_in}], got {values.shape}")
    check_block_csr(indptr, columns, data, g, n_filters)
    matrix = dense_filter_matrix(indptr, columns, data, n_filters)
    batch = values.shape[0]
    out = np.empty((batch, n_filters * g.out_cells), dtype=np.float32)
    n_rows = g.in_channels * g.taps
    chunk = chunk_slots(batch, 4 * g.out_cells * (n_rows + n_filters), max_bytes)
    for b0 in range(0, batch, chunk):
        b1 = min(batch, b0 + chunk)
        col = np.empty((n_rows, (b1 - b0) * g.out_cells), dtype=np.float32)
        _im2col_dense(values[b0:b1], g.height, g.width, g.kernel, g.stride, g.pad, g.out_height, g.out_width, col)
        _blocks_to_slots(matrix @ col, g.out_cells, b0, out)
    return out
