"""Event lists: the format in which spikes travel between layers.

A batch of events for T steps and B samples is a CSR-like triple over *slots*
``s = t * B + b``: events of slot s are ``idx[ptr[s]:ptr[s+1]]`` (flat neuron
indices, int32, ascending) with values ``val[...]`` (float32; 1.0 for spikes, a
count k for count frames, an analog value for direct input). Direct input, the same
analog values at every step, can instead travel as a :class:`StaticDrive`.
"""
from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np
from numba import njit, prange

from evsim.errors import ShapeError
from evsim.kernels.forks import check_not_forked
from evsim.kernels.simd import lowest_bit, nonzero_bits, popcount


# The largest index or count an int32 holds: event indices and evsim's counters are int32.
INT32_MAX = 2 ** 31 - 1


class Events(NamedTuple):
    """Events of ``n_steps`` x ``batch`` slots. ``ptr`` int64 ``[T*B+1]``, ``idx`` int32, ``val`` float32."""

    ptr: np.ndarray
    idx: np.ndarray
    val: np.ndarray
    n_steps: int
    batch: int

    @property
    def count(self) -> int:
        return int(self.ptr[-1])


class StaticDrive(NamedTuple):
    """The same analog input at every one of ``n_steps`` steps (direct encoding):
    ``values`` float32 ``[B, n_in]``, C-contiguous. The first layer's current is then one
    product per sample instead of one per step, and its weight gradient one product of
    the values with dL/du summed over the steps."""

    values: np.ndarray
    n_steps: int

    @property
    def batch(self) -> int:
        return self.values.shape[0]


class EventsByRow(NamedTuple):
    """The same events grouped by neuron: row i's events are ``slot[row_ptr[i]:row_ptr[i+1]]``
    (int32, ascending), with values ``val[...]``, or None when every value is 1 (spikes)."""

    row_ptr: np.ndarray
    slot: np.ndarray
    val: np.ndarray | None


@njit(cache=True)
def slot_order(ptr, idx, n_units):
    """``(first slot naming a unit twice or -1, whether every slot's indices ascend)``.

    A unit twice in a slot is ambiguous: kernels that add an event's value into the
    currents count both, those that write the slot into a dense map first keep one, and
    the same input must not depend on the path chosen. Order is not: the layers' own
    events ascend, and kernels that walk a slot in bands (max pooling) rely on it."""
    seen = np.full(n_units, -1, dtype=np.int64)
    ascending = True
    for s in range(ptr.shape[0] - 1):
        for e in range(ptr[s], ptr[s + 1]):
            i = idx[e]
            if seen[i] == s:
                return s, False
            seen[i] = s
            if e > ptr[s] and idx[e - 1] > i:
                ascending = False
    return -1, ascending


@njit(parallel=True, cache=True)
def _non_finite_rows(bits):
    """Per row of float32 cells seen as uint32 ``bits`` ``[n, m]``: whether a cell is NaN or
    infinite (its exponent all ones). No early exit, so LLVM vectorises the test."""
    exponent = np.uint32(0x7F800000)
    found = np.zeros(bits.shape[0], dtype=np.bool_)
    for s in prange(bits.shape[0]):
        hit = False
        for i in range(bits.shape[1]):
            hit |= (bits[s, i] & exponent) == exponent
        found[s] = hit
    return found


def all_finite(values: np.ndarray) -> bool:
    """Whether a C-contiguous float32 array holds no NaN or infinity: the input check of
    every batch, in parallel (0.30 against NumPy's ``isfinite`` 0.59 ms at 2 threads on a
    batch of the paper's N-MNIST frames, benchmarks/RESULTS.md)."""
    if values.size == 0:
        return True
    return not _non_finite_rows(values.reshape(values.shape[0], -1).view(np.uint32)).any()


@njit(parallel=True, cache=True)
def _count_nonzero(dense):
    n_slots, n = dense.shape
    counts = np.zeros(n_slots + 1, dtype=np.int64)
    for s in prange(n_slots):
        c = 0
        for i in range(n):
            if dense[s, i] != 0:
                c += 1
        counts[s + 1] = c
    return counts


@njit(parallel=True, cache=True)
def _fill_events(dense, ptr, index_map, idx, val):
    """Write every cell at the slot's next free position and advance only past
    nonzeros: no unpredictable branch at sparse activity (measured 1.3x)."""
    n_slots, n = dense.shape
    for s in prange(n_slots):
        k = ptr[s]
        end = ptr[s + 1]
        for i in range(n):
            if k == end:  # past the slot's last nonzero; also keeps writes inside the slot
                break
            x = dense[s, i]
            idx[k] = index_map[i]
            val[k] = x
            k += x != 0


@njit(cache=True, inline="always")
def _row_bits(row, i, n):
    """Nonzero mask of cells ``i..i+63`` of a byte row of ``n`` cells: whole blocks
    pass the literal 64, so their load compiles unmasked; only the last is masked."""
    if i + 64 <= n:
        return nonzero_bits(row, i, 64)
    return nonzero_bits(row, i, n - i)


