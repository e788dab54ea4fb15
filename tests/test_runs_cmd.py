"""Runs as a collection: list, compare and CSV; extending a finished run; which
checkpoints a run keeps; eval at fewer time steps, on the validation split, with
per-sample predictions."""
import csv
import json
import shutil

import numpy as np
import pytest

import evsim.train as train_module
from evsim.checkpoint import CHECKPOINT_BEST, CHECKPOINT_LATEST
from evsim.cli.runs_cmd import read_run
from evsim.data.base import first_steps
from evsim.data.frames import SparseFrames
from evsim.config import TrainConfig
from evsim.errors import ConfigError, DataError
from evsim.runfiles import BESIDE_OPTIONS
from evsim.train import Trainer, resume
from tests.conftest import one_line_error, run
from tests.runs import TINY_MNIST, TINY_MNIST_NETWORK, _without_timing, assert_same_npz, toy_config, toy_dataset

QUIET = dict(progress=False, echo=lambda line: None)


@pytest.fixture
def toy_runs(monkeypatch):
    """resume() loads the toy dataset; training.png is not under test."""
    monkeypatch.setattr(train_module, "_load_announced", lambda config, echo: toy_dataset())
    monkeypatch.setattr("evsim.train.plot_training", lambda *args: None)


def _rows(run_dir):
    return _without_timing([json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()])


def test_extending_a_finished_run_equals_the_longer_run(tmp_path, toy_runs):
    Trainer(toy_config(epochs=3), toy_dataset()).fit(tmp_path / "long", **QUIET)
    Trainer(toy_config(epochs=2), toy_dataset()).fit(tmp_path / "short", **QUIET)
    summary = resume(tmp_path / "short", epochs=3, **QUIET)
    assert summary["epochs"] == 3
    for name in (CHECKPOINT_LATEST, "network.npz"):
        assert_same_npz(tmp_path / "long" / name, tmp_path / "short" / name)
    assert _rows(tmp_path / "long") == _rows(tmp_path / "short")
    assert "epochs = 3" in (tmp_path / "short" / "config.toml").read_text()


def test_extending_needs_more_epochs_than_done(tmp_path, toy_runs):
    Trainer(toy_config(epochs=2), toy_dataset()).fit(tmp_path, **QUIET)
    with pytest.raises(ConfigError, match="has trained 2 epochs; --epochs must be more to extend it, got 1"):
        resume(tmp_path, epochs=1, **QUIET)


