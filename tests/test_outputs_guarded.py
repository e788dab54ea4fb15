"""Outputs that change together stay together whatever else happens (another process
writing the same pair, a signal between the renames, a write that fails in folders it
made), and a command's outputs never replace the files a run or sweep keeps its state in."""
from __future__ import annotations

import errno
import fcntl
import os
import signal
import tempfile
import threading
import time

import pytest

import evsim.files as files
from evsim.cli.runs import check_outputs
from evsim.errors import CheckpointError
from evsim.files import write_bytes_atomic, written_together
from evsim.runlock import run_lock
from tests.conftest import one_line_error, run
from tests.test_hostile_runs import dead_pid


def test_a_second_writer_renames_its_pair_only_after_the_first_has_renamed_its_own(tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.json"
    holder = os.open(tmp_path, os.O_RDONLY)  # stands for another process renaming in the folder now
    fcntl.flock(holder, fcntl.LOCK_EX)

    def write():
        with written_together():
            write_bytes_atomic(a, b"new")
            write_bytes_atomic(b, b"new")

    writer = threading.Thread(target=write)
    try:
        writer.start()
        time.sleep(0.3)
        assert not a.exists() and not b.exists()  # waiting for the folder, not half renamed
    finally:
        os.close(holder)
        writer.join(10)
    assert a.read_bytes() == b.read_bytes() == b"new"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_between_the_renames_takes_effect_after_the_last(tmp_path, monkeypatch, sig):
    a, b = tmp_path / "a.png", tmp_path / "b.json"
    a.write_bytes(b"old")
    b.write_bytes(b"old")
    commit = files.commit

    def signalled_commit(tmp, path):
        commit(tmp, path)
        if path == a:
            signal.raise_signal(sig)

    caught = []

    def handler(signum, frame):
        caught.append(signum)
        raise KeyboardInterrupt

    monkeypatch.setattr(files, "commit", signalled_commit)
    previous = signal.signal(sig, handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            with written_together():
                write_bytes_atomic(a, b"new")
                write_bytes_atomic(b, b"new")
        assert signal.getsignal(sig) is handler  # the command's own handler is back
    finally:
        signal.signal(sig, previous)
    assert caught == [sig]
    assert a.read_bytes() == b.read_bytes() == b"new"


def _sweep_folder(tmp_path):
    sweep = tmp_path / "SW"
    (sweep / "logs").mkdir(parents=True)
    (sweep / "sweep.json").write_text("{}")
    (sweep / "logs" / "seed=0.log").write_text("log")
    return sweep


def test_outputs_never_replace_lock_sweep_state_stop_or_log_files(tmp_path):
    sweep = _sweep_folder(tmp_path)
    kept = {tmp_path / "R7" / ".evsim.lock": "lock file", sweep / "sweep.json": "state file",
            sweep / "stop-requested": "stop file", sweep / "logs" / "seed=0.log": "logs folder",
            sweep / "logs" / "new.log": "logs folder"}
    for path, what in kept.items():
        with pytest.raises(CheckpointError, match=what) as refused:
            check_outputs(path)
        assert str(path) in str(refused.value) and "\n" not in str(refused.value)
    (tmp_path / "elsewhere").mkdir()
    check_outputs(tmp_path / "elsewhere" / "stop-requested", tmp_path / "logs" / "x.log")  # not a sweep's


def test_only_sweep_report_writes_a_sweep_folders_report_files(tmp_path):
    sweep = _sweep_folder(tmp_path)
    for name in ("results.csv", "report.md", "report.png"):
        with pytest.raises(CheckpointError, match="sweep report writes it"):
            check_outputs(sweep / name)
    check_outputs(sweep / "results.csv", sweep / "report.md", sweep / "report.png", sweep_report=True)
    (tmp_path / "other").mkdir()
    check_outputs(tmp_path / "other" / "report.png")


def test_eval_refuses_a_json_over_a_sweeps_state_in_one_line(tmp_path):
    sweep = _sweep_folder(tmp_path)
    (tmp_path / "R").mkdir()
    line = one_line_error(run(["eval", str(tmp_path / "R"), "--json", str(sweep / "sweep.json")]))
    assert "sweep.json" in line and "state file" in line
    assert (sweep / "sweep.json").read_text() == "{}"


def test_checking_outputs_removes_what_killed_writers_left_in_their_folders(tmp_path):
    stale = tmp_path / f".out.json.{dead_pid()}.abcd1234.tmp"
    stale.write_bytes(b"half")
    mine = tmp_path / f".out.png.{os.getpid()}.abcd1234.tmp"  # a live writer's: kept
    mine.write_bytes(b"half")
    check_outputs(tmp_path / "out.json")
    assert not stale.exists() and mine.exists()


def test_checking_outputs_never_touches_other_hidden_files_or_a_run_being_trained(tmp_path):
    """Only the outputs' own temporaries go: a user's hidden files in the same folder that
    look like evsim's, an hour old, stay (they were deleted, a folder of them with rmtree),
    and so does everything in a folder whose run lock is held (a run trained from another
    machine, whose pids say nothing here)."""
    old = time.time() - 7200
    theirs = [tmp_path / ".backup.tmp-20240101", tmp_path / ".desktop.link", tmp_path / ".vim.settings.tmp",
              tmp_path / f".notes.txt.{dead_pid()}.abcd1234.tmp"]
    theirs[0].mkdir()
    (theirs[0] / "thesis.tex").write_text("years of work")
    for path in theirs[1:]:
        path.write_text("mine")
    for path in theirs:
        os.utime(path, (old, old))
    check_outputs(tmp_path / "out.json", tmp_path / "out.png")
    assert all(path.exists() for path in theirs) and (theirs[0] / "thesis.tex").exists()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    building = run_dir / f".checkpoint-latest.npz.{dead_pid()}.abcd1234.tmp"
    building.write_bytes(b"half")
    stale = run_dir / f".e.json.{dead_pid()}.abcd1234.tmp"
    stale.write_bytes(b"half")
    with run_lock(run_dir):
        check_outputs(run_dir / "e.json")
        assert building.exists() and stale.exists()
    check_outputs(run_dir / "e.json")
    assert building.exists() and not stale.exists()


def _efbig(handle):
    raise OSError(errno.EFBIG, "File too large")


def test_a_failed_write_removes_the_folders_it_made(tmp_path):
    (tmp_path / "kept").mkdir()
    with pytest.raises(OSError):
        files.write_atomic(tmp_path / "kept" / "new" / "deeper" / "x.json", _efbig)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["kept"]


def test_a_failed_block_removes_the_folders_its_writes_made(tmp_path):
    with pytest.raises(OSError):
        with written_together():
            write_bytes_atomic(tmp_path / "nd" / "a" / "c.png", b"figure")
            files.write_atomic(tmp_path / "nd" / "b" / "e.json", _efbig)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def unwritable(monkeypatch):
    """Every folder refuses new files, as a read-only one does (tests may run as root)."""
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)


def test_a_default_output_that_cannot_be_written_names_the_option_to_give(tmp_path, unwritable):
    run_dir = tmp_path / "ro1"
    run_dir.mkdir()
    assert one_line_error(run(["eval", str(run_dir)])).endswith("; give --plot FILE")
    assert one_line_error(run(["inspect", str(run_dir)])).endswith("; give --plot FILE")
    assert one_line_error(run(["profile", str(run_dir)])).endswith("; give --json FILE and --plot FILE")
    typed = one_line_error(run(["eval", str(run_dir), "--plot", str(run_dir / "c.png")]))
    assert typed.endswith("; choose another path")
