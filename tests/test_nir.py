"""NIR export/import: evsim's own round trip gives identical spikes and structure; the
exported graph, simulated by a plain NumPy reading of NIR's LIF, spikes like evsim;
graphs from other tools import when evsim can represent them."""
import numpy as np
import pytest
from click.testing import CliRunner

import nir
from evsim.checkpoint import load_network
from evsim.cli.main import main
from evsim.errors import CheckpointError, ConfigError
from evsim.layers import SparseLinear
from evsim.network import Network
from evsim.neuron import LIFParameters
from evsim.nir_io import network_from_nir, network_to_nir, read_nir, write_nir
from evsim.synapses import SynapseStore
from evsim.train import Trainer
from tests.reference import dyadic_weights
from tests.runs import toy_config, toy_dataset


def developed_network(rng, lif=LIFParameters()) -> Network:
    """20-12-6-4 with pruned synapses, dead neurons and one existing synapse of weight exactly 0."""
    layers = []
    for k, (n_in, n_out) in enumerate([(20, 12), (12, 6), (6, 4)]):
        weight = dyadic_weights(rng, (n_in, n_out), density=0.6, scale=8)
        mask = weight != 0
        mask[0, 0] = True  # an existing synapse whose weight is 0
        bias = (rng.integers(-4, 5, n_out) / 16).astype(np.float32)
        layers.append(SparseLinear(SynapseStore.from_dense(weight, mask), bias, develops=k < 2))
    layers[0].kill([3, 7])
    layers[1].kill([2])
    return Network(layers, lif)


def spikes(network: Network, drive: np.ndarray) -> list[np.ndarray]:
    """Every layer's spikes as dense ``[T, B, n_out]`` arrays (dead neurons: zeros)."""
    _, traces = network.forward(drive)
    out = []
    for layer, trace in zip(network.layers, traces):
        full = np.zeros(trace.spikes.shape[:2] + (layer.n_out,), np.uint8)
        full[:, :, layer.alive_index] = trace.spikes
        out.append(full)
    return out


def simulate_nir(graph: nir.NIRGraph, drive: np.ndarray, dt: float = 1.0) -> list[np.ndarray]:
    """NIR's equations read literally, in float64: Affine ``y = W x + b``; LIF forward Euler
    ``v += dt/tau (v_leak - v + r y)``, spike if ``v > v_threshold``, then ``v = v_reset``."""
    successor = dict(graph.edges)
    name, x, out = "input", drive.astype(np.float64), []
    while name != "output":
        name = successor[name]
        node = graph.nodes[name]
        if isinstance(node, (nir.Affine, nir.Linear)):
            x = x @ node.weight.T.astype(np.float64) + (node.bias if isinstance(node, nir.Affine) else 0)
        elif isinstance(node, nir.LIF):
            v, trains = np.zeros(x.shape[1:]), []
            for current in x:
                v = v + dt / node.tau * (node.v_leak - v + node.r * current)
                fired = v > node.v_threshold
                v = np.where(fired, node.v_reset, v)
                trains.append(fired.astype(np.uint8))
            x = np.stack(trains)
            out.append(x)
    return out


@pytest.mark.parametrize("reset", ["hard", "subtract"])
def test_round_trip_gives_identical_spikes_and_structure(rng, tmp_path, reset):
    net = developed_network(rng, LIFParameters(reset=reset, surrogate="atan"))
    write_nir(tmp_path / "net.nir", net)
    graph = nir.read(tmp_path / "net.nir")  # with nir's own type checks
    assert graph.edges[0] == ("input", "fc0") and graph.edges[-1] == ("lif2", "output")
    assert graph.nodes["fc0"].weight.shape == (12, 20) and graph.nodes["fc0"].weight[3].tolist() == [0.0] * 20
    back = read_nir(tmp_path / "net.nir")
    assert back.lif == net.lif
    for mine, theirs in zip(net.layers, back.layers):
        for name in ("indptr", "indices", "data"):
            assert np.array_equal(getattr(theirs.store, name), getattr(mine.store, name)), name
        assert theirs.alive.tolist() == mine.alive.tolist() and theirs.develops == mine.develops
        assert np.array_equal(theirs.bias, mine.bias)
    assert back.layers[0].store.nnz == net.layers[0].store.nnz  # the zero-weight synapse survives
    drive = (rng.random((12, 5, 20)) < 0.4).astype(np.float32)
    for a, b in zip(spikes(net, drive), spikes(back, drive)):
        np.testing.assert_array_equal(a, b)


def test_exported_parameters_follow_nirs_lif_equations(rng):
    """decay 0.5 (tau = r = 2) keeps every float32 sum exact, so spikes must agree bit for bit."""
    net = developed_network(rng, LIFParameters(decay=0.5))
    graph = network_to_nir(net)
    lif = graph.nodes["lif0"]
    assert (lif.tau[0], lif.r[0], lif.v_leak[0], lif.v_threshold[0], lif.v_reset[0]) == (2.0, 2.0, 0.0, 0.5, 0.0)
    drive = (rng.random((15, 6, 20)) < 0.5).astype(np.float32)
    evsim_spikes, nir_spikes = spikes(net, drive), simulate_nir(graph, drive)
    assert sum(int(s.sum()) for s in evsim_spikes) > 0
    for a, b in zip(evsim_spikes, nir_spikes):
        np.testing.assert_array_equal(a, b)


