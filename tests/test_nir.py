"""NIR export/import: evsim's own round trip gives identical spikes and structure; the
exported graph, simulated by a plain NumPy reading of NIR's LIF, spikes like evsim;
graphs from other tools import when evsim can represent them; malformed graphs and
metadata are refused in one line naming the file."""
import json
import re
import warnings

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import nir
from evsim.checkpoint import load_network
from evsim.cli.main import main
from evsim.errors import CheckpointError, ConfigError, ShapeError
from evsim.layers import SparseLinear
from evsim.network import Network
from evsim.neuron import LIFParameters
from evsim.nir_io import network_from_nir, network_to_nir, read_nir, read_nir_trained_on, write_nir
from evsim.synapses import SynapseStore
from evsim.train import Trainer
from tests.conftest import one_line_error, run
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
    """decay 0.5 (tau = 2 steps of 0.1 ms, r = 2) keeps every float32 sum exact, so spikes
    must agree bit for bit."""
    net = developed_network(rng, LIFParameters(decay=0.5))
    graph = network_to_nir(net)
    lif = graph.nodes["lif0"]
    assert (lif.tau[0], lif.r[0], lif.v_leak[0], lif.v_threshold[0], lif.v_reset[0]) == (2e-4, 2.0, 0.0, 0.5, 0.0)
    assert graph.metadata["dt"] == 1e-4
    drive = (rng.random((15, 6, 20)) < 0.5).astype(np.float32)
    evsim_spikes, nir_spikes = spikes(net, drive), simulate_nir(graph, drive, dt=graph.metadata["dt"])
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
    with pytest.raises(ConfigError, match="Affine/Linear -> LIF layers.*; this graph has Affine -> CubaLIF"):
        network_from_nir(graph)
    graph = foreign_graph(rng)
    graph.nodes["la"].tau[2] = 3.0
    with pytest.raises(ConfigError, match="tau differs between neurons"):
        network_from_nir(graph)
    graph = foreign_graph(rng)
    graph.nodes["lb"].v_leak[:] = 0.1
    with pytest.raises(ConfigError, match=re.escape("lb's LIF parameters (tau 4, r 2, v_leak 0.1, v_threshold 0.5, "
                                                    "v_reset 0) differ from la's (tau 4, r 2, v_leak 0,")):
        network_from_nir(graph)
    with pytest.raises(ConfigError, match="la: tau = 0.5 is shorter than the time step"):
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
    assert "checkpoint-latest.npz, epoch 2/2" in result.output and "tau = 0.125 ms, r = 1.25" in result.output
    # the graph says what data trained it: an emulation's network is not to pass for a real one's
    assert "trained on toy (toy data)" in result.output
    trained_on = json.loads(str(nir.read(tmp_path / "net.nir").metadata["evsim_trained_on"]))
    run_id = json.loads((tmp_path / "run" / "config.json").read_text())["run_id"]
    assert trained_on == {"dataset": "toy", "data_source": "toy", "run_id": run_id}
    result = runner.invoke(main, ["import-nir", str(tmp_path / "net.nir"), str(tmp_path / "imported")])
    assert result.exit_code == 0, result.output
    assert "trained on toy (toy data)" in result.output  # and the imported network keeps saying so:
    result = runner.invoke(main, ["export", str(tmp_path / "imported"), str(tmp_path / "again.nir")])
    assert result.exit_code == 0 and "(network.npz, trained on toy (toy data))" in result.output, result.output
    assert json.loads(str(nir.read(tmp_path / "again.nir").metadata["evsim_trained_on"])) == trained_on
    trained, imported = load_network(tmp_path / "run" / "network.npz"), load_network(tmp_path / "imported" / "network.npz")
    drive = (np.random.default_rng(5).random((4, 8, 30)) < 0.5).astype(np.float32)
    for a, b in zip(spikes(trained, drive), spikes(imported, drive)):
        np.testing.assert_array_equal(a, b)
    result = runner.invoke(main, ["export", str(tmp_path / "nowhere"), str(tmp_path / "x.nir")])
    assert result.exit_code == 2 and "nowhere: no such folder" in result.output


