"""Inference through a convolution, its LIF step and 2 x 2 average pooling in one pass
(evsim/kernels/conv_lif_pool.py) against the dense twin."""
import dataclasses

import numpy as np
import pytest

import evsim
from evsim.kernels import conv_paths
from evsim.layers import conv as conv_layer
from evsim.kernels.conv_geometry import conv_geometry
from evsim.energy import count_network
from evsim.kernels.conv_lif import conv_lif_direct
from evsim.kernels.conv_lif_pool import conv_lif_pool
from tests.reference import avg_pool2d, conv_lif_forward, dyadic_weights
from tests.test_conv_kernels import event_maps, make_conv


def pooled_twin(x, weight, bias, pad, reset, n_pooled_channels, channel_of):
    """The twin's spikes average-pooled, as window counts (4 x the average, uint8), alive
    filters placed at ``channel_of`` (the others 255)."""
    n_steps, batch = x.shape[:2]
    _, spikes = conv_lif_forward(x, weight, bias, 1, pad, reset=reset)
    height = x.shape[3] + 2 * pad - weight.shape[2] + 1
    width = x.shape[4] + 2 * pad - weight.shape[3] + 1
    maps = spikes.reshape(n_steps * batch, weight.shape[0], height, width).astype(np.float32)
    pooled = avg_pool2d(maps, 2)
    out = np.full((n_steps * batch, n_pooled_channels) + pooled.shape[2:], 255, np.uint8)
    out[:, channel_of] = pooled * 4
    return out.reshape(n_steps, batch, -1), spikes.mean()


def spiking_network(spec):
    """The network of ``spec`` with its weights doubled, so that every layer spikes, and
    input ``[8, 5, n_in]`` of counts 3 at 40 % of the cells."""
    network = evsim.Network.from_spec(spec, rng=0)
    for layer in network.layers:
        if hasattr(layer, "store"):
            layer.store.data[...] *= 2.0
    n_in = network.layers[0].n_in
    return network, ((np.random.default_rng(0).random((8, 5, n_in)) < 0.4) * 3).astype(np.float32)


@pytest.mark.parametrize("path", ["events", "direct", "winograd"])
@pytest.mark.parametrize("n_filters, dead", [(6, (2,)), (7, ()), (13, (4,)), (19, (1,)), (21, (0, 17)),
                                             (40, (3, 9, 30, 31))])
@pytest.mark.parametrize("height, width, pad", [(7, 19, 1), (16, 16, 1), (9, 8, 0), (5, 40, 2), (33, 34, 1)])
@pytest.mark.parametrize("reset", ["hard", "subtract"])
@pytest.mark.parametrize("dense_input", [False, True])
def test_pooled_spikes_equal_twin(rng, path, n_filters, dead, height, width, pad, reset, dense_input):
    """The pooled spikes equal the twin's, exactly (dyadic weights and inputs), from events
    or a dense map, over odd and even maps (the floor rule drops a last row or column),
    wide rows, borders of 0-2 cells and dead filters, whose pooled channels are left
    untouched."""
    channels, n_steps, batch = 3, 5, 3
    weight, (indptr, columns, data), _ = make_conv(rng, channels, n_filters, 3, dead=dead)
    bias = dyadic_weights(rng, (weight.shape[0],), scale=4).astype(np.float32)
    x, ev = event_maps(rng, (n_steps, batch, channels, height, width), 0.3, values=(1.0, 2.0, 0.25, 0.75))
    geo = conv_geometry(channels, height, width, 3, 1, pad)
    channel_of = np.setdiff1d(np.arange(n_filters), dead)
    ref, rate = pooled_twin(x, weight, bias, pad, reset, n_filters, channel_of)
    assert 0 < rate < 1
    pooled = np.full(ref.shape, 255, np.uint8)
    if dense_input:  # an earlier pair's window counts (the values are whole quarters)
        drive = (x * 4).astype(np.uint8).reshape(n_steps, batch, -1)
    else:
        drive = ev
    conv_lif_pool(drive, indptr, columns, data, geo, bias, 0.2, 0.5, reset == "hard", path, channel_of, pooled)
    np.testing.assert_array_equal(pooled, ref)


@pytest.mark.parametrize("n_filters, dead", [(7, ()), (13, (4,)), (40, (3, 9, 30, 31))])
@pytest.mark.parametrize("height, width, pad, kernel", [(7, 19, 1, 3), (16, 16, 1, 3), (9, 8, 0, 3), (33, 34, 1, 3),
                                                        (12, 13, 2, 5)])
