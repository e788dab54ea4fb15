"""Convolution kernels (forward, weight and input gradients, fan-out) against the dense
NumPy twins of tests/reference.py: exact equality with dyadic weights and values."""
import functools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evsim.kernels.conv_forward import (conv_currents_csr, conv_currents_dense, conv_currents_direct,
                                        conv_currents_events, conv_currents_static)
from evsim.kernels.conv_geometry import check_block_csr, check_events, conv_fan_out, conv_geometry
from evsim.kernels.conv_input_grad import (conv_input_grad_dense, conv_input_grad_direct, conv_input_grad_gather,
                                           conv_input_grad_gather_csr, conv_input_grad_scatter,
                                           conv_input_grad_scatter_csr, conv_input_grad_winograd)
from evsim.kernels.conv_weight_grad import (conv_weight_grad_csr, conv_weight_grad_dense, conv_weight_grad_direct,
                                            conv_weight_grad_events)
from evsim.kernels.events import dense_to_events
from tests.reference import (conv2d_forward, conv2d_input_grad, conv2d_weight_grad, conv_out_size,
                             dyadic_weights)

FORWARD = {"events": conv_currents_events,
           "csr": conv_currents_csr,
           "direct": conv_currents_direct,
           "dense": conv_currents_dense,
           "dense-chunked": lambda *a: conv_currents_dense(*a, max_bytes=1)}
WEIGHT_GRAD = {"events": conv_weight_grad_events,
               "csr": conv_weight_grad_csr,
               "direct": conv_weight_grad_direct,
               "dense": conv_weight_grad_dense,
               "dense-chunked": lambda *a: conv_weight_grad_dense(*a, max_bytes=1)}
INPUT_GRAD = {"scatter": conv_input_grad_scatter,
              "scatter_csr": conv_input_grad_scatter_csr,
              "gather": lambda g, i, c, d, geo, out: conv_input_grad_gather(g, np.ones(out.shape, np.uint8), i, c,
                                                                             d, geo, out),
              "gather_csr": lambda g, i, c, d, geo, out: conv_input_grad_gather_csr(g, np.ones(out.shape, np.uint8),
                                                                                     i, c, d, geo, out),
              "direct": conv_input_grad_direct,
              "winograd": conv_input_grad_winograd,
              "dense": conv_input_grad_dense,
              "dense-chunked": lambda *a: conv_input_grad_dense(*a, max_bytes=1)}


def block_csr(weight, stored):
    """Block CSR of dense ``weight`` ``[F, C, K, K]`` over the kernels ``stored[c, f]``."""
    rows, cols = np.nonzero(stored)  # row-major: rows ascend, columns ascend within a row
    indptr = np.zeros(stored.shape[0] + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows, minlength=stored.shape[0]), out=indptr[1:])
    return indptr, cols.astype(np.int32), np.ascontiguousarray(weight[cols, rows], dtype=np.float32)


def make_conv(rng, channels, n_filters, kernel, kernel_density=0.7, dead=()):
    """Dyadic weights of the alive filters ``[F_alive, C, K, K]`` (zero where a kernel is
    pruned), their block CSR with compacted filter indices, and the stored-kernel mask."""
    weight = dyadic_weights(rng, (n_filters, channels, kernel, kernel))
    stored = rng.random((channels, n_filters)) < kernel_density
    if channels > 1:
        stored[1, :] = False  # an empty row: a channel whose kernels are all pruned
    alive = np.setdiff1d(np.arange(n_filters), dead)
    weight, stored = weight[alive], stored[:, alive]
    weight = weight * stored.T[:, :, None, None]
    return weight, block_csr(weight, stored), stored


def event_maps(rng, shape, activity, values=(1.0, 2.0, 3.0)):
    """Sparse maps ``[T, B, C, H, W]`` with values drawn from ``values``, and their events."""
    x = (rng.random(shape) < activity) * rng.choice(np.asarray(values, dtype=np.float32), size=shape)
    x = x.astype(np.float32)
    return x, dense_to_events(x.reshape(shape[0], shape[1], -1))


def sparse_grad(rng, shape, density=0.3):
    """A dyadic dL/du with most entries zero, as the rectangular surrogate leaves it."""
    return (dyadic_weights(rng, shape, density, scale=16)).astype(np.float32)


GEOMETRIES = [(k, s, p) for k in (1, 3, 5) for s in (1, 2) for p in (0, 1, 2) if p < k]


