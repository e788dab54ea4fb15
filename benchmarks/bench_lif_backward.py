"""The LIF backward of conv1 of the paper's N-MNIST network (15 x 32 x 32 neurons, T = 20,
batch 100, 10 % of units spiking), its two inner loops against their earlier forms, and
the whole kernel, 1 thread, best of ``--repeat``:

- the step as one loop, with the surrogate's kind tested inside it and with one copy of
  the loop per kind (both earlier forms: LLVM left them scalar), against
  :func:`evsim.kernels.lif.lif_backward_step` (three loops: the surrogate per kind, the
  step per reset, the bias sums);
- dL/d(spikes) under the 2 x 2 average pooling formed cell by cell (as it was, and as
  :func:`evsim.kernels.lif.pooled_row_cells` still does other windows) against
  :func:`evsim.kernels.lif._pooled_row` (16 windows at a time);
- :func:`evsim.kernels.lif._lif_backward` from a dense dL/d(spikes) and from the pooled
  gradient (every slot receives error here; in training about half do).

Run: python -m benchmarks.bench_lif_backward [--repeat 5]
"""
from __future__ import annotations

import argparse

import numpy as np
from numba import njit

from benchmarks.common import best_time
from evsim.kernels.lif import NO_FACTORS, _lif_backward, _pooled_row, _surrogate, lif_backward_step, pooled_row_cells

STEPS, BATCH, FILTERS, SIDE = 20, 100, 15, 32
CONSTANTS = (np.float32(0.5), np.float32(0.2), np.float32(0.5), True, False)  # width, decay, v_th, hard, detach


@njit(cache=True, inline="always")
def _one_loop(from_above, u, o, carry, out, bias_sum, n, kind, width, decay, v_th, hard, detach_reset):
    """The step as one loop, as it was: the same operations as the three loops."""
    for j in range(n):
        c = carry[j]
        spiked = np.float32(o[j])
        if hard:
            reset_grad = -decay * u[j] * c
            leak = decay * (np.float32(1.0) - spiked)
        else:
            reset_grad = -v_th * c
            leak = decay
        go = from_above[j]
        if not detach_reset:
            go += reset_grad
        gu = go * _surrogate(u[j] - v_th, kind, width) + c * leak
        out[j] = gu
        bias_sum[j] += gu


@njit(cache=True, inline="always")
def _one_loop_per_kind(from_above, u, o, carry, out, bias_sum, n, kind, width, decay, v_th, hard, detach_reset):
    if kind == 0:
        _one_loop(from_above, u, o, carry, out, bias_sum, n, 0, width, decay, v_th, hard, detach_reset)
    elif kind == 1:
        _one_loop(from_above, u, o, carry, out, bias_sum, n, 1, width, decay, v_th, hard, detach_reset)
    elif kind == 2:
        _one_loop(from_above, u, o, carry, out, bias_sum, n, 2, width, decay, v_th, hard, detach_reset)
    else:
        _one_loop(from_above, u, o, carry, out, bias_sum, n, 3, width, decay, v_th, hard, detach_reset)


@njit(cache=True)
def _rows(form, grad, u, o, grad_u, bias, kind, width, decay, v_th, hard, detach):
    """Every slot's step, from the last: ``form`` 0 one loop with the kind tested inside,
    1 one loop per kind, 2 :func:`lif_backward_step`."""
    steps, batch, n = u.shape
    zero = np.zeros(n, np.float32)
    for b in range(batch):
        for t in range(steps - 1, -1, -1):
            carry = grad_u[t + 1, b] if t + 1 < steps else zero
            if form == 0:
                _one_loop(grad[t, b], u[t, b], o[t, b], carry, grad_u[t, b], bias[b], n, kind, width, decay, v_th,
                          hard, detach)
            elif form == 1:
                _one_loop_per_kind(grad[t, b], u[t, b], o[t, b], carry, grad_u[t, b], bias[b], n, kind, width,
                                   decay, v_th, hard, detach)
            else:
                lif_backward_step(grad[t, b], u[t, b], o[t, b], carry, grad_u[t, b], bias[b], n, kind, width,
                                  decay, v_th, hard, detach)


@njit(cache=True)
def _pooled_cell_by_cell(pooled, channels, pool_shape, out):
    """Every slot's dL/d(spikes) under the pooling, one cell at a time."""
    for s in range(pooled.shape[0]):
        pooled_row_cells(pooled[s], channels, pool_shape, out)


@njit(cache=True)
def _pooled_rows(pooled, channels, pool_shape, out):
    for s in range(pooled.shape[0]):
        _pooled_row(pooled, s, channels, pool_shape, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    n = FILTERS * SIDE * SIDE
    u = rng.normal(0.3, 0.3, (STEPS, BATCH, n)).astype(np.float32)
    o = (rng.random((STEPS, BATCH, n)) < 0.1).astype(np.uint8)
    grad = rng.normal(0.0, 1e-3, (STEPS, BATCH, n)).astype(np.float32)
    pooled = rng.normal(0.0, 1e-3, (STEPS * BATCH, FILTERS * (SIDE // 2) ** 2)).astype(np.float32)
    channels = np.arange(FILTERS, dtype=np.int64)
    pool_shape = (SIDE, SIDE, 2, SIDE // 2, SIDE // 2)
    grad_u, bias = np.empty_like(u), np.zeros((BATCH, n), np.float32)
    row = np.empty(n, np.float32)
    timings = {
        "step, one loop, kind tested inside": lambda: _rows(0, grad, u, o, grad_u, bias, 0, *CONSTANTS),
        "step, one loop per kind": lambda: _rows(1, grad, u, o, grad_u, bias, 0, *CONSTANTS),
        "step, three loops (lif_backward_step)": lambda: _rows(2, grad, u, o, grad_u, bias, 0, *CONSTANTS),
        "pooled rows, cell by cell": lambda: _pooled_cell_by_cell(pooled, channels, pool_shape, row),
        "pooled rows, 16 windows at a time": lambda: _pooled_rows(pooled, channels, pool_shape, row),
        "_lif_backward, dense source": lambda: _lif_backward(grad, NO_FACTORS, NO_FACTORS, NO_FACTORS,
                                                             channels, pool_shape, u, o, 0, *CONSTANTS, grad_u,
                                                             bias, 1),
        "_lif_backward, pooled source": lambda: _lif_backward(None, NO_FACTORS, NO_FACTORS, pooled, channels,
                                                              pool_shape, u, o, 0, *CONSTANTS, grad_u, bias, 1),
    }
    results = {}
    for name, call in timings.items():
        seconds = best_time(call, repeat=args.repeat)
        if name.startswith("step"):
            results[name] = grad_u.copy()
        print(f"{name:38s} {1e3 * seconds:7.1f} ms a batch ({1e9 * seconds / (STEPS * BATCH * n):.2f} ns a unit-step)")
    forms = list(results.values())
    same = all(np.array_equal(a, forms[0]) for a in forms)
    print("the step's three forms give the same dL/du bit for bit:", same)


if __name__ == "__main__":
    main()
