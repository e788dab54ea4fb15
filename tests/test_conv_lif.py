"""The one-pass forwards of a convolution (evsim/kernels/conv_lif.py) against the dense
twin, and the network's forward without a recorded membrane."""
import numpy as np
import pytest

import evsim
from evsim.errors import ShapeError
from evsim.kernels.conv_geometry import conv_geometry
from evsim.kernels.conv_lif import conv_lif_direct, conv_lif_events, conv_lif_winograd
from tests.reference import conv_lif_forward, dyadic_weights
from tests.test_conv_kernels import block_csr, event_maps, make_conv


@pytest.mark.parametrize("n_filters, dead", [(6, (2,)), (21, (0, 17)), (16, ()), (40, (3, 9, 30, 31))])
@pytest.mark.parametrize("kernel, stride, pad", [(3, 1, 1), (3, 2, 1), (5, 1, 0), (1, 1, 0), (3, 2, 0)])
@pytest.mark.parametrize("reset", ["hard", "subtract"])
def test_spikes_equal_twin(rng, n_filters, dead, kernel, stride, pad, reset):
    """Spikes identical to the twin's (dyadic weights and inputs: the currents are exact and
    the LIF update is the same float32 arithmetic), over maps whose cells are not a
    multiple of 16, filter counts past one and two vectors, dead filters, pruned kernels."""
    channels, height, width, n_steps, batch = 3, 7, 9, 6, 3
    weight, (indptr, columns, data), _ = make_conv(rng, channels, n_filters, kernel, dead=dead)
    bias = dyadic_weights(rng, (weight.shape[0],), scale=4).astype(np.float32)
    x, ev = event_maps(rng, (n_steps, batch, channels, height, width), 0.3, values=(1.0, 2.0, 0.25, 0.75))
    geo = conv_geometry(channels, height, width, kernel, stride, pad)
    spikes = np.full((n_steps, batch, weight.shape[0] * geo.out_cells), 7, dtype=np.uint8)
    conv_lif_events(ev.ptr, ev.idx, ev.val, indptr, columns, data, geo, bias, 0.2, 0.5, reset == "hard", spikes)
    _, ref = conv_lif_forward(x, weight, bias, stride, pad, reset=reset)
    assert 0 < ref.mean() < 1  # the case exercises both outcomes
    np.testing.assert_array_equal(spikes, ref)


@pytest.mark.parametrize("n_filters, dead", [(6, (2,)), (7, ()), (13, (4,)), (19, (1,)), (21, (0, 17)),
                                             (40, (3, 9, 30, 31))])
@pytest.mark.parametrize("kernel, pad", [(3, 1), (5, 0), (1, 0), (3, 2), (5, 2)])
@pytest.mark.parametrize("reset", ["hard", "subtract"])
def test_direct_membrane_and_spikes_equal_twin(rng, n_filters, dead, kernel, pad, reset):
    """The direct path's membrane (recorded) and spikes (recorded or not) equal the twin's."""
    channels, height, width, n_steps, batch = 3, 7, 19, 6, 3
    weight, (indptr, columns, data), _ = make_conv(rng, channels, n_filters, kernel, dead=dead)
    bias = dyadic_weights(rng, (weight.shape[0],), scale=4).astype(np.float32)
    x, ev = event_maps(rng, (n_steps, batch, channels, height, width), 0.3, values=(1.0, 2.0, 0.25, 0.75))
    geo = conv_geometry(channels, height, width, kernel, 1, pad)
    shape = (n_steps, batch, weight.shape[0] * geo.out_cells)
    u, spikes, fast = np.full(shape, np.nan, np.float32), np.full(shape, 7, np.uint8), np.full(shape, 7, np.uint8)
    conv_lif_direct(ev.ptr, ev.idx, ev.val, indptr, columns, data, geo, bias, 0.2, 0.5, reset == "hard", u, spikes)
    conv_lif_direct(ev.ptr, ev.idx, ev.val, indptr, columns, data, geo, bias, 0.2, 0.5, reset == "hard", None, fast)
    ref_u, ref = conv_lif_forward(x, weight, bias, 1, pad, reset=reset)
    assert 0 < ref.mean() < 1
    np.testing.assert_array_equal(u, ref_u)
    np.testing.assert_array_equal(spikes, ref)
    np.testing.assert_array_equal(fast, ref)


