"""DVS-Gesture (Amir et al. 2017) from tonic's layout on disk; no offline substitute.

Expected under ``--data-dir`` / ``$EVSIM_DATA`` (DIR), as ``tonic.datasets.DVSGesture``
stores it: ``DIR/DVSGesture/ibmGestureTrain/user01_fluorescent/<label>.npy`` and
``DIR/DVSGesture/ibmGestureTest/...`` (``DIR/ibmGestureTrain`` also works). Files
are listed and read by tonic's own ``DVSGesture`` class (``.npy`` rows ``x, y, p, t``
with ``t`` in ms, converted to us), after checks that turn bad files into one-line
errors. 11 classes, 128 x 128 x 2 sensor; framed to T = 64 frames as in the SD-SNN
paper, optionally downsampled (``tonic.transforms.Downsample``) to e.g. 32 x 32.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from evsim.data import refuse_framing_options, register
from evsim.data.base import DataOptions, Dataset, check_source, data_dir_of
from evsim.data.events import INT64_LIMIT, blank_notice, check_framing, check_in_sensor
from evsim.data.nmnist import EventFiles, _pick, frames_cached
from evsim.errors import ConfigError, DataError
from evsim.readers import load_npy, reads

SENSOR = (128, 128, 2)
CLASSES = ["hand clapping", "right hand wave", "left hand wave", "right arm cw", "right arm ccw",
           "left arm cw", "left arm ccw", "arm roll", "air drums", "air guitar", "other gestures"]
SPLIT_FOLDERS = {"train": "ibmGestureTrain", "test": "ibmGestureTest"}
TAKES = ("slicing", "denoise_us", "downsample")  # the framing options DVS-Gesture uses
_USER_FOLDER = re.compile(r"^user\d+_\w+$")
_LABEL_FILE = re.compile(r"^(\d+)\.npy$")


def _local_dvsgesture(save_to: Path, train: bool):
    """tonic's DVSGesture that trusts the files on disk and never downloads."""
    import tonic

    class DVSGesture(tonic.datasets.DVSGesture):  # same class name: tonic derives the folder from it
        def _check_exists(self) -> bool:
            return True

    return DVSGesture(save_to=str(save_to), train=train)


def check_layout(root: Path) -> None:
    """Validate a ``DVSGesture`` folder before tonic lists it.

    Raises
    ------
    DataError
        If a split folder is missing or empty, a subfolder is not named
        ``user<NN>_<lighting>``, or a file is not ``<label>.npy`` with label 0..10.
    """
    for folder in SPLIT_FOLDERS.values():
        split_dir = root / folder
        if not split_dir.is_dir():
            raise DataError(f"{root}: has no {folder} folder; DVS-Gesture needs {SPLIT_FOLDERS['train']}/ "
                            f"and {SPLIT_FOLDERS['test']}/ as tonic stores them")
        users = [d for d in sorted(split_dir.iterdir()) if d.is_dir()]
        if not users:
            raise DataError(f"{split_dir}: no user<NN>_<lighting> subfolders with <label>.npy files")
        for user in users:
            if not _USER_FOLDER.match(user.name):
                raise DataError(f"{user}: folder name must look like user01_fluorescent (tonic's DVS-Gesture layout)")
        # tonic reads every file whose name ends in "npy" anywhere below the split folder
        # (os.walk) and takes its label from the name: each must be a recording it can read.
        for f in sorted(split_dir.rglob("*npy")):
            match = _LABEL_FILE.match(f.name)
            if f.is_file() and (f.parent.parent != split_dir or not match or int(match.group(1)) >= len(CLASSES)):
                raise DataError(f"{f}: tonic reads every file ending in npy below {split_dir}, and DVS-Gesture's are "
                                f"<label>.npy (label 0..{len(CLASSES) - 1}) directly in a user folder; "
                                "move or rename it")


