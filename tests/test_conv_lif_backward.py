"""The LIF backward and the weight gradient in one pass (evsim/kernels/conv_lif_backward.py)
against the two passes and the dense twin."""
import numpy as np
import pytest

import evsim
from evsim.kernels import conv_paths
from evsim.kernels.avg_pool import avg_pool_backward
from evsim.kernels.conv_geometry import conv_geometry, pool_geometry
from evsim.kernels.conv_lif_backward import lif_backward_weight_grad
from evsim.kernels.conv_weight_grad import conv_weight_grad_events
from evsim.kernels.lif import NO_FACTORS, NO_POOL_CHANNELS, NO_POOL_SHAPE, _lif_backward
from evsim.layers.base import BackwardRequest
from evsim.neuron import SURROGATES, surrogate_grad
from tests.reference import conv2d_weight_grad, conv_lif_forward, dyadic_weights, lif_backward
from tests.test_conv_kernels import block_csr, event_maps, make_conv


def two_passes(sources, u, o, surrogate, constants, ev, indptr, columns, geo):
    """dL/du written out by the LIF backward, then the row-layout weight gradient."""
    n_steps, batch, n = u.shape
    grad_u = np.empty((n_steps, batch, n), np.float32)
    bias = np.empty((batch, n), np.float32)
    _lif_backward(*sources, u, o, *surrogate, *constants, grad_u, bias, 2)
    return conv_weight_grad_events(ev.ptr, ev.idx, ev.val, grad_u.reshape(n_steps * batch, n), indptr, columns,
                                   geo), bias, grad_u


@pytest.mark.parametrize("kernel, stride, pad", [(3, 1, 1), (3, 2, 1), (5, 1, 0), (1, 1, 0)])
@pytest.mark.parametrize("reset, detach, kind", [("hard", False, "rectangular"), ("subtract", False, "triangle"),
                                                 ("hard", True, "fast_sigmoid")])
@pytest.mark.parametrize("source", ["dense", "pooled"])
@pytest.mark.parametrize("path", ["events", "direct"])
def test_one_pass_equals_the_two_passes_and_the_twin(rng, kernel, stride, pad, reset, detach, kind, source, path):
    """Kernels and per-sample bias sums of the one pass, by either weight gradient's sums,
    equal the two passes' (the bias sums bit for bit; the kernels up to the order the slots
    are summed in) and the twin's, with dead filters, a channel without kernels, pooled or
    dense dL/do and quiet steps."""
    if path == "direct" and stride != 1:
        with pytest.raises(ValueError, match="stride 1"):
            lif_backward_weight_grad(*_one_pass_args(rng, kernel, stride, pad, reset, detach, kind, source)[0],
                                     path)
        return
    args, (grad_o, x, weight, stored) = _one_pass_args(rng, kernel, stride, pad, reset, detach, kind, source)
    sources, u, o, surrogate, constants, ev, indptr, columns, geo = args
    kernels, bias_sums = lif_backward_weight_grad(*args, path)
    want_kernels, want_bias, grad_u = two_passes(*args)
    np.testing.assert_array_equal(bias_sums, want_bias)
    scale = np.abs(want_kernels).max()
    assert scale > 0
    np.testing.assert_allclose(kernels, want_kernels, rtol=1e-5, atol=1e-6 * scale)

    n_steps, batch, channels, height, width = x.shape
    twin_u = lif_backward(grad_o, u, o.astype(np.float32), surrogate_grad(u - np.float32(0.5), kind, 0.5),
                          reset=reset, detach_reset=detach)
    np.testing.assert_allclose(grad_u, twin_u, rtol=1e-5, atol=1e-6 * np.abs(twin_u).max())
    maps_u = twin_u.reshape((n_steps * batch, weight.shape[0], geo.out_height, geo.out_width))
    twin = conv2d_weight_grad(x.reshape(-1, channels, height, width), maps_u, kernel, stride, pad)
    rows, cols = np.nonzero(stored)
    np.testing.assert_allclose(kernels, twin[cols, rows], rtol=1e-4, atol=1e-5 * scale)


