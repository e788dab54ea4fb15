"""Geometry of a 2-D convolution on flat unit indices, and the layouts its kernels share.

A map of ``C`` channels of ``H x W`` cells is flat in channel-major order (PyTorch's
flatten of ``[C, H, W]``): unit ``c*H*W + y*W + x``. A convolution of kernel ``K``,
stride ``S`` and zero padding ``P`` is PyTorch's ``Conv2d`` (a cross-correlation)::

    out[f, oy, ox] = sum_{c, ky, kx} w[c -> f, ky, kx] * in[c, oy*S - P + ky, ox*S - P + kx]

so input cell ``(y, x)`` reaches output ``(oy, ox)`` through tap ``(ky, kx)`` when
``y + P - ky = oy*S`` (and likewise in x) with ``0 <= oy < Ho``: its *valid taps*. An
input event costs (valid taps) x (kernels stored in its channel's row) accumulates.

The synapses are a **block CSR**: row ``c`` (input channel) holds its kernels
``data[indptr[c]:indptr[c+1]]`` (float32 ``[nnz, K, K]``), one per stored (channel,
filter) pair, the filters in ``columns`` (int32, compacted indices among the alive
filters, ascending within a row). Kernels that are not stored cost nothing.

Layouts used by the kernels (built here, once per call, from the block CSR):

- *tap-major* weights ``[K*K, nnz]``: tap ``ky*K + kx`` of every stored kernel in one
  contiguous run, so an event's tap reads the weights of all of its channel's kernels
  as 16-lane vectors;
- *block offsets* ``columns * Ho*Wo`` (int32): where each kernel's filter starts in a
  slot's row of currents, for 16-lane gathers and scatters over the kernels of a row;
- the *dense matrix* ``[F, C*K*K]`` (zeros where no kernel is stored) of the GEMM paths,
  whose column ``(c*K + ky)*K + kx`` matches the row of the im2col matrix.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit, prange

from evsim.kernels.simd import LANES, gather, load, scatter, store, transpose16


class ConvGeometry(NamedTuple):
    """Shape of one convolution: ``in_channels`` x ``height`` x ``width`` input cells,
    ``kernel`` x ``kernel`` taps, ``stride``, zero ``pad`` cells on every side, and the
    output map ``out_height`` x ``out_width`` (PyTorch's floor rule). Build with
    :func:`conv_geometry`, which checks it."""

    in_channels: int
    height: int
    width: int
    kernel: int
    stride: int
    pad: int
    out_height: int
    out_width: int

    @property
    def n_in(self) -> int:
        """Input units, ``C*H*W``."""
        return self.in_channels * self.height * self.width

    @property
    def out_cells(self) -> int:
        """Output cells per filter, ``Ho*Wo``."""
        return self.out_height * self.out_width

    @property
    def taps(self) -> int:
        return self.kernel * self.kernel


def _whole(what: str, name: str, value) -> int:
    """``value`` as an int when it is a whole number (an integer, or a float such as 2.0),
    else ValueError: ``int()`` would truncate 1.5 into a geometry that matches nothing."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (float, np.floating)) and np.isfinite(value) and float(value).is_integer():
        return int(value)
    raise ValueError(f"{what} geometry: {name} must be a whole number, got {value!r}")


def conv_geometry(in_channels: int, height: int, width: int, kernel: int, stride: int = 1,
                  pad: int = 0) -> ConvGeometry:
    """The :class:`ConvGeometry` of a convolution, output size by PyTorch's rule
    ``Ho = (H + 2P - K) // S + 1``.

    Raises
    ------
    ValueError
        A size that is not a whole number (``2.0`` is 2, ``1.5`` is refused: the kernels
        index cells by integers), a size below 1, a negative padding, a padding of ``K`` or more (every output cell
        of the border would see padding only) or a kernel larger than the padded map.
    """
    in_channels, height, width, kernel, stride, pad = (
        _whole("conv", name, value) for name, value in (("in_channels", in_channels), ("height", height),
                                                        ("width", width), ("kernel", kernel), ("stride", stride),
                                                        ("pad", pad)))
    for name, value in (("in_channels", in_channels), ("height", height), ("width", width), ("kernel", kernel),
                        ("stride", stride)):
        if value < 1:
            raise ValueError(f"conv geometry: {name} must be >= 1, got {value}")
    if pad < 0 or pad >= kernel:
        raise ValueError(f"conv geometry: pad must be in 0..kernel-1 = 0..{kernel - 1}, got {pad}")
    out_height = (height + 2 * pad - kernel) // stride + 1
    out_width = (width + 2 * pad - kernel) // stride + 1
    if out_height < 1 or out_width < 1:
        raise ValueError(f"conv geometry: a {kernel}x{kernel} kernel does not fit a {height}x{width} map "
                         f"padded by {pad}")
    return ConvGeometry(in_channels, height, width, kernel, stride, pad, out_height, out_width)


def check_block_csr(indptr: np.ndarray, columns: np.ndarray, data: np.ndarray, geometry: ConvGeometry,
                    n_blocks: int) -> None:
    """Refuse a block CSR the kernels cannot read: wrong dtypes, lengths or kernel shape,
    a non-monotone ``indptr``, a filter outside ``0..n_blocks-1`` or filters that do not
    ascend within a row (the 16-lane scatters need distinct filters)."""
    if indptr.dtype != np.int32 or columns.dtype != np.int32 or data.dtype != np.float32:
        raise TypeError(f"block CSR: indptr and columns must be int32 and data float32, got "
                        f"{indptr.dtype}, {columns.dtype}, {data.dtype}")
    if indptr.shape != (geometry.in_channels + 1,):
        raise ValueError(f"block CSR: indptr must have in_channels + 1 = {geometry.in_channels + 1} entries, "
                         f"got {indptr.shape}")
    nnz = columns.shape[0]
    if data.shape != (nnz, geometry.kernel, geometry.kernel) or indptr[0] != 0 or indptr[-1] != nnz:
        raise ValueError(f"block CSR: data must be [nnz={nnz}, {geometry.kernel}, {geometry.kernel}] and indptr "
                         f"run 0..nnz, got data {data.shape}, indptr {indptr[0]}..{indptr[-1]}")
    if np.any(np.diff(indptr) < 0):
        raise ValueError("block CSR: indptr must not decrease")
    if nnz and (columns.min() < 0 or columns.max() >= n_blocks):
        raise ValueError(f"block CSR: columns must lie in 0..{n_blocks - 1}, got {columns.min()}..{columns.max()}")
    step = np.diff(columns.astype(np.int64))
    row_starts = np.zeros(nnz, dtype=bool)
    row_starts[indptr[:-1][indptr[:-1] < nnz]] = True
    if np.any((step <= 0) & ~row_starts[1:]):
        raise ValueError("block CSR: columns must ascend within each row (one kernel per channel and filter)")


def check_events(ptr, idx, val, n_slots):
    """Refuse events that are not ``n_slots`` slots of int32 indices and float32 values
    whose first and last offsets lie inside them. The order of ``ptr`` and the range of
    ``idx`` are the caller's to check once (:func:`evsim.layers.base.checked_drive`, which
    the layers run): a pass over a batch's events at every kernel call would cost a few
    percent of a layer's time."""
    if ptr.shape != (n_slots + 1,) or idx.dtype != np.int32 or val.dtype != np.float32 or idx.shape != val.shape:
        raise ValueError(f"events: ptr must have {n_slots + 1} entries, idx int32 and val float32 of one length; "
                         f"got ptr {ptr.shape}, {idx.dtype} {idx.shape}, {val.dtype} {val.shape}")
    if ptr[0] < 0 or ptr[-1] > idx.size or ptr[0] > ptr[-1]:
        raise ValueError(f"events: ptr must run from 0 to at most {idx.size}, got {ptr[0]}..{ptr[-1]}")


def check_out(out, n_slots, n_columns, name="out"):
    """Refuse an output array the kernels cannot write by flat offsets."""
    if out.dtype != np.float32 or out.shape != (n_slots, n_columns) or not out.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous float32 [{n_slots}, {n_columns}], got {out.dtype} "
                         f"{out.shape}")


