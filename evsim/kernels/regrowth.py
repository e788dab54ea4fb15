"""SD-SNN's synaptic regeneration: the interval's sums of would-be gradients and the
count (:func:`evsim.structure.sdsnn.regrowth_candidates`), each one pass over the
columns that miss synapses.

Written with NumPy over the whole ``[n_in, n_out]`` layer (a dense existence mask, the
would-be update scattered into a dense array, a dense counter), one development step
of the default N-MNIST run took about 30 ms, 6 s of the run: every pass touched the
complete columns too, where no synapse can be missing. Here each row's existing
synapses mark the missing ones in its incomplete columns, and the counters of those
are updated in place, in one pass.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True)
def _count_regrowth(would_be, threshold, indptr, indices, column_slot, counter, regrow_steps, ready):
    """Update the consecutive-qualification counters of the missing synapses.

    ``would_be`` float32 ``[n_in, C]``: the would-be update of the synapses in C columns;
    ``column_slot[j]``: the position of column j among them, or -1. ``counter`` int16
    ``[n_in, C]`` (in place): a missing synapse whose ``|would_be|`` exceeds ``threshold``
    (float64) counts one more step, any other synapse goes back to 0; a count that
    reaches ``regrow_steps`` sets ``ready`` (bool ``[n_in, C]``, all False on entry)
    and goes back to 0.
    """
    n_rows, n_columns = would_be.shape
    for i in prange(n_rows):
        exists = np.zeros(n_columns, dtype=np.bool_)
        for k in range(indptr[i], indptr[i + 1]):
            c = column_slot[indices[k]]
            if c >= 0:
                exists[c] = True
        for c in range(n_columns):
            count = 0
            if not exists[c] and np.float64(abs(would_be[i, c])) > threshold:
                count = counter[i, c] + 1
                if count >= regrow_steps:
                    ready[i, c] = True
                    count = 0
            counter[i, c] = count


@njit(parallel=True, cache=True)
def _add_with_squares(grad, total, total_sq):
    """``total += grad`` and ``total_sq += grad * grad`` (float32 ``[n_in, C]``, in place) in
    one pass: NumPy's two in-place additions and the squares' temporary read and wrote
    the layer's ``[2312, 520]`` arrays eight times, 1.0 against 0.25 ms per batch."""
    n_rows, n_columns = grad.shape
    for i in prange(n_rows):
        for c in range(n_columns):
            g = grad[i, c]
            total[i, c] += g
            total_sq[i, c] += g * g


@njit(cache=True)
def _abs_order_stats(values, k):
    """The ``k``-th and ``(k + 1)``-th smallest ``|values|`` (0-based ranks; float32, at
    least ``k + 2`` values). The bit pattern of a float32 magnitude orders like the
    magnitude, so one pass counts the values per top 16 bits, and only the values in
    the one or two buckets that hold both ranks are sorted: about 1 against 8 ms for
    np.percentile's partition of the 650,000 magnitudes of the default N-MNIST network."""
    bits = values.view(np.uint32)
    counts = np.zeros(1 << 16, dtype=np.int64)
    for i in range(bits.size):
        counts[(bits[i] & 0x7FFFFFFF) >> 16] += 1
    below, first = 0, 0
    while below + counts[first] <= k:
        below += counts[first]
        first += 1
    last, through = first, below + counts[first]
    while through <= k + 1:
        last += 1
        through += counts[last]
    picked = np.empty(through - below, dtype=np.uint32)
    n = 0
    for i in range(bits.size):
        b = bits[i] & 0x7FFFFFFF
        if first <= b >> 16 <= last:
            picked[n] = b
            n += 1
    picked.sort()
    pair = picked[k - below:k - below + 2].view(np.float32)
    return pair[0], pair[1]
