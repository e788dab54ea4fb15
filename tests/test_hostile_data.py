"""Hostile data files (issue 26): corrupt gzip, impossible IDX headers, CIFAR batches of
the wrong structure, TOML that never ends or nests without end, checkpoints whose
headers declare terabytes, recordings changed in place, and slicing that leaves
nothing: each is one clean error (or a notice), before anything is written."""
import gzip
import io
import os
import pickle
import re
import threading
import zipfile

import numpy as np
import pytest

from evsim.checkpoint import CHECKPOINT_LATEST, NETWORK_FILE, load_checkpoint, load_network
from evsim.config import read_config_file
from evsim.data import DataOptions, load_dataset
from evsim.data.cifar10 import read_batch
from evsim.data.dvsgesture import read_gesture_npy
from evsim.data.events import encode_nmnist_bin, read_nmnist_bin
from evsim.data.mnist import IDX_NAMES, read_idx
from evsim.data.tonic_sets import read_aedat2, read_pokerdvs
from evsim.errors import CheckpointError, ConfigError, DataError
from evsim.nir_io import read_nir
from evsim.readers import check_npz, read_small_file
from evsim.train import Trainer
from tests.conftest import one_line_error, run
from tests.runs import toy_config, toy_dataset
from tests.test_data_nmnist import make_plain, opts, synthetic_events
from tests.test_data_static import idx_bytes, make_cifar, make_idx


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    monkeypatch.delenv("EVSIM_DATA", raising=False)
    monkeypatch.setenv("EVSIM_CACHE", str(tmp_path / "default-cache"))


# ------------------------------------------------------------- 10. MNIST, CIFAR-10
def test_gzip_with_corrupt_deflate_data_is_one_error(tmp_path):
    make_idx(tmp_path / "d", gz=True)
    path = tmp_path / "d" / f"{IDX_NAMES['train'][0]}.gz"
    raw = bytearray(path.read_bytes())
    raw[20:60] = bytes(40)  # the gzip header stays valid; the deflate stream does not
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: "):
        load_dataset("mnist", DataOptions(data_dir=tmp_path / "d"))


@pytest.mark.parametrize("dims,fragment", [
    ((2**32 - 1, 2**32 - 1, 2**32 - 1), "declares 4294967295 x 4294967295 x 4294967295 items"),
    ((0, 28, 28), "declares 0 x 28 x 28 items"),
])
def test_idx_headers_declaring_impossible_sizes_are_refused(tmp_path, dims, fragment):
    path = tmp_path / "images"
    path.write_bytes((2051).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims) + bytes(100))
    with pytest.raises(DataError, match=fragment):
        read_idx(path, 3)


def test_an_idx_gzip_bomb_is_not_decompressed_past_its_header(tmp_path):
    path = tmp_path / "labels.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros(4, np.uint8)) + bytes(50_000_000)))
    with pytest.raises(DataError, match="holds more than 1048580 data bytes but its header says"):
        read_idx(path, 1)


@pytest.mark.parametrize("labels,data,fragment", [
    (None, np.zeros((2, 3072), np.uint8), "labels"),
    (3, np.zeros((2, 3072), np.uint8), "labels"),
    ([[0, 1], [1, 0]], np.zeros((2, 3072), np.uint8), r"labels of shape \(2, 2\)"),
    ([0, 1], [[0] * 3072, [0] * 5], "b'data' is not an array"),
    ([], np.zeros((0, 3072), np.uint8), "holds no images"),
    ([0, None], np.zeros((2, 3072), np.uint8), "must hold numbers"),
])
def test_cifar_batches_of_the_wrong_structure_are_one_line_before_the_run_folder(tmp_path, labels, data,
                                                                                  fragment):
    folder = make_cifar(tmp_path / "data")
    (folder / "data_batch_2").write_bytes(pickle.dumps({b"data": data, b"labels": labels}))
    out = tmp_path / "run"
    line = one_line_error(run(["train", "--dataset", "cifar10", "--data-dir", str(tmp_path / "data"), "--epochs",
                               "1", "--out", str(out), "--no-progress"]))
    assert "data_batch_2: " in line and re.search(fragment, line), line
    assert not out.exists()


