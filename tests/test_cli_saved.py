"""Saved networks, checkpoints and run folders that are damaged, forged or incomplete:
each gives one line and exit code 2 (never a traceback, never half the outputs), and
folders that hold only a network still export, evaluate and profile."""
import json
import math
import re
import shutil

import nir
import numpy as np
import pytest
from click.testing import CliRunner

from evsim.checkpoint import CHECKPOINT_BEST, CHECKPOINT_LATEST, NETWORK_FILE, load_checkpoint, load_network
from evsim.cli.main import main
from evsim.cli.runs import read_config
from evsim.errors import CheckpointError, ConfigError, ShapeError
from evsim.nir_io import network_to_nir, read_nir
from evsim.runlock import run_lock
from evsim.synapses import check_csr
from evsim.config import TrainConfig
from evsim.train import Trainer
from tests.runs import toy_config, toy_dataset
from tests.test_nir import developed_network, foreign_graph

MNIST_RUN = ["train", "--dataset", "mnist", "--epochs", "1", "--hidden", "16", "--time-steps", "4",
             "--batch-size", "500", "--threads", "1", "--no-progress"]


def run(args):
    return CliRunner().invoke(main, [str(arg) for arg in args], prog_name="evsim")


def one_line_error(result, fragment: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.output.startswith("Error: ") and len(result.output.strip().splitlines()) == 1, result.output
    assert fragment in result.output, result.output


@pytest.fixture(scope="module")
def toy_template(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("evsim.train.plot_training", lambda *args: None)
        out = tmp_path_factory.mktemp("toy") / "run"
        Trainer(toy_config(epochs=1), toy_dataset()).fit(out, progress=False, echo=lambda line: None)
    return out


@pytest.fixture(scope="module")
def mnist_template(tmp_path_factory):
    out = tmp_path_factory.mktemp("mnist") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EVSIM_OFFLINE", "1")
        result = run(MNIST_RUN + ["--out", out])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture
def toy_run(toy_template, tmp_path):
    return shutil.copytree(toy_template, tmp_path / "run")


@pytest.fixture
def mnist_run(mnist_template, tmp_path):
    return shutil.copytree(mnist_template, tmp_path / "run")


def forge(path, meta_changes=None, **arrays):
    """Rewrite the npz file ``path`` with some members replaced (``meta`` updated by ``meta_changes``)."""
    with np.load(path, allow_pickle=False) as f:
        members = {key: f[key] for key in f.files}
    meta = json.loads(str(members.pop("meta")))
    meta_changes = meta_changes or {}
    for key, value in meta_changes.items():
        meta[key] = value
    path.unlink()  # the best checkpoint may be a hard link to the latest: leave it alone
    np.savez(path, meta=np.array(json.dumps(meta)), **{**members, **arrays})


def member(path, key):
    with np.load(path, allow_pickle=False) as f:
        return np.array(f[key])


# ------------------------------------------------------------- 1. CSR structure
@pytest.mark.parametrize("indptr, indices, shape, message", [
    ([0, 1], [0], (-1, 3), "shape must be two sizes >= 0"),
    ([0, 1], [0], (2, 3), "indptr must be 3 integers"),
    ([0.0, 1.0, 1.0], [0], (2, 3), "indptr must be 3 integers"),
    ([0, 1, 1], [[0]], (2, 3), "indices must be a vector of integers"),
    ([0, 2, 1], [0], (2, 3), "indptr must rise from 0 to nnz = 1"),
    ([0, 1, 2], [0], (2, 3), "indptr must rise from 0 to nnz = 1"),
    ([0, 1, 2], [0, 3], (2, 3), "column indices must lie in [0, 3), found 0..3"),
    ([0, 1, 2], [0, -1], (2, 3), "column indices must lie in [0, 3)"),
    ([0, 2, 2], [2, 1], (2, 3), "sorted and unique within each row"),
    ([0, 2, 2], [1, 1], (2, 3), "sorted and unique within each row"),
])
def test_check_csr_names_each_defect(indptr, indices, shape, message):
    with pytest.raises(ShapeError, match=message.replace("[", r"\[").replace(")", r"\)")):
        check_csr(np.array(indptr), np.array(indices), shape)
    check_csr(np.array([0, 2, 3]), np.array([0, 2, 1]), (2, 3))  # a new row may start lower


@pytest.mark.parametrize("name", [NETWORK_FILE, CHECKPOINT_LATEST])
@pytest.mark.parametrize("damage", ["out of range", "duplicate", "indptr"])
def test_broken_csr_in_a_saved_file_is_refused_on_load(toy_run, name, damage):
    path = toy_run / name
    indptr, indices = member(path, "l0_indptr"), member(path, "l0_indices")
    if damage == "out of range":
        indices[0] = 99999
    elif damage == "duplicate":
        indices[1] = indices[0]
    else:
        indptr[1], indptr[2] = indptr[2], indptr[1]
    forge(path, l0_indptr=indptr, l0_indices=indices)
    with pytest.raises(CheckpointError, match="corrupt or truncated .*ShapeError"):
        load_network(path)
    if name == CHECKPOINT_LATEST:
        one_line_error(run(["train", "--resume", toy_run]), f"{path}: corrupt or truncated checkpoint")
    else:
        (toy_run / CHECKPOINT_LATEST).unlink()
    one_line_error(run(["export", toy_run, toy_run / "x.nir"]), "corrupt or truncated")
    assert not (toy_run / "x.nir").exists()


# --------------------------------------------------- 2. stored configuration
@pytest.mark.parametrize("change, message", [
    ({"epochs": "abc"}, "epochs must be an integer, got 'abc'"),
    ({"epochs": True}, "epochs must be an integer, got True"),
    ({"epochs": 0}, "--epochs must be >= 1, got 0"),
    ({"lr": math.nan}, "lr must be a finite number, got nan"),
    ({"hidden": ["12"]}, "hidden must be a list of integers"),
    ({"lif": {"decay": 0.2, "v_th": "high"}}, "lif.v_th must be a finite number, got 'high'"),
    ({"data": [1]}, "data must be an object, got [1]"),
    ({"sdsnn": {"rho_init": 90.0, "rho_max": 65.0}}, "need 0 <= rho_init <= rho_max < 100"),
])
def test_an_invalid_stored_configuration_is_refused_naming_the_file(toy_run, change, message):
    path = toy_run / CHECKPOINT_LATEST
    with np.load(path, allow_pickle=False) as f:
        config = json.loads(str(f["meta"]))["config"]
    for key, value in change.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) and isinstance(config[key], dict) else value
    forge(path, {"config": config})
    expected = f"{path}: invalid stored configuration ({message}"
    with pytest.raises(CheckpointError, match=expected.replace("[", r"\[").replace("(", r"\(")):
        load_checkpoint(path)
    one_line_error(run(["train", "--resume", toy_run]), expected)
    one_line_error(run(["export", toy_run, toy_run / "x.nir"]), expected)
    # A folder holding network.npz and config.json: the same check on config.json.
    (toy_run / "config.json").write_text(json.dumps(config))
    for name in (CHECKPOINT_LATEST, CHECKPOINT_BEST):
        (toy_run / name).unlink()
    one_line_error(run(["eval", toy_run]), f"{toy_run / 'config.json'}: invalid stored configuration ({message}")


MISSING = ["epochs", "out", "data", "data.encoding", "lif.reset", "sdsnn.regrow_steps"]


def without(config: dict, dotted: str) -> dict:
    """``config`` with the key ``dotted`` (``section.key`` for a nested one) deleted."""
    config = json.loads(json.dumps(config))
    *sections, key = dotted.split(".")
    inner = config
    for section in sections:
        inner = inner[section]
    del inner[key]
    return config


@pytest.mark.parametrize("key", MISSING)
def test_a_stored_configuration_missing_a_key_is_refused_at_every_entry_point(toy_run, key):
    """A key evsim writes, missing: no default stands in for it; resume, eval, profile and
    export each say so in one line naming the file and the key."""
    path = toy_run / CHECKPOINT_LATEST
    with np.load(path, allow_pickle=False) as f:
        config = json.loads(str(f["meta"]))["config"]
    forge(path, {"config": without(config, key)})
    expected = f"{path}: stored configuration has no {key!r} (the file is damaged or was written by another evsim"
    fix = "restore it, or re-run training to write one with this evsim"
    with pytest.raises(CheckpointError, match=re.escape(expected)):
        load_checkpoint(path)
    for args in (["train", "--resume", toy_run], ["eval", toy_run], ["profile", toy_run],
                 ["export", toy_run, toy_run / "x.nir"]):
        one_line_error(run(args), expected)
        one_line_error(run(args), fix)
    assert not (toy_run / "x.nir").exists() and not (toy_run / "profile-latest-test.json").exists()
    # A folder holding network.npz and config.json (with data_source beside the configuration).
    stored = json.loads((toy_run / "config.json").read_text())
    assert "data_source" in stored
    (toy_run / "config.json").write_text(json.dumps(without(stored, key)))
    for name in (CHECKPOINT_LATEST, CHECKPOINT_BEST):
        (toy_run / name).unlink()
    expected = f"{toy_run / 'config.json'}: stored configuration has no {key!r}"
    for args in (["eval", toy_run], ["profile", toy_run], ["export", toy_run, toy_run / "x.nir"]):
        one_line_error(run(args), expected)


def test_an_intact_stored_configuration_with_extra_keys_still_loads(toy_run):
    path = toy_run / CHECKPOINT_LATEST
    with np.load(path, allow_pickle=False) as f:
        config = json.loads(str(f["meta"]))["config"]
    forge(path, {"config": {**config, "written_by": "a later evsim"}})  # beside the configuration: ignored
    assert load_checkpoint(path).config["epochs"] == 1
    assert read_config(toy_run) == TrainConfig.from_dict(config)  # its config.json holds data_source too


def test_an_intact_run_evaluates_from_its_checkpoint_and_from_config_json(mnist_run):
    assert "data_source" in json.loads((mnist_run / "config.json").read_text())
    result = run(["eval", mnist_run])
    assert result.exit_code == 0, result.output
    for name in (CHECKPOINT_LATEST, CHECKPOINT_BEST):
        (mnist_run / name).unlink()
    result = run(["eval", mnist_run])
    assert result.exit_code == 0 and f"{mnist_run} (network.npz), test split" in result.output, result.output


@pytest.mark.parametrize("name", [NETWORK_FILE, CHECKPOINT_LATEST])
@pytest.mark.parametrize("change, message", [
    ("drop reset", "lif has no 'reset'"),
    ("drop detach_reset", "lif has no 'detach_reset'"),
    ("add tau", "lif has an unknown field 'tau'"),
    ("reset 5", "lif.reset must be a string, got 5"),
    ("reset sideways", "lif: unknown reset 'sideways'"),
    ("decay 1.5", "lif: decay must be in [0, 1), got 1.5"),
])
def test_a_saved_networks_neuron_parameters_must_be_complete_and_valid(toy_run, name, change, message):
    """The network's own ``lif`` in ``meta`` (network.npz and checkpoints): a lost field no
    longer becomes its default (a subtractive reset read back as a hard one)."""
    path = toy_run / name
    with np.load(path, allow_pickle=False) as f:
        lif = json.loads(str(f["meta"]))["lif"]
    verb, field = change.split()
    if verb == "drop":
        del lif[field]
    elif verb == "add":
        lif[field] = 1.0
    else:
        lif[verb] = json.loads(field) if field[0].isdigit() else field
    forge(path, {"lif": lif})
    with pytest.raises(CheckpointError, match=f"{name}: corrupt or truncated .*{re.escape(message)}"):
        load_network(path)
    if name == NETWORK_FILE:
        (toy_run / CHECKPOINT_LATEST).unlink()
    one_line_error(run(["export", toy_run, toy_run / "x.nir"]), message)


# ----------------------------------------------------------- 3. non-finite values
@pytest.mark.parametrize("name", [NETWORK_FILE, CHECKPOINT_LATEST])
@pytest.mark.parametrize("key, value, message", [
    ("l0_data", np.nan, "layer 0 holds NaN or infinite weights"),
    ("l1_bias", np.inf, "layer 1 holds NaN or infinite biases"),
    ("lif", np.inf, "lif.v_th must be a finite number, got inf"),
])
def test_non_finite_weights_biases_and_neuron_parameters_are_refused(toy_run, name, key, value, message):
    path = toy_run / name
    if key == "lif":
        with np.load(path, allow_pickle=False) as f:
            lif = json.loads(str(f["meta"]))["lif"]
        forge(path, {"lif": {**lif, "v_th": value}})
    else:
        values = member(path, key)
        values[3] = value
        forge(path, **{key: values})
    with pytest.raises(CheckpointError, match=f"{name}: corrupt or truncated .*{message.replace('(', r'.')}"):
        load_network(path)
    if name == NETWORK_FILE:
        (toy_run / CHECKPOINT_LATEST).unlink()
    one_line_error(run(["export", toy_run, toy_run / "x.nir"]), message)


def test_nir_graphs_with_non_finite_values_are_refused_naming_the_file(rng, tmp_path):
    graph = network_to_nir(developed_network(rng))
    graph.nodes["fc1"].weight[0, 0] = np.nan
    nir.write(tmp_path / "nanw.nir", graph)
    with pytest.raises(ConfigError, match=f"{tmp_path / 'nanw.nir'}: fc1.weight holds NaN or infinite values"):
        read_nir(tmp_path / "nanw.nir")
    graph = foreign_graph(rng)
    graph.nodes["la"].v_threshold[:] = np.nan
    nir.write(tmp_path / "vth.nir", graph)
    with pytest.raises(ConfigError, match="vth.nir: la: LIF parameter v_threshold is not finite"):
        read_nir(tmp_path / "vth.nir")
    one_line_error(run(["import-nir", tmp_path / "nanw.nir", tmp_path / "imported"]),
                   "fc1.weight holds NaN or infinite values")
    assert not (tmp_path / "imported").exists()


def test_a_broken_csr_structure_in_nir_metadata_is_refused(rng, tmp_path):
    graph = network_to_nir(developed_network(rng))
    graph.nodes["fc0"].metadata["evsim_indices"][0] = 99999
    nir.write(tmp_path / "bad.nir", graph)
    with pytest.raises(ConfigError, match="bad.nir: fc0: evsim_indptr/evsim_indices are not a valid CSR structure "
                                          r"\(column indices must lie in"):
        read_nir(tmp_path / "bad.nir")


# ------------------------------------------------------------ 4. output paths
def test_an_unwritable_output_path_is_refused_before_anything_is_written(mnist_run, tmp_path):
    (tmp_path / "afile").write_text("")
    for name in ("profile-latest-test.json", "profile-latest-test.png", "confusion-latest-test.png"):
        (mnist_run / name).unlink(missing_ok=True)
    one_line_error(run(["profile", mnist_run, "--png", tmp_path / "afile" / "p.png", "--json", tmp_path / "p.json"]),
                   f"cannot write {tmp_path / 'afile' / 'p.png'}: {tmp_path / 'afile'} is not a folder")
    one_line_error(run(["eval", mnist_run, "--json", tmp_path / "afile" / "sub" / "e.json"]), "is not a folder")
    assert not (tmp_path / "p.json").exists() and not (mnist_run / "confusion-latest-test.png").exists()


def test_one_file_given_for_two_outputs_is_refused_before_any_work(mnist_run, tmp_path):
    for args in (["profile", mnist_run, "--png", tmp_path / "x.png", "--json", tmp_path / "." / "x.png"],
                 ["runs", "compare", mnist_run, "--plot", tmp_path / "x.png", "--csv", tmp_path / "x.png"]):
        one_line_error(run(args), f"{tmp_path / '.' / 'x.png' if args[0] == 'profile' else tmp_path / 'x.png'} is "
                                  "given for two outputs; give each output its own file name")
        assert not (tmp_path / "x.png").exists()


def test_a_folder_that_refuses_new_files_is_reported(tmp_path, monkeypatch):
    from evsim.cli.runs import check_outputs

    def refuse(dir):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("evsim.cli.runs.tempfile.TemporaryFile", refuse)
    with pytest.raises(ConfigError, match=f"cannot write .*: {tmp_path} is not writable .Permission denied"):
        check_outputs(tmp_path / "new" / "deeper" / "x.json")
    with pytest.raises(ConfigError, match="is a folder; give a file name"):
        check_outputs(tmp_path)


# ---------------------------------- 5. folders holding only a network (import-nir)
def test_a_network_only_folder_exports_evaluates_and_profiles(mnist_run, tmp_path):
    assert run(["export", mnist_run, tmp_path / "a.nir"]).exit_code == 0
    assert run(["import-nir", tmp_path / "a.nir", tmp_path / "imp"]).exit_code == 0
    result = run(["export", tmp_path / "imp", tmp_path / "b.nir"])  # NIR -> evsim -> NIR
    assert result.exit_code == 0, result.output
    assert run(["import-nir", tmp_path / "b.nir", tmp_path / "imp2"]).exit_code == 0
    first, second = load_network(tmp_path / "imp" / NETWORK_FILE), load_network(tmp_path / "imp2" / NETWORK_FILE)
    for a, b in zip(first.layers, second.layers):
        assert np.array_equal(a.store.to_dense(), b.store.to_dense()) and np.array_equal(a.bias, b.bias)

    for command in ("eval", "profile"):
        one_line_error(run([command, tmp_path / "imp"]), "has a network but no config.json, so no dataset is "
                                                         "assumed (not even --dataset's default): name the data to "
                                                         "run it on with --dataset NAME")
    result = run(["eval", tmp_path / "imp", "--dataset", "mnist", "--time-steps", "4"])
    assert result.exit_code == 0, result.output
    assert f"{tmp_path / 'imp'} (network.npz), test split" in result.output
    trained = run(["eval", mnist_run])
    assert result.output.splitlines()[-5:-2] == trained.output.splitlines()[-5:-2]  # accuracy, classes, SOPs
    result = run(["profile", tmp_path / "imp", "--dataset", "mnist", "--time-steps", "4", "--samples", "20"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "imp" / "profile-latest-test.json").read_text())["samples"] == 20
    one_line_error(run(["eval", mnist_run, "--dataset", "mnist"]), "has its own configuration, which fixes the "
                                                                  "dataset; leave out --dataset")


@pytest.mark.parametrize("spec, fragment", [
    ("512-16-3", "network [512, 16, 3] does not fit mnist (1x28x28 = 784 inputs, 10 classes)"),
    ("2x32x32-4C3-AP4-10", "network 2x32x32-4C3-AP4-10 does not fit mnist (1x28x28 = 784 inputs, 10 classes)"),
])
def test_profile_refuses_a_network_only_folder_that_does_not_fit_the_data(tmp_path, spec, fragment):
    from evsim.checkpoint import save_network
    from evsim.network import Network

    folder = tmp_path / "imp"
    folder.mkdir()
    save_network(folder / NETWORK_FILE, Network.from_spec(spec))
    for command in ("eval", "profile"):
        result = run([command, folder, "--dataset", "mnist", "--time-steps", "4"])
        # refused before the data loads (mnist's shape is known), in one line
        one_line_error(result, f"Error: {fragment}: name the data it was trained on with --dataset")
    assert sorted(path.name for path in folder.iterdir()) == [NETWORK_FILE]


def test_profiles_of_other_checkpoints_and_splits_are_kept_apart_and_say_what_they_hold(mnist_run, monkeypatch):
    import evsim.plots as plots

    titles = []
    draw = plots.save_figure
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: (titles.append(fig._suptitle.get_text()),
                                                                 draw(fig, path)))
    for checkpoint, split in (("latest", "test"), ("best", "test"), ("latest", "train")):
        result = run(["profile", mnist_run, "--checkpoint", checkpoint, "--split", split, "--samples", "20"])
        assert result.exit_code == 0, result.output
    for checkpoint, split in (("latest", "test"), ("best", "test"), ("latest", "train")):
        report = json.loads((mnist_run / f"profile-{checkpoint}-{split}.json").read_text())
        loaded = f"checkpoint-{checkpoint}.npz, epoch 1/1"
        assert (report["run_dir"], report["checkpoint"], report["dataset"], report["split"]) == \
            (str(mnist_run), loaded, "mnist", split)
        assert (mnist_run / f"profile-{checkpoint}-{split}.png").stat().st_size > 0
        assert f"{mnist_run} ({loaded}), mnist {split} split: 20 samples, T = 4" in titles.pop(0)
    assert not (mnist_run / "profile.json").exists() and not (mnist_run / "profile.png").exists()


