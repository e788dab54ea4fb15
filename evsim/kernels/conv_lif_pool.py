"""Inference through a stride-1 convolution, its LIF step and the 2 x 2 average pooling
after it, in one pass: only the pooled map is written.

Run as layers, conv1 of the paper's N-MNIST network writes its spikes (31 MB a batch of
100 samples x 20 steps), turns them into events (1.4 M) and the pooling reads those back
into windows, which then become events again for conv2: 20 of the 43 ms of a batch's
inference at 2 threads (benchmarks/RESULTS.md). Here each task takes one sample through
its T steps: the slot's currents come from its events, each adding its taps' weight rows
(:func:`events_slot_lif_pool`: sparse input, whose cost is the events' taps and not a
dense convolution's products), the direct convolution
(:func:`evsim.kernels.conv_direct.direct_slot_lif`), Winograd's F(2x2, 3x3)
(:func:`evsim.kernels.conv_winograd.winograd_slot_lif_pool`) or F(4x4, 3x3)
(:func:`evsim.kernels.conv_winograd4.winograd4_slot_lif_pool`), the spikes are pooled in
the core's cache, and the pooled map, dense, is what the next layer reads: each window's
spike count as a byte (the pooled value is a quarter of it), a quarter of a float32 map's
memory traffic. The input is events or such a map of counts (an earlier pair's output).

A training forward runs the pair in one pass too, by the direct convolution (the kernel
its forward takes on conv1): the spikes and membrane the backward reads are written as
:func:`evsim.kernels.conv_lif.conv_lif_direct` writes them, and the window counts, made
into events, are the pooling's output, so the spikes never become events nor go through
the pooling's scatter: about 18 ms a batch of bench_conv's at 1 thread, 10 at 2
(benchmarks/RESULTS.md, "conv1 and its pooling in one training pass").
"""
from __future__ import annotations

import numpy as np
from numba import get_num_threads, njit, prange

from evsim.kernels import conv_winograd4
from evsim.kernels.conv_direct import (block_scratch, direct_slot_lif, fill_rows, forward_taps, shift_events,
                                       zeros_on_lines)
from evsim.kernels.conv_geometry import (ConvGeometry, add_unit_rows, with_kernels, check_block_csr,
                                         check_events, row_weights, unit_taps, zero_padded)
from evsim.kernels.conv_winograd import (applies, padded_filters, sums_scratch, tile_layout, winograd_map_inputs,
                                         winograd_slot_inputs, winograd_slot_lif_pool, winograd_weights)
from evsim.kernels.conv_winograd4 import (group_bases, input_transform, window_runs, winograd4_slot_lif_pool,
                                          winograd4_weights)
from evsim.kernels.events import Events, dense_to_events
from evsim.kernels.propagate import lif_leak_update
from evsim.kernels.simd import LANES, load, splat, store, store_bytes, stream_fence, transpose16

PATHS = ("events", "direct", "winograd", "winograd4")
# A count of spikes in a 2 x 2 window times this is the window's average.
WINDOW_MEAN = np.float32(0.25)


@njit(cache=True, inline="always")
def _slot_map(ptr, idx, val, dense, s, image, n_channels, height, width, pad, kernel, rows, width_pad, shifted):
    """Slot ``s``'s input into the zero-padded (``kernel`` > 1: shifted) copies of its map:
    row ``s`` of ``dense``, window counts times :data:`WINDOW_MEAN`, when it has rows,
    else the slot's events."""
    if dense.shape[0] > 0:
        fill_rows(dense[s], 0, n_channels, height, width, pad, kernel, rows, width_pad, shifted, WINDOW_MEAN)
    else:
        shift_events(ptr, idx, val, s, image, n_channels, height, width, pad, kernel, rows, width_pad, shifted)


@njit(cache=True, inline="always")
def _step_cell(current, at, bias, leak, decay, v_th, hard, zero):
    """:func:`evsim.kernels.propagate.lif_leak_update` of the cell whose row starts at
    ``at`` (16 lanes), driven by its current plus ``bias``; the current is zeroed.
    Returns the spikes."""
    drive = load(current, at, LANES) + bias
    store(current, at, zero, LANES)
    return lif_leak_update(drive, leak, at, LANES, decay, v_th, hard)[1]


