"""A convolution's forward on events in one pass: currents and LIF dynamics together.

Run as two passes, the currents (:mod:`evsim.kernels.conv_forward`) are written out as a
``[T, B, N]`` array and read back by the LIF scan (:func:`evsim.kernels.propagate._lif_scan`):
123 MB each way per batch for conv1 of the paper's N-MNIST network. Here each task takes
one sample through its T steps, with the neuron state in the core's cache, and writes
only the spikes and, when training records it, the membrane. Two variants:

``conv_lif_direct``  the currents of the register-blocked direct convolution
                     (:mod:`evsim.kernels.conv_direct`), filter-major like the trace;
                     membrane recorded or not.
``conv_lif_events``  the currents of the event path, in its cell-major scratch, the
                     spikes transposed in registers; inference only (recording the
                     membrane through the transposes was slower than two passes).

Both give the spikes (and membrane) of the two passes exactly: the same float32
operations in the same order.
"""
from __future__ import annotations

import numpy as np
from numba import get_num_threads, njit, prange

from evsim.kernels.conv_direct import block_scratch, direct_slot_lif, forward_taps, shift_events, zeros_on_lines
from evsim.kernels.conv_geometry import (ConvGeometry, with_kernels, check_block_csr, check_events, check_out,
                                         row_weights, unit_taps, add_event_rows, zero_padded)
from evsim.kernels.conv_winograd import applies as winograd_applies
from evsim.kernels.conv_winograd import (padded_filters, sums_scratch, tile_layout, winograd_slot_inputs,
                                         winograd_slot_lif, winograd_weights)
from evsim.kernels.simd import LANES, greater, load, splat, store, store_bytes, stream_fence, transpose16


