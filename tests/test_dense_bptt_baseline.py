"""The dense NumPy/BLAS baseline of benchmarks/bench_train.py computes what evsim computes.

Small networks with dyadic weights (exact in float32), so forward spikes must agree bit
for bit; gradients and one Adam step agree to float32 rounding (summation order).
The last test checks the benchmark's snnTorch model the same way (opt-in: torch is slow to import).
"""
import os

import numpy as np
import pytest

from benchmarks.dense_bptt import DenseMLP
from evsim.layers import SparseLinear
from evsim.loss import mse_rate
from evsim.network import Network
from evsim.neuron import LIFParameters
from evsim.optim import Optimizer
from evsim.synapses import SynapseStore
from tests.reference import dyadic_weights

SIZES = (12, 9, 4)
T, B = 6, 5
RTOL, ATOL = 1e-5, 1e-7


def build(rng, density, path, lif):
    layers = []
    for n_in, n_out in zip(SIZES, SIZES[1:]):
        w = dyadic_weights(rng, (n_in, n_out), 1.0, scale=16)
        mask = np.ones_like(w, dtype=bool) if density >= 1 else rng.random(w.shape) < density
        b = (rng.integers(-4, 5, n_out) / 16).astype(np.float32)
        layers.append(SparseLinear(SynapseStore.from_dense(w * mask, mask), b, path=path))
    return Network(layers, lif)


def csr_to_dense(layer, values):
    dense = np.zeros(layer.store.shape, dtype=np.float32)
    dense[layer.store.rows(), layer.store.indices] = values
    return dense


@pytest.mark.parametrize("path", ["rows", "csr"])
@pytest.mark.parametrize("density", [1.0, 0.6])
@pytest.mark.parametrize("lif", [LIFParameters(), LIFParameters(detach_reset=True), LIFParameters(reset="subtract")],
                         ids=["hard", "hard-detached", "subtract"])
def test_dense_baseline_matches_evsim(path, density, lif):
    rng = np.random.default_rng(7)
    net = build(rng, density, path, lif)
    dense = DenseMLP.from_network(net, dense=density >= 1)
    x = (rng.random((T, B, SIZES[0])) < 0.4).astype(np.float32)
    labels = rng.integers(0, SIZES[-1], B)

    counts, traces = net.forward(x)
    d_counts, d_traces = dense.forward(x)
    np.testing.assert_array_equal(d_counts, counts)
    for trace, d_trace in zip(traces, d_traces):
        np.testing.assert_array_equal(d_trace.o, trace.spikes)
        np.testing.assert_array_equal(d_trace.u, trace.u)
    # The check means something only if both layers spike and some do not.
    assert 0 < d_traces[0].o.mean() < 1 and 0 < d_traces[1].o.mean() < 1

    loss, grad_counts = mse_rate(counts, labels, T)
    grads = net.backward(traces, grad_counts)
    grads_w, grads_b = dense.backward(d_traces, grad_counts)
    for layer, grad, gw, gb in zip(net.layers, grads, grads_w, grads_b):
        assert np.abs(gw).max() > 0
        np.testing.assert_allclose(gw, csr_to_dense(layer, grad.params[0]), rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(gb, grad.params[1], rtol=RTOL, atol=ATOL)

    Optimizer("adam", 1e-2).step(net.parameters(grads))
    dense.adam_step(grads_w, grads_b, lr=1e-2)
    for layer, w, b in zip(net.layers, dense.weights, dense.biases):
        np.testing.assert_allclose(w, layer.store.to_dense(), rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(b, layer.bias, rtol=RTOL, atol=ATOL)


def test_train_step_returns_evsim_loss():
    rng = np.random.default_rng(3)
    net = build(rng, 1.0, "rows", LIFParameters())
    dense = DenseMLP.from_network(net)
    x = (rng.random((T, B, SIZES[0])) < 0.4).astype(np.float32)
    labels = rng.integers(0, SIZES[-1], B)
    expected, _ = mse_rate(net.forward(x)[0], labels, T)
    assert dense.train_step(x, labels) == pytest.approx(expected, rel=1e-6)
    np.testing.assert_array_equal(dense.infer(x) >= 0, True)


@pytest.mark.skipif(not os.environ.get("EVSIM_TEST_SNNTORCH"),
                    reason="importing torch takes seconds: set EVSIM_TEST_SNNTORCH=1 (needs the bench extra)")
@pytest.mark.parametrize("detach_reset", [True, False])
def test_snntorch_model_of_the_benchmark_is_evsim_with_detached_reset(detach_reset):
    """bench_train's snnTorch network computes evsim's forward, and evsim's gradient with
    ``detach_reset=True`` (snnTorch detaches its reset signal), not evsim's default one."""
    torch = pytest.importorskip("torch")
    snntorch = pytest.importorskip("snntorch")
    from benchmarks.bench_train import build_snntorch

    rng = np.random.default_rng(11)
    lif = LIFParameters(detach_reset=detach_reset)
    net = build(rng, 1.0, "rows", lif)
    model, _, infer = build_snntorch((torch, snntorch), net, lif)
    x = (rng.random((T, B, SIZES[0])) < 0.4).astype(np.float32)
    labels = rng.integers(0, SIZES[-1], B)

    counts, traces = net.forward(x)
    np.testing.assert_array_equal(infer(x), counts)
    _, grad_counts = mse_rate(counts, labels, T)
    grads = net.backward(traces, grad_counts)
    out = model(torch.from_numpy(x))
    target = torch.nn.functional.one_hot(torch.from_numpy(labels), SIZES[-1]).float()
    torch.nn.functional.mse_loss(out / T, target).backward()
    first = net.layers[0]
    same = np.allclose(model.fcs[0].weight.grad.numpy().T, csr_to_dense(first, grads[0].params[0]), rtol=RTOL,
                       atol=ATOL)
    assert same == detach_reset
    if detach_reset:
        for layer, grad, fc in zip(net.layers, grads, model.fcs):
            np.testing.assert_allclose(fc.weight.grad.numpy().T, csr_to_dense(layer, grad.params[0]),
                                       rtol=RTOL, atol=ATOL)
            np.testing.assert_allclose(fc.bias.grad.numpy(), grad.params[1], rtol=RTOL, atol=ATOL)
