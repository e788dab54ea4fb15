"""The fully connected layer's input gradient (:func:`evsim.kernels.grad.input_grad_rows`)
on the FC-300 layer of the paper's N-MNIST network, from a real backward of bench_conv's
batch: its weights in contiguous strips (:func:`evsim.kernels.grad.weight_strips`, what
training runs), the same kernel with each strip's rows ``n_in`` floats apart (the layout
of a row-major ``[N, n_in]`` copy: 10 KB, so a strip's 300 rows share a few cache sets),
and BLAS (``grad_u @ W.T`` on all slots, at 1 and at the run's thread count).

Prints ms (best of ``--repeat``) and each one's time over the strips'.

Run: python -m benchmarks.bench_fc_input_grad [--threads 1,2] [--repeat 7] [--json F]
"""
from __future__ import annotations

import argparse

import numba
import numpy as np
from threadpoolctl import threadpool_limits

import evsim
import evsim.layers.linear as linear
from benchmarks.bench_conv import BATCH, N_STEPS, SPEC, frames
from benchmarks.common import best_time, machine, save_json
from evsim.kernels.grad import STRIP_WIDTH, input_grad_rows, weight_strips


def fc1_operands() -> tuple[np.ndarray, np.ndarray]:
    """``(grad_u2, weights)`` that training hands the FC-300 layer's input gradient in one
    backward of bench_conv's first batch."""
    rng = np.random.default_rng(0)
    network = evsim.Network.from_spec(SPEC, rng=1)
    drive = evsim.dense_to_events(frames(rng, 0.06))
    labels = rng.integers(0, 10, BATCH)
    captured = []
    original = linear._input_grad_dense

    def capture(grad_u2, weights):
        captured.append((grad_u2.copy(), weights.copy()))
        return original(grad_u2, weights)

    linear._input_grad_dense = capture
    try:
        counts, traces = network.forward(drive)
        network.backward(traces, evsim.mse_rate(counts, labels, N_STEPS)[1])
    finally:
        linear._input_grad_dense = original
    return max(captured, key=lambda pair: pair[1].shape[0])


def row_major_strips(weights: np.ndarray, width: int) -> np.ndarray:
    """``[n_strips, N, n_in]``: strip ``j``'s rows are the rows of ``weights.T`` from column
    ``j * width``, so they lie ``n_in`` floats apart as in a row-major copy (only each
    row's first ``width`` floats are read)."""
    n_in, n_alive = weights.shape
    n_strips = -(-n_in // width)
    padded = np.zeros((n_alive, n_in + n_strips * width), dtype=np.float32)
    padded[:, :n_in] = weights.T
    out = np.empty((n_strips, n_alive, n_in), dtype=np.float32)
    for j in range(n_strips):
        out[j] = padded[:, j * width:j * width + n_in]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--json")
    args = parser.parse_args()
    grad_u2, weights = fc1_operands()
    n_in, n_alive = weights.shape
    rows = np.flatnonzero(grad_u2[:, :n_alive].any(axis=1))
    terms = grad_u2[rows, :n_alive]
    print(f"FC-300 input gradient: {grad_u2.shape[0]} slots, {rows.size} with an error, "
          f"{np.count_nonzero(terms) / terms.size:.0%} of their dL/du nonzero; {n_in} inputs, {n_alive} neurons; "
          f"strips of {STRIP_WIDTH}")
    strips = weight_strips(weights)
    spread = row_major_strips(weights, STRIP_WIDTH)
    width = strips.shape[0] * STRIP_WIDTH
    out = np.empty((grad_u2.shape[0], width), dtype=np.float32)
    expected = grad_u2[:, :n_alive] @ weights.T
    results = {"machine": machine(), "slots": grad_u2.shape[0], "slots_with_error": int(rows.size), "runs": {}}
    for threads in [int(t) for t in args.threads.split(",")]:
        numba.set_num_threads(threads)
        input_grad_rows(grad_u2, n_alive, strips, rows, out)
        np.testing.assert_allclose(out[:, :n_in], expected, rtol=1e-4, atol=1e-6)
        times = {
            "strips": best_time(lambda: input_grad_rows(grad_u2, n_alive, strips, rows, out), args.repeat),
            "rows_n_in_apart": best_time(lambda: input_grad_rows(grad_u2, n_alive, spread, rows, out), args.repeat),
        }
        for blas in sorted({1, threads}):
            with threadpool_limits(limits=blas, user_api="blas"):
                times[f"blas_{blas}_thread"] = best_time(lambda: grad_u2[:, :n_alive] @ weights.T, args.repeat)
        results["runs"][threads] = {name: t * 1e3 for name, t in times.items()}
        print(f"threads {threads}: " + ", ".join(f"{name} {t * 1e3:.1f} ms ({t / times['strips']:.2f}x)"
                                                  for name, t in times.items()))
    save_json(args.json, results)


if __name__ == "__main__":
    main()
