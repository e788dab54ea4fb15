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


def constrain(state, w, step, spine_steps, shrink, excess_scale=1.0):
    """The dendritic-spine constraint in plain NumPy, array by array (the oracle of
    ``evsim.kernels.spines._constrain``): replaces the arrays of ``state``, clips ``w`` in place."""
    r_plus, r_minus = state["r_plus"], state["r_minus"]
    above = w >= r_plus
    state["above_n"] = np.where(above, state["above_n"] + 1, 0).astype(np.int32)
    state["above_sum"] = np.where(above, state["above_sum"] + (w - r_plus), 0).astype(np.float32)
    expand = state["above_n"] >= spine_steps
    r_plus[expand] += excess_scale * (state["above_sum"][expand] / state["above_n"][expand])
    state["above_n"][expand] = 0
    state["above_sum"][expand] = 0

    below = w <= r_minus
    state["below_n"] = np.where(below, state["below_n"] + 1, 0).astype(np.int32)
    state["below_sum"] = np.where(below, state["below_sum"] + (r_minus - w), 0).astype(np.float32)
    expand = state["below_n"] >= spine_steps
    r_minus[expand] -= excess_scale * (state["below_sum"][expand] / state["below_n"][expand])
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


# --- 2-D convolution and pooling (maps [S, C, H, W], S = T*B slots; weights [F, C, K, K]) ---

def _padded(x, pad):
    return np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))


def conv_out_size(size, kernel, stride, pad):
    return (size + 2 * pad - kernel) // stride + 1


def conv2d_forward(x, weight, stride=1, pad=0):
    """PyTorch's ``Conv2d`` (cross-correlation, no bias): ``out[s, f, oy, ox] = sum_{c,ky,kx}
    weight[f, c, ky, kx] * x_padded[s, c, oy*stride + ky, ox*stride + kx]``, one tap at a time."""
    n_filters, _, kernel, _ = weight.shape
    height = conv_out_size(x.shape[2], kernel, stride, pad)
    width = conv_out_size(x.shape[3], kernel, stride, pad)
    xp = _padded(x, pad)
    out = np.zeros((x.shape[0], n_filters, height, width), dtype=x.dtype)
    for ky in range(kernel):
        for kx in range(kernel):
            window = xp[:, :, ky:ky + stride * (height - 1) + 1:stride, kx:kx + stride * (width - 1) + 1:stride]
            out += np.einsum("scyx,fc->sfyx", window, weight[:, :, ky, kx])
    return out


def conv2d_input_grad(grad_out, weight, in_shape, stride=1, pad=0):
    """dL/dx ``[S, C, H, W]`` of :func:`conv2d_forward` given dL/dout ``[S, F, Ho, Wo]``."""
    _, _, kernel, _ = weight.shape
    _, height, width = in_shape
    out_h, out_w = grad_out.shape[2:]
    grad = np.zeros((grad_out.shape[0], in_shape[0], height + 2 * pad, width + 2 * pad), dtype=grad_out.dtype)
    for ky in range(kernel):
        for kx in range(kernel):
            grad[:, :, ky:ky + stride * (out_h - 1) + 1:stride, kx:kx + stride * (out_w - 1) + 1:stride] += \
                np.einsum("sfyx,fc->scyx", grad_out, weight[:, :, ky, kx])
    return grad[:, :, pad:pad + height, pad:pad + width]


def conv2d_weight_grad(x, grad_out, kernel, stride=1, pad=0):
    """dL/dweight ``[F, C, K, K]`` of :func:`conv2d_forward` given dL/dout ``[S, F, Ho, Wo]``."""
    out_h, out_w = grad_out.shape[2:]
    xp = _padded(x, pad)
    grad = np.zeros((grad_out.shape[1], x.shape[1], kernel, kernel), dtype=grad_out.dtype)
    for ky in range(kernel):
        for kx in range(kernel):
            window = xp[:, :, ky:ky + stride * (out_h - 1) + 1:stride, kx:kx + stride * (out_w - 1) + 1:stride]
            grad[:, :, ky, kx] = np.einsum("scyx,sfyx->fc", window, grad_out)
    return grad


def avg_pool2d(x, kernel):
    """PyTorch's ``AvgPool2d(kernel)``: window sums / kernel**2, trailing rows/columns dropped."""
    s, c, h, w = x.shape
    oh, ow = h // kernel, w // kernel
    windows = x[:, :, :oh * kernel, :ow * kernel].reshape(s, c, oh, kernel, ow, kernel)
    return windows.sum(axis=(3, 5)) / x.dtype.type(kernel * kernel)


def avg_pool2d_backward(grad_out, in_shape, kernel):
    """dL/dx ``[S, C, H, W]`` of :func:`avg_pool2d`."""
    s, c, oh, ow = grad_out.shape
    grad = np.zeros((s,) + tuple(in_shape), dtype=grad_out.dtype)
    share = grad_out / grad_out.dtype.type(kernel * kernel)
    grad[:, :, :oh * kernel, :ow * kernel] = np.repeat(np.repeat(share, kernel, axis=2), kernel, axis=3)
    return grad


def max_pool2d(x, kernel):
    """PyTorch's ``MaxPool2d(kernel)``: window maxima and, per output, the flat index
    ``c*H*W + y*W + x`` of the first maximum in the window's row-major scan."""
    s, c, h, w = x.shape
    oh, ow = h // kernel, w // kernel
    windows = x[:, :, :oh * kernel, :ow * kernel].reshape(s, c, oh, kernel, ow, kernel)
    windows = windows.transpose(0, 1, 2, 4, 3, 5).reshape(s, c, oh, ow, kernel * kernel)
    first = windows.argmax(axis=-1)
    ky, kx = first // kernel, first % kernel
    y = np.arange(oh)[None, None, :, None] * kernel + ky
    xx = np.arange(ow)[None, None, None, :] * kernel + kx
    argmax = np.arange(c)[None, :, None, None] * h * w + y * w + xx
    return windows.max(axis=-1), argmax


def max_pool2d_backward(grad_out, argmax, in_shape):
    """dL/dx ``[S, C, H, W]`` of :func:`max_pool2d`: each output's gradient to its argmax."""
    s = grad_out.shape[0]
    grad = np.zeros((s, int(np.prod(in_shape))), dtype=grad_out.dtype)
    rows = np.repeat(np.arange(s), grad_out[0].size)
    np.add.at(grad, (rows, argmax.reshape(-1)), grad_out.reshape(-1))
    return grad.reshape((s,) + tuple(in_shape))


def conv_lif_forward(x, weight, bias, stride=1, pad=0, decay=0.2, v_th=0.5, reset="hard"):
    """Membrane and spikes ``[T, B, F*Ho*Wo]`` of a spiking convolution: :func:`conv2d_forward`
    of each step's map ``x[t]`` ``[B, C, H, W]`` plus the filter's bias, then the LIF update of
    :func:`lif_forward`."""
    n_steps, batch = x.shape[:2]
    decay, v_th = np.float32(decay), np.float32(v_th)
    u, o = [], []
    u_prev = o_prev = np.float32(0.0)
    for t in range(n_steps):
        current = conv2d_forward(x[t], weight, stride, pad) + bias[None, :, None, None].astype(np.float32)
        current = current.reshape(batch, -1)
        if reset == "hard":
            u_t = decay * u_prev * (1 - o_prev) + current
        else:
            u_t = decay * u_prev - v_th * o_prev + current
        o_t = heaviside(u_t, v_th)
        u.append(u_t)
        o.append(o_t)
        u_prev, o_prev = u_t, o_t
    return np.stack(u).astype(np.float32), np.stack(o).astype(np.float32)
