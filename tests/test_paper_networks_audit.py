"""The paper networks' audit: evsim inspect records batch by batch and checks memory; a
sweep's same network spelled twice is one run; evaluation's memory estimate; the layer
table's columns; --arch's refusals, help and hints; python -m evsim."""
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import evsim
from evsim.compression import format_report
from evsim.config import OPTION_BY_NAME, resolve_options
from evsim.errors import ConfigError
from evsim.evaluate import check_batch_memory
from evsim.inspect import record_dataset
from evsim.memory import GIB
from evsim.network import spec_footprint
from evsim.presets import PAPER_ARCHS, PRESETS
from tests import test_inspect
from tests.conftest import one_line_error, run
from tests.runs import toy_dataset

tiny_run = test_inspect.tiny_run  # the same module fixture: a finished tiny run, made once here

ROOT = Path(__file__).resolve().parents[1]


# 1. inspect: batch by batch, memory checked

def test_record_dataset_in_batches_gives_the_one_pass_statistics(rng):
    network = evsim.Network.from_spec("30-12-4", rng=rng)
    dataset = toy_dataset()
    whole, labels = record_dataset(network, dataset, "test", 37, 5, batch_size=100)
    batched, same_labels = record_dataset(network, dataset, "test", 37, 5, batch_size=8, keep=3)
    assert batched.samples == whole.samples == 37 and batched.spikes[0].shape == (5, 3, 12)
    np.testing.assert_array_equal(same_labels, labels)
    np.testing.assert_array_equal(batched.counts, whole.counts)
    np.testing.assert_array_equal(batched.spikes[0], whole.spikes[0][:, :3])
    for a, b in zip(batched.firing_rates(), whole.firing_rates()):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    for a, b in zip(batched.rate_per_step(), whole.rate_per_step()):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    assert batched.summary()["layers"][0]["ops_per_step"] == pytest.approx(whole.summary()["layers"][0]["ops_per_step"])
    # the one-pass statistics are the recording's own
    one = evsim.record(network, evsim.inspect.encode_events(dataset.test.inputs[:37], dataset.encoding, 5,
                                                            evsim.inspect.SampleSeeds(evsim.inspect.eval_seeds(0))))
    for a, b in zip(one.firing_rates(), whole.firing_rates()):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_inspect_refuses_a_batch_beyond_memory_in_one_line(tiny_run, monkeypatch):
    monkeypatch.setattr("evsim.memory.physical_memory", lambda: 64 * 1024)
    result = run(["inspect", str(tiny_run), "--samples", "40"])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    line = result.output.strip().splitlines()[-1]  # after the data's NOTE: which MNIST sample
    assert line.startswith("Error: ") and "inspecting a batch of 32 samples over 4 steps needs about" in line and "reduce --batch-size" in line


def test_inspect_samples_more_than_a_batch(tiny_run, tmp_path):
    result = run(["inspect", str(tiny_run), "--samples", "45", "--batch-size", "7", "--rasters", "2",
                  "--json", str(tmp_path / "i.json"), "--plot", str(tmp_path / "i.png")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "i.json").read_text())["samples"] == 45 and "45 test samples" in result.output


# 2. the sweep's same run

@pytest.mark.parametrize("other", ["1x28x28-15c3-ap2-10", "1x28x28-15C3p1-AP2-10", "1x28x28-15C3s1p1-AP2-10"])
def test_a_sweep_refuses_one_network_spelled_twice(tmp_path, other):
    path = tmp_path / "sweep.toml"
    path.write_text(f'[base]\ndataset = "mnist"\nepochs = 1\ntime_steps = 2\nstructure = "none"\n'
                    f'[axes]\narch = ["1x28x28-15C3-AP2-10", "{other}"]\n')
    line = one_line_error(run(["sweep", str(path), "--out", str(tmp_path / "out"), "--no-progress"]))
    assert "are the same run" in line
    assert not (tmp_path / "out").exists()


