"""BPTT through the LIF dynamics (see :mod:`evsim.neuron` for the model; the forward
update runs in :func:`evsim.kernels.propagate._lif_scan`).

Shapes: membrane ``u`` and spikes ``o`` are ``[T, B, N]`` (float32, uint8); ``N`` is
the number of *alive* neurons of the layer (pruned neurons are compacted away).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from evsim.kernels.simd import LANES, all_zero, interleave_high, interleave_low, load, splat, store


@njit(cache=True, inline="always")
def _surrogate(x, kind, width):
    """:func:`evsim.neuron.surrogate_grad` for one value; ``kind`` indexes ``SURROGATES``."""
    one = np.float32(1.0)
    if kind == 0:  # rectangular
        return one if abs(x) < width else np.float32(0.0)
    if kind == 1:  # triangle
        return max(np.float32(0.0), one - abs(x) / width) / width
    a = one / width
    if kind == 2:  # atan
        z = np.float32(math.pi / 2) * a * x
        return a / (np.float32(2.0) * (one + z * z))
    d = one + a * abs(x)  # fast_sigmoid
    return one / (d * d)


@njit(cache=True)
def _formed_lanes(grad_above, s, weight_above, out, j, n_lanes):
    """Lanes ``j..j+n_lanes`` of ``out = grad_above[s, :M] @ weight_above`` (``M`` rows;
    ``grad_above`` may have padding columns past them)."""
    n = out.shape[0]
    total = splat(np.float32(0.0))
    for k in range(weight_above.shape[0]):
        total = total + grad_above[s, k] * load(weight_above, k * n + j, n_lanes)
    store(out, j, total, n_lanes)


@njit(cache=True)
def _form_row(grad_above, s, weight_above, out):
    """``out = grad_above[s] @ weight_above`` in 16-lane vectors; whole vectors pass the
    literal lane count, so only the last one is masked. Summing k outermost instead, with
    every vector masked, made the whole backward 1.8x slower at one thread (a masked store
    read back by the next pass stalls)."""
    n = out.shape[0]
    whole = n - n % LANES
    for j in range(0, whole, LANES):
        _formed_lanes(grad_above, s, weight_above, out, j, LANES)
    if whole < n:
        _formed_lanes(grad_above, s, weight_above, out, whole, n - whole)


# What _lif_backward takes for a source of dL/do that a caller does not use: no factors
# (grad_above, weight_above, or pooled), no pooled channels, no pooling shape.
NO_FACTORS = np.zeros((0, 0), dtype=np.float32)
NO_POOL_CHANNELS = np.zeros(0, dtype=np.int64)
NO_POOL_SHAPE = (0, 0, 0, 0, 0)


@njit(cache=True)
def _pooled_row(pooled, s, channels, pool_shape, out):
    """``out`` = dL/d(spikes) of slot ``s`` of the map under an average pooling, from
    dL/d(pooled output) ``pooled[s]`` ``[C*Ho*Wo]``: each window's share (its gradient /
    k², as :func:`evsim.kernels.avg_pool._avg_pool_backward` divides it) on every cell of
    the window, zero on the cells past the last whole window; map channel ``channels[j]``
    into ``out``'s j-th block of ``H*W`` cells. ``pool_shape`` is ``(H, W, k, Ho, Wo)``."""
    height, width, kernel, out_height, out_width = pool_shape
    if out_height * kernel < height or out_width * kernel < width:
        out[:] = 0.0  # cells past the last whole window get no gradient
    if kernel == 2:
        _pooled_row_2x2(pooled[s], channels, pool_shape, out)
    else:
        pooled_row_cells(pooled[s], channels, pool_shape, out)


@njit(cache=True)
def pooled_row_cells(row, channels, pool_shape, out):
    """:func:`_pooled_row`'s windows, cell by cell: any window size."""
    height, width, kernel, out_height, out_width = pool_shape
    cells = height * width
    out_cells = out_height * out_width
    divisor = np.float32(kernel * kernel)
    for j in range(channels.shape[0]):
        source = channels[j] * out_cells
        for oy in range(out_height):
            for ox in range(out_width):
                share = row[source + oy * out_width + ox] / divisor
                for dy in range(kernel):
                    first = j * cells + (oy * kernel + dy) * width + ox * kernel
                    for dx in range(kernel):
                        out[first + dx] = share


