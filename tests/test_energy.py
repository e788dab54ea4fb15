"""SOP/MAC counting: brute-force recounts, a hand-worked example, pruning, counts, analog input."""
import numpy as np
import pytest

from evsim.energy import EnergyModel, count_network
from evsim.errors import ConfigError
from evsim.evaluate import profile
from evsim.layers import SparseLinear
from evsim.network import Network
from evsim.synapses import SynapseStore


def brute_force_sops(network, drive, traces):
    """Loop over every recorded input value x[t, b, i] of every layer: x * (row i's synapses)."""
    totals = []
    x = drive
    for layer, trace in zip(network.layers, traces):
        row_len = np.array([layer.store.indptr[i + 1] - layer.store.indptr[i] for i in range(layer.n_in)])
        total = 0.0
        n_steps, batch, n_in = x.shape
        for t in range(n_steps):
            for b in range(batch):
                for i in range(n_in):
                    total += x[t, b, i] * row_len[i]
        totals.append(total)
        spikes = np.zeros((n_steps, batch, layer.n_out), np.float32)
        spikes[:, :, layer.alive_index] = trace.spikes
        x = spikes
    return totals


def test_sops_equal_a_brute_force_recount_on_random_pruned_networks(rng):
    for trial in range(3):
        net = Network.mlp([40, 25, 12, 5], rng)
        net.layers[0].store.prune(rng.random(net.layers[0].store.nnz) < 0.5)
        net.layers[0].rebuild()
        net.layers[1].kill([0, 3, 7])
        drive = (rng.random((6, 4, 40)) < 0.3) * rng.integers(1, 4, (6, 4, 40))
        drive = drive.astype(np.float32)
        _, traces = net.forward(drive)
        report = count_network(net, traces, analog_input=False, batch=4)
        expected = brute_force_sops(net, drive, traces)
        np.testing.assert_array_equal([layer.sops for layer in report.layers], expected)
        assert report.layers[0].events.sum() == drive.sum()  # a value k counts as k events


def test_hand_worked_two_layer_example():
    # Layer 1: 3 inputs -> 2 neurons; input 0 has 2 synapses, input 1 has 1, input 2 has 0.
    w1 = np.array([[0.6, 0.6], [0.0, 0.7], [0.0, 0.0]], np.float32)
    l1 = SparseLinear(SynapseStore.from_dense(w1), np.zeros(2, np.float32))
    # Layer 2: 2 -> 3, fully connected.
    l2 = SparseLinear(SynapseStore.from_dense(np.full((2, 3), 0.6, np.float32)), np.zeros(3, np.float32))
    net = Network([l1, l2])
    drive = np.zeros((2, 1, 3), np.float32)
    drive[0, 0] = [1, 1, 1]  # step 0: all three inputs, 2 + 1 + 0 = 3 SOPs
    drive[1, 0] = [2, 0, 0]  # step 1: input 0 twice (count 2): 4 SOPs
    _, traces = net.forward(drive)
    report = count_network(net, traces, analog_input=False, batch=1)
    np.testing.assert_array_equal(report.layers[0].ops, [3, 4])
    np.testing.assert_array_equal(report.layers[0].ops_unpruned, [3 * 2, 2 * 2])
    # Step 0: neuron 0 gets 0.6 -> spikes; neuron 1 gets 1.3 -> spikes. Each spike reaches 3 synapses.
    # Step 1: neuron 0: hard reset, 1.2 -> spikes; neuron 1: reset, 0.6 -> spikes.
    np.testing.assert_array_equal(traces[0].spikes[:, 0], [[1, 1], [1, 1]])
    np.testing.assert_array_equal(report.layers[1].ops, [6, 6])
    np.testing.assert_array_equal(report.layers[0].spikes, [2, 2])  # from the events, equal to the trace
    np.testing.assert_array_equal(report.layers[1].spikes, traces[1].spikes.sum(axis=(0, 1)))
    rows = report.rows()
    assert rows[0]["acs"] == 3 + 4 + 12
    assert rows[2]["macs"] == 3 * 2 + 2 * 3


def test_a_pruned_synapse_costs_nothing(rng):
    net = Network.mlp([10, 6, 3], rng)
    drive = (rng.random((5, 3, 10)) < 0.5).astype(np.float32)
    drive[:, :, 4] = 1.0  # input 4 fires every step of every sample: 15 events
    _, traces = net.forward(drive)
    before = count_network(net, traces, False, 3).layers[0].sops
    store = net.layers[0].store
    remove = np.zeros(store.nnz, bool)
    remove[store.indptr[4]] = True  # one synapse of input 4
    store.prune(remove)
    net.layers[0].rebuild()
    _, traces = net.forward(drive)
    after = count_network(net, traces, False, 3).layers[0].sops
    assert before - after == 15


