"""Inference through a convolution, its LIF step and 2 x 2 average pooling in one pass
(evsim/kernels/conv_lif_pool.py) against the dense twin."""
import dataclasses

import numpy as np
import pytest

import evsim
from evsim.kernels import conv_paths
from evsim.kernels.conv_geometry import conv_geometry
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
    network = evsim.Network.from_spec(spec, rng=0)
    for layer in network.layers:
        if hasattr(layer, "store"):
            layer.store.data[...] *= 2.0  # every layer spikes
    n_in = network.layers[0].n_in
    x = ((np.random.default_rng(0).random((8, 5, n_in)) < 0.4) * 3).astype(np.float32)
    counts, traces = network.forward(x, record=False)
    assert counts.any() and all(t.spikes.any() for t in traces if hasattr(t, "spikes"))
    np.testing.assert_array_equal(network.predict(x), counts)
    conv = network.layers[0]
    conv.kill(np.array([1]))
    conv.store.data[::3] = 0.0  # as if pruned: kernels of zeros
    np.testing.assert_array_equal(network.predict(x), network.forward(x, record=False)[0])


def test_forward_pooled_declines_what_it_does_not_fuse(rng):
    """Max pooling, pools of 3 and strides are left to forward; so is sparse input where the
    machine's table names no fused event path (the layer's own event path is cheaper), and
    where it names one, sparse input runs fused on it."""
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
            pooled = fused.layers[0].forward_pooled(evsim.dense_to_events(sparse), net.lif, fused.layers[1])
            assert (pooled is None) == ("events" not in table.pooled)
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