@pytest.mark.parametrize("reset", ["hard", "subtract"])
def test_training_pass_writes_the_forward_trace(rng, n_filters, dead, height, width, pad, kernel, reset):
    """With the spikes and membrane asked for (a training forward), the direct pass writes
    them as the twin gives them and as the two-pass direct kernel writes them, bit for
    bit, every cell (those the floor rule leaves out of every window too), with the window
    counts as without them."""
    channels, n_steps, batch = 3, 5, 3
    weight, (indptr, columns, data), _ = make_conv(rng, channels, n_filters, kernel, dead=dead)
    bias = dyadic_weights(rng, (weight.shape[0],), scale=4).astype(np.float32)
    x, ev = event_maps(rng, (n_steps, batch, channels, height, width), 0.3, values=(1.0, 2.0, 0.25, 0.75))
    geo = conv_geometry(channels, height, width, kernel, 1, pad)
    channel_of = np.setdiff1d(np.arange(n_filters), dead)
    ref, rate = pooled_twin(x, weight, bias, pad, reset, n_filters, channel_of)
    u_twin, spikes_twin = conv_lif_forward(x, weight, bias, 1, pad, reset=reset)
    assert 0 < rate < 1
    n_units = weight.shape[0] * geo.out_cells
    pooled = np.full(ref.shape, 255, np.uint8)
    spikes, u = np.full((n_steps, batch, n_units), 7, np.uint8), np.full((n_steps, batch, n_units), np.nan, np.float32)
    conv_lif_pool(ev, indptr, columns, data, geo, bias, 0.2, 0.5, reset == "hard", "direct", channel_of, pooled,
                  spikes, u)
    np.testing.assert_array_equal(pooled, ref)
    np.testing.assert_array_equal(u, u_twin)
    np.testing.assert_array_equal(spikes, spikes_twin)
    spikes_two, u_two = np.empty_like(spikes), np.empty_like(u)
    conv_lif_direct(ev.ptr, ev.idx, ev.val, indptr, columns, data, geo, bias, 0.2, 0.5, reset == "hard", u_two,
                    spikes_two)
    np.testing.assert_array_equal(u, u_two)
    np.testing.assert_array_equal(spikes, spikes_two)


def test_training_pass_refuses_what_it_cannot_write(rng):
    """Only the direct path writes the spikes and membrane; arrays of another shape or type
    are refused before the kernel indexes them."""
    weight, (indptr, columns, data), _ = make_conv(rng, 2, 4, 3)
    _, ev = event_maps(rng, (2, 3, 2, 8, 8), 0.3)
    geo, bias = conv_geometry(2, 8, 8, 3, 1, 1), np.zeros(4, np.float32)
    pooled = np.zeros((2, 3, 4 * 16), np.uint8)
    spikes, u = np.zeros((2, 3, 4 * 64), np.uint8), np.zeros((2, 3, 4 * 64), np.float32)
    with pytest.raises(ValueError, match="direct path only"):
        conv_lif_pool(ev, indptr, columns, data, geo, bias, 0.2, 0.5, True, "winograd", np.arange(4), pooled, spikes, u)
    with pytest.raises(ValueError, match="spikes_out must be"):
        conv_lif_pool(ev, indptr, columns, data, geo, bias, 0.2, 0.5, True, "direct", np.arange(4), pooled,
                      spikes[:, :2], u)
    with pytest.raises(ValueError, match="u_out must be"):
        conv_lif_pool(ev, indptr, columns, data, geo, bias, 0.2, 0.5, True, "direct", np.arange(4), pooled, spikes,
                      u.astype(np.float64))


@pytest.mark.parametrize("spec", ["2x16x16-8C3-AP2-12C3-AP2-20-4", "2x12x12-6C3-AP2-5C3-MP2-12-4",
                                  "1x17x15-7C5-AP2-9C3-AP2-6", "2x10x10-6C3-AP2-5"])
