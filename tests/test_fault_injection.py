"""Fault injection: a run killed at any write of its run folder, then resumed (or, killed
before its first checkpoint, started again), ends bit-identical to the run uninterrupted:
checkpoint-latest, checkpoint-best, network.npz, metrics.jsonl and summary.json.

Every file a run writes changes at one step, :func:`evsim.files.commit` (the rename of a
complete temporary over the file). The test counts those steps in an uninterrupted run,
then for every k kills a fresh run just before its k-th: from there on the "dead" process
writes nothing more (every later commit dies too, on any thread), as after SIGKILL.
"""
from pathlib import Path

import pytest

import evsim.files
from evsim.checkpoint import CHECKPOINT_BEST, CHECKPOINT_LATEST
from evsim.train import Trainer, resume
from tests.runs import assert_same_run, toy_config, toy_dataset

# Three epochs of the toy SD-SNN run: whether an epoch improves (and so links
# checkpoint-best) varies, and development steps run inside epochs.
CONFIG = toy_config(epochs=3)


class Killed(BaseException):
    """The process died here (a BaseException: no handler of evsim's may catch it)."""


@pytest.fixture(autouse=True)
def toy_runs(monkeypatch):
    """Resume loads the toy dataset (it is not a registered one); no plots."""
    monkeypatch.setattr("evsim.train._load_announced", lambda config, echo: toy_dataset())
    monkeypatch.setattr("evsim.train.plot_training", lambda *args: None)


def start(run_dir: Path) -> None:
    Trainer(CONFIG, toy_dataset()).fit(run_dir, progress=False, echo=lambda line: None)


def counting_commits(monkeypatch) -> list:
    """Record the path of every commit from now on."""
    paths, real = [], evsim.files.commit

    def counted(tmp, path):
        paths.append(Path(path).name)
        real(tmp, path)

    monkeypatch.setattr(evsim.files, "commit", counted)
    return paths


def dying_at(monkeypatch, k: int) -> None:
    """Commits 1..k-1 happen; the k-th and every later one die."""
    calls, real = [0], evsim.files.commit

    def commit(tmp, path):
        calls[0] += 1
        if calls[0] >= k:
            raise Killed(f"killed before commit {k} ({Path(path).name})")
        real(tmp, path)

    monkeypatch.setattr(evsim.files, "commit", commit)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run, and the file names of its commits in order."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("evsim.train.plot_training", lambda *args: None)
        commits = counting_commits(patch)
        start(run_dir)
    return run_dir, commits


def test_the_reference_run_writes_every_kind_of_file(reference):
    _, commits = reference
    epochs = CONFIG.epochs
    assert commits[:2] == ["config.toml", "config.json"] and commits[-1] == "summary.json"
    for name in (CHECKPOINT_LATEST, "network.npz", "metrics.jsonl"):
        assert commits.count(name) == epochs
    assert 1 <= commits.count(CHECKPOINT_BEST) <= epochs


@pytest.mark.parametrize("k", range(1, 19))
def test_a_run_killed_at_any_write_resumes_to_the_uninterrupted_result(reference, tmp_path, monkeypatch, k):
    expected, commits = reference
    if k > len(commits):
        pytest.skip(f"the run makes {len(commits)} commits")
    run_dir = tmp_path / "run"
    with monkeypatch.context() as patch:
        dying_at(patch, k)
        with pytest.raises(Killed):
            start(run_dir)
    if (run_dir / CHECKPOINT_LATEST).exists():
        resume(run_dir, progress=False, echo=lambda line: None)
    else:  # killed before the first checkpoint: the run starts again (evsim train --config ... --out)
        start(run_dir)
    assert_same_run(expected, run_dir)
