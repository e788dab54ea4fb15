"""evsim runs list / compare on run folders with a damaged config.json, metrics.jsonl or
summary.json: the bad run is named with its file and problem, the others are shown."""
import json
import shutil

import pytest

from evsim.checkpoint import check_metric_rows
from evsim.errors import CheckpointError
from evsim.runfiles import read_metrics, read_run_config, read_summary
from evsim.train import Trainer
from tests.conftest import one_line_error, run
from tests.runs import toy_config, toy_dataset


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    """A finished toy run with a validation split (its files are what the damage starts from)."""
    out = tmp_path_factory.mktemp("runs") / "good"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("evsim.train.plot_training", lambda *args: None)
        Trainer(toy_config(epochs=2, val_fraction=0.2), toy_dataset()).fit(out, progress=False, echo=lambda line: None)
    return out


def _rows_with(path, **changes):
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for row in rows:
        if row["type"] == "epoch":
            row.update(changes)
            for key in [key for key, value in changes.items() if value is ...]:
                del row[key]
    return "".join(json.dumps(row) + "\n" for row in rows)


DAMAGE = {  # name: (file, new content from the good file's path, what the message says)
    "metrics binary": ("metrics.jsonl", lambda p: b"\x00\xff\xfe binary", "line 1 is not JSON: UnicodeDecodeError"),
    "metrics number line": ("metrics.jsonl", lambda p: p.read_text() + "3\n",
                            "must be an epoch or development row, got 3"),
    "metrics no test_acc": ("metrics.jsonl", lambda p: _rows_with(p, test_acc=...),
                            "row.test_acc must be a finite number, got None"),
    "metrics null accuracies": ("metrics.jsonl", lambda p: _rows_with(p, test_acc=None, val_acc=None),
                                "row.test_acc must be a finite number, got None"),
    "metrics null val_acc": ("metrics.jsonl", lambda p: _rows_with(p, val_acc=None),
                             "row.val_acc must be a finite number, got None"),
    "config a list": ("config.json", lambda p: "[1, 2]", "the configuration must be an object, got [1, 2]"),
    "config null": ("config.json", lambda p: "null", "the configuration must be an object, got None"),
    "config truncated": ("config.json", lambda p: p.read_text()[:200], "not a readable run configuration"),
    "summary a list": ("summary.json", lambda p: "[]", "damaged run summary (a JSON object expected, got list, not what training writes)"),
}


def _damaged(good_run, tmp_path, name):
    file, content, _ = DAMAGE[name]
    bad = tmp_path / "bad"
    shutil.copytree(good_run, bad)
    text = content(good_run / file)
    (bad / file).write_bytes(text if isinstance(text, bytes) else text.encode())
    shutil.copytree(good_run, tmp_path / "good")
    return bad, bad / file


@pytest.mark.parametrize("name", DAMAGE)
def test_runs_list_marks_a_damaged_run_and_lists_the_others(good_run, tmp_path, name):
    bad, path = _damaged(good_run, tmp_path, name)
    result = run(["runs", "list", str(tmp_path), "--csv", str(tmp_path / "list.csv")])
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    lines = result.output.splitlines()
    assert lines[1].split()[:6] == ["bad", "-", "-", "-", "-", "unreadable"]
    assert lines[2].split()[:6] == ["good", "toy", "toy", "30-12-4", "sdsnn", "2/2"]
    assert lines[3].startswith(f"unreadable: {path}: ") and DAMAGE[name][2] in lines[3]
    assert "restore the file" in lines[3]
    csv_lines = (tmp_path / "list.csv").read_text().splitlines()
    assert csv_lines[1].startswith("bad,") and ",unreadable," in csv_lines[1] and str(path) in csv_lines[1]


@pytest.mark.parametrize("name", DAMAGE)
def test_runs_compare_shows_the_readable_runs_and_names_the_damaged_one(good_run, tmp_path, name):
    bad, path = _damaged(good_run, tmp_path, name)
    result = run(["runs", "compare", str(bad), str(tmp_path / "good"), "--plot", str(tmp_path / "c.png"),
                  "--csv", str(tmp_path / "m.csv")])
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    lines = result.output.splitlines()
    assert lines[1].split()[:3] == [str(bad), "-", "unreadable"]  # run, data, epochs done
    assert lines[2].split()[0] == str(tmp_path / "good") and lines[2].split()[2] == "2/2"
    assert any(line.startswith(f"unreadable: {path}: ") and DAMAGE[name][2] in line for line in lines)
    assert (tmp_path / "c.png").exists() and str(bad) not in (tmp_path / "m.csv").read_text()
    # with nothing else to compare: one line, exit code 2
    assert f"{path}: " in one_line_error(run(["runs", "compare", str(bad), "--plot", str(tmp_path / "d.png")]))


def test_the_readers_return_the_files_values(good_run):
    config = read_run_config(good_run)
    assert config["dataset"] == "toy" and config["data_source"] == "toy" and isinstance(config["run_id"], str)
    assert [row["epoch"] for row in read_metrics(good_run) if row["type"] == "epoch"] == [1, 2]
    assert read_summary(good_run)["epochs"] == 2
    empty = good_run.parent / "empty"
    empty.mkdir(exist_ok=True)
    assert read_run_config(empty) is None and read_metrics(empty) == [] and read_summary(empty) is None


def test_a_config_json_missing_an_option_is_damaged(good_run, tmp_path):
    shutil.copytree(good_run, tmp_path / "run")
    values = json.loads((good_run / "config.json").read_text())
    del values["lr"]
    (tmp_path / "run" / "config.json").write_text(json.dumps(values))
    with pytest.raises(CheckpointError, match="stored configuration has no 'lr'"):
        read_run_config(tmp_path / "run")


def test_metric_rows_with_a_null_validation_accuracy_are_refused():
    """Also in a checkpoint: the best epoch is chosen by val_acc."""
    row = {"type": "epoch", "epoch": 1, "train_loss": 0.1, "train_acc": 0.5, "test_acc": 0.5, "lr": 1e-3,
           "compression": 0.0, "neurons_pruned": 0.0, "wall_s": 1.0, "sops_per_sample": 1.0,
           "energy_uj_per_sample": 1.0}
    assert check_metric_rows([row]) == {"epoch": 1, "development": 0}
    with pytest.raises(ValueError, match=r"metrics\[0\].val_acc must be a finite number, got None"):
        check_metric_rows([{**row, "val_acc": None}])
    with pytest.raises(ValueError, match=r"accuracy outside \[0, 1\] \(train_acc 0.5, test_acc 0.5, val_acc 2\)"):
        check_metric_rows([{**row, "val_acc": 2}])
