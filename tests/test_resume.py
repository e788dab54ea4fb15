"""Exact resume: a run stopped by Ctrl-C or killed with SIGKILL, then resumed, ends
bit-identical to the same run uninterrupted (weights, structure, every state array,
metrics; wall-clock fields apart). A damaged checkpoint is refused in one line naming
the file and the field, before anything trains or is written."""
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from evsim.checkpoint import CHECKPOINT_BEST, CHECKPOINT_LATEST, load_checkpoint
from evsim.cli.main import main
from evsim.errors import CheckpointError, ConfigError
from evsim.train import Trainer, TrainingInterrupted
from tests.conftest import one_line_error, run
from tests.runs import TINY_MNIST, assert_same_run, toy_config, toy_dataset

EVSIM = [sys.executable, "-c", "from evsim.cli.main import main; main()"]


@pytest.fixture(autouse=True)
def default_sigint():
    """Ctrl-C as in a terminal, even where the test runner inherited SIGINT ignored
    (a job started in the background with ``&``)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _default_sigint_in_child():
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def no_plots(monkeypatch):
    """Drawing training.png takes seconds on a loaded CI machine and is not under test here."""
    monkeypatch.setattr("evsim.train.plot_training", lambda *args: None)


def interrupt_at(trainer: Trainer, batch: int) -> None:
    """Send this process SIGINT while overall batch number ``batch`` (1-based) is being trained."""
    step = trainer.optimizer.step

    def step_then_signal(*args, **kwargs):
        step(*args, **kwargs)
        if trainer.batches_seen + 1 == batch:
            os.kill(os.getpid(), signal.SIGINT)

    trainer.optimizer.step = step_then_signal


@pytest.mark.parametrize("structure", ["sdsnn", "set", "magnitude", "none"])
def test_ctrl_c_stops_after_the_batch_and_resume_is_exact(tmp_path, structure, no_plots):
    config, dataset = toy_config(structure=structure), toy_dataset()
    Trainer(config, dataset).fit(tmp_path / "whole", progress=False, echo=lambda line: None)

    stopped = Trainer(config, dataset)
    interrupt_at(stopped, batch=13)  # 8 batches per epoch: inside epoch 2
    with pytest.raises(TrainingInterrupted, match="epoch 2/3 after batch 5 of 8"):
        stopped.fit(tmp_path / "split", progress=False, echo=lambda line: None)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is uninstalled
    state = load_checkpoint(tmp_path / "split" / CHECKPOINT_LATEST)
    assert (state.epoch, state.batches_seen, state.in_epoch["position"]) == (1, 13, 250)

    resumed = Trainer(config, dataset)
    resumed.restore(state)
    resumed.fit(tmp_path / "split", progress=False, echo=lambda line: None)
    assert_same_run(tmp_path / "whole", tmp_path / "split")


def test_ctrl_c_ignored_since_the_start_stays_ignored_while_training(tmp_path, no_plots):
    """A script's background job (``evsim train ... &``) starts with SIGINT ignored: a
    Ctrl-C meant for the script's foreground job stopped the training."""
    config, dataset = toy_config(epochs=2), toy_dataset()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    trainer = Trainer(config, dataset)
    interrupt_at(trainer, batch=5)
    trainer.fit(tmp_path, progress=False, echo=lambda line: None)
    assert trainer.epoch == 2 and signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def test_a_restored_trainer_continues_like_the_original(tmp_path, no_plots):
    """Not only the saved files: the live generator, optimizer and development state match."""
    config, dataset = toy_config(epochs=2), toy_dataset()
    original = Trainer(config, dataset)
    original.fit(tmp_path, progress=False, echo=lambda line: None)
    copy = Trainer(config, dataset)
    copy.restore(load_checkpoint(tmp_path / CHECKPOINT_LATEST))
    assert copy.rng.random() == original.rng.random()
    assert copy.optimizer.steps == original.optimizer.steps == 16
    assert copy.structure.step == original.structure.step == 8
    for k, dev in original.structure.state.items():
        for name, value in vars(dev).items():
            restored = getattr(copy.structure.state[k], name)
            assert type(restored) is type(value) and np.array_equal(restored, value), name


def test_restore_refuses_another_configuration_or_data(tmp_path, no_plots):
    dataset = toy_dataset()
    Trainer(toy_config(epochs=1), dataset).fit(tmp_path, progress=False, echo=lambda line: None)
    state = load_checkpoint(tmp_path / CHECKPOINT_LATEST)
    with pytest.raises(CheckpointError, match=r"different configuration \(lr\)"):
        Trainer(toy_config(epochs=1, lr=0.01), dataset).restore(state)
    with pytest.raises(CheckpointError, match="trained on 'toy' data but the data found now is 'other'"):
        Trainer(toy_config(epochs=1), toy_dataset(source="other")).restore(state)
    del state.structure["0.grad_sum"]
    with pytest.raises(CheckpointError, match=r"missing: \['0.grad_sum'\]"):
        Trainer(toy_config(epochs=1), dataset).restore(state)