def test_analog_input_counts_macs_in_the_first_layer_only(rng):
    net = Network.mlp([8, 5, 2], rng)
    drive = rng.random((4, 2, 8)).astype(np.float32)
    drive[drive < 0.3] = 0
    report = profile(net, [drive], analog_input=True)
    first, second = report.layers
    assert first.sops == 0 and first.macs == np.count_nonzero(drive) * 5  # one MAC per delivered value per synapse
    assert second.macs == 0 and second.sops == brute_force_sops(net, drive, profile_traces(net, drive))[1]


@pytest.mark.parametrize("spec", ["8-5-2", "2x4x4-3C3-AP2-2"])
def test_negative_input_is_no_count_but_analog_input_counts_it(rng, spec):
    net = Network.from_spec(spec, rng=0)
    drive = -(rng.random((3, 2, net.layers[0].n_in)) < 0.5).astype(np.float32)
    with pytest.raises(ConfigError, match="negative values .* analog_input=True"):
        profile(net, [drive])
    assert profile(net, [drive], analog_input=True).layers[0].macs == profile(net, [-drive]).layers[0].sops


def profile_traces(net, drive):
    return net.forward(drive)[1]


def test_report_accumulates_and_prints_the_energy_model(rng):
    net = Network.mlp([12, 6, 3], rng)
    batches = [(rng.random((3, 2, 12)) < 0.4).astype(np.float32) for _ in range(3)]
    total = profile(net, batches, model=EnergyModel(e_ac_pj=1.0, e_mac_pj=5.0))
    singles = [profile(net, [b]) for b in batches]
    assert total.samples == 6
    assert total.layers[0].sops == sum(s.layers[0].sops for s in singles)
    text = total.table()
    assert "estimate" in text and "1.0 pJ/accumulate" in text
    summary = total.summary()
    assert summary["energy_uj_per_sample"] == pytest.approx(summary["sops_per_sample"] * 1e-6)
    nb = summary["neurobench"]
    assert nb["ConnectionSparsity"] == 0.0 and 0 <= nb["ActivationSparsity"] <= 1


def test_profile_accepts_a_dataset_and_rejects_nothing(rng):
    from evsim.data.base import Dataset, Split
    from evsim.errors import ConfigError

    x = rng.random((30, 12)).astype(np.float32)
    ds = Dataset("toy", Split(x, np.zeros(30, np.int64)), Split(x[:10], np.zeros(10, np.int64)), 3, (12,), "rate",
                 "toy-source")
    net = Network.mlp([12, 6, 3], rng)
    report = profile(net, ds, time_steps=4, batch_size=4)
    assert report.samples == 10 and report.data_source == "toy-source" and report.layers[0].sops > 0
    with pytest.raises(ConfigError, match="time_steps"):
        profile(net, ds)
    with pytest.raises(ConfigError, match="nothing to profile"):
        profile(net, [])


def test_every_report_figure_by_brute_force_over_batches_with_dead_neurons(rng):
    """Per-step counts, unpruned counts, neuron updates, spikes, the three energy rows, the
    ratios and the NeuroBench figures of two accumulated batches of three samples, each
    recounted slot by slot from the recorded inputs, with a priced neuron update and a
    hidden layer that has dead neurons and pruned synapses."""
    net = Network.mlp([10, 8, 3], rng)
    net.layers[0].store.prune(rng.random(net.layers[0].store.nnz) < 0.3)
    net.layers[0].rebuild()
    net.layers[0].kill([1, 5])
    model = EnergyModel(e_ac_pj=0.9, e_mac_pj=4.6, e_neuron_pj=0.25)
    n_steps, batch = 4, 3
    batches = [((rng.random((n_steps, batch, 10)) < 0.5) * rng.integers(1, 4, (n_steps, batch, 10))).astype(np.float32)
               for _ in range(2)]
    report = profile(net, batches, model=model)

    n_layers = len(net.layers)
    events = np.zeros((n_layers, n_steps))
    ops = np.zeros((n_layers, n_steps))
    spikes = [np.zeros(layer.n_out) for layer in net.layers]
    updates = np.zeros(n_layers)
    for drive in batches:
        _, traces = net.forward(drive)
        x = drive
        for k, (layer, trace) in enumerate(zip(net.layers, traces)):
            row_len = [layer.store.indptr[i + 1] - layer.store.indptr[i] for i in range(layer.n_in)]
            for t in range(n_steps):
                for b in range(batch):
                    for i in range(layer.n_in):
                        events[k, t] += x[t, b, i]
                        ops[k, t] += x[t, b, i] * row_len[i]
                    for j in range(layer.n_out):
                        updates[k] += bool(layer.alive[j])  # one update per alive neuron per slot
            out = np.zeros((n_steps, batch, layer.n_out), np.float32)
            out[:, :, layer.alive_index] = trace.spikes
            spikes[k] += out.sum(axis=(0, 1))
            x = out
    samples = 2 * batch
    for k, (layer, counts) in enumerate(zip(net.layers, report.layers)):
        np.testing.assert_array_equal(counts.events, events[k])
        np.testing.assert_array_equal(counts.ops, ops[k])
        np.testing.assert_array_equal(counts.ops_unpruned, events[k] * layer.n_out)  # the dense layer: every neuron
        assert counts.neuron_updates == updates[k]
        np.testing.assert_array_equal(counts.spikes, spikes[k])
    assert updates[0] == 2 * n_steps * batch * 6 and spikes[0].sum() > 0  # 6 alive neurons, and they fire

    acs, updates_per_sample = ops.sum() / samples, updates.sum() / samples
    unpruned = sum(events[k].sum() * layer.n_out for k, layer in enumerate(net.layers)) / samples
    dense_updates = (8 + 3) * n_steps
    ann_macs = 10 * 8 + 8 * 3
    energy = [(acs * 0.9 + updates_per_sample * 0.25) * 1e-6, (unpruned * 0.9 + dense_updates * 0.25) * 1e-6,
              ann_macs * 4.6e-6]
    rows = report.rows()
    assert [(r["acs"], r["macs"]) for r in rows] == [(acs, 0.0), (unpruned, 0.0), (0.0, ann_macs)]
    np.testing.assert_allclose([r["energy_uj"] for r in rows], energy, rtol=1e-12)
    summary = report.summary()
    assert summary["ratios"]["unpruned_over_this"] == pytest.approx(energy[1] / energy[0])
    assert summary["ratios"]["ann_over_this"] == pytest.approx(energy[2] / energy[0])
    for k, layer in enumerate(summary["layers"]):
        np.testing.assert_allclose(layer["ops_per_step"], ops[k] / samples, rtol=1e-12)
        assert layer["firing_rate"] == pytest.approx(spikes[k].sum() / (net.layers[k].n_out * n_steps * samples))
    nb = summary["neurobench"]
    assert nb["Effective_ACs"] == acs and nb["Effective_MACs"] == 0
    assert nb["ConnectionSparsity"] == pytest.approx(1 - net.synapses / ann_macs)
    assert nb["ActivationSparsity"] == pytest.approx(1 - (spikes[0].sum() + spikes[1].sum()) / ((8 + 3) * n_steps * samples))
    assert nb["Dense"] == ann_macs * n_steps


