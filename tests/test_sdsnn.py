"""SD-SNN rules on hand-made cases, and structural invariants under development."""
import math
import re

import numpy as np
import pytest

from evsim.errors import ConfigError, ShapeError
from evsim.loss import mse_rate
from evsim.network import Network
from evsim.structure import SET, MagnitudePruning, SDSNN, SDSNNConfig, make_structure
from evsim.structure.sdsnn import (alpha, constrain, init_ranges, neuron_importance, neurons_to_prune,
                                   regrowth_candidates, regrowth_percentile, unit_magnitude, update_rho)
from evsim.synapses import SynapseStore
from tests import reference

CFG = SDSNNConfig(spine_steps=3, regrow_steps=2)


def single(weights):
    store = SynapseStore.from_dense(np.array([weights], np.float32), np.ones((1, len(weights)), bool))
    init_ranges(store, max_abs=1.0)
    return store


def test_ranges_start_at_the_layers_largest_weight():
    store = SynapseStore.from_dense(np.array([[0.2, -0.7], [0.1, 0.4]], np.float32))
    init_ranges(store)
    np.testing.assert_allclose(store.state["r_plus"], 0.7)
    np.testing.assert_allclose(store.state["r_minus"], -0.7)


def test_range_expands_by_mean_excess_exactly_at_step_k():
    store = single([0.0])
    excesses = [0.3, 0.1, 0.2]
    for step, excess in enumerate(excesses, start=2):
        store.data[0] = 1.0 + excess
        constrain(store, step, CFG)
        if step < 4:  # 1st and 2nd consecutive step above r+: not yet
            assert store.state["r_plus"][0] == pytest.approx(1.0)
    assert store.state["r_plus"][0] == pytest.approx(1.0 + np.mean(excesses))
    assert store.state["above_n"][0] == 0


def test_range_expands_by_the_scaled_mean_excess():
    """With development every N of an epoch's E batches a range widens by E / N times the
    mean excess: the drift of an epoch, which the paper's once-an-epoch clip lets a weight make."""
    store = single([0.0])
    for step, w in enumerate([1.25, 1.5, 1.75], start=2):
        store.data[0] = w
        constrain(store, step, CFG, excess_scale=4.0)
    assert store.state["r_plus"][0] == 1.0 + 4.0 * 0.5  # dyadic: exact
    for step, w in enumerate([-3.5, -3.5, -3.5], start=5):
        store.data[0] = w
        constrain(store, step, CFG, excess_scale=4.0)
    assert store.state["r_minus"][0] == -1.0 - 4.0 * 2.5


@pytest.mark.parametrize("per_epoch, interval, scale", [(True, 3, 12.0), (True, 72, 0.5), (False, 3, 1.0)])
def test_sdsnn_widens_ranges_by_an_epochs_excess(rng, per_epoch, interval, scale):
    sdsnn = SDSNN(small_network(rng), SDSNNConfig(excess_per_epoch=per_epoch), epoch_batches=36, interval=interval)
    assert sdsnn.excess_scale == scale


def test_lower_bound_expands_downward():
    store = single([0.0])
    for step, w in enumerate([-1.5, -1.1, -1.4], start=2):
        store.data[0] = w
        constrain(store, step, CFG)
    assert store.state["r_minus"][0] == pytest.approx(-1.0 - np.mean([0.5, 0.1, 0.4]))


def test_interrupted_excess_does_not_expand():
    store = single([0.0])
    for step, w in enumerate([1.3, 0.5, 1.3, 1.3], start=2):
        store.data[0] = w
        constrain(store, step, SDSNNConfig(spine_steps=3))
    assert store.state["r_plus"][0] == pytest.approx(1.0)


def test_range_shrinks_by_075_after_k_falls():
    store = single([0.9])
    for step, w in enumerate([0.8, 0.7, 0.6], start=2):
        store.data[0] = w
        constrain(store, step, SDSNNConfig(spine_steps=3))
    assert store.state["r_plus"][0] == pytest.approx(0.75)
    assert store.state["r_minus"][0] == pytest.approx(-0.75)


def test_clipping_only_from_step_k():
    store = single([0.0])
    store.state["r_plus"][:] = 0.5
    store.data[0] = 0.8
    constrain(store, 2, CFG)  # step 2 < K = 3: no clipping
    assert store.data[0] == pytest.approx(0.8)
    store.data[0] = 0.8
    constrain(store, 3, SDSNNConfig(spine_steps=3))
    assert store.data[0] == pytest.approx(0.5)


@pytest.mark.parametrize("spine_steps, excess_scale", [(1, 1.0), (3, 1.0), (3, 12.0)])
def test_constraint_kernel_equals_numpy_oracle(rng, spine_steps, excess_scale):
    """Many steps of drifting weights (expansions, shrinks and clipping all happen), bit for bit."""
    n = 5000
    store = SynapseStore.from_dense(rng.normal(0, 0.5, (1, n)).astype(np.float32), np.ones((1, n), bool))
    init_ranges(store)
    cfg = SDSNNConfig(spine_steps=spine_steps)
    state = {name: values.copy() for name, values in store.state.items()}
    w = store.data.copy()
    drift = rng.normal(0, 0.3, n).astype(np.float32)
    for step in range(2, 40):
        noise = (drift + rng.normal(0, 0.2, n)).astype(np.float32) * np.float32(0.1)
        store.data[:] = store.data + noise
        w[:] = w + noise
        constrain(store, step, cfg, excess_scale)
        reference.constrain(state, w, step, cfg.spine_steps, cfg.shrink, excess_scale)
        np.testing.assert_array_equal(store.data, w)
        for name in state:
            np.testing.assert_array_equal(store.state[name], state[name], err_msg=name)
    assert np.any(store.state["r_plus"] > store.state["r_plus"].min())  # some ranges expanded
    assert np.any(store.state["r_plus"] < 0.5 * store.state["r_plus"].max())  # some shrank


