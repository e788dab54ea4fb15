"""Shared helpers for benchmarks: seeded inputs, warm-up, best-of-N timing."""
from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numba
import numpy as np


def best_time(fn, repeat: int = 5, warmup: int = 1) -> float:
    """Best wall time of ``fn()`` in seconds over ``repeat`` runs, after untimed warm-up
    calls that absorb JIT compilation. Best-of-N is the least noisy on a shared machine."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def spike_input(rng: np.random.Generator, n_steps: int, batch: int, n: int, activity: float) -> np.ndarray:
    """Binary ``[T, B, n]`` input with a fraction ``activity`` of cells active."""
    return (rng.random((n_steps, batch, n), dtype=np.float32) < activity).astype(np.float32)


def stored_frames(x: np.ndarray):
    """The binary ``[T, B, n]`` input as evsim's event loaders store a dataset
    (``SparseFrames``), or None for checkouts that predate them."""
    try:
        from evsim.data.frames import SparseFrames
    except ImportError:
        return None
    return SparseFrames.from_dense(np.ascontiguousarray(x.transpose(1, 0, 2)).astype(np.uint8))


def machine() -> dict:
    return {"cpu": platform.processor() or platform.machine(), "threads": numba.get_num_threads(),
            "numpy": np.__version__, "numba": numba.__version__}


def save_json(path: str | None, payload: dict) -> None:
    if path:
        Path(path).write_text(json.dumps(payload, indent=2) + "\n")


def linear_fit(x, y) -> dict:
    """Least-squares line ``y = intercept + slope * x`` (``np.polyfit``) and its R²."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.size < 2 or np.ptp(x) == 0:
        return {"slope": float("nan"), "intercept": float("nan"), "r2": float("nan"), "points": int(x.size)}
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (intercept + slope * x)
    total = np.sum((y - y.mean()) ** 2)
    r2 = 1.0 - float(np.sum(residual ** 2) / total) if total > 0 else 1.0
    return {"slope": float(slope), "intercept": float(intercept), "r2": r2, "points": int(x.size)}


def relative_cost_fit(work: list[tuple[float, float]], times: list[float]) -> tuple[float, float]:
    """``(a, b)`` with ``a * work[k][0] + b * work[k][1]`` close to ``times[k]``: least
    squares of the relative error (plain least squares lets the largest shapes set the
    line: it misjudged the paper's conv1 by 1.5x, and gave the direct kernel a negative
    cost per unit)."""
    t = np.asarray(times, dtype=np.float64)
    a = np.asarray(work, dtype=np.float64) / t[:, None]
    return tuple(float(x) for x in np.linalg.lstsq(a, np.ones(t.size), rcond=None)[0])
