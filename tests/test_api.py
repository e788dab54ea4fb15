"""The public Python API: what a user writes, the errors they get, and the module graph."""
import ast
import dataclasses
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
    for text in ({"lr": "0.1"}, {"epochs": "2"}, {"hidden": "32"}):
        with pytest.raises(EvsimError, match="text is read only from the command line and config files"):
            evsim.TrainConfig(dataset="mine", **text).validate()
    with pytest.raises(EvsimError, match=r"hidden must be given as \(32,\), not 32 \(a tuple of layer sizes\)"):
        evsim.Trainer(dataclasses.replace(config, hidden=32), evsim.Dataset("mine", split, split, 2, (6,), "rate", "x"))
    evsim.TrainConfig(dataset="mine", hidden=[4, 3]).validate()  # a list of sizes is as good as a tuple


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


def test_events_in_any_order_within_a_slot_give_the_ordered_result():
    """The layers' kernels take a slot's events ascending (max pooling walks them in bands):
    a user's Events in another order are put in order, not misread."""
    rng = np.random.default_rng(0)
    for spec in ("1x8x8-MP2-4", "1x9x9-MP3-3C3-4", "1x8x8-3C3-AP2-4"):
        network = evsim.Network.from_spec(spec, rng=0)
        n_in = network.layers[0].n_in
        events = evsim.dense_to_events((rng.random((3, 2, n_in)) < 0.5).astype(np.float32))
        shuffled = events.idx.copy(), events.val.copy()
        for s in range(events.ptr.size - 1):
            order = events.ptr[s] + rng.permutation(events.ptr[s + 1] - events.ptr[s])
            shuffled[0][events.ptr[s]:events.ptr[s + 1]] = events.idx[order]
            shuffled[1][events.ptr[s]:events.ptr[s + 1]] = events.val[order]
        assert not np.array_equal(shuffled[0], events.idx)
        given = evsim.Events(events.ptr, *shuffled, 3, 2)
        counts, traces = network.forward(events)
        counts_given, traces_given = network.forward(given)
        np.testing.assert_array_equal(counts_given, counts)
        for trace, trace_given in zip(traces, traces_given):
            np.testing.assert_array_equal(trace_given.events_in.idx, trace.events_in.idx)
        np.testing.assert_array_equal(network.predict(given), counts)


@pytest.mark.parametrize("values, fragment", [
    (np.full((3, 2, 64), 1e39), r"NaN or infinite values \(in float32"),   # finite in float64, inf in float32
    (np.zeros((3, 2, 64), object), "real numbers .* got dtype object"),
    (np.zeros((3, 2, 64), complex), "real numbers .* got dtype complex128"),
    (np.zeros((3, 2, 64), "<U3"), "real numbers .* got dtype <U3"),
])
def test_input_the_kernels_cannot_hold_in_float32_is_refused(values, fragment):
    network = evsim.Network.from_spec("1x8x8-4C3-AP2-5", rng=0)
    for run in (network.forward, network.predict, lambda x: evsim.profile(network, x)):
        with pytest.raises(EvsimError, match=fragment):
            run(values)


def test_big_endian_counts_give_the_native_result():
    network = evsim.Network.from_spec("1x8x8-4C3-AP2-5", rng=0)
    counts = (np.random.default_rng(0).random((3, 2, 64)) < 0.4).astype(np.int32)
    np.testing.assert_array_equal(network.forward(counts.astype(">i4"))[0], network.forward(counts)[0])
    np.testing.assert_array_equal(network.predict(counts.astype(">u2")), network.predict(counts))


def test_step_and_batch_counts_must_be_integers():
    network = evsim.Network.from_spec("1x8x8-4C3-AP2-5", rng=0)
    events = evsim.dense_to_events(np.ones((3, 2, 64), np.float32))
    with pytest.raises(EvsimError, match="n_steps must be an integer, got 3.0"):
        network.forward(evsim.Events(events.ptr, events.idx, events.val, 3.0, 2))
    with pytest.raises(EvsimError, match="n_steps must be an integer, got 3.5"):
        network.forward(evsim.StaticDrive(np.ones((2, 64), np.float32), 3.5))


def test_profiling_batches_of_different_t_together_is_refused():
    network = evsim.Network.from_spec("1x8x8-4C3-AP2-5", rng=0)
    rng = np.random.default_rng(0)
    short, long = ((rng.random((t, 2, 64)) < 0.4).astype(np.float32) for t in (1, 4))
    with pytest.raises(EvsimError, match="batches of T = 1 and T = 4"):
        evsim.profile(network, [short, long])
    alone = sum(layer.sops for layer in evsim.profile(network, long).layers)
    together = sum(layer.sops for layer in evsim.profile(network, [long, long]).layers)
    assert together == 2 * alone


