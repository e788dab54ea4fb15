"""Hazards of long-lived run folders: checkpoints a later session's policy no longer
keeps, memory a run or an evaluation cannot have, default folders started in the
same second, SIGTERM, folders that only look like runs, and code bugs in readers."""
import shutil

import numpy as np
import pytest

from evsim.checkpoint import CHECKPOINT_BEST, CHECKPOINT_LATEST, NETWORK_FILE, load_checkpoint
from evsim.errors import ConfigError
from evsim.runfiles import best_epoch, read_metrics
from evsim.train import Trainer, TrainingInterrupted
from tests.conftest import one_line_error, run
from tests.test_hostile_runs import last_line_error

QUIET = {"progress": False, "echo": lambda line: None}
TINY = ["--dataset", "mnist", "--hidden", "16", "--time-steps", "4", "--batch-size", "500", "--structure", "none",
        "--threads", "1", "--no-progress"]


@pytest.fixture
def no_plots(monkeypatch):
    monkeypatch.setattr("evsim.train.plot_training", lambda *args: None)


# ------------------------------------------------ checkpoints another policy left
@pytest.mark.parametrize("policy, kept", [("latest", {CHECKPOINT_LATEST}), ("none", set())])
def test_resuming_under_another_policy_removes_the_checkpoints_it_does_not_keep(tmp_path, no_plots, policy, kept):
    from tests.runs import toy_config, toy_dataset

    dataset = toy_dataset()
    Trainer(toy_config(epochs=2), dataset).fit(tmp_path, **QUIET)
    assert (tmp_path / CHECKPOINT_BEST).exists()
    resumed = Trainer(toy_config(epochs=3), dataset)
    state = load_checkpoint(tmp_path / CHECKPOINT_LATEST)
    state.config["epochs"] = 3  # extended, as resume(epochs=3) does
    resumed.restore(state)
    resumed.keep_checkpoints = policy
    resumed.fit(tmp_path, **QUIET)
    assert {p.name for p in tmp_path.glob("checkpoint-*.npz")} == kept
    if kept:
        assert load_checkpoint(tmp_path / CHECKPOINT_LATEST).epoch == 3


