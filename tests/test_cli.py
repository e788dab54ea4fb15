"""The CLI: bad options give one line and exit code 2; a tiny run writes its folder."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from evsim.cli.main import main


def run(args):
    runner = CliRunner()
    return runner.invoke(main, args, prog_name="evsim")


@pytest.mark.parametrize("args,fragment", [
    (["train", "--time-steps", "0"], "--time-steps"),
    (["train", "--hidden", "abc"], "--hidden"),
    (["train", "--hidden", "800,-3"], "--hidden"),
    (["train", "--dataset", "nosuchset"], "--dataset"),
    (["train", "--lr", "0"], "--lr"),
    (["train", "--lr", "inf"], "--lr"),
    (["train", "--weight-decay", "nan"], "--weight-decay"),
    (["profile", "run", "--e-ac", "nan"], "--e-ac"),
    (["import-nir", "graph.nir", "out", "--dt", "nan"], "--dt"),
])
def test_bad_options_give_one_line_and_exit_2(args, fragment):
    result = run(args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:") and fragment in lines[0]
    assert "Traceback" not in result.output


def test_tiny_training_run_writes_the_run_folder(tmp_path):
    out = tmp_path / "run"
    result = run(["train", "--dataset", "mnist", "--epochs", "2", "--hidden", "24", "--time-steps", "4",
                  "--batch-size", "200", "--val-fraction", "0", "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["hidden"] == [24] and config["time_steps"] == 4 and config["data_source"] == "mnist-5k"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["type"] == "epoch"]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert {r["data_source"] for r in rows} == {"mnist-5k"}  # each row's accuracy says what data it is on
    for key in ("train_loss", "train_acc", "test_acc", "synapses", "wall_s"):
        assert key in rows[0]
    summary = json.loads((out / "summary.json").read_text())
    for key in ("test_acc", "best_test_acc", "epochs", "synapses", "data_source", "wall_s"):
        assert key in summary
    assert summary["synapses"] == 784 * 24 + 24 * 10  # 2 development steps: before pruning starts at 2K
    assert summary["test_acc"] > 0.3, "even a tiny network should learn something in 2 epochs"
    assert "epoch   2" in result.output and "mnist-5k" in result.output
    for name in ("config.toml", "network.npz", "checkpoint-latest.npz", "checkpoint-best.npz", "training.png"):
        assert (out / name).stat().st_size > 0, name
    # the file that repeats the run says what data it trained on (its source = "auto" does not)
    assert "# This run trained on data_source = mnist-5k (not the real dataset)." in (out / "config.toml").read_text()
    with np.load(out / "network.npz", allow_pickle=False) as saved:  # the network file alone says it too
        assert json.loads(str(saved["meta"]))["trained_on"] == {"dataset": "mnist", "data_source": "mnist-5k"}


def test_profile_a_trained_run_and_bad_run_folders(tmp_path):
    out = tmp_path / "run"
    assert run(["train", "--dataset", "mnist", "--epochs", "1", "--hidden", "16", "--time-steps", "4",
                "--batch-size", "500", "--out", str(out), "--no-progress"]).exit_code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sops_per_sample"] > 0 and summary["energy_uj_per_sample"] > 0

    result = run(["profile", str(out), "--samples", "50"])
    assert result.exit_code == 0, result.output
    assert "estimate" in result.output and "unpruned" in result.output
    report = json.loads((out / "profile-latest-test.json").read_text())
    assert report["samples"] == 50 and report["data_source"] == "mnist-5k"
    assert report["sops_per_sample"] > 0 and len(report["rows"]) == 3
    assert (out / "profile-latest-test.png").stat().st_size > 0
    for key in ("Effective_ACs", "Effective_MACs", "Dense", "ConnectionSparsity", "ActivationSparsity"):
        assert key in report["neurobench"]

    (out / "checkpoint-latest.npz").write_bytes(b"not a zip")
    result = run(["profile", str(out)])
    assert result.exit_code == 2 and "corrupt or truncated" in result.output
    result = run(["profile", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "nowhere: no such folder" in result.output
    assert len(result.output.strip().splitlines()) == 1
