"""Dense NumPy/BLAS BPTT of evsim's LIF network: the baseline a user could write without evsim.

The model is evsim's (see :mod:`evsim.neuron`), for a feed-forward stack of fully
connected LIF layers with dense weights ``W[n_in, n_out]`` and biases ``b[n_out]``::

    I[t] = x[t] @ W + b
    u[t] = decay * u[t-1] * (1 - o[t-1]) + I[t]      (hard reset; or subtractive)
    o[t] = u[t] > v_th
    counts = sum_t o_last[t];  loss = MSE(counts / T, one-hot)   (evsim.loss.mse_rate)

Backward is exact BPTT with evsim's surrogate (:func:`evsim.neuron.surrogate_grad`) in
place of H', the reset term carrying gradient unless ``detach_reset``; then Adam in
NumPy with evsim's constants (``Optimizer("adam")``: betas 0.9/0.999, eps 1e-8).

It is written to be a *strong* dense baseline, not a straw man: the layers are
feed-forward, so a layer's whole input sequence is known before its time loop, and its
input current for all T steps is one BLAS call ``X[T*B, n_in] @ W`` (stronger than one
``x[t] @ W`` per step, which is what a snnTorch loop does). The LIF loop over T is
elementwise NumPy on ``[B, n]`` slices. Weight gradients are one matmul per layer,
``X^T @ dL/dI``, and the input gradient ``dL/dI @ W^T``. BLAS threads are whatever the
caller allows (``threadpoolctl``); the elementwise NumPy work is single-threaded.

``tests/test_dense_bptt_baseline.py`` checks that its forward counts, gradients and Adam
step equal evsim's on a small network, so the comparison is between equal computations.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from evsim.loss import mse_rate
from evsim.neuron import LIFParameters, surrogate_grad


class DenseTrace(NamedTuple):
    """What one layer's forward keeps for backward: input ``x2`` ``[T*B, n_in]``, ``u``, ``o`` ``[T, B, n]``."""

    x2: np.ndarray
    u: np.ndarray
    o: np.ndarray