@njit(cache=True)
def events_slot_lif_pool(current, lanes, bias_row, leak, decay, v_th, hard, n_filters, out_width, channel_of,
                         pooled_height, pooled_width, pooled, block):
    """One slot's LIF step and 2 x 2 average pooling from its summed currents in the row
    layout (``current`` ``[Ho*Wo, lanes]``, cell-major; ``leak`` likewise, the state of
    :func:`evsim.kernels.propagate.lif_leak_update`), window by window: each window's
    spike count (0-4) per filter, 16 windows at a time transposed in registers into the
    rows of ``pooled`` (uint8 ``[C_pool, Ho // 2, Wo // 2]``, flat; filter ``f`` to
    channel ``channel_of[f]``). Each cell's current is zeroed as it is read, ready for the
    next slot (a pass of its own over the map cost about a sixth of this one on conv1). Cells
    the floor rule leaves out of every window (an odd last row or column) are neither
    stepped nor zeroed: nothing reads them."""
    pooled_cells = pooled_height * pooled_width
    zero = splat(np.float32(0.0))
    for wy in range(pooled_height):
        for wx0 in range(0, pooled_width, LANES):
            n_windows = min(LANES, pooled_width - wx0)
            for f0 in range(0, lanes, LANES):
                bias = load(bias_row, f0, LANES)
                for k in range(n_windows):
                    top = (2 * wy * out_width + 2 * (wx0 + k)) * lanes + f0
                    bottom = top + out_width * lanes
                    count = _step_cell(current, top, bias, leak, decay, v_th, hard, zero)
                    count = count + _step_cell(current, top + lanes, bias, leak, decay, v_th, hard, zero)
                    count = count + _step_cell(current, bottom, bias, leak, decay, v_th, hard, zero)
                    count = count + _step_cell(current, bottom + lanes, bias, leak, decay, v_th, hard, zero)
                    store(block, k * LANES, count, LANES)
                transpose16(block, 0, LANES, block, LANES * LANES, LANES)
                for j in range(min(LANES, n_filters - f0)):
                    store_bytes(pooled, channel_of[f0 + j] * pooled_cells + wy * pooled_width + wx0,
                                load(block, (LANES + j) * LANES, LANES), n_windows)