@pytest.mark.parametrize("metadata", ['[1]', '{"data_source": 3}', '{"seed": "0"}', '{}', 'not json'])
def test_a_graph_whose_data_record_is_malformed_is_refused_naming_it(tmp_path, metadata):
    graph = network_to_nir(Network.from_spec("6-4-2", rng=0), {"dataset": "toy", "data_source": "toy"})
    graph.metadata["evsim_trained_on"] = metadata
    nir.write(tmp_path / "bad.nir", graph)
    with pytest.raises(ConfigError, match="metadata evsim_trained_on must be a JSON object of dataset, data_source, "
                                          "run_id"):
        read_nir_trained_on(tmp_path / "bad.nir")
    graph.metadata.pop("evsim_trained_on")
    nir.write(tmp_path / "other-tool.nir", graph)
    assert read_nir_trained_on(tmp_path / "other-tool.nir") is None


# ------------------------------------------------- malformed graphs: one line each
def exported(rng=None) -> nir.NIRGraph:
    return network_to_nir(developed_network(rng or np.random.default_rng(3)))


def exported_conv(rng) -> nir.NIRGraph:
    """A 2x8x8-4C3-AP2-10 network's graph, with a kernel in each of its 8 places."""
    graph = network_to_nir(Network.from_spec("2x8x8-4C3-AP2-10", rng=rng))
    assert np.all(np.any(graph.nodes["conv0"].weight != 0, axis=(2, 3)))
    return graph


@pytest.mark.parametrize("develop", ["auto", "conv1,fc1", "conv3", "fc"])
def test_which_convolutions_develop_survives_the_round_trip(develop):
    network = Network.from_spec("2x8x8-4C3-4C3-AP2-4C3-6-10", rng=0)
    network.set_developing(develop)
    graph = network_to_nir(network)
    assert [layer.develops for layer in network_from_nir(graph).layers] == [getattr(layer, "develops", False)
                                                                           for layer in network.layers]
    for node in graph.nodes.values():  # another tool's graph: the from_spec default
        getattr(node, "metadata", {}).pop("evsim_develops", None)
    assert [layer.develops for layer in network_from_nir(graph).layers if hasattr(layer, "store")] == \
        [False, True, True, True, False]


def lif_metadata(**changes) -> str:
    """evsim_lif as an evsim export writes it, with ``changes`` (None deletes a field)."""
    values = {**LIFParameters()._asdict(), **changes}
    return json.dumps({name: value for name, value in values.items() if value is not None})


def refused(graph: nir.NIRGraph, tmp_path, fragment: str) -> str:
    """Written to a file, ``graph`` is refused by read_nir and by evsim import-nir, in one
    line naming the file (returned), with no warning printed before it, and nothing is written."""
    path = tmp_path / "graph.nir"
    nir.write(path, graph)
    with warnings.catch_warnings(), pytest.raises(ConfigError, match=re.escape(f"{path}: {fragment}")):
        warnings.simplefilter("error")  # pytest would collect a warning that the command line prints
        read_nir(path)
    line = one_line_error(run(["import-nir", str(path), str(tmp_path / "out")]))
    assert f"{path}: {fragment}" in line
    assert not (tmp_path / "out").exists()
    return line


FIX_LIF = ("export the network again with evsim export, or delete the graph's evsim_lif metadata to import the LIF "
           "nodes' own parameters")