@pytest.mark.parametrize("pad", [1, 0])
@pytest.mark.parametrize("scatters", ["none", "some", "all"])
@pytest.mark.parametrize("source", ["dense", "pooled"])
def test_one_pass_sends_the_error_down_as_the_input_gradient(rng, pad, scatters, source):
    """With the error asked for, the one pass also writes dL/dx, slot by slot scattered
    (below ``scatter_below`` of the slot's dL/du nonzero) or by Winograd's transposed
    convolution: bit for bit what those two kernels give from the two passes' dL/du, each
    slot as its share of nonzeros says (quiet ones zero), with the same kernels and bias
    sums as without."""
    from evsim.kernels.conv_input_grad import conv_input_grad_scatter, conv_input_grad_winograd

    args, (_, _, weight, stored) = _one_pass_args(rng, 3, 1, pad, "hard", False, "rectangular", source)
    sources, u, o, surrogate, constants, ev, indptr, columns, geo = args
    data = block_csr(weight, stored)[2]
    n_slots = u.shape[0] * u.shape[1]
    grad_u = two_passes(*args)[2].reshape(n_slots, -1)
    shares = (grad_u != 0).mean(axis=1)
    scatter_below = {"none": 0.0, "some": np.median(shares[shares > 0]), "all": 1.01}[scatters]
    grad_in = np.full((n_slots, geo.n_in), np.nan, np.float32)
    kernels, bias_sums = lif_backward_weight_grad(*args, "events", (data, scatter_below, grad_in))
    alone, alone_bias = lif_backward_weight_grad(*args, "events")
    np.testing.assert_array_equal(kernels, alone)
    np.testing.assert_array_equal(bias_sums, alone_bias)
    scattered, transformed = np.empty_like(grad_in), np.empty_like(grad_in)
    conv_input_grad_scatter(grad_u, indptr, columns, data, geo, scattered)
    conv_input_grad_winograd(grad_u, indptr, columns, data, geo, transformed)
    sparse = shares < scatter_below
    assert np.abs(transformed).max() > 0 and (0 < sparse[shares > 0].mean() < 1) == (scatters == "some")
    np.testing.assert_array_equal(grad_in, np.where(sparse[:, None], scattered, transformed))


def test_one_pass_sends_down_only_what_it_can():
    """The error goes down in the pass for 3 x 3 kernels at stride 1 on the row layout's sums."""
    rng = np.random.default_rng(0)
    args, _ = _one_pass_args(rng, 3, 2, 1, "hard", False, "rectangular", "dense")
    data = np.zeros((args[7].size, 3, 3), np.float32)
    grad_in = np.zeros((args[1].shape[0] * args[1].shape[1], args[-1].n_in), np.float32)
    with pytest.raises(ValueError, match="3 x 3 kernels at stride 1"):
        lif_backward_weight_grad(*args, "events", (data, 0.1, grad_in))
    args, _ = _one_pass_args(rng, 3, 1, 1, "hard", False, "rectangular", "dense")
    data = np.zeros((args[7].size, 3, 3), np.float32)
    with pytest.raises(ValueError, match="'events' to send the error down"):
        lif_backward_weight_grad(*args, "direct", (data, 0.1, grad_in))
    with pytest.raises(ValueError, match="grad_in"):
        lif_backward_weight_grad(*args, "events", (data, 0.1, grad_in[1:]))


def _one_pass_args(rng, kernel, stride, pad, reset, detach, kind, source):
    """``(arguments of lif_backward_weight_grad but the path, (dL/do, input maps, weights,
    stored kernels))`` of a convolution with dead filters and a channel without kernels."""
    channels, height, width, n_steps, batch = 3, 10, 10, 6, 5
    weight, (indptr, columns, data), stored = make_conv(rng, channels, 7, kernel, dead=(2, 5))
    bias = dyadic_weights(rng, (weight.shape[0],), scale=4).astype(np.float32)
    x, ev = event_maps(rng, (n_steps, batch, channels, height, width), 0.2, values=(1.0, 2.0, 0.25))
    geo = conv_geometry(channels, height, width, kernel, stride, pad)
    u, o = conv_lif_forward(x, weight, bias, stride, pad, reset=reset)
    u, o = np.ascontiguousarray(u, np.float32), np.ascontiguousarray(o, np.uint8)
    n = u.shape[2]
    if source == "pooled":  # dL/d(pooled) of a 2 x 2 average pooling above
        pool = pool_geometry(weight.shape[0], geo.out_height, geo.out_width, 2)
        pooled = dyadic_weights(rng, (n_steps * batch, pool.n_out), 0.5, 16).astype(np.float32)
        pooled[: 2 * batch] = 0.0  # the first two steps quiet: no error from above
        sources = (None, NO_FACTORS, NO_FACTORS, pooled, np.arange(weight.shape[0], dtype=np.int64),
                   (geo.out_height, geo.out_width, 2, pool.out_height, pool.out_width))
        grad_o = avg_pool_backward(pooled, pool).reshape(n_steps, batch, n)
    else:
        grad_o = dyadic_weights(rng, (n_steps, batch, n), 0.5, 16).astype(np.float32)
        grad_o[-2:] = 0.0  # the last two steps quiet
        sources = (grad_o, NO_FACTORS, NO_FACTORS, NO_FACTORS, NO_POOL_CHANNELS, NO_POOL_SHAPE)
    surrogate = (SURROGATES.index(kind), np.float32(0.5))
    constants = (np.float32(0.2), np.float32(0.5), reset == "hard", detach)
    return (sources, u, o, surrogate, constants, ev, indptr, columns, geo), (grad_o, x, weight, stored)


