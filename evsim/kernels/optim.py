"""Optimizer updates over flat parameter arrays (CSR ``data`` or biases), in place.

Moments are per-parameter arrays aligned with the parameters, so they move with
synapses when the structure changes.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True)
def _adam(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, bias1, bias2):
    """Adam / AdamW step. ``bias1 = 1 - beta1**step``, ``bias2 = 1 - beta2**step``.

    ``decoupled`` (AdamW): ``param -= lr * weight_decay * param`` apart from the
    adaptive step; otherwise weight decay is added to the gradient (Adam + L2).
    """
    for k in prange(param.shape[0]):
        g = grad[k]
        if not decoupled:
            g += weight_decay * param[k]
        m[k] = beta1 * m[k] + (1.0 - beta1) * g
        v[k] = beta2 * v[k] + (1.0 - beta2) * g * g
        update = lr * (m[k] / bias1) / (np.sqrt(v[k] / bias2) + eps)
        if decoupled:
            update += lr * weight_decay * param[k]
        param[k] -= update


@njit(parallel=True, cache=True)
def _sgd(param, grad, buf, lr, momentum, weight_decay, nesterov):
    """SGD with (optionally Nesterov) momentum and L2 weight decay (PyTorch's convention)."""
    for k in prange(param.shape[0]):
        g = grad[k] + weight_decay * param[k]
        buf[k] = momentum * buf[k] + g
        if nesterov:
            g = g + momentum * buf[k]
        else:
            g = buf[k]
        param[k] -= lr * g