@pytest.mark.parametrize("text, fragment", [
    ("decay: 0.2", "graph metadata evsim_lif is not JSON (Expecting value at character 0)"),
    ("[0.2, 0.5]", "graph metadata evsim_lif must be an object of decay, v_th, reset, surrogate, width, detach_reset, "
                   "got [0.2, 0.5]"),
    (0.2, "graph metadata evsim_lif must be a JSON string, got 0.2"),
    (lif_metadata(reset=None), "graph metadata evsim_lif has no 'reset'"),
    (lif_metadata(tau=1.25), "graph metadata evsim_lif has an unknown field 'tau'"),
    (lif_metadata(decay="0.2"), "graph metadata evsim_lif.decay must be a finite number, got '0.2'"),
    (lif_metadata(v_th=True), "graph metadata evsim_lif.v_th must be a finite number, got True"),
    (lif_metadata(reset=1), "graph metadata evsim_lif.reset must be a string, got 1"),
    (lif_metadata(detach_reset="no"), "graph metadata evsim_lif.detach_reset must be true or false, got 'no'"),
    (lif_metadata(decay=float("nan")), "graph metadata evsim_lif.decay must be a finite number, got nan"),
    (lif_metadata(v_th=float("inf")), "graph metadata evsim_lif.v_th must be a finite number, got inf"),
    (lif_metadata(decay=1.5), "graph metadata evsim_lif: decay must be in [0, 1), got 1.5"),
    (lif_metadata(v_th=-0.5), "graph metadata evsim_lif: v_th must be > 0 and finite in float32, got -0.5"),
    (lif_metadata(v_th=1e300), "graph metadata evsim_lif: v_th must be > 0 and finite in float32, got 1e+300"),
    (lif_metadata(reset="soft"), "graph metadata evsim_lif: unknown reset 'soft'; choose one of hard, subtract"),
    (lif_metadata(surrogate="relu"), "graph metadata evsim_lif: unknown surrogate 'relu'"),
    (lif_metadata(width=0.0), "graph metadata evsim_lif: surrogate width must be > 0 and finite in float32, got 0.0"),
])
def test_malformed_evsim_lif_metadata_is_refused_in_one_line(tmp_path, text, fragment):
    graph = exported()
    graph.metadata["evsim_lif"] = text
    assert refused(graph, tmp_path, fragment).endswith(FIX_LIF)


@pytest.mark.parametrize("value, fragment", [
    (2, "graph metadata evsim_format is 2, but this evsim reads format 1 (a graph from another evsim version"),
    ("1", "graph metadata evsim_format is '1', but this evsim reads format 1"),
    (None, "graph metadata has evsim_lif but no evsim_format (damaged)"),
])
def test_a_graph_from_another_evsim_format_is_refused(tmp_path, value, fragment):
    graph = exported()
    if value is None:
        del graph.metadata["evsim_format"]
    else:
        graph.metadata["evsim_format"] = value
    assert refused(graph, tmp_path, fragment).endswith(FIX_LIF)


def _set(node: str, field: str, value):
    """A change to ``graph.nodes[node]``: attribute ``field`` (``metadata.KEY``: a metadata entry,
    deleted when ``value`` is None) set to ``value``."""
    def change(graph):
        target = graph.nodes[node]
        if field.startswith("metadata."):
            key = field.split(".", 1)[1]
            if value is None:
                del target.metadata[key]
            else:
                target.metadata[key] = value
        else:
            setattr(target, field, value)
    return change


def _each_lif(field: str, value: float):
    def change(graph):
        for node in graph.nodes.values():
            if isinstance(node, nir.LIF):
                getattr(node, field)[:] = value
    return change


def _float64_weight_at(node: str, index, value):
    """Node ``node``'s weight in float64 (as another tool may write it), ``value`` at ``index``."""
    def change(graph):
        weight = graph.nodes[node].weight.astype(np.float64)
        weight[index] = value
        graph.nodes[node].weight = weight
    return change


def _drop_edge(source: str, target: str):
    return lambda graph: graph.edges.remove((source, target))


def _graph_dt(value):
    return lambda graph: graph.metadata.__setitem__("dt", value)


def _weight_at(node: str, index, value):
    return lambda graph: graph.nodes[node].weight.__setitem__(index, value)