@pytest.mark.parametrize("n_filters, dead", [(6, (2,)), (7, ()), (13, (4,)), (19, (1,)), (21, (0, 17)),
                                             (40, (3, 9, 30, 31))])
@pytest.mark.parametrize("height, width, pad", [(7, 19, 1), (16, 16, 1), (9, 8, 0), (5, 40, 2), (33, 34, 1), (3, 3, 0)])
@pytest.mark.parametrize("reset", ["hard", "subtract"])
def test_winograd_membrane_and_spikes_equal_twin(rng, n_filters, dead, height, width, pad, reset):
    """Winograd's F(2x2, 3x3) gives the twin's membrane and spikes exactly with dyadic
    weights and inputs (its transforms only add, subtract and halve): output maps with odd
    and even sides, tile rows of 8 and of 16 and 32 tiles, a single tile, borders of 0-2
    cells, dead filters and a channel without kernels."""
    channels, n_steps, batch = 3, 5, 3
    weight, (indptr, columns, data), _ = make_conv(rng, channels, n_filters, 3, dead=dead)
    bias = dyadic_weights(rng, (weight.shape[0],), scale=4).astype(np.float32)
    x, ev = event_maps(rng, (n_steps, batch, channels, height, width), 0.3, values=(1.0, 2.0, 0.25, 0.75))
    geo = conv_geometry(channels, height, width, 3, 1, pad)
    shape = (n_steps, batch, weight.shape[0] * geo.out_cells)
    u, spikes, fast = np.full(shape, np.nan, np.float32), np.full(shape, 7, np.uint8), np.full(shape, 7, np.uint8)
    conv_lif_winograd(ev.ptr, ev.idx, ev.val, indptr, columns, data, geo, bias, 0.2, 0.5, reset == "hard", u, spikes)
    conv_lif_winograd(ev.ptr, ev.idx, ev.val, indptr, columns, data, geo, bias, 0.2, 0.5, reset == "hard", None, fast)
    ref_u, ref = conv_lif_forward(x, weight, bias, 1, pad, reset=reset)
    assert 0 < ref.mean() < 1
    np.testing.assert_array_equal(u, ref_u)
    np.testing.assert_array_equal(spikes, ref)
    np.testing.assert_array_equal(fast, ref)


def test_winograd_close_to_twin_with_any_weights(rng):
    """With weights that are not dyadic the currents differ from the twin's by float32
    rounding only."""
    channels, n_filters, height, width, n_steps, batch = 15, 12, 16, 16, 4, 2
    weight = rng.normal(0, 0.3, (n_filters, channels, 3, 3)).astype(np.float32)
    (indptr, columns, data) = block_csr(weight, np.ones((channels, n_filters), bool))
    x, ev = event_maps(rng, (n_steps, batch, channels, height, width), 0.3, values=(0.25, 0.5, 1.0))
    geo = conv_geometry(channels, height, width, 3, 1, 1)
    u = np.zeros((n_steps, batch, n_filters * geo.out_cells), np.float32)
    spikes = np.zeros(u.shape, np.uint8)
    bias = np.zeros(n_filters, np.float32)
    conv_lif_winograd(ev.ptr, ev.idx, ev.val, indptr, columns, data, geo, bias, 0.2, 1e9, True, u, spikes)
    ref_u, _ = conv_lif_forward(x, weight, bias, 1, 1, v_th=1e9)
    np.testing.assert_allclose(u, ref_u, rtol=0, atol=2e-5 * np.abs(ref_u).max())
    assert np.abs(u - ref_u).max() > 0  # not the same summation: the check is of rounding


