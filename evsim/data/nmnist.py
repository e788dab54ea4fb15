"""N-MNIST (Orchard et al. 2015): real through tonic when present, else emulated.

Where real N-MNIST is looked for (``--data-dir`` or ``$EVSIM_DATA``, called DIR):

- tonic's layout ``DIR/NMNIST/Train/<digit>/*.bin`` (what ``tonic.datasets.NMNIST``
  downloads), or
- a plain folder ``DIR/Train/<digit>/*.bin`` and ``DIR/Test/<digit>/*.bin`` of any size.

With no DIR, a previous tonic download in ``<cache>/tonic/NMNIST`` is used, or tonic
downloads there when the network allows. Both layouts are listed the same way
(sorted, digit folders only). Every file is read by
:func:`evsim.data.events.read_nmnist_bin`, after checks, in time order.

When no real data can be had and ``source`` is ``"auto"``, the loader falls back to
the emulated N-MNIST (:mod:`evsim.data.emulate`) and says so in ``meta["notice"]``;
``Dataset.source`` is ``"real"`` or ``"emulated"``. That emulation is evsim's own
cache folder: when a recording in it fails the checks or one is missing, the folder
is made again once (the emulator is deterministic from its seed) and the notice says
so; a bad file the user owns (real data, or a folder written by ``evsim data
emulate-nmnist``) stays a one-line :class:`DataError` naming it.

Framing follows the SD-SNN paper: T frames (20 by default) of per-polarity counts
sliced by equal event number (or equal time), optional 34 -> 32 centre crop, optional
``tonic.transforms.Denoise``. Framed data is cached (:mod:`evsim.data.cache`) and
returned memory-mapped.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evsim.data import refuse_framing_options, register
from evsim.data.base import DataOptions, Dataset, Split, check_source, data_dir_of, refuse_missing_data_dir
from evsim.data.cache import NotARecording, cache_key, cached_entry, files_fingerprint, resolve_cache_dir
from evsim.data.emulate import MANIFEST, checked_manifest, emulated_nmnist_dir, read_manifest
from evsim.data.events import (NMNIST_SENSOR, blank_notice, build_frames_entry, check_framing, read_nmnist_bin,
                               splits_from_entry)
from evsim.errors import ConfigError, DataError

FRAMING_VERSION = 3  # 2: frames stored as events (SparseFrames); 3: DVS-Gesture times keep their sub-ms part
TAKES = ("slicing", "crop", "denoise_us")  # the framing options N-MNIST uses
CLASSES = [str(d) for d in range(10)]
SPLIT_FOLDERS = {"train": "Train", "test": "Test"}
_DOWNLOAD_HOST = ("data.mendeley.com", 443)


@dataclass(frozen=True)
class EventFiles:
    """The recordings of an event dataset, before framing.

    Attributes
    ----------
    source : ``"real"`` or ``"emulated"``.
    root : folder holding the split folders.
    layout : ``"tonic"``, ``"plain"`` or ``"emulated"``.
    splits : ``{"train": (files, labels), "test": (files, labels)}``.
    notice : one line for the user when a fallback or a forced choice happened.
    """

    source: str
    root: Path
    layout: str
    splits: dict
    notice: str | None = None


def class_folders(split_dir: Path) -> list[Path]:
    """Digit subfolders (``0`` .. ``9``) of a split folder that hold ``.bin`` files.

    Raises
    ------
    DataError
        If there are none (e.g. the ``.bin`` files lie directly in the split folder).
    """
    folders = sorted(d for d in split_dir.iterdir()
                     if d.is_dir() and d.name in CLASSES and any(d.glob("*.bin")))
    if not folders:
        raise DataError(f"{split_dir}: no class subfolders 0-9 holding .bin files; N-MNIST must be "
                        "laid out as Train/<digit>/*.bin and Test/<digit>/*.bin")
    return folders


def _plain_listing(root: Path) -> dict:
    """``{"train": (files, labels), ...}`` of a plain ``Train/<digit>/*.bin`` folder."""
    splits = {}
    for name, folder in SPLIT_FOLDERS.items():
        files, labels = [], []
        for digit_dir in class_folders(root / folder):
            names = sorted(digit_dir.glob("*.bin"))
            files += names
            labels += [int(digit_dir.name)] * len(names)
        splits[name] = (files, np.asarray(labels, dtype=np.int64))
    return splits


def _find_real(options: DataOptions, cache_dir: Path) -> EventFiles | None:
    """Real N-MNIST on disk, or ``None``. Malformed folders raise :class:`DataError`."""
    data_dir = data_dir_of(options)
    save_tos = [data_dir] if data_dir is not None else [cache_dir / "tonic"]
    for save_to in save_tos:
        for root, layout in ((save_to / "NMNIST", "tonic"), (save_to, "plain")):
            present = [(root / f).is_dir() for f in SPLIT_FOLDERS.values()]
            if not any(present):
                continue
            missing = [f for f, ok in zip(SPLIT_FOLDERS.values(), present) if not ok]
            if missing:
                raise DataError(f"{root}: has no {missing[0]} folder; N-MNIST needs both Train/<digit>/*.bin "
                                "and Test/<digit>/*.bin")
            # tonic's layout is the plain one under NMNIST/; tonic's own listing labels a file
            # by its folder path's last character, so stray subfolders became classes.
            splits = _plain_listing(root)
            # Written by `evsim data emulate-nmnist`; one that cannot be read raises rather
            # than have emulated recordings taken for real ones.
            if checked_manifest(root) is not None:
                return EventFiles("emulated", root, layout, splits,
                                  f"{root} holds EMULATED N-MNIST (it has {MANIFEST}); data_source=emulated")
            return EventFiles("real", root, layout, splits)
    return None


def _download_target(options: DataOptions, cache_dir: Path) -> Path:
    data_dir = data_dir_of(options)
    return data_dir if data_dir is not None else cache_dir / "tonic"


def downloads_allowed(options: DataOptions) -> bool:
    """Downloads are allowed unless ``options.download`` is off or ``$EVSIM_OFFLINE`` is set."""
    return bool(options.download) and not os.environ.get("EVSIM_OFFLINE")


def _try_download(options: DataOptions, cache_dir: Path) -> tuple[EventFiles | None, str]:
    """Download N-MNIST with tonic; ``(files, "")`` or ``(None, why not)``."""
    if not downloads_allowed(options):
        return None, "downloads are off"
    try:
        socket.create_connection(_DOWNLOAD_HOST, timeout=3).close()
    except OSError:
        return None, "no network"
    import tonic

    target = _download_target(options, cache_dir)
    try:
        for train in (True, False):
            tonic.datasets.NMNIST(save_to=str(target), train=train)
    except Exception as exc:  # tonic raises many kinds; any failure means "not downloadable"
        return None, f"download failed ({type(exc).__name__}: {exc})".splitlines()[0]
    return EventFiles("real", target / "NMNIST", "tonic", _plain_listing(target / "NMNIST")), ""


def find_nmnist(options: DataOptions) -> EventFiles:
    """Locate the N-MNIST recordings to use, emulating them if needed (``options``
    already checked by :func:`check_nmnist_options`).

    Raises
    ------
    DataError
        If real data is required but absent, or a data folder is malformed.
    """
    cache_dir = resolve_cache_dir(options.cache_dir)
    if options.source != "emulated":
        found = _find_real(options, cache_dir)
        why = ""
        if found is None:
            found, why = _try_download(options, cache_dir)
        if found is not None and found.source == "emulated" and options.source == "real":
            raise DataError(f"{found.root}: holds emulated N-MNIST ({MANIFEST}), not real recordings; "
                            "point --data-dir at the real Train/ and Test/ folders")
        if found is not None:
            return found
        if options.source == "auto":
            refuse_missing_data_dir(options, "the emulated N-MNIST")
        where = data_dir_of(options) or (f"--data-dir (none given, nor $EVSIM_DATA; {cache_dir / 'tonic'} holds "
                                         "none either)")
        if options.source == "real":
            raise DataError(f"real N-MNIST not found in {where}, {why}; put it there as "
                            "Train/<digit>/*.bin and Test/<digit>/*.bin (or tonic's NMNIST/ layout), "
                            "or use --source emulated")
        # Point at --data-dir, not at the cache folder searched last: that is where users keep data.
        put = ("put the real files there as Train/<digit>/*.bin, Test/<digit>/*.bin to use them"
               if data_dir_of(options) is not None else
               "to use the real files, give --data-dir DIR (or $EVSIM_DATA) with Train/<digit>/*.bin and "
               "Test/<digit>/*.bin (or tonic's NMNIST/ layout)")
        notice = (f"N-MNIST not found in {where}, {why}: using EMULATED N-MNIST (5,000 MNIST digits "
                  f"through an event-camera model, data_source=emulated); {put}")
    else:
        ignored = data_dir_of(options)
        notice = ("using EMULATED N-MNIST (source emulated; data_source=emulated)"
                  + (f"; {ignored} (--data-dir or $EVSIM_DATA) is not read: use --source auto or real to train "
                     "on the files there" if ignored is not None else ""))
    root = emulated_nmnist_dir(cache_dir, seed=options.seed)
    return EventFiles("emulated", root, "emulated", _emulated_listing(root), notice)


class _DamagedEmulation(DataError):
    """Something in evsim's own emulated N-MNIST cache folder ``root`` failed its checks.

    Caught once by :func:`_healed`, which makes the folder again; a second time it is a
    one-line DataError.
    """

    def __init__(self, root: Path, reason: str):
        super().__init__(f"{root}: evsim's emulated N-MNIST cache is damaged ({reason}) and making it again "
                         "did not help; delete that folder and try again")
        self.root = root
        self.reason = reason


def _emulated_listing(root: Path) -> dict:
    """The listing of the emulated cache ``root``, with as many recordings as its manifest says.

    Raises
    ------
    _DamagedEmulation
        If a split lacks its class folders or holds another number of recordings.
    """
    try:
        splits = _plain_listing(root)
    except DataError as exc:
        raise _DamagedEmulation(root, str(exc)) from None
    counts = (read_manifest(root) or {}).get("splits", {})
    for name, folder in SPLIT_FOLDERS.items():
        have, want = len(splits[name][0]), counts.get(folder, {}).get("samples")
        if have != want:
            raise _DamagedEmulation(root, f"{folder} holds {have} recordings, its manifest says {want}")
    return splits


def _reader(found: EventFiles):
    """``path -> events`` for ``found``: in evsim's own emulated cache a recording that
    fails the checks of :func:`read_nmnist_bin` is a :class:`_DamagedEmulation` (the user
    never made that file); real files keep their DataError naming the file to replace."""
    if found.layout != "emulated":
        return read_nmnist_bin

    def read(path: Path) -> np.ndarray:
        try:
            return read_nmnist_bin(path)
        except DataError as exc:
            raise _DamagedEmulation(found.root, str(exc).split("; ")[0]) from None

    return read


def _healed(options: DataOptions, use):
    """``(found, use(found), notice)`` for the N-MNIST files of ``options``.

    When they are evsim's own emulated cache and something in it is damaged, the folder
    is deleted and made again (the emulator is deterministic from its seed), ``use``
    runs once more, and ``notice`` says so in one line; else ``notice`` is ``None``.

    Raises
    ------
    DataError
        If the damaged folder cannot be deleted, or the new one is damaged too.
    """
    try:
        found = find_nmnist(options)
        return found, use(found), None
    except _DamagedEmulation as damage:
        try:
            shutil.rmtree(damage.root)
        except OSError as exc:
            raise DataError(f"{damage.root}: evsim's emulated N-MNIST cache is damaged ({damage.reason}) and "
                            f"cannot be deleted ({exc.strerror}); delete that folder and try again") from None
        found = find_nmnist(options)
        notice = (f"evsim's emulated N-MNIST cache {damage.root} was damaged ({damage.reason}); "
                  "made it again from its seed")
        return found, use(found), notice


def crop_hint(dataset_name: str, frame_shape: tuple, network_inputs: int) -> str:
    """`` (add --crop ...)`` where a network of 32x32 maps meets N-MNIST's uncropped 34x34
    frames, `` (give --no-crop ...)`` the other way round, else ``""``: the end of a
    does-not-fit message."""
    if dataset_name == "nmnist" and tuple(frame_shape)[-1] == 34 and network_inputs == 2 * 32 * 32:
        return " (add --crop for N-MNIST's 32x32 frames)"
    if dataset_name == "nmnist" and tuple(frame_shape)[-1] == 32 and network_inputs == 2 * 34 * 34:
        return " (the frames are cropped, by crop = true in a config file or the paper's network's default; give " \
               "--no-crop for N-MNIST's 34x34 frames)"
    return ""


def check_nmnist_options(options: DataOptions) -> None:
    """Refuse options that do not apply to N-MNIST (run before anything loads).

    Raises
    ------
    ConfigError
        For an unknown source, bad framing, a non-frame encoding, a framing option of
        another dataset (``--downsample``) or a negative denoise time.
    """
    check_source(options.source)
    check_framing(options.time_steps, options.slicing)
    if options.encoding not in (None, "frames"):
        raise ConfigError(f"N-MNIST is framed event data; encoding {options.encoding!r} does not apply "
                          "(leave --encoding unset)")
    refuse_framing_options("nmnist", options, hints={"downsample": "N-MNIST offers --crop, 34 -> 32"})
    if options.denoise_us < 0:
        raise ConfigError(f"denoise_us must be >= 0, got {options.denoise_us}")


def event_transform(options: DataOptions):
    """``events -> events`` for N-MNIST (denoise, then crop) and the sensor size after it."""
    import tonic

    steps = []
    if options.denoise_us:
        steps.append(tonic.transforms.Denoise(filter_time=options.denoise_us))
    sensor_out = NMNIST_SENSOR
    if options.crop:
        steps.append(tonic.transforms.CenterCrop(sensor_size=NMNIST_SENSOR, size=(32, 32)))
        sensor_out = (32, 32, 2)

    def transform(events):
        for step in steps:
            events = step(events)
        return events

    return transform, sensor_out


def framing_meta(options: DataOptions) -> dict:
    """The framing parameters, as recorded in ``meta`` and the cache key."""
    return {"time_steps": int(options.time_steps), "slicing": options.slicing, "crop": bool(options.crop),
            "denoise_us": int(options.denoise_us), "downsample": int(options.downsample)}


def frames_cached(name: str, found: EventFiles, options: DataOptions, read, transform, sensor_out,
                  extra_meta: dict, progress: bool | None = None,
                  key_parts: dict | None = None) -> tuple[tuple[Split, Split], dict]:
    """Framed train and test splits of ``found`` and their metadata, from the cache; the
    entry is built first if it is absent or corrupt. ``key_parts``: what else shapes the
    frames (a sensor that is not the dataset's constant). ``meta["fingerprint"]`` is the
    split files' :func:`~evsim.data.cache.files_fingerprint`, ``{split: ...}``."""
    import tonic

    # what else shapes the frames (a folder's sensor.txt) is part of the data's identity too
    fingerprint = {split: {**files_fingerprint(*found.splits[split]), **(key_parts or {})} for split in found.splits}
    # The files' fingerprint, not their folder, names the entry: the same recordings
    # elsewhere (moved, copied to a node's scratch, another spelling) share their frames.
    key = cache_key({"dataset": name, "source": found.source,
                     "files": fingerprint, "framing": framing_meta(options), "version": FRAMING_VERSION,
                     "tonic": tonic.__version__, **(key_parts or {})})
    folder = resolve_cache_dir(options.cache_dir) / "frames" / f"{name}-{key}"
    meta = dict(extra_meta, dataset=name, source=found.source, framing=framing_meta(options))

    def build(tmp: Path) -> None:
        build_frames_entry(tmp, found.splits, read, transform, sensor_out, options.time_steps,
                           options.slicing, meta, progress)

    # What the entry's meta.json must say (after a JSON round trip): an edited one is damage.
    width, height, channels = sensor_out
    expected = json.loads(json.dumps(dict(meta, frame_shape=[int(options.time_steps), channels, height, width])))

    def check(arrays: dict, stored: dict) -> tuple[Split, Split]:
        changed = [key for key, value in expected.items() if stored.get(key) != value]
        if changed:
            raise DataError(f"the entry's meta.json says another {changed[0]} than its key")
        return splits_from_entry(arrays, stored)

    splits, meta = cached_entry(folder, build, check)
    # the identity of the recordings, which a run records: its later uses refuse other data
    # listing: the files, for an exact check against a fingerprint of the older kind (exact_fingerprint)
    return splits, dict(meta, root=str(found.root), layout=found.layout, cache=str(folder), fingerprint=fingerprint,
                        listing=found.splits)


@register("nmnist", check=check_nmnist_options, takes=TAKES)
def load_nmnist(options: DataOptions) -> Dataset:
    """N-MNIST as ``[N, T, 2, H, W]`` count frames (real, or emulated with a notice);
    ``options`` are checked first by :func:`check_nmnist_options` (through
    :func:`evsim.data.load_dataset`).

    Returns
    -------
    Dataset
        ``encoding="frames"``, ``source`` ``"real"`` or ``"emulated"``, ``meta`` with
        ``sensor_size`` (tonic order W, H, P), ``frame_size`` (H, W), ``classes``,
        ``framing``, ``event_stats`` (per split), ``root``, ``cache``, ``fingerprint`` and ``notice``
        (a one-line message, or ``None``).
    """
    transform, sensor_out = event_transform(options)
    extra = {"sensor_size": list(NMNIST_SENSOR), "frame_size": [sensor_out[1], sensor_out[0]],
             "classes": CLASSES}

    def frames(found: EventFiles):
        try:
            return frames_cached("nmnist", found, options, _reader(found), transform, sensor_out, extra)
        except NotARecording as exc:  # in evsim's own emulated cache: damage to heal, as a truncated file is
            if found.layout != "emulated":
                raise
            raise _DamagedEmulation(found.root, str(exc).split("; ")[0]) from None

    found, ((train, test), meta), repaired = _healed(options, frames)
    meta["notice"] = "; ".join(n for n in (found.notice, repaired, blank_notice(meta)) if n) or None
    return Dataset(name="nmnist", train=train, test=test, n_classes=10,
                   sample_shape=(2, sensor_out[1], sensor_out[0]), encoding="frames", source=found.source,
                   time_steps=int(options.time_steps), meta=meta)


def sample_events(options: DataOptions, split: str, index: int) -> tuple[np.ndarray, int, tuple, str]:
    """Raw events of one recording: ``(events, label, sensor_size, path)``.

    Raises
    ------
    ConfigError
        If an option does not apply to N-MNIST, ``split`` is unknown or ``index`` is
        out of range.
    """
    check_nmnist_options(options)

    def read(found: EventFiles):
        files, labels = _pick(found.splits, split, index)
        return _reader(found)(files[index]), int(labels[index]), str(files[index])

    _, (events, label, path), _ = _healed(options, read)
    return events, label, NMNIST_SENSOR, path


def _pick(splits: dict, split: str, index: int):
    """``(files, labels)`` of ``split`` after checking ``index``."""
    if split not in splits:
        raise ConfigError(f"unknown split {split!r}; choose one of: {', '.join(splits)}")
    files, labels = splits[split]
    if not 0 <= index < len(files):
        raise ConfigError(f"index {index} out of range: the {split} split has {len(files)} samples")
    return files, labels