# ------------------------------------------------------------- 12. TOML
def test_a_config_that_is_a_fifo_is_refused_without_waiting(tmp_path):
    fifo = tmp_path / "config.toml"
    os.mkfifo(fifo)
    outcome = []
    reader = threading.Thread(target=lambda: outcome.append(_error_of(read_config_file, fifo, [])), daemon=True)
    reader.start()
    reader.join(timeout=10)
    if reader.is_alive():  # unblock the stuck reader before failing
        with open(fifo, "wb"):
            pass
        pytest.fail("reading a FIFO config file blocked")
    assert "is a FIFO, not a TOML config file" in outcome[0]


def _error_of(fn, *args) -> str:
    try:
        fn(*args)
    except ConfigError as exc:
        return str(exc)
    return "no error"


def test_a_config_that_is_a_device_or_too_large_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="/dev/zero: is a device or socket, not a TOML config file"):
        read_config_file("/dev/zero", [])
    big = tmp_path / "big.toml"
    big.write_text("# " + "x" * (1 << 20) + "\n")
    with pytest.raises(ConfigError, match="too large for a TOML config"):
        read_config_file(big, [])
    with pytest.raises(ConfigError, match="is a folder"):
        read_config_file(tmp_path, [])


def test_a_config_nested_five_thousand_deep_is_one_line(tmp_path):
    path = tmp_path / "deep.toml"
    path.write_text("hidden = " + "[" * 5000 + "]" * 5000 + "\n")
    line = one_line_error(run(["train", "--config", str(path), "--out", str(tmp_path / "run")]))
    assert str(path) in line and "nested" in line


def test_read_small_file_reads_regular_files():
    assert read_small_file(__file__, "test")[:3] == b'"""'


# ------------------------------------------------------------- 13. declared sizes
def with_member_header(path, member: str, shape: tuple) -> None:
    """Rewrite ``member`` of the ``.npz`` at ``path`` with a header declaring ``shape``,
    keeping its data bytes."""
    with zipfile.ZipFile(path) as zf:
        members = {info.filename: zf.read(info) for info in zf.infolist()}
    raw = io.BytesIO(members[member])
    version = np.lib.format.read_magic(raw)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    _, fortran, dtype = read_header(raw)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": np.lib.format.dtype_to_descr(dtype),
                                                  "fortran_order": fortran, "shape": shape})
    members[member] = header.getvalue() + raw.read()  # the header starts with the magic string
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("evsim.train.plot_training", lambda *args: None)
        Trainer(toy_config(epochs=1), toy_dataset()).fit(out, progress=False, echo=lambda line: None)
    return out


@pytest.mark.parametrize("name,load", [(CHECKPOINT_LATEST, load_checkpoint), (NETWORK_FILE, load_network)])
def test_an_npy_header_declaring_a_terabyte_is_refused_before_allocating(toy_run, tmp_path, name, load):
    path = tmp_path / name
    path.write_bytes((toy_run / name).read_bytes())
    with_member_header(path, "l0_data.npy", (2**40,))
    with pytest.raises(CheckpointError, match=r"member l0_data.npy declares a float32 array of shape "
                                              r"\(1099511627776,\) \(4,398,046,511,104 bytes\)"):
        load(path)


def test_check_npz_accepts_what_numpy_writes(tmp_path):
    np.savez(tmp_path / "a.npz", x=np.arange(10), y=np.zeros((3, 0)))
    np.savez_compressed(tmp_path / "b.npz", x=np.zeros(100_000))
    check_npz(tmp_path / "a.npz")
    check_npz(tmp_path / "b.npz")


def test_an_npy_recording_declaring_more_than_it_holds_is_refused(tmp_path):
    path = tmp_path / "3.npy"
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (2**36, 4)})
    path.write_bytes(header.getvalue() + bytes(320))
    with pytest.raises(DataError, match=r"3.npy: its header declares a float64 array of shape \(68719476736, 4\)"):
        read_gesture_npy(path)


# ------------------------------------------------------------- 15. messages
def test_a_bin_path_that_is_a_folder_is_called_a_folder(tmp_path):
    (tmp_path / "x.bin").mkdir()
    with pytest.raises(DataError, match=r"x.bin: is a folder, not a file \(N-MNIST recording expected\)"):
        read_nmnist_bin(tmp_path / "x.bin")


