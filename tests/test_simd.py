"""16-lane vectors (evsim.kernels.simd) against NumPy."""
from __future__ import annotations

import ctypes
import mmap
import sys

import numpy as np
import pytest
from numba import njit

from evsim.kernels.simd import LANES, load, store


@njit(cache=False)
def _copy(source, offset, n, target, target_offset):
    store(target, target_offset, load(source, offset, n), n)


@njit(cache=False)
def _axpy(scale, x, y, out, n):
    """``out[:n] = scale * x[:n] + y[:n]`` through one vector each."""
    store(out, 0, scale * load(x, 0, n) + load(y, 0, n), n)


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
    del values
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
