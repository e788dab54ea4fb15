"""Exact operation counts from delivered events.

A delivered event of value k on presynaptic row i costs ``k * fan_out[i]`` synaptic
operations, where ``fan_out`` is the row's real length in the CSR store (pruned
synapses cost nothing; an event on a row with no synapses costs nothing).
"""
from __future__ import annotations

from numba import njit


@njit(cache=True)
def _count_ops(ptr, idx, val, fan_out, n_steps, batch, events_out, ops_out):
    """Per time step: ``events_out[t] += sum of event values``, ``ops_out[t] += sum val * fan_out[row]``.

    ``events_out`` and ``ops_out`` are float64 ``[T]`` accumulators (float64 keeps the
    integer counts exact up to 2**53).
    """
    for t in range(n_steps):
        for b in range(batch):
            s = t * batch + b
            for e in range(ptr[s], ptr[s + 1]):
                v = val[e]
                events_out[t] += v
                ops_out[t] += v * fan_out[idx[e]]
