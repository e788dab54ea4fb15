"""More event datasets: SHD, CIFAR10-DVS, POKER-DVS (as tonic stores them, or as their
authors ship them) and a folder of the user's own recordings.

All are read from ``--data-dir`` / ``$EVSIM_DATA`` (DIR; nothing is downloaded), framed
like N-MNIST and DVS-Gesture (``--time-steps``, ``--slicing``, ``--denoise-us``, and
``--downsample`` for the 128 x 128 sensors) and cached the same way. Layouts:

``shd``         ``DIR/SHD/shd_train.h5`` and ``shd_test.h5`` (tonic's ``SHD``; also
                directly in DIR): the Spiking Heidelberg Digits, 700 cochlea channels,
                20 classes; HDF5 ``spikes/times`` (s), ``spikes/units``, ``labels``.
                Frames are ``[T, 1, 1, 700]``; ``--slicing time`` suits audio.
``cifar10dvs``  ``DIR/CIFAR10DVS/<class>/*.aedat4`` (tonic's; reading them needs
                ``pip install aedat``) or ``*.aedat`` (AEDAT 2.0, the authors' release,
                read here), also as ``DIR/<class>/``; classes ``airplane`` ..
                ``truck``. No official split: the first 90 % of each class's
                recordings (by number) train, the rest test, as is customary.
``pokerdvs``    ``DIR/POKERDVS/pips_train/<cl|he|di|sp>/*.npy`` and ``pips_test/``
                (tonic's; also without the ``POKERDVS`` level): ``[N, 4]`` rows
                ``t, x, y, p``, 35 x 35 sensor, 4 card suits.
``folder``      your own recordings: ``DIR/<class>/<recording>`` (classes are the
                subfolder names in sorted order), or ``DIR/train/<class>/...`` and
                ``DIR/test/<class>/...``. Without train/test folders, a seeded
                stratified 20 % of the recordings is the test split. A recording is:
                ``.npy``, a structured array with fields ``x, y, t, p`` or an
                ``[N, 4]`` array of columns ``x, y, t, p``; ``.npz`` with arrays ``x``,
                ``y``, ``t``, ``p``; or ``.bin`` in N-MNIST's 40-bit format. ``t`` in
                microseconds, ``p`` 0 (OFF) or 1 (ON), ``x``/``y`` pixel indices. The
                sensor is the smallest that holds every event (``DIR/sensor.txt``,
                ``WIDTH HEIGHT``, fixes it instead), at most ``MAX_SENSOR_SIDE``
                pixels a side.
"""
from __future__ import annotations

import functools
import itertools
import os
import re
from pathlib import Path

import numpy as np

from evsim.data import refuse_framing_options, register
from evsim.data.base import DataOptions, Dataset, check_source, data_dir_of, stratified_indices
from evsim.data.cache import cache_key, files_fingerprint, resolve_cache_dir
from evsim.data.events import (INT64_LIMIT, OUTSIDE_SENSOR_FIX, blank_notice, check_framing, check_in_sensor,
                               read_nmnist_bin)
from evsim.data.nmnist import EventFiles, _pick, frames_cached
from evsim.errors import ConfigError, DataError, EvsimError
from evsim.files import write_json_atomic
from evsim.readers import cannot_read, check_npz, check_regular, load_npy, read_json, read_small_file, reading

EVENTS_DTYPE = np.dtype([("x", np.int64), ("y", np.int64), ("t", np.int64), ("p", np.int64)])
CIFAR10DVS_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
POKERDVS_CLASSES = ["cl", "he", "di", "sp"]
RECORDING_SUFFIXES = (".npy", ".npz", ".bin")
# Sample readers for `evsim data show`: name -> (options, split, index) -> (events, label, sensor, path).
SAMPLE_EVENTS: dict = {}


def _structured(x, y, t, p) -> np.ndarray:
    events = np.empty(len(t), dtype=EVENTS_DTYPE)
    events["x"], events["y"], events["t"], events["p"] = x, y, t, p
    return events[np.argsort(events["t"], kind="stable")]


