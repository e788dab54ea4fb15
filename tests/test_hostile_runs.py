"""Hostile runs (issue 26): schedules at any step, divergence, checkpoints from other
runs, temporaries of killed processes, overwriting a run's files, strict option values,
a full disk, and messages that say what works."""
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import evsim.data.frames
from evsim.checkpoint import CHECKPOINT_BEST, CHECKPOINT_LATEST, NETWORK_FILE, load_checkpoint
from evsim.cli.runs import load_run_network
from evsim.data.cache import atomic_dir
from evsim.divergence import TrainingDiverged, first_non_finite
from evsim.errors import CheckpointError
from evsim.files import clean_stale_temporaries, write_bytes_atomic
from evsim.network import Network
from evsim.runlock import LOCK_FILE, RunLockedError, run_lock
from evsim.structure.sdsnn import SDSNN, SDSNNConfig, alpha, regrowth_percentile, saturating_power
from evsim.train import Trainer, resume, train
from tests.conftest import one_line_error, run
from tests.runs import FAST_SDSNN, toy_config, toy_dataset

QUIET = {"progress": False, "echo": lambda line: None}
# The CLI run the command tests use: the 5,000-digit MNIST sample, one epoch, seconds.
TINY = ["--dataset", "mnist", "--epochs", "1", "--hidden", "16", "--time-steps", "4", "--batch-size", "500",
        "--structure", "none", "--threads", "1", "--no-progress"]


