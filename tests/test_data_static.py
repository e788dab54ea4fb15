"""MNIST from tiny IDX files (plain and gzip) and CIFAR-10 from tiny pickle batches."""
import gzip
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from evsim.cli.main import main
from evsim.data import DataOptions, load_dataset
from evsim.data.cifar10 import BATCH_FIX, MEAN, STD, TEST_BATCHES, TRAIN_BATCHES
from evsim.data.mnist import IDX_FIX, IDX_NAMES, read_idx
from evsim.errors import ConfigError, DataError


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("EVSIM_OFFLINE", "1")
    monkeypatch.delenv("EVSIM_DATA", raising=False)
    monkeypatch.setenv("EVSIM_CACHE", str(tmp_path / "default-cache"))


# ---------------------------------------------------------------- MNIST IDX

def idx_bytes(array: np.ndarray) -> bytes:
    magic = 2051 if array.ndim == 3 else 2049
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def make_idx(folder: Path, n_train=6, n_test=4, gz=True, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        for name, array in zip(IDX_NAMES[split], (images, labels)):
            raw = idx_bytes(array)
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(raw))
            else:
                (folder / name).write_bytes(raw)
        arrays[split] = (images, labels)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_full_mnist_from_idx(tmp_path, gz):
    arrays = make_idx(tmp_path / "d", gz=gz)
    ds = load_dataset("mnist", DataOptions(data_dir=tmp_path / "d"))
    assert ds.source == "real" and ds.meta["notice"] is None and ds.encoding == "rate"
    assert ds.train.inputs.shape == (6, 784) and ds.test.inputs.shape == (4, 784)
    np.testing.assert_allclose(ds.train.inputs, arrays["train"][0].reshape(6, -1) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(ds.test.labels, arrays["test"][1])


def test_torchvision_layout_is_found(tmp_path):
    make_idx(tmp_path / "d" / "MNIST" / "raw", gz=False)
    assert load_dataset("mnist", DataOptions(data_dir=tmp_path / "d")).source == "real"


def test_without_idx_the_5k_sample_with_a_notice(tmp_path):
    ds = load_dataset("mnist", DataOptions(data_dir=tmp_path, encoding="direct"))  # a folder without IDX files
    assert ds.source == "mnist-5k" and "5,000-digit sample" in ds.meta["notice"]
    assert len(ds.train) == 4000 and len(ds.test) == 1000 and ds.encoding == "direct"


def test_forced_real_mnist_without_files(tmp_path):
    with pytest.raises(DataError, match="full MNIST not found in .*t10k-labels-idx1-ubyte"):
        load_dataset("mnist", DataOptions(data_dir=tmp_path, source="real"))


def test_mnist_refuses_frames(tmp_path):
    with pytest.raises(ConfigError, match="use encoding rate or direct"):
        load_dataset("mnist", DataOptions(encoding="frames"))


def test_incomplete_idx_set(tmp_path):
    make_idx(tmp_path / "d", gz=False)
    (tmp_path / "d" / IDX_NAMES["test"][1]).unlink()
    with pytest.raises(DataError, match=r"missing t10k-labels-idx1-ubyte \(.gz or not\); put all four there$"):
        load_dataset("mnist", DataOptions(data_dir=tmp_path / "d"))


@pytest.mark.parametrize("damage,match", [
    (lambda raw: raw[:-10], "truncated or corrupt"),
    (lambda raw: (1234).to_bytes(4, "big") + raw[4:], "magic number 1234, expected 2051"),
    (lambda raw: raw[:6], "too short for an IDX header"),
])
def test_corrupt_idx_files(tmp_path, damage, match):
    make_idx(tmp_path / "d", gz=False)
    path = tmp_path / "d" / IDX_NAMES["train"][0]
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DataError, match=f"train-images-idx3-ubyte: .*{match}.*{re.escape(IDX_FIX)}$"):
        load_dataset("mnist", DataOptions(data_dir=tmp_path / "d"))


def test_unreadable_gzip(tmp_path):
    make_idx(tmp_path / "d", gz=True)
    (tmp_path / "d" / f"{IDX_NAMES['test'][0]}.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match=rf"t10k-images-idx3-ubyte\.gz: cannot read IDX file \(.*\); "
                                        rf"{re.escape(IDX_FIX)}$"):
        load_dataset("mnist", DataOptions(data_dir=tmp_path / "d"))


def test_idx_content_checks(tmp_path):
    make_idx(tmp_path / "d", gz=False)
    labels = tmp_path / "d" / IDX_NAMES["train"][1]
    labels.write_bytes(idx_bytes(np.array([1, 2, 3], np.uint8)))
    with pytest.raises(DataError, match="3 labels for 6 images in train-images-idx3-ubyte; the two files are not one "
                                        r"split's: replace both with the originals \(re-download them\)$"):
        load_dataset("mnist", DataOptions(data_dir=tmp_path / "d"))
    labels.write_bytes(idx_bytes(np.array([1, 2, 3, 4, 5, 12], np.uint8)))
    with pytest.raises(DataError, match=f"label 12 is not a digit 0..9; {re.escape(IDX_FIX)}$"):
        load_dataset("mnist", DataOptions(data_dir=tmp_path / "d"))
    images = tmp_path / "d" / IDX_NAMES["train"][0]
    images.write_bytes(idx_bytes(np.zeros((6, 20, 20), np.uint8)))
    with pytest.raises(DataError, match=f"images are 20x20, MNIST needs 28x28; {re.escape(IDX_FIX)}$"):
        load_dataset("mnist", DataOptions(data_dir=tmp_path / "d"))