def check_grad(grad_u, n_slots, out_cells):
    """Refuse a dL/du that is not C-contiguous float32 ``[n_slots, G*out_cells]``; returns G."""
    if (grad_u.dtype != np.float32 or grad_u.ndim != 2 or grad_u.shape[0] != n_slots
            or grad_u.shape[1] % out_cells or not grad_u.flags.c_contiguous):
        raise ValueError(f"grad_u must be C-contiguous float32 [{n_slots}, G*{out_cells}], got {grad_u.dtype} "
                         f"{grad_u.shape}")
    return grad_u.shape[1] // out_cells


def tap_major(data: np.ndarray) -> np.ndarray:
    """Kernels ``[nnz, K, K]`` as C-contiguous float32 ``[K*K, nnz]`` (tap ``ky*K + kx`` first)."""
    return np.ascontiguousarray(data.reshape(data.shape[0], data.shape[1] * data.shape[2]).T, dtype=np.float32)


def block_offsets(columns: np.ndarray, out_cells: int) -> np.ndarray:
    """``columns * out_cells`` as int32: each kernel's filter block in a row of currents."""
    return (columns.astype(np.int64) * out_cells).astype(np.int32)


def kernel_rows(indptr: np.ndarray) -> np.ndarray:
    """Input channel of every stored kernel, int64 ``[nnz]``."""
    return np.repeat(np.arange(indptr.shape[0] - 1, dtype=np.int64), np.diff(indptr))