def test_a_sweep_keeps_networks_that_differ(tmp_path):
    from evsim.sweep.plan import read_sweep, resolve_points

    path = tmp_path / "sweep.toml"
    path.write_text('[base]\ndataset = "mnist"\nepochs = 1\ntime_steps = 2\nstructure = "none"\n'
                    '[axes]\narch = ["1x28x28-15C3-AP2-10", "1x28x28-15C3p0-AP2-10"]\n')
    assert len(resolve_points(read_sweep(path), tmp_path / "out")) == 2


def test_a_sweep_refuses_an_empty_arch_on_an_axis(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text('[base]\ndataset = "mnist"\n[axes]\narch = ["", "784-16-10"]\n')
    line = one_line_error(run(["sweep", str(path), "--out", str(tmp_path / "out"), "--no-progress"]))
    assert "[axes] arch holds an empty architecture" in line


# 3. evaluation's memory per neuron and step

def test_profile_of_the_dvsgesture_paper_network_fits_a_23_gib_machine(monkeypatch):
    """At 5 bytes a neuron and step, profile's default batch of 250 at T = 64 was refused
    (about 40 GiB) though it takes a fifth of that."""
    monkeypatch.setattr("evsim.memory.physical_memory", lambda: 23.5 * GIB)
    network = SimpleNamespace(sizes=spec_footprint(PAPER_ARCHS["dvsgesture"])[0])
    check_batch_memory(network, np.zeros((250, 10), np.float32), "frames", 64, 250)
    with pytest.raises(ConfigError, match="reduce --time-steps or --batch-size"):
        check_batch_memory(network, np.zeros((1000, 10), np.float32), "frames", 64, 1000)


def test_the_dvsgesture_preset_evaluates_in_its_training_batches():
    assert PRESETS["dvsgesture"]["eval_batch_size"] == PRESETS["dvsgesture"]["batch_size"]


# 4. the layer table

def test_the_layer_table_keeps_large_numbers_apart():
    rows = [{"layer": "conv1", "develops": False, "weights": 270, "dense_weights": 270, "zero_or_absent": 0.0,
             "synapse_sparsity": 0.0, "units_dead": 0.0},
            {"layer": "fc1", "develops": True, "weights": 12_288_000, "dense_weights": 12_288_000,
             "zero_or_absent": 0.5, "synapse_sparsity": 0.5, "units_dead": 0.25}]
    lines = format_report(rows, 0.5).splitlines()
    assert lines[2].split()[:3] == ["fc1*", "12,288,000", "12,288,000"]
    assert len({len(line) for line in lines[:3]}) == 1  # the columns line up


# 5, 6. --arch's refusals

def test_an_arch_with_spaces_is_refused_saying_so():
    with pytest.raises(ConfigError, match=r"has spaces in it; write it without them: 1x28x28-15C3-10$"):
        OPTION_BY_NAME["arch"].convert("1x28x28 - 15C3 - 10")


def test_paper_in_capitals_is_the_papers_network(captured, tmp_path):
    assert OPTION_BY_NAME["arch"].convert("Paper") == "paper"
    result = run(["train", "--dataset", "mnist", "--arch", "PAPER", "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert captured[0].arch == PAPER_ARCHS["mnist"]


def test_an_empty_arch_on_the_command_line_is_refused(tmp_path):
    line = one_line_error(run(["train", "--dataset", "mnist", "--arch", "", "--out", str(tmp_path / "r")]))
    assert "--arch" in line and "is empty" in line and "leave --arch out" in line
    assert not (tmp_path / "r").exists()


def test_an_fc_runs_config_toml_with_arch_empty_still_repeats(captured, tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('dataset = "mnist"\narch = ""\nhidden = [16]\nepochs = 1\n')
    result = run(["train", "--config", str(path), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert captured[0].arch == "" and captured[0].hidden == (16,)


# 7. docs and hints

def test_arch_help_names_strides_padding_and_filters():
    text = OPTION_BY_NAME["arch"].help
    assert "<filters>C<kernel>" in text and "s<stride>" in text and "p<pad>" in text and "K//2" in text
    assert "even kernel" in text
    assert "--downsample" in text


def test_the_shd_hint_is_one_dimensional():
    with pytest.raises(ConfigError, match=r"INPUTS-256-CLASSES \(its samples are one-dimensional") as info:
        resolve_options({"dataset": "shd", "arch": "paper"}, {})
    assert "CxHxW" not in str(info.value)


def test_training_the_paper_network_on_downsampled_gestures_says_it_is_not_the_papers(captured, tmp_path):
    result = run(["train", "--dataset", "dvsgesture", "--arch", "paper", "--downsample", "32", "--out",
                  str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert "NOTE: --arch paper with --downsample 32 is 2x32x32-15C3-AP2-40C3-AP2-300-11" in result.output


# 8. python -m

@pytest.mark.parametrize("module", ["evsim", "evsim.cli.main"])
def test_python_m_runs_the_command(module):
    result = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, cwd=ROOT,
                            timeout=120)
    assert result.returncode == 0 and "Usage:" in result.stdout and "train" in result.stdout, result.stderr


def test_evaluation_counts_direct_inputs_first_layer_membrane(monkeypatch):
    """With direct (analog) input the first layer keeps a float32 membrane per step in
    evaluation (3.9 B per neuron-step measured on the MNIST paper network), which the
    per-neuron constant does not cover: such a batch was let through to the OS's killer."""
    from evsim.memory import EVAL_STEP_BYTES, INPUT_EVENT_BYTES

    network = evsim.Network.from_spec("1x8x8-4C3-10", rng=0)  # sizes [64, 256, 10]
    inputs = np.zeros((100, 1, 8, 8), np.float32)
    fits = int(EVAL_STEP_BYTES * 10 * 100 * 266) + INPUT_EVENT_BYTES * 100 * 64 + 1
    monkeypatch.setattr("evsim.memory.physical_memory", lambda: fits)
    check_batch_memory(network, inputs, "rate", 10, 100)  # rate: no membrane kept, zeros give no events
    with pytest.raises(ConfigError, match="a batch of 100 samples over 10 steps needs about"):
        check_batch_memory(network, inputs, "direct", 10, 100)
    monkeypatch.setattr("evsim.memory.physical_memory", lambda: fits + 4 * 256 * 10 * 100)
    check_batch_memory(network, inputs, "direct", 10, 100)


def test_the_evaluation_estimate_covers_what_the_paper_networks_take(tmp_path):
    """What one more sample costs evaluation, measured by benchmarks/bench_eval_memory.py
    (peak resident memory, each batch in a fresh process), is at most what the memory check
    counts for it: the untrained DVS-Gesture network fires more than a trained one and
    took 2.8-2.9 B per neuron-step, above the 2.5 B the check once counted, so a batch
    at the edge of memory went to the OS's killer."""
    from benchmarks.bench_eval_memory import CASES
    from evsim.memory import EVAL_STEP_BYTES, batch_bytes, direct_membrane_bytes

    out = tmp_path / "memory.json"
    subprocess.run([sys.executable, "-m", "benchmarks.bench_eval_memory", "--json", str(out)], cwd=ROOT, check=True,
                   capture_output=True, timeout=600)
    for row in json.loads(out.read_text()):
        arch, encoding, steps, (small, large) = CASES[row["case"]]
        sizes = evsim.Network.from_spec(arch, rng=0).sizes

        def counted(batch):
            traces, _ = batch_bytes(sum(sizes[1:]), steps, batch, EVAL_STEP_BYTES, 0)
            return traces + direct_membrane_bytes(sizes, steps, batch, encoding)

        measured = row["peaks"][1] - row["peaks"][0]
        assert measured <= counted(large) - counted(small), (row["case"], row["bytes_per_neuron_step"])
