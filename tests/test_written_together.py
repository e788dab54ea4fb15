"""Outputs written together change together (evsim.files.written_together): a report and
its figure are both new or both old, whatever stops the second."""
from __future__ import annotations

import errno
import json
import shutil

import pytest

from evsim.files import write_bytes_atomic, written_together
from tests.conftest import run
from tests.test_hostile_runs import cli_run  # noqa: F401  (fixture)


def _no_space(path, *args):
    raise OSError(errno.ENOSPC, "No space left on device", str(path))


def _refused(result) -> str:
    """The one error line a command that had printed its report ends with (exit code 2)."""
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error: ") and "No space left on device" in last, result.output
    return last


def _temporaries(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_files_change_only_when_the_block_ends(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.png"
    a.write_bytes(b"old a")
    with written_together():
        write_bytes_atomic(a, b"new a")
        write_bytes_atomic(b, b"new b")
        assert a.read_bytes() == b"old a" and not b.exists()
        assert len(_temporaries(tmp_path)) == 2
    assert (a.read_bytes(), b.read_bytes()) == (b"new a", b"new b")
    assert _temporaries(tmp_path) == []


@pytest.mark.parametrize("stop", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt(),
                                  ValueError("a bug between the writes")])
def test_an_error_in_the_block_changes_no_file_and_leaves_no_temporary(tmp_path, stop):
    a, b = tmp_path / "a.json", tmp_path / "b.png"
    a.write_bytes(b"old a")
    b.write_bytes(b"old b")
    with pytest.raises(type(stop)):
        with written_together():
            write_bytes_atomic(a, b"new a")
            raise stop
    assert (a.read_bytes(), b.read_bytes()) == (b"old a", b"old b")
    assert _temporaries(tmp_path) == []


def test_an_inner_block_waits_for_the_outer_one(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    with pytest.raises(KeyboardInterrupt):
        with written_together():
            with written_together():
                write_bytes_atomic(a, b"a")
            assert not a.exists()
            write_bytes_atomic(b, b"b")
            raise KeyboardInterrupt
    assert not a.exists() and not b.exists() and _temporaries(tmp_path) == []


def test_a_rename_that_fails_removes_its_own_and_the_later_temporaries(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    with pytest.raises(OSError) as raised:
        with written_together():
            write_bytes_atomic(a, b"a")
            write_bytes_atomic(b, b"b")
            a.mkdir()  # something in the way after the outputs were checked
            (a / "inside").write_bytes(b"")
    assert raised.value.filename == str(a)
    assert not b.exists() and _temporaries(tmp_path) == []


def _outputs(folder, names):
    return {name: (folder / name).read_bytes() for name in names}


def test_profile_keeps_its_old_figure_when_its_json_cannot_be_written(cli_run, tmp_path, monkeypatch):  # noqa: F811
    import evsim.cli.profile as profile_cmd

    run_dir = shutil.copytree(cli_run, tmp_path / "run")
    assert run(["profile", str(run_dir), "--samples", "10"]).exit_code == 0
    names = ("profile-latest-test.json", "profile-latest-test.png")
    before = _outputs(run_dir, names)
    json.loads(before[names[0]])
    monkeypatch.setattr(profile_cmd, "write_json_atomic", _no_space)
    _refused(run(["profile", str(run_dir), "--samples", "20"]))
    assert _outputs(run_dir, names) == before and _temporaries(run_dir) == []


def test_eval_and_inspect_keep_their_old_figures_when_their_json_cannot_be_written(cli_run, tmp_path,  # noqa: F811
                                                                                   monkeypatch):
    import evsim.cli.eval as eval_cmd
    import evsim.cli.inspect as inspect_cmd

    run_dir = shutil.copytree(cli_run, tmp_path / "run")
    for command, module, png in (("eval", eval_cmd, "confusion-latest-test.png"),
                                 ("inspect", inspect_cmd, "inspect-latest-test.png")):
        extra = ["--samples", "10"] if command == "inspect" else []
        assert run([command, str(run_dir), "--json", str(run_dir / f"{command}.json"), *extra]).exit_code == 0
        before = _outputs(run_dir, (png, f"{command}.json"))
        with monkeypatch.context() as patch:
            patch.setattr(module, "write_json_atomic", _no_space)
            _refused(run([command, str(run_dir), "--json", str(run_dir / f"{command}.json"), "--split", "train",
                                "--plot", str(run_dir / png), *extra]))
        assert _outputs(run_dir, (png, f"{command}.json")) == before and _temporaries(run_dir) == []


def test_runs_compare_keeps_its_old_figure_when_its_csv_cannot_be_written(cli_run, tmp_path, monkeypatch):  # noqa: F811
    import evsim.cli.runs_cmd as runs_cmd

    png, csv = tmp_path / "compare.png", tmp_path / "compare.csv"
    assert run(["runs", "compare", str(cli_run), "--plot", str(png), "--csv", str(csv)]).exit_code == 0
    before = _outputs(tmp_path, (png.name, csv.name))
    monkeypatch.setattr(runs_cmd, "write_bytes_atomic", _no_space)
    other = shutil.copytree(cli_run, tmp_path / "other")
    _refused(run(["runs", "compare", str(cli_run), str(other), "--plot", str(png), "--csv", str(csv)]))
    assert _outputs(tmp_path, (png.name, csv.name)) == before and _temporaries(tmp_path) == []