def dense_filter_matrix(indptr: np.ndarray, columns: np.ndarray, data: np.ndarray, n_filters: int) -> np.ndarray:
    """The GEMM paths' float32 ``[F, C*K*K]`` matrix: row f, column ``(c*K + ky)*K + kx``
    holds ``w[c -> f, ky, kx]``, zeros where no kernel is stored."""
    n_channels = indptr.shape[0] - 1
    kernel = data.shape[1]
    matrix = np.zeros((n_filters, n_channels, kernel, kernel), dtype=np.float32)
    matrix[columns, kernel_rows(indptr)] = data
    return matrix.reshape(n_filters, n_channels * kernel * kernel)


def by_filter(indptr: np.ndarray, columns: np.ndarray, n_filters: int):
    """The block CSR transposed to rows = filters: ``(filter_ptr int64 [F+1], order int64
    [nnz])``, filter f's kernels being ``order[filter_ptr[f]:filter_ptr[f+1]]`` (indices
    into ``data``), in ascending channel order."""
    rows = kernel_rows(indptr)
    order = np.lexsort((rows, columns)).astype(np.int64)
    filter_ptr = np.zeros(n_filters + 1, dtype=np.int64)
    np.cumsum(np.bincount(columns, minlength=n_filters), out=filter_ptr[1:])
    return filter_ptr, order