def find_dvsgesture(options: DataOptions) -> EventFiles:
    """Locate DVS-Gesture on disk (``options`` already checked by
    :func:`check_dvsgesture_options`).

    Raises
    ------
    DataError
        If the data is absent or malformed; the message says where to put it.
    """
    data_dir = data_dir_of(options)
    where = data_dir if data_dir is not None else "--data-dir (or $EVSIM_DATA)"
    if data_dir is not None:
        for save_to, root in ((data_dir, data_dir / "DVSGesture"), (data_dir.parent, data_dir)):
            if (root / SPLIT_FOLDERS["train"]).is_dir() or (root / SPLIT_FOLDERS["test"]).is_dir():
                check_layout(root)
                return EventFiles("real", root, "tonic", _listing(save_to, root))
    raise DataError(f"DVS-Gesture not found in {where}; put tonic's layout there: "
                    "DVSGesture/ibmGestureTrain/user01_fluorescent/<label>.npy and DVSGesture/ibmGestureTest/... "
                    "(there is no offline substitute)")


def _listing(save_to: Path, root: Path) -> dict:
    """``{"train": (files, labels), ...}`` as tonic's DVSGesture lists them."""
    splits = {}
    for name in SPLIT_FOLDERS:
        if root.name == "DVSGesture":
            dataset = _local_dvsgesture(save_to, train=name == "train")
            # tonic walks files in file-system order; sort so the order is the same everywhere
            pairs = sorted(zip(dataset.data, dataset.targets))
            files, labels = [Path(p) for p, _ in pairs], [t for _, t in pairs]
        else:  # a bare ibmGesture* pair: same rules as tonic's walk, without the DVSGesture/ level
            files = sorted(root.glob(f"{SPLIT_FOLDERS[name]}/user*/*.npy"))
            labels = [int(f.stem) for f in files]
        if not files:
            raise DataError(f"{root / SPLIT_FOLDERS[name]}: no <label>.npy recordings")
        splits[name] = (files, np.asarray(labels, dtype=np.int64))
    return splits


@reads(".npy file")
def read_gesture_npy(path: Path) -> np.ndarray:
    """One DVS-Gesture recording as tonic's structured events (``t`` in us).

    Raises
    ------
    DataError
        If the file cannot be loaded, is not an ``[N, 4]`` array of events, is empty,
        or has an event with a NaN or infinite value, a fractional coordinate, a
        polarity other than 0 or 1, or a place outside the 128 x 128 sensor.
    """
    import tonic
    from numpy.lib import recfunctions

    raw = load_npy(path)
    if raw.ndim != 2 or raw.shape[1] != 4 or raw.dtype.kind not in "iuf":
        raise DataError(f"{path}: expected an [N, 4] numeric array of x, y, p, t(ms); got {raw.shape} {raw.dtype}")
    if len(raw) == 0:
        raise DataError(f"{path}: recording holds no events")
    raw = raw.astype(np.float64)
    # checked before the cast to integers, which would move such events silently
    for bad, what in ((~np.isfinite(raw).all(axis=1), "a NaN or infinite value"),
                      ((raw[:, :2] != np.floor(raw[:, :2])).any(axis=1), "a fractional coordinate"),
                      (~np.isin(raw[:, 2], (0, 1)), "a polarity other than 0 or 1"),
                      (np.abs(raw[:, 3]) * 1000 >= INT64_LIMIT, "a time beyond int64 microseconds")):
        if bad.any():
            raise DataError(f"{path}: event {np.flatnonzero(bad)[0]} has {what} ({int(bad.sum())} such events); "
                            "the file is corrupt or not from DVS-Gesture")
    check_in_sensor(raw[:, 0], raw[:, 1], SENSOR, path)
    raw[:, 3] *= 1000  # ms -> us before the cast to integers, as tonic's DVSGesture.__getitem__ does
    raw = raw.astype(np.int64)
    # in time order, as the other readers give them: tonic's framing assumes it
    raw = raw[np.argsort(raw[:, 3], kind="stable")]
    return recfunctions.unstructured_to_structured(raw, tonic.datasets.DVSGesture.dtype)


