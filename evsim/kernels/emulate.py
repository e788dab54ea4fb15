"""Event-camera pixel model for the saccade emulator (see :mod:`evsim.data.emulate`).

Each pixel of an ``H x W`` sensor watches the log intensity ``L(t)`` of the scene
point it currently sees. Between simulation steps ``L`` is taken as linear in time,
so threshold crossings get sub-step (microsecond) timestamps::

    ON  event when L(t) - L_ref >= theta_on[pixel]   then L_ref += theta_on
    OFF event when L(t) - L_ref <= -theta_off[pixel] then L_ref -= theta_off

After an event the pixel is blind for ``refractory_us``; its reference is held in
reset during that time and released to the level it sees at the end (so change that
happens while blind is lost, as in a real DVS/ATIS pixel). Every event redraws the
pixel's next threshold with a small relative jitter. Background-activity noise is a
Poisson process per pixel with random polarity.

Shapes and dtypes: ``log_img`` is ``[N, S, S]`` float32, the log intensity of each
sample's scene on a padded canvas (integer coordinates are canvas pixel centres);
``disp_x``/``disp_y`` are ``[n_steps + 1]`` float64 scene displacements (pixels) at
step boundaries ``k * dt_us``; threshold maps are ``[H * W]`` float32 (row-major,
``pixel = y * W + x``). Output events of sample ``i`` fill
``[offsets[i], offsets[i + 1])`` of the flat output arrays; :func:`emulate_events`
returns them sorted by time.

Randomness: sample ``i`` reseeds Numba's generator with ``seeds[i]``, so its events
do not depend on which thread or batch ran it, nor on a rerun after buffers grow.
"""
from __future__ import annotations

import math

import numpy as np
from concurrent.futures import ThreadPoolExecutor

import numba
from numba import njit

from evsim.errors import ConfigError


@njit(cache=True)
def _jittered(theta, jitter):
    """A threshold redrawn with relative Gaussian jitter, kept above 30 % of nominal."""
    value = theta * (1.0 + jitter * np.random.standard_normal())
    return max(value, 0.3 * theta)


@njit(cache=True)
def _emit(n, start, write, out_x, out_y, out_t, out_p, x, y, t_us, polarity):
    """Record one event; only count it when ``write`` is False or the buffers are full."""
    k = start + n
    if write and k < out_t.shape[0]:
        out_x[k] = x
        out_y[k] = y
        out_t[k] = max(int(round(t_us)), 0)
        out_p[k] = polarity
    return n + 1


@njit(cache=True)
def _pixel_step(pix, x, y, t0, t1, level0, level1, ref, blind, on_th, off_th, theta_on, theta_off,
                jitter, refractory_us, n, start, write, out_x, out_y, out_t, out_p):
    """Advance one pixel over one step ``[t0, t1]`` (slow path: blind or crossing).

    ``ref``, ``blind``, ``on_th``, ``off_th`` are the per-pixel state arrays, updated
    in place. Returns the new event count.
    """
    if blind[pix] >= t1:
        ref[pix] = level1  # reset held while blind
        return n
    tc = t0
    lc = level0
    if blind[pix] > t0:
        tc = blind[pix]
        lc = level0 + (level1 - level0) * (tc - t0) / (t1 - t0)
        ref[pix] = lc  # released: the new reference is what the pixel sees now
    while True:
        diff = level1 - ref[pix]
        if diff >= on_th[pix]:
            target = ref[pix] + on_th[pix]
            polarity = 1
        elif diff <= -off_th[pix]:
            target = ref[pix] - off_th[pix]
            polarity = 0
        else:
            return n
        t_event = tc + (t1 - tc) * (target - lc) / (level1 - lc)
        n = _emit(n, start, write, out_x, out_y, out_t, out_p, x, y, t_event, polarity)
        if polarity == 1:
            on_th[pix] = _jittered(theta_on[pix], jitter)
        else:
            off_th[pix] = _jittered(theta_off[pix], jitter)
        blind[pix] = t_event + refractory_us
        if blind[pix] >= t1:
            ref[pix] = level1
            return n
        tc = blind[pix]
        lc = level0 + (level1 - level0) * (tc - t0) / (t1 - t0)
        ref[pix] = lc


@njit(cache=True)
def _shifted_scene(img, shift_x, shift_y, width, height, out):
    """Log intensity seen by every pixel: ``img`` sampled bilinearly at ``(x + shift_x, y + shift_y)``.

    The shift is the same for all pixels (the scene translates), so the bilinear
    weights are computed once per step. The caller guarantees the canvas is large
    enough (no clamping here).
    """
    fx = math.floor(shift_x)
    fy = math.floor(shift_y)
    ax = shift_x - fx
    ay = shift_y - fy
    ix = int(fx)
    iy = int(fy)
    w00 = (1.0 - ax) * (1.0 - ay)
    w01 = ax * (1.0 - ay)
    w10 = (1.0 - ax) * ay
    w11 = ax * ay
    for y in range(height):
        row0 = img[iy + y]
        row1 = img[iy + y + 1]
        for x in range(width):
            j = ix + x
            out[y * width + x] = w00 * row0[j] + w01 * row0[j + 1] + w10 * row1[j] + w11 * row1[j + 1]


