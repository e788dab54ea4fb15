"""Spiking convolution and pooling layers in networks, against the dense NumPy twin."""
import numpy as np
import pytest

import evsim
from evsim.checkpoint import load_network, save_network
from evsim.errors import ConfigError
from evsim.layers import Pool2d, SparseLinear, SpikingConv2d
from evsim.neuron import surrogate_grad
from tests.reference import (avg_pool2d, avg_pool2d_backward, conv2d_forward, conv2d_input_grad, conv2d_weight_grad,
                             dyadic_weights, lif_backward, max_pool2d, max_pool2d_backward)

DECAY, V_TH = np.float32(0.2), np.float32(0.5)


def lif_scan(current):
    """Hard-reset LIF over ``current`` ``[T, B, N]``: membrane and spikes."""
    u = np.zeros_like(current)
    o = np.zeros_like(current)
    u_prev = np.zeros_like(current[0])
    o_prev = np.zeros_like(current[0])
    for t in range(current.shape[0]):
        u[t] = DECAY * u_prev * (1 - o_prev) + current[t]
        o[t] = (u[t] > V_TH).astype(np.float32)
        u_prev, o_prev = u[t], o[t]
    return u, o


def dense_params(layer):
    """The twin's view of a layer: dense weights (zeros for missing synapses) and biases
    (far below threshold for dead units, which never fire)."""
    if isinstance(layer, SpikingConv2d):
        weight = np.ascontiguousarray(layer.store.to_dense().transpose(1, 0, 2, 3))  # [F, C, K, K]
        bias = np.where(layer.alive, layer.bias, np.float32(-100.0)).astype(np.float32)
        return weight, bias
    if isinstance(layer, SparseLinear):
        return layer.store.to_dense(), np.where(layer.alive, layer.bias, np.float32(-100.0)).astype(np.float32)
    return None, None


def twin_forward(network, x):
    """Dense forward: per layer (input, u, o) or, for pooling, (input, output, argmax)."""
    steps, batch = x.shape[:2]
    trace = []
    for layer in network.layers:
        weight, bias = dense_params(layer)
        if isinstance(layer, SpikingConv2d):
            maps = x.reshape((steps * batch,) + layer.in_shape)
            g = layer.geometry
            current = conv2d_forward(maps, weight, g.stride, g.pad) + bias[None, :, None, None]
            u, o = lif_scan(current.reshape(steps, batch, -1))
            trace.append((x, u, o))
            x = o
        elif isinstance(layer, Pool2d):
            maps = x.reshape((steps * batch,) + layer.in_shape)
            if layer.mode == "avg":
                out, argmax = avg_pool2d(maps, layer.geometry.kernel), None
            else:
                out, argmax = max_pool2d(maps, layer.geometry.kernel)
            trace.append((x, out, argmax))
            x = out.reshape(steps, batch, -1)
        else:
            u, o = lif_scan(x @ weight + bias)
            trace.append((x, u, o))
            x = o
    return x.sum(axis=0), trace


def twin_backward(network, trace, grad_counts):
    """Dense BPTT: the weight and bias gradients of every layer with parameters."""
    steps, batch = trace[-1][1].shape[:2]
    grad = np.broadcast_to(grad_counts, trace[-1][1].shape).astype(np.float32)
    grads = [None] * len(network.layers)
    for k in range(len(network.layers) - 1, -1, -1):
        layer, (x, a, b) = network.layers[k], trace[k]
        weight, _ = dense_params(layer)
        if isinstance(layer, Pool2d):
            flat = grad.reshape((steps * batch,) + layer.out_shape)
            back = avg_pool2d_backward(flat, layer.in_shape, layer.geometry.kernel) if layer.mode == "avg" \
                else max_pool2d_backward(flat, b, layer.in_shape)
            grad = back.reshape(steps, batch, -1)
            continue
        u, o = a, b
        grad_u = lif_backward(grad, u, o, surrogate_grad(u - V_TH))
        if isinstance(layer, SpikingConv2d):
            g = layer.geometry
            maps_u = grad_u.reshape((steps * batch,) + layer.out_shape)
            maps_x = x.reshape((steps * batch,) + layer.in_shape)
            grads[k] = (conv2d_weight_grad(maps_x, maps_u, g.kernel, g.stride, g.pad), maps_u.sum(axis=(0, 2, 3)))
            grad = conv2d_input_grad(maps_u, weight, layer.in_shape, g.stride, g.pad).reshape(steps, batch, -1)
        else:
            grads[k] = (np.einsum("tbi,tbj->ij", x, grad_u), grad_u.sum(axis=(0, 1)))
            grad = grad_u @ weight.T
    return grads


