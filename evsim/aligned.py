"""Arrays whose data starts on a 64-byte cache line, and rows that do too.

The row-sum kernels load 16 float32 (one cache line) at a time. Large NumPy arrays
come from ``mmap`` and start 16 bytes past a page boundary, so every such load would
straddle two cache lines: aligning the summed matrices measured 1.2x on the row sums
(benchmarks/RESULTS.md). Likewise a matrix whose rows are not whole cache lines long
(280 float32 columns: 17.5 lines) starts every other row mid-line; its rows are padded
(:func:`line_width`): 1.35x on the row sums for 280 columns, 1.2x for 600.
"""
from __future__ import annotations

import numpy as np

CACHE_LINE = 64


def line_width(n_columns: int, dtype=np.float32) -> int:
    """``n_columns`` rounded up to whole cache lines of ``dtype``: the row length of a
    C-contiguous array every row of which starts on a line (if the array does)."""
    per_line = CACHE_LINE // np.dtype(dtype).itemsize
    return -(-n_columns // per_line) * per_line


def aligned_empty(shape, dtype=np.float32) -> np.ndarray:
    """Uninitialised C-contiguous array of ``shape`` starting on a cache line."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    buffer = np.empty(nbytes + CACHE_LINE, dtype=np.uint8)
    start = -buffer.ctypes.data % CACHE_LINE
    return buffer[start:start + nbytes].view(dtype).reshape(shape)


def aligned_zeros(shape, dtype=np.float32) -> np.ndarray:
    """Zeroed C-contiguous array of ``shape`` starting on a cache line."""
    out = aligned_empty(shape, dtype)
    out[...] = 0
    return out


def aligned(values: np.ndarray) -> np.ndarray:
    """``values`` itself when it is C-contiguous and starts on a cache line, else an aligned copy."""
    if values.flags.c_contiguous and (values.size == 0 or values.ctypes.data % CACHE_LINE == 0):
        return values  # an empty array has no data to align
    out = aligned_empty(values.shape, values.dtype)
    out[...] = values
    return out
