"""The validation split: a seeded, stratified hold-out of the training split that chooses
checkpoint-best, with the test accuracy at that epoch reported beside the final one."""
import json
import os
import signal

import numpy as np
import pytest

from evsim.checkpoint import load_checkpoint, stored_config
from evsim.config import TrainConfig
from evsim.data.base import Split, hold_out, stratified_indices
from evsim.data.frames import SparseFrames
from evsim.errors import ConfigError
from evsim.train import Trainer, TrainingInterrupted
from tests.conftest import one_line_error, run
from tests.runs import TINY_MNIST, assert_same_run, toy_config, toy_dataset


def test_hold_out_is_stratified_disjoint_and_a_pure_function_of_seed_and_labels():
    labels = np.repeat(np.arange(4), [100, 50, 20, 1])
    kept, held = stratified_indices(labels, 0.1, seed=3)
    assert np.array_equal(np.sort(np.concatenate([kept, held])), np.arange(labels.size))
    assert np.all(np.diff(kept) > 0) and np.all(np.diff(held) > 0)
    assert np.bincount(labels[held], minlength=4).tolist() == [10, 5, 2, 0]  # a class of one stays in training
    again = stratified_indices(labels, 0.1, seed=3)
    assert np.array_equal(again[1], held)
    assert not np.array_equal(stratified_indices(labels, 0.1, seed=4)[1], held)


def test_hold_out_never_takes_a_whole_class_and_zero_takes_nothing():
    labels = np.array([0, 0, 1, 1])
    assert stratified_indices(labels, 0.9, 0)[0].size == 2
    assert stratified_indices(labels, 0.0, 0)[1].size == 0


def test_the_rounding_goes_to_other_classes_with_other_seeds():
    """20 classes of 3 at 0.1: 6 samples held, one each from 6 classes; they were always
    classes 0-5, whatever the seed, so most classes were never validated."""
    labels = np.repeat(np.arange(20), 3)
    chosen = [set(labels[stratified_indices(labels, 0.1, seed)[1]].tolist()) for seed in range(20)]
    assert all(len(classes) == 6 for classes in chosen) and set.union(*chosen) == set(range(20))
    assert chosen[0] == set(range(6))  # seed 0 keeps the class order: runs made before are unchanged


def test_a_class_too_small_to_give_passes_its_share_on():
    labels = np.repeat(np.arange(5), [1, 1, 1, 1, 10])
    assert np.bincount(labels[stratified_indices(labels, 0.3, 0)[1]], minlength=5).tolist() == [0, 0, 0, 0, 4]


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_hold_out_refuses_fractions_outside_0_1(fraction):
    with pytest.raises(ConfigError, match="--val-fraction must be in"):
        stratified_indices(np.zeros(10), fraction, 0)


def test_hold_out_selects_frame_stores_without_copying_events():
    frames = np.random.default_rng(0).integers(0, 3, (20, 2, 1, 2, 2)).astype(np.uint8)
    store = SparseFrames.from_dense(frames)
    labels = np.arange(20) % 2
    train, val = hold_out(Split(store, labels), 0.2, seed=0)
    assert len(train) == 16 and len(val) == 4 and val.inputs.idx is store.idx
    _, held = stratified_indices(labels, 0.2, 0)
    assert np.array_equal(val.inputs.to_dense(), frames[held]) and np.array_equal(val.labels, labels[held])


def test_training_records_val_acc_and_chooses_best_on_it(tmp_path):
    summary = Trainer(toy_config(val_fraction=0.25, epochs=3), toy_dataset()).fit(tmp_path, progress=False,
                                                                                   echo=lambda s: None)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    epochs = [row for row in rows if row["type"] == "epoch"]
    assert all(0 <= row["val_acc"] <= 1 for row in epochs)
    best = max(epochs, key=lambda row: row["val_acc"])
    assert summary["val_acc_best"] == best["val_acc"] and summary["best_epoch"] == best["epoch"]
    assert summary["test_acc_at_best_val"] == best["test_acc"]
    assert summary["best_test_acc"] == max(row["test_acc"] for row in epochs)
    assert summary["val_samples"] == 100
    assert load_checkpoint(tmp_path / "checkpoint-best.npz").epoch == best["epoch"]


def test_without_validation_best_is_chosen_on_test_as_before(tmp_path):
    summary = Trainer(toy_config(val_fraction=0.0), toy_dataset()).fit(tmp_path, progress=False, echo=lambda s: None)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert not any("val_acc" in row for row in rows)
    assert summary["test_acc_at_best_val"] is None and summary["val_acc_best"] is None and summary["val_samples"] == 0


def test_the_trainer_trains_on_the_rest_of_the_training_split():
    trainer = Trainer(toy_config(val_fraction=0.1), toy_dataset())
    assert len(trainer.dataset.train) == 360 and len(trainer.dataset.val) == 40
    assert trainer.batches_per_epoch() == 8