@pytest.fixture(scope="module")
def cli_base(tmp_path_factory):
    """A finished one-epoch tiny MNIST run (copy it before changing it)."""
    out = tmp_path_factory.mktemp("base") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EVSIM_OFFLINE", "1")
        result = run(["train", *TINY, "--epochs", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def three_sessions(tmp_path_factory, cli_base):
    """A tiny MNIST run trained one epoch per session, the last under --checkpoints none,
    with each earlier session's checkpoint-latest kept aside."""
    root = tmp_path_factory.mktemp("sessions")
    out = root / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EVSIM_OFFLINE", "1")
        shutil.copytree(cli_base, out)
        shutil.copy(out / CHECKPOINT_LATEST, root / "epoch1.npz")
        assert run(["train", "--resume", str(out), "--epochs", "2", "--no-progress"]).exit_code == 0
        shutil.copy(out / CHECKPOINT_LATEST, root / "epoch2.npz")
        result = run(["train", "--resume", str(out), "--epochs", "3", "--checkpoints", "none", "--no-progress"])
    assert result.exit_code == 0, result.output
    return out


def test_after_a_session_under_none_eval_uses_the_network_of_the_last_epoch(three_sessions):
    assert not list(three_sessions.glob("checkpoint-*.npz"))
    result = run(["eval", str(three_sessions), "--json", str(three_sessions.parent / "e.json")])
    assert result.exit_code == 0, result.output
    assert f"({NETWORK_FILE})" in result.output


@pytest.mark.parametrize("command", ["eval", "profile"])
def test_a_stale_checkpoint_is_refused_naming_it_and_the_fix(three_sessions, tmp_path, command):
    run_dir = shutil.copytree(three_sessions, tmp_path / "run")
    shutil.copy(three_sessions.parent / "epoch2.npz", run_dir / CHECKPOINT_LATEST)
    line = one_line_error(run([command, str(run_dir)]))
    assert f"{run_dir / CHECKPOINT_LATEST}: stale: it holds epoch 2 but metrics.jsonl records 3 epochs" in line
    assert f"delete it to evaluate {NETWORK_FILE}" in line

    best = best_epoch(read_metrics(run_dir))
    stale = 1 if best != 1 else 2
    shutil.copy(three_sessions.parent / f"epoch{stale}.npz", run_dir / CHECKPOINT_BEST)
    line = one_line_error(run([command, str(run_dir), "--checkpoint", "best"]))
    assert f"{run_dir / CHECKPOINT_BEST}: stale: it holds epoch {stale} but the best epoch" in line
    assert "--checkpoint latest" in line


def test_best_is_refused_as_not_kept_where_the_policy_keeps_none(three_sessions):
    line = one_line_error(run(["eval", str(three_sessions), "--checkpoint", "best"]))
    assert f"the run keeps no {CHECKPOINT_BEST} (--checkpoints none); use --checkpoint latest" in line


def test_a_stop_under_none_says_the_earlier_checkpoint_is_what_resumes(cli_base, tmp_path, monkeypatch):
    run_dir = shutil.copytree(cli_base, tmp_path / "run")

    def stop(self, progress=True):
        raise TrainingInterrupted("stopped in epoch 2/2 after batch 0 of 10")

    monkeypatch.setattr(Trainer, "train_epoch", stop)
    result = run(["train", "--resume", str(run_dir), "--epochs", "2", "--checkpoints", "none"])
    assert result.exit_code == 130, result.output
    assert "not saved (--checkpoints none)" in result.output and "state of an earlier session" in result.output
    assert f"Resume from there with: evsim train --resume {run_dir}" in result.output


# ------------------------------------------------------------------- memory
def test_the_input_events_of_a_batch_count_in_the_memory_estimate(tmp_path, monkeypatch):
    # 16 + 10 neurons x 2000 steps x 500 samples x 16 B: 0.4 GiB of traces, which fit; the
    # rate-coded digits' events (up to 2000 x ~300 cells x 500 samples x 12 B) do not.
    monkeypatch.setattr("evsim.memory.physical_memory", lambda: 2 ** 31)
    out = tmp_path / "run"
    result = run(["train", *TINY, "--epochs", "1", "--time-steps", "2000", "--out", str(out)])
    assert result.exit_code == 2, result.output
    last = result.output.splitlines()[-1]
    assert last.startswith("Error: this run needs about") and "input events 3." in last and "--time-steps" in last
    assert "Traceback" not in result.output and not out.exists()


def test_running_out_of_memory_while_training_is_one_line_and_the_last_epoch_resumes(tmp_path, no_plots):
    from tests.runs import toy_config, toy_dataset

    trainer = Trainer(toy_config(epochs=2), toy_dataset())
    events = trainer._events

    def allocate(inputs):
        if trainer.epoch == 1:
            raise MemoryError("Unable to allocate 3.98 GiB")
        return events(inputs)

    trainer._events = allocate
    with pytest.raises(ConfigError, match=r"^out of memory at epoch 2/2, batch 1 of 8; reduce --batch-size, "
                                          r"--time-steps or the network's size in a new run .*evsim train --resume"):
        trainer.fit(tmp_path, **QUIET)
    assert load_checkpoint(tmp_path / CHECKPOINT_LATEST).epoch == 1


def test_eval_refuses_time_steps_it_has_no_memory_for(cli_base, tmp_path, monkeypatch):
    monkeypatch.setattr("evsim.memory.physical_memory", lambda: 2 ** 30)
    line = last_line_error(run(["eval", str(cli_base), "--time-steps", "2000000", "--json", str(tmp_path / "e.json")]))
    assert "over 2000000 steps needs about" in line and "reduce --time-steps or --batch-size" in line
    assert not (tmp_path / "e.json").exists()


def test_profile_refuses_a_batch_it_has_no_memory_for(cli_base, tmp_path, monkeypatch):
    monkeypatch.setattr("evsim.memory.physical_memory", lambda: 2 ** 20)
    json_path = tmp_path / "p.json"
    line = last_line_error(run(["profile", str(cli_base), "--json", str(json_path), "--png", str(tmp_path / "p.png")]))
    assert "a batch of 250 samples over 4 steps needs about" in line and "input events" in line
    assert not json_path.exists()


# ------------------------------------------------------------- default folders
def test_runs_started_in_the_same_second_get_folders_of_their_own(tmp_path, monkeypatch, captured):
    from pathlib import Path

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("evsim.cli.train.default_run_dir", lambda dataset: Path("runs") / f"{dataset}-20250101-120000")
    (tmp_path / "runs" / "mnist-20250101-120000").mkdir(parents=True)
    (tmp_path / "runs" / "mnist-20250101-120000" / "summary.json").write_text("{}")  # a run that finished
    for _ in range(3):
        result = run(["train", *TINY, "--epochs", "1"])
        assert result.exit_code == 0, result.output
    assert [config.out for config in captured] == [f"runs/mnist-20250101-120000-{n}" for n in (2, 3, 4)]


def test_a_default_folder_is_not_left_behind_by_a_refused_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("evsim.memory.physical_memory", lambda: 2 ** 20)
    one_line_error(run(["train", *TINY, "--epochs", "1"]))
    assert list((tmp_path / "runs").iterdir()) == []


def test_sigterm_while_the_data_loads_leaves_no_default_folder(tmp_path, monkeypatch):
    import os
    import signal

    import evsim.train

    real_load = evsim.train.load_dataset

    def load_then_terminated(*args):
        os.kill(os.getpid(), signal.SIGTERM)  # as SLURM or `timeout` would, before training starts
        return real_load(*args)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(evsim.train, "load_dataset", load_then_terminated)
    result = run(["train", *TINY, "--epochs", "1"])
    assert result.exit_code == 143 and "Stopped by SIGTERM outside an epoch" in result.output, result.output
    assert list((tmp_path / "runs").iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored


# ------------------------------------------------------------- reader bugs
def test_a_bug_in_the_checkpoint_readers_shows_as_itself_not_as_a_damaged_file(tmp_path, no_plots, monkeypatch):
    from tests.runs import toy_config, toy_dataset
    from evsim.checkpoint import load_network
    from evsim.runfiles import stored_run_id

    Trainer(toy_config(epochs=1), toy_dataset()).fit(tmp_path, **QUIET)

    def bug(*args, **kwargs):
        raise NameError("name 'oops' is not defined")

    monkeypatch.setattr("evsim.checkpoint._check_training_state", bug)
    monkeypatch.setattr("evsim.checkpoint.check_finite", bug)
    with pytest.raises(NameError, match="oops"):
        load_checkpoint(tmp_path / CHECKPOINT_LATEST)
    with pytest.raises(NameError, match="oops"):
        load_network(tmp_path / NETWORK_FILE)
    monkeypatch.setattr("json.loads", bug)  # what stored_run_id calls on the file's meta
    with pytest.raises(NameError, match="oops"):
        stored_run_id(tmp_path / NETWORK_FILE)


# ------------------------------------------------ a closed stdout
def test_a_run_piped_to_head_goes_on_to_its_end_and_saves_everything(tmp_path):
    import json
    import os
    import subprocess
    import sys

    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", "from evsim.cli.main import main; main()", "train", *TINY,
                             "--epochs", "3", "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "EVSIM_OFFLINE": "1"})
    assert proc.stdout.readline().startswith("data: ")
    proc.stdout.close()  # as head -1 does
    stderr = proc.stderr.read()
    assert proc.wait(timeout=300) == 0 and stderr == ""
    assert [row["epoch"] for row in read_metrics(out) if row["type"] == "epoch"] == [1, 2, 3]
    assert json.loads((out / "summary.json").read_text())["test_acc"] is not None
    # Every command: the files it was asked for are written after its reader has gone.
    for command in (["eval", "--batch-size", "7"], ["profile", "--batch-size", "7"], ["inspect"]):
        asked = tmp_path / f"{command[0]}.json"
        extra = [] if command[0] == "inspect" else ["--json", str(asked)]
        proc = subprocess.Popen([sys.executable, "-c", "from evsim.cli.main import main; main()", command[0], str(out),
                                 *command[1:], *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "EVSIM_OFFLINE": "1"})
        proc.stdout.readline()
        proc.stdout.close()
        stderr = proc.stderr.read()
        assert proc.wait(timeout=300) == 0 and stderr == "", (command, stderr)
        assert command[0] == "inspect" or json.loads(asked.read_text())["samples"] > 0


def test_running_out_of_memory_in_any_command_is_one_line(cli_base, tmp_path, monkeypatch):
    """eval and profile (and emulate-nmnist) ran out with a traceback, exit 1."""
    def no_memory(*args, **kwargs):
        raise MemoryError("Unable to allocate 24.9 MiB for an array with shape (6517242,) and data type int32")

    monkeypatch.setattr("evsim.cli.eval.evaluate", no_memory)
    line = last_line_error(run(["eval", str(cli_base), "--json", str(tmp_path / "e.json")]))
    assert line == ("Error: out of memory (Unable to allocate 24.9 MiB for an array with shape (6517242,) and data "
                    "type int32); free memory, or ask for less (a smaller --batch-size or --time-steps)")
    assert not (tmp_path / "e.json").exists()


def test_a_process_out_of_memory_is_not_blamed_on_the_file_it_reads(tmp_path):
    """A 1.9 KB metrics.jsonl was called damaged ('declares more data than fits in memory')."""
    from evsim.errors import DataError
    from evsim.readers import reading

    with pytest.raises(MemoryError):
        with reading(tmp_path / "metrics.jsonl", "metrics file"):
            raise MemoryError()
    with pytest.raises(DataError, match="declares more data than fits in memory"):
        with reading(tmp_path / "huge.npy", "array"):
            np.empty(2 ** 62, dtype=np.uint8)  # what a damaged header's size makes NumPy try


def test_the_evaluation_batch_has_an_option_and_is_named_when_it_is_what_does_not_fit(monkeypatch):
    """Training evaluates at eval_batch_size, which no option set: a refusal for its memory
    said to reduce --batch-size, which changed nothing."""
    from evsim.config import TrainConfig
    from evsim.train import check_memory

    monkeypatch.setattr("evsim.memory.physical_memory", lambda: 2 ** 30)
    config = TrainConfig(hidden=(4000,), time_steps=100, batch_size=1, eval_batch_size=1000)
    with pytest.raises(ConfigError, match=r"evaluation traces .* reduce --hidden, --time-steps or --eval-batch-size$"):
        check_memory(config, 784, 10)
    check_memory(TrainConfig(hidden=(4000,), time_steps=100, batch_size=1, eval_batch_size=1), 784, 10)
    assert "--eval-batch-size" in run(["train", "--help"]).output


def test_an_evaluation_batch_larger_than_the_splits_needs_their_memory(tmp_path):
    from tests.runs import toy_config, toy_dataset

    trainer = Trainer(toy_config(epochs=1, eval_batch_size=10 ** 8), toy_dataset())
    assert trainer.config.eval_batch_size == 10 ** 8  # kept: only the memory check counts the split


def test_weights_count_at_the_bytes_a_run_with_sd_snn_holds_per_synapse(monkeypatch):
    """24 B a synapse let a 2312-100000-10 run pass at a fifth of the memory it needs
    (117 B a synapse measured with SD-SNN, 42-49 without)."""
    from evsim.config import TrainConfig
    from evsim.memory import GIB
    from evsim.train import check_memory

    monkeypatch.setattr("evsim.memory.physical_memory", lambda: 20 * GIB)
    with pytest.raises(ConfigError, match=r"weights 26\.0 GiB"):  # 232.2 million synapses x 120 B
        check_memory(TrainConfig(hidden=(100_000,), time_steps=1, batch_size=1, eval_batch_size=1), 2312, 10)
    check_memory(TrainConfig(hidden=(100_000,), time_steps=1, batch_size=1, eval_batch_size=1, structure="none"),
                 2312, 10)  # 50 B each: 10.8 GiB


def test_running_out_of_memory_while_saving_an_epoch_says_so(tmp_path, no_plots):
    """It said 'at epoch 2/2', the next epoch's position, when epoch 1's save ran out."""
    from tests.runs import toy_config, toy_dataset

    trainer = Trainer(toy_config(epochs=2), toy_dataset())

    def no_memory(*args, **kwargs):
        raise MemoryError()

    trainer.checkpoints.save = no_memory
    with pytest.raises(ConfigError, match=r"^out of memory while saving epoch 1; reduce --batch-size"):
        trainer.fit(tmp_path, **QUIET)
