"""DVS-Gesture from a tiny recording set written in tonic's layout."""
from pathlib import Path

import numpy as np
import pytest
import tonic

from evsim.data import DataOptions, load_dataset
from evsim.data import dvsgesture
from evsim.errors import ConfigError, DataError


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("EVSIM_OFFLINE", "1")
    monkeypatch.delenv("EVSIM_DATA", raising=False)
    monkeypatch.setenv("EVSIM_CACHE", str(tmp_path / "default-cache"))


def recording(rng, n=3000, duration_ms=1500):
    """``[N, 4]`` rows ``x, y, p, t(ms)`` as tonic's DVSGesture ``.npy`` files hold them."""
    rows = np.zeros((n, 4), dtype=np.float64)
    rows[:, 0] = rng.integers(0, 128, n)
    rows[:, 1] = rng.integers(0, 128, n)
    rows[:, 2] = rng.integers(0, 2, n)
    rows[:, 3] = np.sort(rng.integers(0, duration_ms, n))
    return rows


def make_gestures(data_dir: Path) -> Path:
    root = data_dir / "DVSGesture"
    rng = np.random.default_rng(11)
    layout = {"ibmGestureTrain": {"user01_fluorescent": [0, 3], "user02_led": [10]},
              "ibmGestureTest": {"user24_natural": [1, 7]}}
    for split, users in layout.items():
        for user, labels in users.items():
            (root / split / user).mkdir(parents=True)
            for label in labels:
                np.save(root / split / user / f"{label}.npy", recording(rng))
    return root


def opts(tmp_path, **kw):
    kw.setdefault("cache_dir", tmp_path / "cache")
    kw.setdefault("time_steps", 8)
    return DataOptions(data_dir=tmp_path / "data", **kw)


def test_tonic_layout_frames_with_downsampling(tmp_path):
    root = make_gestures(tmp_path / "data")
    ds = load_dataset("dvsgesture", opts(tmp_path, downsample=32))
    assert ds.source == "real" and ds.n_classes == 11 and ds.encoding == "frames"
    assert ds.train.inputs.shape == (3, 8, 2, 32, 32) and ds.sample_shape == (2, 32, 32)
    assert sorted(ds.train.labels.tolist()) == [0, 3, 10] and sorted(ds.test.labels.tolist()) == [1, 7]
    assert ds.meta["sensor_size"] == [128, 128, 2] and ds.meta["frame_size"] == [32, 32]
    # the first train file through tonic's own reader and transforms gives the same frames
    first = sorted((root / "ibmGestureTrain").glob("*/*.npy"))[0]  # the loader sorts by path
    index = 0
    listing = dvsgesture._local_dvsgesture(tmp_path / "data", train=True)
    events = listing[[str(p) for p in listing.data].index(str(first))][0]
    small = tonic.transforms.Downsample(sensor_size=(128, 128, 2), target_size=(32, 32))(events)
    expected = tonic.transforms.ToFrame(sensor_size=(32, 32, 2), n_event_bins=8)(small)
    np.testing.assert_array_equal(ds.train.inputs[index], expected)
    assert int(ds.train.inputs[index].sum()) == 3000 // 8 * 8


def test_recordings_keep_sub_millisecond_times(tmp_path):
    """The files hold ms as floats: converted to us before the cast to integers, as tonic does."""
    rows = recording(np.random.default_rng(0), n=4)
    rows[:, 3] = [0.0, 0.25, 1.5, 2.0625]
    np.save(tmp_path / "r.npy", rows)
    assert dvsgesture.read_gesture_npy(tmp_path / "r.npy")["t"].tolist() == [0, 250, 1500, 2062]


def test_native_resolution_and_time_bins(tmp_path):
    make_gestures(tmp_path / "data")
    ds = load_dataset("dvsgesture", opts(tmp_path, time_steps=4, slicing="time"))
    assert ds.train.inputs.shape == (3, 4, 2, 128, 128)
    stats = ds.meta["event_stats"]["train"]
    assert stats["events_per_sample"] == 3000 and 1400 < stats["duration_ms"] < 1500


def test_bare_split_folders_also_work(tmp_path):
    make_gestures(tmp_path / "data")
    ds = load_dataset("dvsgesture", DataOptions(data_dir=tmp_path / "data" / "DVSGesture",
                                                cache_dir=tmp_path / "cache", time_steps=2))
    assert len(ds.train) == 3 and len(ds.test) == 2


def test_absent_data_says_where_to_put_it(tmp_path):
    with pytest.raises(DataError, match="DVS-Gesture not found in .*DVSGesture/ibmGestureTrain/user01_fluorescent"):
        load_dataset("dvsgesture", opts(tmp_path))


def test_no_emulated_gestures(tmp_path):
    with pytest.raises(ConfigError, match="there is no emulated DVS-Gesture"):
        load_dataset("dvsgesture", opts(tmp_path, source="emulated"))


