"""The row-major layout bench_fc_input_grad compares the strips against."""
import numpy as np

from benchmarks.bench_fc_input_grad import row_major_strips
from evsim.kernels.grad import input_grad_rows, weight_strips, STRIP_WIDTH


def test_row_major_strips_hold_the_strips_rows_n_in_apart(rng):
    weights = rng.normal(size=(100, 7)).astype(np.float32)
    spread, strips = row_major_strips(weights, 32), weight_strips(weights, 32)
    assert spread.shape == (4, 7, 100) and spread.flags.c_contiguous
    np.testing.assert_array_equal(spread[:, :, :32], strips)


def test_the_kernel_gives_the_same_bits_on_either_layout(rng):
    weights = rng.normal(size=(200, 30)).astype(np.float32)
    grad_u = (rng.normal(size=(9, 30)) * (rng.random((9, 30)) < 0.5)).astype(np.float32)
    rows = np.flatnonzero(grad_u.any(axis=1))
    width = -(-200 // STRIP_WIDTH) * STRIP_WIDTH
    a, b = np.empty((9, width), np.float32), np.empty((9, width), np.float32)
    input_grad_rows(grad_u, 30, weight_strips(weights), rows, a)
    input_grad_rows(grad_u, 30, row_major_strips(weights, STRIP_WIDTH), rows, b)
    np.testing.assert_array_equal(a, b)