@pytest.mark.parametrize("edit", [
    lambda net: net.layers[2].prune(np.arange(net.layers[2].store.nnz) % 2 == 0),
    lambda net: net.layers[2].store.prune(np.arange(net.layers[2].store.nnz) % 2 == 0),
    lambda net: net.layers[0].prune(np.arange(net.layers[0].store.nnz) % 2 == 0),
    lambda net: net.layers[2].kill(np.array([1, 3])),
    lambda net: net.layers[0].kill(np.array([0])),
    lambda net: net.layers[2].set_alive(net.layers[2].alive),  # a rebuild alone: a new plan
])
def test_backward_refuses_traces_of_another_structure_however_it_was_edited(edit):
    network = evsim.Network.from_spec("1x8x8-4C3-AP2-8-4", rng=0)
    x = (np.random.default_rng(0).random((4, 3, 64)) < 0.5).astype(np.float32)
    counts, traces = network.forward(x)
    edit(network)
    with pytest.raises(EvsimError, match="not of the layer's present structure"):
        network.backward(traces, evsim.mse_rate(counts, np.array([0, 1, 2]), 4)[1])


def test_backward_refuses_another_networks_traces():
    network, other = (evsim.Network.from_spec("1x8x8-4C3-AP2-8-4", rng=seed) for seed in (0, 1))
    x = (np.random.default_rng(0).random((4, 3, 64)) < 0.5).astype(np.float32)
    counts, traces = other.forward(x)
    with pytest.raises(EvsimError, match="or they come from another network"):
        network.backward(traces, evsim.mse_rate(counts, np.array([0, 1, 2]), 4)[1])


def test_layers_whose_maps_differ_in_shape_do_not_chain():
    from evsim.layers import Pool2d, SparseLinear, SpikingConv2d
    rng = np.random.default_rng(0)
    conv = SpikingConv2d.uniform((1, 8, 8), 4, 3, rng, pad=1)  # gives 4x8x8
    pool = Pool2d((8, 4, 8), 2)                                 # as many cells, another map
    with pytest.raises(EvsimError, match="layer 2 takes 8x4x8 maps but layer 1 gives 4x8x8"):
        evsim.Network([conv, pool, SparseLinear.uniform(pool.n_out, 5, rng)])


@pytest.mark.parametrize("units, fragment", [
    (np.array([True, False, True, False]), r"got bool values \(a boolean mask: pass np.flatnonzero\(mask\)\)"),
    ([2.7], "got float64 values"),
    ([4], "units 0..3, got int64 values 4..4"),
    ([-1], "got int64 values -1..-1"),
])
def test_kill_takes_unit_indices_only(units, fragment):
    conv = evsim.Network.from_spec("2x9x9-5C3-AP2-4C3-6", rng=0).layers[2]
    with pytest.raises(EvsimError, match=fragment):
        conv.kill(units)
    assert conv.alive.all()


@pytest.mark.parametrize("spec, fragment", [
    ("1x8x8-3C99999999999999999999-4", "has a number larger than 2147483647"),
    ("1x8x8-99999999999C3-4", "has a number larger than 2147483647"),
    ("99999999999-4", "the input '99999999999' has a number larger than 2147483647"),
    ("1x8x8-3C3-2000000000", r"architecture '1x8x8-3C3-2000000000' needs about 17,881.4 GiB of memory \(weights "
                             r"17,881.4 GiB\) but the machine has .* GiB; give smaller layers"),
])
def test_architectures_no_machine_holds_are_one_clear_error(spec, fragment):
    with pytest.raises(EvsimError, match=fragment):
        evsim.Network.from_spec(spec)


def test_a_trainer_refuses_a_structure_with_no_layer_to_develop():
    from tests.runs import toy_config, toy_dataset
    with pytest.raises(EvsimError, match="no layer of this network develops"):
        evsim.Trainer(toy_config(develop="fc"), toy_dataset(), evsim.Network.mlp([30, 4], np.random.default_rng(0)))


def test_fit_takes_the_run_folder_as_text_too(tmp_path, monkeypatch):
    from evsim.train import Trainer
    from tests.runs import toy_config, toy_dataset

    monkeypatch.setattr("evsim.train.plot_training", lambda *args: None)
    Trainer(toy_config(epochs=1), toy_dataset()).fit(str(tmp_path / "run"), progress=False, echo=lambda line: None)
    assert (tmp_path / "run" / "summary.json").is_file()
