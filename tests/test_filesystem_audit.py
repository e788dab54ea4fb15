"""What the file system can hold that a command must name in one line (or get right):
damaged or unreadable files, links that go nowhere or loop, folders where files go,
names at the length limit, a machine without a writable temporary folder."""
import errno
import os
import pathlib
import shutil
import tempfile

import pytest

from evsim.cli import main as cli_main
from evsim.config import options_from_file, resolve_options
from evsim.data import DataOptions, load_dataset
from evsim.data.cache import default_cache_dir
from evsim.data.emulate import MANIFEST, write_emulated_nmnist
from evsim.errors import DataError
from evsim.files import write_bytes_atomic
from evsim.sweep import training
from tests import test_hostile_runs
from tests.conftest import one_line_error, run
from tests.test_hostile_runs import TINY

cli_run = test_hostile_runs.cli_run  # the same module fixture: a finished tiny run, made once here


def copy_of(run_dir, tmp_path, name="copy"):
    return shutil.copytree(run_dir, tmp_path / name)


def loop(tmp_path, name="loopA"):
    a, b = tmp_path / name, tmp_path / f"other-{name}"
    a.symlink_to(b.name)
    b.symlink_to(a.name)
    return a


@pytest.mark.parametrize("source", ["auto", "real"])
def test_an_emulated_folder_whose_manifest_is_damaged_is_not_taken_for_real_data(tmp_path, source):
    root = tmp_path / "emu"
    write_emulated_nmnist(root, per_class=1, progress=False)
    (root / MANIFEST).write_text('{"splits": ')  # truncated
    with pytest.raises(DataError, match=rf"{MANIFEST}: not a readable emulator manifest .*emulate-nmnist`$"):
        load_dataset("nmnist", DataOptions(data_dir=root, cache_dir=tmp_path / "cache", download=False,
                                           source=source))


@pytest.mark.parametrize("kind", ["folder", "fifo", "dangling", "loop"])
def test_a_latest_checkpoint_that_is_no_file_is_named_not_passed_over(cli_run, tmp_path, kind):
    run_dir = copy_of(cli_run, tmp_path)
    latest = run_dir / "checkpoint-latest.npz"
    latest.unlink()
    if kind == "folder":
        latest.mkdir()
    elif kind == "fifo":
        os.mkfifo(latest)
    elif kind == "dangling":
        latest.symlink_to(tmp_path / "gone.npz")
    else:
        latest.symlink_to(latest.name)
    for command in (["eval", str(run_dir)], ["export", str(run_dir), str(tmp_path / "n.nir")]):
        line = one_line_error(run(command))
        assert "checkpoint-latest.npz: is a" in line and "not a checkpoint file" in line, line