@pytest.fixture
def no_plots(monkeypatch):
    monkeypatch.setattr("evsim.train.plot_training", lambda *args: None)


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """A finished tiny MNIST run made by ``evsim train`` (copy it before changing it)."""
    out = tmp_path_factory.mktemp("cli") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EVSIM_OFFLINE", "1")
        result = run(["train", *TINY, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def copy_of(run_dir, tmp_path):
    return shutil.copytree(run_dir, tmp_path / "copy")


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# ------------------------------------------------------------- 1. schedules
@pytest.mark.parametrize("step", [7_485, 10**7, 10**12])
def test_sdsnn_schedules_are_total_functions_of_the_step(step):
    cfg = SDSNNConfig()
    assert regrowth_percentile(step, cfg) == cfg.q_max
    assert alpha(step, cfg) == cfg.alpha_late
    huge_k = SDSNNConfig(spine_steps=2**31 - 1)  # alpha's exponent is positive before 2K: e^(2K) saturates
    assert math_finite(alpha(1, huge_k)) and regrowth_percentile(1, huge_k) == huge_k.q_base


def math_finite(value: float) -> bool:
    return bool(np.isfinite(value))


def test_saturating_power_clamps_instead_of_overflowing():
    assert saturating_power(1.1, 10**9) == pytest.approx(1.1 ** (700 / np.log(1.1)))
    assert saturating_power(1.1, -10**9) > 0 and saturating_power(1.0, 10**9) == 1.0
    assert saturating_power(2.0, 3) == 8.0


def test_sdsnn_develops_and_resumes_at_step_ten_million(no_plots):
    trainer = Trainer(toy_config(epochs=1), toy_dataset())
    trainer.fit(**QUIET)  # some development steps: windows and counters filled
    state = trainer.structure.state_dict()
    state["step"] = 10**7 - 1
    resumed = SDSNN(trainer.network, FAST_SDSNN)
    resumed.load_state_dict(state)  # what resume does with a checkpoint's structure state
    stats = resumed.develop(trainer.network, 1e-3)
    assert resumed.step == 10**7 and all(row["q"] == FAST_SDSNN.q_max for row in stats)
    assert all(row["rho"] <= FAST_SDSNN.rho_max for row in stats)


# ------------------------------------------------------------- 2. divergence
def test_a_run_whose_weights_turn_nan_stops_at_once_and_keeps_the_good_checkpoint(tmp_path, no_plots):
    trainer = Trainer(toy_config(epochs=3), toy_dataset())
    step = trainer.optimizer.step

    def step_then_poison(params, lr):
        step(params, lr)
        if trainer.batches_seen == 12:  # inside epoch 2 (8 batches per epoch), not a checked batch
            trainer.network.layers[0].store.data[3] = np.nan

    trainer.optimizer.step = step_then_poison
    # the NaN weight is found at the next weight check, or its NaN gradient in the biases first
    with pytest.raises(TrainingDiverged, match=r"training diverged at epoch 2/3.*layer 0's (weights|biases) became "
                                               r"NaN or infinite.*\(the run folder keeps epoch 1\).*lower --lr"):
        trainer.fit(tmp_path, **QUIET)
    assert trainer.batches_seen <= 16, "stopped within WEIGHT_CHECK_EVERY batches"
    state = load_checkpoint(tmp_path / CHECKPOINT_LATEST)  # finite, so it loads
    assert state.epoch == 1 and not (tmp_path / "summary.json").exists()


def poison_a_bias_after_batch(trainer, batch: int) -> None:
    """Make a bias infinite after overall batch ``batch``'s optimizer step."""
    step = trainer.optimizer.step

    def step_then_poison(params, lr):
        step(params, lr)
        if trainer.batches_seen == batch:
            trainer.network.layers[1].bias[0] = np.inf

    trainer.optimizer.step = step_then_poison


def test_divergence_under_a_warm_up_names_the_rate_in_use_and_suggests_below_it(tmp_path, no_plots):
    trainer = Trainer(toy_config(epochs=3, schedule="cosine", warmup_epochs=2, lr=1e-3), toy_dataset())
    poison_a_bias_after_batch(trainer, 2)
    in_use = 1e-3 * trainer.schedule.factor(0)
    assert in_use < 1e-3
    with pytest.raises(TrainingDiverged) as caught:
        trainer.fit(tmp_path, **QUIET)
    assert str(caught.value).endswith(f"(no epoch had finished, so none is kept); start a new run with a lower --lr "
                                      f"(it is 0.001, {in_use:g} in use there), e.g. {in_use / 10:g}")


def test_a_nan_bias_stops_the_run_at_the_next_batch(tmp_path, no_plots):
    trainer = Trainer(toy_config(epochs=2), toy_dataset())
    poison_a_bias_after_batch(trainer, 2)
    with pytest.raises(TrainingDiverged, match=r"epoch 1/2, batch 3 of 8: layer 1's biases"):
        trainer.fit(tmp_path, **QUIET)
    assert not (tmp_path / CHECKPOINT_LATEST).exists()


def last_line_error(result) -> str:
    """Exit code 2 and one ``Error:`` line, the last (after what the command printed before)."""
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert [line for line in lines if line.startswith("Error:")] == lines[-1:], result.output
    return lines[-1]


def test_a_huge_learning_rate_ends_in_one_line_not_done(tmp_path, recwarn):
    out = tmp_path / "run"
    line = last_line_error(run(["train", *TINY, "--lr", "1e38", "--out", str(out)]))
    assert "training diverged" in line and "(no epoch had finished, so none is kept)" in line
    assert line.endswith("start a new run with a lower --lr (it is 1e+38), e.g. 1e+37")
    resumed = one_line_error(run(["train", "--resume", str(out)]))
    assert "has no checkpoint yet" in resumed and "(with a lower --lr if its training diverged)" in resumed
    assert not (out / CHECKPOINT_LATEST).exists() and not (out / "summary.json").exists()
    # Nothing printed besides that line: Adam's step size past float32's range is no warning.
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)], [str(w.message) for w in recwarn]


@pytest.mark.parametrize("args,fragment", [
    (["--lr", "1e308"], "beyond float32's range"),
    (["--lr", "1e-50"], "is 0 in float32"),
    (["--weight-decay", "1e39"], "beyond float32's range"),
    (["--weight-decay", "1e30"], "below 1/learning rate = 1000"),
    (["--weight-decay", "2", "--lr", "0.5"], "below 1/learning rate = 2"),
    (["--lr", "١"], "digits 0-9"),
])
def test_float_options_float32_cannot_hold_are_refused_up_front(tmp_path, captured, args, fragment):
    assert fragment in one_line_error(run(["train", *TINY, *args, "--out", str(tmp_path / "run")]))
    assert not captured and not (tmp_path / "run").exists()


