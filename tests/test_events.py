import numpy as np
import pytest

from evsim.kernels.events import EventsByRow, _group_by_row, all_finite, dense_to_events, group_by_row


def test_dense_to_events_roundtrip(rng):
    dense = (rng.random((4, 3, 11)) < 0.3) * rng.integers(1, 5, (4, 3, 11))
    dense = dense.astype(np.float32)
    events = dense_to_events(dense)
    back = np.zeros_like(dense).reshape(12, 11)
    for s in range(12):
        sl = slice(events.ptr[s], events.ptr[s + 1])
        assert np.all(np.diff(events.idx[sl]) > 0)
        back[s, events.idx[sl]] = events.val[sl]
    np.testing.assert_array_equal(back.reshape(dense.shape), dense)
    assert events.count == np.count_nonzero(dense)


@pytest.mark.parametrize("n", [1, 8, 63, 64, 65, 130, 800])
@pytest.mark.parametrize("activity", [0.0, 0.05, 0.5, 1.0])
def test_bit_cells_give_the_same_events_as_the_scalar_path(rng, n, activity):
    """The 64-cells-per-step path for uint8, bool and float32 cells (any width: the last
    block of a row is partial) equals the scalar path (float64 cells) on the same values."""
    counts = ((rng.random((3, 4, n)) < activity) * rng.integers(1, 200, (3, 4, n))).astype(np.uint8)
    index_map = (3 * np.arange(n) + 1).astype(np.int32)
    expected = dense_to_events(counts.astype(np.float64), index_map)
    for cells in (counts, counts > 0, counts.astype(np.float32) / 7):
        got = dense_to_events(cells, index_map)
        np.testing.assert_array_equal(got.ptr, expected.ptr)
        np.testing.assert_array_equal(got.idx, expected.idx)
        values = expected.val / 7 if cells.dtype == np.float32 else expected.val
        np.testing.assert_array_equal(got.val, values if cells.dtype != np.bool_ else expected.val > 0)


def test_float_cells_nonzero_as_not_equal_has_it():
    """-0.0 is no event, NaN, infinities and the smallest subnormal are, on both paths."""
    row = np.array([0.0, -0.0, np.nan, 1e-45, -np.inf, 0.0, 2.5] * 10, dtype=np.float32)
    for cells in (row, row.astype(np.float64)):
        events = dense_to_events(cells.reshape(1, 1, -1))
        np.testing.assert_array_equal(events.idx, np.flatnonzero(row != 0))
        np.testing.assert_array_equal(events.val, row[row != 0])


def test_index_map_and_uint8_spikes(rng):
    spikes = (rng.random((2, 2, 4)) < 0.5).astype(np.uint8)
    events = dense_to_events(spikes, np.array([1, 5, 6, 9], dtype=np.int32))
    assert set(events.idx.tolist()) <= {1, 5, 6, 9}
    assert np.all(events.val == 1)


@pytest.mark.parametrize("n_chunks", [1, 2, 3, 7])
def test_group_by_row_is_a_transpose(rng, n_chunks):
    """Any split of the slots into parallel runs (7 runs > 6 slots: some runs empty)."""
    dense = ((rng.random((3, 2, 7)) < 0.4) * rng.random((3, 2, 7))).astype(np.float32)
    events = dense_to_events(dense)
    by_row = EventsByRow(*_group_by_row(events.ptr, events.idx, events.val, 7, n_chunks))
    flat = dense.reshape(6, 7)
    for i in range(7):
        sl = slice(by_row.row_ptr[i], by_row.row_ptr[i + 1])
        np.testing.assert_array_equal(by_row.slot[sl], np.flatnonzero(flat[:, i]))
        np.testing.assert_array_equal(by_row.val[sl], flat[flat[:, i] != 0, i])


@pytest.mark.parametrize("n_chunks", [1, 2, 7])
def test_group_by_row_of_unit_events_moves_no_values(rng, n_chunks):
    """Spikes (every value 1): the same transpose, ``val`` None; any other value keeps them."""
    spikes = (rng.random((3, 2, 7)) < 0.4).astype(np.uint8)
    events = dense_to_events(spikes)
    by_row = group_by_row(events, 7)
    assert by_row.val is None
    expected = EventsByRow(*_group_by_row(events.ptr, events.idx, events.val, 7, n_chunks))
    np.testing.assert_array_equal(by_row.row_ptr, expected.row_ptr)
    np.testing.assert_array_equal(by_row.slot, expected.slot)
    row_ptr, slot, val = _group_by_row(events.ptr, events.idx, None, 7, n_chunks)
    np.testing.assert_array_equal(slot, expected.slot)
    assert val.size == 0
    counts = events._replace(val=events.val * np.where(rng.random(events.count) < 0.5, 1, 2).astype(np.float32))
    if np.any(counts.val != 1):
        np.testing.assert_array_equal(group_by_row(counts, 7).val,
                                      EventsByRow(*_group_by_row(counts.ptr, counts.idx, counts.val, 7, 1)).val)