class DenseMLP:
    """Dense-matrix twin of an evsim MLP, trained with BPTT and Adam in NumPy.

    Parameters
    ----------
    weights : float32 ``[n_in, n_out]`` per layer (zeros where a synapse is missing).
    biases : float32 ``[n_out]`` per layer.
    lif : neuron parameters (evsim's defaults).
    masks : optional boolean ``[n_in, n_out]`` per layer (None = dense): gradients of
        missing synapses are zeroed so they stay missing, as in evsim's CSR store.
    """

    def __init__(self, weights, biases, lif: LIFParameters = LIFParameters(), masks=None,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.weights = [np.ascontiguousarray(w, dtype=np.float32) for w in weights]
        self.biases = [np.ascontiguousarray(b, dtype=np.float32) for b in biases]
        self.masks = list(masks) if masks is not None else [None] * len(self.weights)
        self.lif = lif.validate()
        self.betas, self.eps = betas, eps
        self.steps = 0
        params = self.weights + self.biases
        self._m = [np.zeros_like(p) for p in params]
        self._v = [np.zeros_like(p) for p in params]

    @classmethod
    def from_network(cls, network, dense: bool = True) -> "DenseMLP":
        """Copy an evsim :class:`~evsim.network.Network`'s weights and biases.

        ``dense=False`` keeps its synapse masks (missing synapses stay missing).
        """
        weights = [layer.store.to_dense() for layer in network.layers]
        biases = [layer.bias.copy() for layer in network.layers]
        masks = None if dense else [layer.store.mask() for layer in network.layers]
        return cls(weights, biases, network.lif, masks)

    # ---------------------------------------------------------------- forward
    def _lif_forward(self, current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``u``, ``o`` (float32 ``[T, B, n]``) from the input current ``[T, B, n]``."""
        decay, v_th = np.float32(self.lif.decay), np.float32(self.lif.v_th)
        hard = self.lif.reset == "hard"
        u = np.empty_like(current)
        o = np.empty_like(current)
        for t in range(current.shape[0]):
            if t == 0:
                u[0] = current[0]
            elif hard:
                # Same float32 operation order as evsim's kernel: (decay * u) * (1 - o) + I.
                np.multiply(decay, u[t - 1], out=u[t])
                u[t] *= np.float32(1.0) - o[t - 1]
                u[t] += current[t]
            else:
                np.multiply(decay, u[t - 1], out=u[t])
                u[t] -= v_th * o[t - 1]
                u[t] += current[t]
            np.greater(u[t], v_th, out=o[t])
        return u, o

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, list[DenseTrace]]:
        """Output spike counts ``[B, n_out]`` and the per-layer traces for :meth:`backward`."""
        n_steps, batch, _ = x.shape
        x2 = np.ascontiguousarray(x, dtype=np.float32).reshape(n_steps * batch, -1)
        traces = []
        for weight, bias in zip(self.weights, self.biases):
            current = x2 @ weight
            current += bias
            u, o = self._lif_forward(current.reshape(n_steps, batch, -1))
            traces.append(DenseTrace(x2, u, o))
            x2 = o.reshape(n_steps * batch, -1)
        return traces[-1].o.sum(axis=0), traces

    # --------------------------------------------------------------- backward
    def _lif_backward(self, grad_o: np.ndarray, u: np.ndarray, o: np.ndarray) -> np.ndarray:
        """dL/du ``[T, B, n]`` from dL/do; the same recursion as evsim's ``_lif_backward``."""
        lif = self.lif
        decay, v_th = np.float32(lif.decay), np.float32(lif.v_th)
        hard = lif.reset == "hard"
        g = surrogate_grad(u - v_th, lif.surrogate, lif.width)
        grad_u = np.empty_like(u)
        carry = np.zeros_like(u[0])
        for t in range(u.shape[0] - 1, -1, -1):
            go = grad_o[t].copy()
            if not lif.detach_reset:
                go -= (decay * u[t] * carry) if hard else (v_th * carry)
            gu = go * g[t]
            gu += carry * (decay * (np.float32(1.0) - o[t]) if hard else decay)
            grad_u[t] = gu
            carry = gu
        return grad_u

    def backward(self, traces: list[DenseTrace], grad_counts: np.ndarray) -> tuple[list, list]:
        """Gradients ``(dL/dW per layer, dL/db per layer)`` from dL/d(counts) ``[B, n_out]``."""
        n_steps = traces[-1].u.shape[0]
        grad_o = np.broadcast_to(np.asarray(grad_counts, np.float32), traces[-1].u.shape)
        grads_w, grads_b = [None] * len(self.weights), [None] * len(self.weights)
        for k in range(len(self.weights) - 1, -1, -1):
            x2, u, o = traces[k]
            grad_u = self._lif_backward(grad_o, u, o).reshape(x2.shape[0], -1)
            grads_w[k] = x2.T @ grad_u
            if self.masks[k] is not None:
                grads_w[k] *= self.masks[k]
            grads_b[k] = grad_u.sum(axis=0)
            if k > 0:
                grad_o = (grad_u @ self.weights[k].T).reshape(n_steps, -1, x2.shape[1])
        return grads_w, grads_b

    # -------------------------------------------------------------- optimizer
    def adam_step(self, grads_w: list, grads_b: list, lr: float = 1e-3) -> None:
        """One Adam step (no weight decay), in place, as evsim's ``Optimizer("adam")``."""
        self.steps += 1
        beta1, beta2 = self.betas
        bias1, bias2 = 1.0 - beta1 ** self.steps, 1.0 - beta2 ** self.steps
        for param, grad, m, v in zip(self.weights + self.biases, grads_w + grads_b, self._m, self._v):
            m *= beta1
            m += (1.0 - beta1) * grad
            v *= beta2
            v += (1.0 - beta2) * (grad * grad)
            denom = np.sqrt(v / bias2)
            denom += self.eps
            param -= (lr / bias1) * m / denom

    # ------------------------------------------------------------ whole steps
    def train_step(self, x: np.ndarray, labels: np.ndarray, lr: float = 1e-3) -> float:
        """Forward, MSE-on-rates loss, BPTT and an Adam step on one batch; returns the loss."""
        counts, traces = self.forward(x)
        loss, grad_counts = mse_rate(counts, labels, x.shape[0])
        grads_w, grads_b = self.backward(traces, grad_counts)
        self.adam_step(grads_w, grads_b, lr)
        return loss

    def infer(self, x: np.ndarray) -> np.ndarray:
        """Output spike counts ``[B, n_out]``."""
        counts, _ = self.forward(x)
        return counts
