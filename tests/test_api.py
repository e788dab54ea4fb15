"""The public Python API: what a user writes, the errors they get, and the module graph."""
import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import evsim
import evsim.train
from evsim.errors import EvsimError
from tests.reference import network_forward

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("hidden", [20, 32])  # 20 alive neurons run on a padded copy, 32 on the CSR data
def test_the_documented_hand_written_loop_runs_the_new_weights(hidden):
    """No step of the public loop can leave a layer running stale weights: after each
    optimizer step, and after a structural edit, the next forward equals the dense
    oracle on the store's weights."""
    rng = np.random.default_rng(1)
    network = evsim.Network.from_spec(f"40-{hidden}-5", rng=rng)
    network.layers[0].kill([3])  # the copy the rows path runs on is now padded for every width
    optimizer = evsim.Optimizer("adam", lr=5e-2)
    x = (rng.random((6, 8, 40)) < 0.4).astype(np.float32)
    labels = rng.integers(0, 5, 8)
    for step in range(3):
        counts, traces = network.forward(x)
        _, grad_counts = evsim.mse_rate(counts, labels, 6)
        grads = network.backward(traces, grad_counts)
        optimizer.step(network.parameters(grads))
        if step == 1:
            network.layers[0].prune(np.abs(network.layers[0].store.data) < 0.05)
        weights = [layer.store.to_dense() for layer in network.layers]
        biases = [layer.bias for layer in network.layers]
        want, _ = network_forward(x, weights, biases)
        got, _ = network.forward(x)
        np.testing.assert_array_equal(got, want)
    assert counts.any()


def test_an_optimizer_step_without_gradients_says_what_to_pass():
    network = evsim.Network.from_spec("8-4-2")
    with pytest.raises(EvsimError, match=r"pass network.parameters\(grads\)"):
        evsim.Optimizer().step(network.parameters())


def test_python_callers_get_the_same_clear_errors_as_the_cli(tmp_path):
    with pytest.raises(EvsimError, match="unknown dataset 'nmist'"):
        evsim.train.train(evsim.TrainConfig(dataset="nmist"))
    with pytest.raises(EvsimError, match="--optimizer must be one of adam, adamw, sgd"):
        evsim.TrainConfig(optimizer="rmsprop").validate()
    with pytest.raises(EvsimError, match="--lr must be > 0"):
        evsim.TrainConfig(lr=-1.0).validate()
    rng = np.random.default_rng(0)
    with pytest.raises(EvsimError, match=r"intensities in \[0, 1\]"):
        evsim.encode_events(np.full((2, 5), 255.0, np.float32), "rate", 4, rng)
    with pytest.raises(EvsimError, match=r"intensities in \[0, 1\]"):
        evsim.encode_events(np.full((2, 5), np.nan, np.float32), "rate", 4, rng)
    with pytest.raises(EvsimError, match=r"architecture '2x32x32-15C3' must end with a fully connected"):
        evsim.Network.from_spec("2x32x32-15C3")
    with pytest.raises(EvsimError, match="labels run 0..7, outside the 4 classes"):
        split = evsim.Split(np.zeros((3, 2), np.float32), np.array([0, 7, 1]))
        evsim.Dataset("mine", split, split, 4, (2,), "rate", "mine")


def test_a_dataset_refuses_splits_that_do_not_have_its_sample_shape():
    wide, narrow = (evsim.Split(np.zeros((4, d), np.float32), np.arange(4) % 2) for d in (8, 6))
    with pytest.raises(EvsimError, match=r"test samples hold 6 values \(shape \(6,\)\) but sample_shape \(8,\) holds 8"):
        evsim.Dataset("mine", wide, narrow, 2, (8,), "rate", "mine")
    with pytest.raises(EvsimError, match=r"train samples hold 8 values .* sample_shape \(9,\) holds 9"):
        evsim.Dataset("mine", wide, wide, 2, (9,), "rate", "mine")
    evsim.Dataset("mine", wide, wide, 2, (2, 2, 2), "rate", "mine")  # a map's values, flat
    assert evsim.Split(np.zeros((4, 8), np.float32), [0, 1, 0, 1]).labels.shape == (4,)  # a list of labels
    frames = evsim.Split(np.zeros((4, 3, 2, 4, 4), np.uint8), np.arange(4) % 2)
    evsim.Dataset("mine", frames, frames, 2, (2, 4, 4), "frames", "mine")
    with pytest.raises(EvsimError, match=r"train samples hold 32 values \(shape \(2, 4, 4\)\)"):
        evsim.Dataset("mine", frames, frames, 2, (2, 5, 5), "frames", "mine")


