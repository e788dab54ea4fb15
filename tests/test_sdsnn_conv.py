"""SD-SNN on convolutions: hand-worked development steps on tiny layers (filter importance,
the filter rate across a pooling, kernel regrowth and its counter), would-be gradients of
missing kernels against their oracle, and a pruned filter costing nothing."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import evsim
from evsim.errors import ConfigError
from evsim.compression import layer_report, zero_or_absent
from evsim.layers import SpikingConv2d
from evsim.network import Network, developing_layers
from evsim.structure import SDSNN, SDSNNConfig, make_structure
from evsim.structure.sdsnn import (init_ranges, kernel_regrowth_candidates, neuron_importance,
                                   neurons_to_prune, update_filter_rho, _next_alive_units)
from evsim.synapses import SynapseStore
from tests import reference

CFG = SDSNNConfig(spine_steps=2, regrow_steps=2, kernel_regrow_steps=2)


def kernel_store(pairs, channels=2, filters=3, kernel=2, values=None):
    """A block store with the (channel, filter) ``pairs`` present."""
    pairs = sorted(pairs)
    indptr = np.zeros(channels + 1, np.int32)
    np.cumsum(np.bincount([c for c, _ in pairs], minlength=channels), out=indptr[1:])
    data = np.ones((len(pairs), kernel, kernel), np.float32) if values is None else np.asarray(values, np.float32)
    return SynapseStore.from_blocks(indptr, np.array([f for _, f in pairs], np.int32), data, (channels, filters))


def test_filter_importance_sums_each_filters_normalised_kernel_widths_by_hand():
    store = kernel_store([(0, 0), (0, 2), (1, 0), (1, 1)])
    init_ranges(store, max_abs=1.0)
    # Widths r+ + |r-|: 2 everywhere but these weights (so that min 1, max 3 normalise to 0 and 1).
    store.state["r_plus"][0, 0, 0] = 2.0     # kernel (0, 0): one weight of width 3 -> 1.0
    store.state["r_plus"][1, 1, 1] = 0.0     # kernel (0, 2): one of width 1 -> 0.0
    # Every other weight has width 2 -> 0.5. Filter 0: kernels (0,0) and (1,0): 1 + 3*0.5 + 4*0.5.
    importance = neuron_importance(store)
    np.testing.assert_allclose(importance, [1.0 + 3.5, 4 * 0.5, 0.0 + 3 * 0.5])
    # rho 40 % of 3 filters: floor(1.2) = 1 dies, the least important alive one (filter 2, 1.5).
    assert list(neurons_to_prune(importance, np.ones(3, bool), 40.0)) == [2]


def test_filter_rate_adapts_over_the_next_developing_layer_across_a_pooling():
    network = Network.from_spec("2x8x8-3C3-AP2-4C3-AP2-6-5", 0)
    assert developing_layers(network, "auto") == [False, False, True, False, True, False]
    conv2, fc1 = network.layers[2], network.layers[4]
    fc1.kill([0, 3])
    conv2.kill([1])
    assert _next_alive_units(network, 2) == 4  # fc1's 4 alive neurons, not the pooling's units
    cfg = SDSNNConfig(spine_steps=2, filter_rho_init=5.0, rho_max=65.0)
    s = 2 * 2 + 3  # two steps after pruning began
    want = 5.0 + math.exp(-(s - 2 * 2 - 1) / 5) * 3 / 4
    assert update_filter_rho(5.0, s, 3, 4, cfg) == pytest.approx(want)
    # The SD-SNN step itself: conv2's rate after the step is this rule applied to its alive filters.
    sdsnn = SDSNN(network, cfg)
    for k in [*sdsnn.layers, *sdsnn.constrained]:  # the output layer is held in its ranges too
        init_ranges(network.layers[k].store)
    sdsnn.step = s - 1
    sdsnn.state[2].rho = 5.0
    sdsnn.develop(network, 1e-3)
    assert sdsnn.state[2].rho == pytest.approx(5.0 + math.exp(-(s - 5) / 5) * 3 / 4)


@pytest.mark.parametrize("develop", ["auto", "fc1"])
def test_a_filter_rate_above_its_cap_is_refused_only_where_filters_develop(develop):
    from evsim.train import TrainConfig, check_before_loading

    cfg = SDSNNConfig(rho_init=2.0, rho_max=3.0)  # filter_rho_init keeps its default 5
    SDSNN(Network.from_spec("128-6-5", 0), cfg)  # fully connected: any rho_max
    config = TrainConfig(dataset="mnist", hidden=(20,), sdsnn=cfg)
    check_before_loading(config)
    conv = Network.from_spec("2x8x8-3C3-AP2-4C3-AP2-6-5", 0)
    for layer, develops in zip(conv.layers, developing_layers(conv, develop)):
        layer.develops = develops
    config = TrainConfig(dataset="nmnist", arch="2x34x34-3C3-AP2-4C3-AP2-6-10", sdsnn=cfg, develop=develop)
    if develop == "fc1":
        SDSNN(conv, cfg)
        check_before_loading(config)
        return
    with pytest.raises(ConfigError, match=r"filter_rho_init 5.0 \(--filter-rho-init\) and rho_max 3.0"):
        SDSNN(conv, cfg)
    with pytest.raises(ConfigError, match=r"filter_rho_init 5.0 \(--filter-rho-init\) and rho_max 3.0"):
        check_before_loading(config)


def test_kernel_regrows_after_more_than_r_consecutive_qualifying_steps():
    store = kernel_store([(0, 0), (0, 1), (1, 0), (1, 1)], values=np.full((4, 2, 2), 0.1))
    missing = ~store.mask()  # (0, 2) and (1, 2)
    counter = np.zeros((2, 3), np.int16)
    would_be = np.zeros((2, 3, 2, 2), np.float32)
    would_be[0, 2] = 0.5    # signed sum 2.0: above every existing kernel's 0.4
    would_be[1, 2] = -0.5   # negative: never qualifies (the rule is one-sided, as the authors')
    q = 50.0
    for step in range(3):   # qualifies 1, 2, 3 times: regrows at the third (> 2)
        channels, filters = kernel_regrowth_candidates(counter, would_be, store, q, 2, missing)
        if step < 2:
            assert channels.size == 0 and counter[0, 2] == step + 1
    assert list(zip(channels, filters)) == [(0, 2)] and counter[0, 2] == 0 and counter[1, 2] == 0
    # One step without qualifying resets the count.
    counter[0, 2] = 2
    would_be[0, 2] = 0.0
    kernel_regrowth_candidates(counter, would_be, store, q, 2, missing)
    assert counter[0, 2] == 0


def test_threshold_is_the_percentile_of_every_kernels_signed_sum():
    store = kernel_store([(0, 0), (0, 1), (1, 0)], values=[np.full((2, 2), v) for v in (0.1, 0.2, -0.3)])
    would_be = np.zeros((2, 3, 2, 2), np.float32)
    would_be[0, 2], would_be[1, 1], would_be[1, 2] = 0.05, 0.06, 0.3
    sums = np.array([0.4, 0.8, 0.2, -1.2, 0.24, 1.2])  # (0,0) (0,1) (0,2) (1,0) (1,1) (1,2)
    missing = ~store.mask()
    for q in (30.0, 65.0, 90.0):
        counter = np.zeros((2, 3), np.int16)
        kernel_regrowth_candidates(counter, would_be, store, q, 5, missing)
        threshold = np.percentile(sums, q)
        np.testing.assert_array_equal(counter > 0, missing & (sums.reshape(2, 3) > threshold))


def dyadic(network, rng):
    for layer in network.layers:
        for values, _ in layer.parameters():
            values[...] = reference.dyadic_weights(rng, values.shape, 1.0, 64) * 4
        if layer.parameters():
            layer.bias[:] = np.float32(0.25)
    return network


def test_would_be_gradient_of_a_missing_kernel_is_its_gradient_at_zero_weight():
    """A missing kernel of an alive filter would get the gradient the same kernel gets when
    present with zero weights (which leave the forward pass unchanged)."""
    rng = np.random.default_rng(5)
    network = dyadic(Network.from_spec("2x8x8-3C3-AP2-4C3-AP2-6-5", 0), rng)
    conv2 = network.layers[2]
    remove = np.zeros(conv2.store.nnz, bool)
    remove[[1, 5, 6]] = True
    gone = list(zip(conv2.store.rows()[remove], conv2.store.indices[remove]))
    conv2.prune(remove)
    x = (rng.random((4, 3, 128)) < 0.3).astype(np.float32)
    grad_counts = rng.standard_normal((3, 5)).astype(np.float32)
    counts, traces = network.forward(x)
    would_be = network.backward(traces, grad_counts, would_be_grad=True)[2].would_be
    conv2.regrow([c for c, _ in gone], [f for _, f in gone], np.zeros((len(gone), 3, 3)))
    counts_again, traces = network.forward(x)
    np.testing.assert_array_equal(counts, counts_again)
    grads = network.backward(traces, grad_counts)[2].params[0]
    present = {(c, f): k for k, (c, f) in enumerate(zip(conv2.store.rows(), conv2.store.indices))}
    for c, f in gone:
        np.testing.assert_allclose(would_be[c, f], grads[present[c, f]], rtol=1e-5, atol=1e-7)
        assert np.any(would_be[c, f] != 0)
    others = np.ones((3, 4), bool)
    for c, f in gone:
        others[c, f] = False
    assert not would_be[others].any()  # zeros where a kernel existed


def test_would_be_gradient_of_a_dead_filter_is_the_error_the_pooling_sends_its_units():
    """A dead filter's would-be kernels correlate its input with the error its units would
    receive (dL/d(spike) from the pooling above, the surrogate taken as 1)."""
    rng = np.random.default_rng(6)
    network = dyadic(Network.from_spec("2x8x8-3C3-AP2-4C3-AP2-6-5", 0), rng)
    network.layers[2].kill([2])
    x = (rng.random((4, 3, 128)) < 0.3).astype(np.float32)
    grad_counts = rng.standard_normal((3, 5)).astype(np.float32)
    _, traces = network.forward(x)
    grads = network.backward(traces, grad_counts, would_be_grad=True)
    # fc1's input gradient (every pooled unit: the pooling has no dead units), through the
    # pooling's dense twin to conv2's map; the dead filter's channel is its units' error.
    grad_map = reference.avg_pool2d_backward(np.asarray(grads[4].input).reshape(12, 4, 2, 2), (4, 4, 4), 2)
    inputs = traces[2].events_in
    dense_in = np.zeros((12, 3 * 16), np.float32)
    for slot in range(12):
        lo, hi = inputs.ptr[slot], inputs.ptr[slot + 1]
        dense_in[slot, inputs.idx[lo:hi]] = inputs.val[lo:hi]
    want = reference.conv2d_weight_grad(dense_in.reshape(12, 3, 4, 4), grad_map[:, 2:3], 3, 1, 1)
    np.testing.assert_allclose(grads[2].would_be[:, 2], want[0], rtol=1e-4, atol=1e-6)
    assert np.abs(want).max() > 0
    assert not grads[2].would_be[:, [0, 1, 3]].any()  # the alive filters miss no kernel


@settings(max_examples=10, deadline=None, database=None)
@given(dead=st.sets(st.integers(0, 3), min_size=1, max_size=3), seed=st.integers(0, 2 ** 16))
def test_a_pruned_filter_costs_no_sops_and_no_work_in_forward_and_backward(dead, seed):
    """A network with dead filters computes exactly what the same network built without
    them computes (dead filters are compacted away before every kernel, forward and
    backward, so they cost no time), and its SOPs are the smaller network's."""
    rng = np.random.default_rng(seed)
    network = dyadic(Network.from_spec("2x8x8-3C3-AP2-4C3-6-5", 0), rng)
    conv2, fc1 = network.layers[2], network.layers[3]
    conv2.kill(sorted(dead))
    keep = [f for f in range(4) if f not in dead]
    small = Network.from_spec(f"2x8x8-3C3-AP2-{len(keep)}C3-6-5", 0)
    small.layers[0], small.layers[1], small.layers[4] = network.layers[0], network.layers[1], network.layers[4]
    n = len(keep)
    small.layers[2] = SpikingConv2d(SynapseStore.from_blocks(
        np.arange(0, 3 * n + 1, n, dtype=np.int32), np.tile(np.arange(n, dtype=np.int32), 3),
        conv2.store.to_dense()[:, keep].reshape(-1, 3, 3), (3, n)), (3, 4, 4), 1, 1, conv2.bias[keep])
    units = np.concatenate([np.arange(f * 16, (f + 1) * 16) for f in keep])
    small.layers[3].store = SynapseStore.from_dense(fc1.store.to_dense()[units], np.ones((16 * n, 6), bool))
    small.layers[3].bias[:] = fc1.bias
    small.layers[3].rebuild()
    x = (rng.random((4, 3, 128)) < 0.3).astype(np.float32)
    counts, traces = network.forward(x)
    counts_small, traces_small = small.forward(x)
    np.testing.assert_array_equal(counts, counts_small)
    np.testing.assert_array_equal(traces[2].u, traces_small[2].u)  # the same work: the alive filters' map only
    grad_counts = rng.standard_normal((3, 5)).astype(np.float32)
    grads, grads_small = network.backward(traces, grad_counts), small.backward(traces_small, grad_counts)
    np.testing.assert_allclose(grads[2].params[0], grads_small[2].params[0], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grads[0].params[0], grads_small[0].params[0], rtol=1e-5, atol=1e-7)
    report, report_small = evsim.profile(network, [x]), evsim.profile(small, [x])
    assert report.layers[2].sops == report_small.layers[2].sops