@pytest.mark.parametrize("variant", list(FORWARD))
@pytest.mark.parametrize("kernel, stride, pad", GEOMETRIES)
def test_forward_equals_twin(rng, variant, kernel, stride, pad):
    channels, height, width, n_steps, batch = 3, 7, 9, 2, 3
    weight, (indptr, columns, data), _ = make_conv(rng, channels, 6, kernel, dead=(2,))
    x, ev = event_maps(rng, (n_steps, batch, channels, height, width), 0.3, values=(1.0, 2.0, 0.25, 0.75))
    geo = conv_geometry(channels, height, width, kernel, stride, pad)
    out = np.full((n_steps * batch, weight.shape[0] * geo.out_cells), np.nan, dtype=np.float32)
    FORWARD[variant](ev.ptr, ev.idx, ev.val, indptr, columns, data, geo, out)
    ref = conv2d_forward(x.reshape(-1, channels, height, width), weight, stride, pad)
    assert ref.shape[2:] == (geo.out_height, geo.out_width)
    np.testing.assert_array_equal(out, ref.reshape(out.shape))


def test_forward_borders_every_cell(rng):
    """A single event at each input cell in turn: every border tap lands where the twin puts it."""
    channels, height, width, kernel = 2, 5, 6, 3
    weight, (indptr, columns, data), _ = make_conv(rng, channels, 4, kernel, kernel_density=1.0)
    n_in = channels * height * width
    x = np.eye(n_in, dtype=np.float32).reshape(1, n_in, n_in)  # slot i holds cell i
    ev = dense_to_events(x)
    for stride, pad in ((1, 0), (1, 1), (2, 1), (2, 2)):
        geo = conv_geometry(channels, height, width, kernel, stride, pad)
        out = np.empty((n_in, weight.shape[0] * geo.out_cells), dtype=np.float32)
        conv_currents_events(ev.ptr, ev.idx, ev.val, indptr, columns, data, geo, out)
        ref = conv2d_forward(x.reshape(n_in, channels, height, width), weight, stride, pad)
        np.testing.assert_array_equal(out, ref.reshape(out.shape))


def test_forward_no_events_and_no_kernels(rng):
    geo = conv_geometry(2, 5, 5, 3, 1, 1)
    ev = dense_to_events(np.zeros((2, 2, geo.n_in), dtype=np.float32))
    indptr, columns, data = np.zeros(3, np.int32), np.zeros(0, np.int32), np.zeros((0, 3, 3), np.float32)
    for variant in FORWARD.values():
        out = np.full((4, 3 * geo.out_cells), np.nan, dtype=np.float32)
        variant(ev.ptr, ev.idx, ev.val, indptr, columns, data, geo, out)
        assert not out.any()


def test_static_drive_equals_twin(rng):
    channels, height, width, kernel = 2, 8, 7, 3
    weight, (indptr, columns, data), _ = make_conv(rng, channels, 5, kernel, dead=(0, 4))
    values = (rng.integers(-8, 9, (4, channels, height, width)) / 8).astype(np.float32)
    for stride, pad in ((1, 1), (2, 0)):
        geo = conv_geometry(channels, height, width, kernel, stride, pad)
        for max_bytes in (1, 1 << 20):
            got = conv_currents_static(values.reshape(4, -1), indptr, columns, data, geo, weight.shape[0], max_bytes)
            ref = conv2d_forward(values, weight, stride, pad)
            np.testing.assert_array_equal(got, ref.reshape(got.shape))


@pytest.mark.parametrize("variant", list(WEIGHT_GRAD))
@pytest.mark.parametrize("kernel, stride, pad", [(1, 1, 0), (3, 1, 1), (3, 2, 1), (5, 2, 2), (5, 1, 0)])
@pytest.mark.parametrize("n_filters, dead", [(5, (1,)), (21, (3,)), (41, (0, 7))])
def test_weight_grad_equals_twin(rng, variant, kernel, stride, pad, n_filters, dead):
    """Also with rows of two and three vectors (20 and 39 alive filters; the row layout's
    last run of fewer than 16 goes through a block, and three vectors take a copy of
    their own)."""
    channels, height, width, n_steps, batch = 3, 8, 7, 3, 2
    weight, (indptr, columns, data), stored = make_conv(rng, channels, n_filters, kernel, dead=dead)
    x, ev = event_maps(rng, (n_steps, batch, channels, height, width), 0.3)
    geo = conv_geometry(channels, height, width, kernel, stride, pad)
    grad_u = sparse_grad(rng, (n_steps * batch, weight.shape[0], geo.out_height, geo.out_width))
    got = WEIGHT_GRAD[variant](ev.ptr, ev.idx, ev.val, grad_u.reshape(n_steps * batch, -1), indptr, columns, geo)
    ref = conv2d_weight_grad(x.reshape(-1, channels, height, width), grad_u, kernel, stride, pad)
    rows, cols = np.nonzero(stored)
    assert got.shape == (columns.size, kernel, kernel)
    np.testing.assert_array_equal(got, ref[cols, rows])