@njit(cache=True)
def _simulate_sample(img, disp_x, disp_y, dt_us, origin_x, origin_y, width, height,
                     theta_on, theta_off, theta_jitter, refractory_us, noise_per_pixel_us,
                     seed, write, start, out_x, out_y, out_t, out_p):
    """Simulate one sample; return its event count (write events from ``start``)."""
    np.random.seed(seed)
    n_pix = width * height
    n_steps = disp_x.shape[0] - 1
    on_th = np.empty(n_pix)
    off_th = np.empty(n_pix)
    for pix in range(n_pix):
        on_th[pix] = _jittered(theta_on[pix], theta_jitter)
        off_th[pix] = _jittered(theta_off[pix], theta_jitter)
    blind = np.full(n_pix, -1.0)
    level0 = np.empty(n_pix)
    level1 = np.empty(n_pix)
    # Pixel x sees canvas point x - origin - disp: the scene moves by +disp.
    _shifted_scene(img, -origin_x - disp_x[0], -origin_y - disp_y[0], width, height, level0)
    ref = level0.copy()
    n = 0
    for s in range(n_steps):
        t0 = s * dt_us
        t1 = t0 + dt_us
        _shifted_scene(img, -origin_x - disp_x[s + 1], -origin_y - disp_y[s + 1], width, height, level1)
        for pix in range(n_pix):
            d = level1[pix] - ref[pix]
            if blind[pix] > t0 or d >= on_th[pix] or -d >= off_th[pix]:
                n = _pixel_step(pix, pix % width, pix // width, t0, t1, level0[pix], level1[pix],
                                ref, blind, on_th, off_th, theta_on, theta_off, theta_jitter,
                                refractory_us, n, start, write, out_x, out_y, out_t, out_p)
        level0, level1 = level1, level0
    # Background activity: Poisson count per pixel, uniform times, random polarity.
    duration_us = n_steps * dt_us
    for pix in range(n_pix):
        for _ in range(np.random.poisson(noise_per_pixel_us * duration_us)):
            t_noise = np.random.random() * duration_us
            polarity = 1 if np.random.random() < 0.5 else 0
            n = _emit(n, start, write, out_x, out_y, out_t, out_p, pix % width, pix // width,
                      t_noise, polarity)
    return n


@njit(nogil=True, cache=True)
def _emulate_batch(log_img, disp_x, disp_y, dt_us, origin_x, origin_y, width, height,
                   theta_on, theta_off, theta_jitter, refractory_us, noise_per_pixel_us, seeds,
                   capacity):
    """Events of a batch of samples in one pass over growable buffers.

    A sample that does not fit the buffers is counted, the buffers grow, and the
    sample is simulated again (same seed, same events). Within a sample, events come
    out step by step (noise last), not sorted by time. Serial and GIL-free, so Python
    can run batches on several threads.
    """
    n_samples = log_img.shape[0]
    out_x = np.empty(capacity, dtype=np.int16)
    out_y = np.empty(capacity, dtype=np.int16)
    out_t = np.empty(capacity, dtype=np.int64)
    out_p = np.empty(capacity, dtype=np.uint8)
    offsets = np.zeros(n_samples + 1, dtype=np.int64)
    for i in range(n_samples):
        while True:
            n = _simulate_sample(
                log_img[i], disp_x, disp_y, dt_us, origin_x, origin_y, width, height,
                theta_on, theta_off, theta_jitter, refractory_us, noise_per_pixel_us,
                seeds[i], True, offsets[i], out_x, out_y, out_t, out_p)
            if offsets[i] + n <= out_t.shape[0]:
                break
            size = max(2 * out_t.shape[0], offsets[i] + n)
            out_x = _grown(out_x, size)
            out_y = _grown(out_y, size)
            out_t = _grown(out_t, size)
            out_p = _grown(out_p, size)
        offsets[i + 1] = offsets[i] + n
    total = offsets[n_samples]
    return out_x[:total].copy(), out_y[:total].copy(), out_t[:total].copy(), out_p[:total].copy(), offsets


@njit(cache=True)
def _grown(values, size):
    """A copy of ``values`` in a larger buffer of ``size`` entries."""
    bigger = np.empty(size, dtype=values.dtype)
    bigger[:values.shape[0]] = values
    return bigger