@njit(parallel=True, cache=True)
def _conv_lif_rows(ptr, idx, val, rows, bias_row, batch, channels_hw, width, kernel, stride, pad, out_height,
                   out_width, decay, v_th, hard, spikes_out, n_tasks):
    """Currents and LIF dynamics of a convolution in one pass, no membrane recorded
    (inference).

    A task takes a run of samples, each through its T steps with the state in cell-major scratch
    ``[Ho*Wo (padded to 16), F_pad]``, which stays in the core's cache: the slot's events
    summed as in :func:`_conv_currents_rows`, then the LIF update of
    :func:`evsim.kernels.propagate.lif_leak_vector` (the same float32 operations in the same
    order, so the spikes are those of the two passes), 16 cells x 16 filters at a time,
    that block's spikes transposed in registers into the filter-major ``spikes_out``
    (uint8 ``[T*B, F*Ho*Wo]``). ``bias_row`` float32 ``[F_pad]``: each alive filter's
    bias, zeros in the padding lanes.
    """
    n_channels, n_taps, lanes = rows.shape
    n_slots, n = spikes_out.shape
    cells = out_height * out_width
    n_filters = n // cells
    padded = cells + (-cells) % LANES
    weights = rows.reshape(rows.size)
    has_kernels = with_kernels(rows)
    units = unit_taps(n_channels, channels_hw // width, width, kernel, stride, pad, out_height, out_width)
    one = splat(np.float32(1.0))
    n_tasks = max(1, min(batch, n_tasks))
    for task in prange(n_tasks):  # scratch once per task (see evsim.kernels.lif._lif_backward)
        current = np.empty(padded * lanes, dtype=np.float32)
        u = np.zeros(padded * lanes, dtype=np.float32)
        o = np.zeros(padded * lanes, dtype=np.float32)
        block = np.empty(LANES * LANES, dtype=np.float32)
        for b in range(task * batch // n_tasks, (task + 1) * batch // n_tasks):
            u[:] = 0.0
            o[:] = 0.0
            for s in range(b, n_slots, batch):
                current[:] = 0.0
                add_event_rows(ptr, idx, val, s, units, has_kernels, kernel, stride, out_width, lanes, weights, current,
                               False)
                for p0 in range(0, cells, LANES):
                    n_cells = min(LANES, cells - p0)
                    for f0 in range(0, n_filters, LANES):
                        bias = load(bias_row, f0, LANES)
                        for i in range(LANES):
                            a = (p0 + i) * lanes + f0
                            ui, oi = load(u, a, LANES), load(o, a, LANES)
                            drive = load(current, a, LANES) + bias
                            if hard:
                                uj = decay * ui * (one - oi) + drive
                            else:
                                uj = decay * ui - v_th * oi + drive
                            store(u, a, uj, LANES)
                            store(o, a, greater(uj, v_th), LANES)
                        transpose16(o, p0 * lanes + f0, lanes, block, 0, LANES)
                        offset = s * n + f0 * cells + p0
                        for j in range(min(LANES, n_filters - f0)):
                            store_bytes(spikes_out, offset + j * cells, load(block, j * LANES, LANES), n_cells)


def conv_lif_events(ptr: np.ndarray, idx: np.ndarray, val: np.ndarray, indptr: np.ndarray, columns: np.ndarray,
                    data: np.ndarray, geometry: ConvGeometry, bias: np.ndarray, decay: float, v_th: float,
                    hard: bool, spikes_out: np.ndarray) -> None:
    """A convolution's inference forward on events in one pass: the spikes of
    :func:`conv_currents_events` followed by :func:`evsim.kernels.propagate._lif_scan`,
    identical to them, without writing the currents and the membrane out and reading
    them back (conv1 of the paper's N-MNIST network: 123 MB each per batch).

    Parameters
    ----------
    ptr, idx, val, indptr, columns, data, geometry : as :func:`conv_currents_events`.
    bias : float32 ``[F_alive]``, each alive filter's bias.
    decay, v_th, hard : the LIF constants (:func:`evsim.kernels.propagate.lif_leak_vector`).
    spikes_out : uint8 ``[T, B, F_alive*Ho*Wo]``, C-contiguous, overwritten with the spikes.
    """
    g = geometry
    n_steps, batch, n_units = spikes_out.shape
    n_filters, bias = _checked(ptr, idx, val, indptr, columns, data, g, bias, spikes_out)
    rows = row_weights(indptr, columns, data, n_filters)
    bias_row = zero_padded(bias, rows.shape[2])
    _conv_lif_rows(ptr, idx, val, rows, bias_row, batch, g.height * g.width, g.width, g.kernel, g.stride, g.pad,
                   g.out_height, g.out_width, np.float32(decay), np.float32(v_th), bool(hard),
                   spikes_out.reshape(n_steps * batch, n_units), get_num_threads())


def _checked(ptr, idx, val, indptr, columns, data, geometry: ConvGeometry, bias, spikes_out):
    """``(F_alive, bias as float32)`` once the arguments fit: the kernels index unchecked."""
    n_steps, batch, n_units = spikes_out.shape
    n_filters = n_units // geometry.out_cells
    if spikes_out.dtype != np.uint8 or not spikes_out.flags.c_contiguous or n_units != n_filters * geometry.out_cells:
        raise ValueError(f"spikes_out must be C-contiguous uint8 [T, B, F*{geometry.out_cells}], got "
                         f"{spikes_out.dtype} {spikes_out.shape}")
    check_events(ptr, idx, val, n_steps * batch)
    check_block_csr(indptr, columns, data, geometry, n_filters)
    bias = np.asarray(bias, dtype=np.float32)
    if bias.shape != (n_filters,):
        raise ValueError(f"bias must be [{n_filters}] (one per alive filter), got {bias.shape}")
    return n_filters, bias


def _membrane_rows(u_out: np.ndarray | None, n_slots: int, n_units: int) -> np.ndarray:
    """``u_out`` as checked ``[n_slots, n_units]`` rows, or ``[0, 0]`` to record none."""
    if u_out is None:
        return np.zeros((0, 0), dtype=np.float32)
    flat_u = u_out.reshape(n_slots, -1)
    check_out(flat_u, n_slots, n_units, "u_out")
    return flat_u


@njit(parallel=True, cache=True)
def _conv_lif_direct(ptr, idx, val, offsets, weights, bias, batch, n_channels, height, width, pad, kernel, rows,
                     width_pad, out_height, out_width, decay, v_th, hard, u_out, spikes_out, n_tasks):
    """Stride 1, each task a run of samples, each sample through its T steps: per step,
    the slot's events into the task's shifted copies, then
    :func:`evsim.kernels.conv_direct.direct_slot_lif`: the currents in registers, the LIF
    step on them, the spikes and (when ``u_out`` is not ``[0, 0]``) the membrane written.
    The state is :func:`evsim.kernels.propagate.lif_leak_vector`'s."""
    n_slots, n = spikes_out.shape
    n_filters = n // (out_height * out_width)
    record = u_out.shape[0] > 0
    no_membrane = np.empty(0, dtype=np.float32)
    no_channels, no_pooling = np.empty(0, dtype=np.int64), np.empty(0, dtype=np.uint8)
    n_tasks = max(1, min(batch, n_tasks))
    for task in prange(n_tasks):  # scratch once per task (see evsim.kernels.lif._lif_backward)
        image = np.zeros(n_channels * height * width, dtype=np.float32)
        shifted = zeros_on_lines(kernel * n_channels * rows * width_pad)
        leak = np.zeros(n, dtype=np.float32)
        block = block_scratch()
        for b in range(task * batch // n_tasks, (task + 1) * batch // n_tasks):
            leak[:] = 0.0
            for s in range(b, n_slots, batch):
                shift_events(ptr, idx, val, s, image, n_channels, height, width, pad, kernel, rows, width_pad,
                             shifted)
                direct_slot_lif(shifted, width_pad, offsets, weights, n_filters, out_height, out_width, bias, leak,
                                decay, v_th, hard, no_channels, no_pooling, spikes_out[s],
                                u_out[s] if record else no_membrane, block)
        stream_fence()


def conv_lif_direct(ptr: np.ndarray, idx: np.ndarray, val: np.ndarray, indptr: np.ndarray, columns: np.ndarray,
                    data: np.ndarray, geometry: ConvGeometry, bias: np.ndarray, decay: float, v_th: float,
                    hard: bool, u_out: np.ndarray | None, spikes_out: np.ndarray) -> None:
    """A stride-1 convolution's forward in one pass: the currents of
    :func:`evsim.kernels.conv_forward.conv_currents_direct` and the LIF scan, identical
    to the two passes.

    Parameters
    ----------
    ptr, idx, val, indptr, columns, data, geometry, bias, decay, v_th, hard : as
        :func:`conv_lif_events`.
    u_out : float32 ``[T, B, F_alive*Ho*Wo]``, C-contiguous, overwritten with the
        membrane; None to record none (inference).
    spikes_out : uint8, the same shape, overwritten with the spikes.
    """
    g = geometry
    if g.stride != 1:
        raise ValueError("the direct convolution is for stride 1; use the event or dense currents")
    n_steps, batch, n_units = spikes_out.shape
    n_filters, bias = _checked(ptr, idx, val, indptr, columns, data, g, bias, spikes_out)
    flat_u = _membrane_rows(u_out, n_steps * batch, n_units)
    shape, offsets, weights = forward_taps(indptr, columns, data, g, n_filters)
    padded_bias = zero_padded(bias, weights.shape[1])
    _conv_lif_direct(ptr, idx, val, offsets, weights, padded_bias, batch, g.in_channels, g.height,
                     g.width, g.pad, g.kernel, shape[2], shape[3], g.out_height, g.out_width, np.float32(decay),
                     np.float32(v_th), bool(hard), flat_u, spikes_out.reshape(n_steps * batch, n_units),
                     get_num_threads())


@njit(parallel=True, cache=True)
def _conv_lif_winograd(ptr, idx, val, used, weights, bias, batch, n_channels, height, width, pad, tile_cols, n_vec,
                       rows, width_pad, out_height, out_width, decay, v_th, hard, u_out, spikes_out, n_tasks):
    """As :func:`_conv_lif_direct`, the currents by
    :func:`evsim.kernels.conv_winograd.winograd_slot_lif`."""
    n_slots, n = spikes_out.shape
    n_filters = n // (out_height * out_width)
    n_used = used.shape[0]
    record = u_out.shape[0] > 0
    no_membrane = np.empty(0, dtype=np.float32)
    n_tasks = max(1, min(batch, n_tasks))
    for task in prange(n_tasks):  # scratch once per task (see evsim.kernels.lif._lif_backward)
        image = np.zeros(n_channels * height * width, dtype=np.float32)
        padded = zeros_on_lines(n_channels * rows * width_pad)
        transformed = zeros_on_lines(16 * n_used * n_vec * LANES)
        leak = np.zeros(n, dtype=np.float32)
        sums = sums_scratch()
        for b in range(task * batch // n_tasks, (task + 1) * batch // n_tasks):
            leak[:] = 0.0
            for s in range(b, n_slots, batch):
                winograd_slot_inputs(ptr, idx, val, s, image, n_channels, height, width, pad, rows, width_pad,
                                     padded, used, tile_cols, n_vec, transformed)
                winograd_slot_lif(transformed, weights, n_used, n_vec, tile_cols, n_filters, out_height, out_width,
                                  bias, leak, decay, v_th, hard, spikes_out[s], u_out[s] if record else no_membrane,
                                  sums)
        stream_fence()


def conv_lif_winograd(ptr: np.ndarray, idx: np.ndarray, val: np.ndarray, indptr: np.ndarray, columns: np.ndarray,
                      data: np.ndarray, geometry: ConvGeometry, bias: np.ndarray, decay: float, v_th: float,
                      hard: bool, u_out: np.ndarray | None, spikes_out: np.ndarray) -> None:
    """A stride-1 3 x 3 convolution's forward in one pass by Winograd's F(2x2, 3x3)
    (:mod:`evsim.kernels.conv_winograd`): arguments as :func:`conv_lif_direct`. The
    currents equal the direct convolution's up to float32 rounding (exactly, with dyadic
    weights and inputs)."""
    g = geometry
    if not winograd_applies(g):
        raise ValueError("the Winograd convolution is for 3 x 3 kernels at stride 1; use the direct or event path")
    n_steps, batch, n_units = spikes_out.shape
    n_filters, bias = _checked(ptr, idx, val, indptr, columns, data, g, bias, spikes_out)
    flat_u = _membrane_rows(u_out, n_steps * batch, n_units)
    used, weights = winograd_weights(indptr, columns, data, g, n_filters)
    tile_cols, n_vec, rows, width_pad = tile_layout(g.out_height, g.out_width)
    padded_bias = zero_padded(bias, padded_filters(weights))
    _conv_lif_winograd(ptr, idx, val, used, weights, padded_bias, batch, g.in_channels, g.height, g.width, g.pad,
                       tile_cols, n_vec, rows, width_pad, g.out_height, g.out_width, np.float32(decay),
                       np.float32(v_th), bool(hard), flat_u, spikes_out.reshape(n_steps * batch, n_units),
                       get_num_threads())