@pytest.mark.parametrize("variant", list(WEIGHT_GRAD))
def test_would_be_gradients_of_missing_kernels_into_dead_filters(rng, variant):
    """The pair set is any block CSR over the blocks of the grad array the caller passes:
    here the missing kernels of 3 alive filters and 2 dead ones, whose errors the caller
    appends as blocks 3 and 4."""
    channels, height, width, kernel = 2, 6, 6, 3
    x, ev = event_maps(rng, (2, 3, channels, height, width), 0.4)
    geo = conv_geometry(channels, height, width, kernel, 1, 1)
    grads = sparse_grad(rng, (6, 5, geo.out_height, geo.out_width))
    missing = rng.random((channels, 5)) < 0.5
    missing[0, 4] = True
    indptr, columns, _ = block_csr(np.zeros((5, channels, kernel, kernel), np.float32), missing)
    got = WEIGHT_GRAD[variant](ev.ptr, ev.idx, ev.val, grads.reshape(6, -1), indptr, columns, geo)
    ref = conv2d_weight_grad(x.reshape(-1, channels, height, width), grads, kernel, 1, 1)
    rows, cols = np.nonzero(missing)
    np.testing.assert_array_equal(got, ref[cols, rows])


@pytest.mark.parametrize("variant", list(INPUT_GRAD))
@pytest.mark.parametrize("kernel, stride, pad", [(1, 1, 0), (3, 1, 1), (3, 2, 1), (5, 2, 2), (5, 1, 0), (3, 2, 0)])
@pytest.mark.parametrize("n_filters", [6, 42])
def test_input_grad_equals_twin(rng, variant, kernel, stride, pad, n_filters):
    channels, height, width, n_slots = 3, 9, 8, 5
    weight, (indptr, columns, data), _ = make_conv(rng, channels, n_filters, kernel, dead=(0, 5))
    geo = conv_geometry(channels, height, width, kernel, stride, pad)
    grad_u = sparse_grad(rng, (n_slots, weight.shape[0], geo.out_height, geo.out_width))
    out = np.full((n_slots, geo.n_in), np.nan, dtype=np.float32)
    INPUT_GRAD[variant](grad_u.reshape(n_slots, -1), indptr, columns, data, geo, out)
    ref = conv2d_input_grad(grad_u, weight, (channels, height, width), stride, pad)
    np.testing.assert_array_equal(out, ref.reshape(out.shape))


@pytest.mark.parametrize("gather", [conv_input_grad_gather, conv_input_grad_gather_csr])
def test_input_grad_gather_only_where_masked(rng, gather):
    channels, height, width, kernel, n_slots = 2, 7, 7, 3, 4
    weight, (indptr, columns, data), _ = make_conv(rng, channels, 4, kernel)
    geo = conv_geometry(channels, height, width, kernel, 1, 1)
    grad_u = sparse_grad(rng, (n_slots, weight.shape[0], height, width))
    mask = rng.random((n_slots, geo.n_in)) < 0.2
    out = np.full((n_slots, geo.n_in), np.nan, dtype=np.float32)
    gather(grad_u.reshape(n_slots, -1), mask, indptr, columns, data, geo, out)
    ref = conv2d_input_grad(grad_u, weight, (channels, height, width), 1, 1).reshape(out.shape)
    np.testing.assert_array_equal(out, np.where(mask, ref, 0))


