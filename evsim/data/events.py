"""Event files and their framing, shared by the N-MNIST and DVS-Gesture loaders.

N-MNIST's 40-bit records are decoded here (:func:`decode_nmnist_bin`, the twin of
:func:`encode_nmnist_bin`) into tonic's N-MNIST dtype; DVS-Gesture ``.npy`` files are
read as tonic stores them. Checks turn bad files into a one-line
:class:`~evsim.errors.DataError` naming the file. Framing uses tonic's transforms
(``Denoise``, ``CenterCrop``, ``Downsample``, ``ToFrame``): ``T`` frames of
per-polarity event counts, sliced by equal event number (``n_event_bins``) or equal
time (``n_time_bins``). Frames are ``[T, C, H, W]`` with channel 0 = OFF, 1 = ON.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from evsim.data.base import Split
from evsim.data.cache import write_meta
from evsim.data.frames import SparseFrames, SparseFrameWriter
from evsim.errors import ConfigError, DataError
from evsim.host import physical_memory
from evsim.readers import cannot_read, reads

NMNIST_SENSOR = (34, 34, 2)  # tonic order: width, height, polarities
SLICINGS = ("events", "time")
# Events are stored as int64: a float column must stay below this in magnitude to be cast.
INT64_LIMIT = 2.0 ** 63
_RECORD_BYTES = 5
_MAX_T_US = 2**23  # 23-bit timestamps; longer recordings need overflow records
_OVERFLOW_Y = 240  # N-MNIST marks timestamp-overflow records with y == 240
# What an event outside a dataset's fixed sensor means, and so what to do
OUTSIDE_SENSOR_FIX = "the file is corrupt or not from this dataset: replace it with the dataset's original"


@reads("N-MNIST recording")
def read_nmnist_bin(path: Path, sensor_size: tuple = NMNIST_SENSOR) -> np.ndarray:
    """Read one N-MNIST 40-bit ``.bin`` recording (events sorted by time), after checks.

    Returns
    -------
    Structured array with tonic's N-MNIST dtype (``x, y, t, p``), ``t`` in us.

    Raises
    ------
    DataError
        If the file cannot be read, is not a regular file, is empty, is truncated (size not a multiple of
        5 bytes), holds no events, or has an event outside the sensor.
    """
    import tonic

    path = Path(path)
    try:
        size = path.stat().st_size  # a regular file: @reads refused anything else
    except OSError as exc:
        raise DataError(cannot_read(path, "N-MNIST file", exc)) from None
    if size == 0:
        raise DataError(f"{path}: empty N-MNIST file (0 bytes); delete it or replace it with a good copy")
    if size % _RECORD_BYTES:
        raise DataError(f"{path}: truncated N-MNIST file ({size} bytes is not a multiple of 5-byte "
                        "events); replace it with a complete copy")
    events = decode_nmnist_bin(np.fromfile(path, dtype=np.uint8), tonic.datasets.NMNIST.dtype)
    if len(events) == 0:
        raise DataError(f"{path}: N-MNIST file holds no events (only timestamp-overflow records); delete it "
                        "or replace it with a good copy")
    check_in_sensor(events["x"], events["y"], sensor_size, path)
    return events


def check_in_sensor(x: np.ndarray, y: np.ndarray, sensor_size: tuple, path: Path,
                    fix: str = OUTSIDE_SENSOR_FIX) -> None:
    """Raise :class:`DataError` naming ``path``, the first event outside ``sensor_size``
    (its index in ``x``, ``y``) and ``fix``."""
    width, height, _ = sensor_size
    bad = (x < 0) | (x >= width) | (y < 0) | (y >= height)
    if np.any(bad):
        first = np.flatnonzero(bad)[0]
        raise DataError(f"{path}: event {first} at x={_number(x[first])}, y={_number(y[first])} lies outside the "
                        f"{width}x{height} sensor ({int(bad.sum())} such events); {fix}")


def _number(value) -> str:
    """``value`` as written: whole numbers in full (10000000, not 1e+07)."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def decode_nmnist_bin(raw: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Events of N-MNIST 40-bit records ``raw`` (uint8, a multiple of 5 bytes), sorted by ``t``.

    Records with y == 240 mark a wrap of the 23-bit timestamp and add 2**23 us to the
    events after them. tonic's ``read_mnist_file`` (after the authors' reader) adds 2**13
    instead, which makes time run backwards at the wrap; real N-MNIST files hold no such
    records, so the two agree on them. The sort is stable: framing by time and by event
    number assumes events in time order, and files written out of order still frame right.
    """
    records = raw.reshape(-1, _RECORD_BYTES).astype(np.int64)
    overflow = records[:, 1] == _OVERFLOW_Y
    t = (((records[:, 2] & 0x7F) << 16) | (records[:, 3] << 8) | records[:, 4]) + _MAX_T_US * np.cumsum(overflow)
    kept = ~overflow
    events = np.empty(int(kept.sum()), dtype=dtype)
    events["x"] = records[kept, 0]
    events["y"] = records[kept, 1]
    events["t"] = t[kept]
    events["p"] = records[kept, 2] >> 7
    return events[np.argsort(events["t"], kind="stable")]


def encode_nmnist_bin(events: np.ndarray) -> bytes:
    """N-MNIST 40-bit records for events with fields ``x, y, t, p`` (t in us, sorted).

    Each event is 5 bytes: x, y, then polarity in bit 7 and the 23-bit timestamp.

    Raises
    ------
    ConfigError
        If a coordinate does not fit a byte (or is 240 in y, the overflow marker) or
        a timestamp needs more than 23 bits.
    """
    x = np.asarray(events["x"], dtype=np.int64)
    y = np.asarray(events["y"], dtype=np.int64)
    t = np.asarray(events["t"], dtype=np.int64)
    p = np.asarray(events["p"], dtype=np.int64)
    if len(x) and (x.min() < 0 or x.max() > 255 or y.min() < 0 or y.max() > 255 or np.any(y == _OVERFLOW_Y)):
        raise ConfigError("event coordinates must be 0..255 (and y != 240) to be written as N-MNIST")
    if len(t) and (t.min() < 0 or t.max() >= _MAX_T_US):
        raise ConfigError(f"event timestamps must be 0..{_MAX_T_US - 1} us to be written as N-MNIST")
    raw = np.empty((len(x), _RECORD_BYTES), dtype=np.uint8)
    raw[:, 0] = x
    raw[:, 1] = y
    raw[:, 2] = ((p != 0) << 7) | ((t >> 16) & 0x7F)
    raw[:, 3] = (t >> 8) & 0xFF
    raw[:, 4] = t & 0xFF
    return raw.tobytes()


def write_nmnist_bin(path: Path, events: np.ndarray) -> None:
    """Write events as an N-MNIST ``.bin`` file (see :func:`encode_nmnist_bin`)."""
    Path(path).write_bytes(encode_nmnist_bin(events))


def check_framing(time_steps: int, slicing: str) -> None:
    """Validate framing options.

    Raises
    ------
    ConfigError
        If ``time_steps`` < 1 or ``slicing`` is not one of :data:`SLICINGS`.
    """
    if int(time_steps) < 1:
        raise ConfigError(f"time_steps must be at least 1, got {time_steps}")
    if slicing not in SLICINGS:
        raise ConfigError(f"unknown slicing {slicing!r}; choose one of: {', '.join(SLICINGS)}")


def to_frames(events: np.ndarray, sensor_size: tuple, time_steps: int, slicing: str) -> np.ndarray:
    """``[T, C, H, W]`` per-polarity count frames of one recording (tonic ``ToFrame``).

    ``slicing="events"``: T bins of equal event number; ``"time"``: T bins of equal
    duration. As in tonic, the remainder events that do not fill a whole bin are
    dropped: the N mod T last ones by event number; by time, the bins are end-exclusive,
    so the events at the last timestamp. An empty recording gives all-zero frames.
    """
    from tonic.slicers import slice_events_by_event_bins, slice_events_by_time_bins

    width, height, channels = sensor_size
    if len(events) == 0:
        return np.zeros((time_steps, channels, height, width), dtype=np.int64)
    # tonic's slices, counted here: its ToFrame adds into int16, which wraps a pixel's
    # 32,768th event in a frame to a negative count, silently.
    slices = (slice_events_by_event_bins if slicing == "events" else slice_events_by_time_bins)(events, time_steps)
    frames = np.zeros((len(slices), channels, height, width), dtype=np.int64)
    for frame, piece in zip(frames, slices):
        polarity = piece["p"].astype(np.int64) if channels > 1 else 0  # one channel: every event in it, as tonic
        cells = (polarity * height + piece["y"].astype(np.int64)) * width + piece["x"].astype(np.int64)
        frame.reshape(-1)[:] = np.bincount(cells, minlength=frame.size)
    return frames


def frame_split(folder: Path, name: str, files: list, labels, read, transform, sensor_out: tuple,
                time_steps: int, slicing: str, desc: str, progress: bool | None) -> dict:
    """Frame every file of one split into ``folder`` as a :class:`SparseFrames` store
    (``<name>_ptr/_idx/_val.npy``) and ``<name>_labels.npy``.

    Parameters
    ----------
    read : ``path -> events`` (validated structured array).
    transform : ``events -> events`` applied before framing (denoise, crop, downsample).
    sensor_out : tonic sensor size ``(W, H, P)`` after ``transform``.

    Returns
    -------
    dict
        Event statistics of the split's raw recordings: mean events per sample, ON
        fraction, mean duration (ms), and the type of the stored counts.

    Raises
    ------
    ConfigError
        If the frames do not fit in memory (too many time steps).
    """
    from tqdm import tqdm

    # the split's frame counts and each sample's dense frames (int64 both) grow with T;
    # refused up front, as tonic would first spend minutes slicing into T empty frames
    too_big = f"{len(files)} {name} samples of {time_steps} frames do not fit in memory; reduce --time-steps"
    if time_steps * (8 * len(files) + 8 * int(np.prod(sensor_out))) > physical_memory():
        raise ConfigError(too_big)
    n_events = n_on = blank = 0
    duration_us = 0.0
    try:
        writer = SparseFrameWriter(folder, name, len(files), time_steps)
        for path in tqdm(files, desc=desc, unit="sample", leave=False,
                         disable=None if progress is None else not progress):
            events = read(path)
            n_events += len(events)
            n_on += int(np.count_nonzero(events["p"]))
            duration_us += float(events["t"][-1] - events["t"][0]) if len(events) else 0.0
            frames = to_frames(transform(events), sensor_out, time_steps, slicing)
            blank += not frames.any()
            writer.put(frames)
    except MemoryError:  # fits the machine, but not the memory free now
        raise ConfigError(too_big) from None
    if files and blank == len(files):
        raise DataError(f"all {blank} {name} recordings became blank frames: {_BLANK_WHY[slicing](time_steps)}; "
                        f"{_BLANK_FIX[slicing]}")
    dtype = writer.close()
    np.save(folder / f"{name}_labels.npy", np.asarray(labels, dtype=np.int64))
    count = max(len(files), 1)
    return {"samples": len(files), "events_per_sample": n_events / count,
            "on_fraction": n_on / max(n_events, 1), "duration_ms": duration_us / count / 1000.0,
            "dtype": dtype, "blank": blank}


# Why slicing leaves a recording no event (tonic's ToFrame drops the remainder that fills no
# whole bin), and what to change.
_BLANK_WHY = {
    "events": lambda t: f"slicing by event count needs at least --time-steps = {t} events per recording (after "
                        "denoising and cropping), and fewer give no frame at all",
    "time": lambda t: "slicing by time needs recordings that last longer than 0 us (after denoising and cropping)",
}
_BLANK_FIX = {"events": "lower --time-steps, or use --slicing time",
              "time": "use --slicing events, or check the recordings' timestamps"}


def blank_notice(meta: dict) -> str | None:
    """One line saying how many recordings of each split became blank frames (every
    event dropped by the slicing), from a frame cache entry's ``meta``; None if none did."""
    stats, framing = meta.get("event_stats", {}), meta.get("framing", {})
    counts = [f"{stats[name].get('blank', 0)} of {stats[name]['samples']} {name}" for name in stats
              if stats[name].get("blank", 0)]
    if not counts:
        return None
    slicing, time_steps = framing.get("slicing", "events"), framing.get("time_steps", 0)
    return (f"{' and '.join(counts)} recordings became blank frames, which train on nothing: "
            f"{_BLANK_WHY[slicing](time_steps)}; {_BLANK_FIX[slicing]}")