# ------------------------------------------------- 6. a run stopped by Ctrl-C
def test_profile_loads_a_run_without_network_npz_from_its_checkpoint(mnist_run):
    (mnist_run / NETWORK_FILE).unlink()
    result = run(["profile", mnist_run, "--samples", "20"])
    assert result.exit_code == 0, result.output
    assert "checkpoint-latest.npz, epoch 1/1" in result.output
    assert json.loads((mnist_run / "profile-latest-test.json").read_text())["samples"] == 20
    forge(mnist_run / CHECKPOINT_LATEST, l0_data=np.full_like(member(mnist_run / CHECKPOINT_LATEST, "l0_data"), np.nan))
    one_line_error(run(["profile", mnist_run, "--checkpoint", "latest"]), "NaN or infinite weights")


def test_a_run_without_the_checkpoint_asked_for_says_why_not_that_it_is_no_run(toy_run, tmp_path):
    out = tmp_path / "net.nir"
    (toy_run / CHECKPOINT_BEST).unlink()  # as after --checkpoints latest, resumed under all with no better epoch
    one_line_error(run(["export", toy_run, out, "--checkpoint", "best"]),
                   "no best checkpoint saved: " f"{toy_run}'s best epoch (1) kept none")
    assert "use --checkpoint latest" in run(["export", toy_run, out, "--checkpoint", "best"]).output
    (toy_run / "metrics.jsonl").write_text("")  # stopped inside its first epoch: only checkpoint-latest
    one_line_error(run(["export", toy_run, out, "--checkpoint", "best"]),
                   f"no best checkpoint yet: {toy_run} has no finished epoch; use --checkpoint latest")
    (toy_run / CHECKPOINT_LATEST).unlink()
    (toy_run / NETWORK_FILE).unlink()
    one_line_error(run(["export", toy_run, out]), f"no checkpoint yet: {toy_run} stopped before it saved one")
    with run_lock(toy_run):  # still training its first epoch: nothing stopped, nothing to train again
        for command in (["export", toy_run, out], ["eval", toy_run], ["export", toy_run, out, "--checkpoint", "best"]):
            one_line_error(run(command), f"no checkpoint yet: {toy_run} is training its first epoch now; try again "
                                         "once it has finished one")
    one_line_error(run(["export", tmp_path / "elsewhere", out]), "elsewhere: no such folder")
    (tmp_path / "elsewhere").mkdir()
    one_line_error(run(["export", tmp_path / "elsewhere", out]), "no checkpoint here; is")
    assert not out.exists()