def brute_force_fan_out(stored_per_channel, kernel, height, width, stride, pad):
    """Count every (kernel, tap) whose output lands inside the map, tap by tap."""
    out_h, out_w = conv_out_size(height, kernel, stride, pad), conv_out_size(width, kernel, stride, pad)
    counts = []
    for n_kernels in stored_per_channel:
        for y in range(height):
            for x in range(width):
                taps = 0
                for ky in range(kernel):
                    for kx in range(kernel):
                        ty, tx = y + pad - ky, x + pad - kx
                        taps += (ty % stride == 0 and tx % stride == 0 and 0 <= ty // stride < out_h
                                 and 0 <= tx // stride < out_w)
                counts.append(n_kernels * taps)
    return np.array(counts)


@pytest.mark.parametrize("kernel, stride, pad", GEOMETRIES)
def test_fan_out_equals_brute_force_recount(rng, kernel, stride, pad):
    channels, height, width = 3, 7, 8
    _, (indptr, _, _), stored = make_conv(rng, channels, 5, kernel)
    geo = conv_geometry(channels, height, width, kernel, stride, pad)
    got = conv_fan_out(indptr, kernel, height, width, geo.out_height, geo.out_width, stride, pad)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, brute_force_fan_out(stored.sum(axis=1), kernel, height, width, stride, pad))


def test_fan_out_counts_the_forward_accumulates(rng):
    """Each event's fan-out is the number of weights it adds: with all weights 1 and one
    event per slot, the slot's currents sum to the event's fan-out."""
    channels, height, width, kernel = 2, 6, 5, 3
    _, (indptr, columns, data), _ = make_conv(rng, channels, 4, kernel)
    data = np.ones_like(data)
    geo = conv_geometry(channels, height, width, kernel, 2, 1)
    ev = dense_to_events(np.eye(geo.n_in, dtype=np.float32)[None])
    out = np.empty((geo.n_in, 4 * geo.out_cells), dtype=np.float32)
    conv_currents_events(ev.ptr, ev.idx, ev.val, indptr, columns, data, geo, out)
    fan_out = conv_fan_out(indptr, kernel, height, width, geo.out_height, geo.out_width, 2, 1)
    np.testing.assert_array_equal(out.sum(axis=1), fan_out)


def test_twin_gradients_against_finite_differences():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 2, 6, 5))
    weight = rng.standard_normal((3, 2, 3, 3))
    for stride, pad in ((1, 1), (2, 1), (2, 0)):
        probe = rng.standard_normal(conv2d_forward(x, weight, stride, pad).shape)

        def loss(x_, w_):
            return float(np.sum(conv2d_forward(x_, w_, stride, pad) * probe))

        grad_x = conv2d_input_grad(probe, weight, x.shape[1:], stride, pad)
        grad_w = conv2d_weight_grad(x, probe, 3, stride, pad)
        eps = 1e-6
        for _ in range(10):
            i = tuple(rng.integers(0, n) for n in x.shape)
            step = np.zeros_like(x)
            step[i] = eps
            assert (loss(x + step, weight) - loss(x - step, weight)) / (2 * eps) == pytest.approx(grad_x[i], abs=1e-6)
            j = tuple(rng.integers(0, n) for n in weight.shape)
            step = np.zeros_like(weight)
            step[j] = eps
            assert (loss(x, weight + step) - loss(x, weight - step)) / (2 * eps) == pytest.approx(grad_w[j], abs=1e-6)


@settings(max_examples=12, deadline=None)
@given(kernel=st.integers(1, 4), stride=st.integers(1, 2), pad=st.integers(0, 3), height=st.integers(4, 9),
       width=st.integers(4, 9), seed=st.integers(0, 2**16))
def test_every_variant_agrees_with_twin_property(kernel, stride, pad, height, width, seed):
    pad = min(pad, kernel - 1)
    rng = np.random.default_rng(seed)
    channels, n_steps, batch = 2, 2, 2
    weight, (indptr, columns, data), stored = make_conv(rng, channels, 4, kernel, dead=(3,))
    x, ev = event_maps(rng, (n_steps, batch, channels, height, width), 0.35)
    geo = conv_geometry(channels, height, width, kernel, stride, pad)
    n_slots = n_steps * batch
    xs = x.reshape(n_slots, channels, height, width)
    ref = conv2d_forward(xs, weight, stride, pad).reshape(n_slots, -1)
    for variant in FORWARD.values():
        out = np.empty_like(ref)
        variant(ev.ptr, ev.idx, ev.val, indptr, columns, data, geo, out)
        np.testing.assert_array_equal(out, ref)
    grad_u = sparse_grad(rng, (n_slots, weight.shape[0], geo.out_height, geo.out_width))
    ref_w = conv2d_weight_grad(xs, grad_u, kernel, stride, pad)[columns, np.nonzero(stored)[0]]
    for variant in WEIGHT_GRAD.values():
        np.testing.assert_array_equal(variant(ev.ptr, ev.idx, ev.val, grad_u.reshape(n_slots, -1), indptr, columns,
                                              geo), ref_w)
    ref_x = conv2d_input_grad(grad_u, weight, (channels, height, width), stride, pad).reshape(n_slots, -1)
    for variant in INPUT_GRAD.values():
        out = np.empty_like(ref_x)
        variant(grad_u.reshape(n_slots, -1), indptr, columns, data, geo, out)
        np.testing.assert_array_equal(out, ref_x)


