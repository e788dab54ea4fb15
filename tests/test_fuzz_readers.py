"""Property-based fuzzing of every reader of a file format evsim reads: IDX (plain and
gzip), CIFAR-10 pickle batches, N-MNIST ``.bin``, DVS-Gesture ``.npy``, TOML config
files, ``config.json``, ``.npz`` checkpoints and networks, NIR graphs, the emulator's
manifest and frame-cache entries.

Each is fed valid files truncated, bit-flipped or spliced, random bytes, and files of
the right format but random structure. The property: the reader returns (a correct
result) or raises one EvsimError, in one line naming the file; never another exception.
"""
import gzip
import io
import json
import pickle
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from evsim.checkpoint import CHECKPOINT_LATEST, NETWORK_FILE, load_checkpoint, load_network
from evsim.cli.runs import read_config
from evsim.config import read_config_file
from evsim.data.cache import load_entry
from evsim.data.cifar10 import read_batch
from evsim.data.dvsgesture import read_gesture_npy
from evsim.data.emulate import MANIFEST, read_manifest
from evsim.data.events import encode_nmnist_bin, read_nmnist_bin, splits_from_entry
from evsim.data.mnist import read_idx
from evsim.errors import EvsimError
from evsim.nir_io import read_nir, write_nir
from evsim.train import Trainer
from tests.runs import toy_config, toy_dataset

FUZZ = settings(max_examples=100, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
TOML_KEYS = ["dataset", "epochs", "hidden", "lr", "data_dir", "dev_interval", "seed"]


def clean_or_result(read, path: Path, *args):
    """``read(path, *args)``: a result, or one EvsimError naming ``path`` in one line."""
    try:
        return read(path, *args)
    except EvsimError as exc:
        message = str(exc)
        assert "\n" not in message and str(path) in message, message
        return exc


# ---------------------------------------------------------------- mutations
@st.composite
def mutated(draw, seed: bytes) -> bytes:
    """``seed`` truncated, with bits flipped, with random bytes spliced in, or random bytes."""
    kind = draw(st.sampled_from(["truncate", "flip", "splice", "random"]))
    if kind == "truncate":
        return seed[:draw(st.integers(0, max(len(seed) - 1, 0)))]
    if kind == "random":
        return draw(st.binary(max_size=4096))
    data = bytearray(seed)
    if kind == "flip":
        for _ in range(draw(st.integers(1, 16))):
            position = draw(st.integers(0, len(data) - 1))
            data[position] ^= 1 << draw(st.integers(0, 7))
        return bytes(data)
    position = draw(st.integers(0, len(data)))
    return bytes(data[:position]) + draw(st.binary(min_size=1, max_size=64)) + bytes(data[position:])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20)
small_arrays = st.builds(
    lambda shape, dtype, fill: np.full(shape, fill).astype(dtype),
    st.lists(st.integers(0, 4), max_size=3).map(tuple),
    st.sampled_from(["uint8", "int32", "int64", "float32", "float64", "bool", "U3"]),
    st.integers(-3, 300))


def deep(depth: int, opening: str = "[", closing: str = "]") -> str:
    return opening * depth + closing * depth


