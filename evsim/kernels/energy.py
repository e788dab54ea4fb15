"""Exact operation counts from delivered events.

A delivered event of value k on presynaptic row i costs ``k * fan_out[i]`` synaptic
operations, where ``fan_out`` is the row's real length in the CSR store (pruned
synapses cost nothing; an event on a row with no synapses costs nothing).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True)
def _count_slots(ptr, idx, val, fan_out, fan_out_unpruned, events_out, ops_out, unpruned_out):
    """Per slot ``s``: ``events_out[s]`` = the sum of its event values, ``ops_out[s]`` and
    ``unpruned_out[s]`` = the sum of ``val * fan_out[row]`` with each fan-out, in one pass
    over the events, slots in parallel.

    The outputs are float64 ``[T*B]``. Every term is a whole number (counts, fan-outs) or,
    for a pooled map of power-of-two windows (AP2, AP4), a multiple of 1/k^2, so the
    float64 sums are exact up to 2**53 and do not depend on the order they are taken in;
    other windows' 1/k^2 (AP3: 1/9) rounds, to about 1e-16 relative per term.
    """
    for s in prange(ptr.shape[0] - 1):
        events, ops, unpruned = 0.0, 0.0, 0.0
        for e in range(ptr[s], ptr[s + 1]):
            v = np.float64(val[e])
            i = idx[e]
            events += v
            ops += v * fan_out[i]
            unpruned += v * fan_out_unpruned[i]
        events_out[s] = events
        ops_out[s] = ops
        unpruned_out[s] = unpruned
