"""Arrays whose data starts on a 64-byte cache line, and rows that do too.

The row-sum kernels load 16 float32 (one cache line) at a time. Large NumPy arrays
come from ``mmap`` and start 16 bytes past a page boundary, so every such load would
straddle two cache lines: aligning the summed matrices measured 1.2x on the row sums
(benchmarks/RESULTS.md). Likewise a matrix whose rows are not whole cache lines long
(280 float32 columns: 17.5 lines) starts every other row mid-line; its rows are padded
(:func:`line_width`): 1.35x on the row sums for 280 columns, 1.2x for 600.

Large arrays are recycled (:class:`BufferPool`): a batch of the paper's N-MNIST
convolutional network allocates about a gigabyte of traces and gradients, and memory
fresh from the operating system is zeroed page by page by the kernel at first touch.
"""
from __future__ import annotations

import sys
import threading

import numpy as np

CACHE_LINE = 64


class BufferPool:
    """Byte buffers of at least ``min_bytes`` handed out again once no array uses them.

    A buffer is free when nothing but the pool refers to it: every array made from it
    is a view whose ``base`` is the buffer, so CPython's reference count says when the
    last one is gone. A request takes the smallest free buffer that holds it and is at
    most twice its size. A request no free buffer fits (the first batch, a new shape)
    allocates, after releasing the free buffers no request has taken in the last
    :attr:`stale_requests` requests (a training batch of the paper's convolutional
    network makes 11): a training batch repeats the last one's shapes and takes its
    buffers back, while shapes no longer asked for (the last evaluation's batches) go at
    the next new shape. Releasing every free buffer on a miss instead fed on itself: the
    first batch's backward missed at every request and released the gradients freed
    earlier in the same pass, so every later batch missed them again (944 page faults and
    30-90 ms of system time a training batch of the N-MNIST convolutional network).
    Without the pool every batch's traces and gradients came from ``mmap`` and the
    kernel zeroed them page by page: 61-290 ms of system time per training batch of the
    N-MNIST convolutional network (benchmarks/RESULTS.md).
    """

    stale_requests = 64

    def __init__(self, min_bytes: int = 1 << 20):
        self.min_bytes = min_bytes
        self._buffers: list[np.ndarray] = []
        self._taken_at: dict[int, int] = {}  # id of a buffer -> request count when last taken
        self._requests = 0
        self._lock = threading.Lock()
        # References a buffer no array uses has while counted (the list's, the loop's,
        # the call's), measured on a buffer of our own rather than assumed.
        self._free_count = self._refcounts([np.empty(1, dtype=np.uint8)])[0]

    @staticmethod
    def _refcounts(buffers: list) -> list[int]:
        return [sys.getrefcount(b) for b in buffers]

    def _free(self) -> list[np.ndarray]:
        """The buffers no array uses."""
        return [b for b, n in zip(self._buffers, self._refcounts(self._buffers)) if n <= self._free_count]

    def _release(self, buffers: list[np.ndarray]) -> None:
        released = {id(b) for b in buffers}
        self._buffers = [b for b in self._buffers if id(b) not in released]
        for key in released:
            del self._taken_at[key]

    def take(self, nbytes: int) -> np.ndarray:
        """A uint8 buffer of at least ``nbytes + CACHE_LINE`` bytes, uninitialised."""
        want = nbytes + CACHE_LINE
        with self._lock:
            self._requests += 1
            free = self._free()
            fitting = [b for b in free if want <= b.size <= 2 * want]
            if fitting:
                buffer = min(fitting, key=lambda b: b.size)
            else:
                self._release([b for b in free if self._requests - self._taken_at[id(b)] > self.stale_requests])
                buffer = np.empty(want, dtype=np.uint8)
                self._buffers.append(buffer)
            self._taken_at[id(buffer)] = self._requests
            return buffer

    def clear(self) -> None:
        """Release every free buffer."""
        with self._lock:
            self._release(self._free())


POOL = BufferPool()


def line_width(n_columns: int, dtype=np.float32) -> int:
    """``n_columns`` rounded up to whole cache lines of ``dtype``: the row length of a
    C-contiguous array every row of which starts on a line (if the array does)."""
    per_line = CACHE_LINE // np.dtype(dtype).itemsize
    return -(-n_columns // per_line) * per_line


def aligned_empty(shape, dtype=np.float32) -> np.ndarray:
    """Uninitialised C-contiguous array of ``shape`` starting on a cache line."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    buffer = POOL.take(nbytes) if nbytes >= POOL.min_bytes else np.empty(nbytes + CACHE_LINE, dtype=np.uint8)
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
