"""Error a spiking 2-D convolution sends down: dL/dx, the transposed convolution of dL/du.

``dL/dx[s, c, y, x] = sum_{f, valid taps} w[c -> f, ky, kx] * dL/du[s, f, oy, ox]``
(``y = oy*S - P + ky``, likewise in x; :mod:`evsim.kernels.conv_geometry`). Float32
``[T*B, C_in*H*W]``, C-contiguous. Five variants, the same result (exactly, for sums
float32 holds exactly):

``scatter``  from the nonzero entries of ``grad_u`` only: with the rectangular surrogate
             dL/du is zero for most units at most steps (Perez-Nieves & Goodman 2021),
             so each nonzero entry adds, per valid tap, its filter's weight row over the
             input channels (``[K*K, C_pad]``, zeros for missing kernels) to the input
             cell's row of a cell-major scratch ``[H*W, C_pad]``, transposed into the
             slot's channel-major row at the end.
``gather``   only at the input cells a mask marks (those where the layer below has a
             nonzero surrogate derivative, so its error is used): the slot's dL/du is
             transposed to cell-major ``[Ho*Wo, F_pad]`` (slots with a marked cell
             only), and each marked cell sums, over its valid taps, the output cell's
             row times its channel's weight row; unmarked cells get 0.
``scatter_csr``, ``gather_csr``  the same by 16-lane gathers and scatters over the
             stored kernels (scatter) or one kernel at a time (gather).
``direct``   (stride 1) the transposed convolution itself: the convolution of the
             slot's dL/du with the flipped kernels, register-blocked
             (:mod:`evsim.kernels.conv_direct`), so no im2col matrix is written or read;
             slots whose dL/du is all zero cost a test. Strided convolutions go to
             ``dense``.
``winograd`` (3 x 3, stride 1) the same transposed convolution by Winograd's F(2x2, 3x3)
             (:mod:`evsim.kernels.conv_winograd`): 16 multiply-adds a tile and pair
             instead of 36.
``dense``    ``[C*K*K, F] @ [F, n*Ho*Wo]`` (one BLAS GEMM per chunk of slots), then
             col2im.
"""
from __future__ import annotations

import numpy as np
from numba import get_num_threads, njit, prange

from evsim.kernels.conv_forward import DENSE_CHUNK_BYTES
from evsim.kernels.conv_direct import backward_taps, block_scratch, direct_slot, fill_rows, zeros_on_lines
from evsim.kernels.conv_geometry import (ConvGeometry, _col2im, _from_cell_major, _slots_to_blocks,
                                         _to_cell_major, block_offsets, by_filter, with_kernels,
                                         check_block_csr, check_grad,
                                         check_out, chunk_slots,
                                         dense_filter_matrix, filter_weights, row_weights, tap_major,
                                         unit_taps)
from evsim.kernels.conv_winograd import applies as winograd_applies
from evsim.kernels.conv_winograd import (input_transform, sums_scratch, tile_layout, transposed_weights,
                                         winograd_slot_lif)
from evsim.kernels.events import _row_bits
from evsim.kernels.simd import LANES, all_zero, gather, load, lowest_bit, scatter, splat, store


@njit(parallel=True, cache=True)
def _conv_input_grad_scatter_csr(grad_u, filter_ptr, in_offsets, taps, height, width, kernel, stride, pad, out_height,
                                 out_width, out):
    """One slot per task. ``filter_ptr`` int64 ``[F+1]``: filter f's kernels are
    ``filter_ptr[f]:filter_ptr[f+1]`` of ``in_offsets`` (int32, their channels times
    ``H*W``, ascending) and of the tap-major weights ``taps`` ``[K*K, nnz]`` (in the
    same filter order)."""
    n_in = out.shape[1]
    nnz = in_offsets.shape[0]
    out_cells = out_height * out_width
    flat = out.reshape(out.size)
    weights = taps.reshape(taps.size)
    for s in prange(out.shape[0]):
        o = s * n_in
        flat[o:o + n_in] = 0.0
        for f in range(filter_ptr.shape[0] - 1):
            j0, j1 = filter_ptr[f], filter_ptr[f + 1]
            if j0 == j1:
                continue
            for p in range(out_cells):
                gv = grad_u[s, f * out_cells + p]
                if gv == 0:
                    continue
                oy = p // out_width
                ox = p - oy * out_width
                for ky in range(kernel):
                    iy = oy * stride - pad + ky
                    if iy < 0 or iy >= height:
                        continue
                    for kx in range(kernel):
                        ix = ox * stride - pad + kx
                        if ix < 0 or ix >= width:
                            continue
                        base = o + iy * width + ix
                        w0 = (ky * kernel + kx) * nnz
                        for j in range(j0, j1, LANES):
                            lanes = min(LANES, j1 - j)
                            scatter(flat, base, in_offsets, j,
                                    gather(flat, base, in_offsets, j, lanes) + gv * load(weights, w0 + j, lanes),
                                    lanes)