def _checked(raw: np.ndarray, path, sensor: tuple, outside_fix: str = OUTSIDE_SENSOR_FIX) -> np.ndarray:
    """``raw`` float64 ``[N, 4]`` columns x, y, t, p as events, after checks that name the file
    (and ``outside_fix`` for an event outside ``sensor``)."""
    if len(raw) == 0:
        raise DataError(f"{path}: recording holds no events; remove the file or replace it with a good copy")
    for bad, what in ((~np.isfinite(raw).all(axis=1), "a NaN or infinite value"),
                      ((raw[:, :3] != np.floor(raw[:, :3])).any(axis=1), "a fractional coordinate or time"),
                      (~np.isin(raw[:, 3], (0, 1)), "a polarity other than 0 or 1"),
                      ((raw[:, :2] < 0).any(axis=1), "a negative coordinate"),
                      ((np.abs(raw[:, :3]) >= INT64_LIMIT).any(axis=1), "a coordinate or time beyond int64")):
        if bad.any():
            raise DataError(f"{path}: event {np.flatnonzero(bad)[0]} has {what} ({int(bad.sum())} such events); "
                            "the recording is corrupt: fix that event, or replace the file with a good copy")
    check_in_sensor(raw[:, 0], raw[:, 1], sensor, path, outside_fix)
    return _structured(*(raw[:, k].astype(np.int64) for k in range(4)))


