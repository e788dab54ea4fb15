import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from evsim.checkpoint import (CHECKPOINT_LATEST, NETWORK_FILE, CheckpointWriter, TrainingState, _pack, _unpack,
                              load_checkpoint, load_network, save_checkpoint, save_network)
from evsim.errors import CheckpointError
from evsim.network import Network
from evsim.train import Trainer
from tests.runs import toy_config, toy_dataset


def test_saved_network_gives_identical_spikes(rng, tmp_path):
    net = Network.mlp([20, 12, 4], rng)
    net.layers[0].kill([1, 5])
    net.layers[0].store.prune(rng.random(net.layers[0].store.nnz) < 0.3)
    net.layers[0].rebuild()
    save_network(tmp_path / "n.npz", net)
    back = load_network(tmp_path / "n.npz")
    x = (rng.random((6, 3, 20)) < 0.4).astype(np.float32)
    (c1, t1), (c2, t2) = net.forward(x), back.forward(x)
    np.testing.assert_array_equal(c1, c2)
    for a, b in zip(t1, t2):
        np.testing.assert_array_equal(a.spikes, b.spikes)
    assert back.layers[0].alive.tolist() == net.layers[0].alive.tolist()
    assert [layer.develops for layer in back.layers] == [True, False]


def test_missing_and_truncated_network_files(rng, tmp_path):
    with pytest.raises(CheckpointError, match="no trained network"):
        load_network(tmp_path / "absent.npz")
    save_network(tmp_path / "n.npz", Network.mlp([5, 3, 2], rng))
    data = (tmp_path / "n.npz").read_bytes()
    (tmp_path / "n.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_network(tmp_path / "n.npz")


# ------------------------------------------------------------ training checkpoints


def trained_state(tmp_path) -> TrainingState:
    """A 1-epoch toy run with SD-SNN (ranges, counters and moments all present), saved as
    ``checkpoint-latest.npz`` and ``network.npz`` in ``tmp_path``, and reloaded."""
    trainer = Trainer(toy_config(epochs=1), toy_dataset())
    trainer.fit(progress=False, echo=lambda line: None)
    save_checkpoint([tmp_path / CHECKPOINT_LATEST], trainer.training_state())
    save_network(tmp_path / NETWORK_FILE, trainer.network)
    return load_checkpoint(tmp_path / CHECKPOINT_LATEST)


def test_best_checkpoint_is_linked_not_rewritten_and_keeps_its_content(tmp_path, monkeypatch):
    """The second path is a hard link to the first (one write); replacing the first later
    leaves it as it was; without hard links it is written."""
    state = trained_state(tmp_path)
    latest, best = tmp_path / "latest.npz", tmp_path / "best.npz"
    save_checkpoint([latest, best], state)
    assert latest.stat().st_ino == best.stat().st_ino
    before = best.read_bytes()
    state.epoch += 1
    save_checkpoint([latest], state)
    assert best.read_bytes() == before and latest.read_bytes() != before
    assert load_checkpoint(best).epoch == state.epoch - 1

    def no_links(*args):
        raise OSError("hard links not supported")

    monkeypatch.setattr("evsim.files.os.link", no_links)
    save_checkpoint([latest, best], state)
    assert best.read_bytes() == latest.read_bytes() and latest.stat().st_ino != best.stat().st_ino
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary left


def test_checkpoint_round_trip_keeps_every_array_and_scalar_type(tmp_path):
    state = trained_state(tmp_path)
    save_checkpoint([tmp_path / "a.npz", tmp_path / "b.npz"], state)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    back = load_checkpoint(tmp_path / "a.npz")
    for key, value in state.structure.items():
        assert type(back.structure[key]) is type(value) and np.array_equal(back.structure[key], value), key
    for mine, theirs in zip(state.network.layers, back.network.layers):
        assert sorted(theirs.store.state) == sorted(mine.store.state)
        for name, values in mine.store.state.items():
            assert theirs.store.state[name].dtype == values.dtype and np.array_equal(theirs.store.state[name], values)
        for name, values in mine.bias_state.items():
            assert np.array_equal(theirs.bias_state[name], values)
        assert np.array_equal(theirs.store.indptr, mine.store.indptr) and np.array_equal(theirs.alive, mine.alive)
    assert "r_plus" in back.network.layers[0].store.state and "counter" in "".join(back.structure)
    assert back.rng == state.rng and back.optimizer == state.optimizer == {"name": "adam", "steps": 8}
    assert back.metrics == json.loads(json.dumps(state.metrics))
    with np.load(tmp_path / "a.npz", allow_pickle=False) as f:  # plain arrays only: nothing needs pickle
        assert all(f[key].dtype != object for key in f.files)


def test_packed_values_keep_their_type(tmp_path):
    """A NumPy scalar comes back as one (a float32 must not come back as a Python float,
    which NumPy would promote differently); JSON values as JSON."""
    arrays = {}
    values = {"f32": np.float32(0.1), "py": 0.1, "none": None, "order": np.arange(5)[::-1]}
    spec = _pack("structure__", values, arrays)
    np.savez(tmp_path / "packed.npz", **arrays)
    with np.load(tmp_path / "packed.npz", allow_pickle=False) as f:
        back = _unpack(json.loads(json.dumps(spec)), f, "structure")
    assert type(back["f32"]) is np.float32 and back["f32"] == np.float32(0.1)
    assert type(back["py"]) is float and back["none"] is None and back["order"].tolist() == [4, 3, 2, 1, 0]


def test_truncated_or_foreign_checkpoints_give_one_line_errors(tmp_path):
    trained_state(tmp_path)
    path = tmp_path / CHECKPOINT_LATEST
    data = path.read_bytes()
    for damaged in (data[: len(data) // 2], data[:-200], b"garbage"):
        path.write_bytes(damaged)
        with pytest.raises(CheckpointError, match="corrupt or truncated checkpoint") as info:
            load_checkpoint(path)
        assert "\n" not in str(info.value)
    with pytest.raises(CheckpointError, match="not a training checkpoint"):
        load_checkpoint(tmp_path / NETWORK_FILE)
    with pytest.raises(CheckpointError, match="no checkpoint here"):
        load_checkpoint(tmp_path / "nowhere.npz")
    # Checkpoints share the network layout: the network of a checkpoint loads on its own too.
    path.write_bytes(data)
    assert load_network(path).sizes == [30, 12, 4]
    with np.load(path, allow_pickle=False) as f:
        members = {key: f[key] for key in f.files}
    meta = json.loads(str(members.pop("meta")))
    older = tmp_path / "older.npz"
    np.savez(older, meta=np.array(json.dumps({**meta, "format": 1})), **members)
    with pytest.raises(CheckpointError, match="checkpoint format .* not supported .* start the run again"):
        load_checkpoint(older)


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    state = trained_state(tmp_path)
    path = tmp_path / CHECKPOINT_LATEST
    before = path.read_bytes()
    state.epoch = 99

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint([path], state)
    monkeypatch.undo()
    state.structure["0.unsaveable"] = object()
    with pytest.raises(CheckpointError, match="cannot checkpoint"):
        save_checkpoint([path], state)
    assert path.read_bytes() == before and load_checkpoint(path).epoch == 1
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []


def test_checkpoint_writer_writes_in_the_background_and_reports_failures(tmp_path, monkeypatch):
    """save() returns while the bytes are still being written, with the state already
    serialised; wait() returns once they are on disk, or raises one line if the write
    failed, leaving the previous checkpoint intact."""
    state = trained_state(tmp_path)
    path = tmp_path / CHECKPOINT_LATEST
    before = path.read_bytes()
    release, writing = threading.Event(), []
    real_fsync = os.fsync

    def slow_fsync(fd):
        writing.append(threading.current_thread().name)
        assert release.wait(10)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    writer = CheckpointWriter()
    state.data_source = "saved"
    writer.save([path], state)
    state.data_source = "changed after save"  # changing the state after save() does not change what is written
    assert path.read_bytes() == before  # not written yet: the writer thread waits in fsync
    release.set()
    writer.wait()
    assert writing and writing[0] != threading.current_thread().name
    assert load_checkpoint(path).data_source == "saved"

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    writer.save([path], state)
    with pytest.raises(CheckpointError, match="could not be written .*No space left.* previous one is intact") as info:
        writer.wait()
    assert "\n" not in str(info.value)
    writer.wait()  # the failure is reported once
    assert load_checkpoint(path).data_source == "saved"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []
    first = tmp_path / "first.npz"  # the run's first checkpoint: nothing earlier to keep
    writer.save([first], state)
    with pytest.raises(CheckpointError, match="could not be written .*No space left.*; there is no earlier one;"):
        writer.wait()
    assert not first.exists()


def test_checkpoint_writer_writes_network_and_metrics_as_they_were_at_save(tmp_path, monkeypatch):
    """The network and metrics files are written on the writer's thread after the
    checkpoint, from copies: weights changed and rows added after save() are not in
    them. A file that cannot be written is reported by wait() in one line naming it."""
    state = trained_state(tmp_path)
    network_path, metrics_path = tmp_path / "out" / NETWORK_FILE, tmp_path / "out" / "metrics.jsonl"
    weights = state.network.layers[0].store.data.copy()
    rows = list(state.metrics)
    release, written = threading.Event(), []
    real_fsync = os.fsync

    def slow_fsync(fd):
        written.append(os.readlink(f"/proc/self/fd/{fd}"))
        assert release.wait(10)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    writer = CheckpointWriter()
    writer.save([tmp_path / "out" / CHECKPOINT_LATEST], state, network_path, metrics_path)
    state.network.layers[0].store.data[:] += 1.0  # training goes on
    state.metrics.append({"type": "epoch", "epoch": 99})
    release.set()
    writer.wait()
    assert [Path(name).name.split(".")[1] for name in written] == ["checkpoint-latest", "network", "metrics"]
    np.testing.assert_array_equal(load_network(network_path).layers[0].store.data, weights)
    assert [json.loads(line) for line in metrics_path.read_text().splitlines()] == rows
    np.testing.assert_array_equal(load_checkpoint(tmp_path / "out" / CHECKPOINT_LATEST).network.layers[0].store.data,
                                  weights)

    metrics_path.unlink()
    metrics_path.mkdir()  # a folder in the way of the metrics file
    monkeypatch.setattr(os, "fsync", real_fsync)
    writer.save([tmp_path / "out" / CHECKPOINT_LATEST], state, network_path, metrics_path)
    with pytest.raises(CheckpointError, match=f"^{metrics_path}: the metrics file could not be written") as info:
        writer.wait()
    assert "\n" not in str(info.value)
    np.testing.assert_array_equal(load_network(network_path).layers[0].store.data, weights + 1.0)


def test_training_plot_is_redrawn_at_most_every_interval_and_after_the_last_epoch(tmp_path, monkeypatch):
    drawn = []

    def plot(metrics, path, *args):
        drawn.append(sum(row.get("type") == "epoch" for row in metrics))

    monkeypatch.setattr("evsim.train.plot_training", plot)
    monkeypatch.setattr("evsim.train.PLOT_EVERY_S", 1e9)
    Trainer(toy_config(epochs=3), toy_dataset()).fit(tmp_path / "slow", progress=False, echo=lambda line: None)
    assert drawn == [1, 3]  # the first epoch (nothing drawn yet), then the last
    drawn.clear()
    monkeypatch.setattr("evsim.train.PLOT_EVERY_S", 0.0)
    Trainer(toy_config(epochs=3), toy_dataset()).fit(tmp_path / "every", progress=False, echo=lambda line: None)
    assert drawn == [1, 2, 3]


def test_checkpoint_writer_reports_running_out_of_memory_in_one_line(tmp_path, monkeypatch):
    """A MemoryError on the writer's thread came out of the run as a traceback."""
    import evsim.checkpoint as checkpoint_module

    state = trained_state(tmp_path)

    def no_memory(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(checkpoint_module, "write_checkpoint", no_memory)
    writer = CheckpointWriter()
    writer.save([tmp_path / "new" / CHECKPOINT_LATEST], state)
    with pytest.raises(CheckpointError, match=r"could not be written: out of memory; there is no earlier one; free "
                                              r"memory") as info:
        writer.wait()
    assert "\n" not in str(info.value)


def test_checkpoint_writer_copies_a_new_state_only_once_the_last_is_written(tmp_path, monkeypatch):
    """Copying before waiting held two snapshots of every array at once (a third of a
    weight-heavy run's memory)."""
    import evsim.checkpoint as checkpoint_module

    state = trained_state(tmp_path)
    release, pending_at_copy = threading.Event(), []
    write = checkpoint_module.write_checkpoint

    def slow_write(*args, **kwargs):
        assert release.wait(10)
        write(*args, **kwargs)

    contents = checkpoint_module._checkpoint_contents

    def contents_noting_pending(*args):
        pending_at_copy.append(writer._pending is not None and not writer._pending.done())
        return contents(*args)

    monkeypatch.setattr(checkpoint_module, "write_checkpoint", slow_write)
    monkeypatch.setattr(checkpoint_module, "_checkpoint_contents", contents_noting_pending)
    writer = CheckpointWriter()
    writer.save([tmp_path / "a.npz"], state)
    threading.Timer(0.2, release.set).start()
    writer.save([tmp_path / "b.npz"], state)
    writer.wait()
    assert pending_at_copy == [False, False]
