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
