"""A run is used on its own data only: eval, profile, inspect and --resume refuse data
files that changed since it trained (by the fingerprint config.json records), and load
the data source it trained on unless --source asks for another. Its data folder may move
(--data-dir says where): the fingerprint names files relative to their folder."""
import json
import shutil

import numpy as np
import pytest

from evsim.data.cache import fingerprint_change
from tests.conftest import one_line_error, run
from tests.test_hostile_runs import last_line_error
from tests.runs import TINY_MNIST_NETWORK
from tests.test_data_static import make_idx

FOLDER_NETWORK = ["--hidden", "8", "--time-steps", "4", "--threads", "1", "--no-progress", "--batch-size", "8",
                  "--val-fraction", "0"]
CHANGED = "is not what"


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.delenv("EVSIM_DATA", raising=False)
    monkeypatch.setenv("EVSIM_CACHE", str(tmp_path / "cache"))


def write_folder(root, per_class, start=0, seed=0):
    """Recordings ``r<k>.npy`` of 3 classes on an 8x8 sensor (events of class c near x = 2c)."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(("alpha", "beta", "gamma")):
        (root / name).mkdir(parents=True, exist_ok=True)
        for k in range(start, start + per_class):
            n = 60
            x = np.clip(rng.normal(1 + 3 * c, 0.7, n).round(), 0, 7)
            events = np.stack([x, rng.integers(0, 8, n), np.sort(rng.integers(0, 10_000, n)), rng.integers(0, 2, n)], 1)
            np.save(root / name / f"r{k:02d}.npy", events.astype(np.int64))


@pytest.fixture
def folder_run(tmp_path):
    """A finished run on a folder of 3 x 10 recordings: (the run folder, its data folder)."""
    write_folder(tmp_path / "data", 10)
    result = run(["train", "--dataset", "folder", "--data-dir", str(tmp_path / "data"), *FOLDER_NETWORK,
                  "--epochs", "2", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    return tmp_path / "run", tmp_path / "data"


def files_of(folder) -> dict:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_fingerprint_change_names_what_changed():
    then = {"train": {"files": 24, "bytes": 2400, "contents": "a"}, "test": {"files": 6, "bytes": 600, "contents": "b"}}
    assert fingerprint_change(then, then) is None
    now = {"train": {"files": 26, "bytes": 2600, "contents": "c"}, "test": {"files": 6, "bytes": 600, "contents": "b"}}
    assert fingerprint_change(then, now) == "train 24 -> 26 recordings"
    now = {"train": {"files": 24, "bytes": 2500, "contents": "c"}, "test": {"files": 6, "bytes": 600, "contents": "d"}}
    assert fingerprint_change(then, now) == ("train 2,400 -> 2,500 bytes in 24 recordings, test 6 recordings of the "
                                             "same size as before, other contents, names or labels")
    assert fingerprint_change(then, {"train": then["train"]}) == "test split gone"


def test_a_fingerprint_of_full_paths_is_compared_by_count_and_size():
    """Runs saved before names were relative recorded hashes of full paths: their contents
    cannot be compared, their counts and sizes can."""
    then = {"train": {"files": 24, "bytes": 2400, "contents": "a"}}
    now = {"train": {"files": 24, "bytes": 2400, "contents": "c", "names": "relative"}}
    assert fingerprint_change(then, now) is None
    assert fingerprint_change(then, {"train": {**now["train"], "bytes": 2401}}) == \
        "train 2,400 -> 2,401 bytes in 24 recordings"
    assert fingerprint_change(now, {"train": {**now["train"], "contents": "d"}}) == \
        "train 24 recordings of the same size as before, other contents, names or labels"


def test_the_same_recordings_elsewhere_have_one_fingerprint_and_one_cache_entry(tmp_path):
    from evsim.config import DataOptions
    from evsim.data import load_dataset

    write_folder(tmp_path / "a" / "data", 4)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    (tmp_path / "b" / "x").mkdir()  # b/x/../data: another spelling of b/data
    loaded = [load_dataset("folder", DataOptions(data_dir=folder, time_steps=4, cache_dir=tmp_path / "cache"))
              for folder in (tmp_path / "a" / "data", tmp_path / "b" / "x" / ".." / "data")]
    assert loaded[0].meta["fingerprint"] == loaded[1].meta["fingerprint"]
    assert loaded[0].meta["cache"] == loaded[1].meta["cache"]
    assert [d.meta["root"] for d in loaded] == [str(tmp_path / "a" / "data"), str(tmp_path / "b" / "x" / ".." / "data")]
    assert len(list((tmp_path / "cache" / "frames").iterdir())) == 1
    np.testing.assert_array_equal(loaded[0].train.inputs[:], loaded[1].train.inputs[:])


def test_a_run_records_the_fingerprint_of_its_data(folder_run):
    run_dir, data = folder_run
    recorded = json.loads((run_dir / "config.json").read_text())["data_fingerprint"]
    assert {split: f["files"] for split, f in recorded.items()} == {"train": 24, "test": 6}
    assert sum(f["bytes"] for f in recorded.values()) == sum(p.stat().st_size for p in data.rglob("*.npy"))


@pytest.mark.parametrize("command", ["eval", "profile", "inspect"])
def test_eval_profile_and_inspect_refuse_a_data_folder_that_changed(folder_run, command):
    run_dir, data = folder_run
    assert run([command, str(run_dir)]).exit_code == 0
    before = files_of(run_dir)
    write_folder(data, 4, start=10, seed=1)  # 12 more recordings: a new drawn test split
    line = one_line_error(run([command, str(run_dir)]))
    assert line == (f"Error: the data in {data} {CHANGED} {run_dir} trained on (train 24 -> 34 recordings, test 6 -> "
                    "8 recordings); its test split would hold other samples, possibly some it trained on; give the "
                    "folder of the run's data (restored, or --data-dir where it is now), or train a new run")
    assert files_of(run_dir) == before  # the run's confusion matrix, profile and figure untouched
    for extra in data.glob("*/r1[0-3].npy"):
        extra.unlink()
    assert run([command, str(run_dir)]).exit_code == 0  # restored


def test_a_recording_changed_in_place_is_refused(folder_run):
    run_dir, data = folder_run
    shutil.copyfile(data / "beta" / "r01.npy", data / "alpha" / "r03.npy")  # same size, other events
    assert "same size as before, other contents" in one_line_error(run(["eval", str(run_dir)]))


def test_a_run_saved_without_a_fingerprint_is_evaluated_as_before(folder_run):
    run_dir, data = folder_run
    values = json.loads((run_dir / "config.json").read_text())
    del values["data_fingerprint"]
    (run_dir / "config.json").write_text(json.dumps(values))
    write_folder(data, 1, start=10, seed=1)
    result = run(["eval", str(run_dir)])
    assert result.exit_code == 0 and "test split: 7 samples" in result.output, result.output


def test_a_damaged_fingerprint_is_one_line(folder_run):
    run_dir, _ = folder_run
    values = json.loads((run_dir / "config.json").read_text())
    values["data_fingerprint"]["train"]["files"] = "24"
    (run_dir / "config.json").write_text(json.dumps(values))
    line = one_line_error(run(["eval", str(run_dir)]))
    assert "config.json: data_fingerprint is" in line and "restore the file" in line


@pytest.mark.parametrize("per_class", [1, 4])  # 4 more per class change the batches per epoch too
def test_resume_refuses_changed_data_naming_the_change(folder_run, per_class):
    run_dir, data = folder_run
    before = files_of(run_dir)
    write_folder(data, per_class, start=10, seed=1)
    result = run(["train", "--resume", str(run_dir), "--epochs", "3"])
    line = result.output.splitlines()[-1]  # after "data: folder (real), 34 train / 8 test samples"
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert f"the data in {data} {CHANGED} {run_dir} trained on (train 24 -> " in line
    assert "resuming would go on with other training samples" in line and "batches_seen" not in line
    assert "extending" not in result.output  # nothing is extended on data that is not the run's
    assert files_of(run_dir) == before
    for extra in data.glob("*/r1*.npy"):
        extra.unlink()
    result = run(["train", "--resume", str(run_dir), "--epochs", "3"])
    assert result.exit_code == 0 and "epoch   3" in result.output, result.output
    assert f"extending {run_dir} from 2 to 3 epochs" in result.output


# ------------------------------------------------------------------ the data source


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    """A finished tiny run on the 5,000-digit MNIST sample (no data folder)."""
    base = tmp_path_factory.mktemp("mnist-5k")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("EVSIM_DATA", raising=False)
        result = run(["train", *TINY_MNIST_NETWORK, "--out", str(base / "run")])
    assert result.exit_code == 0 and "data mnist-5k" in result.output, result.output
    return base / "run"


def test_a_substitute_run_is_evaluated_on_its_substitute_whatever_evsim_data_holds(sample_run, tmp_path,
                                                                                   monkeypatch):
    run_dir = shutil.copytree(sample_run, tmp_path / "run")
    own = run(["eval", str(run_dir)])
    assert own.exit_code == 0 and "data mnist-5k" in own.output
    figure = (run_dir / "confusion-latest-test.png").read_bytes()
    make_idx(tmp_path / "idx")
    monkeypatch.setenv("EVSIM_DATA", str(tmp_path / "idx"))
    again = run(["eval", str(run_dir)])
    assert again.exit_code == 0 and again.output.splitlines()[1:3] == own.output.splitlines()[1:3], again.output
    other = run(["eval", str(run_dir), "--source", "real"])
    assert other.exit_code == 0, other.output
    assert "NOTE: " in other.output and "trained on mnist-5k data; these results are on real data" in other.output
    assert "test split: 4 samples" in other.output and "wrote " + str(run_dir / "confusion-latest-test-real.png") \
        in other.output
    assert (run_dir / "confusion-latest-test.png").read_bytes() == figure  # the run's own figure is its own data's
    for command, written in (("profile", ("profile-latest-test-real.json", "profile-latest-test-real.png")),
                             ("inspect", ("inspect-latest-test-real.png",))):
        result = run([command, str(run_dir), "--source", "real"])
        assert result.exit_code == 0 and "trained on mnist-5k data" in result.output, result.output
        assert all((run_dir / name).is_file() for name in written)
    assert not (run_dir / "profile-latest-test.json").exists() and not (run_dir / "inspect-latest-test.png").exists()
    summary = json.loads((run_dir / "profile-latest-test-real.json").read_text())
    assert summary["data_source"] == "real"


def test_a_substitute_run_whose_data_folder_now_holds_real_data_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run(["train", *TINY_MNIST_NETWORK, "--epochs", "1", "--data-dir", str(tmp_path / "empty"),
                  "--out", str(tmp_path / "run")])
    assert result.exit_code == 0 and "data mnist-5k" in result.output, result.output
    make_idx(tmp_path / "empty")
    line = one_line_error(run(["eval", str(tmp_path / "run")]))
    assert "trained on mnist-5k data, but" in line and "now holds real data; give --source emulated" in line
    result = run(["eval", str(tmp_path / "run"), "--source", "emulated"])
    assert result.exit_code == 0 and "data mnist-5k" in result.output and "NOTE: using" in result.output


def test_a_run_takes_no_dataset_option_but_time_steps_source_and_data_dir(sample_run):
    line = one_line_error(run(["profile", str(sample_run), "--crop"]))
    assert "leave out --crop" in line


# ------------------------------------------------------------------ a data folder that moved


@pytest.mark.parametrize("command", ["eval", "profile", "inspect"])
def test_a_run_whose_data_folder_moved_runs_with_its_new_place(folder_run, tmp_path, command):
    run_dir, data = folder_run
    own = run([command, str(run_dir)])
    assert own.exit_code == 0, own.output
    moved = tmp_path / "elsewhere" / "data"
    moved.parent.mkdir()
    data.rename(moved)
    line = one_line_error(run([command, str(run_dir)]))
    assert line == (f"Error: {run_dir} trained on real data in {data}, which no longer exists; restore that folder, "
                    f"or give its new place: evsim {command} {run_dir} --data-dir NEW_PLACE")
    again = run([command, str(run_dir), "--data-dir", str(moved)])
    assert again.exit_code == 0, again.output
    if command == "eval":
        assert again.output.splitlines()[:3] == own.output.splitlines()[:3]
    assert "Error: " + f"{tmp_path / 'nowhere'} (--data-dir) does not exist; give the folder that holds the data " \
        f"{run_dir} trained on" == one_line_error(run([command, str(run_dir), "--data-dir", str(tmp_path / "nowhere")]))


def test_a_moved_copy_with_other_labels_is_refused(folder_run, tmp_path):
    run_dir, data = folder_run
    copy = shutil.copytree(data, tmp_path / "copy")
    (copy / "alpha" / "r00.npy").rename(copy / "beta" / "r99.npy")
    (copy / "beta" / "r00.npy").rename(copy / "alpha" / "r99.npy")
    line = one_line_error(run(["eval", str(run_dir), "--data-dir", str(copy)]))
    assert f"the data in {copy} {CHANGED} {run_dir} trained on (train" in line or \
        f"the data in {copy} {CHANGED} {run_dir} trained on (test" in line


def test_resume_takes_the_data_folder_where_it_moved_and_records_it(folder_run, tmp_path):
    run_dir, data = folder_run
    moved = data.rename(tmp_path / "moved")
    result = run(["train", "--resume", str(run_dir), "--epochs", "3"])
    assert result.exit_code == 2 and result.output.splitlines()[-1] == (
        f"Error: {run_dir} trained on real data in {data}, which no longer exists; restore that folder, or give its "
        f"new place: evsim train --resume {run_dir} --data-dir NEW_PLACE")
    result = run(["train", "--resume", str(run_dir), "--epochs", "3", "--data-dir", str(moved)])
    assert result.exit_code == 0 and "epoch   3" in result.output, result.output
    assert json.loads((run_dir / "config.json").read_text())["data"]["data_dir"] == str(moved)
    assert f'data_dir = "{moved}"' in (run_dir / "config.toml").read_text()
    assert run(["eval", str(run_dir)]).exit_code == 0  # the run now names its new place


def test_resume_on_the_moved_data_is_the_run_uninterrupted(tmp_path):
    write_folder(tmp_path / "data", 10)
    options = ["--dataset", "folder", *FOLDER_NETWORK, "--epochs", "2"]
    assert run(["train", *options, "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "whole")]).exit_code == 0
    assert run(["train", *options, "--data-dir", str(tmp_path / "data"), "--epochs", "1",
                "--out", str(tmp_path / "half")]).exit_code == 0
    moved = (tmp_path / "data").rename(tmp_path / "moved")
    assert run(["train", "--resume", str(tmp_path / "half"), "--epochs", "2", "--data-dir", str(moved)]).exit_code == 0

    def rows(run_dir):
        return [{k: v for k, v in json.loads(line).items() if not k.endswith("_s")}
                for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows(tmp_path / "half") == rows(tmp_path / "whole")



# ------------------------------------------------------------------ what a moved data folder must hold


@pytest.fixture
def idx_run(tmp_path):
    """A finished run on IDX files (real MNIST's format): (the run folder, its data folder)."""
    make_idx(tmp_path / "idx", n_train=40, n_test=10)
    result = run(["train", *TINY_MNIST_NETWORK, "--epochs", "1", "--data-dir", str(tmp_path / "idx"),
                  "--val-fraction", "0", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0 and "data real" in result.output, result.output
    return tmp_path / "run", tmp_path / "idx"


def test_an_mnist_run_on_moved_files_takes_the_same_files_only(idx_run, tmp_path):
    """MNIST recorded no fingerprint: any folder given as its data's new place was taken,
    other labels included (accuracy 2 % against 52 %, the run's own figure overwritten)."""
    run_dir, idx = idx_run
    recorded = json.loads((run_dir / "config.json").read_text())["data_fingerprint"]
    assert {split: f["files"] for split, f in recorded.items()} == {"train": 2, "test": 2}
    shutil.copytree(idx, tmp_path / "same")
    assert run(["eval", str(run_dir), "--data-dir", str(tmp_path / "same")]).exit_code == 0
    make_idx(tmp_path / "other", n_train=40, n_test=10, seed=1)
    for command in (["eval", str(run_dir)], ["train", "--resume", str(run_dir), "--epochs", "2"]):
        line = last_line_error(run([*command, "--data-dir", str(tmp_path / "other")]))
        assert f"the data in {tmp_path / 'other'} {CHANGED} {run_dir} trained on" in line


def test_a_folder_without_a_real_runs_files_is_named(idx_run, tmp_path):
    run_dir, _ = idx_run
    (tmp_path / "empty").mkdir()
    for command in (["eval", str(run_dir)], ["train", "--resume", str(run_dir), "--epochs", "2"]):
        line = last_line_error(run([*command, "--data-dir", str(tmp_path / "empty")]))
        assert line.startswith((f"Error: full MNIST not found in {tmp_path / 'empty'}; put train-images-idx3-ubyte",
                                f"Error: {tmp_path / 'empty'} (--data-dir) holds no mnist files; give the folder"))


def test_a_run_without_a_recorded_fingerprint_takes_no_new_place(idx_run, tmp_path):
    run_dir, idx = idx_run
    values = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text(json.dumps({**values, "data_fingerprint": None}))
    line = one_line_error(run(["eval", str(run_dir), "--data-dir", str(idx)]))
    assert "recorded no fingerprint of its data files" in line and f"so {idx} cannot be checked" in line


def test_the_new_place_a_resume_records_serves_the_checkpoints_it_did_not_rewrite(idx_run, tmp_path):
    """A finished run resumed with --data-dir trains nothing: config.json named the new
    place, its checkpoints the old one, and eval and a second resume looked there."""
    run_dir, idx = idx_run
    moved = idx.rename(tmp_path / "moved")
    result = run(["train", "--resume", str(run_dir), "--data-dir", str(moved)])
    assert result.exit_code == 0 and "nothing left to train" in result.output, result.output
    for command in (["eval", str(run_dir)], ["eval", str(run_dir), "--checkpoint", "best"],
                    ["train", "--resume", str(run_dir), "--epochs", "2"]):
        result = run(command)
        assert result.exit_code == 0, (command, result.output)


def test_resume_of_a_run_without_a_data_folder_ignores_evsim_data(tmp_path, monkeypatch):
    """The run folded $EVSIM_DATA into its --data-dir when it trained: resume read the real
    files there and refused the run ('the data found now is real')."""
    out = tmp_path / "run"
    assert run(["train", *TINY_MNIST_NETWORK, "--epochs", "1", "--out", str(out)]).exit_code == 0
    make_idx(tmp_path / "idx")
    monkeypatch.setenv("EVSIM_DATA", str(tmp_path / "idx"))
    result = run(["train", "--resume", str(out), "--epochs", "2"])
    assert result.exit_code == 0 and "epoch   2" in result.output, result.output


def _as_saved_before_names_were_relative(run_dir, data, tmp_path):
    """config.json as an evsim before relative names wrote it: full-path hashes, no data_root."""
    from evsim.config import DataOptions
    from evsim.data import load_dataset
    from evsim.data.cache import files_fingerprint

    values = json.loads((run_dir / "config.json").read_text())
    listing = load_dataset("folder", DataOptions(data_dir=data, time_steps=4, cache_dir=tmp_path / "cache")).meta[
        "listing"]
    values["data_fingerprint"] = {split: files_fingerprint(*listing[split], relative=False) for split in listing}
    del values["data_root"]
    (run_dir / "config.json").write_text(json.dumps(values))


def test_a_run_saved_before_names_were_relative_is_still_checked_exactly_where_its_data_is(folder_run, tmp_path):
    """Such runs were compared by count and size only: a recording changed in place with
    its size kept passed, and a resume then recorded the changed data as the run's."""
    run_dir, data = folder_run
    _as_saved_before_names_were_relative(run_dir, data, tmp_path)
    assert run(["eval", str(run_dir)]).exit_code == 0
    shutil.copyfile(data / "beta" / "r01.npy", data / "alpha" / "r03.npy")  # same size, other events
    assert "same size as before, other contents" in one_line_error(run(["eval", str(run_dir)]))
    assert "same size as before, other contents" in last_line_error(run(["train", "--resume", str(run_dir),
                                                                          "--epochs", "3"]))


def test_a_run_saved_before_names_were_relative_takes_its_moved_data_by_count_and_size(folder_run, tmp_path):
    run_dir, data = folder_run
    _as_saved_before_names_were_relative(run_dir, data, tmp_path)
    moved = data.rename(tmp_path / "moved")
    assert run(["eval", str(run_dir), "--data-dir", str(moved)]).exit_code == 0
    (moved / "alpha" / "r00.npy").unlink()
    assert "train 24 -> 23 recordings" in one_line_error(run(["eval", str(run_dir), "--data-dir", str(moved)]))


def test_a_sensor_txt_added_to_a_folder_dataset_is_other_data(folder_run):
    """It changes the frames, but was not in the fingerprint: eval and resume went on,
    on other frames, without a word."""
    run_dir, data = folder_run
    (data / "sensor.txt").write_text("16 16\n")
    line = one_line_error(run(["eval", str(run_dir)]))
    assert f"the data in {data} {CHANGED} {run_dir} trained on (train framed for sensor 8x8x2 -> 16x16x2" in line, line
    (data / "sensor.txt").unlink()
    assert run(["eval", str(run_dir)]).exit_code == 0
