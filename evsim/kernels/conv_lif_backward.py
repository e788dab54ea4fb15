"""BPTT through a convolution's LIF dynamics and its weight gradient in one pass, for a
convolution that computes no would-be gradients: one that sends no error down (the
network's first) or, 3 x 3 at stride 1, sends it down in the same pass.

Apart, the LIF backward (:func:`evsim.kernels.lif._lif_backward`) writes dL/du, 123 MB a
batch for conv1 of the paper's N-MNIST network, and the weight gradient reads it back.
Here each task takes its samples back through time, and each slot's dL/du row, still in
the core's cache, goes straight into the task's weight-gradient sums; dL/du is never
written out. The sums are those of the weight gradient's row layout
(:func:`evsim.kernels.conv_weight_grad.conv_weight_grad_events`, path ``"events"``) or of
its direct products (:func:`evsim.kernels.conv_weight_grad.conv_weight_grad_direct`,
``"direct"``, stride 1). Per slot they are those of the two passes; the tasks split the
samples rather than the slots, so the totals add in another order: equal up to float32
rounding (exactly with dyadic values), and the same for the same thread count.

The error sent down (conv2 of the paper's networks) comes from the same rows: each slot's
dL/du goes on from the cache into its input gradient, scattered from its nonzero
entries where they are few or by Winograd's transposed convolution, so dL/du (82 MB a
batch for conv2) is neither written nor read twice more: conv2's backward in a training
step of bench_conv's takes 3-4 ms less at 2 threads and 8-10 at 1 (benchmarks/RESULTS.md,
"conv2 sends its error down from the LIF backward's pass").
"""
from __future__ import annotations

import numpy as np
from numba import get_num_threads, njit, prange

from evsim.kernels.conv_direct import fill_rows, zeros_on_lines
from evsim.kernels.conv_geometry import (ConvGeometry, _to_cell_major, check_block_csr, check_events, check_out,
                                         filter_weights, padded_lanes, unit_taps, add_event_rows, with_kernels)
from evsim.kernels.conv_input_grad import scatter_slot
from evsim.kernels.conv_weight_grad import DirectPlan, direct_slot_products, lane_totals, rows_to_kernels
from evsim.kernels.conv_winograd import applies as winograd_applies
from evsim.kernels.conv_winograd import (input_transform, sums_scratch, tile_layout, transposed_weights,
                                         winograd_slot_lif)
from evsim.kernels.events import nonzero_count
from evsim.kernels.lif import _no_error_arrives, error_row, lif_backward_step
from evsim.kernels.simd import LANES, all_zero


@njit(cache=True, inline="always")
def _step_back(grad_spikes, grad_above, weight_above, pooled, pool_channels, pool_shape, u, o, kind, width, decay,
               v_th, hard, detach_reset, t, b, rows, now, bias_sum, formed, quiet):
    """Sample ``b``'s dL/du at step ``t`` into ``rows[now]``, from ``rows[1 - now]`` (step
    t + 1) and the error from above (:func:`evsim.kernels.lif.lif_backward_step`); False,
    with nothing done, while ``quiet`` (no error carried back from later steps yet: dL/du
    is zero) and no error arrives at this step either."""
    batch = u.shape[1]
    if quiet and _no_error_arrives(grad_spikes, grad_above, weight_above, pooled, t, b, batch):
        return False
    from_above = error_row(grad_spikes, grad_above, weight_above, pooled, pool_channels, pool_shape, t, b, batch,
                           formed)
    lif_backward_step(from_above, u[t, b], o[t, b], rows[1 - now], rows[now], bias_sum, u.shape[2], kind, width,
                      decay, v_th, hard, detach_reset)
    return True