def test_resuming_on_fewer_threads_than_the_run_trained_with_says_so(tmp_path, no_plots, monkeypatch):
    """The parallel kernels sum in another order on fewer threads: the resume would not be exact."""
    import numba

    from evsim.train import resume

    Trainer(toy_config(epochs=1, threads=2), toy_dataset()).fit(tmp_path, progress=False, echo=lambda line: None)
    monkeypatch.setattr(numba.config, "NUMBA_NUM_THREADS", 1)
    with pytest.raises(ConfigError, match=r"trained with 2 Numba threads and only 1 are available here "
                                          r"\(NUMBA_NUM_THREADS=1\); an exact resume needs 2"):
        resume(tmp_path, progress=False, echo=lambda line: None, epochs=2)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The tiny MNIST run, start to finish, in this process."""
    out = tmp_path_factory.mktemp("whole") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EVSIM_OFFLINE", "1")
        result = CliRunner().invoke(main, ["train", *TINY_MNIST, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.parametrize("text, says", [("[1, 2]", "the configuration must be an object, got [1, 2]"),
                                         ("null", "the configuration must be an object, got None"),
                                         (None, "checkpoints must be one of all, latest, none, got 'bogus'")])
def test_resume_of_a_folder_whose_config_json_is_no_object_or_no_policy_is_one_line(uninterrupted, tmp_path,
                                                                                    text, says):
    copy = tmp_path / "run"
    shutil.copytree(uninterrupted, copy)
    config = copy / "config.json"
    config.write_text(text or json.dumps({**json.loads(config.read_text()), "checkpoints": "bogus"}))
    line = one_line_error(run(["train", "--resume", str(copy), "--epochs", "3"]))
    assert f"{config}: invalid stored configuration ({says})" in line


def start_and_signal_in_epoch_2(out, sig) -> subprocess.Popen:
    """Start the tiny run in a subprocess and send ``sig`` once epoch 2 is under way."""
    proc = subprocess.Popen([*EVSIM, "train", *TINY_MNIST, "--out", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "EVSIM_OFFLINE": "1"},
                            preexec_fn=_default_sigint_in_child)
    for line in proc.stdout:  # epoch 1's line is printed after its checkpoint is written
        if line.startswith("epoch   1"):
            break
    # At once: epoch 2's 40 batches can take as little as 0.2 s, and a signal that
    # arrives after the last batch finds nothing left to interrupt.
    proc.send_signal(sig)
    return proc


def test_sigkill_mid_epoch_then_resume_matches_the_uninterrupted_run(tmp_path, uninterrupted):
    out = tmp_path / "run"
    proc = start_and_signal_in_epoch_2(out, signal.SIGKILL)
    assert proc.wait(timeout=120) == -signal.SIGKILL
    proc.stdout.close(), proc.stderr.close()
    state = load_checkpoint(out / CHECKPOINT_LATEST)
    assert state.epoch == 1 and state.in_epoch is None, "killed inside epoch 2: the epoch-1 checkpoint is latest"
    assert not (out / "summary.json").exists()

    result = CliRunner().invoke(main, ["train", "--resume", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert f"resuming {out} at epoch 2/2" in result.output
    assert_same_run(uninterrupted, out)


def test_sigint_checkpoints_mid_epoch_says_how_to_resume_and_resumes_exactly(tmp_path, uninterrupted):
    out = tmp_path / "run"
    proc = start_and_signal_in_epoch_2(out, signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert re.search(r"Interrupted: stopped in epoch 2/2 (after batch [1-9]|before its first batch)", stderr), stderr
    assert f"Resume with: evsim train --resume {out}" in stderr and "Traceback" not in stderr
    state = load_checkpoint(out / CHECKPOINT_LATEST)
    assert state.epoch == 1 and 0 <= state.in_epoch["position"] < 4000  # inside epoch 2 (its start included)

    result = CliRunner().invoke(main, ["train", "--resume", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert_same_run(uninterrupted, out)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows if r["type"] == "epoch"] == [1, 2]


def test_sigterm_checkpoints_mid_epoch_like_ctrl_c_and_exits_143(tmp_path, uninterrupted):
    """What SLURM, timeout and docker stop send: the batch finishes, the state is saved."""
    out = tmp_path / "run"
    proc = start_and_signal_in_epoch_2(out, signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert re.search(r"Stopped by SIGTERM: stopped in epoch 2/2 (after batch [1-9]|before its first batch)", stderr)
    assert f"Resume with: evsim train --resume {out}" in stderr and "Traceback" not in stderr
    state = load_checkpoint(out / CHECKPOINT_LATEST)
    assert state.epoch == 1 and state.in_epoch is not None

    result = CliRunner().invoke(main, ["train", "--resume", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert_same_run(uninterrupted, out)


# ------------------------------------------------------------ damaged checkpoints
@pytest.fixture(scope="module")
def templates(tmp_path_factory):
    """Toy run folders: ``sdsnn`` stopped inside epoch 2 (position in the epoch, development
    rows, regeneration columns and sums in use), and ``set`` after its one epoch (the
    controller's own generator)."""
    root = tmp_path_factory.mktemp("templates")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("evsim.train.plot_training", lambda *args: None)
        stopped = Trainer(toy_config(epochs=2), toy_dataset())
        interrupt_at(stopped, batch=11)  # 8 batches per epoch, development every 2
        with pytest.raises(TrainingInterrupted):
            stopped.fit(root / "sdsnn", progress=False, echo=lambda line: None)
        Trainer(toy_config(epochs=1, structure="set"), toy_dataset()).fit(root / "set", progress=False,
                                                                           echo=lambda line: None)
    state = load_checkpoint(root / "sdsnn" / CHECKPOINT_LATEST)
    assert state.in_epoch["position"] == 150 and state.structure["0.window_batches"].any() and state.structure["0.columns"].size
    return root


@pytest.fixture
def toy_data(monkeypatch):
    """``evsim train --resume`` on a toy run: the toy data stands in for a dataset on disk."""
    monkeypatch.setattr("evsim.train._load_announced", lambda config, echo: toy_dataset())


def rewrite(path, damage) -> None:
    """Rewrite the npz file ``path`` after ``damage(meta, arrays)`` changed its members in place."""
    with np.load(path, allow_pickle=False) as f:
        arrays = {key: np.array(f[key]) for key in f.files}
    meta = json.loads(str(arrays.pop("meta")))
    damage(meta, arrays)
    path.unlink()  # checkpoint-best.npz may be a hard link to it: leave that alone
    np.savez(path, meta=np.array(json.dumps(meta)), **arrays)


# Damages: each changes the checkpoint's ``meta`` (JSON) and ``arrays`` (members) in place.
def drop(name):
    return lambda values: values.pop(name)


def put(name, value):
    return lambda values: values.__setitem__(name, value)


def in_meta(key, change):
    return lambda meta, arrays: change(meta[key])


def in_array(key, change):
    return lambda meta, arrays: arrays.__setitem__(key, change(arrays[key]))


def negative(values):
    values[3] = -1.0
    return values


def nan(values):
    values[3] = np.nan
    return values


def duplicate(values):
    values[1] = values[0]
    return values


def shift_columns(values):
    values[-1] = 12  # the hidden layer has 12 neurons: columns 0..11
    return values


def even_inc(state):
    state["state"]["inc"] -= 1


def drop_row(kind):
    def change(meta, arrays):
        rows = meta["metrics"]
        rows.pop(max(i for i, row in enumerate(rows) if row["type"] == kind))
    return change


def in_row(kind, key, value):
    def change(meta, arrays):
        next(row for row in meta["metrics"] if row["type"] == kind)[key] = value
    return change


def meta_with(**values):
    return lambda meta, arrays: meta.update(values)


# (template, damage, what the one-line error says after "damaged checkpoint (")
DAMAGES = {
    # optimizer
    "optimizer without steps": ("sdsnn", in_meta("optimizer", drop("steps")),
                                'optimizer must be {"name": ..., "steps": ...}, got {\'name\': \'adam\'}'),
    "optimizer steps negative": ("sdsnn", in_meta("optimizer", put("steps", -1)),
                                 "optimizer.steps must equal batches_seen 11 (one step per batch), got -1"),
    "optimizer steps a string": ("sdsnn", in_meta("optimizer", put("steps", "11")),
                                 "optimizer.steps must equal batches_seen 11 (one step per batch), got '11'"),
    "optimizer steps off by one": ("sdsnn", in_meta("optimizer", put("steps", 10)),
                                   "optimizer.steps must equal batches_seen 11"),
    "optimizer name": ("sdsnn", in_meta("optimizer", put("name", "sgd")),
                       "optimizer.name is 'sgd', but the run's configuration says 'adam'"),
    "moment too short": ("sdsnn", in_array("l0_state__adam_m", lambda v: v[:-1]),
                         "l0_state__adam_m must be float32 of shape (300,) (one per synapse of layer 0), "
                         "got a float32 array of shape (299,)"),
    "moment float64": ("sdsnn", in_array("l1_state__adam_v", lambda v: v.astype(np.float64)),
                       "l1_state__adam_v must be float32 of shape (48,) (one per synapse of layer 1), "
                       "got a float64 array of shape (48,)"),
    "moment two-dimensional": ("sdsnn", in_array("l0_state__adam_m", lambda v: v[:, None]),
                               "l0_state__adam_m must be float32 of shape (300,)"),
    "moment NaN": ("sdsnn", in_array("l0_state__adam_m", nan), "l0_state__adam_m holds NaN or infinite values"),
    "second moment negative": ("sdsnn", in_array("l0_state__adam_v", negative),
                               "l0_state__adam_v holds negative values"),
    "bias moment missing": ("sdsnn", lambda meta, arrays: arrays.pop("l1_bias_state__adam_m"),
                            "l1_bias_state__adam_m is missing (one per neuron of layer 1)"),
    "bias moment wrong length": ("sdsnn", in_array("l0_bias_state__adam_v", lambda v: v[:4]),
                                 "l0_bias_state__adam_v must be float32 of shape (12,) (one per neuron of layer 0)"),
    "moment of another optimizer": ("sdsnn", lambda meta, arrays: arrays.update(
        l0_state__momentum=np.zeros(300, np.float32)), "l0_state__momentum is not a state array of this run"),
    "spine range missing": ("sdsnn", lambda meta, arrays: arrays.pop("l0_state__r_plus"),
                            "l0_state__r_plus is missing (one per synapse of layer 0)"),
    "spine counter float": ("sdsnn", in_array("l0_state__above_n", lambda v: v.astype(np.float32)),
                            "l0_state__above_n must be int32 of shape (300,)"),
    # random generators
    "rng missing": ("sdsnn", lambda meta, arrays: meta.pop("rng"), "no 'rng' in meta"),
    "rng without the trainer's": ("sdsnn", in_meta("rng", drop("trainer")),
                                  "rng must hold the state of the trainer's generator ('trainer') only, got {}"),
    "rng without state": ("sdsnn", in_meta("rng", lambda rng: rng["trainer"].pop("state")),
                          "rng.trainer must be a bit-generator state with the keys bit_generator, state, "
                          "has_uint32, uinteger"),
    "rng of another generator": ("sdsnn", in_meta("rng", lambda rng: rng["trainer"].update(bit_generator="MT19937")),
                                 "rng.trainer.bit_generator must be 'PCG64', got 'MT19937'"),
    "rng state a float": ("sdsnn", in_meta("rng", lambda rng: rng["trainer"]["state"].update(state=1.5)),
                          "rng.trainer.state.state must be an integer in [0, 2**128), got 1.5"),
    "rng state not an object": ("sdsnn", in_meta("rng", lambda rng: rng["trainer"].update(state=5)),
                                "rng.trainer.state must have the keys state, inc, got 5"),
    "rng has_uint32": ("sdsnn", in_meta("rng", lambda rng: rng["trainer"].update(has_uint32=2)),
                       "rng.trainer.has_uint32 must be 0 or 1, got 2"),
    "rng increment even": ("sdsnn", in_meta("rng", lambda rng: even_inc(rng["trainer"])),
                           "rng.trainer.state.inc must be odd"),
    "rng uinteger too big": ("sdsnn", in_meta("rng", lambda rng: rng["trainer"].update(uinteger=2 ** 40)),
                             "rng.trainer.uinteger must be an integer in [0, 2**32), got 1099511627776"),
    # the position inside the interrupted epoch
    "order not a permutation": ("sdsnn", in_array("epoch__order", duplicate),
                                "in_epoch.order must be a permutation of the training samples 0..N-1"),
    "order short": ("sdsnn", in_array("epoch__order", lambda v: v[v != 0]),
                    "in_epoch.order must be a permutation of the training samples 0..N-1"),
    "order float": ("sdsnn", in_array("epoch__order", lambda v: v.astype(np.float64)),
                    "in_epoch.order must be a permutation of the training samples 0..N-1, got a float64 array"),
    "order member gone": ("sdsnn", lambda meta, arrays: arrays.pop("epoch__order"),
                          "in_epoch.order refers to a member 'epoch__order' the file does not hold"),
    "position negative": ("sdsnn", in_meta("in_epoch", lambda d: d.update(position={"json": -50})),
                          "in_epoch.position must be a multiple of batch_size 50 in [0, 400) (samples of the epoch "
                          "done), got -50"),
    "position past the end": ("sdsnn", in_meta("in_epoch", lambda d: d.update(position={"json": 400})),
                              "in_epoch.position must be a multiple of batch_size 50 in [0, 400)"),
    "position inside a batch": ("sdsnn", in_meta("in_epoch", lambda d: d.update(position={"json": 175})),
                                "in_epoch.position must be a multiple of batch_size 50 in [0, 400)"),
    "position missing": ("sdsnn", in_meta("in_epoch", drop("position")),
                         "in_epoch must have the keys order, position, total_loss, correct (no 'position')"),
    "position not packed": ("sdsnn", in_meta("in_epoch", put("position", 150)),
                            'in_epoch.position must be {"array" or "scalar": member} or {"json": value}, got 150'),
    "in_epoch key unexpected": ("sdsnn", in_meta("in_epoch", put("batch", {"json": 3})),
                                "in_epoch must have the keys order, position, total_loss, correct (an unexpected "
                                "'batch')"),
    "running loss NaN": ("sdsnn", in_meta("in_epoch", lambda d: d.update(total_loss={"json": math.nan})),
                         "in_epoch.total_loss must be a finite number >= 0, got nan"),
    "more correct than seen": ("sdsnn", in_meta("in_epoch", lambda d: d.update(correct={"json": 151})),
                               "in_epoch.correct must be an integer in [0, position = 150], got 151"),
    "batches seen off": ("sdsnn", meta_with(batches_seen=10, optimizer={"name": "adam", "steps": 10}),
                         "batches_seen is 10, but 1 epochs of 8 batches and 3 of this one make 11"),
    # counters
    "epoch a string": ("sdsnn", meta_with(epoch="1"), "epoch must be an integer in [0, 2] (finished epochs), got '1'"),
    "epoch NaN": ("sdsnn", meta_with(epoch=math.nan), "epoch must be an integer in [0, 2] (finished epochs), got nan"),
    "epoch past the last": ("sdsnn", meta_with(epoch=3), "epoch must be an integer in [0, 2]"),
    "epoch finished but inside one": ("sdsnn", meta_with(epoch=2),
                                      "in_epoch is set, but epoch 2 says all 2 epochs are finished"),
    "epoch missing": ("sdsnn", lambda meta, arrays: meta.pop("epoch"), "no 'epoch' in meta"),
    "batches seen negative": ("sdsnn", meta_with(batches_seen=-1), "batches_seen must be an integer >= 0, got -1"),
    "data source": ("sdsnn", meta_with(data_source=None), "data_source must be a string, got None"),
    # metrics (the best accuracy is read from them)
    "metrics not a list": ("sdsnn", meta_with(metrics={}), "metrics must be a list of rows, got {}"),
    "test accuracy NaN": ("sdsnn", in_row("epoch", "test_acc", math.nan),
                          "metrics[4].test_acc must be a finite number, got nan"),
    "test accuracy above 1": ("sdsnn", in_row("epoch", "test_acc", 1.5),
                              "metrics[4] has an accuracy outside [0, 1] (train_acc"),
    "wall clock a string": ("sdsnn", in_row("epoch", "wall_s", "1.0"),
                            "metrics[4].wall_s must be a finite number, got '1.0'"),
    "epoch row gone": ("sdsnn", drop_row("epoch"), "metrics hold 0 epoch rows, but epoch is 1"),
    "development row gone": ("sdsnn", drop_row("development"),
                             "metrics hold 4 development rows, but the structure controller took 5 steps"),
    "development rows renumbered": ("sdsnn", in_row("development", "step", 7),
                                    "metrics[0].step must be 1 (the development rows count from 1), got 7"),
    "row of no kind": ("sdsnn", in_row("epoch", "type", "epochs"), "metrics[4] must be an epoch or development row"),
    # the structure controller (SD-SNN)
    "structure for a run without one": ("sdsnn", lambda meta, arrays: meta["config"].update(structure="none"),
                                        "structure must be null: the run has no structure controller"),
    "structure not an object": ("sdsnn", meta_with(structure=[1]), "structure must be an object, got [1]"),
    "structure null": ("sdsnn", meta_with(structure=None),
                       "structure is null, but the run's sdsnn controller has a state"),
    "structure key missing": ("sdsnn", in_meta("structure", drop("0.counter")),
                              "structure has no '0.counter' (the sdsnn controller's state is incomplete: a damaged file, or one "
                              "written by another evsim version)"),
    "structure key unexpected": ("sdsnn", in_meta("structure", put("1.rho", {"json": 20.0})),
                                 "structure has an unexpected '1.rho'"),
    "structure step": ("sdsnn", in_meta("structure", put("step", {"json": 4})),
                       "structure.step is 4, but batches_seen 11 // dev_interval 2 makes 5"),
    "structure step a float": ("sdsnn", in_meta("structure", put("step", {"json": 5.0})),
                               "structure.step must be an integer >= 0, got 5.0"),
    "rho NaN": ("sdsnn", in_meta("structure", put("0.rho", {"json": math.nan})),
                "structure.0.rho must be a finite number, got nan"),
    "rho above its cap": ("sdsnn", in_meta("structure", put("0.rho", {"json": 99.0})),
                          "structure.0.rho must be in [0, rho_max = 40.0], got 99.0"),
    "q not a percentile": ("sdsnn", in_meta("structure", put("0.q", {"json": 150.0})),
                           "structure.0.q must be a percentile in [0, 100], got 150.0"),
    "window batches negative": ("sdsnn", in_array("structure__0.window_batches", lambda v: v - 100),
                                "structure.0.window_batches must be counts >= 0, one per column of columns, got "
                                "a float64 array of shape (2,)"),
    "window batches of other columns": ("sdsnn", in_array("structure__0.window_batches", lambda v: v[:1]),
                                        "structure.0.window_batches must be counts >= 0, one per column of "
                                        "columns, got a float64 array of shape (1,)"),
    "window batches NaN": ("sdsnn", in_array("structure__0.window_batches", lambda v: v * np.nan),
                           "structure.0.window_batches holds NaN or infinite values"),
    "gradient sums of other inputs": ("sdsnn", in_array("structure__0.grad_sum", lambda v: v[:-1]),
                                      "structure.0.grad_sum has shape (29, 2), expected (30,) before the last size"),
    "gradient sums of other columns": ("sdsnn", in_array("structure__0.grad_sq_sum", lambda v: v[:, :1]),
                                       "structure.0.grad_sq_sum has shape (30, 1), expected (30, 2)"),
    "gradient sums NaN": ("sdsnn", in_array("structure__0.grad_sum", lambda v: v * np.nan),
                          "structure.0.grad_sum holds NaN or infinite values"),
    "counter dtype": ("sdsnn", in_array("structure__0.counter", lambda v: v.astype(np.int32)),
                      "structure.0.counter must be a 2-d int16 array, got a int32 array of shape (30, 2)"),
    "counter of other columns": ("sdsnn", in_array("structure__0.counter_columns", lambda v: v[:1]),
                                 "structure.0.counter must be counts >= 0 of shape (30, 1)"),
    "columns outside the layer": ("sdsnn", in_array("structure__0.columns", shift_columns),
                                  "structure.0.columns must be increasing column indices in [0, 12)"),
    "columns repeated": ("sdsnn", in_array("structure__0.counter_columns", duplicate),
                         "structure.0.counter_columns must be increasing column indices in [0, 12)"),
    # the structure controller (SET): its generator
    "SET generator missing": ("set", in_meta("structure", drop("rng")),
                              "structure has no 'rng' (the set controller's state is incomplete: a damaged file, or one "
                              "written by another evsim version)"),
    "SET generator increment even": ("set", in_meta("structure", lambda s: even_inc(s["rng"]["json"])),
                                     "structure.rng.state.inc must be odd"),
}


@pytest.mark.parametrize("template, damage, message", DAMAGES.values(), ids=DAMAGES.keys())
def test_a_damaged_checkpoint_is_refused_in_one_line_naming_the_file_and_field(templates, tmp_path, toy_data,
                                                                               template, damage, message):
    """Every reader (train --resume, eval) refuses it before anything trains or is written."""
    run_dir = shutil.copytree(templates / template, tmp_path / "run")
    path = run_dir / CHECKPOINT_LATEST
    rewrite(path, damage)
    before = {file.name: file.read_bytes() for file in run_dir.iterdir()}
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert f"{path}: damaged checkpoint ({message}" in str(info.value)
    for args in (["train", "--resume", str(run_dir)], ["eval", str(run_dir)]):
        line = one_line_error(run(args))
        assert f"Error: {path}: damaged checkpoint ({message}" in line, line
        assert line.endswith("; restore the file, or resume from checkpoint-best.npz by copying it to "
                             "checkpoint-latest.npz, or re-run training"), line
    assert {file.name: file.read_bytes() for file in run_dir.iterdir()} == before


@pytest.mark.parametrize("interval_batches", [3, 0])
def test_a_format_2_checkpoint_is_read_as_a_window(templates, tmp_path, toy_data, interval_batches):
    """Before format 3, SD-SNN kept the sums of the interval in progress and one batch count:
    they are read as a window whose every column holds that many batches (none: an empty
    window), and the run resumes to its end."""
    run_dir = shutil.copytree(templates / "sdsnn", tmp_path / "run")
    path = run_dir / CHECKPOINT_LATEST
    columns = load_checkpoint(path).structure["0.columns"]

    def as_format_2(meta, arrays):
        meta["format"] = 2
        del meta["structure"]["0.window_batches"], arrays["structure__0.window_batches"]
        meta["structure"]["0.batches"] = {"json": interval_batches}
        if not interval_batches:
            for name in ("grad_sum", "grad_sq_sum"):
                arrays[f"structure__0.{name}"] = arrays[f"structure__0.{name}"][:, :0]

    rewrite(path, as_format_2)
    state = load_checkpoint(path)
    want = columns if interval_batches else columns[:0]
    np.testing.assert_array_equal(state.structure["0.columns"], want)
    np.testing.assert_array_equal(state.structure["0.window_batches"], np.full(want.size, float(interval_batches)))
    assert run(["train", "--resume", str(run_dir)]).exit_code == 0
    assert load_checkpoint(path).epoch == 2


def test_a_damaged_best_checkpoint_does_not_suggest_itself(templates, tmp_path):
    path = shutil.copytree(templates / "sdsnn", tmp_path / "run") / CHECKPOINT_BEST
    rewrite(path, meta_with(epoch=-1))
    with pytest.raises(CheckpointError, match=r"got -1\); restore the file, or re-run training$"):
        load_checkpoint(path)


def test_a_checkpoint_that_does_not_fit_the_training_data_is_refused_on_resume(templates, tmp_path, toy_data):
    """What only the data found now can tell: a consistent file whose epoch order covers
    other samples, or whose batches seen are not its epochs' batches."""
    run_dir = shutil.copytree(templates / "sdsnn", tmp_path / "run")
    path = run_dir / CHECKPOINT_LATEST
    rewrite(path, in_array("epoch__order", lambda v: v[v != 399]))  # a permutation of 399 samples
    before = {file.name: file.read_bytes() for file in run_dir.iterdir()}
    one_line = one_line_error(run(["train", "--resume", str(run_dir)]))
    assert f"{path}: checkpoint's in-epoch order (in_epoch.order) covers 399 samples but the training split has " \
           f"400; make the run's data available" in one_line
    assert {file.name: file.read_bytes() for file in run_dir.iterdir()} == before  # nothing trained or written
    # At an epoch's end (the best checkpoint: epoch 1), 9 batches where 8 were trained.
    shutil.copyfile(run_dir / CHECKPOINT_BEST, path)
    rewrite(path, meta_with(batches_seen=9, optimizer={"name": "adam", "steps": 9}))
    one_line = one_line_error(run(["train", "--resume", str(run_dir)]))
    assert f"{path}: checkpoint's batches_seen is 9, but 1 epochs of 8 batches make 8; restore the file" in one_line
    with pytest.raises(CheckpointError, match="batches_seen is 9"):
        Trainer(toy_config(epochs=2), toy_dataset()).restore(load_checkpoint(path))
    # Which layers develop (l<k>_develops): SD-SNN's state says so already, SET's does not.
    path = shutil.copytree(templates / "set", tmp_path / "set") / CHECKPOINT_LATEST
    rewrite(path, lambda meta, arrays: arrays.update(l1_develops=np.array(True)))
    with pytest.raises(CheckpointError, match=r"developing layers \(l<k>_develops\) do not match the configuration's "
                                              r"\[True, False\]"):
        Trainer(toy_config(epochs=1, structure="set"), toy_dataset()).restore(load_checkpoint(path))


def test_an_intact_checkpoint_resumes_and_so_does_the_fix_the_error_gives(templates, tmp_path, toy_data, no_plots):
    intact = shutil.copytree(templates / "sdsnn", tmp_path / "intact")
    result = run(["train", "--resume", str(intact), "--no-progress"])
    assert result.exit_code == 0 and f"resuming {intact} at epoch 2/2, batch 4 of 8" in result.output, result.output
    damaged = shutil.copytree(templates / "sdsnn", tmp_path / "damaged")
    rewrite(damaged / CHECKPOINT_LATEST, meta_with(epoch="1"))
    one_line_error(run(["train", "--resume", str(damaged)]))
    shutil.copyfile(damaged / CHECKPOINT_BEST, damaged / CHECKPOINT_LATEST)
    result = run(["train", "--resume", str(damaged), "--no-progress"])
    assert result.exit_code == 0 and f"resuming {damaged} at epoch 2/2\n" in result.output, result.output


def test_with_structure_none_no_layer_develops_and_an_older_checkpoint_that_said_so_resumes(tmp_path, no_plots):
    from evsim.checkpoint import NETWORK_FILE, save_checkpoint
    from evsim.nir_io import network_to_nir
    from evsim.checkpoint import load_network

    config, dataset = toy_config(structure="none", hidden=(12, 8)), toy_dataset()
    summary = Trainer(config, dataset).fit(tmp_path / "whole", progress=False, echo=lambda line: None)
    assert [row["develops"] for row in summary["layers"]] == [False, False, False]
    assert not any(layer.develops for layer in load_checkpoint(tmp_path / "whole" / CHECKPOINT_LATEST).network.layers)
    graph = network_to_nir(load_network(tmp_path / "whole" / NETWORK_FILE))
    assert not any(node.metadata.get("evsim_develops") for node in graph.nodes.values()
                   if getattr(node, "metadata", None))

    stopped = Trainer(config, dataset)
    interrupt_at(stopped, batch=13)
    with pytest.raises(TrainingInterrupted):
        stopped.fit(tmp_path / "old", progress=False, echo=lambda line: None)
    state = load_checkpoint(tmp_path / "old" / CHECKPOINT_LATEST)
    for layer in state.network.layers[:-1]:  # as an evsim that marked --develop's layers under none wrote it
        layer.develops = True
    save_checkpoint([tmp_path / "old" / CHECKPOINT_LATEST], state)
    resumed = Trainer(config, dataset)
    resumed.restore(load_checkpoint(tmp_path / "old" / CHECKPOINT_LATEST))
    resumed.fit(tmp_path / "old", progress=False, echo=lambda line: None)
    assert_same_run(tmp_path / "whole", tmp_path / "old")


def test_a_stop_before_an_epochs_first_batch_says_so(tmp_path):
    from tests.runs import toy_config, toy_dataset
    trainer = Trainer(toy_config(epochs=2), toy_dataset())
    trainer.stop_signal = signal.SIGINT
    with pytest.raises(TrainingInterrupted, match=r"stopped in epoch 1/2 before its first batch$"):
        trainer.train_epoch(progress=False)


def test_a_conv_run_resumed_on_another_kind_of_machine_says_it_is_not_bit_for_bit(tmp_path, no_plots):
    from evsim.kernels import conv_paths

    out = tmp_path / "conv"
    args = ["--dataset", "mnist", "--arch", "1x28x28-2C3-AP4-10", "--time-steps", "2", "--structure", "none",
            "--threads", "1", "--no-progress"]
    assert run(["train", *args, "--epochs", "1", "--out", str(out)]).exit_code == 0
    config = json.loads((out / "config.json").read_text())
    assert config["path_table"] == conv_paths.HOST.name
    other = "avx2" if conv_paths.HOST.name == "avx512" else "avx512"
    (out / "config.json").write_text(json.dumps({**config, "path_table": other}))
    result = run(["train", "--resume", str(out), "--epochs", "2"])
    assert result.exit_code == 0, result.output
    assert (f"NOTE: {out} trained on a machine with {other.upper()} and goes on here with "
            f"{conv_paths.HOST.name.upper()}: its convolutions sum in another order") in result.output
    assert json.loads((out / "config.json").read_text())["path_table"] == conv_paths.HOST.name
    assert "trained on a machine with" not in run(["train", "--resume", str(out), "--epochs", "3"]).output


# ------------------------------------------------- the checkpoint and resume audit
def test_another_runs_checkpoint_is_refused_where_config_json_is_gone(tmp_path, no_plots, toy_data):
    """The folder's network.npz and checkpoint-best.npz still name its run: the copy was
    resumed, and the folder's own results, checkpoint-best.npz included, overwritten."""
    from evsim.train import resume

    Trainer(toy_config(epochs=2), toy_dataset()).fit(tmp_path / "mine", progress=False, echo=lambda line: None)
    Trainer(toy_config(epochs=1, hidden=(8,)), toy_dataset()).fit(tmp_path / "other", progress=False,
                                                                 echo=lambda line: None)
    mine = tmp_path / "mine"
    best = (mine / CHECKPOINT_BEST).read_bytes()
    (mine / "config.json").unlink()
    (mine / CHECKPOINT_LATEST).unlink()  # a hard link to the best: the best stays
    shutil.copy(tmp_path / "other" / CHECKPOINT_LATEST, mine / CHECKPOINT_LATEST)
    other_id = load_checkpoint(mine / CHECKPOINT_LATEST).run_id
    with pytest.raises(CheckpointError, match=f"belongs to run {other_id}, not to the run in {mine} \\(run \\w+ in "
                                              "its network.npz\\): it was copied from another run folder"):
        resume(mine, progress=False, echo=lambda line: None)
    assert (mine / CHECKPOINT_BEST).read_bytes() == best


def test_repair_never_replaces_another_runs_best(tmp_path, no_plots):
    from evsim.runfiles import repair_best
    from evsim.runfiles import read_metrics

    for name in ("a", "b"):
        Trainer(toy_config(epochs=1), toy_dataset()).fit(tmp_path / name, progress=False, echo=lambda line: None)
    (tmp_path / "a" / CHECKPOINT_BEST).unlink()
    shutil.copy(tmp_path / "b" / CHECKPOINT_BEST, tmp_path / "a" / CHECKPOINT_BEST)
    metrics = read_metrics(tmp_path / "a")
    assert not repair_best(tmp_path / "a", metrics, 1, CHECKPOINT_LATEST, CHECKPOINT_BEST)
    assert (tmp_path / "a" / CHECKPOINT_BEST).read_bytes() == (tmp_path / "b" / CHECKPOINT_BEST).read_bytes()


@pytest.mark.parametrize("name", ["config.json", CHECKPOINT_BEST])
def test_a_fifo_in_a_run_folder_is_refused_not_waited_on(tmp_path, no_plots, toy_data, name):
    import threading

    from evsim.train import resume

    Trainer(toy_config(epochs=1), toy_dataset()).fit(tmp_path / "run", progress=False, echo=lambda line: None)
    fifo = tmp_path / "run" / name
    fifo.unlink()
    os.mkfifo(fifo)
    raised = []

    def attempt():
        try:
            resume(tmp_path / "run", progress=False, echo=lambda line: None, epochs=2)
        except CheckpointError as exc:
            raised.append(str(exc))

    worker = threading.Thread(target=attempt)
    worker.start()
    worker.join(120)
    if worker.is_alive():  # it waits on the FIFO: a writer opening it lets it go
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join()
        pytest.fail(f"resume waited on the FIFO {name}")
    assert raised and raised[0].startswith(f"{fifo}: is a FIFO"), raised


def test_a_resume_of_no_folder_says_so_and_makes_none(tmp_path):
    from evsim.runlock import run_lock
    from evsim.train import resume

    with pytest.raises(CheckpointError, match=f"{tmp_path / 'nx' / 'a' / 'b'}: no such folder; give the folder of "
                                              "the run to resume"):
        resume(tmp_path / "nx" / "a" / "b", progress=False)
    with pytest.raises(ValueError), run_lock(tmp_path / "ny" / "a" / "b"):
        assert (tmp_path / "ny" / "a" / "b").is_dir()
        raise ValueError("a start that failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_signal_after_the_last_batch_is_acknowledged(tmp_path, no_plots):
    trainer = Trainer(toy_config(epochs=2), toy_dataset())
    evaluate = trainer.evaluate

    def evaluate_then_signal(split):
        if split == "test" and trainer.epoch == 1:  # the last epoch's evaluation
            os.kill(os.getpid(), signal.SIGTERM)
        return evaluate(split)

    trainer.evaluate = evaluate_then_signal
    lines = []
    summary = trainer.fit(tmp_path / "run", progress=False, echo=lines.append)
    assert summary["epochs"] == 2
    assert lines[-1] == "NOTE: SIGTERM came after the last batch; the run finished and everything is saved"


def test_shortening_an_interrupted_run_says_so_and_policy_changes_tidy_a_finished_run(tmp_path, no_plots, toy_data):
    from evsim.train import resume

    stopped = Trainer(toy_config(epochs=3), toy_dataset())
    interrupt_at(stopped, batch=3)
    with pytest.raises(TrainingInterrupted):
        stopped.fit(tmp_path / "run", progress=False, echo=lambda line: None)
    lines = []
    resume(tmp_path / "run", progress=False, echo=lines.append, epochs=2)
    assert f"shortening {tmp_path / 'run'} from 3 to 2 epochs" in lines
    resume(tmp_path / "run", progress=False, echo=lambda line: None, checkpoints="latest")
    assert (tmp_path / "run" / CHECKPOINT_LATEST).exists() and not (tmp_path / "run" / CHECKPOINT_BEST).exists()
    resume(tmp_path / "run", progress=False, echo=lambda line: None, checkpoints="none")
    assert not (tmp_path / "run" / CHECKPOINT_LATEST).exists() and (tmp_path / "run" / "network.npz").exists()
    assert json.loads((tmp_path / "run" / "config.json").read_text())["checkpoints"] == "none"


def test_the_hint_after_an_extension_stopped_under_checkpoints_none_keeps_its_epochs(tmp_path, no_plots, toy_data,
                                                                                    monkeypatch):
    """The state on disk was saved before this session's --epochs: resuming it without
    them said there was nothing left to train."""
    Trainer(toy_config(epochs=1), toy_dataset()).fit(tmp_path / "ext", progress=False, echo=lambda line: None)

    def stopped(self, progress):
        raise TrainingInterrupted("stopped in epoch 2/3 after batch 1 of 8")

    monkeypatch.setattr(Trainer, "train_epoch", stopped)
    result = CliRunner().invoke(main, ["train", "--resume", str(tmp_path / "ext"), "--epochs", "3",
                                       "--checkpoints", "none", "--no-progress"])
    assert result.exit_code == 130
    assert result.output.strip().endswith(f"Resume from there with: evsim train --resume {tmp_path / 'ext'} --epochs 3")