@njit(parallel=True, cache=True)
def _conv_input_grad_gather_csr(grad_u, mask, indptr, offsets, weights, height, width, kernel, stride, pad, out_height,
                                out_width, out):
    """One slot per task; the marked cells of a slot's ``mask`` row (uint8) are found 64
    bytes at a time. ``offsets`` = ``columns * Ho*Wo``; ``weights`` the tap-major
    ``[K*K, nnz]`` weights, raveled."""
    n_in = out.shape[1]
    nnz = offsets.shape[0]
    one = np.uint64(1)
    units = unit_taps(indptr.shape[0] - 1, height, width, kernel, stride, pad, out_height, out_width)
    for s in prange(out.shape[0]):
        row = mask[s]
        out[s, :] = 0.0
        g = grad_u[s]
        for i0 in range(0, n_in, 64):
            bits = _row_bits(row, i0, n_in)
            while bits:
                i = i0 + lowest_bit(bits)
                bits &= bits - one
                c = units[i, 0]
                k0, k1 = indptr[c], indptr[c + 1]
                if k0 == k1:
                    continue
                ky0, ky1, oy0 = units[i, 1], units[i, 2], units[i, 3]
                kx0, kx1, ox0 = units[i, 4], units[i, 5], units[i, 6]
                acc = np.float32(0.0)
                oy = oy0
                for ky in range(ky0, ky1, stride):
                    ox = ox0
                    for kx in range(kx0, kx1, stride):
                        p = oy * out_width + ox
                        w0 = (ky * kernel + kx) * nnz
                        for k in range(k0, k1):
                            acc += weights[w0 + k] * g[offsets[k] + p]
                        ox -= 1
                    oy -= 1
                out[s, i] = acc


@njit(parallel=True, cache=True)
def _conv_input_grad_direct(grad_u, offsets, weights, bounds, n_filters, out_height, out_width, kernel, pad, height,
                            width, rows, width_pad, out):
    """Stride 1: the transposed convolution is the convolution of dL/du (``n_filters``
    channels of ``Ho x Wo``) with the flipped kernels and padding ``K-1-P``
    (:func:`evsim.kernels.conv_direct.direct_slot`). Each task takes the slots
    ``bounds[task]:bounds[task+1]`` with its own shifted copies."""
    n_in = out.shape[1]
    n_channels = n_in // (height * width)
    cells = out_height * out_width
    flip = kernel - 1 - pad
    for task in prange(bounds.shape[0] - 1):
        shifted = zeros_on_lines(kernel * n_filters * rows * width_pad)
        block = block_scratch()
        for s in range(bounds[task], bounds[task + 1]):
            if all_zero(grad_u[s], 0, grad_u.shape[1]):
                out[s, :] = 0.0
                continue
            fill_rows(grad_u, s * n_filters * cells, n_filters, out_height, out_width, flip, kernel, rows, width_pad,
                      shifted)
            direct_slot(shifted, width_pad, offsets, weights, n_channels, height, width, out, s * n_in, block)