@njit(cache=True)
def _pooled_row_2x2(row, channels, pool_shape, out):
    """:func:`_pooled_row` for 2 x 2 windows, 16 windows at a time: each window's quarter
    (exactly its gradient / 4) doubled along the row by interleaving, onto both rows of
    the window. Cell by cell it cost more than the LIF backward it feeds."""
    height, width, _, out_height, out_width = pool_shape
    cells = height * width
    out_cells = out_height * out_width
    quarter = np.float32(0.25)
    for j in range(channels.shape[0]):
        source = channels[j] * out_cells
        for oy in range(out_height):
            first = j * cells + 2 * oy * width
            for x0 in range(0, out_width, LANES):
                m = min(LANES, out_width - x0)
                shares = quarter * load(row, source + oy * out_width + x0, m)
                low, high = interleave_low(shares, shares), interleave_high(shares, shares)
                at = first + 2 * x0
                store(out, at, low, min(LANES, 2 * m))
                store(out, at + width, low, min(LANES, 2 * m))
                if 2 * m > LANES:
                    store(out, at + LANES, high, 2 * m - LANES)
                    store(out, at + width + LANES, high, 2 * m - LANES)


@njit(cache=True)
def _no_error_arrives(grad_spikes, grad_above, weight_above, pooled, t, b, batch):
    """Whether dL/do of sample ``b`` at step ``t`` is zero, read from its source (the dense
    array, the pooled gradient or the factors) without forming it."""
    s = t * batch + b
    if grad_spikes is not None:
        return all_zero(grad_spikes[t, b], 0, grad_spikes.shape[2])
    if pooled.shape[0] > 0:
        return all_zero(pooled[s], 0, pooled.shape[1])
    return all_zero(grad_above[s], 0, weight_above.shape[0])


