"""Turn a batch of stored inputs into the dense ``[T, B, D]`` drive of the first layer.

The result is converted to event lists by :func:`evsim.kernels.events.dense_to_events`;
cells that are zero produce no event.
"""
from __future__ import annotations

import numpy as np

from evsim.errors import ConfigError


def encode_batch(inputs: np.ndarray, encoding: str, time_steps: int, rng: np.random.Generator) -> np.ndarray:
    """Encode a batch for ``time_steps`` simulation steps.

    Parameters
    ----------
    inputs : ndarray
        ``[B, D]`` intensities (``"rate"``, ``"direct"``) or ``[B, T, ...]`` count
        frames (``"frames"``).
    encoding : ``"rate"`` (Bernoulli spikes, p = intensity), ``"direct"`` (analog value
        repeated each step) or ``"frames"`` (counts, frame t at step t).
    time_steps : T.
    rng : random generator for rate coding (explicit, so runs are reproducible).

    Returns
    -------
    ndarray
        ``[T, B, D]``, C-contiguous: float32, or for ``"frames"`` the frames' own
        type (uint8/uint16 counts as stored, or float32).
    """
    batch = inputs.shape[0]
    if encoding == "rate":
        flat = inputs.reshape(batch, -1)
        draws = rng.random((time_steps, batch, flat.shape[1]), dtype=np.float32)
        return (draws < flat[None]).astype(np.float32)
    if encoding == "direct":
        flat = inputs.reshape(batch, -1).astype(np.float32)
        return np.ascontiguousarray(np.broadcast_to(flat[None], (time_steps,) + flat.shape))
    if encoding == "frames":
        if inputs.shape[1] != time_steps:
            raise ConfigError(
                f"frames have {inputs.shape[1]} time steps but {time_steps} were asked for; "
                "reload the dataset with the same --time-steps"
            )
        flat = inputs.reshape(batch, time_steps, -1)
        # Counts keep their stored integer type: a quarter of the bytes to move, and
        # one-byte cells convert to events 8 at a time (dense_to_events).
        return np.ascontiguousarray(flat.transpose(1, 0, 2))
    raise ConfigError(f"unknown encoding {encoding!r}; choose rate, direct or frames")
