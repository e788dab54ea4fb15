"""evsim eval and evaluate(): confusion matrix against a hand count, operations against
the profiler, the command's outputs and its errors."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from evsim.cli.main import main
from evsim.data.base import Dataset
from evsim.evaluate import profile
from evsim.errors import ConfigError
from evsim.evaluate import evaluate
from evsim.network import Network
from tests.runs import toy_dataset


def run(args):
    return CliRunner().invoke(main, args, prog_name="evsim")


def direct_toy() -> Dataset:
    """The toy problem with direct (analog, noise-free) encoding: evaluation is deterministic."""
    toy = toy_dataset()
    return Dataset("toy", toy.train, toy.test, toy.n_classes, toy.sample_shape, "direct", "toy")


def test_confusion_matrix_and_operations_match_a_direct_count(rng):
    dataset = direct_toy()
    network = Network.mlp([30, 16, 4], rng)
    result = evaluate(network, dataset, time_steps=5, batch_size=32)
    counts, _ = network.forward(np.repeat(dataset.test.inputs[None], 5, axis=0))
    expected = np.zeros((4, 4), np.int64)
    for label, guess in zip(dataset.test.labels, np.argmax(counts, axis=1)):
        expected[label, guess] += 1
    np.testing.assert_array_equal(result.confusion, expected)
    assert result.samples == 100 and result.accuracy == np.trace(expected) / 100
    summary = result.summary()
    reference = profile(network, dataset, time_steps=5, batch_size=100).summary()
    assert summary["macs_per_sample"] == reference["macs_per_sample"] > 0  # analog input: MACs, not SOPs
    assert summary["sops_per_sample"] == reference["sops_per_sample"]
    totals = expected.sum(axis=1)
    assert summary["per_class_accuracy"] == [expected[k, k] / totals[k] for k in range(4)]


def test_evaluate_refuses_a_network_that_does_not_fit(rng):
    with pytest.raises(ConfigError, match=r"network \[30, 16, 5\] does not fit toy"):
        evaluate(Network.mlp([30, 16, 5], rng), direct_toy(), time_steps=5)
    with pytest.raises(ConfigError, match="unknown split 'valid'"):
        evaluate(Network.mlp([30, 16, 4], rng), direct_toy(), time_steps=5, split="valid")


@pytest.mark.parametrize("spec, shape, classes, name, message", [
    ("30-16-5", (30,), 4, "toy", r"network \[30, 16, 5\] does not fit toy \(30 inputs, 4 classes\)$"),
    ("2x32x32-4C3-AP4-10", (2, 34, 34), 10, "nmnist",
     r"does not fit nmnist \(2x34x34 = 2312 inputs, 10 classes\) \(add --crop for N-MNIST's 32x32 frames\)"),
    ("2x32x32-4C3-AP4-10", (1, 28, 28), 10, "mnist", r"does not fit mnist \(1x28x28 = 784 inputs, 10 classes\)"),
    ("1x14x56-2C3-AP2-10", (1, 28, 28), 10, "mnist", r"network 1x14x56-2C3-AP2-10 does not fit mnist"),
], ids=["classes", "uncropped", "inputs", "shape"])
def test_profile_refuses_a_network_that_does_not_fit_as_evaluate_does(spec, shape, classes, name, message):
    """Not a run on scrambled or missing inputs: the same check and message as evaluate's."""
    from evsim.data.base import Split

    frames = Split(np.zeros((2, 1, *shape), np.float32), np.array([0, 1]))
    dataset = Dataset(name, frames, frames, classes, shape, "frames", "emulated")
    network = Network.from_spec(spec)
    for run_it in (lambda: evaluate(network, dataset, time_steps=1), lambda: profile(network, dataset, time_steps=1)):
        with pytest.raises(ConfigError, match=message):
            run_it()