def test_a_trainer_refuses_an_empty_split_and_numbers_given_as_text():
    split = evsim.Split(np.full((8, 6), 0.5, np.float32), np.arange(8) % 2)
    empty = evsim.Split(np.zeros((0, 6), np.float32), np.zeros(0, np.int64))
    config = evsim.TrainConfig(dataset="mine", epochs=1, batch_size=4, time_steps=3, hidden=(4,), structure="none")
    with pytest.raises(EvsimError, match="the test split holds no samples; give it at least one"):
        evsim.Trainer(config, evsim.Dataset("mine", split, empty, 2, (6,), "rate", "mine"))
    for text in ({"lr": "0.1"}, {"epochs": "2"}):
        with pytest.raises(EvsimError, match="text is read only from the command line and config files"):
            evsim.TrainConfig(dataset="mine", **text).validate()


def test_losses_and_backward_refuse_what_they_cannot_mean():
    network = evsim.Network.from_spec("6-5-3", rng=0)
    x = (np.random.default_rng(0).random((4, 2, 6)) < 0.5).astype(np.float32)
    counts, traces = network.forward(x)
    for loss in (evsim.mse_rate, evsim.cross_entropy):
        with pytest.raises(EvsimError, match="labels run -1..0, outside the 3 classes 0..2"):  # not the last class
            loss(counts, np.array([-1, 0]), 4)
        with pytest.raises(EvsimError, match=r"labels must be 2 integer class indices .* got int64 \(3,\)"):
            loss(counts, np.arange(3), 4)
        with pytest.raises(EvsimError, match="labels must be 2 integer class indices"):
            loss(counts, np.array([0.5, 1.0]), 4)
        with pytest.raises(EvsimError, match="n_steps must be .* >= 1, got 0"):
            loss(counts, np.arange(2), 0)
        with pytest.raises(EvsimError, match="counts must be a finite array"):
            loss(np.full((2, 3), np.nan, np.float32), np.arange(2), 4)
    with pytest.raises(EvsimError, match=r"grad_counts must be \[batch, outputs\] = \[2, 3\] .* got \(2, 2\)"):
        network.backward(traces, np.zeros((2, 2), np.float32))
    with pytest.raises(EvsimError, match="grad_counts holds NaN or infinite values"):
        network.backward(traces, np.full((2, 3), np.nan, np.float32))
    with pytest.raises(EvsimError, match=r"input must be a NumPy array \[T, B, 6\] or Events, got list"):
        network.forward(x.tolist())


def test_a_bare_events_batch_profiles_as_one_batch():
    network = evsim.Network.from_spec("6-4-2")
    x = (np.random.default_rng(0).random((3, 2, 6)) < 0.5).astype(np.float32)
    as_events = evsim.profile(network, evsim.dense_to_events(x))
    as_list = evsim.profile(network, [x])
    assert as_events.summary()["sops_per_sample"] == as_list.summary()["sops_per_sample"] > 0


def _modules() -> list[str]:
    names = []
    for path in sorted((ROOT / "evsim").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names + ["evsim.cli." + p.stem for p in sorted((ROOT / "cli").glob("*.py")) if p.stem != "__init__"]


def test_every_module_imports_alone_in_a_fresh_interpreter():
    """An import loop shows as a module that cannot be imported first."""
    code = ("import importlib, sys\n"
            "for name in sys.argv[1:]:\n"
            "    import subprocess\n"
            "    r = subprocess.run([sys.executable, '-c', f'import {name}'], capture_output=True, text=True)\n"
            "    if r.returncode: print(name, r.stderr.strip().splitlines()[-1])\n")
    result = subprocess.run([sys.executable, "-c", code, *_modules()], capture_output=True, text=True, cwd=ROOT)
    assert result.stdout == "" and result.returncode == 0, result.stdout + result.stderr


def test_no_evsim_import_hides_inside_a_function():
    """Imports of evsim modules sit at the top of a module, where a loop would show."""
    hidden = []
    for path in sorted((ROOT / "evsim").rglob("*.py")) + sorted((ROOT / "cli").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    if isinstance(inner, ast.ImportFrom) and (inner.module or "").startswith("evsim"):
                        hidden.append(f"{path.relative_to(ROOT)}:{inner.lineno} {inner.module}")
    assert hidden == []


def test_input_that_kernels_would_read_differently_is_refused():
    network = evsim.Network.from_spec("1x8x8-3C3-AP2-4", rng=0)
    for shape in ((0, 2, 64), (3, 0, 64)):
        for run in (network.forward, network.predict):
            with pytest.raises(EvsimError, match="give at least one of each"):
                run(np.zeros(shape, np.float32))
    events = evsim.dense_to_events((np.random.default_rng(0).random((2, 1, 64)) < 0.3).astype(np.float32))
    doubled = evsim.Events(events.ptr * 2, np.repeat(events.idx, 2), np.repeat(events.val, 2), 2, 1)
    with pytest.raises(EvsimError, match="slot 0 of the events names one input twice"):
        network.forward(doubled)
    with pytest.raises(EvsimError, match="max pooling MP2 takes nonnegative input"):
        evsim.Network.from_spec("1x4x4-MP2-3C3-4", rng=0).forward(np.full((2, 1, 16), -1.0, np.float32))