def tiny_training(structure_name, steps=14, seed=0, cfg=CFG):
    rng = np.random.default_rng(seed)
    network = Network.from_spec("2x8x8-3C3-AP2-4C3-AP2-8-3", seed)
    structure = make_structure(structure_name, network, cfg, 0.5, 6, True, seed)
    x = (rng.random((4, 6, 128)) < 0.3).astype(np.float32)
    labels = rng.integers(0, 3, 6)
    optimizer = evsim.Optimizer("adam", 1e-2)
    rows = []
    for _ in range(steps):
        counts, traces = network.forward(x)
        _, grad_counts = evsim.mse_rate(counts, labels, 4)
        grads = network.backward(traces, grad_counts, would_be_grad=structure.needs_would_be_grad)
        optimizer.step(network.parameters(grads))
        structure.observe(network, grads)
        rows.append(structure.develop(network, 1e-2))
    return network, structure, rows


def test_sdsnn_prunes_filters_and_regrows_kernels_keeping_the_store_aligned():
    cfg = SDSNNConfig(spine_steps=2, regrow_steps=1, kernel_regrow_steps=0, filter_rho_init=30.0, rho_init=40.0,
                      kernel_q_base=0.0, q_growth=1.0000001, constrain_output=True)
    network, structure, rows = tiny_training("sdsnn", cfg=cfg)
    conv2 = network.layers[2]
    assert any(row[0]["pruned"] for row in rows)  # filters died
    assert any(row[0]["regrown"] for row in rows)  # kernels came back
    assert min(row[0]["alive_neurons"] for row in rows) < 4
    assert conv2.store.is_canonical()
    for name, values in conv2.store.state.items():
        assert values.shape[:1] == (conv2.store.nnz,), name
    assert conv2.store.state["r_plus"].shape == conv2.store.data.shape  # ranges per weight
    out = network.layers[-1].store
    assert np.all(out.data <= out.state["r_plus"]) and np.all(out.data >= out.state["r_minus"])
    assert rows[-1][0]["layer"] == 2 and rows[-1][1]["layer"] == 4


