"""Losses on output spike counts; each returns ``(loss, dL/dcounts)``.

The network's output is the spike count ``c[b, k]`` of output neuron k over T steps;
its firing rate is ``c / T``.
"""
from __future__ import annotations

import numpy as np

from evsim.errors import ConfigError, ShapeError

LOSSES = ("mse", "ce")


def check_loss_args(counts: np.ndarray, labels: np.ndarray, n_steps: int) -> None:
    """Refuse what a loss cannot mean: ``counts`` not real, finite ``[B, classes]`` with
    B >= 1 (a mean over no samples), ``labels`` not ``B`` class indices (NumPy would read
    -1 as the last class), ``n_steps`` below 1.

    Raises
    ------
    ShapeError
        Naming the argument and what it must be.
    """
    if (not isinstance(counts, np.ndarray) or counts.ndim != 2 or counts.dtype.kind not in "fiub"
            or not np.all(np.isfinite(counts))):
        raise ShapeError(f"counts must be a finite array [batch, classes] of real numbers, got {_described(counts)}")
    if counts.shape[0] == 0:
        raise ShapeError("counts hold no samples (batch 0): a loss is a mean over at least one sample")
    labels = np.asarray(labels)
    if labels.shape != counts.shape[:1] or labels.dtype.kind not in "iu":
        raise ShapeError(f"labels must be {counts.shape[0]} integer class indices (one per row of counts), got "
                         f"{_described(labels)}")
    if labels.size and (labels.min() < 0 or labels.max() >= counts.shape[1]):
        raise ShapeError(f"labels run {labels.min()}..{labels.max()}, outside the {counts.shape[1]} classes "
                         f"0..{counts.shape[1] - 1} of counts")
    if isinstance(n_steps, (bool, float)) or not isinstance(n_steps, (int, np.integer)) or n_steps < 1:
        raise ShapeError(f"n_steps must be the whole number of time steps the counts were taken over, >= 1, got "
                         f"{n_steps!r}")


def _described(value) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} {value.shape}" + ("" if value.dtype.kind not in "fc" or np.all(np.isfinite(value))
                                                 else " holding NaN or infinite values")
    return type(value).__name__


def mse_rate(counts: np.ndarray, labels: np.ndarray, n_steps: int) -> tuple[float, np.ndarray]:
    """Mean squared error between firing rates and one-hot targets (the SD-SNN loss).

    ``L = mean_{b,k} (c[b,k] / T - onehot[b,k])^2`` (PyTorch ``MSELoss`` mean).
    """
    check_loss_args(counts, labels, n_steps)
    batch, n_classes = counts.shape
    diff = counts / np.float32(n_steps)
    diff[np.arange(batch), labels] -= 1.0
    loss = float(np.mean(diff * diff))
    grad = (2.0 / (batch * n_classes * n_steps)) * diff
    return loss, grad.astype(np.float32)


def cross_entropy(counts: np.ndarray, labels: np.ndarray, n_steps: int) -> tuple[float, np.ndarray]:
    """Softmax cross-entropy with the spike counts as logits, averaged over the batch."""
    check_loss_args(counts, labels, n_steps)
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
