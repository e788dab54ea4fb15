"""N-MNIST loading: real files in both layouts, framing, cache, fallback, bad data.

Every data folder here is written by the tests in the real 40-bit format (plus the
real recording ``../shared/data/sample_nmnist.bin``); nothing touches the network.
"""
import errno
import functools
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import tonic
from click.testing import CliRunner

from evsim.cli.main import main
from evsim.data import DataOptions, load_dataset
from evsim.data import emulate, nmnist
from evsim.data.emulate import MANIFEST, write_emulated_nmnist
from evsim.data.events import encode_nmnist_bin, read_nmnist_bin, to_frames
from evsim.data.frames import SparseFrameWriter, SparseFrames
from evsim.errors import ConfigError, DataError

SAMPLE = Path(__file__).parents[2] / "shared" / "data" / "sample_nmnist.bin"
needs_sample = pytest.mark.skipif(not SAMPLE.is_file(), reason=f"real N-MNIST recording not found at {SAMPLE}")


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No network, no user data folder, no user cache."""
    monkeypatch.setenv("EVSIM_OFFLINE", "1")
    monkeypatch.delenv("EVSIM_DATA", raising=False)
    monkeypatch.setenv("EVSIM_CACHE", str(tmp_path / "default-cache"))


def synthetic_events(rng, n, width=34, height=34, duration_us=300_000):
    events = np.zeros(n, dtype=tonic.datasets.NMNIST.dtype)
    events["x"] = rng.integers(0, width, n)
    events["y"] = rng.integers(0, height, n)
    events["t"] = np.sort(rng.integers(0, duration_us, n))
    events["p"] = rng.integers(0, 2, n)
    return events


def make_plain(root: Path, per_class=1, classes=(0, 1), real_first=True) -> Path:
    """``root/Train/<d>/*.bin`` and ``root/Test/<d>/*.bin``; the first file is the real sample."""
    rng = np.random.default_rng(7)
    for folder in ("Train", "Test"):
        for digit in classes:
            (root / folder / str(digit)).mkdir(parents=True, exist_ok=True)
            for k in range(per_class):
                path = root / folder / str(digit) / f"{k:05d}.bin"
                if real_first and SAMPLE.is_file() and folder == "Train" and digit == classes[0] and k == 0:
                    shutil.copy(SAMPLE, path)
                else:
                    path.write_bytes(encode_nmnist_bin(synthetic_events(rng, 500 + 37 * k + digit)))
    return root


def opts(tmp_path, **kw):
    kw.setdefault("cache_dir", tmp_path / "cache")
    kw.setdefault("download", False)
    return DataOptions(**kw)


def cache_entries(tmp_path):
    frames = tmp_path / "cache" / "frames"
    return sorted(p.name for p in frames.iterdir()) if frames.is_dir() else []


# ---------------------------------------------------------------- real recording

@needs_sample
def test_real_sample_matches_its_documentation():
    events = read_nmnist_bin(SAMPLE)
    assert len(events) == 4325
    assert int(events["p"].sum()) == 2145 and int((events["p"] == 0).sum()) == 2180
    assert 310_000 < events["t"].max() < 312_000
    assert events["x"].max() <= 33 and events["y"].max() <= 33


@needs_sample
def test_encoder_round_trips_the_real_file_byte_for_byte():
    events = read_nmnist_bin(SAMPLE)
    assert encode_nmnist_bin(events) == SAMPLE.read_bytes()


def test_encoder_rejects_what_the_format_cannot_hold():
    events = synthetic_events(np.random.default_rng(0), 5)
    events["y"][2] = 240
    with pytest.raises(ConfigError, match="coordinates"):
        encode_nmnist_bin(events)
    events = synthetic_events(np.random.default_rng(0), 5)
    events["t"][-1] = 2**23
    with pytest.raises(ConfigError, match="timestamps"):
        encode_nmnist_bin(events)


# ---------------------------------------------------------------- loading and framing

@needs_sample
def test_plain_layout_loads_as_real_frames(tmp_path):
    root = make_plain(tmp_path / "data")
    ds = load_dataset("nmnist", opts(tmp_path, data_dir=root))
    assert ds.source == "real" and ds.meta["notice"] is None
    assert ds.encoding == "frames" and ds.time_steps == 20 and ds.sample_shape == (2, 34, 34)
    assert ds.train.inputs.shape == (2, 20, 2, 34, 34) and ds.train.inputs.dtype == np.uint8
    assert ds.train.labels.tolist() == [0, 1] and ds.test.labels.tolist() == [0, 1]
    assert ds.meta["sensor_size"] == [34, 34, 2] and ds.meta["layout"] == "plain"
    # frame 0 is the real sample framed by tonic itself; equal-event bins of 4325 // 20 events
    real = read_nmnist_bin(SAMPLE)
    expected = tonic.transforms.ToFrame(sensor_size=(34, 34, 2), n_event_bins=20)(real)
    np.testing.assert_array_equal(ds.train.inputs[0], expected)
    assert int(ds.train.inputs[0].sum()) == 4325 // 20 * 20
    assert ds.meta["event_stats"]["train"]["samples"] == 2


def test_tonic_layout_is_listed_by_tonic(tmp_path):
    make_plain(tmp_path / "data" / "NMNIST", real_first=False)
    ds = load_dataset("nmnist", opts(tmp_path, data_dir=tmp_path / "data"))
    assert ds.source == "real" and ds.meta["layout"] == "tonic"
    assert len(ds.train) == 2 and len(ds.test) == 2


def test_stray_subfolders_in_tonic_layout_are_not_classes(tmp_path):
    """tonic labels a file by its folder path's last character: a checkpoint folder
    raised a traceback and ``Train/1/old2/`` became class 2. Both layouts list alike."""
    for layout_root in (tmp_path / "tonic" / "NMNIST", tmp_path / "plain"):
        make_plain(layout_root, real_first=False)
        for stray in ("Train/0/.ipynb_checkpoints", "Train/1/old2"):
            (layout_root / stray).mkdir()
            shutil.copy(layout_root / "Train" / "1" / "00000.bin", layout_root / stray / "x.bin")
    tonic_ds = load_dataset("nmnist", opts(tmp_path, data_dir=tmp_path / "tonic"))
    plain_ds = load_dataset("nmnist", opts(tmp_path, data_dir=tmp_path / "plain"))
    assert tonic_ds.meta["layout"] == "tonic" and plain_ds.meta["layout"] == "plain"
    assert tonic_ds.train.labels.tolist() == plain_ds.train.labels.tolist() == [0, 1]
    np.testing.assert_array_equal(tonic_ds.train.inputs, plain_ds.train.inputs)


def test_recordings_out_of_time_order_are_read_and_framed_in_order(tmp_path):
    events = synthetic_events(np.random.default_rng(3), 400)
    (tmp_path / "sorted.bin").write_bytes(encode_nmnist_bin(events))
    (tmp_path / "reversed.bin").write_bytes(encode_nmnist_bin(events[::-1]))
    read = read_nmnist_bin(tmp_path / "reversed.bin")
    assert np.all(np.diff(read["t"]) >= 0)
    assert np.array_equal(np.sort(read, order=["t", "x", "y", "p"]), np.sort(events, order=["t", "x", "y", "p"]))
    for slicing in ("events", "time"):
        frames = [to_frames(read_nmnist_bin(tmp_path / name), (34, 34, 2), 5, slicing)
                  for name in ("sorted.bin", "reversed.bin")]
        assert frames[0].sum() > 0
        np.testing.assert_array_equal(frames[0].sum(axis=0), frames[1].sum(axis=0))
        if slicing == "time":  # equal time bins do not depend on the order within a timestamp
            np.testing.assert_array_equal(frames[0], frames[1])


def test_timestamp_overflow_records_add_the_23_bit_wrap(tmp_path):
    """A y == 240 record marks the 23-bit counter's wrap; time keeps running forward."""
    events = synthetic_events(np.random.default_rng(4), 4)
    events["t"] = [8_388_000, 8_388_500, 100, 600]
    head, tail = encode_nmnist_bin(events[:2]), encode_nmnist_bin(events[2:])
    (tmp_path / "wrap.bin").write_bytes(head + bytes([0, 240, 0, 0, 0]) + tail)
    read = read_nmnist_bin(tmp_path / "wrap.bin")
    assert read["t"].tolist() == [8_388_000, 8_388_500, 2**23 + 100, 2**23 + 600]
    assert read["x"].tolist() == events["x"].tolist()


def test_time_slicing_and_crop(tmp_path):
    root = make_plain(tmp_path / "data", real_first=False)
    ds = load_dataset("nmnist", opts(tmp_path, data_dir=root, time_steps=5, slicing="time", crop=True))
    assert ds.train.inputs.shape == (2, 5, 2, 32, 32) and ds.sample_shape == (2, 32, 32)
    events = read_nmnist_bin(root / "Train" / "0" / "00000.bin")
    cropped = tonic.transforms.CenterCrop(sensor_size=(34, 34, 2), size=(32, 32))(events)
    expected = tonic.transforms.ToFrame(sensor_size=(32, 32, 2), n_time_bins=5)(cropped)
    np.testing.assert_array_equal(ds.train.inputs[0], expected)


def test_denoise_removes_isolated_events(tmp_path):
    root = make_plain(tmp_path / "data", real_first=False)
    plain = load_dataset("nmnist", opts(tmp_path, data_dir=root, time_steps=1))
    denoised = load_dataset("nmnist", opts(tmp_path, data_dir=root, time_steps=1, denoise_us=1000))
    assert int(denoised.train.inputs.val.sum()) < int(plain.train.inputs.val.sum())


def test_empty_recording_after_framing_gives_zero_frames():
    events = np.zeros(0, dtype=tonic.datasets.NMNIST.dtype)
    assert to_frames(events, (34, 34, 2), 4, "events").shape == (4, 2, 34, 34)


# ---------------------------------------------------------------- cache

def test_cache_is_keyed_by_every_framing_parameter(tmp_path):
    root = make_plain(tmp_path / "data", real_first=False)
    a = load_dataset("nmnist", opts(tmp_path, data_dir=root, time_steps=20))
    b = load_dataset("nmnist", opts(tmp_path, data_dir=root, time_steps=10))
    assert a.train.inputs.shape[1] == 20 and b.train.inputs.shape[1] == 10
    load_dataset("nmnist", opts(tmp_path, data_dir=root, time_steps=10, slicing="time"))
    assert len(cache_entries(tmp_path)) == 3
    again = load_dataset("nmnist", opts(tmp_path, data_dir=root, time_steps=20))
    assert again.meta["cache"] == a.meta["cache"] and len(cache_entries(tmp_path)) == 3
    np.testing.assert_array_equal(again.train.inputs.to_dense(), a.train.inputs.to_dense())


def test_cache_notices_changed_files(tmp_path):
    root = make_plain(tmp_path / "data", real_first=False)
    a = load_dataset("nmnist", opts(tmp_path, data_dir=root))
    extra = synthetic_events(np.random.default_rng(3), 999)
    (root / "Train" / "1" / "00001.bin").write_bytes(encode_nmnist_bin(extra))
    b = load_dataset("nmnist", opts(tmp_path, data_dir=root))
    assert len(b.train) == len(a.train) + 1 and b.meta["cache"] != a.meta["cache"]


def test_frame_writer_keeps_counts_in_the_smallest_type(tmp_path):
    frames = [np.array([[[[3, 0]]], [[[0, 4]]]]), np.array([[[[0, 0]]], [[[0, 0]]]]),
              np.array([[[[300, 1]]], [[[0, 0]]]])]
    for n, dtype in ((1, np.uint8), (3, np.uint16)):
        writer = SparseFrameWriter(tmp_path, f"s{n}", n, 2)
        for f in frames[:n]:
            writer.put(f)
        assert writer.close() == np.dtype(dtype).name
        stored = SparseFrames(*(np.load(tmp_path / f"s{n}_{part}.npy") for part in ("ptr", "idx", "val")), 2, (1, 1, 2))
        assert stored.dtype == dtype and not list(tmp_path.glob("*.raw"))
        np.testing.assert_array_equal(stored.to_dense(), np.stack(frames[:n]))


def test_frame_writer_rejects_a_wrong_frame_count(tmp_path):
    writer = SparseFrameWriter(tmp_path, "x", 1, 3)
    with pytest.raises(DataError, match="expected 3 frames"):
        writer.put(np.zeros((2, 1, 1, 1)))
    with pytest.raises(DataError, match="0 of 1 samples"):
        writer.close()


# ---------------------------------------------------------------- sources and fallback

def small_emulation(monkeypatch):
    """Make the emulated fallback emulate 2 digits per class (the full 5,000 take a minute)."""
    def emulated_dir(cache_dir, seed=0, **kw):
        out = Path(cache_dir) / "nmnist-emulated-test"
        write_emulated_nmnist(out, per_class=2, seed=seed, progress=False)
        return out
    monkeypatch.setattr(nmnist, "emulated_nmnist_dir", emulated_dir)


def test_a_damaged_emulation_cache_is_made_again(tmp_path):
    from evsim.data.emulate import MANIFEST, emulated_nmnist_dir

    out = emulated_nmnist_dir(tmp_path, per_class=1, progress=False)
    files = sorted(p.relative_to(out) for p in out.rglob("*.bin"))
    (out / MANIFEST).write_text("{ truncated")
    (out / "Train" / "0" / "stray.bin").write_bytes(b"x")
    assert emulated_nmnist_dir(tmp_path, per_class=1, progress=False) == out
    assert sorted(p.relative_to(out) for p in out.rglob("*.bin")) == files and len(files) == 20


def own_emulation(monkeypatch):
    """evsim's own emulated cache (emulated_nmnist_dir) at 1 digit per class: 10 + 10 recordings."""
    monkeypatch.setattr(nmnist, "emulated_nmnist_dir",
                        functools.partial(emulate.emulated_nmnist_dir, per_class=1, progress=False))


def damage_recording(path: Path, how: str) -> None:
    raw = path.read_bytes()
    if how == "truncated":
        path.write_bytes(raw[:-2])
    elif how == "outside":
        path.write_bytes(bytes([40]) + raw[1:])  # first event at x = 40 on a 34-pixel sensor
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "missing":
        path.unlink()
    elif how in ("fifo", "folder"):
        path.unlink()
        os.mkfifo(path) if how == "fifo" else path.mkdir()


@pytest.mark.parametrize("how", ["truncated", "outside", "empty", "missing", "fifo", "folder"])
def test_a_damaged_recording_in_the_emulated_cache_is_made_again(tmp_path, monkeypatch, how):
    own_emulation(monkeypatch)
    first = load_dataset("nmnist", opts(tmp_path, source="emulated"))
    root = Path(first.meta["root"])
    assert root.parent == tmp_path / "cache" and first.meta["notice"] == nmnist.find_nmnist(
        opts(tmp_path, source="emulated")).notice
    recording = sorted((root / "Test" / "1").glob("*.bin"))[0]
    original = recording.read_bytes()
    damage_recording(recording, how)

    again = load_dataset("nmnist", opts(tmp_path, source="emulated"))
    notice = again.meta["notice"]
    assert f"evsim's emulated N-MNIST cache {root} was damaged" in notice and "made it again from its seed" in notice
    assert "\n" not in notice and notice.startswith("using EMULATED N-MNIST")
    assert recording.read_bytes() == original and len(list(root.rglob("*.bin"))) == 20
    for split in ("train", "test"):
        a, b = getattr(first, split), getattr(again, split)
        np.testing.assert_array_equal(a.inputs.to_dense(), b.inputs.to_dense())
        np.testing.assert_array_equal(a.labels, b.labels)
    assert "damaged" not in load_dataset("nmnist", opts(tmp_path, source="emulated")).meta["notice"]


def test_data_show_heals_the_emulated_cache_with_a_one_line_notice(tmp_path, monkeypatch):
    own_emulation(monkeypatch)
    common = ["--dataset", "nmnist", "--source", "emulated", "--cache-dir", str(tmp_path / "cache"),
              "--time-steps", "4"]
    assert cli(["data", "info", *common]).exit_code == 0
    recording = sorted((tmp_path / "cache").glob("nmnist-emulated-*/Train/3/*.bin"))[0]
    damage_recording(recording, "truncated")
    result = cli(["data", "show", *common, "--out", str(tmp_path / "x.png")])
    assert result.exit_code == 0, result.output
    notes = [line for line in result.output.splitlines() if line.startswith("NOTICE:")]
    assert len(notes) == 1 and f"{recording}: truncated N-MNIST file" in notes[0] and "made it again" in notes[0]
    assert recording.stat().st_size % 5 == 0 and (tmp_path / "x.png").is_file()


def test_the_emulated_cache_is_made_again_only_once(tmp_path, monkeypatch):
    own_emulation(monkeypatch)
    load_dataset("nmnist", opts(tmp_path, source="emulated"))
    made = []
    real_dir = nmnist.emulated_nmnist_dir
    monkeypatch.setattr(nmnist, "emulated_nmnist_dir", lambda *a, **kw: made.append(1) or real_dir(*a, **kw))

    def always_bad(path):
        raise DataError(f"{path}: truncated N-MNIST file (7 bytes); replace it with a complete copy")

    monkeypatch.setattr(nmnist, "read_nmnist_bin", always_bad)
    with pytest.raises(DataError, match=r"nmnist-emulated-\w+: evsim's emulated N-MNIST cache is damaged \(.*\.bin: "
                                        r"truncated N-MNIST file \(7 bytes\)\) and making it again did not help; "
                                        r"delete that folder and try again$"):
        load_dataset("nmnist", opts(tmp_path, source="emulated", time_steps=3))
    assert len(made) == 2


def test_an_emulated_cache_that_cannot_be_deleted_is_named(tmp_path, monkeypatch):
    own_emulation(monkeypatch)
    first = load_dataset("nmnist", opts(tmp_path, source="emulated"))
    damage_recording(sorted(Path(first.meta["root"]).rglob("*.bin"))[0], "truncated")

    rmtree = shutil.rmtree

    def refuse(path, *args, **kwargs):  # only the emulated folder (not the frame cache's temporary one)
        if Path(path) != Path(first.meta["root"]):
            return rmtree(path, *args, **kwargs)
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(nmnist.shutil, "rmtree", refuse)
    with pytest.raises(DataError, match=r"cache is damaged \(.*truncated N-MNIST file.*\) and cannot be deleted "
                                        r"\(Permission denied\); delete that folder and try again$"):
        load_dataset("nmnist", opts(tmp_path, source="emulated"))


def test_a_damaged_file_in_a_users_emulated_folder_is_an_error(tmp_path):
    root = tmp_path / "emu"  # written by `evsim data emulate-nmnist --out`: the user's folder, never deleted
    write_emulated_nmnist(root, per_class=1, progress=False)
    recording = sorted((root / "Test" / "1").glob("*.bin"))[0]
    damage_recording(recording, "truncated")
    with pytest.raises(DataError, match=r"\.bin: truncated N-MNIST file .*replace it with a complete copy$"):
        load_dataset("nmnist", opts(tmp_path, data_dir=root))
    assert recording.stat().st_size % 5 == 3 and cache_entries(tmp_path) == []


def test_auto_without_data_falls_back_to_emulated_with_a_notice(tmp_path, monkeypatch):
    small_emulation(monkeypatch)
    (tmp_path / "nothing-here").mkdir()
    ds = load_dataset("nmnist", opts(tmp_path, data_dir=tmp_path / "nothing-here"))
    assert ds.source == "emulated"
    assert "EMULATED" in ds.meta["notice"] and "\n" not in ds.meta["notice"]
    assert ds.train.inputs.shape == (20, 20, 2, 34, 34) and len(ds.test) == 20


@pytest.mark.parametrize("dataset,substitute", [("nmnist", "the emulated N-MNIST"),
                                                ("mnist", "the 5,000-digit MNIST sample")])
def test_a_data_folder_that_does_not_exist_is_a_typo_not_a_fall_back(tmp_path, monkeypatch, dataset, substitute):
    missing = tmp_path / "typo"
    with pytest.raises(DataError, match=f"{missing} \\(--data-dir\\) does not exist; give the folder that holds the "
                                        f"data, or leave --data-dir out \\(or use --source emulated\\) to use {substitute}$"):
        load_dataset(dataset, opts(tmp_path, data_dir=missing))
    monkeypatch.setenv("EVSIM_DATA", str(missing))
    with pytest.raises(DataError, match=r"\(\$EVSIM_DATA\) does not exist"):
        load_dataset(dataset, opts(tmp_path))
    missing.write_text("a file")
    with pytest.raises(DataError, match=r"\(\$EVSIM_DATA\) is not a folder; give the folder that holds the data, or "
                                        r"unset \$EVSIM_DATA"):
        load_dataset(dataset, opts(tmp_path))
    # the command line names it too: $EVSIM_DATA was taken for --data-dir before the loader saw it
    for args in (["train", "--dataset", dataset, "--hidden", "8", "--out", str(tmp_path / "r")],
                 ["data", "info", "--dataset", dataset]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2 and f"{missing} ($EVSIM_DATA) is not a folder" in result.output, result.output


def test_forced_emulated_ignores_real_data(tmp_path, monkeypatch):
    small_emulation(monkeypatch)
    root = make_plain(tmp_path / "data", real_first=False)
    ds = load_dataset("nmnist", opts(tmp_path, data_dir=root, source="emulated"))
    assert ds.source == "emulated" and "(source emulated; data_source=emulated)" in ds.meta["notice"]


def test_forced_real_without_data_says_where_to_put_it(tmp_path):
    with pytest.raises(DataError, match=r"real N-MNIST not found in .*nothing.*Train/<digit>/\*\.bin"):
        load_dataset("nmnist", opts(tmp_path, data_dir=tmp_path / "nothing", source="real"))


def test_unknown_source_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="unknown source 'fake'"):
        load_dataset("nmnist", opts(tmp_path, source="fake"))


@pytest.mark.parametrize("kw,match", [
    ({"encoding": "rate"}, "encoding 'rate' does not apply"),
    ({"downsample": 32}, "--downsample applies to dvsgesture, cifar10dvs and folder only"),
    ({"denoise_us": -5}, "denoise_us must be >= 0"),
    ({"time_steps": 0}, "time_steps must be at least 1"),
    ({"slicing": "random"}, "unknown slicing 'random'"),
])
def test_options_that_do_not_apply_are_refused(tmp_path, kw, match):
    with pytest.raises(ConfigError, match=match):
        load_dataset("nmnist", opts(tmp_path, **kw))


def test_sample_events_checks_split_and_index(tmp_path):
    root = make_plain(tmp_path / "data", real_first=False)
    events, label, sensor, path = nmnist.sample_events(opts(tmp_path, data_dir=root), "test", 1)
    assert label == 1 and sensor == (34, 34, 2) and len(events) > 0 and path.endswith(".bin")
    with pytest.raises(ConfigError, match="index 5 out of range"):
        nmnist.sample_events(opts(tmp_path, data_dir=root), "test", 5)
    with pytest.raises(ConfigError, match="unknown split 'val'"):
        nmnist.sample_events(opts(tmp_path, data_dir=root), "val", 0)


# ---------------------------------------------------------------- bad data

def break_file(root: Path, how: str) -> Path:
    path = root / "Test" / "1" / "00000.bin"
    raw = path.read_bytes()
    if how == "truncated":
        path.write_bytes(raw[:-2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "outside":
        array = np.frombuffer(raw, dtype=np.uint8).copy().reshape(-1, 5)
        array[3, 0] = 40  # x = 40 on a 34-pixel sensor
        path.write_bytes(array.tobytes())
    elif how == "overflow-only":
        path.write_bytes(bytes([0, 240, 0, 0, 0]) * 3)
    return path


@pytest.mark.parametrize("how,match", [
    ("truncated", r"00000\.bin: truncated N-MNIST file"),
    ("empty", r"00000\.bin: empty N-MNIST file"),
    ("outside", r"00000\.bin: event 3 at x=40, y=\d+ lies outside the 34x34 sensor"),
    ("overflow-only", r"00000\.bin: N-MNIST file holds no events"),
])
def test_bad_bin_files_fail_clearly_and_leave_no_cache(tmp_path, how, match):
    root = make_plain(tmp_path / "data", real_first=False)
    break_file(root, how)
    with pytest.raises(DataError, match=match):
        load_dataset("nmnist", opts(tmp_path, data_dir=root))
    assert cache_entries(tmp_path) == []  # no entry and no temporary folder left


def test_unreadable_path_is_a_data_error_with_its_fix(tmp_path):
    with pytest.raises(DataError, match=r"missing.bin: cannot read the N-MNIST file \(No such file or directory\); it "
                                        r"is gone \(a broken link\?\): restore it, or remove it$"):
        read_nmnist_bin(tmp_path / "missing.bin")


def test_folder_without_class_subfolders(tmp_path):
    root = tmp_path / "data"
    for folder in ("Train", "Test"):
        (root / folder).mkdir(parents=True)
        (root / folder / "a.bin").write_bytes(encode_nmnist_bin(synthetic_events(np.random.default_rng(0), 50)))
    with pytest.raises(DataError, match=r"Train: no class subfolders 0-9 holding \.bin files"):
        load_dataset("nmnist", opts(tmp_path, data_dir=root))


def test_missing_test_folder(tmp_path):
    root = make_plain(tmp_path / "data", real_first=False)
    shutil.rmtree(root / "Test")
    with pytest.raises(DataError, match="has no Test folder"):
        load_dataset("nmnist", opts(tmp_path, data_dir=root))


# ---------------------------------------------------------------- CLI

def cli(args):
    return CliRunner().invoke(main, args, prog_name="evsim")


def test_cli_info_and_show_on_real_files(tmp_path):
    root = make_plain(tmp_path / "data")
    common = ["--dataset", "nmnist", "--data-dir", str(root), "--cache-dir", str(tmp_path / "cache")]
    result = cli(["data", "info", *common])
    assert result.exit_code == 0, result.output
    assert "data_source  real" in result.output and "34x34x2" in result.output
    assert "train        2 samples; per class 0:1 1:1" in result.output
    assert "stored as    events:" in result.output and "active frame cells" in result.output
    out = tmp_path / "show.png"
    result = cli(["data", "show", *common, "--index", "1", "--split", "test", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_bad_file_gives_one_line_and_exit_2(tmp_path):
    root = make_plain(tmp_path / "data", real_first=False)
    break_file(root, "truncated")
    result = cli(["data", "info", "--dataset", "nmnist", "--data-dir", str(root),
                  "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:") and "truncated" in lines[0]
    assert "Traceback" not in result.output


def test_cli_show_index_out_of_range(tmp_path):
    root = make_plain(tmp_path / "data", real_first=False)
    result = cli(["data", "show", "--dataset", "nmnist", "--data-dir", str(root), "--cache-dir",
                  str(tmp_path / "cache"), "--index", "9", "--out", str(tmp_path / "x.png")])
    assert result.exit_code == 2 and "index 9 out of range" in result.output


def test_emulated_folder_given_as_data_dir_is_still_recorded_as_emulated(tmp_path):
    root = tmp_path / "emu"
    write_emulated_nmnist(root, per_class=1, progress=False)
    ds = load_dataset("nmnist", opts(tmp_path, data_dir=root))
    assert ds.source == "emulated" and "EMULATED" in ds.meta["notice"]
    with pytest.raises(DataError, match="holds emulated N-MNIST .*not real recordings"):
        load_dataset("nmnist", opts(tmp_path, data_dir=root, source="real"))


def test_a_run_on_a_users_emulated_folder_repeats_and_is_evaluated_on_that_folder(tmp_path):
    """config.toml pinned source = "emulated" for it: evsim's own emulation, other data."""
    import json
    import tomllib

    root = tmp_path / "emu"
    write_emulated_nmnist(root, per_class=1, progress=False)
    common = ["--dataset", "nmnist", "--arch", "2312-8-10", "--time-steps", "2", "--epochs", "1", "--no-progress",
              "--batch-size", "5", "--val-fraction", "0", "--threads", "1", "--cache-dir", str(tmp_path / "cache")]
    assert cli(["train", *common, "--data-dir", str(root), "--out", str(tmp_path / "first")]).exit_code == 0
    saved = tomllib.loads((tmp_path / "first" / "config.toml").read_text())
    assert saved["source"] == "auto" and saved["data_dir"] == str(root)
    result = cli(["train", "--config", str(tmp_path / "first" / "config.toml"), "--out", str(tmp_path / "again")])
    assert result.exit_code == 0, result.output
    fingerprints = [json.loads((tmp_path / run / "config.json").read_text())["data_fingerprint"]
                    for run in ("first", "again")]
    assert fingerprints[0] == fingerprints[1] and fingerprints[0]["train"]["files"] == 10
    shutil.rmtree(root)
    result = cli(["eval", str(tmp_path / "first")])
    assert result.exit_code == 2 and result.output.splitlines()[-1] == (
        f"Error: {tmp_path / 'first'} trained on emulated data in {root}, which no longer exists; restore that "
        f"folder, or give its new place: evsim eval {tmp_path / 'first'} --data-dir NEW_PLACE"), result.output


def test_a_folder_without_an_emulated_runs_recordings_is_refused_not_replaced_by_the_emulation(tmp_path,
                                                                                                 monkeypatch):
    """An empty folder given as the new place of a run's emulated recordings loaded evsim's
    own emulation (65 s to make) and then blamed evsim's cache folder."""
    emulated_dir = nmnist.emulated_nmnist_dir
    monkeypatch.setattr(nmnist, "emulated_nmnist_dir", lambda cache_dir, seed=0: emulated_dir(cache_dir, seed,
                                                                                              per_class=1))
    root = tmp_path / "emu"
    write_emulated_nmnist(root, per_class=1, progress=False)
    common = ["--dataset", "nmnist", "--arch", "2312-8-10", "--time-steps", "2", "--epochs", "1", "--no-progress",
              "--batch-size", "5", "--val-fraction", "0", "--threads", "1", "--cache-dir", str(tmp_path / "cache")]
    assert cli(["train", *common, "--data-dir", str(root), "--out", str(tmp_path / "run")]).exit_code == 0
    (tmp_path / "empty").mkdir()
    for command in (["eval", str(tmp_path / "run")], ["train", "--resume", str(tmp_path / "run"), "--epochs", "2"]):
        result = cli([*command, "--data-dir", str(tmp_path / "empty")])
        assert result.exit_code == 2 and result.output.splitlines()[-1] == (
            f"Error: {tmp_path / 'empty'} (--data-dir) holds no nmnist files; give the folder that holds the data "
            f"{tmp_path / 'run'} trained on"), result.output


# ---------------------------------------------------------------- mutation audit: hand-worked oracles

def nmnist_events(rows):
    """Structured N-MNIST events from ``(x, y, t, p)`` rows (sorted by t)."""
    events = np.zeros(len(rows), dtype=tonic.datasets.NMNIST.dtype)
    for k, (x, y, t, p) in enumerate(rows):
        events[k] = (x, y, t, p)
    return events


def make_files(root: Path, train: list, test: list) -> Path:
    """``root/Train/<label>/<k>.bin`` and ``root/Test/...`` from lists of ``(label, events)``."""
    for folder, recordings in (("Train", train), ("Test", test)):
        for k, (label, events) in enumerate(recordings):
            (root / folder / str(label)).mkdir(parents=True, exist_ok=True)
            (root / folder / str(label) / f"{k:05d}.bin").write_bytes(encode_nmnist_bin(events))
    return root


def test_sensor_bounds_are_exclusive_and_width_is_x():
    from evsim.data.events import check_in_sensor

    check_in_sensor(np.array([0, 33]), np.array([33, 0]), (34, 34, 2), "f")  # the last pixel is inside
    for x, y in ((34, 0), (0, 34), (-1, 0), (0, -1)):
        with pytest.raises(DataError, match=f"f: event 1 at x={x}, y={y} lies outside the 34x34 sensor"):
            check_in_sensor(np.array([5, x]), np.array([5, y]), (34, 34, 2), "f")
    # a 5 (wide) x 3 (high) sensor, tonic order (W, H, P): x up to 4, y up to 2
    check_in_sensor(np.array([4, 0]), np.array([2, 2]), (5, 3, 2), "f")
    with pytest.raises(DataError, match=r"x=0, y=3 lies outside the 5x3 sensor \(1 such events\)"):
        check_in_sensor(np.array([4, 0]), np.array([2, 3]), (5, 3, 2), "f")
    with pytest.raises(DataError, match=r"x=5, y=0 lies outside the 5x3 sensor"):
        check_in_sensor(np.array([5]), np.array([0]), (5, 3, 2), "f")


def test_an_event_on_the_pixel_past_the_sensor_edge_is_refused(tmp_path):
    path = tmp_path / "edge.bin"
    path.write_bytes(encode_nmnist_bin(nmnist_events([(33, 33, 10, 1), (34, 2, 20, 0)])))
    with pytest.raises(DataError, match=r"edge\.bin: event 1 at x=34, y=2 lies outside the 34x34 sensor"):
        read_nmnist_bin(path)


def test_empty_and_full_frames_of_a_non_square_sensor_are_t_c_h_w():
    empty = to_frames(np.zeros(0, dtype=tonic.datasets.NMNIST.dtype), (5, 3, 2), 4, "events")
    assert empty.shape == (4, 2, 3, 5) and not empty.any()
    events = nmnist_events([(4, 0, 0, 1), (0, 2, 10, 0), (4, 2, 20, 1), (1, 1, 30, 1)])
    frames = to_frames(events, (5, 3, 2), 2, "events")
    expected = np.zeros((2, 2, 3, 5), dtype=frames.dtype)  # [t, p, y, x]; 2 events per bin
    expected[0, 1, 0, 4] = expected[0, 0, 2, 0] = expected[1, 1, 2, 4] = expected[1, 1, 1, 1] = 1
    np.testing.assert_array_equal(frames, expected)


@pytest.mark.parametrize("slicing", ["events", "time"])
@pytest.mark.parametrize("sensor", [(7, 5, 2), (7, 5, 1)])
def test_frames_are_tonics_counted_without_wrapping(slicing, sensor):
    """The cells of tonic's ToFrame, bin for bin, for both slicings and one or two channels;
    but a pixel's 32,768th event in a frame stays counted (tonic's int16 frames wrap it)."""
    rng = np.random.default_rng(3)
    n = 500
    events = nmnist_events(list(zip(rng.integers(0, 7, n), rng.integers(0, 5, n), np.sort(rng.integers(0, 10**5, n)),
                                    rng.integers(0, 2, n))))
    if sensor[2] == 1:
        events["p"] = 0
    theirs = tonic.transforms.ToFrame(sensor_size=sensor, **{("n_event_bins" if slicing == "events" else
                                                               "n_time_bins"): 4})(events.copy())
    np.testing.assert_array_equal(to_frames(events, sensor, 4, slicing), theirs)
    hot = np.zeros(40_000, dtype=events.dtype)
    hot["x"], hot["y"], hot["t"], hot["p"] = 3, 4, np.arange(40_000), 0
    frames = to_frames(hot, sensor, 1, slicing)
    assert frames[0, 0, 4, 3] == (40_000 if slicing == "events" else 39_999)  # by time: the last stamp ends the bin


def test_event_stats_are_the_raw_recordings_statistics(tmp_path):
    a = nmnist_events([(1, 1, 1000, 1), (2, 2, 3000, 0), (3, 3, 9000, 1), (4, 4, 9500, 1)])
    b = nmnist_events([(5, 5, 20_000, 0), (6, 6, 26_000, 0)])
    root = make_files(tmp_path / "data", train=[(0, a), (1, b)], test=[(0, b)])
    ds = load_dataset("nmnist", opts(tmp_path, data_dir=root, time_steps=2))
    train = ds.meta["event_stats"]["train"]
    assert train["samples"] == 2 and train["events_per_sample"] == 3.0
    assert train["on_fraction"] == pytest.approx(3 / 6)  # 3 ON (p = 1) of 6 events
    assert train["duration_ms"] == pytest.approx((8.5 + 6.0) / 2)  # last minus first timestamp
    test = ds.meta["event_stats"]["test"]
    assert test["on_fraction"] == 0.0 and test["duration_ms"] == pytest.approx(6.0)


def test_frames_that_cannot_fit_in_memory_are_refused_before_framing(tmp_path, monkeypatch):
    from evsim.data import events as event_module

    root = make_plain(tmp_path / "data", real_first=False)
    # 2 train samples of 20 frames: 20 * (8 * 2 + 8 * 2312) bytes = 370,240 bytes
    monkeypatch.setattr(event_module, "physical_memory", lambda: 370_239)
    with pytest.raises(ConfigError, match="2 train samples of 20 frames do not fit in memory; reduce --time-steps"):
        load_dataset("nmnist", opts(tmp_path, data_dir=root))
    assert cache_entries(tmp_path) == []
    monkeypatch.setattr(event_module, "physical_memory", lambda: 370_240)
    assert len(load_dataset("nmnist", opts(tmp_path, data_dir=root)).train) == 2


@pytest.mark.parametrize("damage", ["label 10", "label -1", "one label too many", "index past the frame",
                                    "ptr falls", "ptr starts at 1"])
def test_an_inconsistent_cache_entry_is_built_again(tmp_path, damage):
    root = make_plain(tmp_path / "data", real_first=False)
    first = load_dataset("nmnist", opts(tmp_path, data_dir=root, time_steps=4))
    folder = Path(first.meta["cache"])
    expected = first.train.inputs.to_dense(), first.train.labels.copy()
    labels = np.load(folder / "train_labels.npy")
    ptr = np.load(folder / "train_ptr.npy")
    idx = np.load(folder / "train_idx.npy")
    del first
    if damage == "label 10":
        np.save(folder / "train_labels.npy", np.array([0, 10]))
    elif damage == "label -1":
        np.save(folder / "train_labels.npy", np.array([-1, 1]))
    elif damage == "one label too many":
        np.save(folder / "train_labels.npy", np.append(labels, 1))
    elif damage == "index past the frame":
        idx[-1] = 2 * 34 * 34  # one past the last cell
        np.save(folder / "train_idx.npy", idx)
    elif damage == "ptr falls":
        ptr[2], ptr[3] = ptr[3], ptr[2]  # rows 1 and 2 overlap, ptr[-1] still the event count
        assert ptr[2] > ptr[3]
        np.save(folder / "train_ptr.npy", ptr)
    elif damage == "ptr starts at 1":
        ptr[0] = 1
        np.save(folder / "train_ptr.npy", ptr)
    again = load_dataset("nmnist", opts(tmp_path, data_dir=root, time_steps=4))
    assert again.meta["cache"] == str(folder)
    np.testing.assert_array_equal(np.load(folder / "train_labels.npy"), expected[1])
    np.testing.assert_array_equal(again.train.labels, expected[1])
    np.testing.assert_array_equal(again.train.inputs.to_dense(), expected[0])


def test_cache_is_keyed_by_crop_and_denoise(tmp_path):
    root = make_plain(tmp_path / "data", real_first=False)
    full = load_dataset("nmnist", opts(tmp_path, data_dir=root, time_steps=2))
    cropped = load_dataset("nmnist", opts(tmp_path, data_dir=root, time_steps=2, crop=True))
    # 5 ms: at 500 us the sparse synthetic test recordings keep fewer than T events, and are refused
    denoised = load_dataset("nmnist", opts(tmp_path, data_dir=root, time_steps=2, denoise_us=5000))
    assert full.train.inputs.shape[-2:] == (34, 34) and cropped.train.inputs.shape[-2:] == (32, 32)
    assert cropped.train.inputs.to_dense().shape == (2, 2, 2, 32, 32)
    assert len({full.meta["cache"], cropped.meta["cache"], denoised.meta["cache"]}) == 3
    assert int(denoised.train.inputs.val.sum()) < int(full.train.inputs.val.sum())


def test_a_rewritten_file_of_the_same_mtime_or_size_is_framed_again(tmp_path):
    import os

    root = make_plain(tmp_path / "data", real_first=False)
    path = root / "Train" / "1" / "00000.bin"
    a = load_dataset("nmnist", opts(tmp_path, data_dir=root, time_steps=2))
    stamp = path.stat()
    # another recording, longer, with the old mtime (as `cp -p` or an archive would leave it)
    path.write_bytes(encode_nmnist_bin(synthetic_events(np.random.default_rng(5), 700)))
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    b = load_dataset("nmnist", opts(tmp_path, data_dir=root, time_steps=2))
    assert b.meta["cache"] != a.meta["cache"] and int(b.train.inputs[1].sum()) == 700
    # another recording of the same size, written later
    path.write_bytes(encode_nmnist_bin(synthetic_events(np.random.default_rng(6), 700)))
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 10**9))
    c = load_dataset("nmnist", opts(tmp_path, data_dir=root, time_steps=2))
    assert c.meta["cache"] not in (a.meta["cache"], b.meta["cache"])
    expected = tonic.transforms.ToFrame(sensor_size=(34, 34, 2), n_event_bins=2)(read_nmnist_bin(path))
    np.testing.assert_array_equal(c.train.inputs[1], expected)


def test_files_fingerprint_changes_with_the_labels(tmp_path):
    from evsim.data.cache import files_fingerprint

    files = [tmp_path / "a.bin", tmp_path / "b.bin"]
    for f in files:
        f.write_bytes(b"12345")
    same = files_fingerprint(files, [0, 1])
    assert same == files_fingerprint(files, np.array([0, 1]))
    assert same["files"] == 2 and same["bytes"] == 10
    assert files_fingerprint(files, [1, 0])["contents"] != same["contents"]


def test_denoise_runs_before_the_crop(tmp_path):
    """An event whose only neighbour lies in the cropped-off border survives (denoise, then
    crop, as documented); an isolated event does not."""
    # (tonic keeps every event of the first filter_time us: these come later)
    events = nmnist_events([(0, 5, 5000, 1),      # B: on the border column, dropped by crop (and by denoise)
                            (10, 10, 5050, 0),   # C: first of a pair: no earlier neighbour, denoised away
                            (1, 5, 5100, 1),     # A: neighbour B 100 us before: kept, becomes x = 0
                            (11, 10, 5150, 0),   # D: neighbour C 100 us before: kept, becomes x = 10
                            (20, 20, 5200, 1)])  # isolated: denoised away
    root = make_files(tmp_path / "data", train=[(0, events)], test=[(0, events)])
    ds = load_dataset("nmnist", opts(tmp_path, data_dir=root, time_steps=1, crop=True, denoise_us=1000))
    expected = np.zeros((1, 2, 32, 32), dtype=np.uint8)  # [t, p, y, x], crop offset 1
    expected[0, 1, 4, 0] = 1  # A
    expected[0, 0, 9, 10] = 1  # D
    np.testing.assert_array_equal(ds.train.inputs[0], expected)


def test_sample_index_equal_to_the_count_is_out_of_range(tmp_path):
    root = make_plain(tmp_path / "data", real_first=False)
    with pytest.raises(ConfigError, match="index 2 out of range: the test split has 2 samples"):
        nmnist.sample_events(opts(tmp_path, data_dir=root), "test", 2)
    with pytest.raises(ConfigError, match="index -1 out of range"):
        nmnist.sample_events(opts(tmp_path, data_dir=root), "test", -1)


def test_an_extra_recording_in_the_emulated_cache_is_damage(tmp_path, monkeypatch):
    own_emulation(monkeypatch)
    first = load_dataset("nmnist", opts(tmp_path, source="emulated", time_steps=2))
    root = Path(first.meta["root"])
    stray = root / "Train" / "0" / "99999.bin"
    stray.write_bytes(encode_nmnist_bin(synthetic_events(np.random.default_rng(1), 50)))
    again = load_dataset("nmnist", opts(tmp_path, source="emulated", time_steps=2))
    assert "Train holds 11 recordings, its manifest says 10" in again.meta["notice"]
    assert not stray.exists() and len(again.train) == 10
    np.testing.assert_array_equal(again.train.inputs.to_dense(), first.train.inputs.to_dense())


def test_a_frame_entry_of_a_non_square_sensor_keeps_h_and_w(tmp_path):
    from evsim.data.cache import load_entry
    from evsim.data.events import build_frames_entry, splits_from_entry

    events = nmnist_events([(4, 0, 0, 1), (0, 2, 10, 0), (4, 2, 20, 1), (1, 1, 30, 1)])
    path = tmp_path / "a.bin"
    path.write_bytes(encode_nmnist_bin(events))
    splits = {"train": ([path], np.array([1])), "test": ([path, path], np.array([0, 1]))}
    build_frames_entry(tmp_path, splits, read_nmnist_bin, lambda e: e, (5, 3, 2), 2, "events",
                       {"classes": ["a", "b"]}, progress=False)
    (train, test), meta = load_entry(tmp_path, splits_from_entry)
    assert meta["frame_shape"] == [2, 2, 3, 5] and train.inputs.shape == (1, 2, 2, 3, 5) and len(test) == 2
    np.testing.assert_array_equal(train.inputs[0], to_frames(events, (5, 3, 2), 2, "events"))
    assert train.inputs.to_dense()[0, 0, 1, 0, 4] == 1 and test.labels.tolist() == [0, 1]


def test_crop_hint_only_where_cropping_makes_the_network_fit():
    from evsim.data.nmnist import crop_hint

    assert crop_hint("nmnist", (2, 34, 34), 2048) == " (add --crop for N-MNIST's 32x32 frames)"
    assert crop_hint("nmnist", (2, 34, 34), 3 * 32 * 32) == ""    # cropping would not make it fit
    assert crop_hint("nmnist", (2, 32, 32), 2048) == ""           # already cropped
    assert crop_hint("pokerdvs", (2, 34, 34), 2048) == ""


def test_a_network_of_32x32_maps_on_uncropped_nmnist_is_told_to_crop():
    import evsim
    from evsim.data.base import Dataset, Split
    from evsim.errors import ConfigError
    from evsim.evaluate import checked_split

    frames = Split(np.zeros((2, 1, 2, 34, 34), np.float32), np.array([0, 1]))
    dataset = Dataset("nmnist", frames, frames, 10, (2, 34, 34), "frames", "emulated")
    with pytest.raises(ConfigError, match=r"does not fit nmnist \(2x34x34 = 2312 inputs, 10 classes\) \(add --crop"):
        checked_split(evsim.Network.from_spec("2x32x32-4C3-AP4-10"), dataset, "test")


def test_source_emulated_on_a_run_of_emulated_recordings_is_other_data_not_changed_data(tmp_path, monkeypatch):
    """--source emulated loads the built-in emulation, not the emulated recordings in the
    run's --data-dir: it was refused as if the run's data had changed."""
    small_emulation(monkeypatch)
    root = tmp_path / "emu"
    write_emulated_nmnist(root, per_class=3, seed=1, progress=False)
    runner = CliRunner()
    run_dir = tmp_path / "run"
    result = runner.invoke(main, ["train", "--dataset", "nmnist", "--data-dir", str(root), "--hidden", "8",
                                  "--time-steps", "2", "--epochs", "1", "--batch-size", "10", "--structure", "none",
                                  "--val-fraction", "0", "--threads", "1", "--no-progress", "--out", str(run_dir),
                                  "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["eval", str(run_dir), "--source", "emulated"])
    assert result.exit_code == 0, result.output
    assert f"NOTE: --source emulated loaded {tmp_path / 'cache' / 'nmnist-emulated-test'}, not the emulated data in " \
           f"{root}" in result.output
    assert (run_dir / "confusion-latest-test-emulated.png").is_file()


# ---------------------------------------------------------------- the frame cache audit
def _entry(tmp_path):
    root = make_plain(tmp_path / "data", real_first=False)
    ds = load_dataset("nmnist", opts(tmp_path, data_dir=root))
    return root, ds, Path(ds.meta["cache"])


@pytest.mark.parametrize("damage", ["meta edited", "counts nan", "npy fifo", "entry a file"])
def test_a_damaged_frame_cache_entry_is_framed_again(tmp_path, damage):
    import json as json_module

    root, first, entry = _entry(tmp_path)
    expected = first.train.inputs.to_dense().copy()  # the entry's arrays are memory-mapped: damaged below
    if damage == "meta edited":  # it was served, saying T = 7 beside frames of 20
        meta = json_module.loads((entry / "meta.json").read_text())
        meta["framing"]["time_steps"] = 7
        (entry / "meta.json").write_text(json_module.dumps(meta))
    elif damage == "counts nan":  # training then blamed "the input"
        np.save(entry / "train_val.npy", np.full(np.load(entry / "train_val.npy").shape, np.nan, np.float32))
    elif damage == "npy fifo":  # np.load waited on it forever
        (entry / "train_val.npy").unlink()
        os.mkfifo(entry / "train_val.npy")
    else:  # a file where the folder goes was refused as "cannot be deleted"
        shutil.rmtree(entry)
        entry.write_text("not a folder")
    again = load_dataset("nmnist", opts(tmp_path, data_dir=root))
    assert again.meta["cache"] == str(entry) and again.meta["framing"]["time_steps"] == 20
    np.testing.assert_array_equal(again.train.inputs.to_dense(), expected)


def test_a_sound_entry_this_process_cannot_open_is_kept_and_the_cause_named(tmp_path, monkeypatch):
    import errno

    root, _, entry = _entry(tmp_path)
    built = (entry / "meta.json").stat().st_mtime_ns

    def too_many(*args, **kwargs):
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    monkeypatch.setattr("evsim.data.cache.np.load", too_many)
    with pytest.raises(DataError, match=r"cannot read the cache entry \(Too many open files\); raise the limit on "
                                        r"open files \(ulimit -n\) and try again"):
        load_dataset("nmnist", opts(tmp_path, data_dir=root))
    assert (entry / "meta.json").stat().st_mtime_ns == built


def test_frame_stores_are_written_not_memory_mapped(tmp_path, monkeypatch):
    """A full disk under a mapped page killed the process with SIGBUS; a write says ENOSPC."""
    frames = [np.array([[[[3, 0]]], [[[0, 4]]]]), np.array([[[[0, 1]]], [[[2, 0]]]])]
    monkeypatch.setattr(np.lib.format, "open_memmap", None)
    writer = SparseFrameWriter(tmp_path, "s", 2, 2)
    for f in frames:
        writer.put(f)
    writer.close()
    stored = SparseFrames(*(np.load(tmp_path / f"s_{part}.npy") for part in ("ptr", "idx", "val")), 2, (1, 1, 2))
    np.testing.assert_array_equal(stored.to_dense(), np.stack(frames))


def test_a_runs_emulated_recordings_without_their_manifest_are_named_as_such(tmp_path):
    """They read as real data, and the refusal said to give --source emulated, which ran the
    network on evsim's own emulation instead."""
    root = tmp_path / "emu"
    write_emulated_nmnist(root, per_class=1, progress=False)
    common = ["--dataset", "nmnist", "--arch", "2312-8-10", "--time-steps", "2", "--epochs", "1", "--no-progress",
              "--batch-size", "5", "--val-fraction", "0", "--threads", "1", "--cache-dir", str(tmp_path / "cache")]
    assert cli(["train", *common, "--data-dir", str(root), "--out", str(tmp_path / "run")]).exit_code == 0
    (root / MANIFEST).unlink()
    result = cli(["eval", str(tmp_path / "run")])
    assert result.exit_code == 2 and result.output.splitlines()[-1] == (
        f"Error: {root} holds the files {tmp_path / 'run'} trained on, but they now read as real data where it trained "
        "on emulated data: restore what marked them (the emulator.json that evsim data emulate-nmnist wrote beside "
        "Train/ and Test/)"), result.output