@pytest.mark.parametrize("record", [True, False])
def test_forward_runs_pairs_in_one_pass_as_one_by_one(spec, record, monkeypatch):
    """Network.forward runs a convolution on the direct kernel and the 2 x 2 average
    pooling after it as one pass, and gives what the layers give one by one, bit for
    bit: counts, every trace (the pooling's input events made from the spikes when read),
    the operation counts and, from a recorded forward, the gradients. Also with a dead
    filter and kernels of zeros."""
    monkeypatch.setattr(conv_layer, "forward_path", lambda *args: "direct")  # the pass's kernel, at any density
    passes = []
    one_pass = conv_layer.SpikingConv2d.forward_and_pool
    monkeypatch.setattr(conv_layer.SpikingConv2d, "forward_and_pool",
                        lambda *args, **kwargs: passes.append(one_pass(*args, **kwargs)) or passes[-1])
    network, x = spiking_network(spec)
    grad_counts = np.random.default_rng(1).standard_normal((5, network.sizes[-1])).astype(np.float32)
    for edit in range(2):
        if edit:
            network.layers[0].kill(np.array([1]))
            network.layers[0].store.data[::3] = 0.0
        passes.clear()
        counts, traces = network.forward(x, record=record)
        assert passes[0] is not None and traces[0].spikes.any()
        events, alone = evsim.dense_to_events(x), []
        for layer in network.layers:
            events, trace = layer.forward(events, network.lif, record)
            alone.append(trace)
        np.testing.assert_array_equal(counts, network.forward(x, record=record)[0])
        for k, (a, b) in enumerate(zip(traces, alone)):
            for name in ("events_in", "events_out"):
                if hasattr(b, name):
                    for got, want in zip(getattr(a, name)[:3], getattr(b, name)[:3]):
                        np.testing.assert_array_equal(got, want, err_msg=f"layer {k} {name}")
            for name in ("u", "spikes"):
                if getattr(b, name, None) is not None:
                    np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=f"layer {k} {name}")
        assert count_network(network, traces, False, 5).summary() == count_network(network, alone, False, 5).summary()
        if record:
            for a, b in zip(network.backward(traces, grad_counts), network.backward(alone, grad_counts)):
                for got, want in zip(a.params, b.params):
                    np.testing.assert_array_equal(got, want)


def test_forward_fuses_where_the_direct_kernel_runs(monkeypatch):
    """The pass runs where the convolution's forward takes the direct kernel and an average
    pooling of 2 follows: not on another kernel, after a max pooling or a pool of 3."""
    network = evsim.Network.from_spec("2x24x24-6C3-AP2-5C3-MP2-5C3-AP3-4", rng=0)
    conv1, pool1, conv2, maxpool, conv3, pool3 = network.layers[:6]
    ones = [evsim.dense_to_events(np.ones((2, 3, conv.n_in), np.float32)) for conv in (conv1, conv2, conv3)]
    with monkeypatch.context() as patch:
        patch.setattr(conv_layer, "forward_path", lambda *args: "direct")
        assert conv1.forward_and_pool(ones[0], network.lif, pool1) is not None
        assert conv2.forward_and_pool(ones[1], network.lif, maxpool) is None
        assert conv3.forward_and_pool(ones[2], network.lif, pool3) is None
    with monkeypatch.context() as patch:
        patch.setattr(conv_layer, "forward_path", lambda *args: "events")
        assert conv1.forward_and_pool(ones[0], network.lif, pool1) is None


@pytest.mark.parametrize("path", ["events", "direct"])
def test_pools_five_by_five_kernels(rng, path):
    """The direct and event paths take any kernel size."""
    weight, (indptr, columns, data), _ = make_conv(rng, 2, 7, 5)
    bias = dyadic_weights(rng, (7,), scale=4).astype(np.float32)
    x, ev = event_maps(rng, (4, 2, 2, 12, 13), 0.3, values=(1.0, 2.0))
    geo = conv_geometry(2, 12, 13, 5, 1, 2)
    ref, _ = pooled_twin(x, weight, bias, 2, "hard", 7, np.arange(7))
    pooled = np.empty(ref.shape, np.uint8)
    conv_lif_pool(ev, indptr, columns, data, geo, bias, 0.2, 0.5, True, path, np.arange(7), pooled)
    np.testing.assert_array_equal(pooled, ref)


def test_refuses_what_it_cannot_run(rng):
    weight, (indptr, columns, data), _ = make_conv(rng, 2, 4, 5)
    _, ev = event_maps(rng, (2, 3, 2, 8, 8), 0.3)
    bias = np.zeros(4, np.float32)
    out = np.zeros((2, 3, 4 * 16), np.uint8)
    with pytest.raises(ValueError, match="3 x 3"):
        conv_lif_pool(ev, indptr, columns, data, conv_geometry(2, 8, 8, 5, 1, 2), bias, 0.2, 0.5, True, "winograd",
                      np.arange(4), out)
    with pytest.raises(ValueError, match="stride-1"):
        conv_lif_pool(ev, indptr, columns, data, conv_geometry(2, 8, 8, 5, 2, 2), bias, 0.2, 0.5, True, "direct",
                      np.arange(4), out)
    with pytest.raises(ValueError, match="distinct channels"):
        conv_lif_pool(ev, indptr, columns, data, conv_geometry(2, 8, 8, 5, 1, 2), bias, 0.2, 0.5, True, "direct",
                      np.array([0, 1, 1, 2]), out)
    with pytest.raises(ValueError, match="pooled_out"):
        conv_lif_pool(ev, indptr, columns, data, conv_geometry(2, 8, 8, 5, 1, 2), bias, 0.2, 0.5, True, "direct",
                      np.arange(4), out.astype(np.float32))
    with pytest.raises(ValueError, match="window counts"):
        conv_lif_pool(np.zeros((2, 3, 128), np.float32), indptr, columns, data, conv_geometry(2, 8, 8, 5, 1, 2), bias,
                      0.2, 0.5, True, "direct", np.arange(4), out)