def event_transform(options: DataOptions, sensor: tuple):
    """``events -> events`` (denoise, then downsample) and the sensor size after it."""
    import tonic

    steps = []
    if options.denoise_us:
        steps.append(tonic.transforms.Denoise(filter_time=options.denoise_us))
    sensor_out = tuple(sensor)
    longer = max(sensor[:2])
    if options.downsample and options.downsample != longer:
        # One factor for both axes, the longer side to the size asked for: a non-square
        # sensor keeps its aspect. Coordinates are floored (tonic), so a side of n cells
        # becomes ceil(n * size / longer) cells.
        size = int(options.downsample)
        factor = size / longer
        steps.append(tonic.transforms.Downsample(spatial_factor=(factor, factor)))
        sensor_out = (-(-sensor[0] * size // longer), -(-sensor[1] * size // longer), sensor[2])

    def transform(events):
        for step in steps:
            events = step(events)
        return events

    return transform, sensor_out


def _checker(name: str, takes: tuple, max_downsample: int = 0):
    def check(options: DataOptions) -> None:
        check_source(options.source)
        if options.source == "emulated":
            raise ConfigError(f"there is no emulated {name}; use --source auto or real with the data in --data-dir")
        check_framing(options.time_steps, options.slicing)
        if options.encoding not in (None, "frames"):
            raise ConfigError(f"{name} is framed event data; encoding {options.encoding!r} does not apply "
                              "(leave --encoding unset)")
        refuse_framing_options(name, options)
        if options.denoise_us < 0:
            raise ConfigError(f"denoise_us must be >= 0, got {options.denoise_us}")
        if "downsample" in takes and max_downsample and not 0 <= options.downsample <= max_downsample:
            raise ConfigError(f"downsample must be 0 (native) or 1..{max_downsample}, got {options.downsample}")
    return check


def _load(name: str, found: EventFiles, options: DataOptions, read, sensor: tuple, classes: list[str],
          key_parts: dict | None = None) -> Dataset:
    transform, sensor_out = event_transform(options, sensor)
    extra = {"sensor_size": list(sensor), "frame_size": [sensor_out[1], sensor_out[0]], "classes": classes}
    (train, test), meta = frames_cached(name, found, options, read, transform, sensor_out, extra,
                                        key_parts=key_parts)
    meta["notice"] = "; ".join(n for n in (found.notice, blank_notice(meta)) if n) or None
    return Dataset(name=name, train=train, test=test, n_classes=len(classes),
                   sample_shape=(sensor_out[2], sensor_out[1], sensor_out[0]), encoding="frames", source="real",
                   time_steps=int(options.time_steps), meta=meta)


def _require_dir(options: DataOptions, name: str, layout: str) -> Path:
    data_dir = data_dir_of(options)
    if data_dir is None or not data_dir.is_dir():
        where = "no --data-dir (or $EVSIM_DATA) given" if data_dir is None else f"{data_dir} is not a folder"
        raise DataError(f"{name} needs its files in --data-dir DIR ({where}); put them there as {layout} "
                        "(nothing is downloaded)")
    return data_dir


# ------------------------------------------------------------------- SHD
SHD_SENSOR = (700, 1, 1)
SHD_LAYOUT = "DIR/SHD/shd_train.h5 and DIR/SHD/shd_test.h5 (tonic's SHD, unzipped)"
SHD_CLASSES = 20  # the digits 0-9 spoken in English and in German
SHD_FIX = "the file is damaged: replace it from the original archive (tonic's SHD)"


class H5Sample(os.PathLike):
    """Sample ``index`` of an HDF5 file: stats as the file (the cache fingerprint), named
    ``file#index`` (so each sample has its own name)."""

    def __init__(self, path: Path, index: int):
        self.path, self.index = Path(path), int(index)

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return f"{self.path}#{self.index}"

    def __lt__(self, other) -> bool:
        return (str(self.path), self.index) < (str(other.path), other.index)


@functools.lru_cache(maxsize=4)
def _h5(path: Path, mtime_ns: int):
    import h5py

    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"{path}: not a readable HDF5 file ({str(exc).splitlines()[0]}); {SHD_FIX}") from None


def _shd_file(path: Path):
    """The open HDF5 file ``path``, after checking it holds SHD's three datasets."""
    import h5py

    handle = _h5(path, path.stat().st_mtime_ns)
    for key in ("spikes/times", "spikes/units", "labels"):
        if not isinstance(handle.get(key), h5py.Dataset):
            what = f"no {key!r} dataset" if key not in handle else f"{key!r} is a group, not a dataset"
            raise DataError(f"{path}: {what}; an SHD file holds datasets spikes/times, spikes/units and labels; "
                            f"{SHD_FIX}")
    return handle


def _shd_labels(path: Path) -> np.ndarray:
    """The labels of SHD file ``path``: one class 0..``SHD_CLASSES - 1`` per recording.

    Raises
    ------
    DataError
        Naming the file, if the labels are not 1-D integers, their count differs from the
        recordings' (or the spike times' from the channels'), or a label is no class.
    """
    handle = _shd_file(path)
    with reading(path, "SHD file", fix=SHD_FIX):
        labels = np.asarray(handle["labels"][()])
        times, units = len(handle["spikes/times"]), len(handle["spikes/units"])
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataError(f"{path}: labels are {labels.dtype} of shape {labels.shape}, not one integer per recording; "
                        f"{SHD_FIX}")
    if times != units:
        raise DataError(f"{path}: {times} recordings of spike times but {units} of channels; {SHD_FIX}")
    if labels.size != times:
        raise DataError(f"{path}: {labels.size} labels for {times} recordings; {SHD_FIX}")
    bad = (labels < 0) | (labels >= SHD_CLASSES)
    if bad.any():
        k = np.flatnonzero(bad)[0]
        raise DataError(f"{path}: label {labels[k]} of recording {k} is not a class 0..{SHD_CLASSES - 1}; {SHD_FIX}")
    return labels.astype(np.int64)


def read_shd(sample: H5Sample) -> np.ndarray:
    """Events of one SHD sample (``x`` = channel, ``y`` = 0, ``t`` in us, ``p`` = 0).

    Raises
    ------
    DataError
        If the sample's times and channels differ in length, a time is not finite or is
        negative, or a channel lies outside 0..699.
    """
    handle = _shd_file(sample.path)
    with reading(sample.path, "SHD file", fix=SHD_FIX):
        times = np.asarray(handle["spikes/times"][sample.index], dtype=np.float64)
        units = np.asarray(handle["spikes/units"][sample.index], dtype=np.int64)
    where = f"{sample.path} sample {sample.index}"
    if times.shape != units.shape:
        raise DataError(f"{where}: {times.size} spike times but {units.size} channels; {SHD_FIX}")
    if times.size == 0:
        raise DataError(f"{where}: recording holds no events; {SHD_FIX}")
    if not (np.isfinite(times) & (times >= 0)).all():
        raise DataError(f"{where}: a spike time is NaN, infinite or negative; {SHD_FIX}")
    if times.max() * 1e6 >= INT64_LIMIT / 2:  # in microseconds, differences of times too must hold in int64
        raise DataError(f"{where}: a spike time of {times.max():g} s is beyond what microseconds in int64 hold; "
                        f"{SHD_FIX}")
    check_in_sensor(units, np.zeros_like(units), SHD_SENSOR, where)
    # seconds -> microseconds, as tonic's SHD reads them
    return _structured(units, np.zeros_like(units), np.round(times * 1e6).astype(np.int64), np.zeros_like(units))


def find_shd(options: DataOptions) -> EventFiles:
    data_dir = _require_dir(options, "SHD", SHD_LAYOUT)
    for root in (data_dir / "SHD", data_dir):
        files = {split: root / f"shd_{split}.h5" for split in ("train", "test")}
        if any(path.is_file() for path in files.values()):
            missing = [str(path) for path in files.values() if not path.is_file()]
            if missing:
                zipped = Path(missing[0] + ".gz")
                hint = f" ({zipped.name} is there: unzip it)" if zipped.is_file() else ""
                raise DataError(f"{missing[0]} not found{hint}; SHD needs both shd_train.h5 and shd_test.h5")
            splits = {}
            for split, path in files.items():
                labels = _shd_labels(path)
                splits[split] = ([H5Sample(path, k) for k in range(labels.size)], labels)
            return EventFiles("real", root, "tonic", splits)
    raise DataError(f"SHD not found in {data_dir}; put it there as {SHD_LAYOUT}")


@register("shd", check=_checker("shd", ("slicing",)), takes=("slicing",))
def load_shd(options: DataOptions) -> Dataset:
    """The Spiking Heidelberg Digits as ``[N, T, 1, 1, 700]`` count frames, 20 classes."""
    return _load("shd", find_shd(options), options, read_shd, SHD_SENSOR, [str(k) for k in range(SHD_CLASSES)])


SAMPLE_EVENTS["shd"] = lambda options, split, index: _sample(find_shd(options), read_shd, SHD_SENSOR, split, index)


def _sample(found: EventFiles, read, sensor: tuple, split: str, index: int):
    files, labels = _pick(found.splits, split, index)
    return read(files[index]), int(labels[index]), sensor, str(files[index])


# ------------------------------------------------------------ POKER-DVS
POKERDVS_SENSOR = (35, 35, 2)
POKERDVS_LAYOUT = "DIR/POKERDVS/pips_train/<cl|he|di|sp>/*.npy and DIR/POKERDVS/pips_test/... (tonic's POKERDVS)"


def read_pokerdvs(path: Path) -> np.ndarray:
    """One POKER-DVS recording: tonic's ``[N, 4]`` rows ``t, x, y, p``.

    Raises
    ------
    DataError
        If the file is unreadable, not ``[N, 4]`` numbers, empty, or holds a bad event.
    """
    raw = load_npy(path)
    if raw.ndim != 2 or raw.shape[1] != 4 or raw.dtype.kind not in "iuf":
        raise DataError(f"{path}: expected an [N, 4] numeric array of t, x, y, p; got {raw.shape} {raw.dtype}")
    raw = raw.astype(np.float64)[:, [1, 2, 0, 3]]  # t, x, y, p -> x, y, t, p
    return _checked(raw, path, POKERDVS_SENSOR)


def find_pokerdvs(options: DataOptions) -> EventFiles:
    data_dir = _require_dir(options, "POKER-DVS", POKERDVS_LAYOUT)
    for root in (data_dir / "POKERDVS", data_dir):
        if (root / "pips_train").is_dir() or (root / "pips_test").is_dir():
            splits = {}
            for split in ("train", "test"):
                folder = root / f"pips_{split}"
                files, labels = [], []
                for label, suit in enumerate(POKERDVS_CLASSES):
                    found = sorted((folder / suit).glob("*.npy"))
                    files += found
                    labels += [label] * len(found)
                if not files:
                    raise DataError(f"{folder}: no <cl|he|di|sp>/*.npy recordings; POKER-DVS needs {POKERDVS_LAYOUT}")
                splits[split] = (files, np.asarray(labels, dtype=np.int64))
            return EventFiles("real", root, "tonic", splits)
    raise DataError(f"POKER-DVS not found in {data_dir}; put it there as {POKERDVS_LAYOUT}")


@register("pokerdvs", check=_checker("pokerdvs", ("slicing", "denoise_us")), takes=("slicing", "denoise_us"))
def load_pokerdvs(options: DataOptions) -> Dataset:
    """POKER-DVS as ``[N, T, 2, 35, 35]`` count frames, 4 classes."""
    return _load("pokerdvs", find_pokerdvs(options), options, read_pokerdvs, POKERDVS_SENSOR, POKERDVS_CLASSES)


SAMPLE_EVENTS["pokerdvs"] = lambda options, split, index: _sample(find_pokerdvs(options), read_pokerdvs,
                                                                  POKERDVS_SENSOR, split, index)


# ---------------------------------------------------------- CIFAR10-DVS
CIFAR10DVS_SENSOR = (128, 128, 2)
CIFAR10DVS_LAYOUT = "DIR/CIFAR10DVS/<airplane|automobile|...|truck>/*.aedat4 or *.aedat"
CIFAR10DVS_TRAIN_FRACTION = 0.9
_AEDAT_NUMBER = re.compile(r"(\d+)(?=\.aedat4?$)")


def encode_aedat2(events: np.ndarray) -> bytes:
    """An AEDAT 2.0 file of DVS128 events as CIFAR10-DVS ships them (the inverse of
    :func:`read_aedat2`): a ``#!AER-DAT2.0`` header, then big-endian 32-bit address and
    timestamp (us) per event; the address holds ``127 - y`` in bits 1-7, ``127 - x`` in
    bits 8-14 and ``1 - p`` in bit 0 (the sensor was mounted turned)."""
    address = (((127 - events["y"]) << 1) | ((127 - events["x"]) << 8) | (1 - events["p"])).astype(">u4")
    body = np.empty(2 * len(events), dtype=">u4")
    body[0::2], body[1::2] = address, events["t"].astype(">u4")
    return b"#!AER-DAT2.0\r\n# This is a raw AE data file created by evsim\r\n" + body.tobytes()


def read_aedat2(path: Path) -> np.ndarray:
    """One CIFAR10-DVS recording in the authors' AEDAT 2.0 format (as SpikingJelly reads it).

    Raises
    ------
    DataError
        If the file is unreadable, has no ``#!AER-DAT`` header or that of another version
        than 2.0, a truncated body, or no events.
    """
    check_regular(path, "AEDAT recording")
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise DataError(cannot_read(path, "AEDAT recording", exc)) from None
    if not data.startswith(b"#!AER-DAT"):
        raise DataError(f"{path}: not an AEDAT file (no #!AER-DAT header)")
    version = data[len(b"#!AER-DAT"):].split(b"\n", 1)[0].strip().decode("ascii", "replace")
    if version != "2.0":  # another version's packets read as 2.0 words are garbage events
        raise DataError(f"{path}: an AEDAT {version[:10]} file, not AEDAT 2.0 (CIFAR10-DVS's format); replace it "
                        "with the original recording" + (", or name an AEDAT 4 file .aedat4" if version.startswith("4")
                                                         else ""))
    start = 0
    while start < len(data) and data[start:start + 1] == b"#":
        end = data.find(b"\n", start)
        start = len(data) if end < 0 else end + 1
    body = data[start:]
    if len(body) % 8:
        raise DataError(f"{path}: truncated AEDAT body ({len(body)} bytes, not whole 8-byte events)")
    words = np.frombuffer(body, dtype=">u4")
    address, t = words[0::2].astype(np.int64), words[1::2].astype(np.int64)
    if address.size == 0:
        raise DataError(f"{path}: recording holds no events")
    x = 127 - ((address >> 8) & 0x7F)
    y = 127 - ((address >> 1) & 0x7F)
    p = 1 - (address & 1)
    return _structured(x, y, t, p)


def read_aedat4(path: Path) -> np.ndarray:
    """One recording in tonic's AEDAT4 copy of CIFAR10-DVS (needs the ``aedat`` package)."""
    try:
        from tonic.io import read_aedat4 as tonic_read
        import aedat  # noqa: F401
    except ImportError:
        raise DataError(f"{path}: reading .aedat4 files needs the aedat package (pip install aedat), or use the "
                        "authors' .aedat files") from None
    try:
        raw = tonic_read(str(path))
    except Exception as exc:  # the decoder raises its own types for damaged files
        raise DataError(f"{path}: not a readable AEDAT4 file ({str(exc).splitlines()[0] if str(exc) else exc})"
                        ) from None
    return _structured(raw["x"], raw["y"], raw["t"], raw["p"].astype(np.int64))


def read_cifar10dvs(path: Path) -> np.ndarray:
    events = read_aedat4(path) if str(path).endswith(".aedat4") else read_aedat2(path)
    check_in_sensor(events["x"], events["y"], CIFAR10DVS_SENSOR, path)
    return events


def _cifar10dvs_train_count(recordings: int) -> int:
    """How many of a class's ``recordings`` train (the rest test)."""
    return int(round(CIFAR10DVS_TRAIN_FRACTION * recordings))


def _no_test_recordings(root: Path) -> str:
    """Why CIFAR10-DVS in ``root`` leaves the test split empty, and what to do."""
    least = next(n for n in itertools.count(1) if _cifar10dvs_train_count(n) < n)
    return (f"{root}: the test split holds no samples: the last {1 - CIFAR10DVS_TRAIN_FRACTION:.0%} of each class's "
            f"recordings (by number) test, which leaves none to a class of fewer than {least}, as every class here "
            f"is; add recordings, at least {least} per class")


def find_cifar10dvs(options: DataOptions) -> EventFiles:
    data_dir = _require_dir(options, "CIFAR10-DVS", CIFAR10DVS_LAYOUT)
    for root in (data_dir / "CIFAR10DVS", data_dir):
        if any((root / name).is_dir() for name in CIFAR10DVS_CLASSES):
            splits = {"train": ([], []), "test": ([], [])}
            for label, name in enumerate(CIFAR10DVS_CLASSES):
                files = [f for f in (root / name).glob("*.aedat*") if f.suffix in (".aedat", ".aedat4")]
                if not files:
                    raise DataError(f"{root / name}: no .aedat4 or .aedat recordings; CIFAR10-DVS needs "
                                    f"{CIFAR10DVS_LAYOUT}")
                # by recording number, as in cifar10_airplane_12.aedat
                files.sort(key=lambda f: (int(m.group(1)) if (m := _AEDAT_NUMBER.search(f.name)) else -1, f.name))
                cut = _cifar10dvs_train_count(len(files))
                for split, part in (("train", files[:cut]), ("test", files[cut:])):
                    splits[split][0].extend(part)
                    splits[split][1].extend([label] * len(part))
            if not splits["test"][0]:
                raise DataError(_no_test_recordings(root))
            return EventFiles("real", root, "plain", {s: (f, np.asarray(l, dtype=np.int64))
                                                      for s, (f, l) in splits.items()})
    raise DataError(f"CIFAR10-DVS not found in {data_dir}; put it there as {CIFAR10DVS_LAYOUT}")


_CIFAR_TAKES = ("slicing", "denoise_us", "downsample")


@register("cifar10dvs", check=_checker("cifar10dvs", _CIFAR_TAKES, 128), takes=_CIFAR_TAKES)
def load_cifar10dvs(options: DataOptions) -> Dataset:
    """CIFAR10-DVS as ``[N, T, 2, S, S]`` count frames (S = 128 or ``--downsample``), 10 classes."""
    return _load("cifar10dvs", find_cifar10dvs(options), options, read_cifar10dvs, CIFAR10DVS_SENSOR,
                 CIFAR10DVS_CLASSES)


SAMPLE_EVENTS["cifar10dvs"] = lambda options, split, index: _sample(find_cifar10dvs(options), read_cifar10dvs,
                                                                    CIFAR10DVS_SENSOR, split, index)


# --------------------------------------------------------------- folder
FOLDER_LAYOUT = ("DIR/<class>/*.npy|.npz|.bin (or DIR/train/<class>/... and DIR/test/<class>/...), events x, y, "
                 "t (us), p; see evsim/data/tonic_sets.py")
FOLDER_TEST_FRACTION = 0.2
# Pixels a side of the largest sensor a folder may have (inferred or in sensor.txt): event
# cameras have at most 1280 x 960, so a larger coordinate is a corrupt event, which would
# otherwise make frames of millions of pixels.
MAX_SENSOR_SIDE = 4096
SENSOR_FILE = "sensor.txt"


def read_recording(path: Path, sensor: tuple | None = None) -> np.ndarray:
    """One recording of a user's folder (formats in the module docstring); ``sensor`` None
    while the sensor is being inferred from the events.

    Raises
    ------
    DataError
        If the file is unreadable, not one of the formats, or holds a bad event: one
        outside ``sensor``, or beyond ``MAX_SENSOR_SIDE``.
    """
    path = Path(path)
    raw = _recording_columns(path)
    # Beyond the largest sensor, no sensor.txt can hold the event: the recording is corrupt.
    events = _checked(raw, path, (MAX_SENSOR_SIDE, MAX_SENSOR_SIDE, 2),
                      "no event camera is larger: the recording is corrupt; fix that event, or replace the file "
                      "with a good copy")
    if sensor is not None:
        check_in_sensor(events["x"], events["y"], sensor, path,
                        f"fix that event, or declare a sensor that holds it in {SENSOR_FILE}")
    return events


def _recording_columns(path: Path) -> np.ndarray:
    """float64 ``[N, 4]`` columns x, y, t, p of a recording, unchecked."""
    if path.suffix == ".bin":
        events = read_nmnist_bin(path, (256, 256, 2))  # any byte coordinate: the sensor is checked after
        return np.stack([events[k].astype(np.float64) for k in EVENTS_DTYPE.names], axis=1)
    if path.suffix == ".npz":
        columns = _npz_columns(path)
        if len({c.size for c in columns}) != 1:
            raise DataError(f"{path}: arrays x, y, t, p differ in length ({', '.join(str(c.size) for c in columns)})")
        return np.stack(columns, axis=1)
    array = load_npy(path)
    if array.dtype.names:
        missing = [k for k in EVENTS_DTYPE.names if k not in array.dtype.names]
        if missing:
            raise DataError(f"{path}: structured array without field {missing[0]!r}; it needs x, y, t, p")
        return np.stack([array[k].astype(np.float64) for k in EVENTS_DTYPE.names], axis=1)
    if array.ndim == 2 and array.shape[1] == 4 and array.dtype.kind in "iufb":
        return array.astype(np.float64)
    raise DataError(f"{path}: expected a structured array with fields x, y, t, p or an [N, 4] array of "
                    f"columns x, y, t, p; got {array.shape} {array.dtype}")


def _npz_columns(path: Path) -> list[np.ndarray]:
    """Arrays x, y, t, p of a ``.npz`` recording as float64, each checked to be 1-D real numbers
    (NumPy would cast complex numbers to their real part and flatten a 2-D array unasked)."""
    check_regular(path, ".npz recording")
    with reading(path, ".npz recording"):
        check_npz(path)  # before NumPy allocates what a member's header declares
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in EVENTS_DTYPE.names if k not in f.files]
            if missing:
                raise DataError(f"{path}: no array {missing[0]!r}; a .npz recording holds arrays x, y, t, p")
            columns = [f[k] for k in EVENTS_DTYPE.names]
    for name, column in zip(EVENTS_DTYPE.names, columns):
        if column.ndim != 1 or column.dtype.kind not in "iufb":
            raise DataError(f"{path}: array {name!r} is {column.dtype} of shape {column.shape}; save x, y, t, p "
                            "as 1-D arrays of real numbers, one entry per event")
    return [column.astype(np.float64) for column in columns]


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def _recordings(folder: Path) -> list[Path]:
    # not only files: a folder named like a recording is refused, not silently left out
    return sorted(f for f in folder.iterdir() if f.suffix in RECORDING_SUFFIXES)