@njit(cache=True, inline="always")
def nonzero_count(row):
    """The nonzero cells of a byte or float32 row, 64 cells per step."""
    n = row.shape[0]
    c = 0
    for i in range(0, n, 64):
        c += popcount(_row_bits(row, i, n))
    return c


@njit(parallel=True, cache=True)
def _count_nonzero_bits(dense):
    """:func:`_count_nonzero` for byte or float32 cells, 64 cells per step."""
    n_slots = dense.shape[0]
    counts = np.zeros(n_slots + 1, dtype=np.int64)
    for s in prange(n_slots):
        counts[s + 1] = nonzero_count(dense[s])
    return counts


@njit(parallel=True, cache=True)
def _fill_bit_events(dense, ptr, index_map, idx, val):
    """:func:`_fill_events` for byte (spikes) or float32 cells: a 64-bit mask of each 64
    cells' nonzeros, then one step per set bit: no branch per cell or per 8 cells. With it,
    ``dense_to_events`` of 800 neurons' spikes is 1.8-2.6x faster at 3-10 % activity than
    with the 8-cell skipping it replaced, and of float32 input frames at 6 % than
    :func:`_fill_events` (``benchmarks/RESULTS.md``)."""
    n_slots, n = dense.shape
    one = np.uint64(1)
    for s in prange(n_slots):
        row = dense[s]
        k = ptr[s]
        for i in range(0, n, 64):
            bits = _row_bits(row, i, n)
            while bits:
                j = i + lowest_bit(bits)
                idx[k] = index_map[j]
                val[k] = row[j]
                k += 1
                bits &= bits - one


@njit(cache=True)
def _bernoulli_events(draws, p, cell, starts):
    """``(ptr, idx)`` of Bernoulli spikes of B samples: sample b's candidate cells are
    ``cell[starts[b]:starts[b + 1]]`` (ascending), and cell ``cell[k]`` fires at step t
    when ``draws[t, k] < p[k]``. Branch-free (every cell is written, the position moves
    on only when it fires): a spike is a coin flip the branch predictor cannot learn
    (3.0 against 0.4 ms for MNIST's 15,700 nonzero cells of 100 digits, T = 20)."""
    n_steps, n = draws.shape
    batch = starts.size - 1
    ptr = np.zeros(n_steps * batch + 1, dtype=np.int64)
    idx = np.empty(n_steps * n + 1, dtype=np.int32)
    e = 0
    for t in range(n_steps):
        for b in range(batch):
            for k in range(starts[b], starts[b + 1]):
                idx[e] = cell[k]
                e += draws[t, k] < p[k]
            ptr[t * batch + b + 1] = e
    return ptr, idx[:e]


def _checked_index_map(index_map, n: int) -> np.ndarray:
    """``index_map`` as int32, if it is ``n`` increasing integers >= 0 and below 2^31
    (O(N): well below the O(T B N) scan of the dense cells)."""
    if not isinstance(index_map, np.ndarray) or index_map.shape != (n,) or index_map.dtype.kind not in "iu":
        raise ShapeError(f"index_map must be an integer array of shape ({n},) (one event index per column), got "
                         + (f"{index_map.dtype} {index_map.shape}" if isinstance(index_map, np.ndarray)
                            else type(index_map).__name__))
    if n and (index_map[0] < 0 or index_map[-1] > np.iinfo(np.int32).max
              or np.any(index_map[1:] <= index_map[:-1])):
        raise ShapeError("index_map must be increasing event indices >= 0 (below 2^31)")
    return index_map if index_map.dtype == np.int32 else index_map.astype(np.int32)


def dense_to_events(dense: np.ndarray, index_map: np.ndarray | None = None) -> Events:
    """Events of the nonzero cells of a dense ``[T, B, N]`` array.

    Parameters
    ----------
    dense : ``[T, B, N]`` array: float32 drive, or integer counts and spikes
        (uint8 and bool cells take a faster path, 64 cells per step).
    index_map : optional int32 ``[N]``: event index of column n is ``index_map[n]``
        (maps a layer's compacted alive neurons back to their flat indices). Must be
        increasing so event indices stay ascending.

    Returns
    -------
    Events

    Raises
    ------
    ShapeError
        If ``index_map`` is not N increasing integers >= 0 (the kernels read it unchecked).
    """
    check_not_forked()
    n = dense.shape[2]
    return alive_events(dense, np.arange(n, dtype=np.int32) if index_map is None
                        else _checked_index_map(index_map, n))


def alive_events(dense: np.ndarray, index_map: np.ndarray) -> Events:
    """:func:`dense_to_events` with an int32 ``index_map`` taken as valid: a layer's own
    alive units (ascending by construction), at every forward pass."""
    n_steps, batch, n = dense.shape
    flat = dense.reshape(n_steps * batch, n)
    if flat.dtype == np.bool_:
        flat = flat.view(np.uint8)
    bit_cells = flat.dtype in (np.uint8, np.float32) and flat.flags.c_contiguous
    ptr = np.cumsum(_count_nonzero_bits(flat) if bit_cells else _count_nonzero(flat))
    idx = np.empty(ptr[-1], dtype=np.int32)
    val = np.empty(ptr[-1], dtype=np.float32)
    if bit_cells:
        _fill_bit_events(flat, ptr, index_map, idx, val)
    else:
        _fill_events(flat, ptr, index_map, idx, val)
    return Events(ptr, idx, val, n_steps, batch)


