"""LIF membrane update and its BPTT backward pass (see :mod:`evsim.neuron` for the model).

Shapes: membrane ``u`` and spikes ``o`` are ``[T, B, N]`` (float32, uint8); ``N`` is
the number of *alive* neurons of the layer (pruned neurons are compacted away).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, inline="always")
def _lif_update(current, u, o, decay, v_th, hard, u_out, o_out):
    """One step for one sample: ``u, o`` (state, updated in place) from ``current``.

    ``u_out``/``o_out`` are this step's rows of the recorded traces. Spiking is
    ``u > v_th`` (strict, as in the reference code); ``o`` holds 0.0/1.0.
    """
    for j in range(current.shape[0]):
        if hard:
            uj = decay * u[j] * (np.float32(1.0) - o[j]) + current[j]
        else:
            uj = decay * u[j] - v_th * o[j] + current[j]
        spike = uj > v_th
        u[j] = uj
        o[j] = np.float32(1.0) if spike else np.float32(0.0)
        u_out[j] = uj
        o_out[j] = 1 if spike else 0


@njit(parallel=True, cache=True)
def _lif_backward(grad_spikes, u, o, surrogate, decay, v_th, hard, detach_reset, grad_u):
    """BPTT through the LIF dynamics.

    Parameters (all ``[T, B, N]``)
    ----------
    grad_spikes : dL/do[t] arriving from above (next layer or loss).
    u, o : recorded membrane and spikes. surrogate : g(u - v_th), precomputed.
    grad_u : output, dL/du[t] (also dL/dI[t], since u[t] = ... + I[t]).

    Notes
    -----
    With ``c = dL/du[t+1]``::

        dL/do[t] = grad_spikes[t] + c * (-decay * u[t])   (hard)   or  c * (-v_th)  (subtract)
        dL/du[t] = dL/do[t] * g[t] + c * decay * (1 - o[t])  (hard)  or  c * decay  (subtract)

    the reset terms vanish with ``detach_reset``.
    """
    n_steps, batch, n = u.shape
    for b in prange(batch):
        carry = np.zeros(n, dtype=np.float32)
        for t in range(n_steps - 1, -1, -1):
            for j in range(n):
                c = carry[j]
                spiked = np.float32(o[t, b, j])
                if hard:
                    reset_grad = -decay * u[t, b, j] * c
                    leak = decay * (np.float32(1.0) - spiked)
                else:
                    reset_grad = -v_th * c
                    leak = decay
                go = grad_spikes[t, b, j]
                if not detach_reset:
                    go += reset_grad
                gu = go * surrogate[t, b, j] + c * leak
                grad_u[t, b, j] = gu
                carry[j] = gu
