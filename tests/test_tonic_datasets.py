"""SHD, POKER-DVS, CIFAR10-DVS and a folder of one's own recordings, from small files
written here in the real formats (HDF5, tonic's .npy, AEDAT 2.0, N-MNIST .bin); the
frames must equal tonic's ToFrame of the events written, and missing files give one
line that says where to put them."""
import numpy as np
import pytest

from evsim.data import load_dataset
from evsim.data.base import DataOptions
from evsim.data.events import encode_nmnist_bin, to_frames
from evsim.data.tonic_sets import (CIFAR10DVS_CLASSES, EVENTS_DTYPE, POKERDVS_CLASSES, H5Sample, encode_aedat2,
                                   read_aedat2, read_recording, read_shd)
from evsim.errors import DataError
from tests.conftest import one_line_error, run


def _events(rng, n, width, height, duration_us=50_000, polarities=2):
    events = np.zeros(n, dtype=EVENTS_DTYPE)
    events["x"] = rng.integers(0, width, n)
    events["y"] = rng.integers(0, height, n)
    events["t"] = np.sort(rng.choice(duration_us, n, replace=False))
    events["p"] = rng.integers(0, polarities, n)
    return events


def _options(tmp_path, **kw):
    return DataOptions(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", time_steps=kw.pop("time_steps", 4),
                       **kw)


def _assert_frames(split, recordings, sensor, time_steps, slicing="events"):
    dense = split.inputs.to_dense()
    for k, events in enumerate(recordings):
        np.testing.assert_array_equal(dense[k], to_frames(events, sensor, time_steps, slicing))


# ------------------------------------------------------------------ SHD
def _write_shd(path, rng, n, classes=20):
    import h5py

    recordings, labels = [], rng.integers(0, classes, n)
    with h5py.File(path, "w") as f:
        times = f.create_dataset("spikes/times", (n,), dtype=h5py.vlen_dtype(np.float32))
        units = f.create_dataset("spikes/units", (n,), dtype=h5py.vlen_dtype(np.uint16))
        for k in range(n):
            m = int(rng.integers(30, 60))
            t = np.sort(rng.choice(100_000, m, replace=False)) / 1e6  # seconds, whole microseconds
            u = rng.integers(0, 700, m)
            times[k], units[k] = t.astype(np.float32), u.astype(np.uint16)
            events = np.zeros(m, dtype=EVENTS_DTYPE)
            events["x"], events["t"] = u, np.round(t.astype(np.float32).astype(np.float64) * 1e6)
            recordings.append(events)
        f.create_dataset("labels", data=labels.astype(np.uint16))
    return recordings, labels


def test_shd_from_tonic_layout(tmp_path, rng):
    root = tmp_path / "data" / "SHD"
    root.mkdir(parents=True)
    train, train_labels = _write_shd(root / "shd_train.h5", rng, 6)
    _write_shd(root / "shd_test.h5", rng, 3)
    dataset = load_dataset("shd", _options(tmp_path, slicing="time"))
    assert dataset.sample_shape == (1, 1, 700) and dataset.n_classes == 20 and len(dataset.test) == 3
    np.testing.assert_array_equal(dataset.train.labels, train_labels)
    _assert_frames(dataset.train, train, (700, 1, 1), 4, "time")


def test_shd_missing_or_zipped_files_are_one_line_errors(tmp_path, rng):
    (tmp_path / "data" / "SHD").mkdir(parents=True)
    line = one_line_error(run(["data", "info", "--dataset", "shd", "--data-dir", str(tmp_path / "data")]))
    assert "SHD not found in" in line and "shd_train.h5" in line
    _write_shd(tmp_path / "data" / "SHD" / "shd_train.h5", rng, 2)
    (tmp_path / "data" / "SHD" / "shd_test.h5.gz").write_bytes(b"")
    line = one_line_error(run(["data", "info", "--dataset", "shd", "--data-dir", str(tmp_path / "data")]))
    assert "shd_test.h5 not found (shd_test.h5.gz is there: unzip it)" in line
    line = one_line_error(run(["data", "info", "--dataset", "shd"]))
    assert "SHD needs its files in --data-dir DIR (no --data-dir (or $EVSIM_DATA) given)" in line


