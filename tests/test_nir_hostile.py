"""NIR import and export facing malformed graphs, wrong paths and imported folders run on data."""
import os
import tracemalloc

import h5py
import nir
import numpy as np
import pytest

from evsim.checkpoint import NETWORK_FILE, save_network
from evsim.errors import ConfigError
from evsim.network import Network
from evsim.nir_io import IMPORT_BYTES_PER_VALUE, read_nir, write_nir
from tests.conftest import one_line_error
from tests.conftest import run as run_strings


def run(args):
    return run_strings([str(arg) for arg in args])


def graph_file(path, n_in=10, n_out=3, weight=None):
    """A one-layer graph as another tool writes it (no evsim metadata)."""
    weight = np.ones((n_out, n_in), np.float32) if weight is None else weight
    nodes = {"input": nir.Input(input_type={"input": np.array([n_in])}),
             "fc": nir.Affine(weight=weight, bias=np.zeros(n_out, np.float32)),
             "lif": nir.LIF(tau=np.full(n_out, 2.0), r=np.ones(n_out), v_leak=np.zeros(n_out),
                            v_threshold=np.ones(n_out), v_reset=np.zeros(n_out)),
             "output": nir.Output(output_type={"output": np.array([n_out])})}
    nir.write(path, nir.NIRGraph(nodes=nodes, edges=[("input", "fc"), ("fc", "lif"), ("lif", "output")]))
    return path


def edited(path, key, value=None):
    """``path`` with its HDF5 member ``node/KEY`` replaced by ``value`` (deleted if None)."""
    with h5py.File(path, "r+") as f:
        del f["node"][key]
        if value is not None:
            f["node"][key] = value
    return path


def imported_folder(tmp_path, spec, trained_on, name="imp"):
    """A folder as evsim import-nir leaves it: a network.npz recording what it was trained on."""
    folder = tmp_path / name
    folder.mkdir()
    save_network(folder / NETWORK_FILE, Network.from_spec(spec, rng=0), trained_on=trained_on)
    return folder


# D1: an imported folder runs on the data its network was trained on, as a run does.
def test_an_imported_network_trained_on_real_data_is_not_scored_on_the_substitute(tmp_path):
    folder = imported_folder(tmp_path, "784-8-10", {"dataset": "mnist", "data_source": "real"})
    line = one_line_error(run(["eval", folder, "--dataset", "mnist", "--time-steps", "2"]))
    assert "full MNIST not found" in line  # the real data it needs, as for a run trained on it
    assert line.endswith(f"{folder}'s network was trained on real data (its NIR graph says so): give --source "
                         "emulated to run it on other data")
    result = run(["eval", folder, "--dataset", "mnist", "--time-steps", "2", "--source", "emulated"])
    assert result.exit_code == 0, result.output
    assert f"NOTE: {folder} trained on real data; these results are on mnist-5k data" in result.output
    assert sorted(os.listdir(folder)) == ["confusion-latest-test-mnist-5k.png", NETWORK_FILE]


def test_an_imported_network_runs_on_its_own_substitute_under_its_own_names(tmp_path):
    folder = imported_folder(tmp_path, "784-8-10", {"dataset": "mnist", "data_source": "mnist-5k"})
    result = run(["eval", folder, "--dataset", "mnist", "--time-steps", "2"])
    assert result.exit_code == 0 and "trained on" not in result.output, result.output
    assert (folder / "confusion-latest-test.png").is_file()


def test_an_imported_network_of_another_dataset_is_said_to_be_so(tmp_path):
    folder = imported_folder(tmp_path, "784-8-10", {"dataset": "toy", "data_source": "toy"})
    result = run(["profile", folder, "--dataset", "mnist", "--time-steps", "2", "--samples", "10"])
    assert result.exit_code == 0, result.output
    assert f"NOTE: {folder}'s network was trained on toy (toy data); these results are on mnist" in result.output
    assert (folder / "profile-latest-test-mnist-5k.json").is_file() and not (folder / "profile-latest-test.json").exists()