# ------------------------------------------------------------- 11. integers
@pytest.mark.parametrize("args,fragment", [
    (["--dev-interval", "²"], "--dev-interval"),
    (["--dev-interval", "٣"], "--dev-interval"),
    (["--dev-interval", "99999999999999999999999"], "--dev-interval"),
    (["--spine-steps", "99999999999999999999999"], "2147483647"),
    (["--epochs", "٣"], "digits 0-9"),
    (["--hidden", "٣"], "--hidden"),
    (["--threads", "¹"], "digits 0-9"),
    (["--time-steps", "0"], "'--time-steps': must be >= 1, got 0"),  # it said 1..inf
])
def test_integers_are_ascii_digits_within_int32(tmp_path, captured, args, fragment):
    assert fragment in one_line_error(run(["train", *TINY, *args, "--out", str(tmp_path / "run")]))
    assert not captured and not (tmp_path / "run").exists()


@pytest.mark.parametrize("text,fragment", [
    ("spine_steps = 99999999999", "2147483647"),
    ('data_dir = ""', "empty path"),
    ("hidden = [[8]]", "nested arrays"),
])
def test_config_file_values_follow_the_same_rules(tmp_path, captured, text, fragment):
    path = tmp_path / "c.toml"
    path.write_text(text + "\n")
    line = one_line_error(run(["train", "--config", str(path), "--out", str(tmp_path / "run")]))
    assert fragment in line and str(path) in line and not captured


@pytest.mark.parametrize("option", ["--out", "--data-dir", "--cache-dir", "--config", "--resume"])
def test_an_empty_path_is_refused_not_taken_as_the_current_folder(captured, option):
    assert "empty path" in one_line_error(run(["train", *TINY, option, ""]))
    assert not captured


# ------------------------------------------------------------- 4. run ids
def toy_run(path, **changes):
    Trainer(toy_config(**{"epochs": 2, **changes}), toy_dataset()).fit(path, **QUIET)
    return path


def test_a_checkpoint_from_another_run_is_refused_on_resume_and_eval(tmp_path, monkeypatch, no_plots):
    monkeypatch.setattr("evsim.train._load_announced", lambda config, echo: toy_dataset())
    mine, theirs = toy_run(tmp_path / "mine"), toy_run(tmp_path / "theirs", seed=5)
    config = (mine / "config.json").read_text()
    assert json.loads(config)["run_id"] != json.loads((theirs / "config.json").read_text())["run_id"]
    (mine / CHECKPOINT_LATEST).unlink()  # a copy over it would write through its hard link to checkpoint-best
    shutil.copy(theirs / CHECKPOINT_LATEST, mine / CHECKPOINT_LATEST)
    with pytest.raises(CheckpointError, match=r"checkpoint-latest.npz: belongs to run [0-9a-f]{16}, not to the run "
                                              r"in .*mine.*copied from another run folder"):
        resume(mine, **QUIET)
    assert (mine / "config.json").read_text() == config
    with pytest.raises(CheckpointError, match="belongs to run"):
        load_run_network(mine, "latest")
    load_run_network(mine, "best")  # its own: fine
    for name in (CHECKPOINT_LATEST, CHECKPOINT_BEST):
        (mine / name).unlink()
    shutil.copy(theirs / NETWORK_FILE, mine / NETWORK_FILE)
    with pytest.raises(CheckpointError, match="network.npz: belongs to run"):
        load_run_network(mine, "latest")