@njit(parallel=True, cache=True)
def _conv_input_grad_winograd(grad_u, used, weights, bounds, n_filters, out_height, out_width, pad, height, width,
                              tile_cols, n_vec, rows, width_pad, out):
    """As :func:`_conv_input_grad_direct`, the transposed convolution by Winograd's
    F(2x2, 3x3) (:mod:`evsim.kernels.conv_winograd`) with the flipped kernels ``weights``
    (:func:`evsim.kernels.conv_winograd.transposed_weights`); ``pad`` the padding of the
    transposed convolution, ``K-1-P``."""
    n_channels = out.shape[1] // (height * width)
    cells = out_height * out_width
    n_used = used.shape[0]
    for task in prange(bounds.shape[0] - 1):
        padded = zeros_on_lines(n_filters * rows * width_pad)
        transformed = zeros_on_lines(16 * n_used * n_vec * LANES)
        sums = sums_scratch()
        no_bias = np.zeros(weights.shape[0] * weights.shape[3], dtype=np.float32)
        no_state = np.empty(0, dtype=np.float32)
        no_spikes = np.empty(0, dtype=np.uint8)
        for s in range(bounds[task], bounds[task + 1]):
            if all_zero(grad_u[s], 0, grad_u.shape[1]):
                out[s, :] = 0.0
                continue
            fill_rows(grad_u, s * n_filters * cells, n_filters, out_height, out_width, pad, 1, rows, width_pad, padded)
            input_transform(padded, rows, width_pad, used, tile_cols, n_vec, transformed)
            winograd_slot_lif(transformed, weights, n_used, n_vec, tile_cols, n_channels, height, width, no_bias,
                              no_state, np.float32(0.0), np.float32(0.0), False, no_spikes, out[s], sums)


def _even_bounds(n_slots, n_tasks):
    return np.arange(n_tasks + 1, dtype=np.int64) * n_slots // n_tasks


@njit(parallel=True, cache=True)
def _conv_input_grad_scatter_rows(grad_u, weights_by_filter, bounds, height, width, kernel, stride, pad,
                                  out_height, out_width, out):
    """``weights_by_filter`` float32 ``[F, K*K, C_pad]``
    (:func:`evsim.kernels.conv_geometry.filter_weights`); each task takes the slots
    ``bounds[task]:bounds[task+1]`` with its own ``[H*W, C_pad]`` scratch."""
    has_kernels = with_kernels(weights_by_filter)
    for task in prange(bounds.shape[0] - 1):
        scratch = np.empty(height * width * weights_by_filter.shape[2], dtype=np.float32)
        for s in range(bounds[task], bounds[task + 1]):
            scatter_slot(grad_u[s], weights_by_filter, has_kernels, height, width, kernel, stride, pad, out_height,
                         out_width, scratch, out, s)


