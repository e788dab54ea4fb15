"""Static-input encodings (rate, direct) against their definitions."""
import numpy as np
import pytest

from evsim.data.encoding import encode_batch, encode_events
from evsim.errors import ConfigError
from evsim.kernels.events import StaticDrive, dense_to_events


def test_rate_coding_spikes_with_the_intensity_as_probability(rng):
    """Each step draws a Bernoulli spike with p = intensity: p = 0 never, p = 1 always,
    and over many steps the spike frequency is p; steps are independent draws."""
    p = np.array([[0.0, 0.1, 0.5, 0.9, 1.0], [1.0, 0.25, 0.0, 0.75, 0.5]], np.float32)
    spikes = encode_batch(p, "rate", 4000, rng)
    assert spikes.shape == (4000, 2, 5) and spikes.dtype == np.float32
    assert set(np.unique(spikes).tolist()) <= {0.0, 1.0}
    assert not spikes[:, p == 0].any() and spikes[:, p == 1].all()
    np.testing.assert_allclose(spikes.mean(axis=0), p, atol=0.03)
    # independent steps: a p = 0.5 cell agrees with its previous step half of the time
    half = spikes[:, p == 0.5]
    assert np.mean(half[1:] == half[:-1]) == pytest.approx(0.5, abs=0.05)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rate_events_are_the_spikes_of_their_draws(rng, dtype):
    """encode_events draws one number per step for the nonzero cells only, in sample then
    cell order: the same draws thresholded into a dense array give the same events, in
    slot and index order (zeros and p = 1 included; one sample all zeros; values outside
    [0, 1] are refused, see tests/test_api.py)."""
    import copy

    x = (rng.random((5, 3, 7)) * (rng.random((5, 3, 7)) < 0.4)).astype(dtype)
    x[2] = 0
    x[0, 0, :2] = (0.0, 1.0)
    draws_rng = copy.deepcopy(rng)
    events = encode_events(x, "rate", 6, rng)
    flat = x.reshape(5, 21)
    cells = np.flatnonzero(flat)
    draws = draws_rng.random((6, cells.size), dtype=np.float32)
    dense = np.zeros((6, 5, 21), np.float32)
    dense.reshape(6, -1)[:, cells] = draws < flat.ravel()[cells]
    oracle = dense_to_events(dense)
    for mine, want in zip(events[:3], oracle[:3]):
        np.testing.assert_array_equal(mine, want)
        assert mine.dtype == want.dtype
    assert (events.n_steps, events.batch) == (6, 5) and events.count > 0


def test_rate_coding_flattens_images(rng):
    images = np.ones((3, 1, 2, 2), np.float32)
    assert encode_batch(images, "rate", 2, rng).shape == (2, 3, 4)


def test_direct_coding_repeats_the_values_at_every_step(rng):
    x = np.arange(2 * 5, dtype=np.float64).reshape(2, 5) / 7 - 0.3
    out = encode_batch(x, "direct", 3, rng)
    assert out.shape == (3, 2, 5) and out.dtype == np.float32 and out.flags.c_contiguous
    for t in range(3):
        np.testing.assert_array_equal(out[t], x.astype(np.float32))
    drive = encode_events(x, "direct", 3, rng)  # the values once: the same at every step
    assert isinstance(drive, StaticDrive) and (drive.n_steps, drive.batch) == (3, 2)
    np.testing.assert_array_equal(drive.values, x.astype(np.float32))


def test_frames_step_t_of_sample_b_is_row_t_b(rng):
    frames = rng.integers(0, 3, (2, 3, 4)).astype(np.uint8)  # [B, T, D], B != T
    out = encode_batch(frames, "frames", 3, rng)
    assert out.shape == (3, 2, 4) and out.dtype == np.uint8
    for t in range(3):
        for b in range(2):
            np.testing.assert_array_equal(out[t, b], frames[b, t])


def test_unknown_encoding(rng):
    with pytest.raises(ConfigError, match="unknown encoding 'poisson'; choose rate, direct or frames"):
        encode_batch(np.zeros((1, 2), np.float32), "poisson", 2, rng)