@pytest.mark.parametrize("name", ["magnitude", "set"])
def test_baselines_prune_kernels_of_convolutions(name):
    network, structure, _ = tiny_training(name, steps=8)
    conv2 = network.layers[2]
    assert conv2.store.nnz < conv2.dense_synapses
    assert conv2.store.is_canonical()


def test_compression_counts_zero_and_absent_weights_as_the_authors():
    network = Network.from_spec("2x8x8-3C3-AP2-4C3-AP2-6-5", 0)
    conv2 = network.layers[2]
    conv2.kill([0])                      # 3 kernels of 9 weights absent
    conv2.store.data[0, 0, 0] = 0.0      # one weight zero
    network.layers[4].store.data[:2] = 0.0
    dense = sum(layer.dense_weights for layer in network.layers if hasattr(layer, "store"))
    assert zero_or_absent(network) == pytest.approx((27 + 1 + 2) / dense)
    rows = {row["layer"]: row for row in layer_report(network)}
    assert rows["conv2"]["units_dead"] == 0.25 and rows["conv2"]["synapse_sparsity"] == 0.25
    assert rows["conv2"]["zero_or_absent"] == pytest.approx(28 / 108)


def test_develop_names_layers_and_refuses_the_output_and_unknown_ones():
    network = Network.from_spec("2x8x8-3C3-AP2-4C3-AP2-6-5", 0)
    assert developing_layers(network, "fc") == [False, False, False, False, True, False]
    assert developing_layers(network, "conv1,conv2") == [True, False, True, False, False, False]
    with pytest.raises(ConfigError, match="fc2 is the output layer"):
        developing_layers(network, "fc2")
    with pytest.raises(ConfigError, match="no layer conv3; it has conv1, conv2, fc1"):
        developing_layers(network, "conv3")
    with pytest.raises(ConfigError, match="must be 'auto'"):
        developing_layers(network, "pool1")