def test_symlink_loops_are_one_line_naming_the_loop(cli_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    looped = loop(tmp_path, "loop.png")
    line = one_line_error(run(["eval", str(cli_run), "--plot", str(looped)]))
    assert f"cannot use {looped}: a loop of symbolic links" in line
    run_loop = loop(tmp_path, "runloop")
    for command in ("eval", "inspect"):
        line = one_line_error(run([command, str(run_loop)]))
        assert f"cannot use {run_loop}: a loop of symbolic links" in line, line
    line = one_line_error(run(["train", *TINY, "--data-dir", str(looped), "--out", str(tmp_path / "r")]))
    assert f"data_dir {looped}: a loop of symbolic links" in line, line


def test_a_sweep_point_resolves_without_a_temporary_folder(tmp_path, monkeypatch):
    def no_temporary(*args, **kwargs):
        raise FileNotFoundError(errno.ENOENT, "No usable temporary directory found")

    for name in ("TemporaryDirectory", "mkstemp", "mkdtemp", "NamedTemporaryFile", "gettempdir"):
        monkeypatch.setattr(tempfile, name, no_temporary)
    config = training.resolve({"dataset": "mnist", "hidden": 16, "epochs": 1}, tmp_path / "p", "point p")
    assert config.epochs == 1 and config.hidden == (16,)
    (tmp_path / "s.toml").write_text('[base]\ndataset = "mnist"\n')
    result = run(["sweep", "run", str(tmp_path / "s.toml"), "--workers", "1"])
    assert "no writable temporary folder" in one_line_error(result)


def test_an_unreadable_folder_among_runs_is_listed_as_such_and_the_others_as_usual(cli_run, tmp_path, monkeypatch):
    folder = tmp_path / "runs"
    copy_of(cli_run, folder, "a")
    (folder / "locked").mkdir()
    iterdir = pathlib.Path.iterdir

    def refusing(self):
        if self.name == "locked":
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return iterdir(self)

    monkeypatch.setattr(pathlib.Path, "iterdir", refusing)
    result = run(["runs", "list", str(folder)])
    assert result.exit_code == 0, result.output
    rows = result.output.splitlines()
    assert rows[1].startswith("a ") and "mnist" in rows[1]
    assert rows[2].startswith("locked ") and "unreadable" in rows[2]
    assert f"unreadable: {folder / 'locked'}: cannot read the folder (Permission denied); fix its permissions" in rows


def test_a_run_folder_name_with_a_newline_stays_one_row(cli_run, tmp_path):
    copy_of(cli_run, tmp_path / "runs", "a\nb")
    result = run(["runs", "list", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    assert len(result.output.splitlines()) == 2 and "a\\nb " in result.output


def test_a_checkpoint_without_read_permission_is_not_called_damaged(cli_run, tmp_path, monkeypatch):
    run_dir = copy_of(cli_run, tmp_path)

    def denied(path):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr("evsim.checkpoint.check_npz", denied)
    line = one_line_error(run(["eval", str(run_dir)]))
    assert line.endswith("checkpoint-latest.npz: cannot read the checkpoint (Permission denied); fix its permissions")
    assert "corrupt" not in line  # whose advice, to copy checkpoint-best over it, would lose epochs
    (run_dir / "checkpoint-latest.npz").unlink()  # eval then reads network.npz
    (run_dir / "checkpoint-best.npz").unlink(missing_ok=True)
    line = one_line_error(run(["eval", str(run_dir)]))
    assert line.endswith("network.npz: cannot read the network file (Permission denied); fix its permissions"), line


@pytest.mark.parametrize("name", ["a" * 250 + ".nir", "é" * 127 + "x"])
def test_any_valid_file_name_can_be_written(tmp_path, name):
    assert len(os.fsencode(name)) <= os.pathconf(tmp_path, "PC_NAME_MAX")
    write_bytes_atomic(tmp_path / name, b"x")
    assert [p.name for p in tmp_path.iterdir()] == [name] and (tmp_path / name).read_bytes() == b"x"


def test_tilde_in_a_config_files_out_is_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    config = tmp_path / "c.toml"
    config.write_text('dataset = "mnist"\nout = "~/tilde-run"\ndata_dir = "~/data"\n')
    options = resolve_options({}, options_from_file(config))
    assert options["out"] == tmp_path / "home" / "tilde-run"
    assert options["data_dir"] == tmp_path / "home" / "data"


def test_sweep_summary_counts_a_failed_skipped_point_once(tmp_path, monkeypatch):
    states = [{"name": "seed=0", "status": "failed", "action": "skipped", "error": "unreadable"},
              {"name": "seed=1", "status": "done", "action": "skipped"}]
    monkeypatch.setattr("evsim.cli.sweep.run_sweep_file", lambda *args: states)
    (tmp_path / "s.toml").write_text("")
    result = run(["sweep", "run", str(tmp_path / "s.toml"), "--out", str(tmp_path / "o"), "--no-progress"])
    assert result.exit_code == 1
    assert "done: 1 of 2 points finished (1 already before, 0 resumed), 1 failed" in result.output


def test_paths_in_the_way_are_named_with_what_they_are(cli_run, tmp_path):
    (tmp_path / "afile").write_text("x")
    line = one_line_error(run(["export", str(cli_run), str(tmp_path / "afile" / "x.nir")]))
    assert line.endswith("afile: it is a file, not a folder; move it away, or choose another path"), line
    (tmp_path / "dangling").symlink_to(tmp_path / "gone" / "x")
    line = one_line_error(run(["train", *TINY, "--out", str(tmp_path / "dangling")]))
    assert "dangling: it is a broken link" in line and "File exists" not in line, line
    run_dir = copy_of(cli_run, tmp_path)
    (run_dir / "network.npz").unlink()
    (run_dir / "network.npz").mkdir()
    result = run(["train", "--resume", str(run_dir), "--epochs", "2", "--no-progress"])
    line = result.output.splitlines()[-1]
    assert result.exit_code == 2, result.output
    assert line.endswith("network.npz: it is a folder, not a file; move it away, or choose another path"), line


def test_the_file_size_limit_and_the_default_cache_are_named(tmp_path, monkeypatch):
    big = OSError(errno.EFBIG, "File too large", "big.nir")
    assert "file size limit (ulimit -f)" in cli_main._os_error_line(big)
    monkeypatch.delenv("EVSIM_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    denied = OSError(errno.EACCES, "Permission denied", str(tmp_path / ".cache"))
    assert "--cache-dir or $EVSIM_CACHE" in cli_main._os_error_line(denied)
    monkeypatch.setenv("HOME", "")
    assert default_cache_dir() != pathlib.Path("/.cache/evsim") and default_cache_dir().is_absolute()


def test_a_failed_import_leaves_no_folders_it_made(cli_run, tmp_path, monkeypatch):
    assert run(["export", str(cli_run), str(tmp_path / "n.nir")]).exit_code == 0

    def too_large(path, *args, **kwargs):
        raise OSError(errno.EFBIG, "File too large", str(path))

    monkeypatch.setattr("evsim.cli.nir.save_network", too_large)
    line = one_line_error(run(["import-nir", str(tmp_path / "n.nir"), str(tmp_path / "imp" / "deep")]))
    assert "ulimit -f" in line and not (tmp_path / "imp").exists()


def test_a_small_file_that_cannot_be_read_says_the_fix(tmp_path, monkeypatch):
    """The sweep report's line for an unreadable summary.json read "(Permission denied); or
    delete it ...": the reason came with no fix of its own."""
    from evsim.errors import ConfigError
    from evsim.readers import read_small_file

    def denied(path, flags):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr("evsim.readers.os.open", denied)
    with pytest.raises(ConfigError, match=r"s.json: cannot read the run summary \(Permission denied\); fix its "
                                          "permissions$"):
        read_small_file(tmp_path / "s.json", "run summary", ConfigError)


def test_an_unreadable_manifest_says_to_fix_its_permissions_not_that_it_is_damaged(tmp_path, monkeypatch):
    from evsim.data.emulate import MANIFEST, checked_manifest
    from evsim.errors import DataError

    (tmp_path / MANIFEST).write_text("{}")

    def denied(path, flags):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr("evsim.readers.os.open", denied)
    with pytest.raises(DataError, match=r"\(Permission denied\); fix its permissions; or, if the folder is emulated "
                                        r"N-MNIST, make it again with `evsim data emulate-nmnist`$"):
        checked_manifest(tmp_path)
