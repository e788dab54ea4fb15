"""A run folder moved or replaced (``mv RUN OTHER``) while training or a command uses
it: results go to the run they belong to, or the command stops in one line, writing
nothing where the folder's name now leads. And ``runs list`` through folder links."""
import shutil

import pytest
from click.testing import CliRunner

from evsim.checkpoint import CHECKPOINT_LATEST, load_checkpoint
from evsim.cli.main import main
from evsim.cli.runs_cmd import find_runs
from evsim.files import write_bytes_atomic
from evsim.runlock import LOCK_FILE, RunMovedError, check_lock_in_place, run_lock
from evsim.train import Trainer, resume
from tests.runs import toy_config, toy_dataset

QUIET = {"progress": False, "echo": lambda line: None}


def run(args):
    return CliRunner().invoke(main, [str(arg) for arg in args], prog_name="evsim")


def one_line_error(result, fragment: str, after_report: bool = False) -> None:
    """Exit code 2 and one line of error: the only output, or (``after_report``: profile
    prints its table as it has it) the last."""
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("Error: ") and (after_report or len(lines) == 1), result.output
    assert sum("Error" in line for line in lines) == 1 and fragment in lines[-1], result.output


def other_folder_at(path):
    """Another run's folder, locked by its own process, given the name ``path``."""
    path.mkdir()
    (path / LOCK_FILE).write_text("4242\n")
    (path / "config.json").write_text("{}")


@pytest.mark.parametrize("replaced", [False, True])
def test_training_stops_when_its_folder_is_moved_and_the_moved_run_resumes(tmp_path, monkeypatch, replaced):
    monkeypatch.setattr("evsim.train.plot_training", lambda *args: None)
    out, moved = tmp_path / "M", tmp_path / "Mmoved"
    trainer = Trainer(toy_config(epochs=3), toy_dataset())

    def echo(line):
        if line.startswith("epoch   1"):  # epoch 1 saved; the folder moves while epoch 2 trains
            trainer.checkpoints.wait()
            out.rename(moved)
            if replaced:
                other_folder_at(out)

    with pytest.raises(RunMovedError, match=f"moved or replaced while training \\(now at {moved}\\).*"
                                            f"evsim train --resume {moved}$"):
        trainer.fit(out, progress=False, echo=echo)
    if replaced:  # the other run's folder as it was, its lock file included
        assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE, "config.json"]
    else:
        assert not out.exists()  # not made again by the writes of epoch 2
    assert not (moved / LOCK_FILE).exists()  # released where the folder is now
    assert load_checkpoint(moved / CHECKPOINT_LATEST).epoch == 1
    monkeypatch.setattr("evsim.train._load_announced", lambda config, echo: toy_dataset())
    resume(moved, **QUIET)
    assert load_checkpoint(moved / CHECKPOINT_LATEST).epoch == 3


def test_a_move_while_the_training_figure_is_drawn_leaves_no_new_folder(tmp_path, monkeypatch):
    out, moved = tmp_path / "M", tmp_path / "Mmoved"
    trainer = Trainer(toy_config(epochs=2), toy_dataset())

    def plot(metrics, path, *args):  # drawing takes a second or more: the folder moves meanwhile
        trainer.checkpoints.wait()
        out.rename(moved)
        write_bytes_atomic(path, b"figure")  # makes the folder again, to hold its temporary file

    monkeypatch.setattr("evsim.train.plot_training", plot)
    with pytest.raises(RunMovedError, match=f"now at {moved}"):
        trainer.fit(out, **QUIET)
    assert not out.exists()
    assert not (moved / "training.png").exists() and not (moved / LOCK_FILE).exists()