MALFORMED = {
    # graphs from other tools
    "dt text": ("foreign", _graph_dt("one"), "the graph's dt metadata must be one positive finite number (the time "
                                             "step of the LIF time constants), got 'one'; give the time step: evsim "
                                             "import-nir --dt DT"),
    "dt nan": ("foreign", _graph_dt(np.nan), "the graph's dt metadata must be one positive finite number"),
    "dt 0": ("foreign", _graph_dt(0.0), "the graph's dt metadata must be one positive finite number"),
    "dt -1": ("foreign", _graph_dt(-1.0), "the graph's dt metadata must be one positive finite number"),
    "dt array": ("foreign", _graph_dt(np.array([1.0, 2.0])), "the graph's dt metadata must be one positive finite "
                                                             "number (the time step of the LIF time constants), got "
                                                             "[1.0, 2.0]"),
    "tau 0": ("foreign", _each_lif("tau", 0.0), "la: LIF tau must be > 0 (a membrane time constant), got 0.0"),
    "tau < 0": ("foreign", _each_lif("tau", -4.0), "la: LIF tau must be > 0 (a membrane time constant), got -4.0"),
    "tau so long the leak is 1": ("foreign", _each_lif("tau", 1e20), "la: tau = 1e+20 is so much longer than the time "
                                                                    "step dt = 1 that the leak 1 - dt/tau is 1"),
    "v_threshold < 0": ("foreign", _each_lif("v_threshold", -0.5), "la: LIF v_threshold must be a positive number "
                                                                  "float32 holds"),
    # float32 makes 1e300 infinite (never fires) and 1e-300 zero
    "v_threshold beyond float32": ("foreign", _each_lif("v_threshold", 1e300), "la: LIF v_threshold must be a "
                                   "positive number float32 holds, at most 3.4e+38 and not 0 in float32 (evsim's "
                                   "neurons fire above a positive float32 threshold), got 1e+300: fix it where the "
                                   "graph was made"),
    "v_threshold 0 in float32": ("foreign", _each_lif("v_threshold", 1e-300), "la: LIF v_threshold must be a positive "
                                                                             "number float32 holds"),
    "r 0": ("foreign", _each_lif("r", 0.0), "la: LIF r must be > 0 (the input resistance; 0 would silence every "
                                            "synapse and a negative r would flip every weight's sign), got 0: fix it "
                                            "where the graph was made"),
    "r < 0": ("foreign", _each_lif("r", -2.0), "la: LIF r must be > 0 (the input resistance"),
    "gain beyond float32": ("foreign", _each_lif("r", 1e300), "la: the input gain dt r / tau = 2.5e+299 (r = 1e+300, "
                                                             "tau = 4, dt = 1), which evsim folds into the weights, is "
                                                             "beyond float32's range: fix r or tau where the graph was "
                                                             "made"),
    "gain 0 in float32": ("foreign", _each_lif("r", 1e-300), "la: the input gain dt r / tau = 2.5e-301"),
    "v_leak": ("foreign", _each_lif("v_leak", 0.25), "la: evsim's LIF has v_leak = v_reset = 0; this graph has "
                                                     "v_leak = 0.25"),
    "r nan": ("foreign", _each_lif("r", np.nan), "la: LIF parameter r is not finite (NaN or infinite)"),
    "tau text": ("foreign", _set("la", "tau", np.array([b"4"] * 6)), "la.tau must hold real numbers, got |S1 values"),
    "weight nan": ("foreign", _weight_at("a", (0, 0), np.nan), "a.weight holds NaN or infinite values; evsim cannot "
                                                               "run a graph with NaN or infinite parameters: fix them "
                                                               "where the graph was made"),
    "weight inf": ("foreign", _weight_at("b", (2, 1), -np.inf), "b.weight holds NaN or infinite values"),
    # checked before the cast to float32, which would print NumPy's overflow warning
    "weight beyond float32": ("foreign", _set("a", "weight", np.full((6, 10), 1e200)),
                              "a.weight holds 1e+200 (times the LIF input gain dt r / tau = 0.5), which float32, "
                              "evsim's arithmetic, turns into infinity or 0: fix it where the graph was made"),
    "weight 0 in float32": ("foreign", _set("a", "weight", np.full((6, 10), 1e-300)), "a.weight holds 1e-300"),
    "bias nan": ("foreign", lambda graph: graph.nodes["a"].bias.__setitem__(1, np.nan),
                 "a.bias holds NaN or infinite values"),
    "bias beyond float32 with the gain": ("foreign", lambda graph: (_each_lif("r", 16.0)(graph),
                                                                    _set("a", "bias", np.full(6, 3e38))(graph)),
                                          "a.bias holds 3e+38 (times the LIF input gain dt r / tau = 4)"),
    "bias size": ("foreign", _set("a", "bias", np.zeros(4, np.float32)),
                  "a.bias has shape (4,) but its weight (6, 10) has 6 outputs: give one bias per output where the "
                  "graph was made"),
    "edge missing": ("foreign", _drop_edge("la", "b"), "NIR graph has 2 Input nodes ('input', 'input_b'; nir.read adds "
                                                       "one before each node no edge reaches); evsim imports one "
                                                       "feed-forward chain Input -> ... -> Output: check that an edge "
                                                       "links each node to the next"),
    "no edge to output": ("foreign", _drop_edge("lb", "output"), "NIR graph has 2 Input nodes ('input', 'input_output'"),
    "dead neuron given a bias": ("exported", lambda graph: graph.nodes["fc0"].bias.__setitem__(3, 5.0),
                                 "lif0.evsim_alive marks units dead that have a nonzero bias in fc0: the graph was "
                                 "changed after evsim exported it; export the network again with evsim export, or "
                                 "delete lif0's evsim_alive"),
    # evsim's own exports, with damaged or edited metadata
    "indptr without indices": ("exported", _set("fc0", "metadata.evsim_indices", None),
                               "fc0 has evsim_indptr but no evsim_indices metadata; export the network again with "
                               "evsim export, or delete fc0's evsim_indptr and evsim_indices to import its nonzero "
                               "weights"),
    "indices without indptr": ("exported", _set("fc1", "metadata.evsim_indptr", None),
                               "fc1 has evsim_indices but no evsim_indptr metadata"),
    "indptr floats": ("exported", _set("fc0", "metadata.evsim_indptr", np.arange(21) * 1.0),
                      "fc0: evsim_indptr/evsim_indices are not a valid CSR structure (indptr must be 21 integers"),
    "weights outside the structure": ("exported", _weight_at("fc0", (3, 0), 0.5),  # neuron 3 is dead: no synapses
                                      "fc0 has nonzero weights where its evsim_indptr/evsim_indices metadata has no "
                                      "synapse: the graph was changed after evsim exported it"),
    "alive too short": ("exported", _set("lif0", "metadata.evsim_alive", np.ones(3, bool)),
                        "lif0.evsim_alive metadata must be 12 booleans (one per neuron), got bool values of shape "
                        "(3,); export the network again with evsim export, or delete lif0's evsim_alive"),
    "alive text": ("exported", _set("lif1", "metadata.evsim_alive", "all"),
                   "lif1.evsim_alive metadata must be 6 booleans (one per neuron)"),
    "alive kills a connected neuron": ("exported", _set("lif0", "metadata.evsim_alive", np.zeros(12, bool)),
                                       "lif0.evsim_alive marks neurons dead that still have synapses in fc0"),
    "develops array": ("exported", _set("fc0", "metadata.evsim_develops", np.ones(3, bool)),
                       "fc0.evsim_develops metadata must be true or false, got [True, True, True]"),
    "develops text": ("exported", _set("fc1", "metadata.evsim_develops", "no"),
                      "fc1.evsim_develops metadata must be true or false, got 'no'"),
    "LIF nodes edited after export": ("exported", _each_lif("tau", 4.0),
                                      "lif0 (tau 4, r 1.25, v_leak 0, v_threshold 0.5, v_reset 0) disagrees with the "
                                      "graph's evsim_lif metadata (tau = 0.000125, r = 1.25, v_threshold 0.5, v_leak = v_reset "
                                      "= 0): the graph was changed after evsim exported it; " + FIX_LIF),
    "exported weight nan": ("exported", _weight_at("fc1", (0, 0), np.nan), "fc1.weight holds NaN or infinite values"),
    # a convolution's kernels: the same checks as an Affine's weights
    "kernels outside the structure": ("conv", lambda graph: graph.nodes["conv0"].metadata.update(
                                          evsim_indptr=np.array([0, 1, 2], np.int32),
                                          evsim_indices=np.array([0, 0], np.int32)),
                                      "conv0 has nonzero weights where its evsim_indptr/evsim_indices metadata has no "
                                      "synapse: the graph was changed after evsim exported it; export the network "
                                      "again with evsim export, or delete conv0's evsim_indptr and evsim_indices"),
    "conv indptr without indices": ("conv", _set("conv0", "metadata.evsim_indices", None),
                                    "conv0 has evsim_indptr but no evsim_indices metadata"),
    "conv weight nan": ("conv", _weight_at("conv0", (1, 0, 2, 2), np.nan), "conv0.weight holds NaN or infinite values"),
    "conv weight beyond float32": ("conv", _float64_weight_at("conv0", (1, 0, 2, 2), 1e200),
                                   "conv0.weight holds 1e+200, which float32, evsim's arithmetic, turns into infinity"),
    "conv bias size": ("conv", _set("conv0", "bias", np.zeros(7, np.float32)),
                       "conv0.bias has shape (7,) but its weight (4, 2, 3, 3) has 4 outputs: give one bias per output "
                       "where the graph was made"),
    "conv bias inf": ("conv", _set("conv0", "bias", np.full(4, np.inf, np.float32)),
                      "conv0.bias holds NaN or infinite values"),
    "exported weight beyond float32": ("exported", _set("fc0", "weight", np.full((12, 20), 1e200)),
                                       "fc0.weight holds 1e+200, which float32, evsim's arithmetic, turns into "
                                       "infinity or 0: fix it where the graph was made"),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_graphs_are_refused_in_one_line_naming_the_node(rng, tmp_path, name):
    kind, change, fragment = MALFORMED[name]
    graph = {"foreign": foreign_graph, "exported": exported, "conv": exported_conv}[kind](rng)
    change(graph)
    refused(graph, tmp_path, fragment)


def test_a_dead_filter_given_a_bias_is_exported_without_it_and_refused_with_it(tmp_path):
    """A dead unit never fires in evsim whatever its bias: the export writes its bias as 0,
    so other simulators do not fire it either, and an import that finds one refuses it."""
    network = Network.from_spec("2x6x6-3C3-AP2-4C3-5-2", rng=0)
    network.layers[2].kill([1])
    network.layers[2].bias[1] = 0.75  # set after the kill, as the Python API allows
    graph = network_to_nir(network)
    assert graph.nodes["conv2"].bias[1] == 0 and graph.nodes["conv2"].bias[0] == network.layers[2].bias[0]
    drive = (np.random.default_rng(1).random((3, 2, 72)) < 0.4).astype(np.float32)
    for a, b in zip(network.forward(drive)[0], network_from_nir(graph).forward(drive)[0]):
        np.testing.assert_array_equal(a, b)
    graph.nodes["conv2"].bias[1] = 5.0
    refused(graph, tmp_path, "lif2.evsim_alive marks units dead that have a nonzero bias in conv2")


def test_graphs_built_in_memory_are_checked_like_files(rng):
    """nir.read type-checks a file's sizes; a graph handed to network_from_nir is checked here."""
    for node, size in (("input", 11), ("output", 7)):
        graph = foreign_graph(rng)
        graph.nodes[node] = (nir.Input(input_type={"input": np.array([size])}) if node == "input" else
                             nir.Output(output_type={"output": np.array([size])}))
        with pytest.raises(ConfigError, match=f"NIR node '{node}' declares {size} values but its layers have "):
            network_from_nir(graph)
    graph = foreign_graph(rng)
    graph.nodes["la"] = nir.LIF(tau=np.full(5, 4.0), r=np.full(5, 2.0), v_leak=np.zeros(5), v_threshold=np.ones(5))
    with pytest.raises(ConfigError, match=re.escape("la.tau has shape (5,) but a feeding it has 6 outputs")):
        network_from_nir(graph)
    graph = foreign_graph(rng)
    graph.nodes["b"] = nir.Linear(weight=np.ones((2, 3, 6), np.float32))
    with pytest.raises(ConfigError, match=re.escape("b.weight must be a matrix [n_out, n_in] with at least one of "
                                                    "each, got shape (2, 3, 6)")):
        network_from_nir(graph)
    graph = foreign_graph(rng)
    graph.nodes["b"] = nir.Linear(weight=np.ones((3, 5), np.float32))
    with pytest.raises(ShapeError, match="layer sizes do not chain: layer 0.s 6 outputs feed layer 1.s 5 inputs"):
        network_from_nir(graph)
    with pytest.raises(ConfigError, match="dt must be one positive finite number"):
        network_from_nir(foreign_graph(rng), dt=0.0)


def test_files_nir_cannot_read_are_refused_in_one_line(rng, tmp_path):
    """nir.read fails on malformed files with assorted exceptions (AttributeError, an
    assertion, a type-inference ValueError): evsim names the node and what is wrong, in
    one line naming the file."""
    cases = {
        "weight text": ("nodes/a/weight", b"heavy", "a.weight must hold real numbers, got object values (NIR Affine "
                                                    "node 'a'): fix it where the graph was made"),
        "unknown node type": ("nodes/a/type", b"Dendrite", "NIR node 'a' has type 'Dendrite', which NIR does not "
                                                           "have; evsim imports Input, Output, Affine"),
        "LIF size": ("nodes/la/tau", np.full(5, 4.0), "not a consistent NIR graph (AssertionError: All parameters "
                                                      "must have the same shape)"),
        "input size": ("nodes/input/shape", np.array([7]), "not a consistent NIR graph (ValueError: Type inference "
                                                           "error: type mismatch: input.output: [[7]] -> a.input"),
    }
    for name, (key, value, fragment) in cases.items():
        path = tmp_path / f"{name.replace(' ', '-')}.nir"
        nir.write(path, foreign_graph(rng))
        with h5py.File(path, "r+") as f:
            del f["node"][key]
            f["node"][key] = value
        with pytest.raises(ConfigError, match=re.escape(f"{path}: {fragment}")):
            read_nir(path)
        assert f"{path}: {fragment}" in one_line_error(run(["import-nir", str(path), str(tmp_path / "out")]))


def test_graphs_evsim_wrote_with_a_step_of_one_still_import(rng, tmp_path):
    """Graphs exported with dt = 1 (tau in steps) import to the same network."""
    net = developed_network(rng, LIFParameters())
    graph = network_to_nir(net)
    for node in graph.nodes.values():
        if isinstance(node, nir.LIF):
            node.tau = np.full_like(node.tau, 1.25)
    graph.metadata["dt"] = 1.0
    back = network_from_nir(graph)
    drive = (rng.random((12, 5, 20)) < 0.4).astype(np.float32)
    for a, b in zip(spikes(net, drive), spikes(back, drive)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("decay, v_th", [(0.0, 1e-40), (0.2, 0.5), (0.999, 3e38)])
def test_what_evsim_exports_passes_the_checks_on_other_tools_graphs(rng, tmp_path, decay, v_th):
    """Without its evsim_lif metadata (as the refusals advise) an export imports by the
    rules for other tools' graphs, at the edges of evsim's own ranges too."""
    graph = network_to_nir(developed_network(rng, LIFParameters(decay=decay, v_th=v_th)))
    del graph.metadata["evsim_lif"], graph.metadata["evsim_format"]
    path = tmp_path / "graph.nir"
    nir.write(path, graph)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = read_nir(path)
    assert back.lif.decay == pytest.approx(decay, abs=1e-12) and back.lif.v_th == v_th