def _replace(path, key, value):
    """Replace dataset ``key`` of HDF5 file ``path`` by ``value`` (a dict: a group)."""
    import h5py

    with h5py.File(path, "a") as f:
        del f[key]
        if isinstance(value, dict):
            f.create_group(key)
        else:
            f[key] = value


_SHD_FIX = "the file is damaged: replace it from the original archive (tonic's SHD)"


@pytest.mark.parametrize("key,value,problem", [
    ("labels", np.arange(10), "10 labels for 6 recordings"),
    ("labels", np.arange(3), "3 labels for 6 recordings"),
    ("labels", np.array([b"a"] * 6), "labels are |S1 of shape (6,), not one integer per recording"),
    ("labels", np.zeros((6, 2), np.int64), "labels are int64 of shape (6, 2), not one integer per recording"),
    ("labels", np.array([0.5, 1, 2, 3, 4, 5]), "labels are float64 of shape (6,), not one integer per recording"),
    ("labels", np.array([-1, 0, 1, 2, 3, 4]), "label -1 of recording 0 is not a class 0..19"),
    ("labels", np.array([0, 1, 2, 3, 4, 20]), "label 20 of recording 5 is not a class 0..19"),
    ("spikes/times", {}, "'spikes/times' is a group, not a dataset; an SHD file holds datasets spikes/times, "
                         "spikes/units and labels"),
    ("spikes/units", np.zeros((5, 3), np.uint16), "6 recordings of spike times but 5 of channels"),
])
def test_shd_files_with_impossible_labels_are_one_line(tmp_path, rng, key, value, problem):
    root = tmp_path / "data" / "SHD"
    root.mkdir(parents=True)
    _write_shd(root / "shd_train.h5", rng, 6)
    _write_shd(root / "shd_test.h5", rng, 3)
    _replace(root / "shd_train.h5", key, value)
    line = one_line_error(run(["data", "info", "--dataset", "shd", "--data-dir", str(tmp_path / "data"),
                               "--cache-dir", str(tmp_path / "cache")]))
    assert line == f"Error: {root / 'shd_train.h5'}: {problem}; {_SHD_FIX}"


@pytest.mark.parametrize("times,problem", [
    ([0.1, np.nan], "a spike time is NaN, infinite or negative"),
    ([-0.5, 0.1], "a spike time is NaN, infinite or negative"),
    ([], "recording holds no events"),
    ([0.1, 1e16], "a spike time of 1e+16 s is beyond what microseconds in int64 hold"),
])
def test_bad_shd_spike_times_say_to_replace_the_file(tmp_path, times, problem):
    import h5py

    path = tmp_path / "shd_train.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("spikes/times", (1,), dtype=h5py.vlen_dtype(np.float32))[0] = np.float32(times)
        f.create_dataset("spikes/units", (1,), dtype=h5py.vlen_dtype(np.uint16))[0] = np.ones(len(times), np.uint16)
        f["labels"] = np.zeros(1, np.uint16)
    with pytest.raises(DataError) as info:
        read_shd(H5Sample(path, 0))
    assert str(info.value) == f"{path} sample 0: {problem}; {_SHD_FIX}"


