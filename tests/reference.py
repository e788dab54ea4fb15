"""Dense plain-NumPy twins of evsim's kernels: slow, obvious, and the oracle for tests.

Everything here works on dense arrays: inputs ``x[T, B, D]``, weights ``W[D, N]``
(zeros where no synapse exists), biases ``b[N]``.
"""
from __future__ import annotations

import numpy as np


def heaviside(u, v_th):
    return (u > v_th).astype(np.float32)


def lif_forward(x, weight, bias, decay=0.2, v_th=0.5, reset="hard", spike_fn=heaviside):
    """Membrane ``u`` and spikes ``o`` ``[T, B, N]`` of one LIF layer (see evsim.neuron)."""
    n_steps, batch, _ = x.shape
    n = weight.shape[1]
    decay, v_th = np.float32(decay), np.float32(v_th)
    u = np.zeros((n_steps, batch, n), dtype=x.dtype)
    o = np.zeros_like(u)
    u_prev = np.zeros((batch, n), dtype=x.dtype)
    o_prev = np.zeros_like(u_prev)
    for t in range(n_steps):
        current = x[t] @ weight + bias
        if reset == "hard":
            u[t] = decay * u_prev * (1 - o_prev) + current
        else:
            u[t] = decay * u_prev - v_th * o_prev + current
        o[t] = spike_fn(u[t], v_th)
        u_prev, o_prev = u[t], o[t]
    return u, o


def lif_backward(grad_o, u, o, spike_grad, decay=0.2, v_th=0.5, reset="hard", detach_reset=False):
    """dL/du ``[T, B, N]`` given dL/do from above; ``spike_grad`` = do/du at each u."""
    n_steps = u.shape[0]
    decay, v_th = np.float32(decay), np.float32(v_th)
    grad_u = np.zeros_like(u)
    carry = np.zeros_like(u[0])
    for t in range(n_steps - 1, -1, -1):
        if reset == "hard":
            reset_grad = -decay * u[t] * carry
            leak = decay * (1 - o[t])
        else:
            reset_grad = -v_th * carry
            leak = decay
        go = grad_o[t] + (0 if detach_reset else reset_grad)
        grad_u[t] = go * spike_grad[t] + carry * leak
        carry = grad_u[t]
    return grad_u


def network_forward(x, weights, biases, spike_fn=heaviside, **lif):
    """Forward through all layers; returns counts ``[B, n_out]`` and per-layer (input, u, o)."""
    trace = []
    for weight, bias in zip(weights, biases):
        u, o = lif_forward(x, weight, bias, spike_fn=spike_fn, **lif)
        trace.append((x, u, o))
        x = o
    return trace[-1][2].sum(axis=0), trace


def network_backward(trace, weights, grad_counts, surrogate, **lif):
    """Dense BPTT. ``surrogate(u)`` gives do/du. Returns lists of dL/dW (dense) and dL/db."""
    grad_o = np.broadcast_to(grad_counts, trace[-1][2].shape).copy()
    grads_w, grads_b = [None] * len(weights), [None] * len(weights)
    for k in range(len(weights) - 1, -1, -1):
        x, u, o = trace[k]
        grad_u = lif_backward(grad_o, u, o, surrogate(u), **lif)
        grads_w[k] = np.einsum("tbi,tbj->ij", x, grad_u)
        grads_b[k] = grad_u.sum(axis=(0, 1))
        grad_o = grad_u @ weights[k].T
    return grads_w, grads_b


def mse_rate(counts, labels, n_steps):
    target = np.zeros_like(counts)
    target[np.arange(len(labels)), labels] = 1
    return float(np.mean((counts / n_steps - target) ** 2))


def adam(param, grad, m, v, step, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, decoupled=False):
    """One Adam/AdamW step on copies; returns (param, m, v)."""
    g = grad + (0 if decoupled else weight_decay * param)
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    update = lr * (m / (1 - beta1 ** step)) / (np.sqrt(v / (1 - beta2 ** step)) + eps)
    if decoupled:
        update = update + lr * weight_decay * param
    return param - update, m, v


def sgd(param, grad, buf, lr, momentum=0.9, weight_decay=0.0, nesterov=False):
    """One SGD step with momentum, L2 weight decay and optional Nesterov (PyTorch's
    ``torch.optim.SGD`` without dampening; a zero buffer makes the first step ``buf = g``);
    returns (param, buf)."""
    g = grad + weight_decay * param
    buf = momentum * buf + g
    direction = g + momentum * buf if nesterov else buf
    return param - lr * direction, buf


def dyadic_weights(rng, shape, density=1.0, scale=64):
    """Weights that are small multiples of 1/scale: every sum of them is exact in float32,
    so event-driven and dense results must agree bit for bit, whatever the summation order."""
    w = rng.integers(-12, 13, size=shape).astype(np.float32) / np.float32(scale)
    return w * (rng.random(shape) < density)


def constrain(state, w, step, spine_steps, shrink):
    """The dendritic-spine constraint in plain NumPy, array by array (the oracle of
    ``evsim.kernels.spines._constrain``): replaces the arrays of ``state``, clips ``w`` in place."""
    r_plus, r_minus = state["r_plus"], state["r_minus"]
    above = w >= r_plus
    state["above_n"] = np.where(above, state["above_n"] + 1, 0).astype(np.int32)
    state["above_sum"] = np.where(above, state["above_sum"] + (w - r_plus), 0).astype(np.float32)
    expand = state["above_n"] >= spine_steps
    r_plus[expand] += state["above_sum"][expand] / state["above_n"][expand]
    state["above_n"][expand] = 0
    state["above_sum"][expand] = 0

    below = w <= r_minus
    state["below_n"] = np.where(below, state["below_n"] + 1, 0).astype(np.int32)
    state["below_sum"] = np.where(below, state["below_sum"] + (r_minus - w), 0).astype(np.float32)
    expand = state["below_n"] >= spine_steps
    r_minus[expand] -= state["below_sum"][expand] / state["below_n"][expand]
    state["below_n"][expand] = 0
    state["below_sum"][expand] = 0

    magnitude = np.abs(w)
    state["fall_n"] = np.where(magnitude < state["prev_abs"], state["fall_n"] + 1, 0).astype(np.int32)
    shrinking = state["fall_n"] >= spine_steps
    r_plus[shrinking] *= shrink
    r_minus[shrinking] *= shrink
    state["fall_n"][shrinking] = 0

    if step >= spine_steps:
        np.clip(w, r_minus, r_plus, out=w)
    state["prev_abs"] = np.abs(w).astype(np.float32)


def regrowth_candidates(counter, would_be, exists, weights_abs, q, regrow_steps):
    """SD-SNN's regeneration count over the dense layer (the oracle of
    ``evsim.structure.sdsnn.regrowth_candidates``): ``counter`` int16, ``would_be`` (zero in
    complete columns) and ``exists`` are ``[n_in, n_out]``; updates ``counter`` in place and
    returns (pre, post) to regrow."""
    threshold = np.percentile(weights_abs, q) if weights_abs.size else 0.0
    qualifies = (np.abs(would_be) > threshold) & ~exists
    counter[:] = np.where(qualifies, counter + 1, 0)
    pre, post = np.nonzero(counter >= regrow_steps)
    counter[pre, post] = 0
    return pre, post