def test_read_idx_labels(tmp_path):
    path = tmp_path / "labels"
    path.write_bytes(idx_bytes(np.arange(5, dtype=np.uint8)))
    assert read_idx(path, 1).tolist() == [0, 1, 2, 3, 4]


# ---------------------------------------------------------------- CIFAR-10

def make_cifar(root: Path, per_batch=3, seed=0) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for name in TRAIN_BATCHES + TEST_BATCHES:
        batch = {b"batch_label": name.encode(), b"labels": rng.integers(0, 10, per_batch).tolist(),
                 b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 b"filenames": [b"x.png"] * per_batch}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    return folder


def test_cifar10_direct_and_rate(tmp_path):
    folder = make_cifar(tmp_path)
    direct = load_dataset("cifar10", DataOptions(data_dir=tmp_path))
    rate = load_dataset("cifar10", DataOptions(data_dir=tmp_path, encoding="rate"))
    assert direct.encoding == "direct" and rate.encoding == "rate" and direct.source == "real"
    assert direct.train.inputs.shape == (15, 3072) and direct.test.inputs.shape == (3, 3072)
    assert direct.sample_shape == (3, 32, 32) and direct.n_classes == 10
    with open(folder / "data_batch_1", "rb") as f:
        first = pickle.load(f, encoding="bytes")[b"data"][0]
    np.testing.assert_allclose(rate.train.inputs[0], first / 255.0, rtol=1e-6)
    planes = (first.reshape(3, 1024) / 255.0 - MEAN[:, None]) / STD[:, None]
    np.testing.assert_allclose(direct.train.inputs[0], planes.ravel(), rtol=1e-5, atol=1e-6)
    assert 0.0 <= rate.train.inputs.min() and rate.train.inputs.max() <= 1.0


def test_cifar10_folder_itself_as_data_dir(tmp_path):
    folder = make_cifar(tmp_path)
    assert len(load_dataset("cifar10", DataOptions(data_dir=folder)).test) == 3


def test_cifar10_absent(tmp_path):
    with pytest.raises(DataError, match="CIFAR-10 not found in .*cifar-10-batches-py/data_batch_1..5"):
        load_dataset("cifar10", DataOptions(data_dir=tmp_path))


def test_cifar10_has_no_emulation_and_no_frames(tmp_path):
    with pytest.raises(ConfigError, match="there is no emulated CIFAR-10"):
        load_dataset("cifar10", DataOptions(data_dir=tmp_path, source="emulated"))
    with pytest.raises(ConfigError, match="use encoding direct or rate"):
        load_dataset("cifar10", DataOptions(data_dir=tmp_path, encoding="frames"))


class Evil:
    def __reduce__(self):
        import os
        return (os.system, ("echo owned",))


@pytest.mark.parametrize("content,match", [
    (b"\x80\x02}q\x00(X\x04", "not a readable CIFAR-10 pickle batch"),
    (b"", "not a readable CIFAR-10 pickle batch"),
    (pickle.dumps(Evil()), "refusing to load"),
    (pickle.dumps([1, 2, 3]), "must be a dict with b'data' and b'labels'"),
    (pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}), r"expected uint8 data \[N, 3072\]"),
    (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}), "label 10 is not a class"),
])
def test_bad_cifar_batches(tmp_path, content, match):
    folder = make_cifar(tmp_path)
    (folder / "data_batch_3").write_bytes(content)
    with pytest.raises(DataError, match=f"data_batch_3: .*{match}.*; {re.escape(BATCH_FIX)}$"):
        load_dataset("cifar10", DataOptions(data_dir=tmp_path))


def test_missing_cifar_batch(tmp_path):
    folder = make_cifar(tmp_path)
    (folder / "test_batch").unlink()
    with pytest.raises(DataError, match="test_batch: missing CIFAR-10 batch"):
        load_dataset("cifar10", DataOptions(data_dir=tmp_path))


def test_cli_corrupt_pickle_is_one_line_exit_2(tmp_path):
    folder = make_cifar(tmp_path)
    (folder / "data_batch_2").write_bytes(b"garbage")
    result = CliRunner().invoke(main, ["data", "info", "--dataset", "cifar10", "--data-dir", str(tmp_path)],
                                prog_name="evsim")
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "data_batch_2: not a readable CIFAR-10 pickle" in lines[0]