# -------------------------------------------------------------- POKER-DVS
def test_pokerdvs_from_tonic_layout_trains(tmp_path, rng):
    recordings = {}
    for split in ("train", "test"):
        for suit in POKERDVS_CLASSES:
            folder = tmp_path / "data" / "POKERDVS" / f"pips_{split}" / suit
            folder.mkdir(parents=True)
            for k in range(3 if split == "train" else 1):
                events = _events(rng, 80, 35, 35)
                # tonic's files: unstructured [N, 4] rows t, x, y, p
                np.save(folder / f"{suit}{k}.npy", np.stack([events[c] for c in ("t", "x", "y", "p")], axis=1))
                recordings.setdefault(split, []).append(events)
    dataset = load_dataset("pokerdvs", _options(tmp_path))
    assert dataset.sample_shape == (2, 35, 35) and len(dataset.train) == 12 and dataset.n_classes == 4
    assert dataset.train.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    _assert_frames(dataset.train, recordings["train"], (35, 35, 2), 4)
    result = run(["train", "--dataset", "pokerdvs", "--data-dir", str(tmp_path / "data"), "--cache-dir",
                  str(tmp_path / "cache"), "--time-steps", "4", "--epochs", "1", "--hidden", "8", "--val-fraction",
                  "0", "--no-progress", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "data: pokerdvs (real), 12 train / 4 test samples" in result.output


def test_pokerdvs_bad_file_names_the_file(tmp_path, rng):
    for split in ("train", "test"):
        folder = tmp_path / "data" / f"pips_{split}" / "cl"
        folder.mkdir(parents=True)
        np.save(folder / "a.npy", np.zeros((5, 3)))
    with pytest.raises(DataError, match=r"a\.npy: expected an \[N, 4\] numeric array of t, x, y, p"):
        load_dataset("pokerdvs", _options(tmp_path))


# ------------------------------------------------------------ CIFAR10-DVS
def test_aedat2_round_trip_and_cifar10dvs_split(tmp_path, rng):
    recordings = {}
    for name in CIFAR10DVS_CLASSES:
        folder = tmp_path / "data" / "CIFAR10DVS" / name
        folder.mkdir(parents=True)
        for k in range(10):
            events = _events(rng, 60, 128, 128)
            (folder / f"cifar10_{name}_{k}.aedat").write_bytes(encode_aedat2(events))
            recordings[(name, k)] = events
    events = recordings[("cat", 3)]
    np.testing.assert_array_equal(read_aedat2(tmp_path / "data" / "CIFAR10DVS" / "cat" / "cifar10_cat_3.aedat"), events)
    dataset = load_dataset("cifar10dvs", _options(tmp_path, downsample=32))
    assert dataset.sample_shape == (2, 32, 32) and len(dataset.train) == 90 and len(dataset.test) == 10
    assert dataset.test.labels.tolist() == list(range(10))  # recording 9 of each class tests


@pytest.mark.parametrize("per_class,tested", [(4, 0), (5, 1)])
def test_cifar10dvs_with_too_few_recordings_to_test_says_how_many_it_needs(tmp_path, rng, per_class, tested):
    root = tmp_path / "data" / "CIFAR10DVS"
    for name in CIFAR10DVS_CLASSES:
        (root / name).mkdir(parents=True)
        for k in range(per_class):
            (root / name / f"cifar10_{name}_{k}.aedat").write_bytes(encode_aedat2(_events(rng, 30, 128, 128)))
    result = run(["data", "info", "--dataset", "cifar10dvs", "--data-dir", str(tmp_path / "data"), "--cache-dir",
                  str(tmp_path / "cache"), "--time-steps", "2"])
    if tested:
        assert result.exit_code == 0 and f"test         {tested * 10} samples" in result.output, result.output
    else:
        assert one_line_error(result) == (
            f"Error: {root}: the test split holds no samples: the last 10% of each class's recordings (by number) "
            "test, which leaves none to a class of fewer than 5, as every class here is; add recordings, at least 5 "
            "per class")


def test_aedat_errors(tmp_path):
    (tmp_path / "x.aedat").write_bytes(b"not aedat")
    with pytest.raises(DataError, match="not an AEDAT file"):
        read_aedat2(tmp_path / "x.aedat")
    (tmp_path / "y.aedat").write_bytes(b"#!AER-DAT2.0\r\n" + b"\0" * 12)
    with pytest.raises(DataError, match="truncated AEDAT body"):
        read_aedat2(tmp_path / "y.aedat")
    (tmp_path / "data" / "CIFAR10DVS" / "airplane").mkdir(parents=True)
    with pytest.raises(DataError, match="airplane: no .aedat4 or .aedat recordings"):
        load_dataset("cifar10dvs", _options(tmp_path))


# ------------------------------------------------------------- a folder
def _write_recording(path, events):
    if path.suffix == ".npz":
        np.savez(path, **{k: events[k] for k in ("x", "y", "t", "p")})
    elif path.suffix == ".bin":
        path.write_bytes(encode_nmnist_bin(events))
    else:
        np.save(path, events)


def test_folder_of_recordings_in_three_formats(tmp_path, rng):
    recordings = []
    for label, name in enumerate(["left", "right"]):
        folder = tmp_path / "data" / name
        folder.mkdir(parents=True)
        for k, suffix in enumerate([".npy", ".npz", ".bin", ".npy", ".npz"]):
            events = _events(rng, 50, 20, 12)
            _write_recording(folder / f"r{k}{suffix}", events)
            recordings.append((label, events))
    dataset = load_dataset("folder", _options(tmp_path))
    assert dataset.meta["classes"] == ["left", "right"] and dataset.sample_shape[0] == 2
    assert len(dataset.train) == 8 and len(dataset.test) == 2 and sorted(dataset.test.labels) == [0, 1]
    width = max(int(e["x"].max()) for _, e in recordings) + 1
    height = max(int(e["y"].max()) for _, e in recordings) + 1
    assert dataset.sample_shape == (2, height, width)
    (tmp_path / "data" / "sensor.txt").write_text("24 16\n")
    assert load_dataset("folder", _options(tmp_path)).sample_shape == (2, 16, 24)


def test_folder_with_train_and_test_folders_frames_like_tonic(tmp_path, rng):
    written = {}
    for split in ("train", "test"):
        for name in ("a", "b"):
            folder = tmp_path / "data" / split / name
            folder.mkdir(parents=True)
            events = _events(rng, 40, 8, 8)
            np.save(folder / "r.npy", np.stack([events[c] for c in ("x", "y", "t", "p")], axis=1))  # [N, 4]
            written.setdefault(split, []).append(events)
    (tmp_path / "data" / "sensor.txt").write_text("8 8")
    dataset = load_dataset("folder", _options(tmp_path, slicing="time"))
    _assert_frames(dataset.train, written["train"], (8, 8, 2), 4, "time")
    result = run(["data", "show", "--dataset", "folder", "--data-dir", str(tmp_path / "data"), "--cache-dir",
                  str(tmp_path / "cache"), "--time-steps", "4", "--out", str(tmp_path / "s.png")])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("size,shape", [(20, (10, 20)), (39, (20, 39)), (40, (20, 40)), (10, (5, 10)), (7, (4, 7))])
def test_downsampling_a_non_square_sensor_keeps_its_aspect(tmp_path, rng, size, shape):
    """One factor for both axes, the longer side to --downsample (it squashed or stretched)."""
    written = []
    for split in ("train", "test"):
        for name in ("a", "b"):
            (tmp_path / "data" / split / name).mkdir(parents=True)
            events = _events(rng, 300, 40, 20)
            np.save(tmp_path / "data" / split / name / "r.npy", np.stack([events[c] for c in "xytp"], axis=1))
            written.append(events)
    (tmp_path / "data" / "sensor.txt").write_text("40 20")
    dataset = load_dataset("folder", _options(tmp_path, downsample=size))
    assert dataset.sample_shape == (2, *shape)
    factor = size / 40
    scaled = []
    for events in written[:2]:
        events = events.copy()
        events["x"] = np.floor(events["x"] * factor)
        events["y"] = np.floor(events["y"] * factor)
        scaled.append(events)
    _assert_frames(dataset.train, scaled, (shape[1], shape[0], 2), 4)


@pytest.mark.parametrize("make,fragment", [
    (lambda d: None, "no class subfolders"),
    (lambda d: (d / "a").mkdir(), "a: no recordings (.npy, .npz, .bin)"),
    (lambda d: (d / "a" / "d.npy").mkdir(parents=True), "d.npy: is a folder, not a recording; remove or rename it"),
    (lambda d: ((d / "a").mkdir(), np.save(d / "a" / "r.npy", np.zeros((3, 5)))),
     "expected a structured array with fields x, y, t, p or an [N, 4] array"),
    (lambda d: ((d / "a").mkdir(), np.savez(d / "a" / "r.npz", x=[1], y=[1], t=[1])), "no array 'p'"),
    (lambda d: ((d / "a").mkdir(), np.save(d / "a" / "r.npy", np.array([[1, 1, 5, 2]]))),
     "a polarity other than 0 or 1"),
    (lambda d: ((d / "train" / "a").mkdir(parents=True), np.save(d / "train" / "a" / "r.npy", np.zeros((3, 4)))),
     "data: a train folder but no test folder; give both"),
    (lambda d: [(d / f / "a").mkdir(parents=True) for f in ("train", "test", "extra")],
     "data: folders extra beside train and test would be left out; move their recordings into train/<class>/"),
    (lambda d: ((d / "a").mkdir(), np.save(d / "a" / "r.npy", np.array([[1, 1, 5, 0], [1, -2, 6, 1]]))),
     "r.npy: event 1 has a negative coordinate (1 such events); the recording is corrupt: fix that event, or "
     "replace the file with a good copy"),
])
def test_folder_errors_are_one_line_naming_the_file(tmp_path, make, fragment):
    (tmp_path / "data").mkdir()
    make(tmp_path / "data")
    if (tmp_path / "data" / "a").is_dir():  # a good second class: one class alone is refused for that first
        _classes(tmp_path / "data", {"b": 3})
    line = one_line_error(run(["data", "info", "--dataset", "folder", "--data-dir", str(tmp_path / "data"),
                               "--cache-dir", str(tmp_path / "cache")]))
    assert fragment in line


def _folder(tmp_path, outlier=None, sensor_txt=None):
    """Two classes of two [N, 4] recordings on a 20 x 20 sensor; ``outlier`` (x, y) replaces
    event 3 of a/r0.npy; ``sensor_txt`` (bytes) is written as DIR/sensor.txt."""
    rng = np.random.default_rng(5)
    for name in ("a", "b"):
        (tmp_path / "data" / name).mkdir(parents=True)
        for k in range(2):
            events = _events(rng, 30, 20, 20)
            rows = np.stack([events[c] for c in ("x", "y", "t", "p")], axis=1)
            if outlier is not None and (name, k) == ("a", 0):
                rows[3, :2] = outlier
            np.save(tmp_path / "data" / name / f"r{k}.npy", rows)
    if sensor_txt is not None:
        (tmp_path / "data" / "sensor.txt").write_bytes(sensor_txt)
    return _folder_info(tmp_path)


def _folder_info(tmp_path):
    return run(["data", "info", "--dataset", "folder", "--data-dir", str(tmp_path / "data"), "--cache-dir",
                str(tmp_path / "cache"), "--time-steps", "4"])


@pytest.mark.parametrize("outlier", [(30_000, 5), (10_000_000, 5), (30_000, 30_000), (5, 4096)])
def test_an_event_beyond_any_camera_is_refused_before_framing(tmp_path, outlier):
    line = one_line_error(_folder(tmp_path, outlier))
    path = tmp_path / "data" / "a" / "r0.npy"
    assert line == (f"Error: {path}: event 3 at x={outlier[0]}, y={outlier[1]} lies outside the 4096x4096 sensor "
                    "(1 such events); no event camera is larger: the recording is corrupt; fix that event, or "
                    "replace the file with a good copy")
    assert not (tmp_path / "cache" / "frames").exists()


@pytest.mark.parametrize("remembered", ['{"sensor": [30001, 20, 2]}', '{"sensor": ["a", 3, 2]}', "[]"])
def test_a_remembered_sensor_beyond_any_camera_is_inferred_again(tmp_path, remembered):
    from evsim.data.tonic_sets import find_folder, remembered_sensor_path

    _folder(tmp_path, (30_000, 5))
    path = remembered_sensor_path(find_folder(_options(tmp_path))[0], _options(tmp_path))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(remembered)  # as an evsim without the limit, or a damaged cache, left it
    assert "event 3 at x=30000, y=5 lies outside the 4096x4096 sensor" in one_line_error(_folder_info(tmp_path))


def test_a_sensor_file_written_after_framing_frames_again(tmp_path):
    assert _folder(tmp_path).exit_code == 0  # framed with the inferred sensor, and cached
    (tmp_path / "data" / "sensor.txt").write_text("24 20")
    dataset = load_dataset("folder", _options(tmp_path))
    assert dataset.sample_shape == (2, 20, 24) and dataset.train.inputs.to_dense().shape[-2:] == (20, 24)
    (tmp_path / "data" / "sensor.txt").write_text("5 5")
    assert "lies outside the 5x5 sensor" in one_line_error(_folder_info(tmp_path))


def test_an_event_outside_the_declared_sensor_is_refused(tmp_path):
    line = one_line_error(_folder(tmp_path, (30, 2), b"24 20\n"))
    assert line == (f"Error: {tmp_path / 'data' / 'a' / 'r0.npy'}: event 3 at x=30, y=2 lies outside the 24x20 sensor "
                    "(1 such events); fix that event, or declare a sensor that holds it in sensor.txt")
    assert _folder(tmp_path / "inside", (4095, 2), b"4096 20").exit_code == 0


@pytest.mark.parametrize("text", [b"5000 16", b"0 16", b"20 20 2", b"\xc2\xb2 16", b"20 \xff"])
def test_a_sensor_file_that_is_no_possible_sensor_is_refused(tmp_path, text):
    line = one_line_error(_folder(tmp_path, sensor_txt=text))
    assert line.startswith(f"Error: {tmp_path / 'data' / 'sensor.txt'}: "), line
    assert "two integers 1..4096 (no event camera is larger)" in line or "write the sensor's WIDTH HEIGHT" in line


def test_folder_without_data_dir_and_emulated_source(tmp_path):
    assert "--dataset folder needs its files in --data-dir DIR" in one_line_error(
        run(["data", "info", "--dataset", "folder"]))
    assert "there is no emulated folder" in one_line_error(
        run(["data", "info", "--dataset", "folder", "--source", "emulated", "--data-dir", str(tmp_path)]))


def test_read_recording_sorts_by_time(tmp_path):
    events = np.zeros(3, dtype=EVENTS_DTYPE)
    events["t"] = [30, 10, 20]
    events["x"] = [3, 1, 2]
    np.save(tmp_path / "r.npy", events)
    assert read_recording(tmp_path / "r.npy")["x"].tolist() == [1, 2, 3]


def test_data_show_draws_shd_as_channels_by_frames(tmp_path, rng):
    root = tmp_path / "data" / "SHD"
    root.mkdir(parents=True)
    _write_shd(root / "shd_train.h5", rng, 2)
    _write_shd(root / "shd_test.h5", rng, 1)
    out = tmp_path / "shd.png"
    result = run(["data", "show", "--dataset", "shd", "--data-dir", str(tmp_path / "data"), "--cache-dir",
                  str(tmp_path / "cache"), "--time-steps", "8", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(b"\x89PNG")


def test_folder_says_which_recordings_became_blank_frames(tmp_path, rng):
    """As N-MNIST and DVS-Gesture do: a recording of one instant frames to nothing under
    time slicing."""
    for label in ("a", "b"):
        folder = tmp_path / "data" / label
        folder.mkdir(parents=True)
        for k in range(6):
            events = _events(rng, 50, 8, 8)
            if k == 0:
                events["t"] = 5
            _write_recording(folder / f"r{k}.npz", events)
    dataset = load_dataset("folder", _options(tmp_path, slicing="time"))
    blank = sum(int(np.all(split.inputs.to_dense() == 0, axis=(1, 2, 3, 4)).sum())
                for split in (dataset.train, dataset.test))
    assert blank == 2
    assert "recordings became blank frames" in dataset.meta["notice"]
    assert load_dataset("folder", _options(tmp_path)).meta["notice"] is None  # event slicing keeps them


@pytest.mark.parametrize("time_steps", [1, 3, 4, 7])
def test_framing_keeps_tonic_bin_edges_as_the_readme_says(time_steps):
    """By event number the N mod T last events fill no bin; by time the bins end before
    the last timestamp, so the events there (two here) are dropped."""
    events = np.zeros(12, dtype=EVENTS_DTYPE)
    events["t"] = [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 100]
    events["x"] = np.arange(12) % 4
    by_count = to_frames(events, (4, 1, 2), time_steps, "events")
    assert by_count.shape == (time_steps, 2, 1, 4) and by_count.sum() == 12 - 12 % time_steps
    assert by_count.sum(axis=(1, 2, 3)).tolist() == [12 // time_steps] * time_steps
    by_time = to_frames(events, (4, 1, 2), time_steps, "time")
    assert by_time.sum() == 10


def _classes(root, counts: dict) -> None:
    """``root/<class>/r<k>.npy`` recordings, ``counts[class]`` of them (eight events each)."""
    for name, n in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for k in range(n):
            np.save(root / name / f"r{k}.npy", np.array([[e % 3, e % 2, 5 + e + k, e % 2] for e in range(8)]))


@pytest.mark.parametrize("layout,fragment", [
    ({"only": 5}, "data: one class folder (only); a classifier needs at least 2 classes"),
    ({"train/a": 3, "train/b": 3, "test/a": 1, "test/c": 1},
     "data/train: no training recordings of class c, which "),
    ({"a": 1, "b": 1}, "data: too few recordings for a test split (2; 20% of each class is held out"),
])
def test_a_folder_whose_classes_cannot_train_and_test_is_refused(tmp_path, layout, fragment):
    """One class (every prediction right), a test class never trained on (a third of the
    test set at chance), no test split at all: each one line, before framing."""
    _classes(tmp_path / "data", layout)
    line = one_line_error(_folder_info(tmp_path))
    assert fragment in line
    assert not (tmp_path / "cache" / "frames").exists()


def test_a_class_without_test_recordings_is_named_in_a_notice(tmp_path):
    _classes(tmp_path / "data", {"train/a": 2, "train/b": 2, "test/a": 1})
    result = _folder_info(tmp_path)
    assert result.exit_code == 0, result.output
    assert "class b has no test recordings: test accuracy leaves it out" in result.output
    _classes(tmp_path / "flat", {"a": 4, "b": 1})  # a class of one keeps it for training
    result = run(["data", "info", "--dataset", "folder", "--data-dir", str(tmp_path / "flat"), "--cache-dir",
                  str(tmp_path / "cache"), "--time-steps", "4"])
    assert result.exit_code == 0 and "class b has no test recordings" in result.output, result.output


@pytest.mark.parametrize("header,fragment", [
    (b"#!AER-DAT3.1\r\n", "an AEDAT 3.1 file, not AEDAT 2.0 (CIFAR10-DVS's format); replace it with the original"),
    (b"#!AER-DAT4.0\r\n", "an AEDAT 4.0 file, not AEDAT 2.0 (CIFAR10-DVS's format); replace it with the original "
                          "recording, or name an AEDAT 4 file .aedat4"),
])
def test_an_aedat_file_of_another_version_is_refused_not_decoded_as_2_0(tmp_path, rng, header, fragment):
    """Its packets, 8 bytes a multiple, would read as 2.0 words: garbage events."""
    body = encode_aedat2(_events(rng, 20, 128, 128)).split(b"\n", 2)[2]  # whole 8-byte words
    path = tmp_path / "r.aedat"
    path.write_bytes(header + body)
    with pytest.raises(DataError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        read_aedat2(path)


def test_shd_hashes_its_file_once_however_many_samples_it_holds(tmp_path, rng, monkeypatch):
    """A fingerprint of SHD's samples read the whole HDF5 file once per sample."""
    import evsim.data.cache as cache
    from evsim.data.tonic_sets import find_shd

    root = tmp_path / "data" / "SHD"
    root.mkdir(parents=True)
    _write_shd(root / "shd_train.h5", rng, 6)
    _write_shd(root / "shd_test.h5", rng, 3)
    reads = []
    hash_file = cache._hash_file
    monkeypatch.setattr(cache, "_hash_file", lambda *args, **kw: reads.append(kw.get("contents", True))
                        or hash_file(*args, **kw))
    found = find_shd(_options(tmp_path))
    fingerprint = cache.files_fingerprint(*found.splits["train"])
    assert reads.count(True) == 1 and len(reads) == 6
    assert fingerprint["files"] == 6 and fingerprint["bytes"] == (root / "shd_train.h5").stat().st_size


@pytest.mark.parametrize("damage", ["fifo", [100, 50, 2], [8, 8, 2]])
def test_a_damaged_remembered_sensor_is_inferred_again(tmp_path, rng, damage):
    """A FIFO there made every load wait forever; an edited larger size framed a wrong
    sensor, a smaller one blamed a good recording."""
    import json
    import os
    import shutil

    from evsim.data.tonic_sets import find_folder, remembered_sensor_path

    for name in ("a", "b"):
        (tmp_path / "data" / name).mkdir(parents=True)
        for k in range(3):
            events = _events(rng, 40, 12, 10)
            np.save(tmp_path / "data" / name / f"r{k}.npy", np.stack([events[c] for c in "xytp"], axis=1))
    first = load_dataset("folder", _options(tmp_path))
    found, _ = find_folder(_options(tmp_path))
    remembered = remembered_sensor_path(found, _options(tmp_path))
    stored = json.loads(remembered.read_text())
    if damage == "fifo":
        remembered.unlink()
        os.mkfifo(remembered)
    else:
        remembered.write_text(json.dumps(dict(stored, sensor=damage)))
    shutil.rmtree(tmp_path / "cache" / "frames")
    again = load_dataset("folder", _options(tmp_path))
    assert again.sample_shape == first.sample_shape
    assert json.loads(remembered.read_text()) == stored