@njit(parallel=True, cache=True)
def _lif_backward_direct_grad(grad_spikes, grad_above, weight_above, pooled, pool_channels, pool_shape, u, o, kind,
                              width, decay, v_th, hard, detach_reset, ptr, idx, val, offsets, n_channels, height,
                              in_width, pad, kernel, rows_pad, width_pad, out_height, out_width, grad_bias_per_sample,
                              partial, n_tasks):
    """As :func:`_lif_backward_weight_grad`, each slot's dL/du into the direct products'
    lane sums (:func:`evsim.kernels.conv_weight_grad.direct_slot_products`); ``offsets``,
    ``rows_pad``, ``width_pad`` and ``partial[task]`` ``[taps padded, G_pad]`` as
    :class:`evsim.kernels.conv_weight_grad.DirectPlan` gives them."""
    n_steps, batch, n = u.shape
    n_blocks = n // (out_height * out_width)
    n_tasks = max(1, min(batch, n_tasks))
    for task in prange(n_tasks):  # scratch once per task (see evsim.kernels.lif._lif_backward)
        rows = np.zeros((2, n), dtype=np.float32)  # dL/du at t and at t + 1, taking turns
        formed = np.empty(n if grad_spikes is None else 0, dtype=np.float32)
        image = np.zeros(n_channels * height * in_width, dtype=np.float32)
        shifted = zeros_on_lines(kernel * n_channels * rows_pad * width_pad)
        sums = zeros_on_lines(offsets.shape[0] * partial.shape[2] * LANES)
        grad = zeros_on_lines(n_blocks * out_height * width_pad)
        for b in range(task * batch // n_tasks, (task + 1) * batch // n_tasks):
            bias_sum = grad_bias_per_sample[b]
            bias_sum[:] = 0.0
            rows[1, :] = 0.0
            now = 0
            quiet = True
            for t in range(n_steps - 1, -1, -1):
                if not _step_back(grad_spikes, grad_above, weight_above, pooled, pool_channels, pool_shape, u, o,
                                  kind, width, decay, v_th, hard, detach_reset, t, b, rows, now, bias_sum, formed,
                                  quiet):
                    continue
                quiet = False
                s = t * batch + b
                if ptr[s] < ptr[s + 1] and not all_zero(rows[now], 0, n):
                    direct_slot_products(ptr, idx, val, s, rows[now], image, n_channels, height, in_width, pad,
                                         kernel, rows_pad, width_pad, offsets, n_blocks, out_height, out_width,
                                         shifted, grad, sums)
                now = 1 - now
        lane_totals(sums, partial[task])


@njit(parallel=True, cache=True)
def _lif_backward_weight_grad(grad_spikes, grad_above, weight_above, pooled, pool_channels, pool_shape, u, o, kind,
                              width, decay, v_th, hard, detach_reset, ptr, idx, val, wanted, in_height, in_width,
                              kernel, stride, pad, out_height, out_width, grad_bias_per_sample, partial, by_filter,
                              has_kernels, scatter_below, used, transformed_weights, tile_cols, n_vec, map_rows,
                              map_width, grad_in, n_tasks):
    """The sources of dL/do, ``u``, ``o``, the LIF constants and ``grad_bias_per_sample``
    as :func:`evsim.kernels.lif._lif_backward`; ``ptr, idx, val`` the layer's input events
    and ``wanted`` its channels with a kernel asked for, as
    :func:`evsim.kernels.conv_weight_grad._conv_weight_grad_rows`; ``partial[task]`` its
    row-layout sums ``[C*K*K*G_pad]``. Where ``grad_in`` ``[T*B, C*H*W]`` has rows (a
    3 x 3 convolution at stride 1), each slot's error sent down into it too
    (:func:`_send_down`, whose arguments the rest are)."""
    n_steps, batch, n = u.shape
    cells = out_height * out_width
    n_blocks = n // cells
    lanes = partial.shape[1] // (wanted.shape[0] * kernel * kernel)
    units = unit_taps(wanted.shape[0], in_height, in_width, kernel, stride, pad, out_height, out_width)
    sends_down = grad_in.shape[0] > 0
    hw = in_height * in_width if sends_down else 0
    n_down = used.shape[0] if sends_down else 0
    n_tasks = max(1, min(batch, n_tasks))
    for task in prange(n_tasks):  # scratch once per task (see evsim.kernels.lif._lif_backward)
        rows = np.zeros((2, n), dtype=np.float32)  # dL/du at t and at t + 1, taking turns
        formed = np.empty(n if grad_spikes is None else 0, dtype=np.float32)
        scratch = np.zeros(cells * lanes, dtype=np.float32)  # padding lanes stay 0
        acc = partial[task]
        acc[:] = 0.0
        scattered = np.empty(hw * by_filter.shape[2], dtype=np.float32)
        padded = zeros_on_lines(n_blocks * map_rows * map_width if sends_down else 0)
        transformed = zeros_on_lines(16 * n_down * n_vec * LANES)
        sums = sums_scratch()
        no_bias = np.zeros(transformed_weights.shape[0] * transformed_weights.shape[3], dtype=np.float32)
        for b in range(task * batch // n_tasks, (task + 1) * batch // n_tasks):
            bias_sum = grad_bias_per_sample[b]
            bias_sum[:] = 0.0
            rows[1, :] = 0.0  # the carry into the last step with an error
            now = 0
            quiet = True  # no error carried back from later steps yet: dL/du is zero
            for t in range(n_steps - 1, -1, -1):
                s = t * batch + b
                if not _step_back(grad_spikes, grad_above, weight_above, pooled, pool_channels, pool_shape, u, o,
                                  kind, width, decay, v_th, hard, detach_reset, t, b, rows, now, bias_sum, formed,
                                  quiet):
                    if sends_down:
                        grad_in[s, :] = 0.0
                    continue
                quiet = False
                if ptr[s] < ptr[s + 1] and not all_zero(rows[now], 0, n):
                    _to_cell_major(rows, now, n_blocks, cells, lanes, scratch)
                    add_event_rows(ptr, idx, val, s, units, wanted, kernel, stride, out_width, lanes, scratch, acc, True)
                if sends_down:
                    _send_down(rows[now], by_filter, has_kernels, scatter_below, used, transformed_weights, tile_cols,
                               n_vec, map_rows, map_width, in_height, in_width, pad, out_height, out_width, scattered,
                               padded, transformed, sums, no_bias, grad_in, s)
                now = 1 - now


@njit(cache=True, inline="always")
def _send_down(row, by_filter, has_kernels, scatter_below, used, transformed_weights, tile_cols, n_vec, map_rows,
               map_width, height, width, pad, out_height, out_width, scattered, padded, transformed, sums, no_bias,
               grad_in, s):
    """``grad_in[s]``, the error a 3 x 3, stride-1 convolution sends down from one slot's
    dL/du ``row``: zero for a zero row; scattered from its nonzero entries
    (:func:`evsim.kernels.conv_input_grad.scatter_slot`; ``by_filter``, ``has_kernels``)
    where their share is below ``scatter_below``; else Winograd's transposed convolution
    (a slot of :func:`evsim.kernels.conv_input_grad._conv_input_grad_winograd`; ``used``,
    ``transformed_weights`` and the tile layout ``tile_cols, n_vec, map_rows,
    map_width``). The rule of :func:`evsim.kernels.conv_paths.input_grad_path`, applied
    to each slot's own share of nonzeros, which the pass has at hand."""
    n = row.shape[0]
    nonzero = nonzero_count(row)
    if nonzero == 0:
        grad_in[s, :] = 0.0
    elif nonzero < scatter_below * n:
        scatter_slot(row, by_filter, has_kernels, height, width, 3, 1, pad, out_height, out_width, scattered, grad_in,
                     s)
    else:
        fill_rows(row, 0, n // (out_height * out_width), out_height, out_width, 2 - pad, 1, map_rows, map_width,
                  padded)
        input_transform(padded, map_rows, map_width, used, tile_cols, n_vec, transformed)
        winograd_slot_lif(transformed, transformed_weights, used.shape[0], n_vec, tile_cols,
                          grad_in.shape[1] // (height * width), height, width, no_bias, NO_STATE, np.float32(0.0),
                          np.float32(0.0), False, NO_SPIKES, grad_in[s], sums)


# The LIF state and spikes Winograd's slot takes, for a transposed convolution: none.
NO_STATE = np.zeros(0, dtype=np.float32)
NO_SPIKES = np.zeros(0, dtype=np.uint8)


def lif_backward_weight_grad(sources: tuple, u: np.ndarray, o: np.ndarray, surrogate: tuple, lif_constants: tuple,
                             events, indptr: np.ndarray, columns: np.ndarray, geometry: ConvGeometry,
                             path: str = "events", send_down: tuple | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The LIF backward and the weight gradient of the kernels ``(indptr, columns)`` in one
    pass, without dL/du; on request, the error sent down as well.

    Parameters
    ----------
    sources : ``(grad_spikes, grad_above, weight_above, pooled, pool_channels,
        pool_shape)``, dL/do as :func:`evsim.kernels.lif._lif_backward` takes it (checked
        by the caller).
    u, o : float32 and uint8 ``[T, B, F*Ho*Wo]``, C-contiguous: the recorded membrane and
        spikes of the ``F`` alive filters.
    surrogate : ``(kind, width)``; lif_constants : ``(decay, v_th, hard, detach_reset)``.
    events : the layer's input :class:`~evsim.kernels.events.Events`.
    indptr, columns, geometry : the kernels asked for (``columns`` indexing the alive
        filters) and the convolution, as :func:`conv_weight_grad_events`.
    path : the weight gradient's sums, ``"events"`` (the row layout) or ``"direct"``
        (stride 1; :func:`evsim.kernels.conv_paths.weight_grad_path` chooses).
    send_down : ``(data, scatter_below, grad_in)`` or None: ``data`` float32 ``[nnz, 3,
        3]`` the kernels' weights (the kernels asked for are then all the layer's), and
        ``grad_in`` float32 ``[T*B, C*H*W]``, C-contiguous, overwritten with dL/dx, each
        slot's scattered from its nonzero entries where their share is below
        ``scatter_below`` (the crossover :func:`evsim.kernels.conv_paths.input_grad_path`
        applies to a whole batch) and by Winograd's transposed convolution otherwise, the
        results of :func:`evsim.kernels.conv_input_grad.conv_input_grad_scatter` and
        :func:`~evsim.kernels.conv_input_grad.conv_input_grad_winograd` slot by slot.
        3 x 3 kernels at stride 1 and the ``"events"`` path only.

    Returns
    -------
    kernels : float32 ``[nnz, K, K]``, aligned with ``columns``.
    grad_bias_per_sample : float32 ``[B, F*Ho*Wo]``, ``sum_t dL/du[t]``.
    """
    g = geometry
    n_steps, batch, n = u.shape
    if (u.dtype != np.float32 or o.dtype != np.uint8 or o.shape != u.shape or not u.flags.c_contiguous
            or not o.flags.c_contiguous or n % g.out_cells):
        raise ValueError(f"u and o must be C-contiguous float32 and uint8 [T, B, F*{g.out_cells}], got "
                         f"{u.dtype} {u.shape} and {o.dtype} {o.shape}")
    n_blocks = n // g.out_cells
    check_events(events.ptr, events.idx, events.val, n_steps * batch)
    check_block_csr(indptr, columns, np.empty((columns.size, g.kernel, g.kernel), dtype=np.float32), g, n_blocks)
    n_tasks = max(1, min(batch, get_num_threads()))
    grad_bias_per_sample = np.empty((batch, n), dtype=np.float32)
    if path == "direct" and send_down is None:
        if g.stride != 1:
            raise ValueError("the direct weight gradient is for stride 1; use the event path")
        plan = DirectPlan.of(indptr, g, n_blocks)
        partial = plan.partial(n_tasks)
        _lif_backward_direct_grad(*sources, u, o, *surrogate, *lif_constants, events.ptr, events.idx, events.val,
                                  plan.offsets, g.in_channels, g.height, g.width, g.pad, g.kernel, plan.rows,
                                  plan.width_pad, g.out_height, g.out_width, grad_bias_per_sample, partial, n_tasks)
        return plan.kernels(partial, indptr, columns, g), grad_bias_per_sample
    if path != "events":
        raise ValueError(f"path must be 'events' or 'direct' (and 'events' to send the error down), got {path!r}")
    lanes = padded_lanes(n_blocks)
    partial = np.empty((n_tasks, g.in_channels * g.taps * lanes), dtype=np.float32)
    _lif_backward_weight_grad(*sources, u, o, *surrogate, *lif_constants, events.ptr, events.idx, events.val,
                              np.diff(indptr) > 0, g.height, g.width, g.kernel, g.stride, g.pad, g.out_height,
                              g.out_width, grad_bias_per_sample, partial,
                              *_down_arguments(send_down, indptr, columns, g, n_blocks, n_steps * batch), n_tasks)
    return rows_to_kernels(partial, indptr, columns, g), grad_bias_per_sample


def _down_arguments(send_down: tuple | None, indptr: np.ndarray, columns: np.ndarray, geometry: ConvGeometry,
                    n_blocks: int, n_slots: int) -> tuple:
    """The arguments of :func:`_send_down` that :func:`_lif_backward_weight_grad` passes on
    (empty arrays where nothing is sent down), checked."""
    g = geometry
    if send_down is None:
        no_weights = np.zeros((0, 0, 0), dtype=np.float32)
        return (no_weights, np.zeros(0, dtype=np.bool_), 0.0, np.zeros(0, dtype=np.int64),
                np.zeros((0, 0, 0, 0), dtype=np.float32), 0, 0, 0, 0, np.zeros((0, 0), dtype=np.float32))
    data, scatter_below, grad_in = send_down
    if not winograd_applies(g):
        raise ValueError(f"the error is sent down in the same pass for 3 x 3 kernels at stride 1, not {g}")
    check_block_csr(indptr, columns, data, g, n_blocks)
    check_out(grad_in, n_slots, g.n_in, "grad_in")
    by_filter = filter_weights(indptr, columns, data, n_blocks)
    used, transformed = transposed_weights(indptr, columns, data, g, n_blocks)
    return (by_filter, with_kernels(by_filter), float(scatter_below), used, transformed,
            *tile_layout(g.height, g.width), grad_in)
