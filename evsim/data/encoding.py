"""Turn a batch of stored inputs into the first layer's events.

:func:`encode_events` is what training and evaluation call. Frames stored as events
(:class:`~evsim.data.frames.SparseFrames`) become a batch by copying their rows;
direct (analog) input, the same at every step, stays one ``[B, D]`` array
(:class:`~evsim.kernels.events.StaticDrive`); rate-coded input becomes events straight
from the Bernoulli draws of its nonzero cells. :func:`encode_batch` is the dense
``[T, B, D]`` twin of each encoding.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from evsim.data.frames import SparseFrames
from evsim.errors import ConfigError
from evsim.kernels.events import Events, StaticDrive, _bernoulli_events, dense_to_events


class SampleSeeds(NamedTuple):
    """Rate coding that draws each sample's spikes from a generator of its own, seeded
    ``[*key, index]`` (``index``: the sample's place in its split; the batch's first is
    ``first``): the same spikes whatever the batch size, and for one sample drawn alone
    as inside a batch. Evaluation encodes so; training draws from one stream."""

    key: tuple[int, ...]
    first: int = 0


def encode_events(inputs, encoding: str, time_steps: int,
                  rng: np.random.Generator | SampleSeeds) -> Events | StaticDrive:
    """The events of a batch for ``time_steps`` simulation steps (for direct encoding, the
    batch's values once, as a :class:`StaticDrive`).

    Parameters
    ----------
    inputs : :class:`SparseFrames` of B samples, or an array as for :func:`encode_batch`.
    encoding, time_steps : as for :func:`encode_batch`.
    rng : rate coding's draws: one generator for the batch, or :class:`SampleSeeds`.

    Raises
    ------
    ConfigError
        For an unknown encoding, ``time_steps`` not a whole number >= 1, or frames framed
        for another number of time steps.
    """
    if isinstance(time_steps, (bool, np.bool_)) or not isinstance(time_steps, (int, np.integer)) or time_steps < 1:
        raise ConfigError(f"time_steps must be a whole number >= 1, got {time_steps!r}")
    if isinstance(inputs, SparseFrames):
        if encoding != "frames":
            raise ConfigError(f"stored frames need the frames encoding, not {encoding!r}")
        _check_frame_steps(inputs.n_steps, time_steps)
        return inputs.events()
    if encoding == "direct":
        return StaticDrive(np.ascontiguousarray(inputs.reshape(inputs.shape[0], -1), dtype=np.float32), time_steps)
    if encoding == "rate":
        return _rate_events(inputs.reshape(inputs.shape[0], -1), time_steps, rng)
    return dense_to_events(encode_batch(inputs, encoding, time_steps, rng))


def _rate_events(intensities: np.ndarray, time_steps: int, rng: np.random.Generator | SampleSeeds) -> Events:
    """Bernoulli spikes (p = intensity) of a ``[B, D]`` batch for T steps, drawn only for the
    cells that are not 0, which never fire: a fifth of MNIST's. Drawing every cell into a
    dense ``[T, B, D]`` array and turning that into events took 9.1 ms per batch of 100
    digits, T = 20, longer than the forward and backward passes together; this, 2.3-2.9 ms."""
    batch, width = intensities.shape
    if intensities.size and not (intensities.min() >= 0 and intensities.max() <= 1):  # NaN fails both
        raise ConfigError(f"rate coding needs intensities in [0, 1] (the chance of a spike per step), got values "
                          f"from {intensities.min()} to {intensities.max()}; scale the inputs to [0, 1] first")
    sample, cell = np.divmod(np.flatnonzero(intensities), width)  # by sample, then cell
    starts = np.searchsorted(sample, np.arange(batch + 1))
    if isinstance(rng, SampleSeeds):
        draws = np.empty((time_steps, sample.size), dtype=np.float32)
        for b in range(batch):
            own = np.random.default_rng([*rng.key, rng.first + b])
            draws[:, starts[b]:starts[b + 1]] = own.random((time_steps, starts[b + 1] - starts[b]), dtype=np.float32)
    else:
        draws = rng.random((time_steps, sample.size), dtype=np.float32)
    ptr, idx = _bernoulli_events(draws, intensities[sample, cell], cell.astype(np.int32), starts)
    return Events(ptr, idx, np.ones(idx.size, dtype=np.float32), time_steps, batch)


def _check_frame_steps(stored: int, time_steps: int) -> None:
    if stored != time_steps:
        raise ConfigError(f"frames have {stored} time steps but {time_steps} were asked for; "
                          "reload the dataset with the same --time-steps")


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
        _check_frame_steps(inputs.shape[1], time_steps)
        flat = inputs.reshape(batch, time_steps, -1)
        # Counts keep their stored integer type: a quarter of the bytes to move, and
        # one-byte cells convert to events 64 at a time (dense_to_events).
        return np.ascontiguousarray(flat.transpose(1, 0, 2))
    raise ConfigError(f"unknown encoding {encoding!r}; choose rate, direct or frames")