def test_cli_resume_takes_epochs_and_checkpoints_but_no_other_option(tmp_path):
    out = tmp_path / "run"
    assert run(["train", *TINY_MNIST, "--epochs", "1", "--checkpoints", "latest", "--out", str(out)]).exit_code == 0
    assert not (out / CHECKPOINT_BEST).exists() and (out / CHECKPOINT_LATEST).exists()
    result = run(["train", "--resume", str(out), "--epochs", "2", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert f"extending {out} from 1 to 2 epochs" in result.output and "epoch   2" in result.output
    assert not (out / CHECKPOINT_BEST).exists()  # the run's own policy is kept
    assert "drop --lr" in one_line_error(run(["train", "--resume", str(out), "--epochs", "3", "--lr", "0.1"]))


def test_no_checkpoints_keeps_the_network_and_metrics_only(tmp_path, toy_runs):
    trainer = Trainer(toy_config(epochs=2), toy_dataset())
    trainer.keep_checkpoints = "none"
    trainer.fit(tmp_path, **QUIET)
    assert not (tmp_path / CHECKPOINT_LATEST).exists() and not (tmp_path / CHECKPOINT_BEST).exists()
    assert (tmp_path / "network.npz").exists() and len(_rows(tmp_path)) > 2
    assert json.loads((tmp_path / "config.json").read_text())["checkpoints"] == "none"
    line = one_line_error(run(["train", "--resume", str(tmp_path)]))
    assert "was trained with --checkpoints none: it has no checkpoint to resume from" in line


def test_runs_list_one_line_per_run_and_csv(tmp_path, toy_runs):
    Trainer(toy_config(epochs=2, structure="none"), toy_dataset()).fit(tmp_path / "group" / "a", **QUIET)
    Trainer(toy_config(epochs=1, val_fraction=0.2), toy_dataset()).fit(tmp_path / "b", **QUIET)
    (tmp_path / "b" / "summary.json").unlink()  # b as a run still going
    (tmp_path / "notes").mkdir()
    result = run(["runs", "list", str(tmp_path), "--csv", str(tmp_path / "list.csv")])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["run", "dataset", "data", "arch", "structure", "epochs", "test", "%", "test@val", "%",
                                "compr.", "%", "date"]
    by_run = {line.split()[0]: line.split() for line in lines[1:-1]}
    assert set(by_run) == {"b", "group/a"}
    assert by_run["group/a"][1:6] == ["toy", "toy", "30-12-4", "none", "2/2"]
    assert by_run["b"][5] == "1/1*"
    rows = list(csv.DictReader((tmp_path / "list.csv").open()))
    assert [row["run"] for row in rows] == ["b", "group/a"] and rows[1]["status"] == "done"
    assert rows[0]["test_acc_at_best_val"] != "" and rows[1]["test_acc_at_best_val"] == ""
    # a finished run's whole time, as its summary (and a sweep's results.csv) gives it
    assert float(rows[1]["wall_s"]) == json.loads((tmp_path / "group" / "a" / "summary.json").read_text())["wall_s"]


def test_runs_list_of_a_missing_folder_or_no_runs(tmp_path):
    assert "is not a folder" in one_line_error(run(["runs", "list", str(tmp_path / "nope")]))
    result = run(["runs", "list", str(tmp_path)])
    assert result.exit_code == 0 and "no runs under" in result.output


@pytest.mark.parametrize("args", [["runs", "list", ""], ["runs", "compare", ""], ["runs", "list", "--csv", ""],
                                  ["runs", "compare", ".", "--plot", ""]])
def test_runs_commands_refuse_an_empty_path(tmp_path, monkeypatch, args):
    """An empty path is not the current folder (as for eval and profile)."""
    monkeypatch.chdir(tmp_path)
    assert "empty" in one_line_error(run(args)).lower()


def test_runs_compare_table_curves_and_metrics_csv(tmp_path, toy_runs):
    Trainer(toy_config(epochs=2, lr=1e-3), toy_dataset()).fit(tmp_path / "a", **QUIET)
    Trainer(toy_config(epochs=3, lr=2e-3), toy_dataset()).fit(tmp_path / "b", **QUIET)
    result = run(["runs", "compare", str(tmp_path / "a"), str(tmp_path / "b"), "--plot", str(tmp_path / "c.pdf"),
                  "--csv", str(tmp_path / "m.csv")])
    assert result.exit_code == 0, result.output
    header = result.output.splitlines()[0].split()
    assert header[:4] == ["run", "data", "epochs", "lr"]  # the data always, then only the options that differ
    assert "run_id" not in header  # different in every run, and no option
    assert result.output.splitlines()[2].split()[1] == "toy"  # each run's data source
    assert (tmp_path / "c.pdf").read_bytes().startswith(b"%PDF")
    rows = list(csv.DictReader((tmp_path / "m.csv").open()))
    assert [(r["run"][-1], r["epoch"]) for r in rows] == [("a", "1"), ("a", "2"), ("b", "1"), ("b", "2"), ("b", "3")]
    assert {(r["dataset"], r["data_source"]) for r in rows} == {("toy", "toy")}
    assert "is not a run folder" in one_line_error(run(["runs", "compare", str(tmp_path / "a"), str(tmp_path)]))


def test_first_steps_of_frames_are_the_first_frames():
    frames = np.random.default_rng(0).integers(0, 3, (5, 4, 2, 3, 3)).astype(np.uint8)
    store = SparseFrames.from_dense(frames)[np.array([3, 1, 4])]
    np.testing.assert_array_equal(store.first_steps(2).to_dense(), frames[[3, 1, 4], :2])
    with pytest.raises(DataError, match="hold 4 time steps; cannot take the first 5"):
        store.first_steps(5)


def test_first_steps_refuses_more_steps_than_the_frames_hold():
    from evsim.data.base import Dataset, Split

    frames = SparseFrames.from_dense(np.ones((2, 4, 1, 2, 2), np.uint8))
    split = Split(frames, np.array([0, 1]))
    dataset = Dataset("x", split, split, 2, (1, 2, 2), "frames", "real", 4)
    assert first_steps(dataset, 3).test.inputs.n_steps == 3 and first_steps(dataset, 3).time_steps == 3
    with pytest.raises(ConfigError, match="frames hold 4 steps; give at most 4"):
        first_steps(dataset, 6)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    result = run(["train", *TINY_MNIST, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_eval_at_fewer_time_steps_with_per_sample_predictions(tiny_run, tmp_path):
    result = run(["eval", str(tiny_run), "--time-steps", "2", "--json", str(tmp_path / "e.json")])
    assert result.exit_code == 0, result.output
    assert "T = 2" in result.output and (tiny_run / "confusion-latest-test-T2.png").exists()
    summary = json.loads((tmp_path / "e.json").read_text())
    predictions = summary["predictions"]
    assert summary["time_steps"] == 2 and len(predictions) == summary["samples"] == 1000
    assert all(max(p["counts"]) <= 2 for p in predictions)  # at most one spike per step
    correct = sum(p["label"] == p["predicted"] for p in predictions)
    assert correct / len(predictions) == pytest.approx(summary["accuracy"])
    assert "leave out --slicing" in one_line_error(run(["eval", str(tiny_run), "--slicing", "time"]))


def test_eval_on_the_validation_split(tiny_run):
    result = run(["eval", str(tiny_run), "--split", "val"])
    assert result.exit_code == 0, result.output
    assert "val split: 400 samples" in result.output


def test_eval_plot_option_writes_the_suffix_format(tiny_run, tmp_path):
    result = run(["eval", str(tiny_run), "--plot", str(tmp_path / "c.svg")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "c.svg").read_bytes().startswith(b"<?xml")
    assert "cannot write a figure as .gif" in one_line_error(run(["eval", str(tiny_run), "--plot",
                                                                  str(tmp_path / "c.gif")]))


def _config_json(run_dir, **changes):
    from evsim.config import TrainConfig

    run_dir.mkdir()
    config = TrainConfig(dataset="mnist", hidden=(800,), epochs=1, dev_interval=4, **changes)
    (run_dir / "config.json").write_text(json.dumps({**config.to_dict(), "data_source": "x"}))


def test_runs_list_shows_an_arch_run_by_its_architecture_string(tmp_path):
    _config_json(tmp_path / "conv", arch="1x28x28-4C5-AP4-3-10")
    assert read_run(tmp_path / "conv")["arch"] == "1x28x28-4C5-AP4-3-10"
    _config_json(tmp_path / "mlp")
    assert read_run(tmp_path / "mlp")["arch"] == "?-800-?"  # a run folder from before config.json held the network


def test_a_run_without_its_network_file_yet_shows_the_network_training_built(tiny_run, tmp_path):
    saved = json.loads((tiny_run / "config.json").read_text())
    assert saved["network"] == "784-24-10"
    assert set(saved) - set(TrainConfig().to_dict()) == set(BESIDE_OPTIONS)  # what sweeps and compare leave out
    started = tmp_path / "started"
    started.mkdir()
    (started / "config.json").write_bytes((tiny_run / "config.json").read_bytes())
    assert read_run(started)["arch"] == "784-24-10" and read_run(started)["status"] == "no epoch yet"


def test_runs_list_shows_a_folder_whose_network_file_is_damaged(tmp_path):
    """A listing reads what it can of every run folder: a network.npz that is not a zip
    archive leaves the architecture unknown, not a traceback."""
    run_dir = tmp_path / "broken"
    _config_json(run_dir)
    (run_dir / "network.npz").write_bytes(b"not a zip archive")
    assert read_run(run_dir)["arch"] == "?-800-?"
    result = run(["runs", "list", str(tmp_path)])
    assert result.exit_code == 0 and "broken" in result.output and "Traceback" not in result.output


def test_a_run_on_the_substitute_evaluates_after_its_data_folder_is_gone(tmp_path):
    folder = tmp_path / "mnist-files"
    folder.mkdir()  # holds no IDX files: the run trains on the 5,000-digit sample
    out = tmp_path / "run"
    assert run(["train", *TINY_MNIST_NETWORK, "--epochs", "1", "--structure", "none", "--data-dir", str(folder),
                "--out", str(out)]).exit_code == 0
    folder.rmdir()
    for command in (["eval"], ["profile"]):
        result = run([*command, str(out)])
        assert result.exit_code == 0, result.output
        assert f"NOTE: {folder}, the folder this run was given, no longer exists" in result.output
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "data_source": "real"}))
    assert f"trained on real data in {folder}, which no longer exists; restore that folder" in \
        one_line_error(run(["eval", str(out)]))


@pytest.fixture
def toy_run(tmp_path, toy_runs):
    Trainer(toy_config(epochs=1, structure="none"), toy_dataset()).fit(tmp_path / "template", **QUIET)
    return tmp_path / "template"


def _copy_run(template, to, **changes):
    """A copy of the run ``template`` whose config.json has ``changes`` (``data`` merged in)."""
    shutil.copytree(template, to)
    config = json.loads((to / "config.json").read_text())
    config.update({k: v for k, v in changes.items() if k != "data"}, data={**config["data"], **changes.get("data", {})})
    (to / "config.json").write_text(json.dumps(config))
    return to


def run_args(args):
    return run([str(arg) for arg in args])


def _compare_rows(result):
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if not line.startswith(("NOTE", "wrote"))]
    return [line.split() for line in lines]


def test_runs_list_searches_five_levels_down_and_says_where_it_stopped(tmp_path, toy_run):
    _copy_run(toy_run, tmp_path / "nest" / "a" / "b" / "c" / "run")  # four levels down
    _copy_run(toy_run, tmp_path / "nest" / "d" / "1" / "2" / "3" / "4" / "run")  # six
    result = run_args(["runs", "list", str(tmp_path / "nest")])
    assert result.exit_code == 0, result.output
    assert [line.split()[0] for line in result.output.splitlines()[1:-1]] == ["a/b/c/run"]
    deepest = tmp_path / "nest" / "d" / "1" / "2" / "3" / "4"
    assert result.output.splitlines()[-1] == (
        f"NOTE: searched 5 levels below {tmp_path / 'nest'}, not the folders inside {deepest}; for runs deeper "
        f"down, give a folder nearer them: evsim runs list {deepest}")
    assert run_args(["runs", "list", deepest]).output.splitlines()[1].split()[0] == "run"  # the fix it gives


def test_runs_compare_tells_folder_datasets_apart_by_their_folder(tmp_path, toy_run):
    a = _copy_run(toy_run, tmp_path / "a", dataset="folder", data={"data_dir": "/data/one"})
    b = _copy_run(toy_run, tmp_path / "b", dataset="folder", data={"data_dir": "/data/two"})
    rows = _compare_rows(run_args(["runs", "compare", a, b, "--plot", tmp_path / "c.png"]))
    assert rows[0][:3] == ["run", "data", "data_dir"] and [row[2] for row in rows[1:]] == ["/data/one", "/data/two"]
    # elsewhere a data folder is where the data lives, not which data: a moved dataset is the same
    c = _copy_run(toy_run, tmp_path / "c", data={"data_dir": "/data/one"})
    d = _copy_run(toy_run, tmp_path / "d", data={"data_dir": "/moved/one"})
    result = run_args(["runs", "compare", c, d, "--plot", tmp_path / "c.png"])
    assert "data_dir" not in result.output and "(the runs have the same options)" in result.output


def test_runs_compare_leaves_out_hidden_for_an_arch_run_and_compares_a_run_given_twice_once(tmp_path, toy_run):
    dense = _copy_run(toy_run, tmp_path / "dense", hidden=[12], arch="")
    conv = _copy_run(toy_run, tmp_path / "conv", hidden=[800], arch="1x5x6-2C3-AP2-4")
    result = run_args(["runs", "compare", dense, conv, tmp_path / "." / "dense", "--plot", tmp_path / "c.png"])
    rows = _compare_rows(result)
    assert rows[0][:4] == ["run", "data", "arch", "hidden"] and "[800]" not in result.output  # --arch gives it
    assert rows[1][:3] == [str(dense), "toy", "[12]"] and rows[2][:4] == [str(conv), "toy", "1x5x6-2C3-AP2-4", "-"]
    assert len(rows) == 3 and "NOTE: 1 of the runs given repeat another; each run is compared once" in result.output


def test_runs_compare_shows_the_seed_the_emulations_seed_apart(tmp_path, toy_run):
    """The data section's seed (the emulation's, always 0) overwrote the run's seed."""
    a = _copy_run(toy_run, tmp_path / "a", seed=0)
    b = _copy_run(toy_run, tmp_path / "b", seed=1)
    rows = _compare_rows(run_args(["runs", "compare", a, b, "--plot", tmp_path / "c.png"]))
    assert rows[0][:3] == ["run", "data", "seed"] and [row[2] for row in rows[1:]] == ["0", "1"]
    c = _copy_run(toy_run, tmp_path / "c", data={"seed": 3})
    rows = _compare_rows(run_args(["runs", "compare", a, c, "--plot", tmp_path / "c.png"]))
    assert rows[0][:3] == ["run", "data", "data.seed"] and [row[2] for row in rows[1:]] == ["0", "3"]


def test_runs_compare_leaves_out_options_a_run_does_not_read(tmp_path, toy_run):
    """SD-SNN's constants and target_sparsity, recorded by every run, told an SD-SNN run
    from one without structure as if they mattered; where shown, a run that does not read
    one has '-'."""
    none = _copy_run(toy_run, tmp_path / "none", structure="none", target_sparsity=0.5)
    magnitude = _copy_run(toy_run, tmp_path / "magnitude", structure="magnitude", target_sparsity=0.37)
    sdsnn = _copy_run(toy_run, tmp_path / "sdsnn", structure="sdsnn",
                      sdsnn={**json.loads((toy_run / "config.json").read_text())["sdsnn"], "rho_init": 30.0})
    rows = _compare_rows(run_args(["runs", "compare", none, magnitude, sdsnn, "--plot", tmp_path / "c.png"]))
    assert rows[0][:3] == ["run", "data", "structure"] and rows[0][3] == "epochs"
    other = _copy_run(toy_run, tmp_path / "other", structure="sdsnn",
                      sdsnn={**json.loads((toy_run / "config.json").read_text())["sdsnn"], "rho_init": 40.0})
    rows = _compare_rows(run_args(["runs", "compare", none, sdsnn, other, "--plot", tmp_path / "c.png"]))
    assert rows[0][:4] == ["run", "data", "rho_init", "structure"]
    assert [row[2] for row in rows[1:]] == ["-", "30.0", "40.0"]


def test_runs_compare_draws_validation_hollow(tmp_path, toy_run, monkeypatch):
    """A one-epoch run's validation point lay under its test point, the same filled dot."""
    faces = []
    monkeypatch.setattr("evsim.cli.runs_cmd.save_figure", lambda fig, path: faces.extend(
        (line.get_linestyle(), line.get_markerfacecolor()) for line in fig.axes[0].get_lines()))
    b = _copy_run(toy_run, tmp_path / "b", seed=1)
    rows = [json.loads(line) for line in (b / "metrics.jsonl").read_text().splitlines()]
    (b / "metrics.jsonl").write_text("".join(json.dumps({**row, "val_acc": 0.5} if row["type"] == "epoch" else row)
                                             + "\n" for row in rows))
    _compare_rows(run_args(["runs", "compare", toy_run, b, "--plot", tmp_path / "c.png"]))
    assert {face for style, face in faces if style == "--"} == {"none"}
    assert "none" not in {face for style, face in faces if style == "-"}


def test_runs_compare_says_which_run_trained_on_which_data(tmp_path, toy_run, monkeypatch):
    """Results on the emulation or the 5,000-digit sample are never to be read as the real
    dataset's: the table, the CSV and the figure's legend name each run's data."""
    from evsim import plots

    a = _copy_run(toy_run, tmp_path / "a", data_source="mnist-5k")
    b = _copy_run(toy_run, tmp_path / "b", data_source="real")
    legends = []
    draw = plots.save_figure
    monkeypatch.setattr("evsim.cli.runs_cmd.save_figure", lambda fig, path: (
        legends.extend(t.get_text() for legend in fig.legends for t in legend.get_texts()), draw(fig, path)))
    result = run_args(["runs", "compare", a, b, "--plot", tmp_path / "c.png", "--csv", tmp_path / "m.csv"])
    rows = _compare_rows(result)
    assert [row[:2] for row in rows[1:3]] == [[str(a), "mnist-5k"], [str(b), "real"]]
    assert "(the runs have the same options; their data differ)" in result.output
    assert legends == ["a (mnist-5k)", "b (real)"]
    assert {(r["run"], r["data_source"]) for r in csv.DictReader((tmp_path / "m.csv").open())} == \
        {(str(a), "mnist-5k"), (str(b), "real")}


def test_a_run_training_now_is_not_called_stale_by_export_or_eval(tmp_path, toy_run, monkeypatch):
    """A run training while it was read wrote its next epoch's metrics between the reader's
    loading of checkpoint-latest.npz and of metrics.jsonl: the live checkpoint was called
    stale, with the advice to delete it."""
    import evsim.cli.runs as runs_module

    load = runs_module.load_checkpoint

    def load_then_train_an_epoch(path):
        state = load(path)
        rows = [json.loads(line) for line in (toy_run / "metrics.jsonl").read_text().splitlines()]
        last = [row for row in rows if row["type"] == "epoch"][-1]
        with (toy_run / "metrics.jsonl").open("a") as handle:
            handle.write(json.dumps({**last, "epoch": last["epoch"] + 1}) + "\n")
        return state

    monkeypatch.setattr(runs_module, "load_checkpoint", load_then_train_an_epoch)
    result = run_args(["export", toy_run, "--format", "nir", tmp_path / "net.nir"])
    assert result.exit_code == 0 and "stale" not in result.output, result.output