def test_geometry_refuses_bad_shapes():
    with pytest.raises(ValueError, match="kernel must be >= 1"):
        conv_geometry(2, 5, 5, 0)
    with pytest.raises(ValueError, match="pad must be in 0..kernel-1"):
        conv_geometry(2, 5, 5, 3, 1, 3)
    with pytest.raises(ValueError, match="does not fit"):
        conv_geometry(2, 2, 5, 5, 1, 1)
    assert conv_geometry(2, 32, 32, 3, 1, 1)[6:] == (32, 32)
    assert conv_geometry(2, 32, 32, 3, 2, 1)[6:] == (16, 16)


def test_events_whose_offsets_leave_the_arrays_are_refused():
    """The kernels read events by ptr's offsets: one past the events (a segfault when a
    kernel was called with it) is refused; the indices' range is the layers' to check."""
    ptr, idx, val = np.array([0, 2, 3]), np.zeros(3, np.int32), np.ones(3, np.float32)
    check_events(ptr, idx, val, 2)
    for bad_ptr, bad_idx, bad_val in ((np.array([0, 2, 4]), idx, val), (np.array([-1, 2, 3]), idx, val),
                                      (ptr, idx, val[:2])):
        with pytest.raises(ValueError, match="events: ptr must"):
            check_events(bad_ptr, bad_idx, bad_val, 2)


def test_block_csr_checks(rng):
    geo = conv_geometry(2, 5, 5, 3, 1, 1)
    indptr, columns, data = np.array([0, 2, 3], np.int32), np.array([0, 1, 1], np.int32), np.zeros((3, 3, 3),
                                                                                                   np.float32)
    check_block_csr(indptr, columns, data, geo, 2)
    with pytest.raises(TypeError, match="int32"):
        check_block_csr(indptr.astype(np.int64), columns, data, geo, 2)
    with pytest.raises(ValueError, match="indptr must have"):
        check_block_csr(indptr[:2], columns, data, geo, 2)
    with pytest.raises(ValueError, match="data must be"):
        check_block_csr(indptr, columns, data[:, :2], geo, 2)
    with pytest.raises(ValueError, match="must not decrease"):
        check_block_csr(np.array([0, 3, 3], np.int32) * 0 + np.array([0, 4, 3], np.int32),
                        np.array([0, 1, 1], np.int32), data, geo, 2)
    with pytest.raises(ValueError, match="columns must lie"):
        check_block_csr(indptr, columns, data, geo, 1)
    with pytest.raises(ValueError, match="ascend within each row"):
        check_block_csr(indptr, np.array([1, 0, 1], np.int32), data, geo, 2)
    out = np.empty((3, 2 * geo.out_cells), dtype=np.float64)
    ev = dense_to_events(np.zeros((1, 3, geo.n_in), np.float32))
    with pytest.raises(ValueError, match="C-contiguous float32"):
        conv_currents_events(ev.ptr, ev.idx, ev.val, indptr, columns, data, geo, out)


