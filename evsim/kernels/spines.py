"""The dendritic-spine constraint of SD-SNN (:func:`evsim.structure.sdsnn.constrain`),
one pass over the synapses.

Written with NumPy, one development step made about twenty passes over the layer's
synapse arrays, each allocating a temporary: 29 ms per step for the 1.85 million
synapses of the unpruned default N-MNIST network, against 2.7 ms here; 5.2 s of the
default run's first six epochs (benchmarks/RESULTS.md). Here every synapse's counters,
range, weight and last magnitude are read and written once, in place, with the same
float32 (and, where NumPy promoted to float64, float64) arithmetic, so the results are
identical.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True)
def _constrain(w, r_plus, r_minus, above_n, above_sum, below_n, below_sum, fall_n, prev_abs, k, shrink, clip,
               excess_scale):
    """One constraint step per synapse (arrays aligned with the CSR data, all in place).

    - A weight at or above ``r_plus`` for ``k`` consecutive steps moves ``r_plus`` up by
      ``excess_scale`` times the mean excess over those steps; likewise below
      ``r_minus``, downward.
    - A magnitude that fell for ``k`` consecutive steps shrinks both bounds by ``shrink``.
    - With ``clip``, the weight is clipped into ``[r_minus, r_plus]``; ``prev_abs``
      becomes its magnitude.

    ``k`` int32, ``shrink`` float32, ``excess_scale`` float64. The mean excess is float32 sum / int32 count, which
    NumPy computes in float64 before storing the bound as float32; so is it here.
    """
    for i in prange(w.shape[0]):
        wi = w[i]
        if wi >= r_plus[i]:
            n, total = above_n[i] + 1, above_sum[i] + (wi - r_plus[i])
        else:
            n, total = np.int32(0), np.float32(0.0)
        if n >= k:
            r_plus[i] = np.float32(np.float64(r_plus[i]) + excess_scale * (np.float64(total) / np.float64(n)))
            n, total = np.int32(0), np.float32(0.0)
        above_n[i], above_sum[i] = n, total

        if wi <= r_minus[i]:
            n, total = below_n[i] + 1, below_sum[i] + (r_minus[i] - wi)
        else:
            n, total = np.int32(0), np.float32(0.0)
        if n >= k:
            r_minus[i] = np.float32(np.float64(r_minus[i]) - excess_scale * (np.float64(total) / np.float64(n)))
            n, total = np.int32(0), np.float32(0.0)
        below_n[i], below_sum[i] = n, total

        n = fall_n[i] + 1 if abs(wi) < prev_abs[i] else np.int32(0)
        if n >= k:
            r_plus[i] *= shrink
            r_minus[i] *= shrink
            n = np.int32(0)
        fall_n[i] = n

        if clip:
            wi = min(max(wi, r_minus[i]), r_plus[i])
            w[i] = wi
        prev_abs[i] = abs(wi)
