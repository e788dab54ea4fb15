"""16-lane vectors (evsim.kernels.simd) against NumPy."""
from __future__ import annotations

import ctypes
import mmap
import platform
import sys

import numpy as np
import pytest
from numba import njit

from evsim.aligned import aligned_empty
from evsim.kernels.simd import (
    LANES,
    all_zero,
    even_lanes,
    interleave_high,
    interleave_low,
    load_bytes,
    odd_lanes,
    upper_halves,
    fma,
    gather,
    greater,
    load,
    lowest_bit,
    nonzero_bits,
    popcount,
    scatter,
    splat,
    store,
    store_byte_pairs,
    store_bytes,
    stream,
    stream_fence,
    transpose16,
)


@njit(cache=False)
def _copy(source, offset, n, target, target_offset):
    store(target, target_offset, load(source, offset, n), n)


@njit(cache=False)
def _axpy(scale, x, y, out, n):
    """``out[:n] = scale * x[:n] + y[:n]`` through one vector each."""
    store(out, 0, scale * load(x, 0, n) + load(y, 0, n), n)


@njit(cache=False)
def _bits(cells, offset, n):
    """The nonzero mask of ``n`` cells at ``offset``, its popcount and its set bits, low first."""
    bits = nonzero_bits(cells, offset, n)
    count = popcount(bits)
    found = np.empty(count, dtype=np.int64)
    for k in range(count):
        found[k] = lowest_bit(bits)
        bits &= bits - np.uint64(1)
    return count, found


@pytest.mark.parametrize("n", [0, 1, 9, 63, 64])
def test_nonzero_bits_marks_exactly_the_nonzero_cells_among_n(rng, n):
    cells = ((rng.random(200) < 0.4) * rng.integers(1, 256, 200)).astype(np.uint8)
    cells[[7, 8 + 63]] = [255, 1]  # the high bit of a byte, and the 64th cell
    for offset in (0, 8, 13):
        count, found = _bits(cells, offset, n)
        expected = np.flatnonzero(cells[offset:offset + n])
        assert count == expected.size
        np.testing.assert_array_equal(found, expected)


@pytest.mark.parametrize("n", [0, 1, 9, 63, 64])
def test_nonzero_bits_of_float_cells(rng, n):
    """float32 cells: -0.0 is zero, NaN is not (as ``!=`` has it)."""
    cells = ((rng.random(200) < 0.4) * rng.normal(size=200)).astype(np.float32)
    cells[[3, 5, 8 + 63]] = [-0.0, np.nan, 1e-45]
    for offset in (0, 8, 13):
        count, found = _bits(cells, offset, n)
        expected = np.flatnonzero(cells[offset:offset + n] != 0)
        assert count == expected.size
        np.testing.assert_array_equal(found, expected)


def test_lowest_bit_and_popcount_on_the_top_bit():
    cells = np.zeros(64, np.uint8)
    cells[63] = 1
    count, found = _bits(cells, 0, 64)
    assert count == 1 and found.tolist() == [63]


@pytest.mark.parametrize("n", [1, 7, 15, 16])
def test_load_store_move_exactly_n_lanes(n):
    source = np.arange(40, dtype=np.float32)
    target = np.full(40, -1.0, np.float32)
    _copy(source, 5, n, target, 3)
    expected = np.full(40, -1.0, np.float32)
    expected[3:3 + n] = source[5:5 + n]
    np.testing.assert_array_equal(target, expected)  # lanes n..15 neither read into nor written


@pytest.mark.parametrize("n", [3, 16])
def test_vector_arithmetic_is_float32_lane_by_lane(rng, n):
    x, y = rng.standard_normal(LANES).astype(np.float32), rng.standard_normal(LANES).astype(np.float32)
    out = np.zeros(LANES, np.float32)
    _axpy(np.float32(0.3), x, y, out, n)
    np.testing.assert_array_equal(out[:n], np.float32(0.3) * x[:n] + y[:n])
    np.testing.assert_array_equal(out[n:], 0)


@njit(cache=False)
def _streamed_copy(source, target, target_offset, n):
    """``target[target_offset:][:n] = source[:n]`` by :func:`stream`, a vector at a time."""
    for j in range(0, n, LANES):
        stream(target, target_offset + j, load(source, j, min(LANES, n - j)), min(LANES, n - j))
    stream_fence()


