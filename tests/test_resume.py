"""Exact resume: a run stopped by Ctrl-C or killed with SIGKILL, then resumed, ends
bit-identical to the same run uninterrupted (weights, structure, every state array,
metrics; wall-clock fields apart)."""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from evsim.checkpoint import CHECKPOINT_LATEST, load_checkpoint
from evsim.cli.main import main
from evsim.errors import CheckpointError
from evsim.train import Trainer, TrainingInterrupted
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
    sync = trainer.network.sync_weights

    def sync_then_signal():
        sync()
        if trainer.batches_seen + 1 == batch:
            os.kill(os.getpid(), signal.SIGINT)

    trainer.network.sync_weights = sync_then_signal


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


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The tiny MNIST run, start to finish, in this process."""
    out = tmp_path_factory.mktemp("whole") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EVSIM_OFFLINE", "1")
        result = CliRunner().invoke(main, ["train", *TINY_MNIST, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


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
    assert "Interrupted: stopped in epoch 2/2 after batch" in stderr
    assert f"Resume with: evsim train --resume {out}" in stderr and "Traceback" not in stderr
    state = load_checkpoint(out / CHECKPOINT_LATEST)
    assert state.epoch == 1 and 0 <= state.in_epoch["position"] < 4000  # inside epoch 2 (its start included)

    result = CliRunner().invoke(main, ["train", "--resume", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert_same_run(uninterrupted, out)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows if r["type"] == "epoch"] == [1, 2]