def dyadic_network(spec, rng):
    """``spec`` with weights that are multiples of 1/64 (exact sums in any order) and
    biases that make every layer spike."""
    network = evsim.Network.from_spec(spec, rng=rng)
    for layer in network.layers:
        for values, _ in layer.parameters():
            values[...] = dyadic_weights(rng, values.shape, 1.0, 64) * 4
        if layer.parameters():
            layer.bias[:] = np.float32(0.25)
    return network


SPECS = ["1x9x9-4C3-AP2-3C3s2p1-5", "2x8x8-3C3p0-MP2-6-4", "2x10x10-4C5-AP2-5C1-AP2-6-3"]


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("pruned", [False, True], ids=["full", "pruned"])
def test_conv_network_forward_and_gradients_match_the_dense_twin(spec, pruned):
    """Forward bit-identical (dyadic weights, borders, strides, paddings, both poolings),
    including pruned kernels and a dead filter; BPTT gradients against the twin."""
    rng = np.random.default_rng(7)
    network = dyadic_network(spec, rng)
    conv = network.layers[0]
    if pruned:
        conv.prune(rng.random(conv.store.nnz) < 0.3)
        conv.kill([1])
    x = (rng.random((5, 3, network.sizes[0])) < 0.4).astype(np.float32) * rng.integers(1, 3, (5, 3, network.sizes[0]))
    counts, traces = network.forward(x.astype(np.float32))
    want, twin = twin_forward(network, x.astype(np.float32))
    np.testing.assert_array_equal(counts, want)
    for layer, trace, (_, u, _) in zip(network.layers, traces, twin):
        if not isinstance(layer, Pool2d):
            np.testing.assert_array_equal(trace.u, u[:, :, layer.alive_index])
    assert all(t[2].any() for t, layer in zip(twin, network.layers) if not isinstance(layer, Pool2d))

    labels = rng.integers(0, network.sizes[-1], 3)
    _, grad_counts = evsim.mse_rate(counts, labels, 5)
    grads = network.backward(traces, grad_counts)
    want_grads = twin_backward(network, twin, grad_counts)
    for layer, grad, expected in zip(network.layers, grads, want_grads):
        if expected is None:
            assert grad.params == []
            continue
        weight_grad, bias_grad = expected
        scale = np.abs(weight_grad).max() + 1e-12
        if isinstance(layer, SpikingConv2d):
            weight_grad = weight_grad[layer.store.indices, layer.store.rows()]
        else:
            weight_grad = weight_grad[layer.store.rows(), layer.store.indices]
        np.testing.assert_allclose(grad.params[0], weight_grad, rtol=1e-4, atol=1e-5 * scale)
        np.testing.assert_allclose(grad.params[1], np.where(layer.alive, bias_grad, 0), rtol=1e-4,
                                   atol=1e-5 * (np.abs(bias_grad).max() + 1e-12))
    assert np.abs(grads[0].params[0]).max() > 0


def test_a_dead_filter_costs_nothing_and_a_pruned_kernel_no_operation():
    """SOPs counted by profile equal a brute-force recount over the input events: per
    event, the stored kernels of its channel times the taps that land inside the map."""
    rng = np.random.default_rng(3)
    network = dyadic_network("2x7x7-3C3-AP2-4", rng)
    conv = network.layers[0]
    conv.prune(np.array([True, False, False, False, True, False]))  # (0 -> 0) and (1 -> 1)
    conv.kill([2])
    x = (rng.random((4, 2, 98)) < 0.3).astype(np.float32)
    report = evsim.profile(network, [x])
    kernels = {(c, f) for c, f in zip(conv.store.rows(), conv.store.indices)}
    expected = 0
    for t, b, i in zip(*np.nonzero(x)):
        c, y, xx = i // 49, (i % 49) // 7, i % 7
        for f in range(3):
            if (c, f) in kernels:
                expected += sum(1 for ky in range(3) for kx in range(3)
                                if 0 <= y + 1 - ky < 7 and 0 <= xx + 1 - kx < 7)
    assert report.layers[0].sops == expected > 0
    assert report.layers[1].sops == 0  # pooling does no synaptic work
    assert conv.alive_index.size == 2 * 49  # the dead filter is compacted away


