"""Frames stored as events (SparseFrames) against the dense frames they hold."""
import numpy as np
import pytest

from evsim.data.encoding import encode_batch, encode_events
from evsim.data.frames import SparseFrames
from evsim.errors import ConfigError, DataError
from evsim.kernels.events import dense_to_events, gather_events


def count_frames(rng, n=5, n_steps=3, shape=(2, 3, 4), dtype=np.uint8):
    return ((rng.random((n, n_steps) + shape) < 0.3) * rng.integers(1, 4, (n, n_steps) + shape)).astype(dtype)


def test_gather_events_copies_the_chosen_rows(rng):
    store = dense_to_events(((rng.random((1, 6, 9)) < 0.4) * 3).astype(np.uint8))
    rows = np.array([5, 0, 0, 3], dtype=np.int64)
    got = gather_events(store.ptr, store.idx, store.val.astype(np.uint16), rows, 2, 2)
    for s, r in enumerate(rows):
        np.testing.assert_array_equal(got.idx[got.ptr[s]:got.ptr[s + 1]], store.idx[store.ptr[r]:store.ptr[r + 1]])
        np.testing.assert_array_equal(got.val[got.ptr[s]:got.ptr[s + 1]], store.val[store.ptr[r]:store.ptr[r + 1]])
    assert got.val.dtype == np.float32 and (got.n_steps, got.batch) == (2, 2)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_round_trip_shape_and_type(rng, dtype):
    dense = count_frames(rng, dtype=dtype)
    frames = SparseFrames.from_dense(dense)
    assert frames.shape == dense.shape and frames.dtype == dtype and len(frames) == 5
    np.testing.assert_array_equal(frames.to_dense(), dense)
    np.testing.assert_array_equal(frames[3], dense[3])
    assert frames.val.size == np.count_nonzero(dense)


def test_selection_takes_samples_in_order_without_copying(rng):
    dense = count_frames(rng)
    frames = SparseFrames.from_dense(dense)
    pick = frames[[4, 1, 1]][1:]
    assert pick.idx is frames.idx and len(pick) == 2
    np.testing.assert_array_equal(pick.to_dense(), dense[[1, 1]])
    np.testing.assert_array_equal(frames[2:4].to_dense(), dense[2:4])


@pytest.mark.parametrize("order", [[0, 1, 2, 3, 4], [4, 2, 0], [3]])
def test_batch_events_equal_the_dense_path(rng, order):
    """What training feeds the first layer: identical to encoding the dense frames."""
    dense = count_frames(rng)
    sparse = encode_events(SparseFrames.from_dense(dense)[order], "frames", 3, rng)
    oracle = dense_to_events(encode_batch(dense[order], "frames", 3, rng))
    for a, b in zip(sparse[:3], oracle[:3]):
        np.testing.assert_array_equal(a, b)
    assert (sparse.n_steps, sparse.batch) == (3, len(order))


def test_wrong_time_steps_and_encoding_are_refused(rng):
    frames = SparseFrames.from_dense(count_frames(rng))
    with pytest.raises(ConfigError, match="3 time steps but 4"):
        encode_events(frames, "frames", 4, rng)
    with pytest.raises(ConfigError, match="frames encoding"):
        encode_events(frames, "rate", 3, rng)


def test_inconsistent_store_is_a_data_error(rng):
    frames = SparseFrames.from_dense(count_frames(rng))
    with pytest.raises(DataError, match="delete the cache folder"):
        SparseFrames(frames.ptr[:-1], frames.idx, frames.val, 3, (2, 3, 4))
    with pytest.raises(DataError, match="inconsistent"):
        SparseFrames(frames.ptr, frames.idx[:-1], frames.val, 3, (2, 3, 4))


def test_a_store_of_partial_samples_is_a_data_error():
    """5 frame rows with T = 2: two samples and half of a third."""
    ptr = np.arange(6, dtype=np.int64)
    idx = np.zeros(5, dtype=np.int32)
    with pytest.raises(DataError, match=r"inconsistent \(ptr of 6, 5 indices, 5 values, T = 2\)"):
        SparseFrames(ptr, idx, np.ones(5, np.uint8), 2, (1, 1, 1))
    assert len(SparseFrames(ptr[:5], idx[:4], np.ones(4, np.uint8), 2, (1, 1, 1))) == 2


def store(ptr, idx, n_steps=2):
    """A store of 1 x 2 x 2 frames (4 cells) with every count 1."""
    ptr = np.asarray(ptr, dtype=np.int64)
    idx = np.asarray(idx, dtype=np.int32)
    return SparseFrames(ptr, idx, np.ones(len(idx), np.uint8), n_steps, (1, 2, 2))


def test_check_accepts_every_cell_and_refuses_events_outside_their_frames():
    store([0, 1, 3], [0, 0, 3]).check()  # cells 0..3
    for ptr, idx, n_steps in (([0, 1, 3], [0, 0, 4], 2),  # one past the last cell
                              ([0, 1, 3], [0, -1, 3], 2),  # negative
                              ([0, 2, 1, 3], [0, 1, 2], 3),  # ptr falls: row 1 would end before it starts
                              ([1, 2, 3], [0, 1, 2], 2)):  # ptr does not start at 0
        with pytest.raises(DataError, match="events outside their frames of 4 cells"):
            store(ptr, idx, n_steps).check()
    with pytest.raises(DataError, match="outside their frames"):  # index types are part of the contract
        SparseFrames(np.array([0, 1, 1]), np.array([0], np.int64), np.ones(1), 2, (1, 2, 2)).check()


@pytest.mark.parametrize("peak,dtype", [(255, np.uint8), (256, np.uint16), (65535, np.uint16),
                                        (65536, np.float32)])
def test_frame_writer_picks_the_smallest_type_at_its_limit(tmp_path, peak, dtype):
    from evsim.data.frames import SparseFrameWriter

    frames = np.zeros((2, 1, 1, 3))
    frames[0, 0, 0, 1] = peak
    frames[1, 0, 0, 2] = 1
    writer = SparseFrameWriter(tmp_path, "s", 1, 2)
    writer.put(frames)
    assert writer.close() == np.dtype(dtype).name
    val = np.load(tmp_path / "s_val.npy")
    assert val.dtype == dtype and val.tolist() == [peak, 1]


@pytest.mark.parametrize("value", [-1.0, 2.5])
def test_frame_writer_keeps_negative_or_fractional_values_as_float32(tmp_path, value):
    from evsim.data.frames import SparseFrameWriter

    frames = np.array([[[[value, 3.0]]], [[[0.0, 1.0]]]])
    writer = SparseFrameWriter(tmp_path, "s", 1, 2)
    writer.put(frames)
    assert writer.close() == "float32"
    stored = SparseFrames(*(np.load(tmp_path / f"s_{part}.npy") for part in ("ptr", "idx", "val")), 2, (1, 1, 2))
    np.testing.assert_array_equal(stored.to_dense()[0], frames.astype(np.float32))