def test_paper_networks_are_the_defaults_and_hidden_alone_means_the_mlp():
    from evsim.config import config_from_options, resolve_options

    config = config_from_options(resolve_options({"dataset": "nmnist"}, {}))
    assert config.arch == "2x32x32-15C3-AP2-40C3-AP2-300-10" and config.data.crop
    assert config.develop == "auto" and config.sdsnn.constrain_output
    mlp = config_from_options(resolve_options({"dataset": "nmnist", "hidden": (800,)}, {}))
    assert mlp.arch == "" and not mlp.data.crop
    assert config_from_options(resolve_options({"dataset": "mnist"}, {})).arch == "1x28x28-15C3-AP2-40C3-AP2-300-10"
    # A configuration saved before these options resumes as it ran: the MLP, fc layers, no output constraint.
    old = config.to_dict()
    del old["arch"], old["develop"], old["sdsnn"]["constrain_output"]
    restored = type(config).from_dict(old)
    assert (restored.arch, restored.develop, restored.sdsnn.constrain_output) == ("", "fc", False)


@pytest.mark.parametrize("given, crop", [
    ({"arch": "2x32x32-8C3-AP4-10"}, True),        # a network of 32x32 maps takes the cropped frames
    ({"arch": "2048-100-10"}, True),
    ({"arch": "2x34x34-8C3-AP2-10"}, False),
    ({"arch": "2312-100-10"}, False),
    ({"arch": "2x32x32-8C3-AP4-10", "crop": False}, False),  # an explicit choice stands
    ({"arch": "2x34x34-8C3-AP2-10", "crop": True}, True),
])
def test_nmnist_crop_follows_the_networks_input_unless_given(given, crop):
    from evsim.config import config_from_options, resolve_options

    assert config_from_options(resolve_options({"dataset": "nmnist", **given}, {})).data.crop is crop
    # A saved configuration keeps its crop whatever its network takes.
    saved = {"arch": given["arch"], "crop": not crop}
    assert config_from_options(resolve_options({"dataset": "nmnist"}, saved)).data.crop is (not crop)