def _check_canvas(canvas_hw, disp_x, disp_y, origin, sensor_hw):
    """Raise if some pixel would sample outside the canvas (the kernel does not clamp)."""
    lo_x = -origin[0] - np.max(disp_x)
    hi_x = sensor_hw[1] - 1 - origin[0] - np.min(disp_x) + 1
    lo_y = -origin[1] - np.max(disp_y)
    hi_y = sensor_hw[0] - 1 - origin[1] - np.min(disp_y) + 1
    if lo_x < 0 or lo_y < 0 or hi_x > canvas_hw[1] - 1 or hi_y > canvas_hw[0] - 1:
        raise ConfigError(
            f"the sensor path samples canvas x in [{lo_x:.1f}, {hi_x:.1f}], y in [{lo_y:.1f}, {hi_y:.1f}] "
            f"but the canvas is {canvas_hw[1]}x{canvas_hw[0]}; reduce the origin or the saccades")


def emulate_events(log_img, disp_x, disp_y, dt_us, origin, sensor_hw,
                   theta_on, theta_off, theta_jitter, refractory_us, noise_hz, seeds, n_jobs=None):
    """Events of every sample as flat arrays plus offsets.

    Parameters
    ----------
    log_img : ndarray, float32 ``[N, S, S]``
        Log intensity of each scene on a padded square canvas.
    disp_x, disp_y : ndarray, float64 ``[n_steps + 1]``
        Scene displacement in pixels at each step boundary.
    dt_us : float
        Step length in microseconds.
    origin : (float, float)
        Sensor position of canvas point (0, 0) at zero displacement, ``(x, y)``.
    sensor_hw : (int, int)
        Sensor height and width.
    theta_on, theta_off : ndarray, float32 ``[H * W]``
        Per-pixel contrast thresholds (log units, mismatch already applied).
    theta_jitter : float
        Relative standard deviation of each event's threshold around the pixel's.
    refractory_us : float
        Blind time after every event.
    noise_hz : float
        Background-activity rate per pixel (both polarities together).
    seeds : ndarray, int64 ``[N]``
        One seed per sample.
    n_jobs : int, optional
        Threads to run batches on (default: Numba's thread count). The result does
        not depend on it.

    Returns
    -------
    x, y : int16 ``[E]``; t : int64 ``[E]`` (microseconds); p : uint8 ``[E]`` (1 = ON);
    offsets : int64 ``[N + 1]``; sample ``i`` is ``[offsets[i], offsets[i + 1])``.

    Raises
    ------
    ConfigError
        If the sensor, moved along the whole path, would look beyond the canvas.
    """
    log_img = np.ascontiguousarray(log_img, dtype=np.float32)
    _check_canvas(log_img.shape[1:], disp_x, disp_y, origin, sensor_hw)
    args = (log_img, np.ascontiguousarray(disp_x, dtype=np.float64),
            np.ascontiguousarray(disp_y, dtype=np.float64), float(dt_us), float(origin[0]),
            float(origin[1]), int(sensor_hw[1]), int(sensor_hw[0]),
            np.ascontiguousarray(theta_on, dtype=np.float32),
            np.ascontiguousarray(theta_off, dtype=np.float32), float(theta_jitter),
            float(refractory_us), float(noise_hz) * 1e-6, np.ascontiguousarray(seeds, dtype=np.int64))
    n_jobs = max(1, min(int(n_jobs or numba.get_num_threads()), len(seeds)))
    bounds = np.linspace(0, len(seeds), n_jobs + 1).astype(int)
    jobs = [(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]
    run = lambda lo_hi: _emulate_batch(args[0][lo_hi[0]:lo_hi[1]], *args[1:-1],
                                       args[-1][lo_hi[0]:lo_hi[1]], 6000 * (lo_hi[1] - lo_hi[0]))
    if len(jobs) == 1:
        parts = [run(jobs[0])]
    else:
        with ThreadPoolExecutor(len(jobs)) as pool:
            parts = list(pool.map(run, jobs))
    return _sort_samples(*_concat(parts))


def _sort_samples(x, y, t, p, offsets):
    """Sort each sample's events by time (stable, so equal times keep pixel order)."""
    order = np.empty(len(t), dtype=np.int64)
    for lo, hi in zip(offsets[:-1], offsets[1:]):
        order[lo:hi] = lo + np.argsort(t[lo:hi], kind="stable")
    return x[order], y[order], t[order], p[order], offsets


def _concat(parts):
    """Join per-batch results, shifting each batch's offsets."""
    offsets = [np.zeros(1, dtype=np.int64)]
    base = 0
    for part in parts:
        offsets.append(part[4][1:] + base)
        base += part[4][-1]
    return tuple(np.concatenate([part[k] for part in parts]) for k in range(4)) + (np.concatenate(offsets),)