def _npz_recording(path, x=np.arange(4)):
    np.savez(path, x=x, y=np.arange(4), t=np.arange(4), p=np.zeros(4))


def _truncated(path):
    _npz_recording(path)
    path.write_bytes(path.read_bytes()[:100])


def _declaring_a_terabyte(path):
    _npz_recording(path)
    with_member_header(path, "x.npy", (2**40,))


@pytest.mark.parametrize("make,fragment", [
    (_truncated, "not a readable .npz recording (BadZipFile: "),
    (lambda path: path.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 4),
     "not a readable .npz recording (BadZipFile: "),
    (_declaring_a_terabyte, "not a readable .npz recording (ValueError: member x.npy declares a"),
    (lambda path: _npz_recording(path, x=np.arange(4) * 1j),
     "array 'x' is complex128 of shape (4,); save x, y, t, p as 1-D arrays of real numbers, one entry per event"),
    (lambda path: _npz_recording(path, x=np.arange(8).reshape(4, 2)), "array 'x' is int64 of shape (4, 2); save"),
])
def test_a_bad_npz_recording_is_one_line_naming_it(tmp_path, make, fragment):
    for name in ("a", "b"):
        (tmp_path / "data" / name).mkdir(parents=True)
        np.save(tmp_path / "data" / name / "r.npy", np.array([[1, 1, 5, 0], [2, 3, 9, 1]]))
    make(tmp_path / "data" / "a" / "z.npz")
    line = one_line_error(run(["data", "info", "--dataset", "folder", "--data-dir", str(tmp_path / "data"),
                               "--cache-dir", str(tmp_path / "cache")]))
    assert line.startswith(f"Error: {tmp_path / 'data' / 'a' / 'z.npz'}: ") and fragment in line, line


@pytest.mark.parametrize("reader,name", [(read_pokerdvs, "9.npy"), (read_aedat2, "x.aedat")])
def test_a_recording_path_that_is_a_folder_is_called_a_folder(tmp_path, reader, name):
    (tmp_path / name).mkdir()
    with pytest.raises(DataError, match=rf"{name}: is a folder, not a file"):
        reader(tmp_path / name)


@pytest.mark.parametrize("link", [False, True])
def test_a_folder_named_like_a_recording_is_named_not_its_descriptor(tmp_path, link):
    root = make_plain(tmp_path / "data", real_first=False)
    target = root / "Train" / "1" / "c.bin"
    if link:  # a symlink to a folder reads as the folder
        (tmp_path / "elsewhere").mkdir()
        target.symlink_to(tmp_path / "elsewhere")
    else:
        target.mkdir()
    line = one_line_error(run(["data", "info", "--data-dir", str(root), "--cache-dir", str(tmp_path / "cache")]))
    assert line == f"Error: {target}: is a folder, not a recording; remove or rename it"


@pytest.mark.parametrize("reader,name", [
    (lambda path: read_idx(path, 1), "train-labels-idx1-ubyte"),
    (read_batch, "data_batch_2"),
    (read_gesture_npy, "3.npy"),
    (read_nmnist_bin, "00001.bin"),
    (read_nir, "g.nir"),
    (load_checkpoint, CHECKPOINT_LATEST),
])
def test_a_fifo_where_a_data_file_should_be_is_refused_without_waiting(tmp_path, reader, name):
    os.mkfifo(tmp_path / name)
    with pytest.raises((DataError, CheckpointError), match=f"{name}: is a FIFO, not a file"):
        reader(tmp_path / name)


def test_a_file_that_is_not_hdf5_is_not_blamed_on_node_sizes(tmp_path):
    (tmp_path / "g.nir").write_bytes(b"not hdf5 at all")
    with pytest.raises(CheckpointError, match="not an HDF5 file") as info:
        read_nir(tmp_path / "g.nir")
    assert "size" not in str(info.value)