@njit(parallel=True, cache=True)
def _gather_rows(ptr, idx, val, rows):
    """Copy stored row ``rows[s]`` of a CSR event store to slot ``s``, values as float32."""
    n_slots = rows.shape[0]
    out_ptr = np.zeros(n_slots + 1, dtype=np.int64)
    for s in range(n_slots):
        out_ptr[s + 1] = out_ptr[s] + ptr[rows[s] + 1] - ptr[rows[s]]
    out_idx = np.empty(out_ptr[n_slots], dtype=np.int32)
    out_val = np.empty(out_ptr[n_slots], dtype=np.float32)
    for s in prange(n_slots):
        k = out_ptr[s]
        for e in range(ptr[rows[s]], ptr[rows[s] + 1]):
            out_idx[k] = idx[e]
            out_val[k] = val[e]
            k += 1
    return out_ptr, out_idx, out_val


def gather_events(ptr: np.ndarray, idx: np.ndarray, val: np.ndarray, rows: np.ndarray, n_steps: int,
                  batch: int) -> Events:
    """Events whose slot ``s`` holds row ``rows[s]`` of a CSR event store.

    Parameters
    ----------
    ptr, idx, val : the store: row r's events are ``idx[ptr[r]:ptr[r+1]]`` (int32,
        ascending) with values ``val[...]`` (any real type; converted to float32).
    rows : int64 ``[n_steps * batch]``, the stored row of each slot.

    Cost is O(events + slots): no dense scan.
    """
    return Events(*_gather_rows(ptr, idx, val, rows), n_steps, batch)


@njit(parallel=True, cache=True)
def _group_by_row(ptr, idx, val, n_rows, n_chunks):
    """Counting sort by neuron in ``n_chunks`` parallel runs: each run counts the events
    of its own run of slots, then fills the lists of its own run of rows (runs of equal
    events), reading every slot's events and keeping those of its rows: a branch taken
    in one stretch per slot where indices ascend, as evsim's do, and right in any order
    (a binary search for the stretch was 10-20 % faster but needs the order). Each run
    writes one stretch of ``slot``, so no two threads share a cache line of it (runs by
    slots wrote neighbouring parts of every row's list: with two of them, grouping was
    1.2-1.6x slower than with one below 25 events per row). Each row's events stay in
    slot order. ``val`` None (every value 1): no values are moved, and the returned
    ``val`` is empty."""
    n_slots = ptr.shape[0] - 1
    counts = np.zeros((n_chunks, n_rows), dtype=np.int64)
    for c in prange(n_chunks):
        for e in range(ptr[n_slots * c // n_chunks], ptr[n_slots * (c + 1) // n_chunks]):
            counts[c, idx[e]] += 1
    row_ptr = np.zeros(n_rows + 1, dtype=np.int64)
    for i in range(n_rows):
        row_ptr[i + 1] = row_ptr[i]
        for c in range(n_chunks):  # not counts[:, i].sum(): parallel=True makes that a parallel loop per row
            row_ptr[i + 1] += counts[c, i]
    first_row = np.empty(n_chunks + 1, dtype=np.int64)  # runs of rows of about equal events
    r = 0
    for c in range(n_chunks):
        while r < n_rows and row_ptr[r] < row_ptr[n_rows] * c // n_chunks:
            r += 1
        first_row[c] = r
    first_row[n_chunks] = n_rows
    slot = np.empty(idx.shape[0], dtype=np.int32)
    out_val = np.empty(0 if val is None else idx.shape[0], dtype=np.float32)
    for c in prange(n_chunks):
        r0, r1 = first_row[c], first_row[c + 1]
        fill = row_ptr[r0:r1].copy()
        for s in range(n_slots):
            for e in range(ptr[s], ptr[s + 1]):
                i = idx[e] - r0
                if 0 <= i < r1 - r0:
                    k = fill[i]
                    slot[k] = s
                    if val is not None:
                        out_val[k] = val[e]
                    fill[i] = k + 1
    return row_ptr, slot, out_val


def group_by_row(events: Events, n_rows: int) -> EventsByRow:
    """Transpose events to per-neuron lists (a counting sort, O(events + n_rows)), one run per thread.

    Lets weight-gradient kernels loop over presynaptic rows in parallel, each
    thread writing only its own rows (no shared scatter). When every value is 1
    (spikes, binary input) the values are not moved and ``val`` is None: the sort then
    writes one array instead of two (1.4-1.85x faster, benchmarks/RESULTS.md).
    """
    unit = bool(np.all(events.val == 1))
    row_ptr, slot, val = _group_by_row(events.ptr, events.idx, None if unit else events.val, n_rows,
                                       numba.get_num_threads())
    return EventsByRow(row_ptr, slot, None if unit else val)