@njit(cache=True, inline="always")
def valid_tap_range(y, pad, kernel, stride, out_size):
    """Taps ``ky`` of input coordinate ``y`` that land inside the output: those with
    ``y + pad - ky = oy*stride``, ``0 <= oy < out_size``, are ``ky0, ky0 + stride, ...``
    below ``ky1``; returns ``(ky0, ky1, oy0)``, ``oy0`` the output of ``ky0`` (the output
    falls by one per tap step)."""
    t = y + pad  # = oy*stride + ky
    # largest oy with ky = t - oy*stride >= 0, capped at out_size - 1
    oy_hi = min(t // stride, out_size - 1)
    # smallest oy with ky <= kernel - 1
    oy_lo = max(0, (t - kernel + stride) // stride)
    if oy_hi < oy_lo:
        return 0, 0, 0
    return t - oy_hi * stride, t - oy_lo * stride + 1, oy_hi


@njit(parallel=True, cache=True)
def _conv_fan_out(indptr, kernel, height, width, out_height, out_width, stride, pad, out):
    hw = height * width
    for c in prange(indptr.shape[0] - 1):
        kernels = indptr[c + 1] - indptr[c]
        for y in range(height):
            ky0, ky1, _ = valid_tap_range(y, pad, kernel, stride, out_height)
            ny = (ky1 - ky0 + stride - 1) // stride
            for x in range(width):
                kx0, kx1, _ = valid_tap_range(x, pad, kernel, stride, out_width)
                nx = (kx1 - kx0 + stride - 1) // stride
                out[c * hw + y * width + x] = kernels * ny * nx


def conv_fan_out(indptr: np.ndarray, kernel: int, height: int, width: int, out_height: int, out_width: int,
                 stride: int, pad: int) -> np.ndarray:
    """Synaptic operations one event of each input unit performs: int64 ``[C_in*H*W]``,
    (stored kernels of its channel) x (its valid taps), the accumulates that
    :func:`evsim.kernels.conv_forward.conv_currents_events` performs for it (a value k
    counts as k events, as :mod:`evsim.energy` does)."""
    out = np.empty((indptr.shape[0] - 1) * height * width, dtype=np.int64)
    _conv_fan_out(np.asarray(indptr, dtype=np.int64), kernel, height, width, out_height, out_width, stride, pad,
                  out)
    return out


@njit(parallel=True, cache=True)
def _im2col_events(ptr, idx, val, slot0, slot1, channels_hw, width, kernel, stride, pad, out_height, out_width,
                   col):
    """im2col of the events of slots ``slot0:slot1``: ``col`` float32 ``[C*K*K, n*Ho*Wo]``,
    row ``(c*K + ky)*K + kx``, column ``j*Ho*Wo + oy*Wo + ox`` for the chunk's slot j,
    holds the input cell that tap (ky, kx) of output (oy, ox) reads (0 for padding and
    cells without events). ``channels_hw`` is ``H*W``."""
    out_cells = out_height * out_width
    n_rows = col.shape[0]
    for j in prange(slot1 - slot0):
        s = slot0 + j
        o = j * out_cells
        for r in range(n_rows):
            col[r, o:o + out_cells] = 0.0
        for e in range(ptr[s], ptr[s + 1]):
            i = idx[e]
            c = i // channels_hw
            rest = i - c * channels_hw
            y = rest // width
            x = rest - y * width
            v = val[e]
            ky0, ky1, oy0 = valid_tap_range(y, pad, kernel, stride, out_height)
            kx0, kx1, ox0 = valid_tap_range(x, pad, kernel, stride, out_width)
            oy = oy0
            for ky in range(ky0, ky1, stride):
                ox = ox0
                for kx in range(kx0, kx1, stride):
                    col[(c * kernel + ky) * kernel + kx, o + oy * out_width + ox] = v
                    ox -= 1
                oy -= 1


@njit(parallel=True, cache=True)
def _im2col_dense(x, height, width, kernel, stride, pad, out_height, out_width, col):
    """im2col of dense rows ``x`` float32 ``[n, C*H*W]`` into ``col`` ``[C*K*K, n*Ho*Wo]``
    (layout of :func:`_im2col_events`)."""
    out_cells = out_height * out_width
    hw = height * width
    n_rows = col.shape[0]
    for j in prange(x.shape[0]):
        o = j * out_cells
        for r in range(n_rows):
            c = r // (kernel * kernel)
            ky = (r // kernel) % kernel
            kx = r % kernel
            for oy in range(out_height):
                iy = oy * stride - pad + ky
                for ox in range(out_width):
                    ix = ox * stride - pad + kx
                    inside = 0 <= iy < height and 0 <= ix < width
                    col[r, o + oy * out_width + ox] = x[j, c * hw + iy * width + ix] if inside else 0.0


@njit(parallel=True, cache=True)
def _blocks_to_slots(blocks, out_cells, slot0, out):
    """``out[slot0 + j, f*Ho*Wo + p] = blocks[f, j*Ho*Wo + p]``: a GEMM result ``[F, n*Ho*Wo]``
    into the rows of currents (filter-major per slot)."""
    n_blocks = blocks.shape[0]
    for j in prange(blocks.shape[1] // out_cells):
        for f in range(n_blocks):
            out[slot0 + j, f * out_cells:(f + 1) * out_cells] = blocks[f, j * out_cells:(j + 1) * out_cells]


@njit(parallel=True, cache=True)
def _slots_to_blocks(rows, out_cells, slot0, blocks):
    """The inverse of :func:`_blocks_to_slots`: ``blocks[f, j*Ho*Wo + p] = rows[slot0 + j, f*Ho*Wo + p]``."""
    n_blocks = blocks.shape[0]
    for j in prange(blocks.shape[1] // out_cells):
        for f in range(n_blocks):
            blocks[f, j * out_cells:(j + 1) * out_cells] = rows[slot0 + j, f * out_cells:(f + 1) * out_cells]


def chunk_slots(n_slots: int, bytes_per_slot: int, max_bytes: int) -> int:
    """Slots per chunk of a GEMM path so that its buffers stay within ``max_bytes`` (at least one)."""
    return int(max(1, min(n_slots, max_bytes // max(bytes_per_slot, 1))))


@njit(parallel=True, cache=True)
def _col2im(col, slot0, height, width, kernel, stride, pad, out_height, out_width, out):
    """The transpose of :func:`_im2col_dense`: ``out[slot0 + j]`` (float32 ``[C*H*W]``,
    overwritten) = the sum, over every tap, of ``col`` ``[C*K*K, n*Ho*Wo]`` entries that
    read that cell (padding cells dropped)."""
    out_cells = out_height * out_width
    hw = height * width
    n_rows = col.shape[0]
    for j in prange(col.shape[1] // out_cells):
        s = slot0 + j
        out[s, :] = 0.0
        o = j * out_cells
        for r in range(n_rows):
            c = r // (kernel * kernel)
            ky = (r // kernel) % kernel
            kx = r % kernel
            for oy in range(out_height):
                iy = oy * stride - pad + ky
                if iy < 0 or iy >= height:
                    continue
                for ox in range(out_width):
                    ix = ox * stride - pad + kx
                    if 0 <= ix < width:
                        out[s, c * hw + iy * width + ix] += col[r, o + oy * out_width + ox]


class PoolGeometry(NamedTuple):
    """Shape of a ``kernel`` x ``kernel`` pooling of stride ``kernel`` over ``channels`` maps of
    ``height`` x ``width``: output ``out_height = height // kernel`` (PyTorch floors: the
    last rows and columns that do not fill a window are dropped). Build with
    :func:`pool_geometry`."""

    channels: int
    height: int
    width: int
    kernel: int
    out_height: int
    out_width: int

    @property
    def n_in(self) -> int:
        return self.channels * self.height * self.width

    @property
    def n_out(self) -> int:
        return self.channels * self.out_height * self.out_width


def pool_geometry(channels: int, height: int, width: int, kernel: int) -> PoolGeometry:
    """The :class:`PoolGeometry` of a pooling; refuses a window larger than the map.

    Raises
    ------
    ValueError
        A size that is not a whole number, a size below 1, or ``kernel`` larger than
        ``height`` or ``width``.
    """
    channels, height, width, kernel = (
        _whole("pool", name, value) for name, value in (("channels", channels), ("height", height), ("width", width),
                                                        ("kernel", kernel)))
    for name, value in (("channels", channels), ("height", height), ("width", width), ("kernel", kernel)):
        if value < 1:
            raise ValueError(f"pool geometry: {name} must be >= 1, got {value}")
    if kernel > height or kernel > width:
        raise ValueError(f"pool geometry: a {kernel}x{kernel} window is larger than the {height}x{width} map")
    return PoolGeometry(channels, height, width, kernel, height // kernel, width // kernel)


@njit(parallel=True, cache=True)
def _compact_events(ptr, counts, idx, val, out_ptr, out_idx, out_val):
    """Copy slot s's first ``counts[s]`` entries at ``ptr[s]`` of ``idx``/``val`` to
    ``out_ptr[s]`` (an upper-bound buffer made exact)."""
    for s in prange(ptr.shape[0] - 1):
        n = counts[s]
        out_idx[out_ptr[s]:out_ptr[s] + n] = idx[ptr[s]:ptr[s] + n]
        out_val[out_ptr[s]:out_ptr[s] + n] = val[ptr[s]:ptr[s] + n]


def padded_lanes(n: int) -> int:
    """``n`` rounded up to whole 16-lane vectors (at least one)."""
    return max(1, -(-n // 16)) * 16


def zero_padded(values: np.ndarray, n: int) -> np.ndarray:
    """float32 ``[n]``: ``values`` (one per alive filter) followed by zeros, for the padding
    lanes of a kernel's filter blocks."""
    out = np.zeros(n, dtype=np.float32)
    out[:values.shape[0]] = values
    return out


def row_weights(indptr: np.ndarray, columns: np.ndarray, data: np.ndarray, n_blocks: int) -> np.ndarray:
    """The *row* layout of the event paths: float32 ``[C, K*K, F_pad]``, entry ``(c, ky*K + kx, f)``
    = ``w[c -> f, ky, kx]``, zeros where no kernel is stored and in the padding lanes
    ``F..F_pad-1`` (``F_pad`` = :func:`padded_lanes` of ``n_blocks``). One tap of one
    channel is then ``F_pad / 16`` whole vectors, contiguous."""
    n_channels = indptr.shape[0] - 1
    taps = data.shape[1] * data.shape[2]
    rows = np.zeros((n_channels, taps, padded_lanes(n_blocks)), dtype=np.float32)
    rows[kernel_rows(indptr), :, columns] = data.reshape(-1, taps)
    return rows


@njit(cache=True)
def with_kernels(rows):
    """bool ``[n]``: whether ``rows[i]`` holds a nonzero weight: a channel's weight rows in
    the row layout (:func:`row_weights`), or a filter's in the transposed one
    (:func:`filter_weights`)."""
    has_kernels = np.zeros(rows.shape[0], dtype=np.bool_)
    for i in range(rows.shape[0]):
        has_kernels[i] = np.any(rows[i] != 0)
    return has_kernels


def filter_weights(indptr: np.ndarray, columns: np.ndarray, data: np.ndarray, n_filters: int) -> np.ndarray:
    """The transposed row layout: float32 ``[F, K*K, C_pad]``, entry ``(f, tap, c)`` =
    ``w[c -> f, tap]``, zeros where no kernel is stored and in the padding lanes."""
    n_channels = indptr.shape[0] - 1
    taps = data.shape[1] * data.shape[2]
    rows = np.zeros((n_filters, taps, padded_lanes(n_channels)), dtype=np.float32)
    rows[columns, :, kernel_rows(indptr)] = data.reshape(-1, taps)
    return rows


@njit(cache=True, inline="always")
def _to_cell_major(rows, s, n_blocks, cells, lanes, scratch):
    """``scratch[p*lanes + f] = rows[s, f*cells + p]``: slot s's block-major row as one
    ``lanes``-wide vector row per cell (the lanes past ``n_blocks`` written zero, except
    in the last ``cells % 16`` cells, where they are left as they are). Whole 16 x 16
    blocks go through registers (:func:`~evsim.kernels.simd.transpose16`): a scalar copy
    of conv1's 15,360 units per slot took longer than the slot's events."""
    base = s * rows.shape[1]
    whole = cells - cells % LANES
    # A last run of fewer than 16 blocks goes through a 16 x 16 block whose rows past them
    # stay zero, and is stored in whole vectors: zeros into the padding lanes. Masked
    # stores of its rows' lanes made conv2's transposes (40 filters, 2,000 slots, 1
    # thread) 16.8-22.3 against 13.3-15.0 ms on AVX2 (benchmarks/RESULTS.md).
    block = np.zeros(2 * LANES * LANES, dtype=np.float32)
    for f0 in range(0, n_blocks, LANES):
        n_rows = min(LANES, n_blocks - f0)
        for p0 in range(0, whole, LANES):
            if n_rows == LANES:
                transpose16(rows, base + f0 * cells + p0, cells, scratch, p0 * lanes + f0, lanes)
            else:
                for j in range(n_rows):
                    store(block, j * LANES, load(rows, base + (f0 + j) * cells + p0, LANES), LANES)
                transpose16(block, 0, LANES, block, LANES * LANES, LANES)
                for i in range(LANES):
                    store(scratch, (p0 + i) * lanes + f0, load(block, (LANES + i) * LANES, LANES), LANES)
    for f in range(n_blocks):
        o = f * cells
        for p in range(whole, cells):
            scratch[p * lanes + f] = rows[s, o + p]


@njit(cache=True, inline="always")
def _from_cell_major(scratch, n_blocks, cells, lanes, out, s):
    """``out[s, f*cells + p] = scratch[p*lanes + f]``, the inverse of :func:`_to_cell_major`."""
    for f in range(n_blocks):
        o = f * cells
        for p in range(cells):
            out[s, o + p] = scratch[p * lanes + f]


@njit(cache=True)
def unit_taps(n_channels, height, width, kernel, stride, pad, out_height, out_width):
    """Per input unit ``c*H*W + y*W + x``, int32 ``[C*H*W, 8]``: ``(c, ky0, ky1, oy0, kx0,
    kx1, ox0, 0)``, its channel and :func:`valid_tap_range` in y and x. Event kernels
    look these up instead of dividing: six integer divisions by runtime values per
    event cost as much as its vector adds."""
    hw = height * width
    out = np.zeros((n_channels * hw, 8), dtype=np.int32)
    for y in range(height):
        ky0, ky1, oy0 = valid_tap_range(y, pad, kernel, stride, out_height)
        for x in range(width):
            kx0, kx1, ox0 = valid_tap_range(x, pad, kernel, stride, out_width)
            for c in range(n_channels):
                i = c * hw + y * width + x
                out[i, 0] = c
                out[i, 1] = ky0
                out[i, 2] = ky1
                out[i, 3] = oy0
                out[i, 4] = kx0
                out[i, 5] = kx1
                out[i, 6] = ox0
    return out


@njit(cache=True, inline="always")
def _add_taps(c, v, ky0, ky1, oy, kx0, kx1, ox0, kernel, stride, out_width, lanes, src, dst, into_taps):
    """:func:`add_unit_rows` once its unit is looked up."""
    n_taps = (kx1 - kx0 + stride - 1) // stride
    for ky in range(ky0, ky1, stride):
        cell = (oy * out_width + ox0) * lanes
        tap = ((c * kernel + ky) * kernel + kx0) * lanes
        for _ in range(n_taps):
            a, b = (tap, cell) if into_taps else (cell, tap)
            for j in range(0, lanes, LANES):
                store(dst, a + j, load(dst, a + j, LANES) + v * load(src, b + j, LANES), LANES)
            cell -= lanes
            tap += stride * lanes
        oy -= 1


@njit(cache=True, inline="always")
def add_unit_rows(i, v, units, wanted, kernel, stride, out_width, lanes, src, dst, into_taps):
    """Input unit ``i``'s value ``v`` over its valid taps, in the row layout (rows of
    ``lanes``): per tap of a ``wanted`` channel, ``dst`` row += ``v`` x ``src`` row, where
    one row is the output cell's (cell-major, :func:`_to_cell_major`) and the other the
    (channel, tap) row of weights. ``into_taps`` False: the forward's currents (``dst``
    by cell, ``src`` the weights); True: the weight gradient's sums (``dst`` by tap,
    ``src`` dL/du by cell). A constant at each call, so the choice folds away. The row
    addresses step along a kernel row instead of being recomputed per tap, and stride 1
    with rows of one vector (up to 16 filters) or three (33-48: conv2 of the paper's
    networks) takes a copy with both constant: timing the scatter alone of conv1 of the
    paper's network (15 filters), a loop with the lane count constant took 7.1-8.2 ms
    against 8.4-10.9 with it known only at run time; conv2's weight gradient, 32-33
    against 38-46 ms (benchmarks/RESULTS.md)."""
    c = units[i, 0]
    if not wanted[c]:
        return
    ky0, ky1, oy, kx0, kx1, ox0 = units[i, 1], units[i, 2], units[i, 3], units[i, 4], units[i, 5], units[i, 6]
    if stride == 1 and lanes == LANES:
        _add_taps(c, v, ky0, ky1, oy, kx0, kx1, ox0, kernel, 1, out_width, LANES, src, dst, into_taps)
    elif stride == 1 and lanes == 3 * LANES:
        _add_taps(c, v, ky0, ky1, oy, kx0, kx1, ox0, kernel, 1, out_width, 3 * LANES, src, dst, into_taps)
    else:
        _add_taps(c, v, ky0, ky1, oy, kx0, kx1, ox0, kernel, stride, out_width, lanes, src, dst, into_taps)


@njit(cache=True, inline="always")
def add_event_rows(ptr, idx, val, s, units, wanted, kernel, stride, out_width, lanes, src, dst, into_taps):
    """Slot ``s``'s events over their valid taps, in the row layout: per event,
    :func:`add_unit_rows`."""
    for e in range(ptr[s], ptr[s + 1]):
        add_unit_rows(idx[e], val[e], units, wanted, kernel, stride, out_width, lanes, src, dst, into_taps)


@njit(cache=True, inline="always")
def add_event_kernels(ptr, idx, val, s, o, units, indptr, offsets, kernel, stride, out_width, cells, taps, into_taps):
    """Slot ``s``'s events over their valid taps, kernel by kernel (the block CSR's
    ``indptr`` by channel, sixteen kernels a vector): per event and tap, the kernels'
    entries of ``cells`` (gathered at ``o + offsets[k] + oy*Wo + ox``: one filter block
    each) and their tap-major entries of ``taps`` (``(ky*K + kx)*nnz + k``) meet.
    ``into_taps`` False: the forward's currents, ``cells += v * taps``; True: the weight
    gradient's sums, ``taps += v * cells`` (``cells`` dL/du). A constant at each call,
    so the choice folds away."""
    nnz = offsets.shape[0]
    for e in range(ptr[s], ptr[s + 1]):
        i = idx[e]
        c = units[i, 0]
        k0, k1 = indptr[c], indptr[c + 1]
        if k0 == k1:
            continue
        v = val[e]
        ky0, ky1, oy0 = units[i, 1], units[i, 2], units[i, 3]
        kx0, kx1, ox0 = units[i, 4], units[i, 5], units[i, 6]
        oy = oy0
        for ky in range(ky0, ky1, stride):
            ox = ox0
            for kx in range(kx0, kx1, stride):
                base = o + oy * out_width + ox
                tap = (ky * kernel + kx) * nnz
                for k in range(k0, k1, LANES):
                    lanes = min(LANES, k1 - k)
                    if into_taps:
                        store(taps, tap + k, load(taps, tap + k, lanes) + v * gather(cells, base, offsets, k, lanes),
                              lanes)
                    else:
                        scatter(cells, base, offsets, k,
                                gather(cells, base, offsets, k, lanes) + v * load(taps, tap + k, lanes), lanes)
                ox -= 1
            oy -= 1


@njit(cache=True)
def pool_bands(channels, height, width, kernel, out_height, out_width):
    """Per input unit of a pooling, int32 ``[C*H*W, 2]``: its output row ``c*Ho + y // k``
    (-1 for cells past the last whole window) and output column ``x // k``, looked up
    by the pooling kernels instead of four integer divisions per event."""
    hw = height * width
    out = np.full((channels * hw, 2), -1, dtype=np.int32)
    for c in range(channels):
        for y in range(height):
            for x in range(width):
                if y // kernel < out_height and x // kernel < out_width:
                    out[c * hw + y * width + x, 0] = c * out_height + y // kernel
                    out[c * hw + y * width + x, 1] = x // kernel
    return out
