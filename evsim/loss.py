"""Losses on output spike counts; each returns ``(loss, dL/dcounts)``.

The network's output is the spike count ``c[b, k]`` of output neuron k over T steps;
its firing rate is ``c / T``.
"""
from __future__ import annotations

import numpy as np

from evsim.errors import ConfigError

LOSSES = ("mse", "ce")


def mse_rate(counts: np.ndarray, labels: np.ndarray, n_steps: int) -> tuple[float, np.ndarray]:
    """Mean squared error between firing rates and one-hot targets (the SD-SNN loss).

    ``L = mean_{b,k} (c[b,k] / T - onehot[b,k])^2`` (PyTorch ``MSELoss`` mean).
    """
    batch, n_classes = counts.shape
    diff = counts / np.float32(n_steps)
    diff[np.arange(batch), labels] -= 1.0
    loss = float(np.mean(diff * diff))
    grad = (2.0 / (batch * n_classes * n_steps)) * diff
    return loss, grad.astype(np.float32)


def cross_entropy(counts: np.ndarray, labels: np.ndarray, n_steps: int) -> tuple[float, np.ndarray]:
    """Softmax cross-entropy with the spike counts as logits, averaged over the batch."""
    batch = counts.shape[0]
    logits = counts - counts.max(axis=1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    loss = float(-log_probs[np.arange(batch), labels].mean())
    grad = np.exp(log_probs)
    grad[np.arange(batch), labels] -= 1.0
    return loss, (grad / batch).astype(np.float32)


def get_loss(name: str):
    """The loss function called ``name`` (``"mse"`` or ``"ce"``)."""
    if name == "mse":
        return mse_rate
    if name == "ce":
        return cross_entropy
    raise ConfigError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