def test_eval_command_outputs_and_errors(tmp_path):
    out = tmp_path / "run"
    assert run(["train", "--dataset", "mnist", "--epochs", "1", "--hidden", "16", "--time-steps", "4",
                "--batch-size", "500", "--out", str(out), "--no-progress"]).exit_code == 0

    result = run(["eval", str(out), "--json", str(tmp_path / "eval.json")])
    assert result.exit_code == 0, result.output
    assert "checkpoint-latest.npz, epoch 1/1" in result.output and "accuracy" in result.output
    assert "SOPs per sample" in result.output and "estimate" in result.output
    report = json.loads((tmp_path / "eval.json").read_text())
    confusion = np.array(report["confusion"])
    assert confusion.shape == (10, 10) and confusion.sum() == report["samples"] == 1000
    assert report["accuracy"] == np.trace(confusion) / 1000 and report["sops_per_sample"] > 0
    assert report["data_source"] == "mnist-5k"
    assert (out / "confusion-latest-test.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    result = run(["eval", str(out), "--checkpoint", "best", "--split", "train", "--batch-size", "700"])
    assert result.exit_code == 0, result.output
    # the 4,000 training digits but the 400 the run held out for validation
    assert "train split: 3600 samples" in result.output and (out / "confusion-best-train.png").is_file()

    for name in ("checkpoint-latest.npz", "checkpoint-best.npz"):
        (out / name).unlink()
    result = run(["eval", str(out)])  # a run from before checkpoints: its network.npz
    assert result.exit_code == 0 and f"{out} (network.npz)" in result.output
    result = run(["eval", str(out), "--checkpoint", "best"])
    assert result.exit_code == 2 and "checkpoint-best.npz: no best checkpoint saved" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_confusion_title_names_the_run_and_its_time_steps(tmp_path, monkeypatch):
    """eval --time-steps 2 and 4 drew the same title: neither T nor the run."""
    out = tmp_path / "my-run"
    assert run(["train", "--dataset", "mnist", "--epochs", "1", "--hidden", "8", "--time-steps", "4",
                "--threads", "1", "--out", str(out), "--no-progress"]).exit_code == 0
    titles = []
    monkeypatch.setattr("evsim.plots.save_figure", lambda fig, path: titles.append(fig.axes[0].get_title()))
    for steps in ("2", "4"):
        result = run(["eval", str(out), "--time-steps", steps])
        assert result.exit_code == 0, result.output
    assert [title.split("\n")[0].split(":")[0] for title in titles] == ["my-run, T = 2", "my-run, T = 4"]


def test_rate_coded_evaluation_does_not_depend_on_the_batch_size(rng):
    """Each sample's spikes come from its own generator: eval, profile and inspect draw a
    sample's spikes alike in any batch, and alone."""
    from evsim.inspect import sample_drive

    dataset = toy_dataset()  # rate coded
    network = Network.mlp([30, 16, 4], rng)
    results = [evaluate(network, dataset, time_steps=5, batch_size=size) for size in (7, 32, 100)]
    for result in results[1:]:
        np.testing.assert_array_equal(result.counts, results[0].counts)
        assert result.summary()["sops_per_sample"] == results[0].summary()["sops_per_sample"]
    assert profile(network, dataset, time_steps=5, batch_size=13).summary() == results[0].energy.summary()
    alone = network.forward(sample_drive(dataset.test.inputs, 42, "rate", 5))[0]
    np.testing.assert_array_equal(alone[0], results[0].counts[42])


def test_a_run_is_evaluated_on_the_path_it_trained_on(tmp_path, monkeypatch):
    """rows and csr sum in different orders, so eval, profile and inspect run a run's layers
    on its own --path, from a checkpoint or from network.npz alone."""
    from evsim.cli.runs import load_run_network
    from evsim.train import Trainer
    from tests.runs import toy_config

    monkeypatch.setattr("evsim.train.plot_training", lambda *args: None)
    run_dir = tmp_path / "run"
    Trainer(toy_config(epochs=1, path="csr"), toy_dataset()).fit(run_dir, progress=False, echo=lambda line: None)
    for checkpoint in ("checkpoint-latest.npz", "network.npz"):
        network, _, loaded = load_run_network(run_dir, "latest")
        assert loaded.startswith(checkpoint) and [layer.path for layer in network.layers] == ["csr", "csr"]
        for path in run_dir.glob("checkpoint-*.npz"):
            path.unlink()


def test_what_pruning_saves_on_direct_input_counts_the_first_layers_macs(tmp_path, monkeypatch):
    """On analog input the first layer does MACs, not SOPs: its pruning was reported as 0 % saved."""
    from evsim.train import Trainer
    from tests.runs import toy_config

    monkeypatch.setattr("evsim.train.plot_training", lambda *args: None)
    config = toy_config(epochs=2, structure="magnitude", target_sparsity=0.8)
    summary = Trainer(config, direct_toy()).fit(tmp_path / "run", progress=False, echo=lambda line: None)
    last = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()][-1]
    assert 0 < last["macs_per_sample"] < last["macs_unpruned_per_sample"]
    assert summary["mac_reduction"] == round(1 - last["macs_per_sample"] / last["macs_unpruned_per_sample"], 6) > 0.5