def find_folder(options: DataOptions) -> tuple[EventFiles, list[str]]:
    """The user's recordings and class names.

    Raises
    ------
    DataError
        If the folder is missing, has no class subfolders, or a class has no recordings.
    """
    data_dir = _require_dir(options, "--dataset folder", FOLDER_LAYOUT)
    split_dirs = {split: data_dir / split for split in ("train", "test")}
    present = [split for split, d in split_dirs.items() if d.is_dir()]
    if len(present) == 1:  # else it would be read as a class named train or test
        missing = "test" if present == ["train"] else "train"
        raise DataError(f"{data_dir}: a {present[0]} folder but no {missing} folder; give both "
                        f"{data_dir / 'train'}/<class>/ and {data_dir / 'test'}/<class>/, or only class folders")
    beside = [d.name for d in _class_dirs(data_dir) if d.name not in split_dirs]
    if present and beside:
        raise DataError(f"{data_dir}: folders {', '.join(beside)} beside train and test would be left out; move "
                        "their recordings into train/<class>/ or test/<class>/")
    if present:
        classes = sorted({d.name for folder in split_dirs.values() for d in _class_dirs(folder)})
        _check_classes(data_dir, classes)
        splits = {}
        for split, folder in split_dirs.items():
            files, labels = [], []
            for label, name in enumerate(classes):
                found = _recordings(folder / name) if (folder / name).is_dir() else []
                files += found
                labels += [label] * len(found)
            if not files:
                raise DataError(f"{folder}: no recordings ({', '.join(RECORDING_SUFFIXES)}) in class subfolders")
            splits[split] = (files, np.asarray(labels, dtype=np.int64))
        untrained = [name for label, name in enumerate(classes) if label not in splits["train"][1]]
        if untrained:  # its test samples would count against a class the network never saw
            raise DataError(f"{split_dirs['train']}: no training recordings of class {untrained[0]}, which "
                            f"{split_dirs['test'] / untrained[0]} holds; add them, or remove that test folder")
        return EventFiles("real", data_dir, "plain", splits, _untested_notice(classes, splits)), classes
    classes = [d.name for d in _class_dirs(data_dir)]
    if not classes:
        raise DataError(f"{data_dir}: no class subfolders; put recordings as {FOLDER_LAYOUT}")
    files, labels = [], []
    for label, name in enumerate(classes):
        found = _recordings(data_dir / name)
        if not found:
            raise DataError(f"{data_dir / name}: no recordings ({', '.join(RECORDING_SUFFIXES)})")
        files += found
        labels += [label] * len(found)
    _check_classes(data_dir, classes)
    labels = np.asarray(labels, dtype=np.int64)
    train, test = stratified_indices(labels, FOLDER_TEST_FRACTION, options.seed)
    if not test.size:
        raise DataError(f"{data_dir}: too few recordings for a test split ({labels.size}; "
                        f"{FOLDER_TEST_FRACTION:.0%} of each class is held out for testing, never a class's only "
                        f"one); add recordings, or give {data_dir / 'train'}/<class>/ and {data_dir / 'test'}/<class>/")
    splits = {"train": ([files[i] for i in train], labels[train]), "test": ([files[i] for i in test], labels[test])}
    return EventFiles("real", data_dir, "plain", splits, _untested_notice(classes, splits)), classes