@pytest.mark.parametrize("spec", ["2x16x16-8C3-AP2-12C3-AP2-20-4", "2x12x12-6C3-AP2-5C3-MP2-12-4",
                                  "1x17x15-7C5-AP2-9C3-AP2-6", "1x9x9-20C3s2-AP2-7", "2x10x10-6C3-AP2-5"])
def test_predict_gives_forward_counts(spec, monkeypatch):
    """Network.predict's counts are forward's, with pairs fused where they apply (average
    pooling of 2 after a stride-1 convolution) and layers run one by one elsewhere (max
    pooling, a stride), also with dead filters, pruned kernels and a dense map handed on.
    (The fused pass is kept to the kernels forward runs, whose currents are forward's;
    F(4x4, 3x3), which predict may also take, is held to a float64 twin in
    tests/test_conv_winograd4.py.)"""
    without_f4 = {name: cost for name, cost in conv_paths.HOST.pooled.items() if name != "winograd4"}
    monkeypatch.setattr(conv_paths, "HOST", dataclasses.replace(conv_paths.HOST, pooled=without_f4))
    network, x = spiking_network(spec)
    counts, traces = network.forward(x, record=False)
    assert counts.any() and all(t.spikes.any() for t in traces if hasattr(t, "spikes"))
    np.testing.assert_array_equal(network.predict(x), counts)
    conv = network.layers[0]
    conv.kill(np.array([1]))
    conv.store.data[::3] = 0.0  # as if pruned: kernels of zeros
    np.testing.assert_array_equal(network.predict(x), network.forward(x, record=False)[0])


def test_forward_pooled_declines_what_it_does_not_fuse(rng):
    """Max pooling, pools of 3 and strides are left to forward; sparse input and dense
    input run fused on every machine's table (sparse on the fused event path)."""
    net = evsim.Network.from_spec("2x24x24-6C3-MP2-5C3-AP3-5C3s2-AP2-4", rng=0)
    conv1, maxpool, conv2, pool3, conv3, avgpool = net.layers[:6]
    dense = np.ones((2, 3, conv1.n_in), np.float32)
    assert conv1.forward_pooled(evsim.dense_to_events(dense), net.lif, maxpool) is None
    assert conv2.forward_pooled(np.ones((2, 3, conv2.n_in), np.uint8), net.lif, pool3) is None
    assert conv3.forward_pooled(np.ones((2, 3, conv3.n_in), np.uint8), net.lif, avgpool) is None
    fused = evsim.Network.from_spec("15x16x16-40C3-AP2-4", rng=0)
    sparse = np.zeros((2, 3, fused.layers[0].n_in), np.float32)
    sparse[0, 0, 5] = 1.0
    for table in (conv_paths.AVX512, conv_paths.AVX2):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(conv_paths, "HOST", table)
            assert conv_paths.pooled_path(fused.layers[0].geometry, 40, 1 / sparse.size) == "events"
            assert fused.layers[0].forward_pooled(evsim.dense_to_events(sparse), net.lif, fused.layers[1]) is not None
            dense = np.ones((2, 3, fused.layers[0].n_in), np.float32)
            assert fused.layers[0].forward_pooled(evsim.dense_to_events(dense), net.lif, fused.layers[1]) is not None


def test_predict_takes_a_static_drive():
    """Direct (analog) input runs the first convolution by its static path; the pair above
    it is fused as usual."""
    network = evsim.Network.from_spec("1x12x12-6C3-AP2-8C3-AP2-5", rng=0)
    for layer in network.layers:
        if hasattr(layer, "store"):
            layer.store.data[...] *= 2.0
    values = np.random.default_rng(1).random((4, 144)).astype(np.float32)
    drive = evsim.StaticDrive(values, 6)
    counts, _ = network.forward(drive, record=False)
    assert counts.any()
    np.testing.assert_array_equal(network.predict(drive), counts)