def build_frames_entry(folder: Path, splits: dict, read, transform, sensor_out: tuple, time_steps: int,
                       slicing: str, meta: dict, progress: bool | None) -> None:
    """Frame ``splits`` (``{"train": (files, labels), "test": ...}``) into cache folder ``folder``."""
    stats = {}
    for name, (files, labels) in splits.items():
        stats[name] = frame_split(folder, name, files, labels, read, transform, sensor_out, time_steps,
                                  slicing, f"framing {meta.get('dataset', '')} {name}", progress)
    width, height, channels = sensor_out
    arrays = [f"{name}_{kind}" for name in splits for kind in ("ptr", "idx", "val", "labels")]
    write_meta(folder, dict(meta, event_stats=stats, frame_shape=[time_steps, channels, height, width]), arrays)


def splits_from_entry(arrays: dict, meta: dict) -> tuple[Split, Split]:
    """Train and test :class:`Split` objects (inputs as :class:`SparseFrames`) from a
    loaded cache entry.

    Raises
    ------
    DataError
        If the entry is inconsistent: events outside their frames, or labels that do
        not match the samples or the classes.
    """
    n_steps, *sample_shape = meta["frame_shape"]
    n_classes = len(meta["classes"])

    def split(name):
        frames = SparseFrames(arrays[f"{name}_ptr"], arrays[f"{name}_idx"], arrays[f"{name}_val"], n_steps,
                              sample_shape)
        frames.check()
        labels = np.asarray(arrays[f"{name}_labels"])
        if len(frames) != len(labels) or (len(labels) and not 0 <= labels.min() <= labels.max() < n_classes):
            raise DataError(f"{name}: {len(frames)} samples but {len(labels)} labels, or a label outside "
                            f"0..{n_classes - 1}")
        return Split(frames, labels)

    return split("train"), split("test")