def _untested_notice(classes: list[str], splits: dict) -> str | None:
    """A line for the classes with no test recording, which test accuracy leaves out."""
    untested = [name for label, name in enumerate(classes) if label not in splits["test"][1]]
    if not untested:
        return None
    many = len(untested) > 1
    return (f"class{'es' if many else ''} {', '.join(untested)} ha{'ve' if many else 's'} no test recordings: "
            f"test accuracy leaves {'them' if many else 'it'} out")


def _check_classes(data_dir: Path, classes: list[str]) -> None:
    """Refuse fewer than two classes: with one output, every prediction is right."""
    if len(classes) < 2:
        raise DataError(f"{data_dir}: one class folder ({classes[0]}); a classifier needs at least 2 classes, a "
                        "folder of recordings each")


def folder_sensor(found: EventFiles, options: DataOptions) -> tuple[int, int, int]:
    """``(W, H, 2)``: ``DIR/sensor.txt`` if there, else the smallest sensor that holds every
    event (a pass over the recordings, remembered in the cache by the files' fingerprint).

    Raises
    ------
    DataError
        If ``sensor.txt`` is not two integers 1..``MAX_SENSOR_SIDE``, or, inferring, an
        event lies beyond ``MAX_SENSOR_SIDE``.
    """
    given = found.root / SENSOR_FILE
    if given.exists():
        return _declared_sensor(given)
    remembered = remembered_sensor_path(found, options)
    try:  # read_json refuses what is no small regular file (a FIFO would block the read)
        stored = read_json(remembered, "remembered sensor size")
        width, height, _ = stored["sensor"]
        # The check ties the size to these recordings: an edited size would frame a wrong
        # sensor, or blame a good recording for an event outside a too-small one.
        if stored.get("check") == _sensor_check(remembered, width, height):
            return int(width), int(height), 2
    except (EvsimError, KeyError, TypeError, ValueError):  # missing or damaged: infer it again
        pass
    width = height = 1
    for files, _ in found.splits.values():
        for path in files:
            events = read_recording(path)
            width, height = max(width, int(events["x"].max()) + 1), max(height, int(events["y"].max()) + 1)
    remembered.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(remembered, {"sensor": [width, height, 2], "check": _sensor_check(remembered, width, height)})
    return width, height, 2


