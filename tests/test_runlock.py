"""The run folder lock (one writer per run folder, a killed holder blocks nobody) and the
frame cache's build lock (an entry needed by several processes at once is built once)."""
import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from evsim.runlock import LOCK_FILE, RunLockedError, run_lock
from tests.conftest import one_line_error, run

REPO = Path(__file__).resolve().parents[1]
TRAIN = ["train", "--dataset", "mnist", "--epochs", "1", "--hidden", "16", "--time-steps", "4", "--batch-size", "500",
         "--threads", "1", "--no-progress"]
# A run long enough (a few seconds) that a second one started with it meets its lock.
LONGER_TRAIN = ["train", "--dataset", "mnist", "--epochs", "3", "--hidden", "64", "--time-steps", "4",
                "--batch-size", "500", "--threads", "1", "--no-progress"]


def _python(code: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def _evsim(args: list) -> subprocess.Popen:
    return _python(f"import sys; from evsim.cli.main import main; sys.argv = ['evsim'] + {[str(a) for a in args]!r}; "
                   "main()")


def test_lock_is_exclusive_between_threads_and_reentrant_within_one(tmp_path):
    run_dir = tmp_path / "run"
    errors = []

    def other_thread():
        try:
            with run_lock(run_dir):
                pass
        except RunLockedError as exc:
            errors.append(str(exc))

    with run_lock(run_dir):
        with run_lock(run_dir):  # the holder may take it again (a sweep point, then train())
            assert (run_dir / LOCK_FILE).exists()
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
        assert len(errors) == 1 and "being written by another process" in errors[0]
        assert f"pid {os.getpid()}" in errors[0]
    with run_lock(run_dir):  # released: free again
        pass


def test_a_start_that_fails_leaves_no_folder_but_never_removes_one_it_did_not_make(tmp_path):
    with pytest.raises(ValueError, match="boom"), run_lock(tmp_path / "new"):
        raise ValueError("boom")
    assert not (tmp_path / "new").exists()
    (tmp_path / "old").mkdir()
    with run_lock(tmp_path / "old"):
        pass
    assert (tmp_path / "old").is_dir()


def test_a_locked_run_folder_is_refused_and_a_killed_holders_lock_blocks_nothing(tmp_path):
    out = tmp_path / "run"
    holder = _python(f"""
        import time
        from evsim.runlock import run_lock
        with run_lock({str(out)!r}):
            print("locked", flush=True)
            time.sleep(120)
    """)
    try:
        assert holder.stdout.readline().strip() == "locked"
        line = one_line_error(run(TRAIN + ["--out", str(out)]))
        assert "being written by another process" in line and f"pid {holder.pid}" in line
        assert not (out / "config.json").exists()
        holder.send_signal(signal.SIGKILL)
        assert holder.wait(timeout=10) == -signal.SIGKILL
    finally:
        holder.kill()
        holder.wait()
    assert (out / LOCK_FILE).exists()  # left behind by the killed process, and harmless
    result = run(TRAIN + ["--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "summary.json").exists()


def test_two_trains_of_one_folder_at_once_one_runs_the_other_is_refused(tmp_path):
    out = tmp_path / "run"
    procs = [_evsim(LONGER_TRAIN + ["--seed", str(seed), "--out", out]) for seed in (0, 1)]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    code, stdout, stderr = next(r for r in results if r[0] == 2)
    lines = [line for line in (stdout + stderr).splitlines() if line.strip()]
    assert lines[-1].startswith("Error: ") and "Traceback" not in stderr, (stdout, stderr)
    assert "being written by another process" in lines[-1], lines
    winner = next(seed for seed, r in zip((0, 1), results) if r[0] == 0)
    # The folder is the winner's alone: its configuration, and a summary of its run.
    assert json.loads((out / "config.json").read_text())["seed"] == winner
    assert json.loads((out / "summary.json").read_text())["epochs"] == 3


def test_a_cache_entry_needed_by_two_processes_at_once_is_built_once(tmp_path):
    code = f"""
        import time, sys
        from pathlib import Path
        import numpy as np
        from evsim.data.cache import cached_entry, write_meta

        def build(tmp):
            with open({str(tmp_path / 'builds')!r}, "a") as f:
                f.write("built\\n")
            time.sleep(1.0)  # long enough that the other process asks meanwhile
            np.save(tmp / "x.npy", np.arange(5))
            write_meta(tmp, {{}}, ["x"])

        arrays, meta = cached_entry(Path({str(tmp_path / 'cache' / 'entry')!r}), build, lambda a, m: a)
        print(int(arrays["x"].sum()))
    """
    procs = [_python(code) for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert [out.strip() for out, _ in outputs] == ["10", "10"]
    assert (tmp_path / "builds").read_text() == "built\n"


@contextlib.contextmanager
def locked_by_another_thread(run_dir):
    """``run_dir``'s run lock held by another thread (refused like another process) meanwhile."""
    held, release = threading.Event(), threading.Event()

    def hold():
        with run_lock(run_dir):
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        held.wait(30)
        yield
    finally:
        release.set()
        holder.join()


def test_resume_of_a_run_still_starting_names_the_lock_not_a_missing_checkpoint(tmp_path):
    from evsim.config import CONFIG_TOML
    from tests.conftest import one_line_error, run

    run_dir = tmp_path / "starting"
    run_dir.mkdir()
    (run_dir / CONFIG_TOML).write_text('dataset = "mnist"\n')  # a run in its first epoch: no checkpoint yet
    with locked_by_another_thread(run_dir):
        assert "is being written by another process" in one_line_error(run(["train", "--resume", str(run_dir)]))


def test_a_new_run_into_a_folder_training_now_names_the_lock_not_resume(tmp_path):
    """The folder of a run in training holds its checkpoint: the refusal said to continue
    it with --resume, which then said it is being written."""
    from evsim.checkpoint import CHECKPOINT_LATEST

    run_dir = tmp_path / "training"
    run_dir.mkdir()
    (run_dir / "config.json").write_text("{}")
    (run_dir / CHECKPOINT_LATEST).write_bytes(b"")
    with locked_by_another_thread(run_dir):
        line = one_line_error(run(TRAIN + ["--out", str(run_dir)]))
        assert "is being written by another process" in line and "--resume" not in line
    assert "already holds a training run; continue it with --resume" in one_line_error(run(TRAIN + ["--out",
                                                                                             str(run_dir)]))