# ------------------------------------------------------------- 8. cache key
def test_a_recording_changed_in_place_with_the_same_size_and_mtime_is_framed_again(tmp_path):
    root = make_plain(tmp_path / "data", real_first=False)
    path = root / "Train" / "1" / "00000.bin"
    first = load_dataset("nmnist", opts(tmp_path, data_dir=root, time_steps=2))
    stamp = path.stat()
    replacement = encode_nmnist_bin(synthetic_events(np.random.default_rng(99), stamp.st_size // 5))
    path.write_bytes(replacement)
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    assert path.stat().st_size == stamp.st_size and path.stat().st_mtime_ns == stamp.st_mtime_ns
    second = load_dataset("nmnist", opts(tmp_path, data_dir=root, time_steps=2))
    assert second.meta["cache"] != first.meta["cache"]
    import tonic

    expected = tonic.transforms.ToFrame(sensor_size=(34, 34, 2), n_event_bins=2)(read_nmnist_bin(path))
    np.testing.assert_array_equal(second.train.inputs[1], expected)


# ------------------------------------------------------------- 9. blank slicing
def test_recordings_sliced_into_nothing_are_counted_in_a_notice(tmp_path):
    root = make_plain(tmp_path / "data", real_first=False)
    short = root / "Train" / "0" / "00000.bin"
    short.write_bytes(encode_nmnist_bin(synthetic_events(np.random.default_rng(1), 5)))
    dataset = load_dataset("nmnist", opts(tmp_path, data_dir=root, time_steps=8))
    assert "1 of 2 train recordings became blank frames" in dataset.meta["notice"]
    assert "at least --time-steps = 8 events" in dataset.meta["notice"]
    assert dataset.meta["event_stats"]["train"]["blank"] == 1


@pytest.mark.parametrize("slicing,events,fragment", [
    ("events", lambda rng: synthetic_events(rng, 5), "at least --time-steps = 8 events"),
    ("time", lambda rng: _at_one_time(synthetic_events(rng, 300)), "longer than 0 us"),
])
def test_a_split_sliced_into_nothing_is_refused(tmp_path, slicing, events, fragment):
    root = make_plain(tmp_path / "data", real_first=False)
    rng = np.random.default_rng(3)
    for path in (root / "Test").glob("*/*.bin"):
        path.write_bytes(encode_nmnist_bin(events(rng)))
    out = tmp_path / "run"
    line = one_line_error(run(["train", "--dataset", "nmnist", "--data-dir", str(root), "--cache-dir",
                               str(tmp_path / "cache"), "--time-steps", "8", "--slicing", slicing, "--epochs", "1",
                               "--out", str(out), "--no-progress"]))
    assert "all 2 test recordings became blank frames" in line and fragment in line
    assert not out.exists() and list((tmp_path / "cache" / "frames").iterdir()) == []


def _at_one_time(events):
    events["t"] = 1000
    return events


def test_a_zip_member_claiming_more_than_the_archive_holds_is_refused(tmp_path):
    path = tmp_path / "a.npz"
    np.savez(path, x=np.arange(4))
    raw = bytearray(path.read_bytes())
    central = raw.index(b"PK\x01\x02")
    raw[central + 24:central + 28] = (2**32 - 1).to_bytes(4, "little")  # the member's uncompressed size
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="member x.npy claims 4,294,967,295 bytes, more than the archive can hold"):
        check_npz(path)
    with pytest.raises(CheckpointError, match="a.npz: corrupt or truncated network file"):
        load_network(path)


def test_a_split_without_samples_is_refused_before_training(monkeypatch):
    import evsim.data
    from evsim.data.base import Dataset, Split

    empty = Split(np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
    full = Split(np.zeros((3, 4), np.float32), np.zeros(3, np.int64))
    monkeypatch.setitem(evsim.data.DATASETS, "hollow",
                        lambda options: Dataset("hollow", full, empty, 2, (4,), "rate", "real"))
    monkeypatch.setitem(evsim.data._CHECKS, "hollow", None)
    with pytest.raises(DataError, match="hollow: the test split holds no samples"):
        load_dataset("hollow")


def test_a_run_id_that_is_not_a_string_is_refused(tmp_path):
    from evsim.runfiles import folder_run_id

    (tmp_path / "config.json").write_text('{"run_id": 7}')
    with pytest.raises(CheckpointError, match="config.json: run_id must be a string, got 7"):
        folder_run_id(tmp_path)
    (tmp_path / "config.json").write_text('{"run_id": "abc"}')
    assert folder_run_id(tmp_path) == "abc" and folder_run_id(tmp_path / "none") is None