def foreign_graph(rng, tau=4.0, r=2.0, **extra) -> nir.NIRGraph:
    """A 10-6-3 graph as another tool would write it: no evsim metadata, a Linear second layer."""
    w0, w1 = dyadic_weights(rng, (6, 10), 0.7, 8), dyadic_weights(rng, (3, 6), 1.0, 8)

    def lif(n):
        return nir.LIF(tau=np.full(n, tau), r=np.full(n, r), v_leak=np.zeros(n), v_threshold=np.full(n, 0.5))

    nodes = {"input": nir.Input(input_type={"input": np.array([10])}),
             "a": nir.Affine(weight=w0, bias=np.full(6, 0.125, np.float32)), "la": lif(6),
             "b": nir.Linear(weight=w1), "lb": lif(3), "output": nir.Output(output_type={"output": np.array([3])})}
    edges = [("input", "a"), ("a", "la"), ("la", "b"), ("b", "lb"), ("lb", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, **extra)


@pytest.mark.parametrize("dt,tau,r", [(1.0, 4.0, 2.0), (0.5, 2.0, 8.0)])
def test_graphs_from_other_tools_import_with_their_time_step(rng, dt, tau, r):
    graph = foreign_graph(rng, tau, r)
    net = network_from_nir(graph, dt=dt)
    assert net.lif.decay == 1 - dt / tau and net.layers[0].store.nnz == int(np.count_nonzero(graph.nodes["a"].weight))
    drive = (rng.random((10, 4, 10)) < 0.5).astype(np.float32)
    ours = spikes(net, drive)
    assert all(s.sum() > 0 for s in ours)
    for a, b in zip(ours, simulate_nir(graph, drive, dt)):
        np.testing.assert_array_equal(a, b)
    with_dt = foreign_graph(np.random.default_rng(1), tau, r, metadata={"dt": dt})
    assert network_from_nir(with_dt).lif.decay == 1 - dt / tau


def test_graphs_evsim_cannot_represent_are_refused(rng, tmp_path):
    graph = foreign_graph(rng)
    graph.nodes["la"] = nir.CubaLIF(tau_syn=np.ones(6), tau_mem=np.full(6, 4.0), r=np.ones(6), v_leak=np.zeros(6),
                                    v_threshold=np.ones(6))
    with pytest.raises(ConfigError, match="Affine/Linear -> LIF layers; this graph has Affine -> CubaLIF"):
        network_from_nir(graph)
    graph = foreign_graph(rng)
    graph.nodes["la"].tau[2] = 3.0
    with pytest.raises(ConfigError, match="tau differs between neurons"):
        network_from_nir(graph)
    graph = foreign_graph(rng)
    graph.nodes["lb"].v_leak[:] = 0.1
    with pytest.raises(ConfigError, match="differ between layers"):
        network_from_nir(graph)
    with pytest.raises(ConfigError, match="shorter than the time step"):
        network_from_nir(foreign_graph(rng, tau=0.5))
    with pytest.raises(CheckpointError, match="no such NIR file"):
        read_nir(tmp_path / "absent.nir")
    (tmp_path / "bad.nir").write_bytes(b"not hdf5")
    with pytest.raises(CheckpointError, match="not a readable NIR graph"):
        read_nir(tmp_path / "bad.nir")


def test_export_and_import_commands(tmp_path, monkeypatch):
    monkeypatch.setattr("evsim.train.plot_training", lambda *args: None)
    Trainer(toy_config(epochs=2), toy_dataset()).fit(tmp_path / "run", progress=False, echo=lambda line: None)
    runner = CliRunner()
    result = runner.invoke(main, ["export", str(tmp_path / "run"), "--format", "nir", str(tmp_path / "net.nir")])
    assert result.exit_code == 0, result.output
    assert "checkpoint-latest.npz, epoch 2/2" in result.output and "tau = r = 1.25 steps" in result.output
    result = runner.invoke(main, ["import-nir", str(tmp_path / "net.nir"), str(tmp_path / "imported")])
    assert result.exit_code == 0, result.output
    trained, imported = load_network(tmp_path / "run" / "network.npz"), load_network(tmp_path / "imported" / "network.npz")
    drive = (np.random.default_rng(5).random((4, 8, 30)) < 0.5).astype(np.float32)
    for a, b in zip(spikes(trained, drive), spikes(imported, drive)):
        np.testing.assert_array_equal(a, b)
    result = runner.invoke(main, ["export", str(tmp_path / "nowhere"), str(tmp_path / "x.nir")])
    assert result.exit_code == 2 and "no checkpoint here" in result.output