@pytest.mark.parametrize("target_offset", [0, 16, 3, 17])
@pytest.mark.parametrize("n", [1, 16, 40, 64])
def test_stream_writes_exactly_n_lanes_on_and_off_cache_lines(rng, target_offset, n):
    """Whole vectors on a cache line go out as non-temporal stores, the rest as masked
    stores: either way exactly the ``n`` lanes change."""
    source = rng.standard_normal(64).astype(np.float32)
    target = aligned_empty((100,))
    target[:] = -7.0
    _streamed_copy(source, target, target_offset, n)
    expected = np.full(100, -7.0, np.float32)
    expected[target_offset:target_offset + n] = source[:n]
    np.testing.assert_array_equal(target, expected)
    if platform.machine().lower() in ("x86_64", "amd64"):
        assert "movntps" in next(iter(_streamed_copy.inspect_asm().values()))


@njit(cache=False)
def _fused(scale, x, y, out):
    """``out = scale * x + y`` by :func:`fma`, ``scale`` a scalar, and ``x * x + y`` by vectors."""
    store(out, 0, fma(scale, load(x, 0, LANES), load(y, 0, LANES)), LANES)
    store(out, LANES, fma(load(x, 0, LANES), load(x, 0, LANES), load(y, 0, LANES)), LANES)


def test_fma_rounds_once():
    """(1 + 2^-12)^2 - 1 = 2^-11 + 2^-24: one rounding keeps the 2^-24, a float32 product
    rounded before the add loses it."""
    x = np.full(LANES, 1 + 2.0 ** -12, np.float32)
    y = np.full(LANES, -1.0, np.float32)
    y[1] = 0.5
    out = np.zeros(2 * LANES, np.float32)
    _fused(np.float32(1 + 2.0 ** -12), x, y, out)
    exact = (np.float64(x) * np.float64(x) + y).astype(np.float32)
    np.testing.assert_array_equal(out[:LANES], exact)
    np.testing.assert_array_equal(out[LANES:], exact)
    assert out[0] == np.float32(2.0 ** -11 + 2.0 ** -24) != x[0] * x[0] + y[0]


@njit(cache=False)
def _gather_add_scatter(array, offset, columns, k, n, gathered):
    """``gathered[:] = array[offset + columns[k:k+n]]`` (zeros past n), then add 1 there."""
    v = gather(array, offset, columns, k, n)
    store(gathered, 0, v, LANES)
    scatter(array, offset, columns, k, v + splat(np.float32(1.0)), n)


@pytest.mark.parametrize("n", [1, 5, 16])
def test_gather_and_scatter_touch_exactly_the_n_indexed_entries(rng, n):
    array = rng.standard_normal((3, 40)).astype(np.float32)
    columns = np.full(24, 39, np.int32)  # lanes past n would all hit column 39 of row 1
    columns[4:4 + n] = rng.choice(40, n, replace=False)
    expected = array.copy()
    expected[1, columns[4:4 + n]] += np.float32(1.0)
    gathered = np.full(LANES, -1.0, np.float32)
    before = array[1, columns[4:4 + n]]
    _gather_add_scatter(array, 40, columns, 4, n, gathered)
    np.testing.assert_array_equal(gathered[:n], before)
    np.testing.assert_array_equal(gathered[n:], 0)  # lanes from n on read nothing
    np.testing.assert_array_equal(array, expected)  # and write nothing


def test_gather_refuses_other_index_arrays():
    from numba.core.errors import TypingError

    with pytest.raises(TypingError):
        _gather_add_scatter(np.zeros(40, np.float32), 0, np.arange(16, dtype=np.int64), 0, 16, np.zeros(16, np.float32))


@njit(cache=False)
def _membrane(x, y, out, fired, threshold, n):
    """``out = 0.2 * x * (1 - y) - y``, and its lanes above ``threshold`` as bytes."""
    v = np.float32(0.2) * load(x, 0, n) * (splat(np.float32(1.0)) - load(y, 0, n)) - load(y, 0, n)
    store(out, 0, v, n)
    store_bytes(fired, 0, greater(v, threshold), n)