def test_importance_sums_normalised_widths_of_existing_synapses():
    mask = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 1]], bool)
    store = SynapseStore.from_dense(np.ones((3, 3), np.float32), mask)
    init_ranges(store, 1.0)
    widths = np.array([2.0, 1.0, 4.0, 3.0, 2.0, 1.0])  # CSR order: (0,0) (0,1) (1,0) (2,0) (2,1) (2,2)
    store.state["r_plus"][:] = widths / 2
    store.state["r_minus"][:] = -widths / 2
    normalised = (widths - 1) / 3
    expected = [normalised[[0, 2, 3]].sum(), normalised[[1, 4]].sum(), normalised[[5]].sum()]
    np.testing.assert_allclose(neuron_importance(store), expected)


def test_the_least_important_neurons_are_pruned_up_to_the_target():
    importance = np.array([5.0, 1.0, 3.0, 0.5, 4.0, 2.0, 9.0, 7.0, 6.0, 8.0])
    alive = np.ones(10, bool)
    assert sorted(neurons_to_prune(importance, alive, 30.0)) == [1, 3, 5]
    alive[[1, 3]] = False  # two already dead: only one more to reach floor(10 * 0.3) = 3
    assert neurons_to_prune(importance, alive, 30.0).tolist() == [5]
    assert neurons_to_prune(importance, alive, 19.0).size == 0


def test_rho_follows_the_neurotrophic_formula():
    cfg = SDSNNConfig(spine_steps=18, rho_init=45, rho_max=99)
    assert alpha(37, cfg) == pytest.approx(1.0)
    assert alpha(40, cfg) == pytest.approx(math.exp(-3))
    assert alpha(60, cfg) == pytest.approx(math.exp(-23))
    assert alpha(61, cfg) == pytest.approx(0.00075)
    assert update_rho(45.0, 38, 400, 800, cfg) == pytest.approx(45 + math.exp(-1) * 0.5)
    assert update_rho(98.0, 37, 800, 10, cfg) == 99  # capped


def test_regrowth_percentile_schedule():
    cfg = SDSNNConfig(spine_steps=18)
    assert regrowth_percentile(37, cfg) == pytest.approx(61.0)
    assert regrowth_percentile(47, cfg) == pytest.approx(60 + 1.1 ** 10)
    assert regrowth_percentile(200, cfg) == 99.0


def test_regeneration_needs_r_consecutive_qualifying_steps():
    store = SynapseStore.from_dense(np.full((1, 4), 0.5, np.float32), np.array([[True, True, False, False]]))
    columns = np.array([0, 2, 3])  # column 1 is complete: no counter
    counter = np.zeros((1, 3), np.int16)
    strong = np.array([[9.0, 1.0, 1.0]], np.float32)
    weak = np.array([[9.0, 1.0, 0.1]], np.float32)
    pre, slot = regrowth_candidates(counter, strong, columns, store, 50, 3)
    assert pre.size == 0 and counter.tolist() == [[0, 1, 1]]  # existing synapses never count
    regrowth_candidates(counter, weak, columns, store, 50, 3)  # (0, 3) drops out: reset
    assert counter.tolist() == [[0, 2, 0]]
    pre, slot = regrowth_candidates(counter, strong, columns, store, 50, 3)
    assert list(zip(pre, columns[slot])) == [(0, 2)] and counter.tolist() == [[0, 0, 1]]


def test_regeneration_count_equals_dense_numpy_oracle(rng):
    """Steps of random would-be updates over changing incomplete columns (neurons killed,
    synapses regrown, the counters carried from one set of columns to the next) give the
    counters and candidates of the dense NumPy count over the whole layer."""
    from evsim.structure.sdsnn import LayerDevelopment

    n_in, n_out, regrow_steps = 40, 30, 3
    layer = small_network(rng, (n_in, n_out, 2)).layers[0]
    layer.store.prune(rng.random(layer.store.nnz) < 0.3)
    layer.rebuild()
    dev = LayerDevelopment(layer, CFG)
    dense_counter = np.zeros((n_in, n_out), np.int16)
    regrown = 0
    for step in range(12):
        if step == 4:
            layer.kill(np.array([3, 17]))
        dev.observe(layer.incomplete, rng.normal(0, 1, (n_in, layer.incomplete.size)).astype(np.float32))
        would_be = dev.would_be_update(0.1, adaptive=False)
        dense_would_be = np.zeros((n_in, n_out), np.float32)
        dense_would_be[:, dev.columns] = would_be
        dev.carry_counter()
        store = layer.store
        pre, slot = regrowth_candidates(dev.counter, would_be, dev.columns, store, 40, regrow_steps)
        want_pre, want_post = reference.regrowth_candidates(dense_counter, dense_would_be, store.mask(),
                                                            np.abs(store.data), 40, regrow_steps)
        np.testing.assert_array_equal(pre, want_pre)
        np.testing.assert_array_equal(dev.columns[slot], want_post)
        carried = np.zeros((n_in, n_out), np.int16)
        carried[:, dev.columns] = dev.counter
        np.testing.assert_array_equal(carried, dense_counter)
        if pre.size:
            regrown += layer.regrow(pre, dev.columns[slot], -would_be[pre, slot])
        dev.end_interval(0.0)
    assert regrown > 0 and dense_counter.any()