def _sensor_check(remembered: Path, width: int, height: int) -> str:
    """A hash of a remembered sensor size and the recordings' fingerprint (the file's name)."""
    return cache_key({"recordings": remembered.name, "sensor": [int(width), int(height)]})


def remembered_sensor_path(found: EventFiles, options: DataOptions) -> Path:
    """The cache file that remembers the sensor inferred from ``found``'s recordings."""
    fingerprint = {s: files_fingerprint(*found.splits[s]) for s in found.splits}
    return resolve_cache_dir(options.cache_dir) / "sensors" / f"folder-{cache_key(fingerprint)}.json"


def _declared_sensor(path: Path) -> tuple[int, int, int]:
    """``(W, H, 2)`` from ``sensor.txt``: ``WIDTH HEIGHT``, each 1..``MAX_SENSOR_SIDE``."""
    with reading(path, "sensor file", fix="write the sensor's WIDTH HEIGHT in it"):
        text = read_small_file(path, "sensor").decode()
    parts = text.split()
    if len(parts) != 2 or not all(re.fullmatch("[0-9]+", p) and 0 < int(p) <= MAX_SENSOR_SIDE for p in parts):
        raise DataError(f"{path}: expected WIDTH HEIGHT, two integers 1..{MAX_SENSOR_SIDE} (no event camera is "
                        f"larger); got {text[:40]!r}")
    return int(parts[0]), int(parts[1]), 2


_FOLDER_TAKES = ("slicing", "denoise_us", "downsample")


@register("folder", check=_checker("folder", _FOLDER_TAKES), takes=_FOLDER_TAKES)
def load_folder(options: DataOptions) -> Dataset:
    """The user's recordings (layout and formats in the module docstring) as count frames."""
    found, classes = find_folder(options)
    sensor = folder_sensor(found, options)
    if options.downsample > max(sensor[:2]):
        raise ConfigError(f"downsample must be 0 (native) or 1..{max(sensor[:2])} for this {sensor[0]}x{sensor[1]} "
                          f"sensor, got {options.downsample}")
    # the sensor in the key: a changed sensor.txt frames again, and its events are checked against it
    return _load("folder", found, options, functools.partial(read_recording, sensor=sensor), sensor, classes,
                 key_parts={"sensor": list(sensor)})


def _folder_sample(options: DataOptions, split: str, index: int):
    found, _ = find_folder(options)
    sensor = folder_sensor(found, options)
    return _sample(found, functools.partial(read_recording, sensor=sensor), sensor, split, index)


SAMPLE_EVENTS["folder"] = _folder_sample