@pytest.mark.parametrize("n", [5, 8, 16])
def test_lanewise_operations_and_spike_bytes_match_float32_numpy(rng, n):
    x, y = rng.standard_normal(LANES).astype(np.float32), (rng.random(LANES) < 0.5).astype(np.float32)
    x[0] = np.nan  # NaN never fires, as with ``>``
    out, fired = np.zeros(LANES, np.float32), np.full(LANES, 7, np.uint8)
    _membrane(x, y, out, fired, np.float32(-0.1), n)
    expected = np.float32(0.2) * x * (np.float32(1.0) - y) - y
    np.testing.assert_array_equal(out[:n], expected[:n])
    np.testing.assert_array_equal(fired[:n], (expected[:n] > np.float32(-0.1)).astype(np.uint8))
    np.testing.assert_array_equal(fired[n:], 7)  # lanes from n on are not written


@njit(cache=False)
def _byte_pairs(low, high, out, offset, n):
    """Each group of four lanes of ``low + 256 * high`` as eight bytes at ``offset + 8*g``."""
    pairs = load(low, 0, LANES) + np.float32(256.0) * load(high, 0, LANES)
    store_byte_pairs(out, offset, pairs, 0, n)
    store_byte_pairs(out, offset + 8, pairs, 1, n)
    store_byte_pairs(out, offset + 16, pairs, 2, n)
    store_byte_pairs(out, offset + 24, pairs, 3, n)


@pytest.mark.parametrize("n", [0, 3, 7, 8])
def test_byte_pairs_lay_two_counts_side_by_side(rng, n):
    """Lane l's pair is bytes ``low[l], high[l]`` (low first), four lanes a group of eight
    bytes, of which the first ``n`` are written; nothing else is touched."""
    low, high = rng.integers(0, 256, LANES).astype(np.float32), rng.integers(0, 256, LANES).astype(np.float32)
    out = np.full(40, 7, np.uint8)
    _byte_pairs(low, high, out, 3, n)
    woven = np.stack([low, high], axis=1).astype(np.uint8).reshape(4, 8)
    expected = np.full(40, 7, np.uint8)
    for g in range(4):
        expected[3 + 8 * g:3 + 8 * g + n] = woven[g, :n]
    np.testing.assert_array_equal(out, expected)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mprotect through libc")