def test_a_checkpoint_without_a_run_id_is_foreign_to_a_folder_with_one(tmp_path, monkeypatch, no_plots):
    monkeypatch.setattr("evsim.train._load_announced", lambda config, echo: toy_dataset())
    run_dir = toy_run(tmp_path / "run", epochs=1)
    values = json.loads((run_dir / "config.json").read_text())
    values.pop("run_id")  # a folder written before run ids: any checkpoint of the right run resumes
    (run_dir / "config.json").write_text(json.dumps(values))
    resume(run_dir, **QUIET)
    assert "run_id" in json.loads((run_dir / "config.json").read_text())


# ------------------------------------------------------------- 6. temporaries
def test_stale_temporaries_of_dead_writers_are_cleaned_and_nothing_else(tmp_path):
    dead, alive = dead_pid(), os.getppid()
    stale = [f".network.npz.{dead}.abcd1234.tmp", f".checkpoint-best.npz.{dead}.link",
             ".metrics.jsonl.k2x_9abc.tmp"]  # the last without a pid (older evsim), old
    kept = [f".network.npz.{alive}.abcd1234.tmp", ".summary.json.zzzz1234.tmp",  # live writer; pid-less but fresh
            f".network.npz.{os.getpid()}.abcd1234.tmp", ".notes.tmp", f"network.npz.{dead}.link", "metrics.jsonl"]
    for name in stale + kept:
        (tmp_path / name).write_bytes(b"x" * 100)
    hour_ago = time.time() - 7200
    os.utime(tmp_path / stale[2], (hour_ago, hour_ago))
    folder = tmp_path / f".nmnist-0123abcd.{dead}.tmp-ab_c1234"
    (folder / "inner").mkdir(parents=True)
    (tmp_path / f".link-target.{dead}.link").symlink_to(tmp_path / "metrics.jsonl")  # never followed nor removed

    removed = clean_stale_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == sorted(stale + [folder.name])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept + [f".link-target.{dead}.link"])
    assert clean_stale_temporaries(tmp_path / "absent") == []


def test_a_run_start_and_a_cache_build_clean_what_killed_processes_left(tmp_path, no_plots):
    dead = dead_pid()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / f".network.npz.{dead}.abcd1234.tmp").write_bytes(b"x")
    lines = []
    Trainer(toy_config(epochs=1), toy_dataset()).fit(run_dir, progress=False, echo=lines.append)
    assert f"removed 1 temporary files that killed runs left in {run_dir}" in lines
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".")]

    frames = tmp_path / "cache" / "frames"
    (frames / f".nmnist-abc.{dead}.tmp-abcd1234").mkdir(parents=True)
    with atomic_dir(frames / "nmnist-def") as tmp:
        (tmp / "meta.json").write_text("{}")
    assert sorted(p.name for p in frames.iterdir()) == ["nmnist-def"]


def test_loading_a_cached_dataset_cleans_what_killed_framings_left(tmp_path):
    from tests.test_data_nmnist import make_plain

    root = make_plain(tmp_path / "data", real_first=False)
    args = ["data", "info", "--dataset", "nmnist", "--data-dir", str(root), "--cache-dir", str(tmp_path / "cache"),
            "--time-steps", "2"]
    assert run(args).exit_code == 0
    frames = tmp_path / "cache" / "frames"
    stale = frames / f".nmnist-0123456789abcdef.{dead_pid()}.tmp-abcd1234"
    (stale / "train_idx.raw").parent.mkdir()
    (stale / "train_idx.raw").write_bytes(bytes(10_000))
    assert run(args).exit_code == 0  # a cache hit
    assert not stale.exists()