def test_data_show_of_an_imported_network_names_the_data_it_was_trained_on(tmp_path):
    """data show draws what the options typed load; a NOTE says where the network's graph
    says it trained, as eval's does."""
    folder = imported_folder(tmp_path, "784-8-10", {"dataset": "mnist", "data_source": "real"})
    out = tmp_path / "sample.png"
    result = run(["data", "show", "--dataset", "mnist", "--run", folder, "--out", out, "--time-steps", "2"])
    assert result.exit_code == 0, result.output
    assert f"NOTE: {folder}'s network was trained on mnist (real data); this sample is from mnist (mnist-5k" \
        in result.output
    mine = imported_folder(tmp_path, "784-8-10", {"dataset": "mnist", "data_source": "mnist-5k"}, name="own")
    result = run(["data", "show", "--dataset", "mnist", "--run", mine, "--out", out, "--time-steps", "2"])
    assert result.exit_code == 0 and "NOTE" not in result.output, result.output


# D2: export replaces an earlier export, never another file.
def test_export_refuses_to_overwrite_a_file_that_is_not_nir(tmp_path):
    folder = imported_folder(tmp_path, "6-4-3", None)
    results = folder / "profile-latest-test.json"
    results.write_text("{}")
    line = one_line_error(run(["export", folder, results]))
    assert f"{results}: exists and is not a NIR (HDF5) file" in line and "choose another name, or remove it" in line
    assert results.read_text() == "{}"
    for _ in range(2):  # a NIR file is replaced: export again
        assert run(["export", folder, folder / "net.nir"]).exit_code == 0
    (tmp_path / "empty.nir").touch()  # as mktemp makes it: nothing to lose
    assert run(["export", folder, tmp_path / "empty.nir"]).exit_code == 0


# D3: an import that cannot fit in memory is refused before the arrays are read.
def test_a_graph_whose_arrays_cannot_fit_is_refused_before_reading(tmp_path, monkeypatch):
    path = edited(graph_file(tmp_path / "g.nir"), "nodes/input/shape", np.array([2_000_000]))
    edited(path, "nodes/fc/weight")
    with h5py.File(path, "r+") as f:  # declared, never written: a small file claiming 24 MB
        f["node/nodes/fc"].create_dataset("weight", shape=(3, 2_000_000), dtype=np.float32, chunks=(3, 1000))
    assert os.path.getsize(path) < 100_000
    monkeypatch.setattr("evsim.memory.physical_memory", lambda: 100 * 2 ** 20)
    line = one_line_error(run(["import-nir", path, tmp_path / "out"]))
    assert "needs about 0.2 GiB of memory" in line and "import it on a machine with more memory" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_the_import_needs_no_more_memory_than_its_check_counts(tmp_path, dtype):
    """Per value, whatever the file stores: float16 graphs took 13x their bytes, float64
    4x, so a count of bytes let the one through to the OS's killer and refused the other."""
    weight = np.random.default_rng(0).normal(size=(1000, 1000)).astype(dtype)
    path = graph_file(tmp_path / "g.nir", 1000, 1000, weight)
    write_nir(tmp_path / "own.nir", read_nir(path))
    for name in (path, tmp_path / "own.nir"):
        tracemalloc.start()
        try:
            read_nir(name)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < IMPORT_BYTES_PER_VALUE * weight.size, (name, peak / weight.size)


# D4: malformed graphs name the node and what is wrong.
@pytest.mark.parametrize("key, value, fragment", [
    ("nodes/fc/type", b"Frobnicate", "NIR node 'fc' has type 'Frobnicate', which NIR does not have; evsim imports "
                                     "Input, Output, Affine, Linear, LIF, Conv2d, AvgPool2d, Flatten nodes"),
    ("nodes/input/shape", None, "NIR Input node 'input' has no shape: fix it where the graph was made"),
    ("nodes/lif/type", None, "NIR node 'lif' has no type"),
    ("nodes/fc/weight", b"heavy", "fc.weight must hold real numbers, got object values"),
    ("nodes/lif/tau", np.full(5, 2.0), "not a consistent NIR graph (AssertionError: All parameters must have the "
                                       "same shape); fix it where the graph was made"),
])
def test_malformed_graphs_name_the_node_and_the_fault(tmp_path, key, value, fragment):
    path = edited(graph_file(tmp_path / "g.nir"), key, value)
    with pytest.raises(ConfigError, match="^" + str(path) + ": "):
        read_nir(path)
    line = one_line_error(run(["import-nir", path, tmp_path / "out"]))
    assert fragment in line and "nir.write" not in line, line


