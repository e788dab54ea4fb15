"""Count frames stored as events: the form in which event datasets are kept and batched.

Event cameras fill few cells of each frame (about 6 % of N-MNIST's at T = 20), so a
split is kept as one CSR event store over rows ``r = n * T + t`` (frame t of sample n):
the flat indices of the frame's nonzero cells (int32, ascending) and their counts.
That is about 3x smaller than one byte per cell, and turning a batch into the first
layer's events is a copy of its rows (O(events)) instead of a scan of every cell.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from evsim.errors import DataError
from evsim.kernels.events import Events, gather_events

_WRITE_CHUNK = 1 << 22  # values per write of a frame store: 4-16 MiB


def frame_events(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nonzero cells of ``frames`` ``[R, ...]`` per row: ``(counts per row, idx, val)``."""
    flat = np.asarray(frames).reshape(len(frames), -1)
    rows, cells = np.nonzero(flat)
    return np.bincount(rows, minlength=len(flat)), cells.astype(np.int32), flat[rows, cells]


class SparseFrames:
    """The count frames of N samples as a CSR event store.

    Parameters
    ----------
    ptr : int64 ``[N_stored * T + 1]``; frame t of stored sample n holds
        ``idx[ptr[r]:ptr[r+1]]``, ``r = n * T + t``.
    idx : int32 flat cell indices, ascending within a frame.
    val : counts (uint8, uint16 or float32).
    n_steps : T.
    sample_shape : shape of one frame, e.g. ``(2, 34, 34)``.
    samples : the stored samples this object shows, in order (default: all).

    Indexing with a slice or an index array selects samples without copying events;
    an integer gives that sample's dense ``[T, *sample_shape]`` frames.

    Raises
    ------
    DataError
        If the arrays do not form a store of whole samples.
    """

    def __init__(self, ptr: np.ndarray, idx: np.ndarray, val: np.ndarray, n_steps: int, sample_shape: tuple,
                 samples: np.ndarray | None = None):
        n_steps = int(n_steps)
        n_rows = len(ptr) - 1
        if n_steps < 1 or n_rows < 0 or n_rows % n_steps or len(idx) != len(val) or (
                len(ptr) and ptr[-1] != len(idx)):
            raise DataError(f"frame store is inconsistent (ptr of {len(ptr)}, {len(idx)} indices, {len(val)} values, "
                            f"T = {n_steps}); delete the cache folder to rebuild it")
        self.ptr, self.idx, self.val = ptr, idx, val
        self.n_steps = n_steps
        self.sample_shape = tuple(int(d) for d in sample_shape)
        self.samples = np.arange(n_rows // n_steps) if samples is None else np.asarray(samples, dtype=np.int64)

    @classmethod
    def from_dense(cls, frames: np.ndarray) -> "SparseFrames":
        """The store of dense frames ``[N, T, *sample_shape]``, counts in their own type."""
        frames = np.asarray(frames)
        if frames.ndim < 3:
            raise DataError(f"frames must be [N, T, ...], got shape {frames.shape}")
        n, n_steps = frames.shape[:2]
        counts, idx, val = frame_events(frames.reshape(n * n_steps, -1))
        ptr = np.zeros(n * n_steps + 1, dtype=np.int64)
        np.cumsum(counts, out=ptr[1:])
        return cls(ptr, idx, val, n_steps, frames.shape[2:])

    def check(self) -> None:
        """Raise :class:`DataError` unless every event lies in its frame: ``ptr`` (int64)
        rises from 0, every index (int32) names a cell of ``sample_shape`` and every count
        is finite and not negative. O(events):
        for stores read from disk, not for each selection of samples.
        """
        n_cells = int(np.prod(self.sample_shape))
        if (self.ptr.dtype != np.int64 or self.idx.dtype != np.int32 or self.ptr[0] != 0
                or np.any(np.diff(self.ptr) < 0)
                or (len(self.idx) and not 0 <= self.idx.min() <= self.idx.max() < n_cells)):
            raise DataError(f"frame store holds events outside their frames of {n_cells} cells")
        # Event counts: a float store (counts beyond uint16) must hold no NaN, infinity or negative.
        if self.val.dtype.kind == "f" and len(self.val) and not (np.isfinite(self.val).all() and self.val.min() >= 0):
            raise DataError("frame store holds counts that are negative, NaN or infinite")

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def shape(self) -> tuple:
        """``(N, T, *sample_shape)``, as the dense frames would have."""
        return (len(self), self.n_steps) + self.sample_shape

    @property
    def dtype(self) -> np.dtype:
        return self.val.dtype

    def __getitem__(self, which):
        if isinstance(which, (int, np.integer)):
            return self[[which]].to_dense()[0]
        return SparseFrames(self.ptr, self.idx, self.val, self.n_steps, self.sample_shape, self.samples[which])

    def events(self) -> Events:
        """The first layer's events of these samples as one batch: slot ``t * B + b``
        holds frame t of sample b (each count k as one event of value k)."""
        steps = np.arange(self.n_steps, dtype=np.int64)
        rows = (self.samples[None, :] * self.n_steps + steps[:, None]).ravel()
        return gather_events(self.ptr, self.idx, self.val, rows, self.n_steps, len(self))

    def first_steps(self, n_steps: int) -> "SparseFrames":
        """The first ``n_steps`` frames of these samples, as a new store (copies their
        events, O(events)): what a network sees when it answers after fewer steps.

        Raises
        ------
        DataError
            If ``n_steps`` is not in 1..T.
        """
        if not 1 <= n_steps <= self.n_steps:
            raise DataError(f"the frames hold {self.n_steps} time steps; cannot take the first {n_steps}")
        rows = (self.samples[:, None] * self.n_steps + np.arange(n_steps)[None, :]).ravel()
        counts = self.ptr[rows + 1] - self.ptr[rows]
        ptr = np.zeros(rows.size + 1, dtype=np.int64)
        np.cumsum(counts, out=ptr[1:])
        take = np.repeat(self.ptr[rows] - ptr[:-1], counts) + np.arange(ptr[-1])
        return SparseFrames(ptr, self.idx[take], self.val[take], n_steps, self.sample_shape)

    def to_dense(self) -> np.ndarray:
        """Dense frames ``[N, T, *sample_shape]`` in the counts' type."""
        events = self.events()
        n_cells = int(np.prod(self.sample_shape))
        dense = np.zeros((self.n_steps * len(self), n_cells), dtype=self.val.dtype)
        slots = np.repeat(np.arange(len(dense)), np.diff(events.ptr))
        dense[slots, events.idx] = events.val
        dense = dense.reshape((self.n_steps, len(self)) + self.sample_shape)
        return np.ascontiguousarray(np.swapaxes(dense, 0, 1))


class SparseFrameWriter:
    """Writes the frames of one split, sample by sample, as ``<name>_ptr/_idx/_val.npy``.

    Indices and values go to raw files as they come, so memory stays flat however large
    the split; :meth:`close` writes the ``.npy`` arrays, with the counts in the smallest
    type that holds them (uint8, then uint16, else float32).
    """

    def __init__(self, folder: Path, name: str, n_samples: int, n_steps: int):
        self.folder, self.name = Path(folder), name
        self.n_steps = int(n_steps)
        self.counts = np.zeros(int(n_samples) * self.n_steps, dtype=np.int64)
        self.written = 0
        self.peak = 0.0
        self.integral = True
        self._idx = open(self.folder / f"{name}_idx.raw", "wb")
        self._val = open(self.folder / f"{name}_val.raw", "wb")

    def put(self, frames: np.ndarray) -> None:
        """Append the next sample's ``[T, ...]`` frames."""
        if len(frames) != self.n_steps:
            raise DataError(f"expected {self.n_steps} frames per sample, got {len(frames)}")
        counts, idx, val = frame_events(frames)
        val = val.astype(np.float32)
        start = self.written * self.n_steps
        self.counts[start:start + self.n_steps] = counts
        self.written += 1
        if len(val):
            self.peak = max(self.peak, float(val.max()))
            self.integral = self.integral and bool(np.all(val == np.round(val))) and float(val.min()) >= 0
        self._idx.write(idx.tobytes())
        self._val.write(val.tobytes())

    def close(self) -> str:
        """Write the arrays; returns the counts' type."""
        self._idx.close()
        self._val.close()
        if self.written * self.n_steps != len(self.counts):
            raise DataError(f"{self.name}: {self.written} of {len(self.counts) // self.n_steps} samples were framed")
        ptr = np.zeros(len(self.counts) + 1, dtype=np.int64)
        np.cumsum(self.counts, out=ptr[1:])
        np.save(self.folder / f"{self.name}_ptr.npy", ptr)
        dtype = np.float32
        if self.integral:
            dtype = np.uint8 if self.peak <= np.iinfo(np.uint8).max else (
                np.uint16 if self.peak <= np.iinfo(np.uint16).max else np.float32)
        n = int(ptr[-1])
        for part, kind in (("idx", np.int32), ("val", dtype)):
            raw_path = self.folder / f"{self.name}_{part}.raw"
            raw = np.memmap(raw_path, dtype=np.int32 if part == "idx" else np.float32, mode="r") if n else None
            # Written, not memory-mapped: a full disk under a mapped page is SIGBUS, under a
            # write it is ENOSPC, which the cache reports in one line.
            with open(self.folder / f"{self.name}_{part}.npy", "wb") as handle:
                np.lib.format.write_array_header_1_0(handle, {"descr": np.lib.format.dtype_to_descr(np.dtype(kind)),
                                                              "fortran_order": False, "shape": (n,)})
                for start in range(0, n, _WRITE_CHUNK):
                    handle.write(np.ascontiguousarray(raw[start:start + _WRITE_CHUNK], dtype=kind).tobytes())
            del raw
            raw_path.unlink()
        return np.dtype(dtype).name