def small_network(rng, sizes=(30, 20, 4)):
    return Network.mlp(list(sizes), rng)


def train_steps(net, rng, structure, n_batches, lr=1e-2):
    from evsim.optim import Optimizer

    opt = Optimizer("adam", lr)
    for _ in range(n_batches):
        x = (rng.random((5, 8, net.sizes[0])) < 0.4).astype(np.float32)
        counts, traces = net.forward(x)
        _, grad = mse_rate(counts, rng.integers(0, net.sizes[-1], 8), 5)
        grads = net.backward(traces, grad, would_be_grad=structure.needs_would_be_grad)
        structure.observe(net, grads)
        opt.step(net.parameters(grads))


def assert_store_consistent(store):
    assert store.is_canonical()
    keys = store.rows().astype(np.int64) * store.shape[1] + store.indices
    assert np.unique(keys).size == keys.size
    assert all(values.shape[0] == store.nnz for values in store.state.values())


def test_development_keeps_structure_consistent_and_regrown_state_fresh(rng):
    net = small_network(rng)
    cfg = SDSNNConfig(spine_steps=1, regrow_steps=1, rho_init=30, rho_max=50, q_base=0.0, q_max=1.0)
    sd = SDSNN(net, cfg)
    layer = net.layers[0]
    total_regrown = total_pruned = 0
    for _ in range(6):
        train_steps(net, rng, sd, 2)
        before = set(zip(layer.store.rows().tolist(), layer.store.indices.tolist()))
        (stats,) = sd.develop(net, lr=1e-2)
        total_regrown += stats["regrown"]
        total_pruned += stats["pruned"]
        assert_store_consistent(layer.store)
        after = list(zip(layer.store.rows().tolist(), layer.store.indices.tolist()))
        new = np.array([pair not in before for pair in after])
        assert np.all(layer.store.state["adam_m"][new] == 0) and np.all(layer.store.state["adam_v"][new] == 0)
        dead = ~layer.alive
        assert layer.store.fan_in()[dead].sum() == 0 and np.all(layer.bias[dead] == 0)
        # The next forward runs on a copy that matches the store, its rows padded with zeros
        # to whole cache lines.
        net.forward((rng.random((2, 3, net.sizes[0])) < 0.3).astype(np.float32))
        n_alive = layer.alive_index.size
        np.testing.assert_array_equal(layer.weight_rows[:, :n_alive], layer.store.to_dense()[:, layer.alive_index])
        assert not layer.weight_rows[:, n_alive:].any() and layer.weight_rows.shape[1] % 16 == 0
    assert total_pruned > 0 and total_regrown > 0


def backward_with_would_be(net, rng):
    """Train-step a [12, 8, 3] network on random spikes with would-be gradients; return the
    input and the error the output layer sends back to each hidden row, [T, B, 8], from
    the NumPy reference."""
    from evsim.neuron import surrogate_grad
    from tests.reference import lif_backward

    x = (rng.random((4, 6, 12)) < 0.5).astype(np.float32)
    counts, traces = net.forward(x)
    _, grad = mse_rate(counts, rng.integers(0, 3, 6), 4)
    grads = net.backward(traces, grad, would_be_grad=True)
    u, o = traces[1].u, traces[1].spikes.astype(np.float32)
    grad_u = lif_backward(np.broadcast_to(grad, u.shape).astype(np.float32), u, o, surrogate_grad(u - np.float32(0.5)))
    return x, grad_u @ net.layers[1].store.to_dense().T, grads


