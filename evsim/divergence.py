"""Stopping a run whose numbers left float32's range, before a save writes them.

A NaN or infinite weight does not make the loss NaN: its neuron's potential is NaN,
which never crosses the threshold, so the layer falls silent, the loss stays finite
and training would go on to save a network that cannot run. So the loss and the biases
are checked after every batch, the weights after every ``WEIGHT_CHECK_EVERY``-th
batch and before anything is evaluated or saved (:func:`check_finite_training`), and
the run stops with one line saying what to change; the checkpoints on disk hold the
last finished epoch, which was checked the same way.
"""
from __future__ import annotations

import math

import numpy as np

from evsim.errors import ConfigError


# Checking the weights costs one pass over them (0.3 ms for N-MNIST's 1.85 million
# synapses, against 5-8 ms for a training batch): every 16th batch costs 0.3 %.
WEIGHT_CHECK_EVERY = 16


class TrainingDiverged(ConfigError):
    """The loss, a weight or a bias became NaN or infinite during training."""


def first_non_finite(network, weights: bool = True) -> str | None:
    """What in ``network`` is not finite (``"layer 0's weights"``), or None; with
    ``weights`` False, the biases only.

    Every layer's trainable arrays are its :meth:`~evsim.layers.base.Layer.parameters`:
    the weights (CSR data, or ``[nnz, K, K]`` kernels of a convolution) first, then the
    biases; a pooling layer has none. A float32 sum is NaN or infinite when one value
    is, and also when the values are so large (about 1e32 each) that training has
    diverged anyway.
    """
    with np.errstate(all="ignore"):  # inf + -inf is the NaN looked for, not a problem to warn of
        for k, layer in enumerate(network.layers):
            for index, (values, _) in enumerate(layer.parameters()):
                name = _PARAMETER_NAMES[index] if index < len(_PARAMETER_NAMES) else f"parameter {index}"
                if index == 0 and not weights:
                    continue
                if not np.isfinite(np.sum(values)):
                    return f"layer {k}'s {name}"
    return None


_PARAMETER_NAMES = ("weights", "biases")


def check_finite_training(network, loss: float, where: str, lr: float, lr_given: float, epochs_kept: int,
                          weights: bool = True) -> None:
    """Raise :class:`TrainingDiverged` unless ``loss`` and every bias (and, with
    ``weights``, every weight) are finite.

    Parameters
    ----------
    where : the place in training, for the message (``"epoch 3/12, batch 8 of 40"``).
    lr : the learning rate in use there (the schedule's), for the message.
    lr_given : the run's ``--lr``.
    epochs_kept : the finished epochs the run folder keeps (0: none finished).

    Raises
    ------
    TrainingDiverged
        One line: what became non-finite, where, and what to change.
    """
    what = None if math.isfinite(loss) else f"the loss ({loss})"
    what = what or first_non_finite(network, weights)
    if what is None:
        return
    kept = f"the run folder keeps epoch {epochs_kept}" if epochs_kept else "no epoch had finished, so none is kept"
    # Below the rate that diverged, not below --lr: a warm-up has it lower than --lr.
    in_use = f", {lr:g} in use there" if lr != lr_given else ""
    raise TrainingDiverged(f"training diverged at {where}: {what} became NaN or infinite; nothing of this state "
                           f"is saved ({kept}); start a new run with a lower --lr (it is {lr_given:g}{in_use}), "
                           f"e.g. {min(lr, lr_given) / 10:g}")