def test_partial_load_at_the_end_of_mapped_memory_does_not_fault():
    """Masked lanes are not read: a 4-lane load from the last 16 bytes before an
    inaccessible page works (an unmasked 16-lane load would crash the process)."""
    page = mmap.PAGESIZE
    region = mmap.mmap(-1, 2 * page)
    libc = ctypes.CDLL(None, use_errno=True)
    base = ctypes.addressof(ctypes.c_char.from_buffer(region))
    assert libc.mprotect(ctypes.c_void_p(base + page), ctypes.c_size_t(page), 0) == 0  # PROT_NONE
    values = np.frombuffer(region, dtype=np.float32, count=page // 4)
    values[-4:] = [1.0, 2.0, 3.0, 4.0]
    out = np.zeros(LANES, np.float32)
    _copy(values, values.size - 4, 4, out, 0)
    np.testing.assert_array_equal(out[:4], [1.0, 2.0, 3.0, 4.0])
    cells = np.frombuffer(region, dtype=np.uint8, count=page)  # the same for 3 of 64 bytes
    cells[-3:] = [0, 7, 9]
    assert _bits(cells, page - 3, 3)[1].tolist() == [1, 2]
    del values, cells
    libc.mprotect(ctypes.c_void_p(base + page), ctypes.c_size_t(page), 3)  # give the page back readable
    region.close()


def test_loads_refuse_other_arrays():
    """Only C-contiguous float32 arrays: anything else fails at compile time, never
    reads the wrong bytes."""
    from numba.core.errors import TypingError

    with pytest.raises(TypingError):
        _copy(np.arange(40, dtype=np.float64), 0, 16, np.zeros(16, np.float64), 0)
    with pytest.raises(TypingError):
        _copy(np.arange(80, dtype=np.float32)[::2], 0, 16, np.zeros(16, np.float32), 0)


@njit(cache=False)
def _load_all_lanes(source, offset, n, out):
    """All 16 lanes of ``load(source, offset, n)`` into ``out``."""
    store(out, 0, load(source, offset, n), LANES)


@pytest.mark.parametrize("n", [0, 1, 9, 15, 16])
def test_load_gives_zeros_in_the_lanes_from_n_on(n):
    """The documented contract: lanes ``n..15`` of a load are 0 (never the memory after
    the ``n`` values, nor anything else), so they add nothing to a sum of vectors."""
    source = np.arange(1, 41, dtype=np.float32)
    out = np.full(LANES, -1.0, np.float32)
    _load_all_lanes(source, 5, n, out)
    np.testing.assert_array_equal(out[:n], source[5:5 + n])
    np.testing.assert_array_equal(out[n:], 0)


@njit(cache=False)
def _transpose(source, offset, stride, target, target_offset, target_stride):
    transpose16(source, offset, stride, target, target_offset, target_stride)


def test_transpose16_moves_exactly_one_block(rng):
    source = rng.random(40 * 20).astype(np.float32)
    target = np.full(37 * 18, -1.0, dtype=np.float32)
    _transpose(source, 3, 40, target, 5, 37)
    block = source[3:3 + 16 * 40].reshape(16, 40)[:, :16]
    written = np.full(target.shape, False)
    for j in range(16):
        np.testing.assert_array_equal(target[5 + j * 37:5 + j * 37 + 16], block[:, j])
        written[5 + j * 37:5 + j * 37 + 16] = True
    assert np.all(target[~written] == -1.0)  # nothing outside the block


@pytest.mark.parametrize("n", [1, 15, 16, 17, 40, 64])
def test_all_zero_sees_any_nonzero_entry_and_only_within_range(n):
    values = np.zeros(n + 40, dtype=np.float32)
    assert all_zero(values, 20, n)
    for position in (20, 20 + n // 2, 20 + n - 1):
        for value in (1e-38, -0.5, np.nan):
            values[:] = 0.0
            values[position] = value
            assert not all_zero(values, 20, n)
    values[:] = 0.0
    values[19] = values[20 + n] = 1.0  # just outside
    values[21 % (n + 40)] = -0.0 if n > 1 else 0.0
    assert all_zero(values, 20, n)


@njit(cache=False)
def _shuffles(a, b, out):
    x, y = load(a, 0, LANES), load(b, 0, LANES)
    for k, v in enumerate((even_lanes(x, y), odd_lanes(x, y), upper_halves(x, y), interleave_low(x, y),
                           interleave_high(x, y))):
        store(out, k * LANES, v, LANES)


def test_two_vector_shuffles_pick_the_named_lanes():
    a, b = np.arange(LANES, dtype=np.float32), np.arange(LANES, dtype=np.float32) + 100
    out = np.zeros(5 * LANES, np.float32)
    _shuffles(a, b, out)
    both = np.concatenate([a, b])
    half = LANES // 2
    expected = [both[0::2], both[1::2], np.concatenate([a[half:], b[half:]]),
                np.stack([a[:half], b[:half]], axis=1).ravel(), np.stack([a[half:], b[half:]], axis=1).ravel()]
    np.testing.assert_array_equal(out.reshape(5, LANES), np.stack(expected))
    # together, interleave_low and interleave_high weave a and b lane by lane
    np.testing.assert_array_equal(np.concatenate([out[3 * LANES:4 * LANES], out[4 * LANES:]]),
                                  np.stack([a, b], axis=1).ravel())


@njit(cache=False)
def _bytes_as_floats(cells, offset, n, out):
    store(out, 0, load_bytes(cells, offset, n), LANES)


@pytest.mark.parametrize("n", [1, 9, 16])
def test_load_bytes_converts_n_cells_and_zeros_the_rest(rng, n):
    cells = rng.integers(0, 256, 40).astype(np.uint8)
    out = np.full(LANES, np.nan, np.float32)
    _bytes_as_floats(cells, 7, n, out)
    np.testing.assert_array_equal(out[:n], cells[7:7 + n].astype(np.float32))
    np.testing.assert_array_equal(out[n:], 0.0)