def test_a_fraction_that_holds_out_nothing_trains_without_validation_and_says_so():
    lines = []
    trainer = Trainer(toy_config(val_fraction=0.01, epochs=1), toy_dataset(train=40))
    summary = trainer.fit(None, progress=False, echo=lines.append)
    assert trainer.dataset.val is None and len(trainer.dataset.train) == 40 and summary["val_samples"] == 0
    assert any(line.startswith("NOTE: --val-fraction 0.01 holds out no sample of the 40") for line in lines)


def test_ctrl_c_and_resume_with_validation_is_exact(tmp_path, monkeypatch):
    """Stopped inside epoch 2 of 3 and resumed: the same run as uninterrupted."""
    monkeypatch.setattr("evsim.train.plot_training", lambda *args: None)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        config, dataset = toy_config(val_fraction=0.2), toy_dataset()
        Trainer(config, dataset).fit(tmp_path / "whole", progress=False, echo=lambda line: None)
        stopped = Trainer(config, dataset)
        step = stopped.optimizer.step

        def step_then_signal(*args, **kwargs):
            step(*args, **kwargs)
            if stopped.batches_seen + 1 == 10:
                os.kill(os.getpid(), signal.SIGINT)

        stopped.optimizer.step = step_then_signal
        with pytest.raises(TrainingInterrupted):
            stopped.fit(tmp_path / "split", progress=False, echo=lambda line: None)
    finally:
        signal.signal(signal.SIGINT, previous)
    resumed = Trainer(config, dataset)
    resumed.restore(load_checkpoint(tmp_path / "split" / "checkpoint-latest.npz"))
    resumed.fit(tmp_path / "split", progress=False, echo=lambda line: None)
    assert_same_run(tmp_path / "whole", tmp_path / "split")


def test_configurations_saved_before_validation_mean_no_validation(tmp_path):
    values = toy_config().to_dict()
    del values["val_fraction"]
    assert stored_config(values, tmp_path / "config.json").val_fraction == 0.0
    assert TrainConfig.from_dict(values).val_fraction == 0.0


def test_cli_option_config_file_and_preset(tmp_path, captured):
    assert run(["train", "--dataset", "mnist", "--out", str(tmp_path / "a")]).exit_code == 0
    assert captured[-1].val_fraction == 0.1
    assert run(["train", "--dataset", "mnist", "--val-fraction", "0", "--out", str(tmp_path / "b")]).exit_code == 0
    assert captured[-1].val_fraction == 0.0
    assert "val_fraction = 0.0" in (tmp_path / "b" / "config.toml").read_text()
    (tmp_path / "c.toml").write_text("val_fraction = 0.25\n")
    assert run(["train", "--config", str(tmp_path / "c.toml"), "--out", str(tmp_path / "c")]).exit_code == 0
    assert captured[-1].val_fraction == 0.25
    assert "--val-fraction': must be < 1, got 1" in one_line_error(run(["train", "--val-fraction", "1",
                                                                       "--out", str(tmp_path / "d")]))


def test_cli_run_reports_test_at_best_validation(tmp_path):
    out = tmp_path / "run"
    result = run(["train", *TINY_MNIST, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "val " in result.output and "at the best validation epoch" in result.output
    assert "paper-style" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["val_samples"] == 400 and summary["test_acc_at_best_val"] is not None


def test_a_validation_split_that_leaves_less_than_a_batch_to_train_on_is_refused():
    with pytest.raises(ConfigError, match=r"--val-fraction 0.9 leaves 40 of the 400 training samples to train on, "
                                          r"less than one batch \(--batch-size 50\); hold out less, or give a smaller --batch-size"):
        Trainer(toy_config(val_fraction=0.9), toy_dataset())
    Trainer(toy_config(val_fraction=0.8), toy_dataset())  # 80 samples: more than a batch


def test_a_data_set_smaller_than_a_batch_may_hold_out_samples():
    """It trains in one batch of what is left, as it does without a hold-out."""
    trainer = Trainer(toy_config(val_fraction=0.1, batch_size=500), toy_dataset())  # 400 training samples
    assert len(trainer.dataset.train) == 360 and len(trainer.dataset.val) == 40 and trainer.batches_per_epoch() == 1


def test_eval_of_the_train_split_leaves_out_the_samples_the_run_held_out(tmp_path):
    out = tmp_path / "run"
    assert run(["train", *TINY_MNIST, "--out", str(out)]).exit_code == 0
    summary = json.loads((out / "summary.json").read_text())
    sizes = {}
    for split in ("train", "val", "test"):
        result = run(["eval", str(out), "--split", split, "--json", str(tmp_path / f"{split}.json")])
        assert result.exit_code == 0, result.output
        sizes[split] = json.loads((tmp_path / f"{split}.json").read_text())["samples"]
    assert sizes["val"] == summary["val_samples"] == 400
    assert sizes["train"] == 4000 - 400  # the 5,000-digit sample: 4,000 train, 1,000 test
    profiled = run(["profile", str(out), "--split", "train", "--json", str(tmp_path / "p.json")])
    assert profiled.exit_code == 0, profiled.output
    assert json.loads((tmp_path / "p.json").read_text())["samples"] == 3600