def test_path_choice_follows_the_measured_crossovers():
    from evsim.kernels import conv_paths as paths

    # The AVX-512 machine's table, whatever this machine is.
    fwd = functools.partial(paths.forward_path, costs=paths.AVX512)
    wgrad = functools.partial(paths.weight_grad_path, costs=paths.AVX512)
    igrad = functools.partial(paths.input_grad_path, costs=paths.AVX512)
    assert fwd(0.06) == "events" and fwd(0.5) == "dense"
    conv1, conv2 = conv_geometry(2, 32, 32, 3, 1, 1), conv_geometry(15, 16, 16, 3, 1, 1)
    assert fwd(0.02, conv1, 15) == "direct"  # measured: direct at every activity
    assert fwd(0.03, conv2, 40) == "events" and fwd(0.1, conv2, 40) == "winograd"
    assert fwd(0.1, conv_geometry(15, 16, 16, 5, 1, 2), 40) == "direct"  # Winograd: 3 x 3 only
    assert fwd(0.3, conv_geometry(15, 8, 8, 3, 1, 1), 40) == "direct"  # measured faster on 8 x 8
    assert fwd(0.1, conv_geometry(15, 16, 16, 3, 2, 1), 40) == "events"  # strided: no direct path
    assert wgrad(0.02, 15) == "csr" and wgrad(0.06, 15) == "events"
    assert wgrad(0.12, 15) == "direct" and wgrad(0.12, 15, stride=2) == "events"
    assert wgrad(0.02, 40) == "events"
    assert wgrad(0.6, 40, stride=2) == "dense"
    assert wgrad(0.2, 40) == "direct" and wgrad(0.2, 40, stride=2) == "events"
    assert igrad(0.05, 0.09) == "gather" and igrad(0.05, 0.1) == "direct"
    assert igrad(0.03) == "scatter"
    assert igrad(0.08) == "direct"
    assert igrad(0.5, 0.5) == "direct" and igrad(0.5, stride=2) == "dense"
    assert igrad(0.5, geometry=conv2, n_filters=40) == "winograd"  # conv2's transposed convolution
    assert igrad(0.5, geometry=conv_geometry(15, 16, 16, 5, 1, 2), n_filters=40) == "direct"
    # The AVX2 machine's (its own 2 x 2 register blocks), as measured there: conv1's direct
    # paths win at every activity, conv2's from about a fifth of its cells active.
    avx2 = paths.AVX2
    assert paths.forward_path(0.02, conv1, 15, costs=avx2) == "direct"
    assert paths.forward_path(0.06, conv2, 40, costs=avx2) == "events"
    assert paths.forward_path(0.37, conv2, 40, costs=avx2) == "winograd"
    avx2_wgrad = functools.partial(paths.weight_grad_path, costs=avx2)
    assert avx2_wgrad(0.02, 15, geometry=conv1) == "direct" and avx2_wgrad(0.4, 15, geometry=conv1) == "direct"
    assert avx2_wgrad(0.12, 40, geometry=conv2) == "events" and avx2_wgrad(0.3, 40, geometry=conv2) == "direct"
    assert avx2_wgrad(0.3, 40, stride=2, geometry=conv_geometry(15, 16, 16, 3, 2, 1)) == "events"
    assert avx2_wgrad(0.02, 15) == "events"  # no geometry, no model: the csr gather never won there
    assert paths.HOST in (paths.AVX512, paths.AVX2)
    for table, choices in ((paths.FORWARD_PATHS, ("events", "dense")), (paths.WEIGHT_GRAD_PATHS, ("csr", "events",
                                                                                                   "dense")),
                           (paths.INPUT_GRAD_PATHS, ("gather", "scatter", "direct", "dense"))):
        assert set(choices) <= set(table)
    ptr = np.array([0, 3, 3, 5], dtype=np.int64)
    assert paths.event_density(ptr, 10) == pytest.approx(5 / 30)
    every = paths.DENSITY_SAMPLE_STRIDE
    rows = np.zeros((3 * every - 8, 10), np.float32)
    rows[::every, :3] = 1.0  # rows 0, every, 2 * every: the sampled ones
    rows[1:every, :] = 1.0  # not sampled
    assert paths.nonzero_density(rows) == pytest.approx(0.3) and paths.nonzero_density(rows, 1) > 0.3


@pytest.mark.parametrize("variant", ["events", "csr"])
def test_weight_grad_is_deterministic_for_a_thread_count(rng, variant):
    """Private sums per thread, reduced in a fixed order: the same bits on every call,
    with values whose float32 sums depend on the order."""
    channels, size, kernel = 3, 8, 3
    _, (indptr, columns, _), _ = make_conv(rng, channels, 5, kernel, kernel_density=1.0)
    x = rng.random((4, 6, channels * size * size), dtype=np.float32) * (rng.random((4, 6, channels * size * size)) < 0.3)
    ev = dense_to_events(x.astype(np.float32))
    geo = conv_geometry(channels, size, size, kernel, 1, 1)
    grad_u = rng.standard_normal((24, 5 * geo.out_cells)).astype(np.float32)
    first = WEIGHT_GRAD[variant](ev.ptr, ev.idx, ev.val, grad_u, indptr, columns, geo)
    for _ in range(3):
        np.testing.assert_array_equal(WEIGHT_GRAD[variant](ev.ptr, ev.idx, ev.val, grad_u, indptr, columns, geo), first)
    np.testing.assert_allclose(first, conv_weight_grad_dense(ev.ptr, ev.idx, ev.val, grad_u, indptr, columns, geo),
                               rtol=1e-4, atol=1e-4)