@njit(parallel=True, cache=True)
def _events_pool(ptr, idx, val, dense, rows, bias_row, channel_of, batch, n_filters, height, width, kernel, pad,
                 out_height, out_width, decay, v_th, hard, pooled_out, n_tasks):
    """As :func:`_direct_pool`, the currents by the event path: each input event (or
    nonzero window count of ``dense``, times :data:`WINDOW_MEAN`) adds its taps' weight
    rows (:func:`evsim.kernels.conv_geometry.add_unit_rows`), then
    :func:`events_slot_lif_pool`. The cost is the events' taps and the LIF step of the
    pooled cells, not a dense convolution's products."""
    n_channels, _, lanes = rows.shape
    n_slots = pooled_out.shape[0]
    n_in = n_channels * height * width
    weights = rows.reshape(rows.size)
    wanted = with_kernels(rows)
    units = unit_taps(n_channels, height, width, kernel, 1, pad, out_height, out_width)
    pooled_height, pooled_width = out_height // 2, out_width // 2
    from_map = dense.shape[0] > 0
    n_tasks = max(1, min(batch, n_tasks))
    for task in prange(n_tasks):  # scratch once per task (see evsim.kernels.lif._lif_backward)
        current = np.zeros(out_height * out_width * lanes, dtype=np.float32)
        leak = np.zeros(out_height * out_width * lanes, dtype=np.float32)
        block = np.zeros(2 * LANES * LANES, dtype=np.float32)
        for b in range(task * batch // n_tasks, (task + 1) * batch // n_tasks):
            leak[:] = 0.0
            for s in range(b, n_slots, batch):
                if from_map:
                    for i in range(n_in):
                        if dense[s, i]:
                            add_unit_rows(i, np.float32(dense[s, i]) * WINDOW_MEAN, units, wanted, kernel, 1,
                                          out_width, lanes, weights, current, False)
                else:
                    for e in range(ptr[s], ptr[s + 1]):
                        add_unit_rows(idx[e], val[e], units, wanted, kernel, 1, out_width, lanes, weights, current,
                                      False)
                events_slot_lif_pool(current, lanes, bias_row, leak, decay, v_th, hard, n_filters, out_width,
                                     channel_of, pooled_height, pooled_width, pooled_out[s], block)


@njit(parallel=True, cache=True)
def _direct_pool(ptr, idx, val, dense, offsets, weights, bias, channel_of, batch, n_filters, n_channels, height,
                 width, pad, kernel, rows, width_pad, out_height, out_width, decay, v_th, hard, pooled_out, spikes_out,
                 u_out, n_tasks):
    """Each task a run of samples, each through its T steps: the slot's input (events, or
    row ``s`` of ``dense``, window counts, when it has rows) into the shifted copies, then
    :func:`evsim.kernels.conv_direct.direct_slot_lif`, which also writes the slot's rows
    of ``spikes_out`` and ``u_out`` (``[T*B, F*Ho*Wo]``) where they have rows."""
    n_slots = pooled_out.shape[0]
    write_spikes, record = spikes_out.shape[0] > 0, u_out.shape[0] > 0
    no_spikes, no_membrane = np.empty(0, dtype=np.uint8), np.empty(0, dtype=np.float32)
    n_tasks = max(1, min(batch, n_tasks))
    for task in prange(n_tasks):  # scratch once per task (see evsim.kernels.lif._lif_backward)
        image = np.zeros(n_channels * height * width, dtype=np.float32)
        shifted = zeros_on_lines(kernel * n_channels * rows * width_pad)
        leak = np.zeros(n_filters * out_height * out_width, dtype=np.float32)
        block = block_scratch()
        for b in range(task * batch // n_tasks, (task + 1) * batch // n_tasks):
            leak[:] = 0.0
            for s in range(b, n_slots, batch):
                _slot_map(ptr, idx, val, dense, s, image, n_channels, height, width, pad, kernel, rows, width_pad,
                          shifted)
                direct_slot_lif(shifted, width_pad, offsets, weights, n_filters, out_height, out_width, bias, leak,
                                decay, v_th, hard, channel_of, pooled_out[s],
                                spikes_out[s] if write_spikes else no_spikes, u_out[s] if record else no_membrane,
                                block)
        stream_fence()


@njit(parallel=True, cache=True)
def _winograd_pool(ptr, idx, val, dense, used, weights, bias, channel_of, batch, n_filters, n_channels, height, width,
                   pad, tile_cols, n_vec, rows, width_pad, out_height, out_width, decay, v_th, hard, pooled_out,
                   n_tasks):
    """As :func:`_direct_pool`, the currents by Winograd's F(2x2, 3x3)
    (:mod:`evsim.kernels.conv_winograd`)."""
    n_slots = pooled_out.shape[0]
    from_map = dense.shape[0] > 0
    n_used = used.shape[0]
    n_tasks = max(1, min(batch, n_tasks))
    for task in prange(n_tasks):  # scratch once per task (see evsim.kernels.lif._lif_backward)
        image = np.zeros(n_channels * height * width, dtype=np.float32)
        padded = zeros_on_lines(n_channels * rows * width_pad)
        transformed = zeros_on_lines(16 * n_used * n_vec * LANES)
        leak = np.zeros(n_filters * n_vec * 4 * LANES, dtype=np.float32)
        sums = sums_scratch()
        for b in range(task * batch // n_tasks, (task + 1) * batch // n_tasks):
            leak[:] = 0.0
            for s in range(b, n_slots, batch):
                if from_map:
                    winograd_map_inputs(dense[s], WINDOW_MEAN, n_channels, height, width, pad, rows, width_pad,
                                        padded, used, tile_cols, n_vec, transformed)
                else:
                    winograd_slot_inputs(ptr, idx, val, s, image, n_channels, height, width, pad, rows, width_pad,
                                         padded, used, tile_cols, n_vec, transformed)
                winograd_slot_lif_pool(transformed, weights, n_used, n_vec, tile_cols, n_filters, out_height,
                                       out_width, bias, leak, decay, v_th, hard, channel_of, pooled_out[s], sums)


@njit(parallel=True, cache=True)
def _winograd4_pool(ptr, idx, val, dense, used, weights, bias, channel_of, group_base, runs, pooled_cells,
                    batch, n_filters, n_channels, height, width, pad, n_vec, rows, width_pad, decay, v_th, hard,
                    pooled_out, n_tasks):
    """As :func:`_direct_pool`, the currents by Winograd's F(4x4, 3x3)
    (:mod:`evsim.kernels.conv_winograd4`)."""
    n_slots = pooled_out.shape[0]
    n_used = used.shape[0]
    n_tasks = max(1, min(batch, n_tasks))
    for task in prange(n_tasks):  # scratch once per task (see evsim.kernels.lif._lif_backward)
        image = np.zeros(n_channels * height * width, dtype=np.float32)
        padded = zeros_on_lines(n_channels * rows * width_pad + LANES)  # the last row loads' overrun
        transformed = zeros_on_lines(36 * n_used * n_vec * LANES)
        leak = np.zeros(n_filters * n_vec * 16 * LANES, dtype=np.float32)
        sums = conv_winograd4.sums_scratch()
        half = zeros_on_lines(36 * LANES)
        for b in range(task * batch // n_tasks, (task + 1) * batch // n_tasks):
            leak[:] = 0.0
            for s in range(b, n_slots, batch):
                _slot_map(ptr, idx, val, dense, s, image, n_channels, height, width, pad, 1, rows, width_pad, padded)
                input_transform(padded, rows, width_pad, used, group_base, n_vec, half, transformed)
                winograd4_slot_lif_pool(transformed, weights, n_used, n_vec, n_filters, bias, leak, decay, v_th,
                                        hard, channel_of, runs, pooled_cells, pooled_out[s], sums, half)


def conv_lif_pool(drive: Events | np.ndarray, indptr: np.ndarray, columns: np.ndarray, data: np.ndarray,
                  geometry: ConvGeometry, bias: np.ndarray, decay: float, v_th: float, hard: bool, path: str,
                  channel_of: np.ndarray, pooled_out: np.ndarray, spikes_out: np.ndarray | None = None,
                  u_out: np.ndarray | None = None) -> None:
    """Spikes of a stride-1 convolution's alive filters, average-pooled 2 x 2; by the
    direct convolution, also the spikes and membrane themselves.

    Parameters
    ----------
    drive : the input, :class:`Events` or a uint8 ``[T, B, C*H*W]`` map of 2 x 2 window
        counts (an earlier pair's ``pooled_out``: the values are a quarter of them).
    indptr, columns, data, geometry : the block CSR and shape (as
        :func:`evsim.kernels.conv_lif.conv_lif_direct`).
    bias : float32 ``[F_alive]``.
    decay, v_th, hard : the LIF constants.
    path : ``"events"``, ``"direct"``, ``"winograd"`` or ``"winograd4"`` (3 x 3 kernels),
        the currents' kernel; the spikes are those of
        :func:`evsim.kernels.conv_lif.conv_lif_events`,
        :func:`~evsim.kernels.conv_lif.conv_lif_direct` or
        :func:`~evsim.kernels.conv_lif.conv_lif_winograd`, or (``"winograd4"``, Winograd's
        F(4x4, 3x3): :mod:`evsim.kernels.conv_winograd4`) those of currents that differ
        from theirs by float32 rounding.
    channel_of : integers ``[F_alive]``, the pooled channel of each alive filter (distinct,
        below ``C_pool``).
    pooled_out : uint8 ``[T, B, C_pool*(Ho//2)*(Wo//2)]``, C-contiguous, the spikes in each
        window (0-4; times :data:`WINDOW_MEAN` the pooled value): the alive filters'
        channels overwritten, the others left as they are.
    spikes_out, u_out : uint8 and float32 ``[T, B, F_alive*Ho*Wo]``, C-contiguous, or None:
        overwritten with the spikes and membrane of
        :func:`~evsim.kernels.conv_lif.conv_lif_direct` (the same bits), for a training
        forward's trace. Only ``path`` ``"direct"`` writes them.
    """
    g = geometry
    if (spikes_out is not None or u_out is not None) and path != "direct":
        raise ValueError(f"conv_lif_pool writes the spikes and membrane on the direct path only, not {path!r}")
    if (g.stride != 1 or path not in PATHS or (path == "winograd" and not applies(g))
            or (path == "winograd4" and not conv_winograd4.applies(g))):
        raise ValueError(f"conv_lif_pool runs stride-1 convolutions by {', '.join(PATHS)} (Winograd: 3 x 3 "
                         f"kernels); got stride {g.stride}, kernel {g.kernel}, path {path!r}")
    n_filters = channel_of.shape[0]
    n_steps, batch, n_pooled = pooled_out.shape
    pooled_cells = (g.out_height // 2) * (g.out_width // 2)
    if pooled_out.dtype != np.uint8 or not pooled_out.flags.c_contiguous or n_pooled % max(pooled_cells, 1):
        raise ValueError(f"pooled_out must be C-contiguous uint8 [T, B, C*{pooled_cells}], got "
                         f"{pooled_out.dtype} {pooled_out.shape}")
    channel_of = np.ascontiguousarray(channel_of, dtype=np.int64)
    if channel_of.size and (channel_of.min() < 0 or channel_of.max() >= n_pooled // max(pooled_cells, 1)
                            or np.unique(channel_of).size != channel_of.size):
        raise ValueError("channel_of must name distinct channels of pooled_out")
    check_block_csr(indptr, columns, data, g, n_filters)
    bias = np.asarray(bias, dtype=np.float32)
    if bias.shape != (n_filters,):
        raise ValueError(f"bias must be [{n_filters}] (one per alive filter), got {bias.shape}")
    if isinstance(drive, Events):
        check_events(drive.ptr, drive.idx, drive.val, n_steps * batch)
        ptr, idx, val = drive.ptr, drive.idx, drive.val
        dense = np.zeros((0, 0), dtype=np.uint8)
    else:
        dense = drive.reshape(n_steps * batch, -1)
        if dense.dtype != np.uint8 or dense.shape != (n_steps * batch, g.n_in) or not dense.flags.c_contiguous:
            raise ValueError(f"a dense drive must be C-contiguous uint8 window counts [{n_steps}, {batch}, {g.n_in}], "
                             f"got {dense.dtype} {drive.shape}")
        ptr, idx, val = np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32)
    flat_out = pooled_out.reshape(n_steps * batch, n_pooled)
    constants = (np.float32(decay), np.float32(v_th), bool(hard))
    if path == "events":
        rows = row_weights(indptr, columns, data, n_filters)
        bias_row = zero_padded(bias, rows.shape[2])
        _events_pool(ptr, idx, val, dense, rows, bias_row, channel_of, batch, n_filters, g.height, g.width, g.kernel,
                     g.pad, g.out_height, g.out_width,
                     *constants, flat_out, get_num_threads())
    elif path == "direct":
        shape, offsets, weights = forward_taps(indptr, columns, data, g, n_filters)
        padded_bias = zero_padded(bias, weights.shape[1])
        n_units = n_filters * g.out_cells
        _direct_pool(ptr, idx, val, dense, offsets, weights, padded_bias, channel_of, batch, n_filters,
                     g.in_channels, g.height, g.width, g.pad, g.kernel, shape[2], shape[3], g.out_height,
                     g.out_width, *constants, flat_out,
                     _trace_rows(spikes_out, np.uint8, (n_steps, batch, n_units), "spikes_out"),
                     _trace_rows(u_out, np.float32, (n_steps, batch, n_units), "u_out"), get_num_threads())
    elif path == "winograd4":
        used, weights = winograd4_weights(indptr, columns, data, g, n_filters)
        _, n_vec, rows, width_pad = conv_winograd4.tile_layout(g.out_height, g.out_width)
        _winograd4_pool(ptr, idx, val, dense, used, weights, bias, channel_of,
                        group_bases(g.out_height, g.out_width), window_runs(g.out_height, g.out_width), pooled_cells,
                        batch, n_filters, g.in_channels, g.height, g.width, g.pad, n_vec, rows, width_pad, *constants,
                        flat_out, get_num_threads())
    else:
        used, weights = winograd_weights(indptr, columns, data, g, n_filters)
        tile_cols, n_vec, rows, width_pad = tile_layout(g.out_height, g.out_width)
        padded_bias = zero_padded(bias, padded_filters(weights))
        _winograd_pool(ptr, idx, val, dense, used, weights, padded_bias, channel_of, batch, n_filters, g.in_channels,
                       g.height, g.width, g.pad, tile_cols, n_vec, rows, width_pad, g.out_height, g.out_width,
                       *constants, flat_out, get_num_threads())


def _trace_rows(out: np.ndarray | None, dtype, shape: tuple[int, int, int], name: str) -> np.ndarray:
    """``out`` (``shape``, ``[T, B, N]``) checked, as ``[T*B, N]`` rows; ``[0, 0]`` for None."""
    if out is None:
        return np.zeros((0, 0), dtype=dtype)
    if out.dtype != dtype or out.shape != shape or not out.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous {np.dtype(dtype)} {list(shape)}, got {out.dtype} {out.shape}")
    return out.reshape(shape[0] * shape[1], shape[2])


def window_events(counts: np.ndarray) -> Events:
    """The events the pooling hands on from the window counts ``[T, B, N]`` (uint8) of
    :func:`conv_lif_pool`: a window's value is a quarter of its count."""
    events = dense_to_events(counts)
    events.val[:] *= WINDOW_MEAN
    return events