# ---------------------------------------------------------------- seeds
@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    """One valid file of every format."""
    folder = tmp_path_factory.mktemp("seeds")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    idx = (2051).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in images.shape) + images.tobytes()
    events = np.zeros(40, dtype=[("x", "<i8"), ("y", "<i8"), ("t", "<i8"), ("p", "<i8")])
    events["x"], events["y"] = rng.integers(0, 34, 40), rng.integers(0, 34, 40)
    events["t"], events["p"] = np.sort(rng.integers(0, 10_000, 40)), rng.integers(0, 2, 40)
    gesture = io.BytesIO()
    np.save(gesture, np.column_stack([rng.integers(0, 128, (30, 2)), rng.integers(0, 2, 30),
                                      np.sort(rng.integers(0, 900, 30))]).astype(np.float64))
    cifar = pickle.dumps({b"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8), b"labels": [3, 7]}, protocol=2)
    run_dir = folder / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("evsim.train.plot_training", lambda *args: None)
        trainer = Trainer(toy_config(epochs=1), toy_dataset())
        trainer.fit(run_dir, progress=False, echo=lambda line: None)
    write_nir(folder / "net.nir", trainer.network)
    return {"idx": idx, "idx.gz": gzip.compress(idx), "bin": encode_nmnist_bin(events), "npy": gesture.getvalue(),
            "cifar": cifar, "toml": b'dataset = "mnist"\nepochs = 3\nhidden = [16, 8]\nlr = 0.001\n',
            "config.json": (run_dir / "config.json").read_bytes(),
            "checkpoint": (run_dir / CHECKPOINT_LATEST).read_bytes(), "network": (run_dir / NETWORK_FILE).read_bytes(),
            "nir": (folder / "net.nir").read_bytes(), "manifest": json.dumps({"splits": {"Train": {"samples": 3}}})}


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------- data formats
@FUZZ
@given(data=st.data(), gz=st.booleans())
def test_idx_reader(seeds, tmp_path, data, gz):
    raw = data.draw(mutated(seeds["idx.gz" if gz else "idx"]))
    path = write(tmp_path / ("images.gz" if gz else "images"), raw)
    result = clean_or_result(read_idx, path, 3)
    if isinstance(result, np.ndarray):
        assert result.dtype == np.uint8 and result.ndim == 3 and result.size == int(np.prod(result.shape)) > 0


@FUZZ
@given(dims=st.lists(st.integers(0, 2**32 - 1), min_size=3, max_size=3), extra=st.integers(0, 3000))
def test_idx_reader_random_headers(tmp_path, dims, extra):
    path = write(tmp_path / "images", (2051).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)
                 + bytes(extra))
    result = clean_or_result(read_idx, path, 3)
    if isinstance(result, np.ndarray):
        assert result.shape == tuple(dims) and int(np.prod(dims)) == extra


@FUZZ
@given(data=st.data())
def test_cifar_reader(seeds, tmp_path, data):
    structured = data.draw(st.booleans())
    if structured:
        batch = data.draw(st.dictionaries(st.sampled_from([b"data", b"labels", b"other"]), json_values | small_arrays,
                                          max_size=3))
        raw = pickle.dumps(batch)
    else:
        raw = data.draw(mutated(seeds["cifar"]))
    result = clean_or_result(read_batch, write(tmp_path / "data_batch_1", raw))
    if isinstance(result, tuple):
        images, labels = result
        assert images.dtype == np.uint8 and images.shape == (len(labels), 3072) and len(labels) > 0
        assert labels.dtype == np.int64 and labels.min() >= 0 and labels.max() <= 9


@FUZZ
@given(data=st.data())
def test_nmnist_reader(seeds, tmp_path, data):
    result = clean_or_result(read_nmnist_bin, write(tmp_path / "00000.bin", data.draw(mutated(seeds["bin"]))))
    if not isinstance(result, EvsimError):
        assert len(result) > 0 and result["x"].max() < 34 and result["y"].max() < 34


@FUZZ
@given(data=st.data())
def test_dvsgesture_reader(seeds, tmp_path, data):
    if data.draw(st.booleans()):
        buffer = io.BytesIO()
        np.save(buffer, data.draw(small_arrays))
        raw = buffer.getvalue()
    else:
        raw = data.draw(mutated(seeds["npy"]))
    result = clean_or_result(read_gesture_npy, write(tmp_path / "3.npy", raw))
    if not isinstance(result, EvsimError):
        assert len(result) > 0 and result["x"].max() < 128 and set(np.unique(result["p"])) <= {0, 1}


# ---------------------------------------------------------------- configuration
toml_tokens = st.sampled_from(["[", "]", "{", "}", "=", ",", "\n", " ", '"', "'", "#", "hidden", "epochs", "lr",
                               "data_dir", "1", "1e999", "nan", "inf", "true", '"x"', "[[a]]", "\\u0000", "\x00"])


@FUZZ
@given(data=st.data())
def test_toml_reader(seeds, tmp_path, data):
    kind = data.draw(st.sampled_from(["mutated", "tokens", "deep"]))
    if kind == "mutated":
        raw = data.draw(mutated(seeds["toml"]))
    elif kind == "tokens":
        raw = "".join(data.draw(st.lists(toml_tokens, max_size=40))).encode()
    else:
        raw = f"hidden = {deep(data.draw(st.integers(1, 6000)))}\n".encode()
    result = clean_or_result(read_config_file, write(tmp_path / "c.toml", raw), TOML_KEYS)
    if isinstance(result, dict):
        assert set(result) <= set(TOML_KEYS) and not any(isinstance(v, dict) for v in result.values())


@FUZZ
@given(data=st.data())
def test_config_json_reader(seeds, tmp_path, data):
    kind = data.draw(st.sampled_from(["mutated", "random", "field", "deep"]))
    if kind == "mutated":
        raw = data.draw(mutated(seeds["config.json"]))
    elif kind == "random":
        raw = json.dumps(data.draw(json_values)).encode()
    elif kind == "field":  # the right structure, one value replaced
        values = json.loads(seeds["config.json"])
        values[data.draw(st.sampled_from(sorted(values)))] = data.draw(json_values)
        raw = json.dumps(values).encode()
    else:
        raw = deep(data.draw(st.integers(1, 100_000))).encode()
    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    write(run_dir / "config.json", raw)
    clean_or_result(lambda path: read_config(path.parent), run_dir / "config.json")


# ---------------------------------------------------------------- checkpoints and networks
def npz_with(seed: bytes, replace: dict) -> bytes:
    """The ``.npz`` ``seed`` with members replaced (``name -> array``; meta as a string)."""
    with np.load(io.BytesIO(seed), allow_pickle=False) as f:
        arrays = {name: f[name] for name in f.files}
    arrays.update(replace)
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


@st.composite
def restructured_npz(draw, seed: bytes) -> bytes:
    """``seed`` with its meta's fields or one of its arrays replaced by random values."""
    with np.load(io.BytesIO(seed), allow_pickle=False) as f:
        meta, names = json.loads(str(f["meta"])), [n for n in f.files if n != "meta"]
    if draw(st.booleans()):
        meta[draw(st.sampled_from(sorted(meta)))] = draw(json_values)
        return npz_with(seed, {"meta": np.array(json.dumps(meta))})
    return npz_with(seed, {draw(st.sampled_from(names)): draw(small_arrays)})


@FUZZ
@given(data=st.data())
def test_checkpoint_reader(seeds, tmp_path, data):
    seed = seeds["checkpoint"]
    raw = data.draw(restructured_npz(seed) if data.draw(st.booleans()) else mutated(seed))
    clean_or_result(load_checkpoint, write(tmp_path / CHECKPOINT_LATEST, raw))


@FUZZ
@given(data=st.data())
def test_network_reader(seeds, tmp_path, data):
    seed = seeds["network"]
    raw = data.draw(restructured_npz(seed) if data.draw(st.booleans()) else mutated(seed))
    result = clean_or_result(load_network, write(tmp_path / NETWORK_FILE, raw))
    if not isinstance(result, EvsimError):
        assert all(np.isfinite(layer.store.data).all() for layer in result.layers)


# ---------------------------------------------------------------- NIR
@FUZZ
@given(data=st.data())
def test_nir_reader(seeds, tmp_path, data):
    path = tmp_path / "g.nir"
    if data.draw(st.booleans()):
        path.write_bytes(seeds["nir"])
        with h5py.File(path, "r+") as f:
            datasets = []
            f.visititems(lambda name, item: datasets.append(name) if isinstance(item, h5py.Dataset) else None)
            name = data.draw(st.sampled_from(sorted(datasets)))
            del f[name]
            value = data.draw(small_arrays | st.sampled_from([b"text", "text", 1.5, -3]))
            f[name] = value if not (isinstance(value, np.ndarray) and value.dtype.kind == "U") else value.astype("S")
    else:
        # bit flips inside HDF5's structures can crash the HDF5 C library itself, which no
        # Python code can catch: flip only within the last half, where the data lies
        seed = seeds["nir"]
        half = len(seed) // 2
        raw = data.draw(st.one_of(st.integers(0, len(seed) - 1).map(lambda n: seed[:n]),
                                  mutated(seed[half:]).map(lambda tail: seed[:half] + tail)))
        path.write_bytes(raw)
    clean_or_result(read_nir, path)


# ---------------------------------------------------------------- evsim's own caches
@FUZZ
@given(data=st.data())
def test_emulator_manifest_reader(seeds, tmp_path, data):
    raw = data.draw(mutated(seeds["manifest"].encode()) | json_values.map(lambda v: json.dumps(v).encode())
                    | st.integers(1, 50_000).map(lambda n: deep(n).encode()))
    write(tmp_path / MANIFEST, raw)
    result = read_manifest(tmp_path)
    assert result is None or (isinstance(result, dict) and isinstance(result.get("splits", {}), dict))


@pytest.fixture(scope="module")
def cache_entry(tmp_path_factory):
    """A frame-cache entry of two tiny splits."""
    from evsim.data.events import build_frames_entry

    folder = tmp_path_factory.mktemp("entry")
    rng = np.random.default_rng(4)
    files = []
    for k in range(2):
        events = np.zeros(30, dtype=[("x", "<i8"), ("y", "<i8"), ("t", "<i8"), ("p", "<i8")])
        events["x"], events["y"] = rng.integers(0, 34, 30), rng.integers(0, 34, 30)
        events["t"], events["p"] = np.sort(rng.integers(0, 5000, 30)), rng.integers(0, 2, 30)
        files.append(write(folder / f"{k}.bin", encode_nmnist_bin(events)))
    entry = folder / "entry"
    entry.mkdir()
    splits = {"train": (files, np.array([0, 1])), "test": (files, np.array([1, 0]))}
    build_frames_entry(entry, splits, read_nmnist_bin, lambda e: e, (34, 34, 2), 2, "events",
                       {"dataset": "nmnist", "classes": [str(d) for d in range(10)]}, False)
    return entry


@FUZZ
@given(data=st.data())
def test_frame_cache_entry_reader(cache_entry, tmp_path, data):
    entry = tmp_path / "entry"
    shutil.rmtree(entry, ignore_errors=True)
    shutil.copytree(cache_entry, entry)
    victim = data.draw(st.sampled_from(sorted(p.name for p in entry.iterdir())))
    write(entry / victim, data.draw(mutated((entry / victim).read_bytes())))
    result = load_entry(entry, splits_from_entry)
    assert result is None or len(result[0][0]) == len(result[0][0].labels)