@njit(parallel=True, cache=True)
def _lif_backward(grad_spikes, grad_above, weight_above, pooled, pool_channels, pool_shape, u, o, kind, width, decay,
                  v_th, hard, detach_reset, grad_u, grad_bias_per_sample, n_tasks):
    """BPTT through the LIF dynamics.

    Parameters (``[T, B, N]`` unless noted)
    ----------
    grad_spikes : dL/do[t] arriving from above (next layer or loss), or None: then
        ``dL/do[t, b] = grad_above[t * B + b] @ weight_above``, where ``grad_above``
        ``[T*B, M]`` is dL/du of the M alive neurons above and ``weight_above``
        ``[M, N]`` their weights from these neurons. That is the layer above's input
        gradient, formed here one slot at a time in a row that stays in L1, instead of
        written out as a ``[T*B, N]`` array by one BLAS thread and read back (for the
        800-10 layer: 0.42 against 0.66 ms at 2 threads, benchmarks/RESULTS.md). With
        ``grad_spikes`` given, the factors are unused (empty 2-D float32 arrays: Numba
        drops a branch only for an argument that is None).
    pooled, pool_channels, pool_shape : with ``grad_spikes`` None and ``pooled``
        non-empty, ``dL/do[t, b]`` comes from an average pooling above instead:
        ``pooled`` float32 ``[T*B, C*Ho*Wo]`` is dL/d(pooled output), ``pool_channels``
        int64 ``[F]`` the pooled map's channel of each of this layer's ``F`` alive
        filters, ``pool_shape`` ``(H, W, k, Ho, Wo)``; the row is formed per slot
        (:func:`_pooled_row`), so the map-sized dL/do is never written out and read
        back. Unused: ``pooled`` ``[0, 0]``.
    u, o : recorded membrane and spikes.
    kind, width : the surrogate ``g(u - v_th)`` (index into ``SURROGATES``), evaluated here.
    grad_u : output, dL/du[t] (also dL/dI[t], since u[t] = ... + I[t]).
    grad_bias_per_sample : output ``[B, N]``, ``sum_t dL/du[t]`` (the bias gradient
        is its sum over samples; summed here while the values are in registers).
    n_tasks : parallel tasks, each taking a run of samples (the thread count; passed in,
        as calling ``get_num_threads`` inside would keep Numba from caching the kernel).

    Notes
    -----
    With ``c = dL/du[t+1]``::

        dL/do[t] = grad_spikes[t] + c * (-decay * u[t])   (hard)   or  c * (-v_th)  (subtract)
        dL/du[t] = dL/do[t] * g[t] + c * decay * (1 - o[t])  (hard)  or  c * decay  (subtract)

    the reset terms vanish with ``detach_reset``. Until the first step (from the end) at
    which some dL/do is nonzero, ``c`` and dL/do are zero and so is dL/du: those steps
    write zeros without reading the membrane and spikes.
    """
    n_steps, batch, n = u.shape
    n_tasks = max(1, min(batch, n_tasks))
    for task in prange(n_tasks):
        # Scratch once per task (``n_tasks``: the caller's thread count), not per sample:
        # taken and freed 100 times a batch it cost 56 ms of system time a training batch
        # of the paper's N-MNIST network (the threads' malloc arenas trimming and growing).
        no_carry = np.zeros(n, dtype=np.float32)
        formed = np.empty(n if grad_spikes is None else 0, dtype=np.float32)
        for b in range(task * batch // n_tasks, (task + 1) * batch // n_tasks):
            bias_sum = grad_bias_per_sample[b]
            bias_sum[:] = 0.0
            quiet = True  # no error carried back from later steps yet
            for t in range(n_steps - 1, -1, -1):
                if quiet and _no_error_arrives(grad_spikes, grad_above, weight_above, pooled, t, b, batch):
                    grad_u[t, b, :n] = 0.0  # what the update below gives with dL/do and the carry zero
                    continue
                quiet = False
                from_above = error_row(grad_spikes, grad_above, weight_above, pooled, pool_channels, pool_shape, t,
                                       b, batch, formed)
                # The carry dL/du[t+1] is the row just written (zeros after quiet steps).
                carry = grad_u[t + 1, b] if t + 1 < n_steps else no_carry
                lif_backward_step(from_above, u[t, b], o[t, b], carry, grad_u[t, b], bias_sum, n, kind, width,
                                  decay, v_th, hard, detach_reset)


@njit(cache=True, inline="always")
def error_row(grad_spikes, grad_above, weight_above, pooled, pool_channels, pool_shape, t, b, batch, formed):
    """dL/do of sample ``b`` at step ``t`` from its source (see :func:`_lif_backward`):
    the row of ``grad_spikes``, or formed into ``formed``."""
    if grad_spikes is None:
        if pooled.shape[0] > 0:
            _pooled_row(pooled, t * batch + b, pool_channels, pool_shape, formed)
        else:
            _form_row(grad_above, t * batch + b, weight_above, formed)
        return formed
    return grad_spikes[t, b]


@njit(cache=True, inline="always")
def lif_backward_step(from_above, u, o, carry, out, bias_sum, n, kind, width, decay, v_th, hard, detach_reset):
    """One slot of :func:`_lif_backward`: ``out[:n]`` = dL/du[t] from dL/do[t]
    ``from_above``, the membrane ``u`` and spikes ``o`` at ``t`` and ``carry`` = dL/du[t+1];
    ``bias_sum`` += it. ``out`` and ``carry`` are distinct rows.

    Three loops, each simple enough for LLVM to vectorise: the surrogate's derivative
    into ``out`` (one copy per kind, the kind a constant), the step, which reads it back
    (one copy per reset, ``hard`` and ``detach_reset`` constants), and ``bias_sum``'s
    sums. As one loop holding the four kinds' copies, each testing the reset, LLVM left
    it scalar: 1.6-1.8 against 0.5 ns a unit on conv1's rows on AVX2
    (benchmarks/RESULTS.md). The same float32 operations in the same order."""
    if kind == 0:
        _surrogate_row(u, out, n, 0, width, v_th)
    elif kind == 1:
        _surrogate_row(u, out, n, 1, width, v_th)
    elif kind == 2:
        _surrogate_row(u, out, n, 2, width, v_th)
    else:
        _surrogate_row(u, out, n, 3, width, v_th)
    if hard and detach_reset:
        _step_row(from_above, u, o, carry, out, n, decay, v_th, True, True)
    elif hard:
        _step_row(from_above, u, o, carry, out, n, decay, v_th, True, False)
    elif detach_reset:
        _step_row(from_above, u, o, carry, out, n, decay, v_th, False, True)
    else:
        _step_row(from_above, u, o, carry, out, n, decay, v_th, False, False)
    for j in range(n):
        bias_sum[j] += out[j]


@njit(cache=True, inline="always")
def _step_row(from_above, u, o, carry, out, n, decay, v_th, hard, detach_reset):
    """``out[:n]`` = dL/du from the surrogate derivative in ``out`` (see
    :func:`lif_backward_step`), for one reset (``hard``, ``detach_reset`` constants)."""
    for j in range(n):
        c = carry[j]
        spiked = np.float32(o[j])
        if hard:
            reset_grad = -decay * u[j] * c
            leak = decay * (np.float32(1.0) - spiked)
        else:
            reset_grad = -v_th * c
            leak = decay
        go = from_above[j]
        if not detach_reset:
            go += reset_grad
        out[j] = go * out[j] + c * leak


@njit(cache=True, inline="always")
def _surrogate_row(u, out, n, kind, width, v_th):
    """``out[:n]`` = the surrogate derivative of ``u[:n]`` for one ``kind``."""
    for j in range(n):
        out[j] = _surrogate(u[j] - v_th, kind, width)