@pytest.mark.parametrize("path", ["rows", "csr"])
def test_dead_neuron_would_be_gradient_is_the_error_sent_back_to_its_row(rng, path):
    """Computed as (events summed against the error above) @ (weights from the dead rows):
    the same as summing, event by event, the error sent back to each dead neuron's row."""
    net = Network.mlp([12, 8, 3], rng, path=path)
    net.layers[0].kill([2, 5])
    assert [layer.path for layer in net.layers] == [path, path]
    x, sent, grads = backward_with_would_be(net, rng)
    layer = net.layers[0]
    assert layer.incomplete.tolist() == [2, 5]  # complete columns need no would-be gradient
    np.testing.assert_allclose(grads[0].would_be, np.einsum("tbi,tbj->ij", x, sent[:, :, [2, 5]]),
                               rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("path", ["rows", "csr"])
def test_would_be_gradient_of_dead_and_alive_incomplete_columns_together(rng, path):
    """Dead neurons 2 and 5 next to alive neuron 6 that misses one synapse: the dead
    columns get the error sent back to their rows, the alive one its own dL/du summed
    against the events, which where its synapses exist is their weight gradient."""
    net = Network.mlp([12, 8, 3], rng, path=path)
    layer = net.layers[0]
    layer.kill([2, 5])
    layer.prune((layer.store.rows() == 0) & (layer.store.indices == 6))
    assert layer.incomplete.tolist() == [2, 5, 6]
    x, sent, grads = backward_with_would_be(net, rng)
    would_be = grads[0].would_be
    np.testing.assert_allclose(would_be[:, :2], np.einsum("tbi,tbj->ij", x, sent[:, :, [2, 5]]),
                               rtol=1e-4, atol=1e-6)
    into_6 = layer.store.indices == 6
    np.testing.assert_allclose(would_be[layer.store.rows()[into_6], 2], grads[0].params[0][into_6],
                               rtol=1e-5, atol=1e-7)
    assert np.any(would_be[:, 2] != 0)


def test_magnitude_pruning_reaches_its_target(rng):
    net = small_network(rng)
    mp = MagnitudePruning(net, target=0.6, steps=4)
    for _ in range(5):
        mp.develop(net, 1e-3)
    assert net.layers[0].store.density == pytest.approx(0.4, abs=1 / 600)
    assert net.layers[1].store.density == 1.0  # the output layer does not develop


@pytest.mark.parametrize("make", [lambda net: MagnitudePruning(net, target=0.95, steps=2),
                                  lambda net: SET(net, sparsity=0.97, seed=1)], ids=["magnitude", "set"])
def test_baselines_count_units_left_without_input_as_not_alive(rng, make):
    """At high sparsity, synapse pruning leaves units with no incoming synapse: dead, as
    the run's summary counts them (units_with_input), though nothing killed them."""
    from evsim.compression import units_with_input

    net = Network.from_spec("1x8x8-4C3-AP2-8C3-10", rng=rng)
    structure = make(net)
    for _ in range(3):
        stats = structure.develop(net, 1e-3)
    for row in stats:
        layer = net.layers[row["layer"]]
        assert row["alive_neurons"] == int(units_with_input(layer).sum()) < int(layer.alive.sum())


def test_set_keeps_sparsity_constant_and_rewires(rng):
    net = small_network(rng)
    set_ = SET(net, sparsity=0.5, seed=1)
    nnz = net.layers[0].store.nnz
    before = net.layers[0].store.mask()
    (stats,) = set_.develop(net, 1e-3)
    assert net.layers[0].store.nnz == nnz and stats["pruned"] == stats["regrown"] > 0
    assert (net.layers[0].store.mask() != before).any()
    assert_store_consistent(net.layers[0].store)


def test_structure_config_errors(rng):
    with pytest.raises(ConfigError, match="rho_init"):
        SDSNNConfig(rho_init=70, rho_max=60)
    with pytest.raises(ConfigError, match="spine_steps"):
        SDSNNConfig(spine_steps=0)
    with pytest.raises(ConfigError, match="target-sparsity"):
        make_structure("set", small_network(rng), SDSNNConfig(), 1.5, 10, True, 0)
    with pytest.raises(ConfigError, match="unknown structure"):
        make_structure("random", small_network(rng), SDSNNConfig(), 0.5, 10, True, 0)


def test_would_be_update_over_the_window_or_scaled_down_to_an_epoch(rng):
    from evsim.structure.sdsnn import LayerDevelopment

    layer = small_network(rng, (3, 4, 2)).layers[0]
    dev = LayerDevelopment(layer, CFG)
    columns = np.array([1, 3])
    g1, g2 = np.array([[1.0, -2.0]] * 3, np.float32), np.array([[3.0, -2.0]] * 3, np.float32)
    dev.observe(columns, g1)
    dev.observe(columns, g2)
    sgd = dev.would_be_update(lr=0.1, adaptive=False)
    np.testing.assert_allclose(sgd, 0.1 * (g1 + g2))  # over the window's columns only
    np.testing.assert_array_equal(dev.would_be_update(lr=0.1, adaptive=False, epoch_batches=10), sgd)
    longer = dev.would_be_update(lr=0.1, adaptive=False, epoch_batches=1)
    np.testing.assert_allclose(longer, sgd / 2)  # two batches' sum at the rate of a one-batch epoch
    adam = dev.would_be_update(lr=0.1, adaptive=True)
    rms = np.sqrt((g1 ** 2 + g2 ** 2) / 2)
    np.testing.assert_allclose(adam, 0.1 * (g1 + g2) / rms, rtol=1e-6)
    dev.end_interval(0.0)
    assert dev.grad_sum.size == dev.grad_sq_sum.size == dev.window_batches.size == 0  # nothing stale to checkpoint


def test_would_be_window_decays_and_follows_the_columns(rng):
    """The rolling window against a dense NumPy oracle over the whole layer: sums and
    each column's batch count decay by ``keep`` at every interval's end, a column that
    leaves is dropped, one that joins (or comes back) starts at 0, and the adaptive update
    divides by the rms over the batches of the column's own window."""
    from evsim.structure.sdsnn import LayerDevelopment

    n_in, n_out, keep = 6, 9, 0.75
    dev = LayerDevelopment(small_network(rng, (n_in, n_out, 2)).layers[0], CFG)
    dense_sum, dense_sq = np.zeros((n_in, n_out), np.float32), np.zeros((n_in, n_out), np.float32)
    batches = np.zeros(n_out)
    for columns in ([1, 4], [1, 4], [0, 1, 4, 7], [0, 7], [0, 4, 7]):
        columns = np.array(columns)
        gone = np.setdiff1d(np.arange(n_out), columns)
        dense_sum[:, gone], dense_sq[:, gone], batches[gone] = 0, 0, 0
        for _ in range(3):
            g = rng.standard_normal((n_in, columns.size)).astype(np.float32)
            dev.observe(columns, g)
            dense_sum[:, columns] += g
            dense_sq[:, columns] += g * g
            batches[columns] += 1
        np.testing.assert_array_equal(dev.columns, columns)
        np.testing.assert_allclose(dev.grad_sum, dense_sum[:, columns], rtol=1e-6)
        np.testing.assert_allclose(dev.grad_sq_sum, dense_sq[:, columns], rtol=1e-6)
        want = 0.1 * dense_sum[:, columns] / (np.sqrt(dense_sq[:, columns] / batches[columns]) + 1e-8)
        np.testing.assert_allclose(dev.would_be_update(0.1, adaptive=True, epoch_batches=12), want, rtol=1e-5)
        dev.end_interval(keep)
        dense_sum *= np.float32(keep)
        dense_sq *= np.float32(keep)
        batches *= keep
        np.testing.assert_allclose(dev.window_batches, batches[columns])


def test_a_steady_gradient_sums_to_an_epoch_whatever_the_interval(rng):
    """With development every N of an epoch's E batches, a gradient that keeps its value
    sums to about E times itself once the window has filled, for every N (the paper's
    per-epoch update); scaling the last interval by E / N would give that for a steady
    gradient too, but would multiply a noisy one's sum by E / N instead of sqrt(E / N)."""
    from evsim.structure.sdsnn import LayerDevelopment

    epoch, columns, g = 60, np.array([0, 2]), np.full((3, 2), 0.5, np.float32)
    for interval in (1, 4, 15, 60):
        dev = LayerDevelopment(small_network(rng, (3, 4, 2)).layers[0], CFG)
        for _ in range(20 * epoch // interval):
            for _ in range(interval):
                dev.observe(columns, g)
            update = dev.would_be_update(1.0, adaptive=False, epoch_batches=epoch)
            dev.end_interval(max(0.0, 1 - interval / epoch))
        np.testing.assert_allclose(update, epoch * g, rtol=0.01)


def test_sdsnn_decays_the_window_at_every_step_by_one_interval_of_an_epoch(rng):
    """Every 2 of 8 batches: keep 0.75; once per epoch, or every interval longer than an
    epoch: the sums start afresh at every step."""
    net = small_network(rng)
    assert [SDSNN(net, CFG, True, epoch, interval).keep for epoch, interval in ((8, 2), (8, 8), (4, 8), (None, None))] \
        == [0.75, 0.0, 0.0, 0.0]
    structure = SDSNN(net, CFG, True, 8, 2)
    dev, g = structure.state[0], rng.standard_normal((net.layers[0].n_in, 2)).astype(np.float32)
    dev.observe(np.array([3, 5]), g)
    structure.develop(net, lr=1e-3)
    np.testing.assert_array_equal(dev.grad_sum, g * np.float32(0.75))
    np.testing.assert_array_equal(dev.window_batches, [0.75, 0.75])


def test_interval_sums_of_would_be_gradients_equal_numpy(rng):
    """observe adds each batch's would-be gradients and their squares in one Numba pass;
    NumPy's float32 sums are the oracle."""
    from evsim.structure.sdsnn import LayerDevelopment

    layer = small_network(rng).layers[0]
    dev = LayerDevelopment(layer, SDSNNConfig())
    columns = np.array([1, 4, 7])
    grads = [rng.standard_normal((layer.n_in, 3)).astype(np.float32) for _ in range(4)]
    for g in grads:
        dev.observe(columns, g)
    total, total_sq = np.zeros_like(grads[0]), np.zeros_like(grads[0])
    for g in grads:
        total += g
        total_sq += g * g
    np.testing.assert_array_equal(dev.grad_sum, total)
    np.testing.assert_array_equal(dev.grad_sq_sum, total_sq)
    assert dev.window_batches.tolist() == [4, 4, 4] and dev.columns.tolist() == [1, 4, 7]
    with pytest.raises(ShapeError, match="over sums of"):
        dev.observe(columns, grads[0][:, :2])


@pytest.mark.parametrize("n", [1, 2, 3, 17, 1000, 70001])
def test_abs_percentile_equals_numpy_bit_for_bit(rng, n):
    """The regeneration threshold by selection: NumPy's linear percentile of |w| exactly,
    on spread magnitudes, ties and zeros, one value repeated, and tiny and huge weights."""
    from evsim.kernels.regrowth import _abs_order_stats
    from evsim.structure.sdsnn import abs_percentile

    cases = [rng.standard_normal(n) * 0.03, rng.integers(-5, 6, n) / 8,
             np.where(rng.random(n) < 0.5, 0.047, rng.standard_normal(n) * 0.02),
             rng.standard_normal(n) * 10.0 ** rng.integers(-30, 30, n)]
    for values in (v.astype(np.float32) for v in cases):
        ordered = np.sort(np.abs(values))
        for k in range(0, n - 1, max(1, n // 7)):
            assert _abs_order_stats(values, k) == (ordered[k], ordered[k + 1])
        for q in [0, 1e-9, 12.5, 60.0, 61.1, 75.3, 99, 99.999, 100.0, *map(float, rng.uniform(0, 100, 10))]:
            want, got = np.percentile(np.abs(values), q), abs_percentile(values, q)
            assert got == want and np.asarray(got).dtype == np.asarray(want).dtype, (q, want, got)


def test_pruning_target_rounds_down():
    """floor(N rho / 100) dead: 10 neurons at 25 % is 2 (not 3)."""
    importance = np.arange(10, dtype=np.float64)[::-1].copy()
    assert sorted(neurons_to_prune(importance, np.ones(10, bool), 25.0)) == [8, 9]


def test_a_weight_exactly_at_a_bound_counts_towards_expanding_it():
    """'At or above' r+ (and at or below r-): excesses 0, 0.3, 0.3 over K = 3 steps move the bound by 0.2."""
    for sign in (1.0, -1.0):
        store = single([0.0])
        for step, w in enumerate([1.0, 1.3, 1.3], start=2):
            store.data[0] = sign * w
            constrain(store, step, CFG)
        bound = store.state["r_plus" if sign > 0 else "r_minus"][0]
        assert bound == pytest.approx(sign * 1.2)


def test_an_unchanged_weight_keeps_its_range():
    """A magnitude that stays the same has not fallen: no shrink, no clipping (a synapse
    whose input never fires gets no gradient and keeps its weight exactly)."""
    store = single([0.6])
    for step in range(2, 12):
        constrain(store, step, CFG)
    assert (store.state["r_plus"][0], store.state["r_minus"][0], store.data[0]) == (1.0, -1.0, np.float32(0.6))
    assert store.state["fall_n"][0] == 0


def test_a_would_be_update_equal_to_the_percentile_does_not_qualify():
    """'Exceeds' the q-th percentile, strictly; an empty layer's threshold is 0, and a zero update does not exceed it."""
    store = SynapseStore.from_dense(np.full((1, 3), 0.5, np.float32), np.array([[True, False, False]]))
    counter = np.zeros((1, 2), np.int16)
    would_be = np.array([[0.5, np.nextafter(np.float32(0.5), np.float32(1))]], np.float32)
    pre, _ = regrowth_candidates(counter, would_be, np.array([1, 2]), store, 50, 2)
    assert pre.size == 0 and counter.tolist() == [[0, 1]]
    empty = SynapseStore.from_dense(np.zeros((2, 2), np.float32), np.zeros((2, 2), bool))
    counter = np.zeros((2, 2), np.int16)
    pre, slot = regrowth_candidates(counter, np.array([[0.0, 0.1], [0.0, 0.0]], np.float32), np.array([0, 1]),
                                    empty, 50, 1)
    assert (pre.tolist(), slot.tolist()) == ([0], [1]) and not counter.any()


def test_would_be_gradients_are_collected_over_the_interval_before_the_first_regeneration(rng):
    """Regeneration starts at step 2K = 6, so the batches between steps 5 and 6 must be observed."""
    net = small_network(rng)
    sd = SDSNN(net, CFG)
    needs = []
    for _ in range(8):
        needs.append(sd.needs_would_be_grad)
        sd.develop(net, lr=1e-3)
    assert needs == [False] * 5 + [True] * 3


def test_development_steps_worked_by_hand():
    """K = 1 (pruning and regeneration from step 2), R = 1, q = 0 (threshold: the smallest |w|),
    rho 25 % of 10 neurons, a next layer of 4 neurons, SGD-style would-be updates."""
    from evsim.layers import SparseLinear

    w = np.full((6, 10), 0.5, np.float32)
    w[:, [0, 9]] = 0.25  # the smallest |w|: the regeneration threshold
    mask = np.ones((6, 10), bool)
    mask[:2, 3] = False  # neuron 3 has 4 synapses, neuron 7 has 5: the least important
    mask[5, 7] = False
    hidden = SparseLinear(SynapseStore.from_dense(w, mask), np.zeros(10, np.float32))
    out = SparseLinear(SynapseStore.from_dense(np.full((10, 4), 0.5, np.float32)), np.zeros(4, np.float32),
                       develops=False)
    net = Network([hidden, out])
    cfg = SDSNNConfig(spine_steps=1, regrow_steps=1, rho_init=25.0, rho_max=60.0, q_base=0.0, q_max=0.0)
    sd = SDSNN(net, cfg, adaptive_optimizer=False)

    (s1,) = sd.develop(net, lr=1.0)
    assert (s1["rho"], s1["pruned"], s1["regrown"], s1["synapses"]) == (25.0, 0, 0, 57)
    (s2,) = sd.develop(net, lr=1.0)  # step 2K: prune floor(10 * 25 / 100) = 2, rho not yet updated
    assert (s2["rho"], s2["pruned"], s2["alive_neurons"]) == (25.0, 4 + 5, 8)
    assert np.flatnonzero(~hidden.alive).tolist() == [3, 7]
    assert hidden.incomplete.tolist() == [3, 7]

    grad = np.zeros((6, 2), np.float32)  # would-be gradients of the missing synapses into neurons 3 and 7
    grad[0, 0] = 0.3   # |update| 0.3 > 0.25: regrows with weight -0.3
    grad[1, 0] = -0.1  # too small
    grad[5, 0] = 0.25  # equal to the threshold: does not exceed it
    grad[2, 1] = -0.4  # regrows with weight 0.4
    grad[4, 1] = -0.9  # regrows, clipped into the layer's range [-0.5, 0.5]
    sd.state[0].observe(hidden.incomplete, grad)
    (s3,) = sd.develop(net, lr=1.0)
    # rho += alpha(3) * N_alive / N_next = exp(0) * 8 / 4; floor(10 * 27 / 100) = 2 dead already
    assert (s3["rho"], s3["pruned"], s3["regrown"], s3["alive_neurons"]) == (27.0, 0, 3, 10)
    store = hidden.store
    grown = {(0, 3): -0.3, (2, 7): 0.4, (4, 7): 0.5}
    expected = np.where(mask, w, 0)
    expected[:, [3, 7]] = 0
    for (i, j), value in grown.items():
        expected[i, j] = value
    np.testing.assert_array_equal(store.to_dense(), expected)
    np.testing.assert_array_equal(store.mask(), expected != 0)
    new = np.isin(store.rows() * 10 + store.indices, [i * 10 + j for i, j in grown])
    np.testing.assert_array_equal(store.state["r_plus"][new], 0.5)
    np.testing.assert_array_equal(store.state["r_minus"][new], -0.5)
    np.testing.assert_array_equal(store.state["prev_abs"][new], np.abs(store.data[new]))


def assert_layer_runs_its_store(layer, rng):
    """The layer's execution plan follows its store: a forward pass equals the dense NumPy
    twin of the store's weights (a plan left from before a structural edit does not)."""
    from evsim.kernels.events import dense_to_events
    from evsim.neuron import LIFParameters

    x = (rng.random((4, 3, layer.n_in)) < 0.5).astype(np.float32)
    _, trace = layer.forward(dense_to_events(x), LIFParameters())
    alive = layer.alive_index
    u_ref, _ = reference.lif_forward(x, layer.store.to_dense()[:, alive], layer.bias[alive])
    np.testing.assert_allclose(trace.u, u_ref, rtol=1e-5, atol=1e-6)


def test_magnitude_pruning_follows_the_cubic_schedule_and_removes_the_smallest_magnitudes(rng):
    """Zhu & Gupta's s_f (1 - (1 - p)^3), p = (step - start + 1) / steps clipped to [0, 1],
    worked by hand; each step removes exactly the smallest |w| (signs do not matter, ties
    at the lowest position first) down to round(dense * (1 - s)), and the layer then runs
    on the pruned store."""
    net = small_network(rng)
    layer = net.layers[0]
    mp = MagnitudePruning(net, target=0.6, start=2, steps=4)
    expected = {0: 0.0, 1: 0.0, 2: 0.6 * (1 - 0.75 ** 3), 3: 0.6 * (1 - 0.5 ** 3), 4: 0.6 * (1 - 0.25 ** 3),
                5: 0.6, 6: 0.6}
    for step, sparsity in expected.items():
        assert mp.sparsity_at(step) == pytest.approx(sparsity, abs=1e-12), step
    for step in range(1, 7):
        before = layer.store.to_dense()
        mask = layer.store.mask()
        (stats,) = mp.develop(net, 1e-3)
        keep = int(round(600 * (1 - expected[step])))
        assert layer.store.nnz == keep and stats["synapses"] == keep
        assert stats["pruned"] == mask.sum() - keep
        order = np.argsort(np.abs(before[mask]), kind="stable")  # positions in row-major (CSR) order
        want = mask.copy()
        want[tuple(np.argwhere(mask)[order[:mask.sum() - keep]].T)] = False
        np.testing.assert_array_equal(layer.store.mask(), want)
        np.testing.assert_array_equal(layer.store.to_dense(), before * want)
        assert_layer_runs_its_store(layer, rng)
    assert mp.step == 6 and layer.store.nnz == 240


def test_set_starts_at_its_sparsity_and_rewires_the_smallest_fraction(rng):
    """SET keeps round(dense * (1 - sparsity)) synapses; each step removes the
    int(zeta * nnz) smallest |w| and regrows as many at positions that were missing, with
    fresh state and weights within PyTorch's +-1/sqrt(n_in); the layer runs on the store."""
    net = small_network(rng)  # 30 -> 20 -> 4: 1/sqrt(n_in) differs from 1/sqrt(n_out)
    layer = net.layers[0]
    set_ = SET(net, sparsity=0.7, zeta=0.3, seed=3)
    assert layer.store.nnz == 180 and net.layers[1].store.nnz == 80  # the output layer stays dense
    assert_layer_runs_its_store(layer, rng)
    layer.store.set_state("adam_m", np.arange(1, layer.store.nnz + 1, dtype=np.float32))
    for _ in range(3):
        before, mask = layer.store.to_dense(), layer.store.mask()
        old_m = np.zeros(mask.shape, np.float32)
        old_m[mask] = layer.store.state["adam_m"]
        (stats,) = set_.develop(net, 1e-3)
        n = int(0.3 * 180)
        assert stats["pruned"] == stats["regrown"] == n and layer.store.nnz == 180
        order = np.argsort(np.abs(before[mask]), kind="stable")
        survivors = mask.copy()
        survivors[tuple(np.argwhere(mask)[order[:n]].T)] = False
        after = layer.store.mask()
        new = after & ~survivors
        assert np.all(after[survivors]) and new.sum() == n
        dense = layer.store.to_dense()
        np.testing.assert_array_equal(dense[survivors], before[survivors])
        assert np.all(np.abs(dense[new]) <= 1 / np.sqrt(30)) and np.abs(dense[new]).max() > 1 / np.sqrt(40)
        m_dense = np.zeros(mask.shape, np.float32)
        m_dense[after] = layer.store.state["adam_m"]
        np.testing.assert_array_equal(m_dense[survivors], old_m[survivors])
        assert np.all(m_dense[new] == 0)
        assert_store_consistent(layer.store)
        assert_layer_runs_its_store(layer, rng)


def test_set_resumes_from_its_state_dict(rng):
    """The saved step and random state give the same rewiring as the uninterrupted run."""
    sizes = (30, 20, 4)
    nets = [small_network(np.random.default_rng(5), sizes) for _ in range(2)]
    first, second = SET(nets[0], sparsity=0.5, seed=2), SET(nets[1], sparsity=0.5, seed=2)
    first.develop(nets[0], 1e-3)
    second.develop(nets[1], 1e-3)
    resumed = SET(small_network(np.random.default_rng(5), sizes), sparsity=0.5, seed=99)
    resumed.load_state_dict(first.state_dict())
    net = nets[0]
    first.develop(net, 1e-3)
    resumed.develop(nets[1], 1e-3)
    assert resumed.step == first.step == 2
    np.testing.assert_array_equal(nets[1].layers[0].store.mask(), net.layers[0].store.mask())
    np.testing.assert_array_equal(nets[1].layers[0].store.to_dense(), net.layers[0].store.to_dense())


def test_equally_important_neurons_are_pruned_by_their_weights_not_their_index():
    """Ranges all alike (as through the first epoch) tie every unit's importance: the
    weakest incoming weights die, not units 0, 1, 2."""
    rng = np.random.default_rng(0)
    dense = rng.normal(size=(6, 10)).astype(np.float32)
    dense[:, [7, 2, 9]] *= 0.01
    store = SynapseStore.from_dense(dense, np.ones((6, 10), bool))
    init_ranges(store)
    importance = neuron_importance(store)
    assert np.all(importance == importance[0])
    assert sorted(neurons_to_prune(importance, np.ones(10, bool), 30.0, unit_magnitude(store))) == [2, 7, 9]


def test_sdsnn_pruning_in_the_first_epoch_takes_the_weakest_units(tmp_path):
    """Pruning from step 4 while the ranges are still set afresh at every step of the first
    epoch: the units pruned are the ones with the weakest weights, and differ by seed."""
    from tests.runs import toy_config, toy_dataset
    from evsim.train import Trainer

    removed = []
    for seed in (1, 2):
        trainer = Trainer(toy_config(epochs=1, hidden=(20,), dev_interval=1, seed=seed,
                                     sdsnn=SDSNNConfig(spine_steps=2, rho_init=30, rho_max=30)), toy_dataset())
        trainer.fit(progress=False)
        dead = np.flatnonzero(~trainer.network.layers[0].alive)
        assert dead.size == 6
        removed.append(dead.tolist())
        assert dead.tolist() != list(range(6))
    assert removed[0] != removed[1]


@pytest.mark.parametrize("baseline", ["magnitude", "set"])
def test_a_baseline_at_sdsnns_developing_sparsity_reaches_its_compression(baseline):
    """What a sweep's tied point takes: the layers that never develop (the output layer
    here) are in the network's compression but not in the baselines' target."""
    from tests.runs import toy_config, toy_dataset
    from evsim.train import Trainer

    sdsnn = Trainer(toy_config(epochs=3, hidden=(20,)), toy_dataset()).fit(progress=False)
    assert 0 < sdsnn["developing_sparsity"] and sdsnn["compression"] < sdsnn["developing_sparsity"]
    tied = Trainer(toy_config(epochs=3, hidden=(20,), structure=baseline, sdsnn=SDSNNConfig(),
                              target_sparsity=sdsnn["developing_sparsity"]), toy_dataset()).fit(progress=False)
    # whole synapses are removed: equal to within one of fc1's 30 x 20 weights
    assert tied["compression"] == pytest.approx(sdsnn["compression"], abs=1.01 / (30 * 20 + 20 * 4))


def test_the_python_default_holds_the_output_layer_in_its_ranges_as_the_command_line_does():
    from evsim.config import TrainConfig

    assert SDSNNConfig().constrain_output and TrainConfig().sdsnn.constrain_output
    assert TrainConfig(sdsnn=SDSNNConfig(rho_max=60.0)).sdsnn.constrain_output
    # runs saved before the option existed keep what they did
    saved = TrainConfig().to_dict()
    del saved["sdsnn"]["constrain_output"]
    assert TrainConfig.from_dict(saved).sdsnn.constrain_output is False


@pytest.mark.parametrize("field,value,what", [
    ("shrink", -1.0, "in (0, 1]"), ("shrink", 0.0, "in (0, 1]"), ("q_growth", 0.0, "> 0"),
    ("q_growth", -1.1, "> 0"), ("alpha_late", -5.0, ">= 0 and finite"), ("alpha_late", math.inf, ">= 0 and finite"),
    ("alpha_fast_steps", -1, ">= 0"), ("q_base", math.nan, "in [0, 100]"), ("q_max", 101.0, "in [0, 100]"),
    ("kernel_q_base", -1.0, "in [0, 100]"),
])
def test_constants_no_option_sets_are_checked_too(field, value, what):
    """They pushed rho below 0, flipped ranges, or failed in math.log at a development step."""
    with pytest.raises(ConfigError, match=re.escape(f"SD-SNN's {field} must be {what}, got {value}")):
        SDSNNConfig(**{field: value})
