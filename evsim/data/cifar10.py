"""CIFAR-10 from its python pickle batches (``cifar-10-batches-py``); no offline substitute.

Expected under ``--data-dir`` / ``$EVSIM_DATA`` (DIR): ``DIR/cifar-10-batches-py/``
(or DIR itself) holding ``data_batch_1`` .. ``data_batch_5`` and ``test_batch``, each a
pickled dict with ``b"data"`` (``[10000, 3072]`` uint8, channel planes R, G, B of
32 x 32) and ``b"labels"``. The pickles are read with an unpickler that only admits
NumPy arrays and plain containers, so a malicious file cannot run code.

Encodings: ``"direct"`` (default; the image, normalised per channel with the usual
CIFAR-10 mean and std, repeated at every time step) or ``"rate"`` (intensities in
[0, 1] as Bernoulli spike probabilities).
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from evsim.data import refuse_framing_options, register
from evsim.data.base import DataOptions, Dataset, Split, check_source
from evsim.data.base import data_dir_of
from evsim.data.cache import files_fingerprint
from evsim.errors import ConfigError, DataError
from evsim.readers import reads

FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = [f"data_batch_{k}" for k in range(1, 6)]
TEST_BATCHES = ["test_batch"]
BATCH_FIX = "replace it with the original from cifar-10-python.tar.gz (re-download it)"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
MEAN = np.array([0.4914, 0.4822, 0.4465], dtype=np.float32)
STD = np.array([0.2470, 0.2435, 0.2616], dtype=np.float32)
_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
            ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


class _SafeUnpickler(pickle.Unpickler):
    """Admits only what a CIFAR batch contains (NumPy arrays, dicts, lists, bytes)."""

    def find_class(self, module, name):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


@reads("CIFAR-10 pickle batch")
def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images ``[N, 3072]`` uint8 and labels ``[N]`` int64 of one pickle batch.

    Raises
    ------
    DataError
        If the file is missing or not a valid pickle, or lacks ``data``/``labels`` of
        consistent shapes (at least one image) with labels 0..9.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            batch = _SafeUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise DataError(f"{path}: missing CIFAR-10 batch; the folder needs {', '.join(TRAIN_BATCHES + TEST_BATCHES)}") from None
    except Exception as exc:  # a corrupt pickle can raise almost anything
        raise DataError(f"{path}: not a readable CIFAR-10 pickle batch ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else 'corrupt'}); {BATCH_FIX}") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DataError(f"{path}: CIFAR-10 batch must be a dict with b'data' and b'labels'; {BATCH_FIX}")
    data, labels = _array(path, batch[b"data"], "data"), _array(path, batch[b"labels"], "labels")
    if data.ndim != 2 or data.shape[1] != 3072 or data.dtype != np.uint8 or labels.shape != (len(data),):
        got = f"{len(labels)} labels" if labels.ndim == 1 else f"labels of shape {labels.shape}"
        raise DataError(f"{path}: expected uint8 data [N, 3072] and a list of N labels, got data {data.shape} "
                        f"{data.dtype} and {got}; {BATCH_FIX}")
    if len(data) == 0:
        raise DataError(f"{path}: CIFAR-10 batch holds no images; {BATCH_FIX}")
    if labels.dtype.kind not in "iuf":
        raise DataError(f"{path}: labels must be whole numbers 0..9, got {labels.dtype} values; {BATCH_FIX}")
    bad = labels[(labels < 0) | (labels > 9) | (labels != np.floor(labels))]  # NaN is != itself
    if bad.size:
        raise DataError(f"{path}: label {bad[0].item()!r} is not a class 0..9; {BATCH_FIX}")
    return data, labels.astype(np.int64)


def _array(path: Path, value, name: str) -> np.ndarray:
    """``value`` as a NumPy array (a ragged list or an object that is no array is refused)."""
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise DataError(f"{path}: b'{name}' is not an array ({str(exc).splitlines()[0]}); {BATCH_FIX}") from None
    if array.dtype.hasobject:
        raise DataError(f"{path}: b'{name}' must hold numbers, got {type(value).__name__} of Python objects; "
                        f"{BATCH_FIX}")
    return array


def check_cifar10_options(options: DataOptions) -> None:
    """Refuse options that do not apply to CIFAR-10 (run before anything loads).

    Raises
    ------
    ConfigError
        For an unknown source or ``source="emulated"`` (there is no substitute), a
        frame encoding, or a framing option (``--slicing``, ``--crop``,
        ``--denoise-us``, ``--downsample``) set away from its default.
    """
    check_source(options.source)
    if options.source == "emulated":
        raise ConfigError("there is no emulated CIFAR-10; use --source auto or real with the real batches")
    if options.encoding not in (None, "direct", "rate"):
        raise ConfigError(f"CIFAR-10 is static images: use encoding direct or rate, not {options.encoding!r}")
    refuse_framing_options("cifar10", options)


def find_cifar10(options: DataOptions) -> Path:
    """The folder holding the CIFAR-10 batches (``options`` already checked).

    Raises
    ------
    DataError
        If no folder with ``data_batch_1`` is found.
    """
    data_dir = data_dir_of(options)
    if data_dir is not None:
        for folder in (data_dir / FOLDER, data_dir):
            if (folder / TRAIN_BATCHES[0]).is_file():
                return folder
    raise DataError(f"CIFAR-10 not found in {data_dir or '--data-dir (or $EVSIM_DATA)'}; put the python "
                    f"version there: {FOLDER}/data_batch_1..5 and {FOLDER}/test_batch")


def _load_split(folder: Path, names: list[str], encoding: str) -> Split:
    parts = [read_batch(folder / name) for name in names]
    images = np.concatenate([p[0] for p in parts]).astype(np.float32) * np.float32(1.0 / 255.0)
    labels = np.concatenate([p[1] for p in parts])
    if encoding == "direct":
        planes = images.reshape(len(images), 3, 1024)
        planes -= MEAN[None, :, None]
        planes /= STD[None, :, None]
    return Split(images, labels)


@register("cifar10", check=check_cifar10_options)
def load_cifar10(options: DataOptions) -> Dataset:
    """CIFAR-10 as ``[N, 3072]`` float32 (channel-major 3 x 32 x 32); ``options`` are
    checked first by :func:`check_cifar10_options` (through :func:`evsim.data.load_dataset`).

    Returns
    -------
    Dataset
        ``encoding`` ``"direct"`` (normalised values) or ``"rate"`` ([0, 1]);
        ``source="real"``; ``meta`` with ``classes``, ``sensor_size`` and
        ``normalization`` (mean/std, or ``None`` for rate coding).

    Raises
    ------
    DataError
        If the batches are absent or corrupt.
    """
    encoding = options.encoding or "direct"
    folder = find_cifar10(options)
    train = _load_split(folder, TRAIN_BATCHES, encoding)
    test = _load_split(folder, TEST_BATCHES, encoding)
    norm = {"mean": MEAN.tolist(), "std": STD.tolist()} if encoding == "direct" else None
    return Dataset(name="cifar10", train=train, test=test, n_classes=10, sample_shape=(3, 32, 32),
                   encoding=encoding, source="real",
                   meta={"classes": CLASSES, "sensor_size": [32, 32, 3], "root": str(folder),
                         "normalization": norm, "notice": None,
                         "fingerprint": {split: files_fingerprint([folder / name for name in names], [0] * len(names))
                                         for split, names in (("train", TRAIN_BATCHES), ("test", TEST_BATCHES))}})