def test_conv_networks_save_load_and_export():
    rng = np.random.default_rng(5)
    network = dyadic_network("2x8x8-3C3-AP2-5", rng)
    network.layers[0].prune(rng.random(6) < 0.3)
    x = (rng.random((3, 2, 128)) < 0.3).astype(np.float32)
    import tempfile
    from pathlib import Path

    import nir

    from evsim.nir_io import network_to_nir, write_nir
    folder = Path(tempfile.mkdtemp())
    save_network(folder / "n.npz", network)
    again = load_network(folder / "n.npz")
    assert again.describe() == network.describe() == "2x8x8-3C3-AP2-5"
    np.testing.assert_array_equal(again.forward(x)[0], network.forward(x)[0])
    write_nir(folder / "n.nir", network)
    graph = nir.read(folder / "n.nir")
    kinds = [type(node).__name__ for node in graph.nodes.values()]
    assert {"Conv2d", "AvgPool2d", "Flatten", "Affine", "LIF"} <= set(kinds)
    assert network_to_nir(network).edges


@pytest.mark.parametrize("spec,fragment", [
    ("2x8x8-3C3-AP16-4", "layer 2 ('AP16') does not fit its 3x8x8 input"),
    ("2x8x8-4-3C3-4", "layer 2 ('3C3') needs a map"),
    ("2x8x8-3C9p0-4", "layer 1 ('3C9p0') does not fit"),
    ("2x8x8-3Q3-4", "layer 1 ('3Q3') is not a layer"),
])
def test_architectures_that_do_not_chain_name_the_layer(spec, fragment):
    from evsim.network import spec_shapes

    pattern = fragment.replace("(", r"\(").replace(")", r"\)")
    with pytest.raises(ConfigError, match=pattern):
        evsim.Network.from_spec(spec)
    with pytest.raises(ConfigError, match=pattern):
        spec_shapes(spec)


@pytest.mark.parametrize("spec", ["2x8x8-3C3-AP2-4", "2x9x7-3C3s2p0-MP2-5-4", "1x6x6-2C5p2-AP3-3", "30-5-4"])
def test_spec_shapes_are_the_built_networks(spec):
    from evsim.network import spec_footprint, spec_shapes

    network = evsim.Network.from_spec(spec)
    shapes = spec_shapes(spec)
    assert [int(np.prod(shape)) for shape in shapes] == network.sizes
    assert [shape for shape in shapes[1:] if len(shape) == 3] == [
        layer.out_shape for layer in network.layers if hasattr(layer, "out_shape")]
    assert spec_footprint(spec) == (network.sizes, sum(layer.store.data.size for layer in network.layers
                                                       if hasattr(layer, "store")))