def check_dvsgesture_options(options: DataOptions) -> None:
    """Refuse options that do not apply to DVS-Gesture (run before anything loads).

    Raises
    ------
    ConfigError
        For an unknown source or ``source="emulated"`` (there is no emulated
        DVS-Gesture), bad framing, a non-frame encoding, a framing option of another
        dataset (the N-MNIST ``--crop``), a negative denoise time, or a downsampling
        size outside 1..128.
    """
    check_source(options.source)
    if options.source == "emulated":
        raise ConfigError("there is no emulated DVS-Gesture; use --source auto or real with the real data")
    check_framing(options.time_steps, options.slicing)
    if options.encoding not in (None, "frames"):
        raise ConfigError(f"DVS-Gesture is framed event data; encoding {options.encoding!r} does not apply "
                          "(leave --encoding unset)")
    refuse_framing_options("dvsgesture", options,
                           hints={"crop": "it is the N-MNIST 34 -> 32 crop; for DVS-Gesture use --downsample"})
    if options.denoise_us < 0:
        raise ConfigError(f"denoise_us must be >= 0, got {options.denoise_us}")
    if not 0 <= options.downsample <= SENSOR[0]:
        raise ConfigError(f"downsample must be 0 (native) or 1..{SENSOR[0]}, got {options.downsample}")


def event_transform(options: DataOptions):
    """``events -> events`` (denoise, then downsample) and the sensor size after it."""
    import tonic

    steps = []
    if options.denoise_us:
        steps.append(tonic.transforms.Denoise(filter_time=options.denoise_us))
    sensor_out = SENSOR
    if options.downsample and options.downsample != SENSOR[0]:
        size = int(options.downsample)
        steps.append(tonic.transforms.Downsample(sensor_size=SENSOR, target_size=(size, size)))
        sensor_out = (size, size, 2)

    def transform(events):
        for step in steps:
            events = step(events)
        return events

    return transform, sensor_out


@register("dvsgesture", check=check_dvsgesture_options, takes=TAKES)
def load_dvsgesture(options: DataOptions) -> Dataset:
    """DVS-Gesture as ``[N, T, 2, S, S]`` count frames (S = 128 or the downsampled size);
    ``options`` are checked first by :func:`check_dvsgesture_options` (through
    :func:`evsim.data.load_dataset`).

    Returns
    -------
    Dataset
        ``encoding="frames"``, ``source="real"``; ``meta`` as for N-MNIST
        (``sensor_size``, ``frame_size``, ``classes``, ``framing``, ``event_stats``).
    """
    found = find_dvsgesture(options)
    transform, sensor_out = event_transform(options)
    extra = {"sensor_size": list(SENSOR), "frame_size": [sensor_out[1], sensor_out[0]], "classes": CLASSES}
    (train, test), meta = frames_cached("dvsgesture", found, options, read_gesture_npy, transform, sensor_out,
                                        extra)
    meta["notice"] = blank_notice(meta)
    return Dataset(name="dvsgesture", train=train, test=test, n_classes=len(CLASSES),
                   sample_shape=(2, sensor_out[1], sensor_out[0]), encoding="frames", source="real",
                   time_steps=int(options.time_steps), meta=meta)


def sample_events(options: DataOptions, split: str, index: int) -> tuple[np.ndarray, int, tuple, str]:
    """Raw events of one recording: ``(events, label, sensor_size, path)``; ``options``
    checked first by :func:`check_dvsgesture_options`."""
    check_dvsgesture_options(options)
    found = find_dvsgesture(options)
    files, labels = _pick(found.splits, split, index)
    return read_gesture_npy(files[index]), int(labels[index]), SENSOR, str(files[index])