def test_neurobench_figures_of_a_convolutional_network_count_every_tap(rng):
    """Dense: each layer run densely at every step, a convolution at every output cell,
    input channel and tap (never below the work the sparse network does); ConnectionSparsity:
    the weights zero or absent, a kernel's K x K each. Recounted by brute force."""
    from evsim.layers import SpikingConv2d

    net = Network.from_spec("2x8x8-3C3-AP2-5C3p0-6", rng=rng)
    conv = net.layers[2]
    conv.prune(rng.random(conv.store.nnz) < 0.4)
    conv.store.data[0, 1, 1] = 0.0  # a present weight that is zero
    conv.kill([4])
    drive = (rng.random((3, 4, 128)) < 0.5).astype(np.float32)
    nb = profile(net, [drive]).neurobench()
    dense_ops = weights = zero_or_absent = 0
    for layer in net.layers:
        if isinstance(layer, SpikingConv2d):
            full = layer.store.to_dense()  # [C, F, K, K], zeros where absent
            dense_ops += layer.out_shape[0] * layer.out_shape[1] * layer.out_shape[2] * full.shape[0] * 9
        elif hasattr(layer, "store"):
            full = layer.store.to_dense()
            dense_ops += full.size
        else:
            continue
        weights += full.size
        zero_or_absent += int((full == 0).sum())
    assert nb["Dense"] == dense_ops * 3 >= nb["Effective_ACs"]
    assert nb["ConnectionSparsity"] == pytest.approx(zero_or_absent / weights)


def test_analog_input_energy_prices_macs(rng):
    """A direct-encoded first layer: its MACs at e_mac, the spiking layer's ACs at e_ac."""
    net = Network.mlp([6, 4, 2], rng)
    drive = rng.random((3, 2, 6)).astype(np.float32)
    drive[drive < 0.4] = 0
    report = profile(net, [drive], analog_input=True, model=EnergyModel(e_ac_pj=1.0, e_mac_pj=7.0))
    macs = np.count_nonzero(drive) * 4 / 2
    acs = report.layers[1].sops / 2
    assert report.rows()[0]["energy_uj"] == pytest.approx((acs * 1.0 + macs * 7.0) * 1e-6)
    assert report.rows()[0]["macs"] == macs


def test_profile_counts_a_static_drive_as_record_does():
    """Analog input is multiply-accumulates by default in both, signed values included."""
    import evsim
    from evsim.kernels.events import StaticDrive

    rng = np.random.default_rng(0)
    network = evsim.Network.from_spec("64-16-4", rng=0)
    for values in (rng.random((8, 64)), rng.random((8, 64)) - 0.5):
        drive = StaticDrive(values.astype(np.float32), 5)
        profiled, recorded = evsim.profile(network, drive).summary(), evsim.record(network, drive).energy.summary()
        assert profiled == recorded and profiled["macs_per_sample"] == 64 * 16 * 5