# D5: links that lead nowhere are said to be so.
def test_a_loop_of_links_or_a_dangling_link_is_named(tmp_path):
    os.symlink(tmp_path / "b.nir", tmp_path / "a.nir")
    os.symlink(tmp_path / "a.nir", tmp_path / "b.nir")
    os.symlink(tmp_path / "absent.nir", tmp_path / "dangling.nir")
    assert "loop of symbolic links" in one_line_error(run(["import-nir", tmp_path / "a.nir", tmp_path / "out"]))
    assert "a broken link?" in one_line_error(run(["import-nir", tmp_path / "dangling.nir", tmp_path / "out"]))
    assert "no such NIR file" in one_line_error(run(["import-nir", tmp_path / "absent.nir", tmp_path / "out"]))


# D6: a run folder that does not exist is said not to.
@pytest.mark.parametrize("command", [["export"], ["eval"], ["profile"]])
def test_a_missing_run_folder_is_said_to_be_missing(tmp_path, command):
    folder = tmp_path / "no" / "such"
    args = [*command, folder] + ([tmp_path / "x.nir"] if command == ["export"] else [])
    line = one_line_error(run(args))
    assert f"{folder}: no such folder" in line and "no checkpoint here" not in line


# D7: a refused graph gets one Error line, no NOTE before it.
def test_dt_note_only_after_a_successful_import(tmp_path):
    path = tmp_path / "g.nir"
    write_nir(path, Network.from_spec("6-4-3", rng=0), {"dataset": "toy"})
    edited(path, "metadata/evsim_trained_on", '{"dataset": 5}')  # the network reads, its record is refused
    assert "metadata evsim_trained_on must be a JSON object" in one_line_error(
        run(["import-nir", path, tmp_path / "out", "--dt", "0.5"]))
    write_nir(tmp_path / "good.nir", Network.from_spec("6-4-3", rng=0))
    result = run(["import-nir", tmp_path / "good.nir", tmp_path / "out", "--dt", "0.5"])
    assert result.exit_code == 0 and result.output.startswith("NOTE: --dt 0.5 is not used"), result.output


# D8: advice that fits the command; a network checked against a known dataset before it loads.
def test_out_of_memory_advice_fits_import_nir(tmp_path, monkeypatch):
    def short_of_memory(*args):
        raise MemoryError()
    monkeypatch.setattr("evsim.cli.nir.read_nir", short_of_memory)
    line = one_line_error(run(["import-nir", graph_file(tmp_path / "g.nir"), tmp_path / "out"]))
    assert "out of memory" in line and "--batch-size" not in line and "machine with more memory" in line


def test_a_network_that_cannot_fit_a_known_dataset_is_refused_before_it_loads(tmp_path, monkeypatch):
    folder = imported_folder(tmp_path, "6-8-3", None)

    def no_loading(*args, **kwargs):
        raise AssertionError("the data was loaded")
    monkeypatch.setattr("evsim.cli.runs.load_dataset", no_loading)
    for command in ("eval", "profile"):
        line = one_line_error(run([command, folder, "--dataset", "nmnist"]))
        assert "network [6, 8, 3] does not fit nmnist (2x34x34 = 2312 inputs, 10 classes)" in line


def test_the_known_shape_check_lets_a_fitting_network_through(tmp_path):
    folder = imported_folder(tmp_path, "1x28x28-4C3s2-10", {"dataset": "mnist", "data_source": "mnist-5k"})
    result = run(["eval", folder, "--dataset", "mnist", "--time-steps", "2"])
    assert result.exit_code == 0, result.output
