"""The LIF backward of conv1 of the paper's N-MNIST network (15 x 32 x 32 neurons, T = 20,
batch 100, 10 % of units spiking), its two inner loops against their earlier forms, and
the whole kernel, 1 thread, best of ``--repeat``:

- the step's loop with the surrogate's kind tested inside it (as it was: LLVM left it
  scalar) against :func:`evsim.kernels.lif.lif_backward_step` (one loop per kind);
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
from evsim.kernels.lif import NO_FACTORS, _backward_row, _lif_backward, _pooled_row, lif_backward_step, pooled_row_cells

STEPS, BATCH, FILTERS, SIDE = 20, 100, 15, 32
CONSTANTS = (np.float32(0.5), np.float32(0.2), np.float32(0.5), True, False)  # width, decay, v_th, hard, detach


@njit(cache=True)
def _rows(step_in_loop, grad, u, o, grad_u, bias, kind, width, decay, v_th, hard, detach):
    """Every slot's step, from the last, by the kind-in-the-loop form or by the step."""
    steps, batch, n = u.shape
    zero = np.zeros(n, np.float32)
    for b in range(batch):
        for t in range(steps - 1, -1, -1):
            carry = grad_u[t + 1, b] if t + 1 < steps else zero
            if step_in_loop:
                _backward_row(grad[t, b], u[t, b], o[t, b], carry, grad_u[t, b], bias[b], n, kind, width, decay,
                              v_th, hard, detach)
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
        "step loop, kind tested inside": lambda: _rows(True, grad, u, o, grad_u, bias, 0, *CONSTANTS),
        "step loop, one loop per kind": lambda: _rows(False, grad, u, o, grad_u, bias, 0, *CONSTANTS),
        "pooled rows, cell by cell": lambda: _pooled_cell_by_cell(pooled, channels, pool_shape, row),
        "pooled rows, 16 windows at a time": lambda: _pooled_rows(pooled, channels, pool_shape, row),
        "_lif_backward, dense source": lambda: _lif_backward(grad, NO_FACTORS, NO_FACTORS, NO_FACTORS,
                                                             channels, pool_shape, u, o, 0, *CONSTANTS, grad_u,
                                                             bias, 1),
        "_lif_backward, pooled source": lambda: _lif_backward(None, NO_FACTORS, NO_FACTORS, pooled, channels,
                                                              pool_shape, u, o, 0, *CONSTANTS, grad_u, bias, 1),
    }
    for name, call in timings.items():
        seconds = best_time(call, repeat=args.repeat)
        print(f"{name:36s} {1e3 * seconds:7.1f} ms a batch ({1e9 * seconds / (STEPS * BATCH * n):.2f} ns a unit-step)")


if __name__ == "__main__":
    main()
