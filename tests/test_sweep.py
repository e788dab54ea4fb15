"""``evsim sweep`` on real Dask clusters (an embedded LocalCluster of 2 processes, and a
scheduler and worker started as separate processes): every point an ordinary run
folder, tied points, failures that stay alone, kill-and-rerun, the report."""
import contextlib
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evsim.sweep.plan import read_sweep
from tests.conftest import one_line_error, run
from tests.runs import assert_same_run

REPO = Path(__file__).resolve().parents[1]
TINY = """
[base]
dataset = "mnist"
epochs = 2
hidden = [24]
time_steps = 4
batch_size = 100
dev_interval = 4
spine_steps = 1
regrow_steps = 1
threads = 1
"""
# 2 x 2 points, and magnitude pruning tied to each SD-SNN point's compression.
SWEEP = TINY + """
[axes]
structure = ["sdsnn", "none"]
seed = [0, 1]

[[tied]]
structure = ["magnitude"]
to = { structure = "sdsnn" }
take = { target_sparsity = "compression" }
"""
NAMES = ["structure=sdsnn,seed=0", "structure=sdsnn,seed=1", "structure=none,seed=0", "structure=none,seed=1",
         "structure=magnitude,seed=0", "structure=magnitude,seed=1"]


def sweep_file(tmp_path: Path, text: str, name: str = "sweep.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def states(out: Path) -> dict:
    return {p["name"]: p for p in json.loads((out / "sweep.json").read_text())["points"]}


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """The sweep run once, uninterrupted, on a 2-process LocalCluster."""
    tmp = tmp_path_factory.mktemp("sweep")
    out = tmp / "out"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EVSIM_OFFLINE", "1")
        result = run(["sweep", str(sweep_file(tmp, SWEEP)), "--out", str(out), "--workers", "2", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "local cluster of 2 worker processes x 1 threads" in result.output
    return out


def test_every_point_is_an_ordinary_run_folder(finished):
    points = states(finished)
    assert list(points) == NAMES
    assert all(p["status"] == "done" and p["action"] == "trained" and p["error"] is None for p in points.values())
    for name in NAMES:
        config = json.loads((finished / name / "config.json").read_text())
        structure, seed = (part.split("=")[1] for part in name.split(","))
        assert (config["structure"], config["seed"], config["epochs"], config["hidden"]) == (structure, int(seed), 2,
                                                                                          [24])
        assert json.loads((finished / name / "summary.json").read_text())["epochs"] == 2
    result = run(["eval", str(finished / NAMES[0])])
    assert result.exit_code == 0 and "accuracy" in result.output, result.output


def test_tied_points_take_the_compression_their_sdsnn_run_reached(finished):
    for seed in (0, 1):
        reached = json.loads((finished / f"structure=sdsnn,seed={seed}" / "summary.json").read_text())["compression"]
        assert 0 < reached < 1
        tied = finished / f"structure=magnitude,seed={seed}"
        assert json.loads((tied / "config.json").read_text())["target_sparsity"] == reached
        assert states(finished)[tied.name]["options"]["target_sparsity"] == reached
        assert states(finished)[tied.name]["tied_to"] == f"structure=sdsnn,seed={seed}"


def test_a_rerun_of_a_finished_sweep_trains_nothing(finished, tmp_path):
    before = {name: (finished / name / "metrics.jsonl").read_bytes() for name in NAMES}
    result = run(["sweep", str(sweep_file(tmp_path, SWEEP)), "--out", str(finished), "--workers", "1",
                  "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "6 of 6 points finished (6 already before, 0 resumed)" in result.output
    source = json.loads((finished / NAMES[0] / "summary.json").read_text())["data_source"]
    assert f"0 failed, on {source} data -> " in result.output  # the terminal names the data, as every file does
    assert all(p["action"] == "skipped" for p in states(finished).values())
    assert {name: (finished / name / "metrics.jsonl").read_bytes() for name in NAMES} == before


def test_report_has_a_row_per_point_groups_over_seeds_and_the_figure(finished):
    result = run(["sweep", "report", str(finished)])
    assert result.exit_code == 0, result.output
    with open(finished / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["point"] for row in rows] == NAMES
    for row in rows:
        summary = json.loads((finished / row["point"] / "summary.json").read_text())
        assert float(row["test_acc"]) == summary["test_acc"] and float(row["compression"]) == summary["compression"]
        assert row["status"] == "done" and row["data_source"] == "mnist-5k" and row["error"] == ""
        assert row["test_acc_at_best_val"] == ("" if summary["test_acc_at_best_val"] is None
                                               else str(summary["test_acc_at_best_val"]))
        for column in ("best_test_acc", "synapse_sparsity", "neurons_pruned", "sops_per_sample",
                       "energy_uj_per_sample", "wall_s", "option.seed", "axis.structure"):
            assert row[column] != "", column
    table = (finished / "report.md").read_text()
    accs = [json.loads((finished / f"structure=none,seed={s}" / "summary.json").read_text())["test_acc"]
            for s in (0, 1)]
    mean, std = 100 * sum(accs) / 2, 100 * abs(accs[0] - accs[1]) / 2 ** 0.5
    none_row = next(line for line in table.splitlines() if line.startswith("| none |"))
    assert f"| 2/2 | {mean:.2f} ± {std:.2f} |" in none_row
    assert sum(line.startswith("| ") for line in table.splitlines()) == 4  # header + sdsnn, none, magnitude
    assert (finished / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_killed_sweep_reruns_only_the_rest_and_ends_as_if_never_killed(finished, tmp_path):
    out = tmp_path / "out"
    path = sweep_file(tmp_path, SWEEP)
    evsim = "import sys; from evsim.cli.main import main; sys.argv = ['evsim'] + sys.argv[1:]; main()"
    sweep = subprocess.Popen(
        [sys.executable, "-c", evsim, "sweep", str(path), "--out", str(out), "--workers", "2", "--no-progress"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env={**os.environ, "EVSIM_OFFLINE": "1"})
    try:
        deadline = time.monotonic() + 240
        while not any((out / name / "summary.json").exists() for name in NAMES):
            assert sweep.poll() is None and time.monotonic() < deadline, "the sweep ended before it could be killed"
            time.sleep(0.02)
    finally:
        os.killpg(sweep.pid, signal.SIGKILL)  # the client and its cluster's processes, at once
        sweep.wait()
    _wait_until_gone(sweep.pid)
    finished_before = [n for n in NAMES if (out / n / "summary.json").exists()]
    started = {n: metrics(out / n) for n in NAMES if n not in finished_before and (out / n / "metrics.jsonl").exists()}
    files_before = {n: (out / n / "metrics.jsonl").read_bytes() for n in finished_before}
    assert 0 < len(finished_before) < len(NAMES)

    result = run(["sweep", str(path), "--out", str(out), "--workers", "2", "--no-progress"])
    assert result.exit_code == 0, result.output
    points = states(out)
    for name in NAMES:
        expected = "skipped" if name in finished_before else "resumed" if name in started else "trained"
        assert points[name]["action"] == expected, (name, points[name])
    # Nothing trained twice: finished runs untouched, epochs done before the kill kept as they were.
    assert {n: (out / n / "metrics.jsonl").read_bytes() for n in finished_before} == files_before
    for name, rows in started.items():
        assert metrics(out / name)[:len(rows)] == rows
    for name in NAMES:
        assert_same_run(out / name, finished / name)


def test_a_point_that_fails_fails_alone_and_is_named_in_the_report(tmp_path, monkeypatch):
    monkeypatch.setenv("EVSIM_OFFLINE", "1")
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    text = TINY.replace("epochs = 2", "epochs = 1") + f"""data_dir = "{tmp_path / 'empty'}"

[axes]
source = ["auto", "real"]
"""
    result = run(["sweep", str(sweep_file(tmp_path, text)), "--out", str(out), "--workers", "2", "--no-progress"])
    assert result.exit_code == 1, result.output
    assert "1 of 2 points finished" in result.output and "failed: source=real: full MNIST not found" in result.output
    points = states(out)
    assert points["source=auto"]["status"] == "done" and (out / "source=auto" / "summary.json").exists()
    assert points["source=real"]["status"] == "failed" and "full MNIST not found" in points["source=real"]["error"]
    assert not (out / "source=real").exists()  # it failed before writing anything
    assert run(["sweep", "report", str(out)]).exit_code == 0
    with open(out / "results.csv", newline="") as handle:
        rows = {row["point"]: row for row in csv.DictReader(handle)}
    assert rows["source=real"]["status"] == "failed" and "full MNIST not found" in rows["source=real"]["error"]
    assert rows["source=auto"]["status"] == "done"
    assert "- `source=real`: failed: full MNIST not found" in (out / "report.md").read_text()


@contextlib.contextmanager
def cluster_apart(tmp_path: Path, env: dict):
    """A Dask scheduler and one worker of one thread, started as separate processes, as
    on a cluster evsim did not start; yields the scheduler file."""
    scheduler_file = tmp_path / "scheduler.json"
    dask = [sys.executable, "-m", "dask"]
    procs = []
    try:
        procs.append(subprocess.Popen(dask + ["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                              "--scheduler-file", str(scheduler_file)],
                                      cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        procs.append(subprocess.Popen(dask + ["worker", "--scheduler-file", str(scheduler_file), "--host", "127.0.0.1",
                                              "--nthreads", "1", "--nworkers", "1", "--no-dashboard"],
                                      cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() or not scheduler_file.read_text().strip():
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
            time.sleep(0.1)
        yield scheduler_file
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_a_sweep_runs_on_a_scheduler_and_worker_started_apart(tmp_path, monkeypatch):
    monkeypatch.setenv("EVSIM_OFFLINE", "1")
    with cluster_apart(tmp_path, {**os.environ, "EVSIM_OFFLINE": "1"}) as scheduler_file:
        address = json.loads(scheduler_file.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        text = TINY.replace("epochs = 2", "epochs = 1") + "\n[axes]\nseed = [0, 1]\n"
        path = sweep_file(tmp_path, text)
        out = tmp_path / "out"
        result = run(["sweep", str(path), "--out", str(out), "--scheduler", address, "--no-progress"])
        assert result.exit_code == 0, result.output
        assert f"cluster at {address}" in result.output
        assert [p["action"] for p in states(out).values()] == ["trained", "trained"]
        result = run(["sweep", "run", str(path), "--out", str(out), "--scheduler-file", str(scheduler_file),
                      "--no-progress"])
        assert result.exit_code == 0, result.output
        assert [p["action"] for p in states(out).values()] == ["skipped", "skipped"]


def test_an_unreachable_scheduler_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr("evsim.sweep.execute.CONNECT_TIMEOUT", "1s")
    path = sweep_file(tmp_path, TINY)
    line = one_line_error(run(["sweep", str(path), "--out", str(tmp_path / "out"), "--scheduler",
                               "tcp://127.0.0.1:9", "--no-progress"]))
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in line



@pytest.mark.parametrize("text, fragment", [
    (None, "no such file; start the cluster first, then give the file `dask scheduler --scheduler-file` wrote"),
    ("not json", "is not a Dask scheduler file (JSONDecodeError: "),
    ("[]", "is not a Dask scheduler file (no \"address\" in it)"),
    ('{"address": 5}', "is not a Dask scheduler file (no \"address\" in it)"),
])
def test_a_scheduler_file_that_is_missing_or_no_scheduler_file_is_one_line(tmp_path, text, fragment):
    scheduler_file = tmp_path / "scheduler.json"
    if text is not None:
        scheduler_file.write_text(text)
    line = one_line_error(run(["sweep", str(sweep_file(tmp_path, TINY)), "--out", str(tmp_path / "out"),
                               "--scheduler-file", str(scheduler_file), "--no-progress"]))
    assert line.startswith(f"Error: {scheduler_file}") and fragment in line, line
    assert "give the file `dask scheduler --scheduler-file` wrote" in line


def test_a_scheduler_file_naming_an_unreachable_scheduler_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr("evsim.sweep.execute.CONNECT_TIMEOUT", "1s")
    scheduler_file = sweep_file(tmp_path, '{"address": "tcp://127.0.0.1:9"}', "scheduler.json")
    line = one_line_error(run(["sweep", str(sweep_file(tmp_path, TINY)), "--out", str(tmp_path / "out"),
                               "--scheduler-file", str(scheduler_file), "--no-progress"]))
    assert f"cannot reach the Dask scheduler at tcp://127.0.0.1:9 (from {scheduler_file})" in line


def test_a_scheduler_address_of_a_protocol_not_set_up_is_one_line(tmp_path):
    """tls:// without Dask's TLS settings gave a TypeError's traceback. (ucx:// without ucx-py
    too, but distributed's attempt at it can hang: not run here.)"""
    address = "tls://127.0.0.1:1"
    line = one_line_error(run(["sweep", str(sweep_file(tmp_path, TINY)), "--out", str(tmp_path / "out"),
                               "--scheduler", address, "--no-progress"]))
    assert line.startswith(f"Error: cannot connect to the Dask scheduler at {address}: ") and "tcp://" in line, line


class _FakeClient:
    """Stands for a distributed.Client of a cluster evsim did not start."""

    def __init__(self, *args, **kwargs):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def submit(self, *args, **kwargs):
        return object()

    workers: dict = {}

    def run(self, function, on_error="raise"):
        return dict(self.workers)

    def close(self):
        pass


def test_sigterm_stops_a_sweep_on_a_cluster_evsim_did_not_start(monkeypatch):
    """Only the embedded cluster had a SIGTERM handler: a client of another cluster was
    killed silently, sweep.json left pending."""
    from evsim.sweep.execute import SweepTerminated, dask_client

    monkeypatch.setattr("distributed.Client", _FakeClient)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SweepTerminated):
        with dask_client("tcp://127.0.0.1:1", None, 1):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.parametrize("answer, fragment", [
    (ImportError("No module named 'evsim'"), "cannot run evsim (ImportError(\"No module named 'evsim'\")); install "
                                            "this evsim where the workers run"),
    ("0" * 64, "runs another evsim (source stamp 000000000000, here "),
])
def test_a_cluster_whose_workers_run_no_evsim_or_another_is_refused(monkeypatch, answer, fragment):
    """A worker that could not import evsim died on the first point, and the sweep waited
    for it forever; one importing another evsim trained other code without a word."""
    from evsim.errors import ConfigError
    from evsim.sweep.execute import dask_client

    class Cluster(_FakeClient):
        workers = {"tcp://10.0.0.7:4321": answer}

    monkeypatch.setattr("distributed.Client", Cluster)
    with pytest.raises(ConfigError, match="^the Dask worker tcp://10.0.0.7:4321 of tcp://127.0.0.1:1 ") as caught:
        with dask_client("tcp://127.0.0.1:1", None, 1):
            pass
    assert fragment in str(caught.value)


def test_a_scheduler_lost_during_a_sweep_is_one_line(tmp_path, monkeypatch):
    """A 60-line traceback (FuturesCancelledError), exit code 1."""
    from distributed.client import CancelledFuturesGroup, FuturesCancelledError

    from evsim.sweep.execute import SchedulerLost, run_sweep
    from evsim.sweep.plan import read_sweep
    from evsim.sweep.training import point_config

    def lost(*args, **kwargs):
        raise FuturesCancelledError([CancelledFuturesGroup([], "scheduler-connection-lost")])

    monkeypatch.setattr("distributed.wait", lost)
    sweep = read_sweep(sweep_file(tmp_path, TINY + "\n[axes]\nseed = [0]\n"))
    configs = {p.name: point_config(p.options, tmp_path / "out" / p.name, "test") for p in sweep.points}
    with pytest.raises(SchedulerLost, match=r"^lost the Dask scheduler .*restart the cluster and run the same command"):
        run_sweep(sweep, configs, tmp_path / "out", _FakeClient(), progress=False)
    assert [p["status"] for p in states(tmp_path / "out").values()] == ["submitted"]  # it said pending


def test_an_empty_scheduler_address_is_one_line(tmp_path):
    line = one_line_error(run(["sweep", str(sweep_file(tmp_path, TINY)), "--out", str(tmp_path / "out"),
                               "--scheduler", "", "--no-progress"]))
    assert "--scheduler is empty; give the address of a running Dask scheduler" in line


BAD_FILES = [
    ("[bsae]\nx = 1\n", "unknown section 'bsae' (did you mean 'base'?)"),
    ("[base]\nlrr = 0.1\n", "[base] lrr: unknown option 'lrr' (did you mean 'lr'?)"),
    ("[base]\nout = \"x\"\n", "[base] out: unknown option"),
    ("[axes]\nseed = []\n", "[axes] seed is an empty list"),
    ("[axes]\nseed = 3\n", "[axes] seed must be a list of values"),
    ("[axes]\nseed = [1, 1]\n", "[axes] seed = [1, 1] repeats a value"),
    ("[base]\nhidden = [8]\n[axes]\nrho_max = [50, 50.0]\n",
     "points rho_max=50 and rho_max=50.0 are the same run (their axis values are two spellings of one value)"),
    ("[axes]\nhidden = [\"8,8\", [8, 8]]\n", "points hidden=8_8 and hidden=8-8 are the same run"),
    ("[base]\nseed = 1\n[axes]\nseed = [1, 2]\n", "seed is both in [base] and in [axes]"),
    ("[axes]\nlr = [0.1, -1.0]\n", "point lr=-1.0: lr = -1.0: "),
    ("[axes]\nepochs = [1, \"two\"]\n", "point epochs=two: epochs = 'two': expected an integer"),
    ("[axes]\nstructure = [\"sdsnn\"]\n[[tied]]\nstructure = [\"set\"]\nto = { seed = 0 }\n"
     "take = { target_sparsity = \"compression\" }\n", "[[tied]] #1 to.seed: not an axis"),
    ("[axes]\nstructure = [\"sdsnn\"]\n[[tied]]\nstructure = [\"set\"]\nto = { structure = \"none\" }\n"
     "take = { target_sparsity = \"compression\" }\n", "to.structure = 'none' is not among [axes] structure"),
    ("[axes]\nstructure = [\"sdsnn\"]\n[[tied]]\nstructure = [\"set\"]\nto = { structure = \"sdsnn\" }\n"
     "take = { target_sparsity = \"accuracy\" }\n", "take.target_sparsity = 'accuracy': not a summary field"),
    ("[axes]\nstructure = [\"sdsnn\", \"set\"]\n[[tied]]\nstructure = [\"set\"]\nto = { structure = \"sdsnn\" }\n"
     "take = { target_sparsity = \"compression\" }\n", "two points are both named 'structure=set'"),
    ("[axes]\ndata_dir = [\"c d\", \"c_d\"]\n", "two points are both named 'data_dir=c_d' (an [axes] point and an "
     "[axes] point); their axis values differ only in characters a folder name replaces with _"),
    ("[base]\ndataset = \"mnist\"\ncrop = 28\n", "point run: "),
    ("[axes\n", "not valid TOML"),
    ("", "no [base] or [axes]; nothing to sweep"),
    ("[axes]\nstructure = [\"sdsnn\"]\n[[tied]]\nstructure = [\"set\"]\nto = { structure = \"sdsnn\" }\n"
     "take = { seed = \"test_acc\" }\n", "take.seed = 'test_acc': the option takes an integer, and that field is a "
     "fraction; take an integer field (synapses)"),
    ("[axes]\nstructure = [\"sdsnn\"]\n[[tied]]\nstructure = [\"set\"]\nto = { structure = \"sdsnn\" }\n"
     "take = { optimizer = \"compression\" }\n", "take.optimizer = 'compression': the option is no number"),
    # What training would refuse, whatever the data: memory, architecture, developing layers, folder names.
    ("[base]\ndataset = \"mnist\"\n[axes]\nbatch_size = [100, 2000000000]\n",
     "point batch_size=2000000000: this run needs about"),
    ("[base]\ndataset = \"mnist\"\n[axes]\narch = [\"2x34x34-4C3-AP4-10\"]\n",
     "point arch=2x34x34-4C3-AP4-10: --arch 2x34x34-4C3-AP4-10 takes input 2x34x34 but mnist gives 1x28x28"),
    ("[base]\ndataset = \"mnist\"\n[axes]\narch = [\"784-32-11\"]\n", "ends with 11 outputs but mnist has 10 classes"),
    ("[base]\ndataset = \"mnist\"\nhidden = [32]\n[axes]\ndevelop = [\"fc1\", \"conv2\"]\n",
     "point develop=conv2: --develop conv2: this network has no layer conv2; it has fc1"),
    (f"[axes]\ndata_dir = [\"{'a' * 252}\"]\n", "a point's name is 261 bytes, more than a folder name may hold (251)"),
    ("# only a comment\n[base]\n[axes]\n", "no [base] or [axes]; nothing to sweep"),
    ("[base]\ndataset = \"mnist\"\n[axes]\nhidden = [[16], [8, 8]]\narch = [\"784-16-10\"]\n",
     "[axes] hidden and [axes] arch both give the network; vary one of them"),
    ("[base]\narch = \"784-8-10\"\n[axes]\nhidden = [[16], [32]]\n",
     "[axes] hidden varies a fully connected network but [base] arch = '784-8-10' fixes the network"),
]


def test_a_point_left_at_dev_interval_auto_matches_its_run_saved_resolved(tmp_path):
    """Training saves dev_interval "auto" as the number it resolved to for the data: a
    rerun of the same sweep must skip the finished point, not call it another run."""
    from evsim.config import TrainConfig
    from evsim.errors import ConfigError
    from evsim.sweep.point import folder_action

    config = TrainConfig(dataset="mnist", hidden=(16,), dev_interval="auto").to_dict()
    (tmp_path / "config.json").write_text(json.dumps({**config, "dev_interval": 3, "run_id": "ab", "network": "x"}))
    (tmp_path / "summary.json").write_text("{}")
    assert folder_action(tmp_path, config) == "skipped"
    with pytest.raises(ConfigError, match="holds a run of another configuration"):
        folder_action(tmp_path, {**config, "dev_interval": 5})


def test_a_point_is_the_same_run_wherever_the_cache_is_and_names_what_differs(tmp_path):
    """$EVSIM_CACHE moves the cache, not what a run computes: a finished point stays
    finished. A data folder ($EVSIM_DATA) can change the data: refused, naming it."""
    from evsim.config import TrainConfig
    from evsim.data import DataOptions
    from evsim.errors import ConfigError
    from evsim.sweep.point import folder_action

    config = TrainConfig(dataset="mnist", hidden=(16,), data=DataOptions(cache_dir=tmp_path / "a")).to_dict()
    (tmp_path / "config.json").write_text(json.dumps({**config, "run_id": "ab", "network": "x"}, default=str))
    (tmp_path / "summary.json").write_text('{"test_acc": 0.5}')
    moved = {**config, "data": {**config["data"], "cache_dir": tmp_path / "b"}}
    assert folder_action(tmp_path, moved) == "skipped"
    with pytest.raises(ConfigError, match=r"another configuration \(data.data_dir: None there, '/x' now \(\$EVSIM_DATA "
                                          r"gives data_dir where the sweep file does not\)\); move it away"):
        folder_action(tmp_path, {**config, "data": {**config["data"], "data_dir": "/x"}})
    with pytest.raises(ConfigError, match=r"\(epochs: 15 there, 3 now\)"):
        folder_action(tmp_path, {**config, "epochs": 3})


@pytest.mark.parametrize("text, fragment", BAD_FILES)
def test_a_bad_sweep_file_is_one_line_naming_the_key_and_nothing_runs(tmp_path, text, fragment):
    path = sweep_file(tmp_path, text)
    line = one_line_error(run(["sweep", str(path), "--out", str(tmp_path / "out"), "--no-progress"]))
    assert line.startswith(f"Error: {path}: ") and fragment in line, line
    assert not (tmp_path / "out").exists()


def test_cluster_options_that_cannot_work_are_one_line(tmp_path):
    path = sweep_file(tmp_path, TINY)
    out = ["--out", str(tmp_path / "out"), "--no-progress"]
    line = one_line_error(run(["sweep", str(path), *out, "--workers", str(os.cpu_count() * 64)]))
    assert "threads per run exceeds this machine's" in line
    line = one_line_error(run(["sweep", str(path), *out, "--workers", "1", "--scheduler", "tcp://127.0.0.1:9"]))
    assert "--workers sizes the embedded cluster" in line
    line = one_line_error(run(["sweep", str(path), *out, "--scheduler", "tcp://127.0.0.1:9", "--scheduler-file", "f"]))
    assert "not both" in line
    assert "no sweep folder" in one_line_error(run(["sweep", "report", str(tmp_path)]))


def test_the_sweeps_in_the_repository_are_valid(tmp_path):
    from evsim.sweep.plan import resolve_points

    for path in sorted((REPO / "sweeps").glob("*.toml")):
        sweep = read_sweep(path)
        assert sweep.points and len(resolve_points(sweep, tmp_path)) == len(sweep.points), path
    paper = read_sweep(REPO / "sweeps" / "paper-comparison.toml")
    structures = sorted({p.options["structure"] for p in paper.points})
    assert structures == ["magnitude", "none", "sdsnn", "set"]
    assert sorted({p.options["seed"] for p in paper.points}) == [0, 1, 2]
    assert all(p.take == {"target_sparsity": "developing_sparsity"} for p in paper.points if p.tied_to)


def _wait_until_gone(pgid: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"processes of group {pgid} outlived SIGKILL")


def test_a_folder_holding_a_run_of_another_configuration_is_not_taken_as_this_points(finished):
    from evsim.errors import ConfigError
    from evsim.sweep.point import folder_action

    run_dir = finished / NAMES[0]
    config = json.loads((run_dir / "config.json").read_text())
    assert folder_action(run_dir, {**config, "out": "elsewhere"}) == "skipped"
    with pytest.raises(ConfigError, match="holds a run of another configuration"):
        folder_action(run_dir, {**config, "epochs": 3})


def test_the_live_status_names_each_running_points_epoch(finished):
    from evsim.sweep.execute import live_status
    from evsim.sweep.plan import read_sweep, resolve_points

    class Future:
        def __init__(self, key):
            self.key = key

    class Client:
        def processing(self):
            return {"worker-a": ["key-0"], "worker-b": ["key-4"]}

    configs = resolve_points(read_sweep(sweep_file(finished.parent, SWEEP)), finished)
    pending = {Future("key-0"): NAMES[0], Future("key-1"): NAMES[1], Future("key-4"): "not-started"}
    assert live_status(Client(), pending, finished, configs) == f"{NAMES[0]} epoch 2/2"


def test_point_folders_are_named_by_their_axis_values():
    from evsim.sweep.plan import point_name

    assert point_name({"structure": "sdsnn", "seed": 0}) == "structure=sdsnn,seed=0"
    assert point_name({"hidden": [800, 400], "lr": 0.001, "data_dir": "/a b"}) == "hidden=800-400,lr=0.001,data_dir=_a_b"
    assert point_name({}) == "run"


def test_another_sweep_file_into_a_sweep_folder_is_refused_and_its_state_kept(finished, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    state = (finished / "sweep.json").read_bytes()
    (out / "sweep.json").write_bytes(state)
    made_by = json.loads(state)["sweep_file"]
    other = sweep_file(tmp_path, TINY + "\n[axes]\nseed = [0]\n", "other.toml")
    line = one_line_error(run(["sweep", str(other), "--out", str(out), "--no-progress"]))
    assert f"{out} holds the sweep of {made_by}, with other points than {other}" in line
    assert f"give another --out, or run {made_by} to continue that sweep" in line
    assert (out / "sweep.json").read_bytes() == state and sorted(os.listdir(out)) == ["sweep.json"]


def test_a_second_sweep_of_a_folder_being_swept_is_refused_up_front(tmp_path):
    import threading

    from evsim.runlock import run_lock

    out = tmp_path / "out"
    locked, release = threading.Event(), threading.Event()

    def first_sweep():  # another thread's lock excludes like another process's
        with run_lock(out):
            (out / "sweep.json").write_text("{}")
            locked.set()
            release.wait(60)

    holder = threading.Thread(target=first_sweep)
    holder.start()
    try:
        assert locked.wait(10)
        line = one_line_error(run(["sweep", str(sweep_file(tmp_path, TINY)), "--out", str(out), "--no-progress"]))
    finally:
        release.set()
        holder.join()
    assert f"{out} is being written by another process" in line
    assert (out / "sweep.json").read_text() == "{}"


def test_the_report_takes_a_point_whose_folder_holds_its_finished_run_as_done(finished, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    state = json.loads((out / "sweep.json").read_text())
    lost = state["points"][2]  # structure=none,seed=0, finished by another process than this sweep
    lost.update(status="failed", action=None, error=f"{out / lost['name']} is being written by another process")
    other = state["points"][3]  # structure=none,seed=1: a run of another configuration is not this point's
    config = json.loads((out / other["name"] / "config.json").read_text())
    (out / other["name"] / "config.json").write_text(json.dumps({**config, "epochs": 3}))
    (out / "sweep.json").write_text(json.dumps(state))
    assert run(["sweep", "report", str(out)]).exit_code == 0
    with open(out / "results.csv", newline="") as handle:
        rows = {row["point"]: row for row in csv.DictReader(handle)}
    assert rows[lost["name"]]["status"] == "done"
    # sweep.json says done, but its folder holds another run: not this point's result
    assert rows[other["name"]]["status"] == "lost" and rows[other["name"]]["test_acc"] == ""
    assert "holds no finished run of this point" in rows[other["name"]]["error"]
    other["status"] = "failed"
    (out / "sweep.json").write_text(json.dumps(state))
    assert run(["sweep", "report", str(out)]).exit_code == 0
    with open(out / "results.csv", newline="") as handle:
        rows = {row["point"]: row for row in csv.DictReader(handle)}
    assert rows[lost["name"]]["status"] == "done" and rows[other["name"]]["status"] == "failed"


def test_a_tied_points_error_names_the_point_and_field_its_value_came_from(finished, tmp_path):
    out = tmp_path / "out"
    parent = "structure=none,seed=0"  # finished, and pruned nothing: compression 0.0
    shutil.copytree(finished / parent, out / parent)
    text = SWEEP.replace('seed = [0, 1]', 'seed = [0]').replace('structure = ["sdsnn", "none"]', 'structure = ["none"]')
    text = text.replace('to = { structure = "sdsnn" }', 'to = { structure = "none" }')
    result = run(["sweep", str(sweep_file(tmp_path, text)), "--out", str(out), "--workers", "1", "--no-progress"])
    assert result.exit_code == 1, result.output
    error = states(out)["structure=magnitude,seed=0"]["error"]
    assert "target_sparsity = 0.0: must be > 0" in error, error
    assert error.endswith(f"taken from point {parent} (target_sparsity = 0.0 is its compression): change that point, "
                          "or give target_sparsity a value instead of taking it"), error
    assert f"failed: structure=magnitude,seed=0: {error}" in result.output


@pytest.mark.parametrize("signum,group,background", [(signal.SIGINT, True, False), (signal.SIGTERM, False, False),
                                                     (signal.SIGTERM, False, True), (signal.SIGTERM, True, False)],
                         ids=["ctrl-c", "sigterm", "sigterm-to-a-background-job", "sigterm-to-the-group"])
def test_ctrl_c_is_one_line_exit_130_and_the_sweep_resumes(tmp_path, signum, group, background):
    """Ctrl-C (to the process group, as a terminal sends it) or SIGTERM (to the client, as
    kill sends it, or to the whole group, as systemd and batch schedulers do): one line, the
    shell's code for the signal, and every point that was training stopped at a batch with
    a checkpoint (SIGTERM to the group killed the workers mid-epoch). A script's background
    job (``evsim sweep ... &``, Ctrl-C ignored) ignored SIGTERM too."""
    import socket

    out = tmp_path / "out"
    path = sweep_file(tmp_path, SWEEP)
    evsim = "import sys; from evsim.cli.main import main; sys.argv = ['evsim'] + sys.argv[1:]; main()"
    with contextlib.ExitStack() as stack:
        port = stack.enter_context(socket.socket())
        with contextlib.suppress(OSError):  # taken already: as good (the embedded cluster must not warn of it)
            port.bind(("", 8787))
            port.listen()
        sweep = subprocess.Popen(
            [sys.executable, "-c", evsim, "sweep", str(path), "--out", str(out), "--workers", "2", "--no-progress"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
            env={**os.environ, "EVSIM_OFFLINE": "1"},
            preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if background else None)
        try:
            deadline = time.monotonic() + 240
            while not any('"epoch"' in (out / n / "metrics.jsonl").read_text() for n in NAMES
                          if (out / n / "metrics.jsonl").exists()):
                assert sweep.poll() is None and time.monotonic() < deadline, "the sweep ended before Ctrl-C"
                time.sleep(0.05)
            (os.killpg if group else os.kill)(sweep.pid, signum)
            output, _ = sweep.communicate(timeout=120)
        finally:
            if sweep.poll() is None:
                os.killpg(sweep.pid, signal.SIGKILL)
                sweep.wait()
    _wait_until_gone(sweep.pid)
    lines = output.splitlines()
    assert sweep.returncode == 128 + signum, output
    assert len(lines) == 2 and lines[0].startswith("sweep: 6 points") and lines[1].startswith(
        f"Interrupted: finished points are kept in {out}; run the same command again to continue"), output
    interrupted = [n for n in NAMES if (out / n / "checkpoint-latest.npz").exists()
                   and not (out / n / "summary.json").exists()]
    for log in (out / "logs").glob("*.log"):
        text = log.read_text()
        assert "--- done" in text or "--- interrupted: stopped in epoch" in text or "not started" in text, text
    result = run(["sweep", str(path), "--out", str(out), "--workers", "2", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert all(states(out)[n]["action"] == "resumed" for n in interrupted)


def _group_size(pgid: int) -> int:
    """How many live processes are in process group ``pgid`` (Linux's /proc)."""
    count = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            count += fields[0] != "Z" and int(fields[2]) == pgid
    return count


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process groups from Linux's /proc")
def test_ctrl_c_while_the_cluster_starts_prints_no_worker_traceback(tmp_path):
    """Ctrl-C every 0.05 s from when the first worker process exists, as an impatient
    user's: the workers, started with Ctrl-C ignored, never print; the client stops in one
    line once the cluster is up."""
    import threading

    path = sweep_file(tmp_path, SWEEP.replace("epochs = 2", "epochs = 50"))
    evsim = "import sys; from evsim.cli.main import main; sys.argv = ['evsim'] + sys.argv[1:]; main()"
    sweep = subprocess.Popen(
        [sys.executable, "-c", evsim, "sweep", str(path), "--out", str(tmp_path / "out"), "--workers", "2",
         "--no-progress"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True, env={**os.environ, "EVSIM_OFFLINE": "1"})
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(sweep.stdout), daemon=True)
    reader.start()
    sent_while_starting = 0
    try:
        deadline = time.monotonic() + 120
        while _group_size(sweep.pid) < 2:
            assert sweep.poll() is None and time.monotonic() < deadline, "no worker process started"
            time.sleep(0.01)
        while sweep.poll() is None and time.monotonic() < deadline:
            sent_while_starting += not lines
            with contextlib.suppress(ProcessLookupError):
                os.killpg(sweep.pid, signal.SIGINT)
            time.sleep(0.05)
        sweep.wait(timeout=120)
        reader.join(timeout=10)
    finally:
        if sweep.poll() is None:
            os.killpg(sweep.pid, signal.SIGKILL)
            sweep.wait()
    _wait_until_gone(sweep.pid)
    output = "".join(lines)
    assert sent_while_starting > 1, output  # the test reached the window it is about
    # 130, or killed by a later Ctrl-C once Python's exit has put SIGINT back to its default
    # (a shell shows both as 130)
    assert sweep.returncode in (130, -signal.SIGINT), output
    assert len(lines) == 2 and lines[0].startswith("sweep: 6 points") and lines[1].startswith(
        "Interrupted: finished points are kept"), output


def test_a_process_started_with_ctrl_c_ignored_keeps_ignoring_it():
    """How the embedded cluster's workers start (they import the CLI's module), and how a
    shell starts a background job."""
    code = "import signal, evsim.cli.main; print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN)"
    for ignored in (True, False):
        shown = subprocess.run(
            [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True,
            preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignored else None).stdout
        assert shown.strip() == str(ignored)


def _copy(finished: Path, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(finished, out, ignore=shutil.ignore_patterns("results.csv", "report.md", "report.png"))
    return out


@pytest.mark.parametrize("change, fragment", [
    (lambda state: {"points": [1, 2]}, "sweep.json: not a sweep state file (point #1 is not a table)"),
    (lambda state: {"points": [{"status": "done"}]}, "sweep.json: not a sweep state file (point #1 has no name)"),
    (lambda state: {**state, "points": [{**state["points"][0], "axes": None}]}, "(point #1 axes is NoneType)"),
    (lambda state: {**state, "points": [{**state["points"][0], "name": "../x"}]}, "name '../x' is no folder name"),
])
def test_report_of_a_damaged_sweep_json_is_one_line_and_writes_nothing(finished, tmp_path, change, fragment):
    out = _copy(finished, tmp_path)
    (out / "sweep.json").write_text(json.dumps(change(json.loads((out / "sweep.json").read_text()))))
    line = one_line_error(run(["sweep", "report", str(out)]))
    assert fragment in line and "move it away and run the sweep file again" in line, line
    assert not (out / "results.csv").exists()


@pytest.mark.parametrize("field, value", [("structure", "none"), ("test_acc", "high"), ("compression", True),
                                          ("data_source", 5)])
def test_report_of_a_damaged_summary_names_it_unreadable_and_reports_the_others(finished, tmp_path, field, value):
    out = _copy(finished, tmp_path)
    path = out / NAMES[3] / "summary.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), field: value}))
    result = run(["sweep", "report", str(out)])
    assert result.exit_code == 0, result.output
    said = f"{path}: damaged run summary ({field} is {value!r}, not what training writes)"
    assert result.stderr.startswith(f"unreadable: {NAMES[3]}: {said}") and len(result.stderr.splitlines()) == 1
    assert "delete it and run the sweep file again" in result.stderr
    with open(out / "results.csv", newline="") as handle:
        rows = {row["point"]: row for row in csv.DictReader(handle)}
    assert rows[NAMES[3]]["status"] == "unreadable" and rows[NAMES[3]]["test_acc"] == ""
    assert all(rows[name]["status"] == "done" for name in NAMES if name != NAMES[3])
    assert f"- `{NAMES[3]}`: unreadable: {said}" in (out / "report.md").read_text()
    path.write_text('{"test_acc": 0.9')  # not JSON at all: the same
    assert run(["sweep", "report", str(out)]).exit_code == 0


def test_report_checks_every_output_path_before_writing_any(finished, tmp_path):
    out = _copy(finished, tmp_path)
    (out / "report.png").mkdir()
    line = one_line_error(run(["sweep", "report", str(out)]))
    assert f"{out / 'report.png'} is a folder" in line, line
    assert not (out / "results.csv").exists() and not (out / "report.md").exists()


def test_report_files_are_all_new_or_all_old(finished, tmp_path, monkeypatch):
    """The figure, CSV and markdown change together (evsim.files.written_together): a
    markdown that cannot be written (here a full disk) leaves the other two as they were."""
    import evsim.sweep.report as report

    out = _copy(finished, tmp_path)
    assert run(["sweep", "report", str(out)]).exit_code == 0
    names = ("report.png", "results.csv", "report.md")
    before = {name: (out / name).read_bytes() for name in names}
    (out / NAMES[3] / "summary.json").unlink()  # the new report would differ

    def no_space(*args):
        raise OSError(28, "No space left on device", str(out / "report.md"))

    monkeypatch.setattr(report, "report_markdown", no_space)
    assert "No space left on device" in one_line_error(run(["sweep", "report", str(out)]))
    assert {name: (out / name).read_bytes() for name in names} == before
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_report_names_an_interrupted_point_resumable_and_its_data_source(finished, tmp_path):
    out = _copy(finished, tmp_path)
    name = NAMES[3]
    (out / name / "summary.json").unlink()  # as a point stopped after its first epoch: a checkpoint, no summary
    state = json.loads((out / "sweep.json").read_text())
    state["points"][3].update(status="submitted", action=None)
    (out / "sweep.json").write_text(json.dumps(state))
    assert run(["sweep", "report", str(out)]).exit_code == 0
    with open(out / "results.csv", newline="") as handle:
        row = next(row for row in csv.DictReader(handle) if row["point"] == name)
    assert row["status"] == "interrupted" and row["data_source"] == "mnist-5k" and row["test_acc"] == ""
    report = (out / "report.md").read_text()
    assert f"- `{name}`: interrupted (resumes from its last checkpoint when the sweep runs again)" in report
    for point in state["points"]:
        shutil.rmtree(out / point["name"])
    assert run(["sweep", "report", str(out)]).exit_code == 0
    assert "data: none yet" in (out / "report.md").read_text()


def test_report_never_counts_a_lost_run_or_averages_other_data(finished, tmp_path):
    """A point recorded done whose folder is gone, or holds a summary without results, is
    not finished; seeds on other data sources are rows of their own, never one mean."""
    out = _copy(finished, tmp_path)
    shutil.rmtree(out / NAMES[3])  # structure=none,seed=1
    (out / NAMES[1] / "summary.json").write_text('{"weird": true}')  # structure=sdsnn,seed=1
    config_path = out / NAMES[2] / "config.json"  # structure=none,seed=0 ran on other data
    summary_path = out / NAMES[2] / "summary.json"
    for path in (config_path, summary_path):
        path.write_text(json.dumps({**json.loads(path.read_text()), "data_source": "real"}))
    assert run(["sweep", "report", str(out)]).exit_code == 0
    with open(out / "results.csv", newline="") as handle:
        rows = {row["point"]: row for row in csv.DictReader(handle)}
    assert rows[NAMES[3]]["status"] == "lost" and rows[NAMES[1]]["status"] == "unreadable"
    assert "no test_acc" in rows[NAMES[1]]["error"]
    report = (out / "report.md").read_text()
    assert "6 points, 4 finished; data: mnist-5k, real." in report
    table = [line for line in report.splitlines() if line.startswith("| none")]
    assert [line.split(" | ")[1:3] for line in table] == [["real", "1/1"], ["—", "0/1"]]  # the lost run: no data


def test_report_figure_never_joins_points_on_other_data_and_names_the_data(tmp_path, monkeypatch):
    from evsim.sweep import report

    def group(structure, dataset, source, acc, compression):
        row = {"status": "done", "structure": structure, "option.dataset": dataset, "data_source": source}
        return {"key": {"structure": structure}, "rows": [row], "mean": {"test_acc": acc, "compression": compression},
                "std": {"test_acc": None, "compression": None}}

    drawn = []
    monkeypatch.setattr(report, "save_figure", lambda fig, path: drawn.append(fig))
    report.plot_report([group("none", "mnist", "mnist-5k", 0.57, 0.0), group("none", "nmnist", "emulated", 0.44, 0.0)],
                       tmp_path / "r.png")
    ax = drawn[-1].axes[0]
    assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == ["none (mnist, mnist-5k)",
                                                                          "none (nmnist, emulated)"]
    assert ax.get_title() == "mean ± std over seeds (data: emulated, mnist-5k)"
    report.plot_report([group("none", "nmnist", "emulated", 0.44, 0.0)], tmp_path / "r.png")
    ax = drawn[-1].axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["none"]
    assert ax.get_title() == "mean ± std over seeds (data: emulated)"


def test_report_figure_names_each_point_by_its_other_axes_and_joins_none(tmp_path, monkeypatch):
    """Points of two learning rates were one line per structure, read as an error bar."""
    from evsim.sweep import report

    def group(structure, lr, acc, compression):
        row = {"status": "done", "structure": structure, "option.dataset": "mnist", "data_source": "mnist-5k"}
        return {"key": {"structure": structure, "lr": lr}, "rows": [row],
                "mean": {"test_acc": acc, "compression": compression}, "std": {"test_acc": None, "compression": None}}

    drawn = []
    monkeypatch.setattr(report, "save_figure", lambda fig, path: drawn.append(fig))
    report.plot_report([group("none", 0.001, 0.55, 0.0), group("none", 0.0001, 0.2, 0.0)], tmp_path / "r.png")
    ax = drawn[-1].axes[0]
    assert sorted(text.get_text() for text in ax.texts) == ["lr=0.0001", "lr=0.001"]
    assert all(line.get_linestyle() == "None" for line in ax.get_lines() if len(line.get_xdata()) > 1)
    assert ax.get_xlim() == (-1, 10)  # every point at 0 %: no negative compression drawn
    report.plot_report([group("none", 0.001, 0.55, 0.0), group("set", 0.001, 0.55, 0.0)], tmp_path / "r.png")
    drawn_markers = [(line.get_marker(), line.get_markersize(), line.get_markerfacecolor())
                     for line in drawn[-1].axes[0].get_lines() if line.get_marker() not in ("None", "_", "|")]
    assert len({(m, size) for m, size, _ in drawn_markers}) == 2 and {face for *_, face in drawn_markers} == {"none"}


def test_the_same_sweep_file_edited_says_so_instead_of_to_run_itself(finished, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    state = json.loads((finished / "sweep.json").read_text())
    edited = sweep_file(tmp_path, TINY + "\n[axes]\nseed = [0]\n", "edited.toml")
    (out / "sweep.json").write_text(json.dumps({**state, "sweep_file": str(edited)}))
    line = one_line_error(run(["sweep", str(edited), "--out", str(out), "--no-progress"]))
    assert f"{out} holds the sweep {edited} made before it was edited: its points differ now" in line
    assert "restore the file to continue that one" in line and f"run {edited}" not in line


def test_a_bar_in_an_axis_value_does_not_split_the_report_table_cell():
    from evsim.sweep.report import _cell
    assert _cell("p|q") == "p\\|q" and _cell([8, 8]) == "8-8"


def test_report_names_a_point_being_trained_running(finished, tmp_path):
    from evsim.runlock import run_lock

    out = _copy(finished, tmp_path)
    name = NAMES[3]
    (out / name / "summary.json").unlink()
    state = json.loads((out / "sweep.json").read_text())
    state["points"][3].update(status="submitted", action=None)
    (out / "sweep.json").write_text(json.dumps(state))
    with run_lock(out / name):  # as a worker training it holds it
        assert run(["sweep", "report", str(out)]).exit_code == 0
    with open(out / "results.csv", newline="") as handle:
        row = next(row for row in csv.DictReader(handle) if row["point"] == name)
    assert row["status"] == "running"
    assert f"- `{name}`: running" in (out / "report.md").read_text()
    assert not (out / name / ".evsim.lock").exists()  # the report looked, and left nothing


def test_the_last_line_counts_only_resumes_that_finished(tmp_path, monkeypatch):
    """A point whose resume failed is failed, not "resumed"."""
    states = [{"name": "a", "status": "done", "action": "resumed", "error": None, "data_source": "mnist-5k"},
              {"name": "b", "status": "failed", "action": "resumed", "error": "checkpoint damaged"},
              {"name": "c", "status": "done", "action": "skipped", "error": None}]
    monkeypatch.setattr("evsim.cli.sweep.run_sweep_file", lambda *args: states)
    result = run(["sweep", str(sweep_file(tmp_path, SWEEP)), "--out", str(tmp_path / "out"), "--no-progress"])
    assert result.exit_code == 1
    assert "done: 2 of 3 points finished (1 already before, 1 resumed), 1 failed, on mnist-5k data" in result.output
    assert "failed: b: checkpoint damaged" in result.output


def test_a_rerun_stopped_at_once_keeps_what_the_record_said(finished, tmp_path, monkeypatch):
    """Run again and stopped before any point ends, a sweep's record still says which
    points are finished and what its tied points took: the report counts them, with the
    taken option, as before the rerun."""
    import evsim.sweep.execute as execute

    out = _copy(finished, tmp_path)
    shutil.rmtree(out / NAMES[2])  # a point to train again
    save = execute._save

    def save_then_stop(*args):
        save(*args)
        raise KeyboardInterrupt

    monkeypatch.setattr(execute, "_save", save_then_stop)
    result = run(["sweep", str(sweep_file(tmp_path, SWEEP)), "--out", str(out), "--workers", "1", "--no-progress"])
    assert result.exit_code == 130, result.output
    monkeypatch.setattr(execute, "_save", save)
    assert run(["sweep", "report", str(out)]).exit_code == 0
    with open(out / "results.csv", newline="") as handle:
        rows = {row["point"]: row for row in csv.DictReader(handle)}
    for name in NAMES[4:]:  # the magnitude points, tied to the SD-SNN ones
        assert rows[name]["status"] == "done" and rows[name]["option.target_sparsity"] != "", rows[name]
    assert rows[NAMES[2]]["status"] == "lost"  # recorded finished; its folder is gone


def test_a_report_from_another_folder_keeps_points_of_a_relative_data_folder_done(tmp_path, monkeypatch):
    """The report resolved a relative data_dir against its own folder (and took its own
    $EVSIM_DATA): finished points became 'lost', their results blank."""
    (tmp_path / "rel" / "mydata").mkdir(parents=True)  # no IDX files: the 5,000-digit sample
    monkeypatch.chdir(tmp_path / "rel")
    path = sweep_file(tmp_path / "rel", TINY.replace("epochs = 2", "epochs = 1") + 'data_dir = "mydata"\n'
                      "[axes]\nseed = [0]\n")
    result = run(["sweep", str(path), "--out", "out", "--workers", "1", "--no-progress"])
    assert result.exit_code == 0, result.output
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EVSIM_DATA", str(tmp_path))
    assert run(["sweep", "report", str(tmp_path / "rel" / "out")]).exit_code == 0
    report = (tmp_path / "rel" / "out" / "report.md").read_text()
    assert "1 points, 1 finished" in report, report


def test_a_workers_own_evsim_data_gives_a_point_no_other_data(tmp_path, monkeypatch):
    """A point the client resolved without a data folder trained on the real files of the
    worker's $EVSIM_DATA, and recorded data_dir null."""
    from evsim.sweep.point import run_point
    from evsim.sweep.training import config_dict, resolve
    from tests.test_data_static import make_idx

    make_idx(tmp_path / "idx")
    values = {"dataset": "mnist", "epochs": 1, "hidden": [8], "time_steps": 2, "batch_size": 500, "threads": 1,
              "structure": "none"}
    config = config_dict(resolve(values, tmp_path / "p", "test"))
    assert config["data"]["data_dir"] is None
    monkeypatch.setenv("EVSIM_DATA", str(tmp_path / "idx"))
    outcome = run_point("p", config, str(tmp_path / "p"), str(tmp_path / "p.log"))
    assert outcome["status"] == "done", outcome
    assert outcome["summary"]["data_source"] == "mnist-5k"


def test_ctrl_c_of_a_sweep_on_another_cluster_says_which_points_go_on(tmp_path, monkeypatch):
    """The points that did not stop in time are named (a rerun at once finds their folders
    being written and marks them failed)."""
    def interrupted(*args, **kwargs):
        exc = KeyboardInterrupt()
        exc.still_running = ["seed=0"]
        raise exc

    monkeypatch.setattr("evsim.cli.sweep.run_sweep_file", interrupted)
    result = run(["sweep", str(sweep_file(tmp_path, TINY)), "--out", str(tmp_path / "out"), "--scheduler",
                  "tcp://127.0.0.1:1", "--no-progress"])
    assert result.exit_code == 130, result.output
    assert "1 point still running on the cluster's workers stop after their current batch (seed=0)" in result.output
    result = run(["sweep", str(sweep_file(tmp_path, TINY)), "--out", str(tmp_path / "out"), "--no-progress"])
    assert result.exit_code == 130 and "1 point that did not stop in time keep their last epoch's" in result.output
    monkeypatch.setattr("evsim.cli.sweep.run_sweep_file", lambda *args, **kwargs: (_ for _ in ()).throw(
        KeyboardInterrupt()))
    result = run(["sweep", str(sweep_file(tmp_path, TINY)), "--out", str(tmp_path / "out"), "--scheduler",
                  "tcp://127.0.0.1:1", "--no-progress"])
    assert result.exit_code == 130 and "cluster's workers" not in result.output


def test_a_stopped_sweeps_point_stops_at_a_batch_and_resumes_exactly(tmp_path):
    """No signal reaches a point on a worker of a cluster evsim did not start: once the
    sweep's stop file exists, the run stops before its next batch with a checkpoint (it went
    on to its end), a point not yet started does not start, and the stopped run resumed
    equals the run never stopped."""
    import threading

    from evsim.sweep.point import run_point
    from evsim.sweep.training import config_dict, resolve

    values = {"dataset": "mnist", "epochs": 30, "hidden": [8], "time_steps": 2, "batch_size": 250, "threads": 1,
              "structure": "none"}
    stop_file = tmp_path / "stop-requested"
    stop_file.touch()
    config = config_dict(resolve(values, tmp_path / "p", "test"))
    outcome = run_point("p", config, str(tmp_path / "p"), str(tmp_path / "logs" / "p.log"), str(stop_file))
    assert outcome["status"] == "stopped" and outcome["action"] is None, outcome
    assert not (tmp_path / "p").exists() and not (tmp_path / "logs").exists()
    stop_file.unlink()

    def stop_after_the_first_epoch():
        metrics_file = tmp_path / "p" / "metrics.jsonl"
        while not (metrics_file.exists() and '"epoch"' in metrics_file.read_text()):
            time.sleep(0.005)
        stop_file.touch()

    watcher = threading.Thread(target=stop_after_the_first_epoch, daemon=True)
    watcher.start()
    outcome = run_point("p", config, str(tmp_path / "p"), str(tmp_path / "p.log"), str(stop_file))
    watcher.join(timeout=10)
    assert outcome["status"] == "interrupted" and outcome["action"] == "trained", outcome
    assert outcome["error"].startswith("stopped in epoch ") and "(the sweep was stopped)" in outcome["error"]
    assert (tmp_path / "p" / "checkpoint-latest.npz").exists() and not (tmp_path / "p" / "summary.json").exists()
    stop_file.unlink()
    outcome = run_point("p", config, str(tmp_path / "p"), str(tmp_path / "p.log"), str(stop_file))
    assert outcome["status"] == "done" and outcome["action"] == "resumed", outcome
    outcome = run_point("q", config_dict(resolve(values, tmp_path / "q", "test")), str(tmp_path / "q"),
                        str(tmp_path / "q.log"), str(stop_file))
    assert outcome["status"] == "done", outcome
    assert_same_run(tmp_path / "p", tmp_path / "q")


def test_ctrl_c_of_a_sweep_on_another_cluster_stops_its_running_points(tmp_path):
    """Ctrl-C of a sweep on a scheduler and worker it did not start: the point the worker
    runs stops at its next batch with a checkpoint (it used to go on to its end), the
    client says nothing goes on, and the same command resumes it."""
    from evsim.runlock import is_locked

    env = {**os.environ, "EVSIM_OFFLINE": "1"}
    evsim = "import sys; from evsim.cli.main import main; sys.argv = ['evsim'] + sys.argv[1:]; main()"
    text = TINY.replace("epochs = 2", "epochs = 30").replace("hidden = [24]", "hidden = [8]") + "\n[axes]\nseed = [0]\n"
    path, out = sweep_file(tmp_path, text), tmp_path / "out"
    with cluster_apart(tmp_path, env) as scheduler_file:
        command = [sys.executable, "-c", evsim, "sweep", str(path), "--out", str(out), "--scheduler-file",
                   str(scheduler_file), "--no-progress"]
        sweep = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True, start_new_session=True)
        point = out / "seed=0"
        try:
            deadline = time.monotonic() + 240
            while not ((point / "metrics.jsonl").exists() and '"epoch"' in (point / "metrics.jsonl").read_text()):
                assert sweep.poll() is None and time.monotonic() < deadline, "the sweep ended before Ctrl-C"
                time.sleep(0.02)
            os.kill(sweep.pid, signal.SIGINT)
            output, _ = sweep.communicate(timeout=120)
        finally:
            if sweep.poll() is None:
                os.killpg(sweep.pid, signal.SIGKILL)
                sweep.wait()
        assert sweep.returncode == 130, output
        assert "Interrupted: finished points are kept" in output and "go on" not in output, output
        assert not is_locked(point), "the worker still trains the point"
        rows = (point / "metrics.jsonl").read_text().count('"epoch"')
        assert rows < 30 and (point / "checkpoint-latest.npz").exists() and not (point / "summary.json").exists()
        assert states(out)["seed=0"]["status"] == "interrupted"
        time.sleep(1.0)
        assert (point / "metrics.jsonl").read_text().count('"epoch"') == rows
        result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        assert states(out)["seed=0"]["action"] == "resumed" and (point / "summary.json").exists()


def test_a_finished_points_damaged_summary_fails_with_its_fix(tmp_path):
    """A point whose folder holds a damaged summary.json failed with no fix in its line,
    where the report gives one."""
    from evsim.sweep.point import run_point
    from evsim.sweep.training import config_dict, resolve

    values = {"dataset": "mnist", "epochs": 1, "hidden": [8], "time_steps": 2, "batch_size": 500, "threads": 1,
              "structure": "none"}
    config = config_dict(resolve(values, tmp_path / "p", "test"))
    assert run_point("p", config, str(tmp_path / "p"), str(tmp_path / "p.log"))["status"] == "done"
    (tmp_path / "p" / "summary.json").write_text('{"test_acc": ')
    outcome = run_point("p", config, str(tmp_path / "p"), str(tmp_path / "p.log"))
    assert outcome["status"] == "failed" and outcome["action"] == "skipped", outcome
    assert "summary.json" in outcome["error"] and outcome["error"].endswith("restore the file"), outcome


def test_stopping_cancels_points_that_are_not_running_at_once(tmp_path):
    """A stopped sweep whose points were only queued (behind another sweep's runs on the
    same cluster) waited until a worker freed, up to 5 minutes, saying that running points
    were saving; queued points are cancelled at once, and keep the record they had."""
    from evsim.runlock import run_lock
    from evsim.sweep.execute import stop_points

    class Queued:
        key = "k"

        def done(self):
            return False

    class Client:
        cancelled = []

        def cancel(self, futures):
            self.cancelled += futures

    futures = {Queued(): "seed=0", Queued(): "seed=1"}
    client, records, said = Client(), [], []
    start = time.monotonic()
    with run_lock(tmp_path / "elsewhere"):  # another run's lock is no point of this sweep's
        left = stop_points(client, dict(futures), tmp_path, tmp_path / "stop-requested", None, records.append,
                           said.append)
    assert time.monotonic() - start < 3 and left == [] and said == []
    assert sorted(client.cancelled, key=id) == sorted(futures, key=id)
    assert [r["status"] for r in records] == ["stopped", "stopped"] and (tmp_path / "stop-requested").exists()


def test_a_point_sent_but_never_started_reports_pending(tmp_path):
    """The report passed sweep.json's internal "submitted" through, a status no doc names."""
    from evsim.sweep.report import _unfinished_status

    assert _unfinished_status(tmp_path, {"name": "seed=2", "status": "submitted"}) == "pending"
    (tmp_path / "seed=1").mkdir()
    (tmp_path / "seed=1" / "checkpoint-latest.npz").write_bytes(b"")
    assert _unfinished_status(tmp_path, {"name": "seed=1", "status": "submitted"}) == "interrupted"