def test_cli_info_mnist_prints_the_notice(tmp_path):
    result = CliRunner().invoke(main, ["data", "info", "--dataset", "mnist", "--data-dir", str(tmp_path)],
                                prog_name="evsim")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("NOTICE: full MNIST (IDX files) not found")
    assert "data_source  mnist-5k" in result.output


# ---------------------------------------------------------------- mutation audit

def test_idx_file_with_trailing_bytes_is_corrupt(tmp_path):
    make_idx(tmp_path / "d", gz=False)
    path = tmp_path / "d" / IDX_NAMES["test"][1]
    path.write_bytes(path.read_bytes() + b"\x00")
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte: holds 5 data bytes but its header says \(4,\)"):
        load_dataset("mnist", DataOptions(data_dir=tmp_path / "d"))


def test_read_idx_images_big_endian_dims(tmp_path):
    images = np.arange(2 * 3 * 300, dtype=np.int64).reshape(2, 3, 300) % 251
    path = tmp_path / "images"
    path.write_bytes(idx_bytes(images))  # 300 > 255: a dimension that needs two bytes
    np.testing.assert_array_equal(read_idx(path, 3), images.astype(np.uint8))


def test_mnist_label_10_and_non_square_images_are_refused(tmp_path):
    make_idx(tmp_path / "d", gz=False)
    labels = tmp_path / "d" / IDX_NAMES["train"][1]
    labels.write_bytes(idx_bytes(np.array([1, 2, 3, 4, 5, 10], np.uint8)))
    with pytest.raises(DataError, match=f"label 10 is not a digit 0..9; {re.escape(IDX_FIX)}$"):
        load_dataset("mnist", DataOptions(data_dir=tmp_path / "d"))
    make_idx(tmp_path / "e", gz=False)
    (tmp_path / "e" / IDX_NAMES["train"][0]).write_bytes(idx_bytes(np.zeros((6, 28, 20), np.uint8)))
    with pytest.raises(DataError, match=f"images are 28x20, MNIST needs 28x28; {re.escape(IDX_FIX)}$"):
        load_dataset("mnist", DataOptions(data_dir=tmp_path / "e"))


def test_mnist_intensities_are_bytes_over_255(tmp_path):
    make_idx(tmp_path / "d", n_train=1, n_test=1, gz=False)
    images = np.zeros((1, 28, 28), np.uint8)
    images[0, 0, :4] = [0, 51, 128, 255]
    (tmp_path / "d" / IDX_NAMES["train"][0]).write_bytes(idx_bytes(images))
    ds = load_dataset("mnist", DataOptions(data_dir=tmp_path / "d"))
    np.testing.assert_allclose(ds.train.inputs[0, :4], [0.0, 0.2, 128 / 255, 1.0], rtol=1e-6)


def test_emulated_source_uses_the_5k_sample_even_with_idx_files(tmp_path):
    make_idx(tmp_path / "d", gz=False)
    ds = load_dataset("mnist", DataOptions(data_dir=tmp_path / "d", source="emulated"))
    assert ds.source == "mnist-5k" and len(ds.train) == 4000 and "source emulated" in ds.meta["notice"]


def test_cifar10_normalisation_uses_the_standard_constants(tmp_path):
    """Per-channel mean and std of the CIFAR-10 training set (R, G, B), written out here."""
    folder = make_cifar(tmp_path, per_batch=1)
    direct = load_dataset("cifar10", DataOptions(data_dir=tmp_path))
    with open(folder / "data_batch_1", "rb") as f:
        first = pickle.load(f, encoding="bytes")[b"data"][0].astype(np.float64)
    mean = np.repeat([0.4914, 0.4822, 0.4465], 1024)
    std = np.repeat([0.2470, 0.2435, 0.2616], 1024)
    np.testing.assert_allclose(direct.train.inputs[0], (first / 255 - mean) / std, rtol=1e-5, atol=1e-5)
    assert direct.meta["normalization"] == {"mean": pytest.approx([0.4914, 0.4822, 0.4465]),
                                            "std": pytest.approx([0.2470, 0.2435, 0.2616])}


@pytest.mark.parametrize("batch,match", [
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [3, -1]}, "label -1 is not a class 0..9"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [3, 9.5]}, r"label 9\.5 is not a class 0..9"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [3.7, 3]}, r"label 3\.7 is not a class 0..9"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [float("nan"), 3]}, "label nan is not a class 0..9"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": ["cat", "dog"]}, "labels must be whole numbers 0..9"),
    ({b"data": np.zeros((2, 3072), np.float64), b"labels": [0, 1]}, r"expected uint8 data .* float64"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1, 2]}, "and 3 labels"),
])
def test_more_bad_cifar_batches(tmp_path, batch, match):
    folder = make_cifar(tmp_path)
    (folder / "data_batch_5").write_bytes(pickle.dumps(batch))
    with pytest.raises(DataError, match=f"data_batch_5: .*{match}.*; {re.escape(BATCH_FIX)}$"):
        load_dataset("cifar10", DataOptions(data_dir=tmp_path))
