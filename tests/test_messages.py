"""Messages found in a walkthrough: neurons pruned counts what users mean, the memory
estimate includes the input layer's weights, notices point at --data-dir, Ctrl-C while
starting is one line, and config.toml records the resolved threads and cache folder."""
import json
import signal
import subprocess
import sys
import time
import tomllib

import numpy as np
import pytest

from evsim.data import load_dataset, nmnist
from evsim.data.base import DataOptions
from evsim.errors import ConfigError
from evsim.train import TrainConfig, Trainer, check_memory, expected_sizes
from tests.conftest import one_line_error, run
from tests.runs import TINY_MNIST, toy_config, toy_dataset


def test_neurons_pruned_counts_revived_neurons_as_pruned_and_revived():
    """Removed from the original structure once, a neuron stays pruned when regrowth
    revives it with a few new synapses; it then also counts as revived."""
    trainer = Trainer(toy_config(structure="sdsnn"), toy_dataset())
    layer = trainer.network.layers[0]  # 12 hidden neurons
    steps = iter([lambda: layer.kill(np.array([1, 2, 3])),
                  lambda: layer.regrow(np.array([0, 5]), np.array([1, 1]), np.array([0.1, 0.1], np.float32)),
                  lambda: layer.kill(np.array([1]))])
    trainer.structure.develop = lambda network, lr: (next(steps)(), [])[1]
    rows = []
    for _ in range(3):
        rows.append(trainer.develop(1e-3))
        trainer.metrics.append(rows[-1])
    assert rows[0]["neurons_removed"] == {"0": [1, 2, 3]}
    assert [row["neurons_pruned"] for row in rows] == [0.25, 0.25, 0.25]
    assert [row["neurons_revived"] for row in rows] == [0.0, round(1 / 12, 6), 0.0]
    assert "neurons_removed" not in rows[1]
    assert trainer.removed_neurons()[0].tolist() == [False, True, True, True] + [False] * 8


def test_a_neuron_whose_last_synapse_a_baseline_prunes_counts_as_pruned_and_dead():
    """Magnitude pruning and SET remove synapses, not neurons: a neuron they leave with no
    incoming synapse listens to nothing, and counts as pruned (and dead) as SD-SNN's would."""
    from evsim.compression import layer_report

    trainer = Trainer(toy_config(structure="magnitude"), toy_dataset())
    layer = trainer.network.layers[0]  # 12 hidden neurons
    columns = layer.store.indices
    trainer.structure.develop = lambda network, lr: (layer.prune(np.isin(columns, [4, 7])), [])[1]
    row = trainer.develop(1e-3)
    assert layer.alive.all() and row["neurons_removed"] == {"0": [4, 7]}
    assert row["neurons_pruned"] == round(2 / 12, 6) and row["neurons_revived"] == 0.0
    assert layer_report(trainer.network)[0]["units_dead"] == round(2 / 12, 6)
    trainer.metrics.append(row)
    layer.regrow(np.array([0]), np.array([4]), np.array([0.1], np.float32))  # as SET's random regrowth may
    assert trainer.neurons_pruned() == 2 / 12 and trainer.neurons_revived() == 1 / 12


def test_neurons_pruned_survives_resume_through_the_metrics(tmp_path, monkeypatch):
    """The count is a function of the saved metrics and network: a resumed trainer gives the same."""
    from evsim.checkpoint import load_checkpoint

    monkeypatch.setattr("evsim.train.plot_training", lambda *args: None)
    trainer = Trainer(toy_config(epochs=2), toy_dataset())
    trainer.fit(tmp_path, progress=False, echo=lambda line: None)
    resumed = Trainer(toy_config(epochs=2), toy_dataset())
    resumed.restore(load_checkpoint(tmp_path / "checkpoint-latest.npz"))
    assert resumed.neurons_pruned() == trainer.neurons_pruned()
    assert resumed.neurons_revived() == trainer.neurons_revived()