@njit(cache=True, inline="always")
def scatter_slot(grad_row, weights_by_filter, has_kernels, height, width, kernel, stride, pad, out_height, out_width,
                 scratch, out, s):
    """Slot ``s`` of the ``scatter`` variant: each nonzero entry of its dL/du ``grad_row``
    ``[F*Ho*Wo]`` adds, per valid tap, its filter's weight row to the input cell's row of
    ``scratch`` (``[H*W, C_pad]``, cell-major), transposed into ``out[s]`` ``[C*H*W]``."""
    n_filters, n_taps, lanes = weights_by_filter.shape
    hw = height * width
    cells = out_height * out_width
    weights = weights_by_filter.reshape(weights_by_filter.size)
    scratch[:] = 0.0
    for f in range(n_filters):
        if not has_kernels[f]:
            continue
        for p in range(cells):
            gv = grad_row[f * cells + p]
            if gv == 0:
                continue
            oy = p // out_width
            ox = p - oy * out_width
            for ky in range(kernel):
                iy = oy * stride - pad + ky
                if iy < 0 or iy >= height:
                    continue
                for kx in range(kernel):
                    ix = ox * stride - pad + kx
                    if ix < 0 or ix >= width:
                        continue
                    a = (iy * width + ix) * lanes
                    w = (f * n_taps + ky * kernel + kx) * lanes
                    for j in range(0, lanes, LANES):
                        store(scratch, a + j, load(scratch, a + j, LANES) + gv * load(weights, w + j, LANES), LANES)
    _from_cell_major(scratch, out.shape[1] // hw, hw, lanes, out, s)


@njit(parallel=True, cache=True)
def _conv_input_grad_gather_rows(grad_u, mask, rows, bounds, height, width, kernel, stride, pad, out_height,
                                 out_width, out):
    """``rows`` float32 ``[C, K*K, F_pad]`` (:func:`evsim.kernels.conv_geometry.row_weights`);
    each task takes the slots ``bounds[task]:bounds[task+1]``; a slot's dL/du is made
    cell-major at its first marked cell."""
    n_channels, n_taps, lanes = rows.shape
    n_in = out.shape[1]
    cells = out_height * out_width
    n_filters = grad_u.shape[1] // cells
    weights = rows.reshape(rows.size)
    has_kernels = with_kernels(rows)
    one = np.uint64(1)
    units = unit_taps(rows.shape[0], height, width, kernel, stride, pad, out_height, out_width)
    for task in prange(bounds.shape[0] - 1):
        scratch = np.zeros(cells * lanes, dtype=np.float32)  # padding lanes stay 0
        lane_sums = np.empty(LANES, dtype=np.float32)
        for s in range(bounds[task], bounds[task + 1]):
            row = mask[s]
            out[s, :] = 0.0
            ready = False
            for i0 in range(0, n_in, 64):
                bits = _row_bits(row, i0, n_in)
                while bits:
                    i = i0 + lowest_bit(bits)
                    bits &= bits - one
                    c = units[i, 0]
                    if not has_kernels[c]:
                        continue
                    if not ready:
                        _to_cell_major(grad_u, s, n_filters, cells, lanes, scratch)
                        ready = True
                    ky0, ky1, oy0 = units[i, 1], units[i, 2], units[i, 3]
                    kx0, kx1, ox0 = units[i, 4], units[i, 5], units[i, 6]
                    total = splat(np.float32(0.0))
                    oy = oy0
                    for ky in range(ky0, ky1, stride):
                        ox = ox0
                        for kx in range(kx0, kx1, stride):
                            a = (oy * out_width + ox) * lanes
                            w = ((c * kernel + ky) * kernel + kx) * lanes
                            for j in range(0, lanes, LANES):
                                total = total + load(scratch, a + j, LANES) * load(weights, w + j, LANES)
                            ox -= 1
                        oy -= 1
                    store(lane_sums, 0, total, LANES)
                    acc = np.float32(0.0)
                    for lane in range(LANES):
                        acc += lane_sums[lane]
                    out[s, i] = acc


def conv_input_grad_scatter(grad_u: np.ndarray, indptr: np.ndarray, columns: np.ndarray, data: np.ndarray,
                            geometry: ConvGeometry, out: np.ndarray) -> None:
    """dL/dx from the nonzero entries of dL/du (row layout).

    Parameters
    ----------
    grad_u : float32 ``[T*B, F_alive*Ho*Wo]``, C-contiguous: dL/du of the layer.
    indptr, columns, data : the block CSR (int32, int32, float32 ``[nnz, K, K]``).
    geometry : the convolution.
    out : float32 ``[T*B, C_in*H*W]``, C-contiguous, overwritten with dL/dx.

    Cost: a scan of ``grad_u``, per nonzero entry (its valid taps) x ``C_pad / 16``
    vector adds, and a transpose of ``C*H*W`` per slot.
    """
    n_filters = _prepare(grad_u, indptr, columns, data, geometry, out)
    g = geometry
    _conv_input_grad_scatter_rows(grad_u, filter_weights(indptr, columns, data, n_filters),
                                  _even_bounds(grad_u.shape[0], get_num_threads()), g.height, g.width, g.kernel,
                                  g.stride, g.pad, g.out_height, g.out_width, out)


def _check_mask(mask, shape):
    if mask.dtype == np.bool_:
        mask = mask.view(np.uint8)
    if mask.dtype != np.uint8 or mask.shape != shape or not mask.flags.c_contiguous:
        raise ValueError(f"mask must be C-contiguous uint8 or bool {shape}, got {mask.dtype} {mask.shape}")
    return mask


def conv_input_grad_gather(grad_u: np.ndarray, mask: np.ndarray, indptr: np.ndarray, columns: np.ndarray,
                           data: np.ndarray, geometry: ConvGeometry, out: np.ndarray) -> None:
    """dL/dx at the input cells ``mask`` marks, 0 elsewhere (row layout).

    Parameters
    ----------
    grad_u, indptr, columns, data, geometry, out : as :func:`conv_input_grad_scatter`.
    mask : uint8 or bool ``[T*B, C_in*H*W]``, C-contiguous: nonzero where dL/dx is
        wanted (the layer below's surrogate derivative is nonzero there).

    Cost: a scan of the mask (64 cells per step); per slot with a marked cell, a
    transpose of ``grad_u``'s row; per marked cell, (its valid taps) x ``F_pad / 16``
    vector multiply-adds.
    """
    n_filters = _prepare(grad_u, indptr, columns, data, geometry, out)
    g = geometry
    mask = _check_mask(mask, out.shape)
    _conv_input_grad_gather_rows(grad_u, mask, row_weights(indptr, columns, data, n_filters),
                                 _even_bounds(grad_u.shape[0], get_num_threads()), g.height, g.width, g.kernel,
                                 g.stride, g.pad, g.out_height, g.out_width, out)


def _prepare(grad_u, indptr, columns, data, geometry, out):
    g = geometry
    n_slots = grad_u.shape[0]
    n_filters = check_grad(grad_u, n_slots, g.out_cells)
    check_out(out, n_slots, g.n_in)
    check_block_csr(indptr, columns, data, g, n_filters)
    return n_filters


def conv_input_grad_scatter_csr(grad_u: np.ndarray, indptr: np.ndarray, columns: np.ndarray, data: np.ndarray,
                                geometry: ConvGeometry, out: np.ndarray) -> None:
    """dL/dx from the nonzero entries of dL/du, sixteen channels per gather-add-scatter
    (the ``csr`` variant of :func:`conv_input_grad_scatter`).

    Parameters
    ----------
    grad_u : float32 ``[T*B, F_alive*Ho*Wo]``, C-contiguous: dL/du of the layer.
    indptr, columns, data : the block CSR (int32, int32, float32 ``[nnz, K, K]``).
    geometry : the convolution.
    out : float32 ``[T*B, C_in*H*W]``, C-contiguous, overwritten with dL/dx.

    Cost: a scan of ``grad_u`` plus, per nonzero entry, (its valid taps) x (kernels of
    its filter) accumulates.
    """
    n_filters = _prepare(grad_u, indptr, columns, data, geometry, out)
    g = geometry
    filter_ptr, order = by_filter(indptr, columns, n_filters)
    rows = np.repeat(np.arange(g.in_channels, dtype=np.int64), np.diff(indptr))
    in_offsets = (rows[order] * (g.height * g.width)).astype(np.int32)
    _conv_input_grad_scatter_csr(grad_u, filter_ptr, in_offsets, tap_major(data[order]), g.height, g.width, g.kernel,
                             g.stride, g.pad, g.out_height, g.out_width, out)


def conv_input_grad_gather_csr(grad_u: np.ndarray, mask: np.ndarray, indptr: np.ndarray, columns: np.ndarray,
                               data: np.ndarray, geometry: ConvGeometry, out: np.ndarray) -> None:
    """dL/dx at the input cells ``mask`` marks, 0 elsewhere, one stored kernel at a time
    (the ``csr`` variant of :func:`conv_input_grad_gather`).

    Parameters
    ----------
    grad_u, indptr, columns, data, geometry, out : as :func:`conv_input_grad_scatter`.
    mask : uint8 or bool ``[T*B, C_in*H*W]``, C-contiguous: nonzero where dL/dx is
        wanted (the layer below's surrogate derivative is nonzero there).

    Cost: per marked cell, (its valid taps) x (kernels of its channel) multiply-adds,
    plus a scan of the mask (64 cells per step).
    """
    _prepare(grad_u, indptr, columns, data, geometry, out)
    g = geometry
    mask = _check_mask(mask, out.shape)
    _conv_input_grad_gather_csr(grad_u, mask, indptr, block_offsets(columns, g.out_cells), tap_major(data).ravel(),
                                g.height, g.width, g.kernel, g.stride, g.pad, g.out_height, g.out_width, out)


def conv_input_grad_direct(grad_u: np.ndarray, indptr: np.ndarray, columns: np.ndarray, data: np.ndarray,
                           geometry: ConvGeometry, out: np.ndarray) -> None:
    """dL/dx by the transposed convolution vectorised along x (stride 1; a strided
    convolution goes to :func:`conv_input_grad_dense`). Same arguments as
    :func:`conv_input_grad_scatter`.

    Cost per slot: a copy of dL/du into a zero-bordered map, and per channel
    ``H * ceil(W/16)`` vectors of (stored kernels of the channel) x ``K*K``
    multiply-adds; missing kernels and empty channels cost nothing. No im2col matrix
    (``C*K*K`` floats per output cell) is written or read, which the GEMM path spends
    more time on than on its products.
    """
    g = geometry
    if g.stride != 1:
        conv_input_grad_dense(grad_u, indptr, columns, data, geometry, out)
        return
    n_filters = _prepare(grad_u, indptr, columns, data, geometry, out)
    shape, offsets, weights = backward_taps(indptr, columns, data, g, n_filters)
    _conv_input_grad_direct(grad_u, offsets, weights, _even_bounds(grad_u.shape[0], get_num_threads()), n_filters,
                            g.out_height, g.out_width, g.kernel, g.pad, g.height, g.width, shape[2], shape[3], out)


def conv_input_grad_winograd(grad_u: np.ndarray, indptr: np.ndarray, columns: np.ndarray, data: np.ndarray,
                             geometry: ConvGeometry, out: np.ndarray) -> None:
    """dL/dx by the transposed convolution through Winograd's F(2x2, 3x3): 16 multiply-adds
    a 2 x 2 output tile and (filter, channel) pair instead of 36. 3 x 3 kernels at stride
    1; other convolutions go to :func:`conv_input_grad_direct`. Same arguments as
    :func:`conv_input_grad_scatter`; exact with dyadic weights, otherwise the direct
    sums up to float32 rounding."""
    g = geometry
    if not winograd_applies(g):
        conv_input_grad_direct(grad_u, indptr, columns, data, geometry, out)
        return
    n_filters = _prepare(grad_u, indptr, columns, data, geometry, out)
    used, weights = transposed_weights(indptr, columns, data, g, n_filters)
    tile_cols, n_vec, rows, width_pad = tile_layout(g.height, g.width)
    _conv_input_grad_winograd(grad_u, used, weights, _even_bounds(grad_u.shape[0], get_num_threads()), n_filters,
                              g.out_height, g.out_width, g.kernel - 1 - g.pad, g.height, g.width, tile_cols, n_vec,
                              rows, width_pad, out)


def conv_input_grad_dense(grad_u: np.ndarray, indptr: np.ndarray, columns: np.ndarray, data: np.ndarray,
                          geometry: ConvGeometry, out: np.ndarray, max_bytes: int = DENSE_CHUNK_BYTES) -> None:
    """dL/dx by one GEMM per chunk of slots, ``[C*K*K, F] @ [F, n*Ho*Wo]``, then col2im.
    Same arguments as :func:`conv_input_grad_scatter`."""
    n_filters = _prepare(grad_u, indptr, columns, data, geometry, out)
    g = geometry
    matrix_t = np.ascontiguousarray(dense_filter_matrix(indptr, columns, data, n_filters).T)
    n_slots = grad_u.shape[0]
    n_rows = g.in_channels * g.taps
    chunk = chunk_slots(n_slots, 4 * g.out_cells * (n_rows + n_filters), max_bytes)
    blocks = np.empty((n_filters, chunk * g.out_cells), dtype=np.float32)
    col = np.empty((n_rows, chunk * g.out_cells), dtype=np.float32)
    for s0 in range(0, n_slots, chunk):
        width = (min(n_slots, s0 + chunk) - s0) * g.out_cells
        if width < col.shape[1]:  # the last, shorter chunk: contiguous buffers of its own width
            blocks = np.empty((n_filters, width), dtype=np.float32)
            col = np.empty((n_rows, width), dtype=np.float32)
        _slots_to_blocks(grad_u, g.out_cells, s0, blocks)
        np.matmul(matrix_t, blocks, out=col)
        _col2im(col, s0, g.height, g.width, g.kernel, g.stride, g.pad, g.out_height, g.out_width, out)