def test_temporaries_carry_the_writers_pid(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr("evsim.files.commit", lambda tmp, path: seen.append(os.path.basename(tmp)))
    write_bytes_atomic(tmp_path / "a.json", b"{}")
    assert seen[0].startswith(f".a.json.{os.getpid()}.") and seen[0].endswith(".tmp")


# ------------------------------------------------------------- 7. overwriting
def test_export_and_import_refuse_to_overwrite_a_runs_files(cli_run, tmp_path):
    run_dir = copy_of(cli_run, tmp_path)
    network = (run_dir / NETWORK_FILE).read_bytes()
    line = one_line_error(run(["export", str(run_dir), "--format", "nir", str(run_dir / NETWORK_FILE)]))
    assert f"{run_dir / NETWORK_FILE}: is a run's network.npz" in line and "another name" in line
    graph = tmp_path / "net.nir"
    assert run(["export", str(run_dir), str(graph)]).exit_code == 0
    line = one_line_error(run(["import-nir", str(graph), str(run_dir)]))
    assert f"{run_dir / NETWORK_FILE}: is a run's network.npz" in line and "new folder" in line
    assert (run_dir / NETWORK_FILE).read_bytes() == network
    (run_dir / NETWORK_FILE).unlink()
    assert "holds a training run (config.json)" in one_line_error(run(["import-nir", str(graph), str(run_dir)]))
    assert not (run_dir / NETWORK_FILE).exists()
    result = run(["import-nir", str(graph), str(tmp_path / "imported"), "--dt", "0.5"])
    assert result.exit_code == 0 and "NOTE: --dt 0.5 is not used" in result.output
    # a stray checkpoint would be read before the imported network.npz by every later command
    stray = tmp_path / "stray"
    stray.mkdir()
    shutil.copy(run_dir / "checkpoint-latest.npz", stray)
    line = one_line_error(run(["import-nir", str(graph), str(stray)]))
    assert f"{stray}: holds a training run (checkpoint-latest.npz); import into a new folder" in line
    assert not (stray / NETWORK_FILE).exists()


# ------------------------------------------------------------- 14. full disk
def full_disk(*args):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def only_originals(folder, before: set) -> None:
    """No new file, half-written or temporary, in ``folder``."""
    assert {p.name for p in folder.iterdir()} == before


@pytest.mark.parametrize("command", [
    lambda run_dir, tmp: ["eval", str(run_dir), "--json", str(tmp / "eval.json")],
    lambda run_dir, tmp: ["profile", str(run_dir), "--samples", "20", "--json", str(tmp / "p.json"),
                          "--png", str(tmp / "p.png")],
    lambda run_dir, tmp: ["export", str(run_dir), str(tmp / "net.nir")],
], ids=["eval", "profile", "export"])
def test_a_full_disk_is_one_line_and_leaves_no_half_written_file(cli_run, tmp_path, monkeypatch, command):
    run_dir = copy_of(cli_run, tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    before_run, before_out = {p.name for p in run_dir.iterdir()}, set()
    monkeypatch.setattr(os, "fsync", full_disk)
    line = last_line_error(run(command(run_dir, out)))
    assert "No space left on device" in line and "free some space" in line
    only_originals(run_dir, before_run)
    only_originals(out, before_out)


def test_a_run_whose_first_checkpoint_could_not_be_written_starts_again_in_its_folder(cli_run, tmp_path,
                                                                                      monkeypatch):
    """What a full disk at the first epoch's end leaves: the configuration and the epoch's
    figure, no checkpoint. The figure is drawn from metrics; it holds nothing to keep."""
    run_dir = copy_of(cli_run, tmp_path)
    for path in run_dir.iterdir():
        if path.name not in ("config.json", "config.toml", "training.png"):
            path.unlink()
    line = one_line_error(run(["train", "--resume", str(run_dir)]))
    assert f"has no checkpoint yet (the run stopped before its first epoch ended); start it again: evsim train " \
           f"--config {run_dir / 'config.toml'} --out {run_dir}" in line
    monkeypatch.setenv("EVSIM_OFFLINE", "1")
    result = run(["train", "--config", str(run_dir / "config.toml"), "--out", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert (run_dir / "checkpoint-latest.npz").exists() and (run_dir / "summary.json").exists()


def test_a_full_disk_in_import_nir_is_one_line(cli_run, tmp_path, monkeypatch):
    graph = tmp_path / "net.nir"
    assert run(["export", str(cli_run), str(graph)]).exit_code == 0
    monkeypatch.setattr(os, "fsync", full_disk)
    line = one_line_error(run(["import-nir", str(graph), str(tmp_path / "imported")]))
    assert f"cannot write {tmp_path / 'imported' / NETWORK_FILE}: No space left on device" in line
    assert not (tmp_path / "imported").exists()  # the folder it made is removed again


def test_a_full_disk_while_framing_is_one_line_and_leaves_no_cache_entry(tmp_path, monkeypatch):
    from tests.test_data_nmnist import make_plain

    root = make_plain(tmp_path / "data", real_first=False)
    monkeypatch.setattr(evsim.data.frames.SparseFrameWriter, "put", full_disk)
    line = one_line_error(run(["data", "info", "--dataset", "nmnist", "--data-dir", str(root), "--cache-dir",
                               str(tmp_path / "cache"), "--time-steps", "2"]))
    assert "No space left on device" in line and str(tmp_path / "cache" / "frames") in line
    assert list((tmp_path / "cache" / "frames").iterdir()) == []


# ------------------------------------------------------------- 15. messages
def test_resuming_a_finished_run_without_its_checkpoint_says_what_works(cli_run, tmp_path):
    run_dir = copy_of(cli_run, tmp_path)
    (run_dir / CHECKPOINT_LATEST).unlink()
    line = one_line_error(run(["train", "--resume", str(run_dir)]))
    assert f"has no {CHECKPOINT_LATEST} but holds a trained run" in line
    assert f"copy {CHECKPOINT_BEST} to {CHECKPOINT_LATEST}" in line and "--out NEW_DIR" in line
    assert f"--out {run_dir}" not in line  # that command would be refused: the folder holds a run


def test_a_run_whose_network_file_is_gone_or_a_folder_says_which_file(cli_run, tmp_path):
    """A run that keeps no checkpoints (--checkpoints none) has only network.npz: its
    absence names that file, not a checkpoint the run never kept; a folder in its place
    is named as one."""
    run_dir = copy_of(cli_run, tmp_path)
    for name in (CHECKPOINT_LATEST, CHECKPOINT_BEST, NETWORK_FILE):
        (run_dir / name).unlink(missing_ok=True)
    config = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text(json.dumps({**config, "checkpoints": "none"}))
    line = one_line_error(run(["eval", str(run_dir)]))
    assert f"{run_dir / NETWORK_FILE}: missing, though {run_dir} finished epochs" in line
    assert "--checkpoints none" in line and CHECKPOINT_LATEST not in line
    (run_dir / NETWORK_FILE).mkdir()
    assert f"{run_dir / NETWORK_FILE}: is a folder" in one_line_error(run(["eval", str(run_dir)]))


@pytest.mark.parametrize("member,dtype", [("l0_data", np.int64), ("l1_bias", np.bool_)])
def test_weights_stored_as_integers_are_refused_not_truncated(cli_run, tmp_path, member, dtype):
    run_dir = copy_of(cli_run, tmp_path)
    path = run_dir / CHECKPOINT_LATEST
    with np.load(path) as saved:
        arrays = {name: saved[name] for name in saved.files}
    arrays[member] = arrays[member].astype(dtype)
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)
    for command in (["eval", str(run_dir)], ["train", "--resume", str(run_dir), "--epochs", "2"]):
        line = one_line_error(run(command))
        assert f"{path}: corrupt or truncated checkpoint" in line and "must be floating-point values, got" in line


def test_data_show_refuses_a_damaged_config_json_as_every_command_does(cli_run, tmp_path):
    run_dir = copy_of(cli_run, tmp_path)
    (run_dir / "config.json").write_text("[1, 2]")
    for command in (["data", "show", "--run", str(run_dir), "--out", str(tmp_path / "s.png")],
                    ["eval", str(run_dir)]):
        assert "config.json: invalid stored configuration" in one_line_error(run(command))
    assert not list(tmp_path.glob("*.png"))


def test_a_full_disk_while_emulating_is_one_line_and_leaves_no_folder(tmp_path, monkeypatch):
    monkeypatch.setattr("evsim.data.emulate.write_nmnist_bin", full_disk)
    out = tmp_path / "emulated"
    line = one_line_error(run(["data", "emulate-nmnist", "--out", str(out), "--per-class", "1"]))
    assert f"cannot write {out}: No space left on device" in line
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------- 12. the protections on main's layers, locks and commands
@pytest.mark.parametrize("layer,index,name", [(0, 0, "weights"), (0, 1, "biases"), (2, 0, "weights"),
                                              (2, 1, "biases")])
def test_divergence_checks_the_parameters_of_every_layer_kind(layer, index, name):
    """Conv kernels ([nnz, K, K]) and linear CSR data are weights; a pooling layer (1) has none."""
    network = Network.from_spec("2x8x8-3C3-AP2-5", rng=np.random.default_rng(0))
    assert first_non_finite(network) is None and network.layers[1].parameters() == []
    network.layers[layer].parameters()[index].values.flat[0] = np.nan
    assert first_non_finite(network) == f"layer {layer}'s {name}"
    assert first_non_finite(network, weights=False) == (None if name == "weights" else f"layer {layer}'s biases")


def test_cleaning_never_takes_a_lock_file(tmp_path):
    dead = dead_pid()
    names = [LOCK_FILE, ".nmnist-0123abcd.lock", f".network.npz.{dead}.link.lock",
             f".network.npz.{dead}.abcd1234.tmp.lock"]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    os.utime(tmp_path / LOCK_FILE, (time.time() - 7200, time.time() - 7200))
    assert clean_stale_temporaries(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)


def locked_elsewhere(folder) -> bool:
    """Whether another thread is refused the run lock of ``folder`` (someone holds it)."""
    def attempt():
        try:
            with run_lock(folder):
                return False
        except RunLockedError:
            return True

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(attempt).result()


@pytest.mark.parametrize("how", ["fit", "train", "resume"])
def test_a_run_cleans_its_folder_only_under_its_lock(tmp_path, monkeypatch, no_plots, how):
    held = []
    monkeypatch.setattr("evsim.train.clean_stale_temporaries",
                        lambda folder: held.append(locked_elsewhere(folder)) or [])
    run_dir = tmp_path / "run"
    if how == "fit":
        Trainer(toy_config(epochs=1), toy_dataset()).fit(run_dir, **QUIET)
    else:
        config = toy_config(epochs=1, dataset="mnist")
        monkeypatch.setattr("evsim.train.load_dataset", lambda name, options: toy_dataset())
        train(config, run_dir, **QUIET)
        if how == "resume":
            held.clear()
            resume(run_dir, **QUIET)
    assert held == [True] and not (run_dir / LOCK_FILE).exists()


@pytest.mark.parametrize("args,fragment", [
    (["eval", "RUN", "--batch-size", "٣"], "digits 0-9"),
    (["eval", "RUN", "--batch-size", "99999999999"], "2147483647"),
    (["profile", "RUN", "--e-ac", "1e-50"], "is 0 in float32"),
    (["profile", "RUN", "--e-mac", "1e39"], "beyond float32's range"),
    (["profile", "RUN", "--e-neuron", "1_0"], "digits 0-9"),
    (["import-nir", "G.nir", "OUT", "--dt", "nan"], "finite number"),
    (["data", "emulate-nmnist", "--out", "OUT", "--per-class", "²"], "digits 0-9"),
    (["eval", ""], "empty path"),
    (["export", "RUN", ""], "empty path"),
    (["data", "emulate-nmnist", "--out", ""], "empty path"),
    (["sweep", "run", "S.toml", "--out", ""], "empty path"),
])
def test_options_outside_training_follow_the_same_rules(tmp_path, args, fragment):
    names = {"RUN": tmp_path / "run", "G.nir": tmp_path / "g.nir", "OUT": tmp_path / "out", "S.toml": tmp_path / "s"}
    line = one_line_error(run([str(names.get(arg, arg)) for arg in args]))
    assert fragment in line and not (tmp_path / "out").exists()


@pytest.mark.parametrize("signum,code,line", [(signal.SIGTERM, 143, "Stopped by SIGTERM."),
                                              (signal.SIGINT, 130, "Interrupted.")])
def test_a_signal_while_the_command_imports_gives_one_line_and_the_shell_code(signum, code, line):
    """The half second of imports: SIGTERM ended the process with no word (rc -15)."""
    script = f"""
import builtins, os, signal
real = builtins.__import__
def hook(name, *args, **kwargs):
    if name == "click" and signal.getsignal({int(signum)}) not in (signal.SIG_DFL, signal.default_int_handler):
        os.kill(os.getpid(), {int(signum)})
    return real(name, *args, **kwargs)
builtins.__import__ = hook
import evsim.cli.main
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == code and result.stderr.strip() == line, (result.returncode, result.stderr)


def test_a_temporary_another_machine_is_building_is_not_cleaned(tmp_path):
    """Its pid means nothing here (another node or container sharing the cache): the
    entry's held flock says it is being built."""
    import fcntl

    building = tmp_path / ".nmnist-0123.99999999.tmp-abcdefgh"  # a pid no process here has
    building.mkdir()
    lock = os.open(tmp_path / ".nmnist-0123.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(lock, fcntl.LOCK_EX)
    other = os.open(tmp_path / ".nmnist-0123.lock", os.O_RDONLY)  # the lock as another process would see it
    try:
        held = subprocess.run([sys.executable, "-c", "from evsim.files import clean_stale_temporaries as c; "
                               f"print(len(c({str(tmp_path)!r})))"], capture_output=True, text=True, timeout=120)
        assert held.stdout.strip() == "0" and building.is_dir(), held.stderr
    finally:
        os.close(other)
        os.close(lock)
    assert clean_stale_temporaries(tmp_path) == [building] and not building.exists()


@pytest.mark.parametrize("structure", ["set", "magnitude"])
def test_a_target_sparsity_that_keeps_no_synapse_of_a_layer_is_refused(tmp_path, structure):
    """0.99999 of 784 x 16 synapses rounded to none: the run trained a cut network at chance."""
    out = tmp_path / "run"
    line = last_line_error(run(["train", *TINY, "--structure", structure, "--target-sparsity", "0.99999",
                                "--out", str(out)]))
    assert line == ("Error: --target-sparsity 0.99999 leaves fc1 (12,544 synapses) none, which cuts the network; "
                    "give at most 0.99996")
    assert not out.exists()
    result = run(["train", *TINY, "--structure", structure, "--target-sparsity", "0.99996", "--out", str(out)])
    assert result.exit_code == 0, result.output


def test_a_batch_larger_than_the_training_split_needs_the_memory_of_the_split(tmp_path, no_plots):
    """The memory check counted BPTT traces for 10^8 samples where the split holds 24."""
    trainer = Trainer(toy_config(epochs=1, batch_size=10**8), toy_dataset())
    assert trainer.batches_per_epoch() == 1


def test_a_killed_emulations_temporary_is_cleaned_by_the_next_emulation(tmp_path):
    """Cleaned under the folder's own lock, which made the temporary look in progress: each
    killed emulation left its folder (5-109 MB) for good."""
    from evsim.data.emulate import write_emulated_nmnist

    out = tmp_path / "em"
    left = tmp_path / f".em.{dead_pid()}.tmp-ab_c1234"
    (left / "Train").mkdir(parents=True)
    write_emulated_nmnist(out, per_class=1, progress=False)
    assert not left.exists() and (out / "emulator.json").is_file()
    (left / "Train").mkdir(parents=True)  # a kill after the folder was made: the next call cleans it too
    write_emulated_nmnist(out, per_class=1, progress=False)
    assert not left.exists()