def test_memory_estimate_counts_the_input_layer_before_the_data_loads(monkeypatch):
    monkeypatch.setattr("evsim.memory.physical_memory", lambda: 2 ** 30)
    config = TrainConfig(dataset="mnist", hidden=(2_000_000,))
    assert expected_sizes(config) == (784, 10)
    with pytest.raises(ConfigError, match=r"weights 177\.5 GiB, BPTT traces 59\.6 GiB"):
        check_memory(config, *expected_sizes(config))
    assert expected_sizes(TrainConfig(dataset="nmnist", data=DataOptions(crop=True)))[0] == 2 * 32 * 32
    assert expected_sizes(TrainConfig(dataset="dvsgesture", data=DataOptions(downsample=32)))[0] == 2 * 32 * 32


def _small_emulation(monkeypatch):
    from pathlib import Path

    from evsim.data.emulate import write_emulated_nmnist

    def emulated_dir(cache_dir, seed=0, **kw):
        out = Path(cache_dir) / "nmnist-emulated-test"
        write_emulated_nmnist(out, per_class=1, seed=seed, progress=False)
        return out

    monkeypatch.setattr(nmnist, "emulated_nmnist_dir", emulated_dir)


def test_the_emulation_notice_points_at_data_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("EVSIM_DATA", raising=False)
    _small_emulation(monkeypatch)
    notice = load_dataset("nmnist", DataOptions(cache_dir=tmp_path)).meta["notice"]
    assert notice.startswith("N-MNIST not found in --data-dir (none given, nor $EVSIM_DATA;")
    assert "to use the real files, give --data-dir DIR (or $EVSIM_DATA) with Train/<digit>/*.bin" in notice


def test_emulated_source_says_the_data_dir_is_not_read(tmp_path, monkeypatch):
    _small_emulation(monkeypatch)
    notice = load_dataset("nmnist", DataOptions(cache_dir=tmp_path, source="emulated",
                                                data_dir=tmp_path / "emu")).meta["notice"]
    assert f"{tmp_path / 'emu'} (--data-dir or $EVSIM_DATA) is not read: use --source auto or real" in notice


def test_eval_of_a_network_without_config_names_why_no_dataset_is_assumed(tmp_path):
    from evsim.checkpoint import save_network
    from evsim.network import Network

    save_network(tmp_path / "network.npz", Network.mlp([4, 3, 2], np.random.default_rng(0)))
    line = one_line_error(run(["eval", str(tmp_path)]))
    assert "so no dataset is assumed (not even --dataset's default)" in line


def test_config_toml_records_the_resolved_threads_and_cache(tmp_path, captured, monkeypatch):
    import numba

    monkeypatch.setenv("EVSIM_CACHE", str(tmp_path / "my-cache"))
    assert run(["train", "--dataset", "mnist", "--threads", "0", "--out", str(tmp_path / "a")]).exit_code == 0
    saved = tomllib.loads((tmp_path / "a" / "config.toml").read_text())
    assert saved["threads"] == numba.config.NUMBA_NUM_THREADS
    assert saved["cache_dir"] == str((tmp_path / "my-cache").resolve())


def test_no_progress_bars_when_stderr_is_not_a_terminal(tmp_path):
    out = tmp_path / "run"
    result = run(["train", *[a for a in TINY_MNIST if a != "--no-progress"], "--epochs", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "\r" not in result.output and "batch/s" not in result.output and "epoch   1" in result.output


def _evsim(*args):
    return subprocess.Popen([sys.executable, "-c", "from evsim.cli.main import main; main()", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


@pytest.mark.parametrize("delay", [0.25, 0.6])
def test_ctrl_c_while_starting_is_one_line_and_exit_130(tmp_path, delay):
    process = _evsim("train", "--dataset", "mnist", "--epochs", "1", "--out", str(tmp_path / "run"), "--no-progress")
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    output = process.communicate(timeout=120)[0].decode()
    assert process.returncode == 130, output
    assert "Traceback" not in output and "Interrupted" in output
    assert not (tmp_path / "run" / "summary.json").exists()
    if (tmp_path / "run" / "config.json").exists():  # stopped inside training: it says how to resume
        assert json.loads((tmp_path / "run" / "config.json").read_text())["dataset"] == "mnist"