def test_bad_develop_values_are_one_line_errors(tmp_path):
    from click.testing import CliRunner
    from evsim.cli.main import main

    result = CliRunner().invoke(main, ["train", "--dataset", "mnist", "--develop", "pool1", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "must be 'auto'" in result.output
    assert len(result.output.strip().splitlines()) == 1
    result = CliRunner().invoke(main, ["train", "--dataset", "mnist", "--develop", "conv2,fc1,conv2",
                                       "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "names conv2 twice" in result.output and not (tmp_path / "r").exists()
    assert len(result.output.strip().splitlines()) == 1


def test_a_kernel_without_would_be_evidence_never_regrows():
    """Every existing kernel's sum negative puts the percentile below 0: a missing kernel
    whose would-be weights are all zero (no error reached its filter) must not pass it
    and regrow as zeros."""
    store = kernel_store([(0, 0), (0, 1), (1, 0), (1, 1)], values=np.full((4, 2, 2), -0.1))
    missing = ~store.mask()  # (0, 2) and (1, 2)
    would_be = np.zeros((2, 3, 2, 2), np.float32)
    would_be[1, 2, 0, 0] = 1e-6  # the least evidence qualifies
    counter = np.zeros((2, 3), np.int16)
    for _ in range(3):
        channels, filters = kernel_regrowth_candidates(counter, would_be, store, 50.0, 2, missing)
    assert list(zip(channels, filters)) == [(1, 2)] and counter[0, 2] == 0


@pytest.mark.parametrize("spec, k, units", [("2x8x8-4C3-AP2-4C3-AP2-6-5", 4, 6), ("2x8x8-4C3-AP2-4C3-AP2-6-5", 2, 4),
                                            ("128-6-5", 0, 6)])
def test_development_steps_over_a_layer_left_with_no_synapse(spec, k, units):
    """Every unit killed (``layer.kill``) leaves an empty store: its ranges are none, and
    regrowth may give it synapses again (here the first layer's neurons and the filters)."""
    network = Network.from_spec(spec, rng=0)
    network.layers[k].kill(np.arange(units))
    x = (np.random.default_rng(3).random((3, 2, 128)) < 0.5).astype(np.float32)
    sdsnn = SDSNN(network, SDSNNConfig(spine_steps=1, regrow_steps=1, rho_init=30, rho_max=50, kernel_regrow_steps=0))
    optimizer = evsim.Optimizer("adam", lr=1e-2)
    for _ in range(8):
        counts, traces = network.forward(x)
        _, grad = evsim.mse_rate(counts, np.array([0, 1]), 3)
        grads = network.backward(traces, grad, would_be_grad=sdsnn.needs_would_be_grad)
        sdsnn.observe(network, grads)
        optimizer.step(network.parameters(grads))
        sdsnn.develop(network, lr=1e-2)
    layer = network.layers[k]
    assert np.array_equal(layer.alive, layer.store.fan_in() > 0)
    if k != 4:  # fc1 of the conv net gets no evidence in 8 steps; the others regrow
        assert layer.alive.any()