@pytest.mark.parametrize("kw,match", [
    ({"crop": True}, r"--crop applies to nmnist only, not dvsgesture; leave --crop unset \(it is the N-MNIST 34 -> 32"),
    ({"downsample": 200}, "downsample must be 0 .native. or 1..128"),
    ({"encoding": "rate"}, "encoding 'rate' does not apply"),
    ({"denoise_us": -1}, "denoise_us must be >= 0"),
])
def test_options_that_do_not_apply(tmp_path, kw, match):
    with pytest.raises(ConfigError, match=match):
        load_dataset("dvsgesture", opts(tmp_path, **kw))


def test_missing_test_split(tmp_path):
    root = make_gestures(tmp_path / "data")
    for f in (root / "ibmGestureTest").glob("*/*.npy"):
        f.unlink()
    for d in (root / "ibmGestureTest").iterdir():
        d.rmdir()
    (root / "ibmGestureTest").rmdir()
    with pytest.raises(DataError, match="has no ibmGestureTest folder"):
        load_dataset("dvsgesture", opts(tmp_path))


def test_split_without_user_folders(tmp_path):
    root = make_gestures(tmp_path / "data")
    for f in (root / "ibmGestureTest").glob("*/*.npy"):
        f.unlink()
    (root / "ibmGestureTest" / "user24_natural").rmdir()
    with pytest.raises(DataError, match=r"ibmGestureTest: no user<NN>_<lighting> subfolders"):
        load_dataset("dvsgesture", opts(tmp_path))


def test_badly_named_folder_and_file(tmp_path):
    root = make_gestures(tmp_path / "data")
    (root / "ibmGestureTrain" / "someone").mkdir()
    with pytest.raises(DataError, match="someone: folder name must look like user01_fluorescent"):
        load_dataset("dvsgesture", opts(tmp_path))
    (root / "ibmGestureTrain" / "someone").rmdir()
    user = root / "ibmGestureTrain" / "user02_led"
    # what tonic would read (every name ending in npy, in subfolders too) with a label it cannot have
    for bad in (user / "11.npy", user / "sub" / "9.npy", user / "5npy"):
        bad.parent.mkdir(exist_ok=True)
        np.save(bad, recording(np.random.default_rng(0)))
        if bad.suffix != ".npy":  # np.save appended .npy
            bad.with_name(bad.name + ".npy").rename(bad)
        with pytest.raises(DataError, match=rf"{bad.name}: tonic reads every file ending in npy below .* DVS-Gesture's "
                                            r"are <label>\.npy \(label 0..10\) directly in a user folder"):
            load_dataset("dvsgesture", opts(tmp_path))
        bad.unlink()


@pytest.mark.parametrize("content,match", [
    (np.zeros((5, 3)), r"expected an \[N, 4\] numeric array"),
    (np.zeros((0, 4)), "recording holds no events"),
    (np.array([[130.0, 5.0, 1.0, 3.0]]), "event 0 at x=130, y=5 lies outside the 128x128 sensor"),
    (None, "not a readable .npy file"),
])
def test_bad_recordings_fail_clearly_and_leave_no_cache(tmp_path, content, match):
    root = make_gestures(tmp_path / "data")
    path = root / "ibmGestureTest" / "user24_natural" / "7.npy"
    if content is None:
        path.write_bytes(b"\x93NUMPY garbage")
    else:
        np.save(path, content)
    with pytest.raises(DataError, match=f"7.npy: {match}"):
        load_dataset("dvsgesture", opts(tmp_path))
    frames = tmp_path / "cache" / "frames"
    assert not frames.exists() or list(frames.iterdir()) == []


def test_sample_events(tmp_path):
    make_gestures(tmp_path / "data")
    events, label, sensor, path = dvsgesture.sample_events(opts(tmp_path), "test", 0)
    assert sensor == (128, 128, 2) and label in (1, 7) and len(events) == 3000
    assert events["t"].max() >= 100_000  # the files hold ms; tonic's reader gives us


# ---------------------------------------------------------------- mutation audit

@pytest.mark.parametrize("row,match", [
    ([3.0, 4.0, 2.0, 10.0], r"event 1 has a polarity other than 0 or 1 \(1 such events\)"),
    ([3.0, 4.0, -1.0, 10.0], "event 1 has a polarity other than 0 or 1"),
    ([3.5, 4.0, 1.0, 10.0], "event 1 has a fractional coordinate"),
    ([3.0, 127.25, 1.0, 10.0], "event 1 has a fractional coordinate"),
    ([np.nan, 4.0, 1.0, 10.0], "event 1 has a NaN or infinite value"),
    ([3.0, 4.0, 1.0, np.inf], "event 1 has a NaN or infinite value"),
    ([128.0, 4.0, 1.0, 10.0], "event 1 at x=128, y=4 lies outside the 128x128 sensor"),
    ([3.0, 128.0, 1.0, 10.0], "event 1 at x=3, y=128 lies outside the 128x128 sensor"),
])
def test_each_bad_event_is_named(tmp_path, row, match):
    rows = np.array([[127.0, 127.0, 0.0, 5.0], row, [0.0, 0.0, 1.0, 20.0]])
    np.save(tmp_path / "r.npy", rows)
    with pytest.raises(DataError, match=r"r\.npy: " + match):
        dvsgesture.read_gesture_npy(tmp_path / "r.npy")