def test_an_architecture_that_does_not_chain_is_refused_before_the_data_loads(tmp_path):
    from click.testing import CliRunner
    from evsim.cli.main import main

    result = CliRunner().invoke(main, ["train", "--dataset", "nmnist", "--arch", "2x32x32-15C3-AP64-10",
                                       "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and not (tmp_path / "r").exists()
    assert result.output.strip().splitlines() == [
        "Error: Invalid value for '--arch': architecture '2x32x32-15C3-AP64-10': layer 2 ('AP64') does not fit its "
        "15x32x32 input: pool geometry: a 64x64 window is larger than the 32x32 map"]


def test_a_conv_run_stopped_and_resumed_ends_as_the_uninterrupted_run(tmp_path):
    """A convolutional network trains through the Trainer with SD-SNN developing its fully
    connected layer, checkpoints, and resumes exactly."""
    from evsim.checkpoint import CHECKPOINT_LATEST, load_checkpoint
    from evsim.data.base import Dataset, Split
    from evsim.train import Trainer, TrainingInterrupted
    from tests.runs import assert_same_run, toy_config
    from tests.test_resume import interrupt_at

    rng = np.random.default_rng(0)

    def split(n):
        labels = rng.integers(0, 3, n)
        maps = rng.random((n, 1, 6, 6)) * 0.3
        for k in range(3):
            maps[labels == k, 0, 2 * k:2 * k + 2, :] += 0.6
        return Split(maps.reshape(n, 36).astype(np.float32), labels)

    dataset = Dataset("maps", split(200), split(60), 3, (1, 6, 6), "rate", "toy")
    config = toy_config(dataset="maps", arch="1x6x6-3C3-AP2-8-3", epochs=3, batch_size=40, lr=1e-2, time_steps=8)
    Trainer(config, dataset).fit(tmp_path / "whole", progress=False, echo=lambda line: None)
    stopped = Trainer(config, dataset)
    interrupt_at(stopped, batch=7)  # 5 batches per epoch: inside epoch 2
    with pytest.raises(TrainingInterrupted):
        stopped.fit(tmp_path / "resumed", progress=False, echo=lambda line: None)
    state = load_checkpoint(tmp_path / "resumed" / CHECKPOINT_LATEST)
    assert state.network.describe() == "1x6x6-3C3-AP2-8-3"
    second = Trainer(config, dataset)
    second.restore(state)
    summary = second.fit(tmp_path / "resumed", progress=False, echo=lambda line: None)
    assert summary["test_acc"] > 0.5
    assert_same_run(tmp_path / "whole", tmp_path / "resumed")


def test_a_conv_network_exported_to_nir_imports_as_the_same_network(tmp_path):
    """Export, nir.read, import: the same layers, structure (pruned kernels, a dead
    filter) and spikes."""
    from evsim.nir_io import read_nir, write_nir

    rng = np.random.default_rng(11)
    network = dyadic_network("2x8x8-4C3-AP2-3C3s2p1-6-3", rng)
    network.layers[0].prune(rng.random(network.layers[0].store.nnz) < 0.25)
    network.layers[2].kill([1])
    write_nir(tmp_path / "net.nir", network)
    again = read_nir(tmp_path / "net.nir")
    assert again.describe() == network.describe()
    assert [layer.store.nnz for layer in again.layers if hasattr(layer, "store")] == \
        [layer.store.nnz for layer in network.layers if hasattr(layer, "store")]
    x = (rng.random((4, 3, 128)) < 0.4).astype(np.float32)
    np.testing.assert_array_equal(again.forward(x)[0], network.forward(x)[0])


@pytest.mark.parametrize("spec, dead", [("2x9x9-4C3-AP2-5", []), ("2x9x9-4C3-AP2-5", [0, 2]),
                                        ("1x10x10-3C5p0-AP2-4", [1])])
def test_a_pooled_gradient_gives_the_convolution_below_what_the_formed_one_gives(spec, dead):
    """An average pooling hands the convolution below its dL/d(pooled output)
    (:class:`PooledGrad`), formed slot by slot in the LIF backward: the same dL/du, kernel,
    bias and input gradients, bit for bit, as from the pooling's formed dL/d(spikes) (dead
    filters, and a 6x6 map whose pooling drops no cell as well as a 9x9 one whose last row
    and column fall outside every window)."""
    from evsim.errors import ShapeError
    from evsim.layers.base import BackwardRequest, PooledGrad

    rng = np.random.default_rng(5)
    network = dyadic_network(spec, rng)
    conv, pool = network.layers[0], network.layers[1]
    if dead:
        conv.kill(dead)
    x = ((rng.random((6, 3, network.sizes[0])) < 0.4) * rng.integers(1, 3, (6, 3, network.sizes[0])))
    _, traces = network.forward(x.astype(np.float32))
    grad_pooled = rng.normal(0, 1, (6, 3, pool.n_out)).astype(np.float32)
    below = BackwardRequest(input_units=conv.alive_index if dead else None, pooled_ok=True)
    pooled = pool.backward(traces[1], grad_pooled, network.lif, below).input
    formed = pool.backward(traces[1], grad_pooled, network.lif,
                           BackwardRequest(input_units=below.input_units)).input
    assert isinstance(pooled, PooledGrad) and isinstance(formed, np.ndarray)
    request = BackwardRequest(input_grad=False)
    from_pooled = conv.backward(traces[0], pooled, network.lif, request)
    from_formed = conv.backward(traces[0], formed, network.lif, request)
    for got, want in zip(from_pooled.params, from_formed.params):
        np.testing.assert_array_equal(got, want)
    assert np.abs(from_pooled.params[0]).max() > 0
    with pytest.raises(ShapeError, match="does not fit"):
        conv.backward(traces[0], pooled._replace(channels=pooled.channels[:-1]), network.lif, request)


def test_max_pooling_and_a_layer_that_takes_no_pooled_gradient_get_it_formed():
    from evsim.layers.base import BackwardRequest

    rng = np.random.default_rng(2)
    network = dyadic_network("2x8x8-3C3-MP2-4", rng)
    x = (rng.random((4, 2, network.sizes[0])) < 0.4).astype(np.float32)
    _, traces = network.forward(x)
    grad = rng.normal(0, 1, (4, 2, network.layers[1].n_out)).astype(np.float32)
    assert isinstance(network.layers[1].backward(traces[1], grad, network.lif,
                                                 BackwardRequest(pooled_ok=True)).input, np.ndarray)
    average = dyadic_network("2x8x8-3C3-AP2-4", rng)
    _, traces = average.forward(x)
    assert isinstance(average.layers[1].backward(traces[1], grad, average.lif, BackwardRequest()).input, np.ndarray)


def test_a_dead_filter_under_a_convolution_gets_the_error_it_would_receive():
    """Regrowth into a dead filter of a developing convolution needs the error the layer
    above would send it. An identity pooling (AP1) between the two convolutions hands it
    on by the pooling's own path, checked against the dense twin: the same numbers must
    come straight from the convolution above."""
    x = (np.random.default_rng(0).random((4, 2, 64)) < 0.5).astype(np.float32)
    would_be = {}
    for spec in ("1x8x8-4C3-5C3-3", "1x8x8-4C3-AP1-5C3-3"):  # the same weights: the same draws
        network = evsim.Network.from_spec(spec, rng=1)
        network.set_developing("conv1")
        for layer in network.layers:
            if hasattr(layer, "store"):
                layer.store.data[...] *= 3  # so that every layer fires
        network.layers[0].kill([1])
        counts, traces = network.forward(x)
        grads = network.backward(traces, evsim.mse_rate(counts, np.array([0, 1]), 4)[1], would_be_grad=True)
        would_be[spec] = grads[0].would_be[:, 1]
    assert np.abs(would_be["1x8x8-4C3-AP1-5C3-3"]).max() > 0
    np.testing.assert_allclose(would_be["1x8x8-4C3-5C3-3"], would_be["1x8x8-4C3-AP1-5C3-3"], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("mode", ["AP2", "MP2"])
def test_a_pooling_first_network_takes_a_static_drive(mode):
    """Direct-encoded (analog, signed) input pooled before the first convolution: the pooled
    static drive, the convolution's membrane and spikes bit for bit against the twin on
    the input repeated at every step, its gradients against the twin's, and the
    convolution's work counted as MACs (one per nonzero pooled value and stored tap,
    every step), as profile and record count it, never negative."""
    from evsim.energy import count_network
    from evsim.kernels.events import StaticDrive

    rng = np.random.default_rng(11)
    network = dyadic_network(f"1x9x9-{mode}-3C3-5", rng)
    conv = network.layers[1]
    conv.prune(np.array([True, False, False]))
    steps, batch = 4, 3
    values = (rng.integers(-16, 17, (batch, 81)) / 16).astype(np.float32) * (rng.random((batch, 81)) < 0.7)
    counts, traces = network.forward(StaticDrive(values, steps))
    repeated = np.repeat(values[None], steps, axis=0)
    want, twin = twin_forward(network, repeated)
    np.testing.assert_array_equal(traces[0].events_out.values, twin[0][1].reshape(steps, batch, -1)[0])
    np.testing.assert_array_equal(traces[1].u, twin[1][1][:, :, conv.alive_index])
    np.testing.assert_array_equal(counts, want)
    assert twin[1][2].any() and (values < 0).any()

    _, grad_counts = evsim.mse_rate(counts, rng.integers(0, 5, batch), steps)
    grads = network.backward(traces, grad_counts)
    weight_grad, bias_grad = twin_backward(network, twin, grad_counts)[1]
    assert grads[0].params == []
    np.testing.assert_allclose(grads[1].params[0], weight_grad[conv.store.indices, conv.store.rows()], rtol=1e-4,
                               atol=1e-5 * np.abs(weight_grad).max())
    np.testing.assert_allclose(grads[1].params[1], bias_grad, rtol=1e-4, atol=1e-5 * np.abs(bias_grad).max())

    pooled = twin[0][1].reshape(steps, batch, -1)[0]
    kernels = set(zip(conv.store.rows(), conv.store.indices))
    expected = steps * sum(sum(1 for f in range(3) if (0, f) in kernels
                               for ky in range(3) for kx in range(3) if 0 <= i // 4 + 1 - ky < 4 and 0 <= i % 4 + 1 - kx < 4)
                           for i in np.nonzero(pooled)[1])
    reports = [count_network(network, traces, True, batch), evsim.record(network, StaticDrive(values, steps)).energy]
    if mode == "AP2":  # signed values at every step, as events (max pooling refuses negative events)
        reports += [count_network(network, network.forward(repeated)[1], True, batch),
                    evsim.record(network, repeated, analog_input=True).energy]
        with pytest.raises(ConfigError, match="analog_input=True"):
            evsim.record(network, repeated)
    for report in reports:
        assert report.layers[1].macs == expected > 0 and report.layers[1].sops == 0
        assert report.layers[2].sops > 0 and report.layers[2].macs == 0
        assert min(layer.ops.min() for layer in report.layers) >= 0