@pytest.mark.parametrize("table, path", [("AVX512", "events"), ("AVX2", "direct")])
def test_the_first_convolution_of_a_network_takes_the_one_pass(monkeypatch, table, path):
    """A first convolution runs the one pass in training, with the weight gradient's sums its
    path table chooses for its input (6 % active: the row layout on AVX-512's table, the
    direct products on AVX2's, on any machine); its gradients are those of the two passes,
    which a request for its input gradient takes where the pass cannot send it down."""
    import evsim.layers.conv as conv_module

    calls, received = [], []
    fused = conv_module.lif_backward_weight_grad
    monkeypatch.setattr(conv_module, "lif_backward_weight_grad", lambda *a: calls.append(a[9]) or fused(*a))
    monkeypatch.setattr(conv_module.SpikingConv2d, "_sends_down_in_one_pass", lambda self: False)
    backward = conv_module.SpikingConv2d.backward
    monkeypatch.setattr(conv_module.SpikingConv2d, "backward",
                        lambda self, *a: received.append(a) or backward(self, *a))
    monkeypatch.setattr(conv_paths, "HOST", getattr(conv_paths, table))
    rng = np.random.default_rng(3)
    network = evsim.Network.from_spec("2x16x16-6C3-AP2-5", rng=1)
    network.layers[0].bias[:] = np.float32(0.3)
    x = (rng.random((8, 4, network.sizes[0])) < 0.06).astype(np.float32)
    counts, traces = network.forward(x)
    conv = network.layers[0]
    assert conv._weight_grad_path(traces[0].events_in, conv.alive_filters.size) == path
    _, grad_counts = evsim.mse_rate(counts, np.arange(4) % 5, 8)
    grads = network.backward(traces, grad_counts)
    assert calls == [path]
    trace, grad_spikes, lif, _ = received[0]
    two = backward(conv, trace, grad_spikes, lif, BackwardRequest(input_grad=True))
    assert calls == [path] and two.input is not None
    assert np.abs(two.params[0]).max() > 0
    np.testing.assert_allclose(grads[0].params[0], two.params[0], rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(grads[0].params[1], two.params[1])


@pytest.mark.parametrize("dead", [False, True])
def test_a_convolution_above_another_sends_its_error_down_in_the_pass(monkeypatch, dead):
    """conv2 of a network (3 x 3, stride 1, its weight gradient on the row layout) sends
    its error down in the LIF backward's pass where its transposed convolution would be
    Winograd's: the gradients of the whole network are those of the two passes (the
    kernels up to the order of their sums, the biases bit for bit), with a dead filter
    below it taking none of the error."""
    import evsim.layers.conv as conv_module

    calls = []
    fused = conv_module.lif_backward_weight_grad
    monkeypatch.setattr(conv_module, "lif_backward_weight_grad",
                        lambda *a: calls.append(a[10] is not None) or fused(*a))
    monkeypatch.setattr(conv_module, "weight_grad_path", lambda *a, **k: "events")
    network = evsim.Network.from_spec("2x12x12-6C3-AP2-8C3-AP2-5", rng=1)
    for layer in network.layers:
        if hasattr(layer, "store"):
            layer.store.data[...] *= 3.0
    if dead:
        network.layers[0].kill(np.array([2]))
    rng = np.random.default_rng(3)
    x = (rng.random((8, 4, network.sizes[0])) < 0.3).astype(np.float32)
    counts, traces = network.forward(x)
    _, grad_counts = evsim.mse_rate(counts, np.arange(4) % 5, 8)
    monkeypatch.setattr(conv_module.SpikingConv2d, "_sends_down_in_one_pass", lambda self: True)
    grads = network.backward(traces, grad_counts)
    assert calls == [True, False]
    monkeypatch.setattr(conv_module.SpikingConv2d, "_sends_down_in_one_pass", lambda self: False)
    want = network.backward(traces, grad_counts)
    for got, expected in zip(grads, want):
        for g, w in zip(got.params, expected.params):
            assert np.abs(w).max() > 0
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6 * np.abs(w).max())
    np.testing.assert_array_equal(grads[2].params[1], want[2].params[1])


@pytest.mark.parametrize("height, width, kernel", [(32, 32, 2), (7, 9, 2), (16, 34, 2), (5, 40, 2), (2, 2, 2),
                                                    (9, 7, 3), (6, 6, 3)])
def test_pooled_row_spreads_each_windows_share(rng, height, width, kernel):
    """dL/d(spikes) under an average pooling, formed row by row (16 windows at a time for
    2 x 2), equals each window's gradient / k² on its cells and zero past the last whole
    window, bit for bit, channels mapped."""
    from evsim.kernels.lif import _pooled_row

    out_height, out_width, n_pooled = height // kernel, width // kernel, 5
    channels = np.array([3, 0, 4], dtype=np.int64)
    pooled = rng.normal(0.0, 1.0, (2, n_pooled * out_height * out_width)).astype(np.float32)
    pooled[1, ::7] = np.float32(1e-45)  # subnormal: its quarter rounds as a division would
    out = np.full(channels.size * height * width, np.nan, dtype=np.float32)
    for s in range(2):
        _pooled_row(pooled, s, channels, (height, width, kernel, out_height, out_width), out)
        maps = pooled[s].reshape(n_pooled, out_height, out_width)[channels] / np.float32(kernel * kernel)
        expected = np.zeros((channels.size, height, width), dtype=np.float32)
        expected[:, :out_height * kernel, :out_width * kernel] = maps.repeat(kernel, axis=1).repeat(kernel, axis=2)
        np.testing.assert_array_equal(out.reshape(expected.shape), expected)