def test_a_good_recording_reads_field_by_field(tmp_path):
    rows = np.array([[127.0, 0.0, 0.0, 5.0], [3.0, 4.0, 1.0, 10.5]])
    np.save(tmp_path / "r.npy", rows)
    events = dvsgesture.read_gesture_npy(tmp_path / "r.npy")
    assert events["x"].tolist() == [127, 3] and events["y"].tolist() == [0, 4]
    assert events["p"].tolist() == [0, 1] and events["t"].tolist() == [5000, 10500]


@pytest.mark.parametrize("size", [1, 128])
def test_downsample_limits_are_accepted(tmp_path, size):
    make_gestures(tmp_path / "data")
    ds = load_dataset("dvsgesture", opts(tmp_path, time_steps=1, downsample=size))
    assert ds.sample_shape == (2, size, size) and ds.train.inputs.shape == (3, 1, 2, size, size)
    assert int(ds.train.inputs[0].sum()) == 3000


def test_negative_downsample_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="downsample must be 0 .native. or 1..128, got -1"):
        load_dataset("dvsgesture", opts(tmp_path, downsample=-1))


def test_cache_is_keyed_by_downsampling(tmp_path):
    make_gestures(tmp_path / "data")
    native = load_dataset("dvsgesture", opts(tmp_path, time_steps=2))
    small = load_dataset("dvsgesture", opts(tmp_path, time_steps=2, downsample=16))
    assert native.meta["cache"] != small.meta["cache"]
    assert native.train.inputs.shape == (3, 2, 2, 128, 128) and small.train.inputs.shape == (3, 2, 2, 16, 16)
    assert small.train.inputs.to_dense().shape == (3, 2, 2, 16, 16)


def test_duration_is_last_minus_first_timestamp(tmp_path):
    make_gestures(tmp_path / "data")
    for f in (tmp_path / "data" / "DVSGesture").glob("*/*/*.npy"):
        rows = np.load(f)
        rows[:, 3] += 1000.0  # every recording starts 1 s late
        np.save(f, rows)
    ds = load_dataset("dvsgesture", opts(tmp_path, time_steps=2))
    files = sorted((tmp_path / "data" / "DVSGesture" / "ibmGestureTrain").glob("*/*.npy"))
    spans = [np.load(f)[:, 3].max() - np.load(f)[:, 3].min() for f in files]
    ons = sum(int(np.load(f)[:, 2].sum()) for f in files)
    stats = ds.meta["event_stats"]["train"]
    assert stats["duration_ms"] == pytest.approx(np.mean(spans))
    assert stats["on_fraction"] == pytest.approx(ons / 9000)


def test_values_that_int64_cannot_hold_and_damaged_headers_are_one_error_without_warnings(tmp_path, recwarn):
    """Found by tests/test_fuzz_readers.py: a finite time of 1e300 ms was cast to int64 as
    -2^63 with NumPy's RuntimeWarning, and a header string holding '\\9' printed the
    compiler's DeprecationWarning before the error."""
    import io

    from evsim.data.tonic_sets import read_recording

    np.save(tmp_path / "big.npy", np.array([[1, 2, 0, 1e300]]))
    with pytest.raises(DataError, match=r"event 0 has a time beyond int64 microseconds"):
        dvsgesture.read_gesture_npy(tmp_path / "big.npy")
    events = np.zeros(1, dtype=[("x", "f8"), ("y", "f8"), ("t", "f8"), ("p", "f8")])
    events["t"] = 2.0 ** 64
    np.save(tmp_path / "folder.npy", events)
    with pytest.raises(DataError, match=r"event 0 has a coordinate or time beyond int64"):
        read_recording(tmp_path / "folder.npy")
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((3, 4), np.float32))
    (tmp_path / "esc.npy").write_bytes(buffer.getvalue().replace(b"'<f4'", b"'\\9f4"))
    with pytest.raises(DataError, match=r"esc.npy: not a readable .npy file"):
        dvsgesture.read_gesture_npy(tmp_path / "esc.npy")
    assert not [w for w in recwarn.list if issubclass(w.category, (DeprecationWarning, SyntaxWarning, RuntimeWarning))]


def test_a_recording_out_of_time_order_is_read_in_time_order(tmp_path):
    """As the other readers give events: tonic's framing assumes time order."""
    rows = recording(np.random.default_rng(4), n=400)
    np.save(tmp_path / "sorted.npy", rows)
    np.save(tmp_path / "reversed.npy", rows[::-1])
    ordered = dvsgesture.read_gesture_npy(tmp_path / "sorted.npy")
    again = dvsgesture.read_gesture_npy(tmp_path / "reversed.npy")
    np.testing.assert_array_equal(np.sort(again["t"]), again["t"])
    np.testing.assert_array_equal(np.sort(again, order=["t", "x", "y", "p"]), np.sort(ordered, order=["t", "x", "y", "p"]))
