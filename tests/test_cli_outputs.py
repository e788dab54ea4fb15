"""What the CLI writes and where: unusable paths, pictures, file modes, the frame cache,
bad DVS-Gesture recordings and impossible frame counts all end in one line, never a
traceback or a half-written result."""
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from evsim.cli.main import main
from evsim.data import load_dataset
from evsim.data.cache import atomic_dir
from evsim.data.frames import SparseFrames
from evsim.errors import ConfigError, DataError
from evsim.files import write_bytes_atomic, write_json_atomic
from tests.test_data_dvsgesture import make_gestures, opts as gesture_opts
from tests.test_data_nmnist import make_plain, opts


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No network, no user data folder, no user cache."""
    monkeypatch.setenv("EVSIM_OFFLINE", "1")
    monkeypatch.delenv("EVSIM_DATA", raising=False)
    monkeypatch.setenv("EVSIM_CACHE", str(tmp_path / "default-cache"))


def cli(args, env=None):
    return CliRunner().invoke(main, args, prog_name="evsim", env=env)


def one_error_line(result, *fragments):
    """Exit code 2 and, after any notices, a single last line ``Error: ...`` holding every fragment."""
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("Error:") and "Traceback" not in result.output, result.output
    assert [line for line in lines if "Error" in line] == lines[-1:], result.output
    for fragment in fragments:
        assert fragment in lines[-1], result.output


@pytest.fixture
def nmnist_args(tmp_path):
    """Options that load a four-recording N-MNIST folder through a private cache."""
    root = make_plain(tmp_path / "data", real_first=False)
    return ["--dataset", "nmnist", "--data-dir", str(root), "--cache-dir", str(tmp_path / "cache")]


# ---------------------------------------------------------------- unusable output paths

CANNOT_USE = ("cannot use {afile}", "choose another path")


@pytest.mark.parametrize("command,rest,needs_data,fragments", [
    (["train"], ["--dataset", "mnist", "--out", "{afile}/run"], False, CANNOT_USE),
    (["data", "emulate-nmnist"], ["--per-class", "1", "--out", "{afile}/emu"], False, CANNOT_USE),
    (["data", "info"], ["--cache-dir", "{afile}/cache"], True, CANNOT_USE),
    # checked before any data is loaded
    (["data", "show"], ["--out", "{afile}/s.png"], True, ("cannot write {afile}/s.png: {afile} is not a folder",
                                                          "choose another path")),
])
def test_a_path_under_a_file_is_one_line_naming_it(tmp_path, nmnist_args, command, rest, needs_data, fragments):
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    result = cli(command + (nmnist_args if needs_data else []) + [part.format(afile=afile) for part in rest])
    one_error_line(result, *(fragment.format(afile=afile) for fragment in fragments))


def test_an_unusable_cache_from_the_environment_is_one_line(tmp_path, nmnist_args):
    (tmp_path / "afile").write_text("")
    result = cli(["data", "info", *nmnist_args[:4]], env={"EVSIM_CACHE": str(tmp_path / "afile" / "c")})
    one_error_line(result, f"cannot use {tmp_path / 'afile'}")


def test_a_failed_atomic_write_names_the_chosen_file_not_its_temporary(tmp_path):
    (tmp_path / "adir").mkdir()
    with pytest.raises(IsADirectoryError) as caught:
        write_json_atomic(tmp_path / "adir", {"a": 1})
    assert caught.value.filename == str(tmp_path / "adir")
    assert os.listdir(tmp_path / "adir") == [] and os.listdir(tmp_path) == ["adir"]  # no temporary left


def test_an_oserror_without_a_path_is_not_dressed_up(monkeypatch):
    def broken(*args):
        raise OSError("no path involved")
    monkeypatch.setattr("evsim.cli.data.load_dataset", broken)
    result = cli(["data", "info"])
    assert isinstance(result.exception, OSError) and "cannot use" not in result.output


# ---------------------------------------------------------------- data show --out

def test_show_creates_missing_folders_and_writes_atomically(tmp_path, nmnist_args):
    out = tmp_path / "new" / "deeper" / "s.png"
    result = cli(["data", "show", *nmnist_args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and os.listdir(out.parent) == ["s.png"]


def test_show_without_a_suffix_writes_png_and_says_where(tmp_path, nmnist_args):
    result = cli(["data", "show", *nmnist_args, "--out", str(tmp_path / "s7")])
    assert result.exit_code == 0, result.output
    assert f"wrote {tmp_path / 's7.png'} " in result.output
    assert (tmp_path / "s7.png").read_bytes()[:4] == b"\x89PNG" and not (tmp_path / "s7").exists()


def test_show_writes_the_format_its_suffix_names(tmp_path, nmnist_args):
    result = cli(["data", "show", *nmnist_args, "--out", str(tmp_path / "s.PDF")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "s.PDF").read_bytes()[:5] == b"%PDF-"


def test_show_refuses_an_unknown_format_before_loading_anything(tmp_path):
    result = cli(["data", "show", "--out", str(tmp_path / "s6.txt")])  # no data: would fall back to emulation
    one_error_line(result, "--out", "s6.txt", ".png", ".svg")
    assert not (tmp_path / "default-cache").exists()


# ---------------------------------------------------------------- file modes

@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_results_get_the_mode_the_umask_gives_a_new_file(tmp_path, umask):
    old = os.umask(umask)
    try:
        write_bytes_atomic(tmp_path / "r.json", b"{}")
        with atomic_dir(tmp_path / "entry") as tmp:
            (tmp / "x").write_bytes(b"")
    finally:
        os.umask(old)
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o666 & ~umask
    assert (tmp_path / "entry").stat().st_mode & 0o777 == 0o777 & ~umask


# ---------------------------------------------------------------- bare groups

@pytest.mark.parametrize("args", [[], ["data"]])
def test_a_bare_group_prints_its_help(args):
    result = cli(args)
    assert result.exit_code in (0, 2)
    assert result.output.startswith("Usage: evsim") and "Commands:" in result.output
    assert "Error" not in result.output


# ---------------------------------------------------------------- corrupt frame cache

def only_entry(tmp_path) -> Path:
    (entry,) = (tmp_path / "cache" / "frames").iterdir()
    return entry


def corrupt(entry: Path, how: str) -> None:
    if how == "truncated":
        path = entry / "train_idx.npy"
        path.write_bytes(path.read_bytes()[:100])
    elif how == "index out of range":
        idx = np.load(entry / "train_idx.npy", mmap_mode="r+")
        idx[0] = 10**6
        idx.flush()
    elif how == "ptr not rising":
        ptr = np.load(entry / "train_ptr.npy", mmap_mode="r+")
        ptr[1] = ptr[-1] + 1
        ptr.flush()
    elif how == "label out of range":
        np.save(entry / "test_labels.npy", np.array([0, 12]))
    elif how == "meta unreadable":
        (entry / "meta.json").write_text("{")


@pytest.mark.parametrize("how", ["truncated", "index out of range", "ptr not rising", "label out of range",
                                 "meta unreadable"])
def test_a_corrupt_cache_entry_is_rebuilt(tmp_path, how):
    root = make_plain(tmp_path / "data", real_first=False)
    first = load_dataset("nmnist", opts(tmp_path, data_dir=root))
    expected = first.train.inputs.to_dense(), first.test.labels.copy()
    del first
    corrupt(only_entry(tmp_path), how)
    again = load_dataset("nmnist", opts(tmp_path, data_dir=root))
    np.testing.assert_array_equal(again.train.inputs.to_dense(), expected[0])
    np.testing.assert_array_equal(again.test.labels, expected[1])
    assert only_entry(tmp_path).name == Path(again.meta["cache"]).name  # replaced, nothing left beside it


def test_show_after_a_bad_cache_index_redraws_from_a_rebuilt_entry(tmp_path, nmnist_args):
    assert cli(["data", "info", *nmnist_args]).exit_code == 0
    corrupt(only_entry(tmp_path), "index out of range")
    result = cli(["data", "show", *nmnist_args, "--out", str(tmp_path / "s.png")])
    assert result.exit_code == 0, result.output


def test_a_corrupt_entry_that_cannot_be_deleted_is_named(tmp_path, nmnist_args, monkeypatch):
    assert cli(["data", "info", *nmnist_args]).exit_code == 0
    entry = only_entry(tmp_path)
    corrupt(entry, "truncated")

    def refuse(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))
    monkeypatch.setattr("evsim.data.cache.shutil.rmtree", refuse)
    result = cli(["data", "info", *nmnist_args])
    one_error_line(result, str(entry), "corrupt", "delete that folder")


def test_store_check_refuses_events_outside_their_frames():
    frames = SparseFrames.from_dense(np.ones((2, 3, 1, 2, 2), dtype=np.uint8))
    frames.check()
    idx = frames.idx.copy()
    idx[-1] = 4
    with pytest.raises(DataError, match="outside their frames of 4 cells"):
        SparseFrames(frames.ptr, idx, frames.val, 3, (1, 2, 2)).check()


# ---------------------------------------------------------------- bad DVS-Gesture recordings

@pytest.mark.parametrize("row,match", [
    ([5.0, np.nan, 1.0, 3.0], "has a NaN or infinite value"),
    ([5.0, 6.0, 1.0, np.inf], "has a NaN or infinite value"),
    ([5.0, 6.0, 7.0, 3.0], "has a polarity other than 0 or 1"),
    ([5.5, 6.0, 1.0, 3.0], "has a fractional coordinate"),
    ([65536.0 + 5, 6.0, 1.0, 3.0], "event 2 at x=65541, y=6 lies outside the 128x128 sensor"),  # int16 would wrap
])
def test_bad_gesture_events_are_refused_naming_the_file(tmp_path, row, match):
    root = make_gestures(tmp_path / "data")
    path = root / "ibmGestureTest" / "user24_natural" / "7.npy"
    rows = np.load(path)
    rows[2] = row
    np.save(path, rows)
    with pytest.raises(DataError, match=f"7.npy: .*{match}"):
        load_dataset("dvsgesture", gesture_opts(tmp_path))


# ---------------------------------------------------------------- impossible frame counts

def test_too_many_time_steps_is_one_line_naming_the_option(tmp_path, nmnist_args):
    result = cli(["data", "info", *nmnist_args, "--time-steps", str(2**31 - 1)])
    one_error_line(result, "do not fit in memory", "reduce --time-steps")
    assert list((tmp_path / "cache" / "frames").iterdir()) == []


def test_memory_running_out_while_framing_names_the_option(tmp_path, monkeypatch):
    def no_memory(*args):
        raise MemoryError
    monkeypatch.setattr("evsim.data.events.to_frames", no_memory)
    root = make_plain(tmp_path / "data", real_first=False)
    with pytest.raises(ConfigError, match="reduce --time-steps"):
        load_dataset("nmnist", opts(tmp_path, data_dir=root))