@pytest.mark.parametrize("n_chunks", [1, 2, 3, 5])
def test_group_by_row_with_skewed_rows(rng, n_chunks):
    """Runs of rows of equal events when the events crowd into a few rows: most of them
    in row 3, the rest in rows 0 and 6 (runs with no rows at all, runs of one row)."""
    dense = np.zeros((4, 5, 7), np.float32)
    dense[:, :, 3] = 1
    dense[rng.random((4, 5)) < 0.5, 0] = 2
    dense[0, 1, 6] = 3
    events = dense_to_events(dense)
    row_ptr, slot, val = _group_by_row(events.ptr, events.idx, events.val, 7, n_chunks)
    flat = dense.reshape(20, 7)
    assert slot.dtype == np.int32
    for i in range(7):
        np.testing.assert_array_equal(slot[row_ptr[i]:row_ptr[i + 1]], np.flatnonzero(flat[:, i]))
        np.testing.assert_array_equal(val[row_ptr[i]:row_ptr[i + 1]], flat[flat[:, i] != 0, i])


@pytest.mark.parametrize("n_chunks", [1, 2, 3])
def test_group_by_row_of_unsorted_slots(rng, n_chunks):
    """A slot's indices need not ascend: every run still takes exactly its rows' events."""
    ptr = np.array([0, 6, 6, 11, 14], dtype=np.int64)
    idx = np.array([5, 0, 3, 6, 1, 2, 6, 6, 0, 4, 2, 3, 0, 5], dtype=np.int32)
    val = rng.integers(1, 5, idx.size).astype(np.float32)
    row_ptr, slot, out_val = _group_by_row(ptr, idx, val, 7, n_chunks)
    slot_of = np.repeat(np.arange(4), np.diff(ptr))
    for i in range(7):
        mine = np.flatnonzero(idx == i)  # in event order, hence in slot order
        np.testing.assert_array_equal(slot[row_ptr[i]:row_ptr[i + 1]], slot_of[mine])
        np.testing.assert_array_equal(out_val[row_ptr[i]:row_ptr[i + 1]], val[mine])


def test_group_by_row_runs_one_run_per_thread(rng, monkeypatch):
    import evsim.kernels.events as ev

    calls = []
    real = ev._group_by_row
    monkeypatch.setattr(ev, "_group_by_row", lambda *args: calls.append(args[-1]) or real(*args))
    monkeypatch.setattr(ev.numba, "get_num_threads", lambda: 2)
    events = dense_to_events((rng.random((4, 5, 10)) < 0.5).astype(np.float32))
    by_row = ev.group_by_row(events, 10)
    assert calls == [2]
    assert np.array_equal(by_row.slot, real(*events[:3], 10, 1)[1])


def test_no_events_at_all():
    events = dense_to_events(np.zeros((3, 2, 5), dtype=np.float32))
    assert events.count == 0 and events.ptr.shape == (7,)
    by_row = group_by_row(events, 5)
    assert by_row.row_ptr.tolist() == [0] * 6


def test_full_empty_and_last_column_slots():
    dense = np.zeros((1, 4, 5), np.float32)
    dense[0, 0] = [1, 2, 3, 4, 5]  # every cell
    dense[0, 2, 4] = -0.5  # only the last column
    dense[0, 3, 0] = 7.0  # only the first column
    events = dense_to_events(dense)
    assert events.ptr.tolist() == [0, 5, 5, 6, 7]
    assert events.idx.tolist() == [0, 1, 2, 3, 4, 4, 0]
    assert events.val.tolist() == [1, 2, 3, 4, 5, -0.5, 7]


@pytest.mark.parametrize("activity", [0.0, 0.02, 0.3, 1.0])
def test_byte_spikes_take_the_bit_mask_fill(rng, activity):
    """uint8 spikes use the 64-cell bit-mask fill: same events as the dense definition,
    including a slot's very last cell and runs across 8-cell boundaries."""
    spikes = (rng.random((5, 4, 24)) < activity).astype(np.uint8)
    spikes[0, 0] = 0
    spikes[0, 1, -1] = 1  # only the very last cell
    spikes[0, 2, 16:] = 1  # the whole last word
    spikes[0, 3, 5:11] = 1  # straddles two words
    index_map = (np.arange(24) * 2 + 1).astype(np.int32)
    events = dense_to_events(spikes, index_map)
    flat = spikes.reshape(20, 24)
    assert events.ptr.tolist() == [0] + np.cumsum(flat.sum(axis=1)).tolist()
    for s in range(20):
        sl = slice(events.ptr[s], events.ptr[s + 1])
        np.testing.assert_array_equal(events.idx[sl], index_map[np.flatnonzero(flat[s])])
    assert np.all(events.val == 1)


def test_all_finite_finds_any_nan_or_infinity(rng):
    """Every kind of non-finite float32 anywhere (first, last, a middle row), none in
    finite values however large or small, and an empty array."""
    values = rng.normal(size=(5, 3, 37)).astype(np.float32)
    values[0, 0, 0], values[4, 2, 36] = np.float32(3.4e38), np.float32(1e-45)
    assert all_finite(values) and all_finite(np.zeros((0, 3, 4), np.float32))
    for bad in (np.nan, np.inf, -np.inf):
        for where in ((0, 0, 0), (2, 1, 17), (4, 2, 36)):
            broken = values.copy()
            broken[where] = bad
            assert not all_finite(broken)