@pytest.fixture(scope="module")
def toy_template(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("evsim.train.plot_training", lambda *args: None)
        out = tmp_path_factory.mktemp("toy") / "run"
        Trainer(toy_config(epochs=1), toy_dataset()).fit(out, **QUIET)
    return out


@pytest.fixture
def toy_run(toy_template, tmp_path, monkeypatch):
    """A trained run whose data the commands load (the toy dataset is not a named one)."""
    for command in ("eval", "profile", "inspect"):
        monkeypatch.setattr(f"evsim.cli.{command}.load_run_dataset", lambda *args: (toy_dataset(), False))
    return shutil.copytree(toy_template, tmp_path / "R2")


def moving(monkeypatch, target: str, run_dir, moved, replace_with=None):
    """Make ``target`` (a module's function the command calls after loading the run)
    move ``run_dir`` to ``moved`` first, and put ``replace_with``'s copy in its place."""
    module, name = target.rsplit(".", 1)
    real = getattr(__import__(module, fromlist=[name]), name)

    def moved_first(*args, **kwargs):
        run_dir.rename(moved)
        if replace_with is not None:
            shutil.copytree(replace_with, run_dir)
        return real(*args, **kwargs)

    monkeypatch.setattr(target, moved_first)


def test_eval_of_a_moved_run_writes_nothing_and_makes_no_folder(toy_run, tmp_path, monkeypatch):
    moved = tmp_path / "R2moved"
    moving(monkeypatch, "evsim.cli.eval.evaluate", toy_run, moved)
    one_line_error(run(["eval", toy_run, "--split", "train"]),
                   f"{toy_run} was moved or replaced while evsim eval ran; nothing was written")
    assert not toy_run.exists()
    assert not list(moved.glob("confusion-*"))


def test_an_output_named_through_a_link_to_the_moved_run_is_not_written(toy_run, tmp_path, monkeypatch):
    """The folder given through a link, an output through the folder's own name: both are
    in the run folder by their real paths (compared by text, the output was written into
    a new folder at the old name)."""
    link = tmp_path / "link"
    link.symlink_to(toy_run)
    moving(monkeypatch, "evsim.cli.eval.evaluate", toy_run, tmp_path / "R2moved")
    one_line_error(run(["eval", link, "--json", toy_run / "e.json", "--plot", tmp_path / "e.png"]),
                   "was moved or replaced while evsim eval ran; nothing was written")
    assert not toy_run.exists() and not (tmp_path / "e.png").exists()


def test_profile_of_a_run_replaced_by_another_writes_into_neither(toy_run, toy_template, tmp_path, monkeypatch):
    old = tmp_path / "R2old"
    moving(monkeypatch, "evsim.cli.profile.run_profile", toy_run, old, replace_with=toy_template)
    one_line_error(run(["profile", toy_run]), "was moved or replaced while evsim profile ran", after_report=True)
    assert not list(toy_run.glob("profile-*")) and not list(old.glob("profile-*"))
    assert not list(toy_run.glob("*.tmp"))


def test_inspect_of_a_moved_run_writes_nothing(toy_run, tmp_path, monkeypatch):
    moved = tmp_path / "R2moved"
    moving(monkeypatch, "evsim.cli.inspect.record_dataset", toy_run, moved)
    one_line_error(run(["inspect", toy_run, "--samples", "8", "--rasters", "1"]),
                   "was moved or replaced while evsim inspect ran")
    assert not toy_run.exists() and not list(moved.glob("inspect-*"))


def test_export_into_a_moved_run_is_refused_and_elsewhere_written(toy_run, tmp_path, monkeypatch):
    moved = tmp_path / "R2moved"
    with monkeypatch.context() as patch:  # moved while the graph is written: not renamed into place
        moving(patch, "evsim.cli.nir.write_nir", toy_run, moved)
        one_line_error(run(["export", toy_run, toy_run / "net.nir"]), "was moved or replaced while evsim export ran")
    assert not toy_run.exists() and not list(moved.glob("net.nir*"))
    moved.rename(toy_run)
    moving(monkeypatch, "evsim.cli.nir.write_nir", toy_run, moved)
    result = run(["export", toy_run, tmp_path / "net.nir"])  # the user's file elsewhere: the network loaded
    assert result.exit_code == 0, result.output
    assert (tmp_path / "net.nir").is_file()


def test_runs_list_lists_each_folder_once_and_follows_no_link_upwards(tmp_path):
    for name in ("R7", "L2/a_run", "L2/b/c_run"):
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "metrics.jsonl").write_text("")
    top = tmp_path / "L2"
    for name, target in (("link7", "../R7"), ("up", ".."), ("self", "."), ("b/back", "../.."), ("z_alias", "a_run"),
                         ("zz", "b"), ("loopy", "loopy"), ("dangling", "../nothing")):
        (top / name).symlink_to(target)
    found, unsearched, unreadable = find_runs(top)
    assert found == [top / "a_run", top / "b" / "c_run", top / "link7"]  # the link to a run not otherwise listed
    assert unsearched == [] and unreadable == {}
    result = run(["runs", "list", top])
    assert result.exit_code == 0, result.output
    assert len(result.output.strip().splitlines()) == 4, result.output  # the header and the three runs


def test_the_check_follows_the_folder_not_its_lock_file(tmp_path):
    folder = tmp_path / "run"
    with run_lock(folder):
        (folder / LOCK_FILE).unlink()  # a lock file deleted by hand: the folder is still the run's
        check_lock_in_place(folder)
        folder.rename(tmp_path / "elsewhere")
        with pytest.raises(RunMovedError, match="moved, deleted or replaced while training"):
            check_lock_in_place(folder)


@pytest.mark.parametrize("args", [[""], ["R", "--plot", ""], ["R", "--json", ""]])
def test_inspect_refuses_an_empty_path_as_eval_does(args):
    one_line_error(run(["inspect", *args]), "must not be an empty path")