def test_winograd_refuses_other_kernels(rng):
    weight, (indptr, columns, data), _ = make_conv(rng, 2, 4, 5)
    _, ev = event_maps(rng, (2, 3, 2, 6, 6), 0.3)
    geo = conv_geometry(2, 6, 6, 5, 1, 2)
    with pytest.raises(ValueError, match="3 x 3 kernels at stride 1"):
        conv_lif_winograd(ev.ptr, ev.idx, ev.val, indptr, columns, data, geo, np.zeros(weight.shape[0], np.float32),
                          0.2, 0.5, True, None, np.zeros((2, 3, weight.shape[0] * geo.out_cells), np.uint8))


def test_direct_refuses_strides(rng):
    weight, (indptr, columns, data), _ = make_conv(rng, 2, 4, 3)
    _, ev = event_maps(rng, (2, 3, 2, 6, 6), 0.3)
    geo = conv_geometry(2, 6, 6, 3, 2, 1)
    with pytest.raises(ValueError, match="stride 1"):
        conv_lif_direct(ev.ptr, ev.idx, ev.val, indptr, columns, data, geo, np.zeros(weight.shape[0], np.float32),
                        0.2, 0.5, True, None, np.zeros((2, 3, weight.shape[0] * geo.out_cells), np.uint8))


def test_refuses_arrays_it_cannot_write(rng):
    weight, (indptr, columns, data), _ = make_conv(rng, 2, 4, 3)
    _, ev = event_maps(rng, (2, 3, 2, 5, 5), 0.3)
    geo = conv_geometry(2, 5, 5, 3, 1, 1)
    bias = np.zeros(weight.shape[0], np.float32)
    with pytest.raises(ValueError, match="spikes_out"):
        conv_lif_events(ev.ptr, ev.idx, ev.val, indptr, columns, data, geo, bias, 0.2, 0.5, True,
                        np.zeros((2, 3, weight.shape[0] * 25), np.float32))
    with pytest.raises(ValueError, match="bias"):
        conv_lif_events(ev.ptr, ev.idx, ev.val, indptr, columns, data, geo, bias[1:], 0.2, 0.5, True,
                        np.zeros((2, 3, weight.shape[0] * 25), np.uint8))
    with pytest.raises(ValueError, match="events"):
        conv_lif_events(ev.ptr, ev.idx, ev.val, indptr, columns, data, geo, bias, 0.2, 0.5, True,
                        np.zeros((3, 3, weight.shape[0] * 25), np.uint8))


@pytest.mark.parametrize("spec", ["2x12x12-6C3-AP2-5C3-MP2-12-4", "1x9x9-20C3s2-AP2-7"])
def test_network_without_membrane_gives_the_same_spikes(spec):
    """forward(record=False) returns the counts and every layer's spikes and events of
    forward(), with no membrane, and backward refuses its traces."""
    network = evsim.Network.from_spec(spec, rng=0)  # a seed whose every layer spikes on this input
    n_in = network.layers[0].n_in
    x = ((np.random.default_rng(0).random((8, 5, n_in)) < 0.4) * 3).astype(np.float32)
    counts, traces = network.forward(x)
    fast_counts, fast_traces = network.forward(x, record=False)
    np.testing.assert_array_equal(fast_counts, counts)
    assert all(trace.spikes.any() for trace in traces if hasattr(trace, "spikes"))
    for trace, fast in zip(traces, fast_traces):
        if hasattr(trace, "spikes"):
            assert fast.u is None
            np.testing.assert_array_equal(fast.spikes, trace.spikes)
        np.testing.assert_array_equal(fast.events_in.idx, trace.events_in.idx)
        np.testing.assert_array_equal(fast.events_in.val, trace.events_in.val)
    with pytest.raises(ShapeError, match="record=False"):
        network.backward(fast_traces, np.ones_like(counts))
