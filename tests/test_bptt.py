"""Backward pass: reference vs finite differences, kernels vs reference."""
import numpy as np
import pytest

from evsim.kernels.events import dense_to_events, group_by_row
from evsim.kernels.grad import _gather_csr, _scatter_csr, _weight_grad_csr
from evsim.layers import FACTORED_MAX_NEURONS, BackwardRequest, InputGradFactors, SparseLinear
from evsim.loss import mse_rate
from evsim.network import Network
from evsim.neuron import LIFParameters, surrogate_grad
from evsim.synapses import SynapseStore
from tests.reference import dyadic_weights, mse_rate as ref_mse, network_backward, network_forward

SHARPNESS = 4.0


def smooth_spike(u, v_th):
    return 1.0 / (1.0 + np.exp(-SHARPNESS * (u - v_th)))


def smooth_spike_grad(u, v_th=0.5):
    s = smooth_spike(u, v_th)
    return SHARPNESS * s * (1 - s)


@pytest.mark.parametrize("reset", ["hard", "subtract"])
@pytest.mark.parametrize("detach_reset", [False, True])
def test_reference_bptt_matches_finite_differences(reset, detach_reset):
    """With a smooth spike function the reference BPTT is the exact gradient
    (detached reset excepted: then it is not, and we check it differs)."""
    rng = np.random.default_rng(0)
    n_steps, batch = 5, 3
    x = (rng.random((n_steps, batch, 6)) < 0.5).astype(np.float64)
    weights = [rng.normal(0, 0.6, (6, 5)), rng.normal(0, 0.6, (5, 3))]
    biases = [rng.normal(0, 0.2, 5), rng.normal(0, 0.2, 3)]
    labels = np.array([0, 2, 1])
    lif = dict(reset=reset)

    def loss_of(ws):
        counts, _ = network_forward(x, ws, biases, spike_fn=smooth_spike, **lif)
        return ref_mse(counts, labels, n_steps)

    counts, trace = network_forward(x, weights, biases, spike_fn=smooth_spike, **lif)
    target = np.zeros_like(counts)
    target[np.arange(batch), labels] = 1
    grad_counts = 2 * (counts / n_steps - target) / (counts.size * n_steps)
    grads_w, _ = network_backward(trace, weights, grad_counts, smooth_spike_grad, detach_reset=detach_reset, **lif)

    eps = 1e-6
    numeric = [np.zeros_like(w) for w in weights]
    for k, w in enumerate(weights):
        for idx in np.ndindex(w.shape):
            plus = [v.copy() for v in weights]
            minus = [v.copy() for v in weights]
            plus[k][idx] += eps
            minus[k][idx] -= eps
            numeric[k][idx] = (loss_of(plus) - loss_of(minus)) / (2 * eps)
    if detach_reset:
        assert not np.allclose(grads_w[0], numeric[0], rtol=1e-4, atol=1e-9)
    else:
        for analytic, fd in zip(grads_w, numeric):
            np.testing.assert_allclose(analytic, fd, rtol=1e-5, atol=1e-9)


def build_network(rng, sizes, density, path, lif):
    layers = []
    weights, biases = [], []
    for n_in, n_out in zip(sizes, sizes[1:]):
        w = dyadic_weights(rng, (n_in, n_out), density, scale=16)
        b = (rng.integers(-4, 5, n_out) / 16).astype(np.float32)
        mask = np.ones(w.shape, bool) if density >= 1 else w != 0  # a dyadic weight may be 0 yet exist
        layers.append(SparseLinear(SynapseStore.from_dense(w, mask), b, path=path))
        weights.append(w)
        biases.append(b)
    return Network(layers, lif), weights, biases


@pytest.mark.parametrize("path", ["rows", "csr"])
@pytest.mark.parametrize("lif", [
    LIFParameters(),
    LIFParameters(reset="subtract"),
    LIFParameters(detach_reset=True),
    LIFParameters(surrogate="atan"),
    LIFParameters(surrogate="triangle", width=0.7),
    LIFParameters(surrogate="fast_sigmoid", reset="subtract"),
], ids=lambda p: f"{p.reset}-{p.surrogate}-{'detach' if p.detach_reset else 'attached'}")
def test_kernel_gradients_equal_dense_reference(rng, path, lif):
    assert_gradients_equal_dense_reference(rng, [50, 30, 20, 4], 0.4, path, lif)


@pytest.mark.parametrize("path", ["rows", "csr"])
@pytest.mark.parametrize("hidden", [1, 17, 33])
def test_kernel_gradients_when_the_last_vector_has_one_lane(rng, path, hidden):
    """Hidden layers of 16k + 1 neurons: the forward scan, the backward and the rows of
    dL/do formed from the layer above each end in a vector of one lane."""
    assert_gradients_equal_dense_reference(rng, [24, hidden, 3], 0.8, path, LIFParameters(), activity=0.5)


def assert_gradients_equal_dense_reference(rng, sizes, density, path, lif, activity=0.3):
    net, weights, biases = build_network(rng, sizes, density, path, lif)
    n_steps, batch = 8, 6
    x = (rng.random((n_steps, batch, sizes[0])) < activity).astype(np.float32) * rng.integers(1, 3, (n_steps, batch, sizes[0]))
    labels = rng.integers(0, sizes[-1], batch)

    counts, traces = net.forward(x.astype(np.float32))
    _, grad_counts = mse_rate(counts.copy(), labels, n_steps)
    grads = net.backward(traces, grad_counts, would_be_grad=True)

    lif_kw = dict(decay=lif.decay, v_th=lif.v_th, reset=lif.reset)
    ref_counts, ref_trace = network_forward(x.astype(np.float32), weights, biases, **lif_kw)
    np.testing.assert_array_equal(counts, ref_counts)
    assert all(tr[2].sum() > 0 for tr in ref_trace), "every layer should spike in this test"
    grads_w, grads_b = network_backward(
        ref_trace, weights, grad_counts,
        lambda u: surrogate_grad(u - np.float32(lif.v_th), lif.surrogate, lif.width),
        detach_reset=lif.detach_reset, **lif_kw)
    for layer, grad, gw, gb in zip(net.layers, grads, grads_w, grads_b):
        scale = np.abs(gw).max() + 1e-12
        grad_data, grad_bias = grad.params
        np.testing.assert_allclose(grad_data, gw[layer.store.rows(), layer.store.indices], rtol=1e-4,
                                   atol=1e-5 * scale)
        np.testing.assert_allclose(grad_bias, gb, rtol=1e-4, atol=1e-5 * (np.abs(gb).max() + 1e-12))
        if layer.develops:  # would-be gradients of the columns that miss synapses
            assert layer.incomplete.size > 0
            np.testing.assert_allclose(grad.would_be, gw[:, layer.incomplete], rtol=1e-4, atol=1e-5 * scale)
        assert np.abs(grad_data).max() > 0


@pytest.mark.parametrize("density", [0.6, 1.0])
def test_gradients_with_pruned_hidden_neurons(rng, density):
    net, weights, biases = build_network(rng, [40, 16, 3], density, "auto", LIFParameters())
    net.layers[0].kill([1, 4, 9])
    # Fully connected alive neurons: the rows path runs on the CSR data in place.
    assert net.layers[0].complete == (density == 1.0)
    weights[0][:, [1, 4, 9]] = 0
    x = (rng.random((6, 5, 40)) < 0.4).astype(np.float32)
    labels = rng.integers(0, 3, 5)
    counts, traces = net.forward(x)
    _, grad_counts = mse_rate(counts.copy(), labels, 6)
    grads = net.backward(traces, grad_counts)

    # Reference: dead neurons have no synapses and a frozen bias that must not matter,
    # so give them a bias far below threshold (they never fire) in the dense twin.
    ref_biases = [biases[0].copy(), biases[1]]
    ref_biases[0][[1, 4, 9]] = -100.0
    ref_counts, ref_trace = network_forward(x, weights, ref_biases)
    np.testing.assert_array_equal(counts, ref_counts)
    grads_w, grads_b = network_backward(ref_trace, weights, grad_counts,
                                        lambda u: surrogate_grad(u - np.float32(0.5)))
    for layer, grad, gw in zip(net.layers, grads, grads_w):
        np.testing.assert_allclose(grad.params[0], gw[layer.store.rows(), layer.store.indices], rtol=1e-4,
                                   atol=1e-6)
    assert np.all(grads[0].params[1][[1, 4, 9]] == 0)


@pytest.mark.parametrize("path", ["rows", "csr"])
def test_input_gradient_of_selected_rows(rng, path):
    """``input_rows`` gives the same input gradient as the full one, at those rows only
    (what the layer above pruned hidden neurons returns when no dead one needs it)."""
    net, _, _ = build_network(rng, [12, 9, 4], 0.7, path, LIFParameters())
    layer = net.layers[1]
    x = (rng.random((5, 3, 12)) < 0.5).astype(np.float32)
    _, traces = net.forward(x)
    grad_spikes = rng.standard_normal(traces[1].u.shape).astype(np.float32)
    rows = np.array([0, 3, 4, 8])
    full = layer.backward(traces[1], grad_spikes, net.lif).input
    some = layer.backward(traces[1], grad_spikes, net.lif, BackwardRequest(input_units=rows)).input
    assert some.shape == (5, 3, 4) and some.flags.c_contiguous
    np.testing.assert_allclose(some, full[:, :, rows], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("rows", [None, np.array([0, 3, 4, 8, 11])])
def test_input_gradient_as_factors(rng, rows):
    """A narrow rows-path layer may return its input gradient as factors; their product is
    the dense input gradient, and the layer below gets the same gradients from either."""
    net, _, _ = build_network(rng, [12, 40, 9], 1.0, "rows", LIFParameters())
    x = (rng.random((5, 3, 12)) < 0.5).astype(np.float32)
    _, traces = net.forward(x)
    grad_spikes = rng.standard_normal(traces[1].u.shape).astype(np.float32)
    below, top = net.layers
    dense = top.backward(traces[1], grad_spikes, net.lif, BackwardRequest(input_units=rows)).input
    factors = top.backward(traces[1], grad_spikes, net.lif, BackwardRequest(input_units=rows, factors_ok=True)).input
    assert isinstance(factors, InputGradFactors) and factors.weights.flags.c_contiguous
    np.testing.assert_allclose((factors.grad_u[:, :factors.weights.shape[0]] @ factors.weights).reshape(dense.shape), dense, rtol=1e-5, atol=1e-6)
    if rows is None:
        expected = below.backward(traces[0], dense, net.lif, BackwardRequest(input_grad=False)).params
        got = below.backward(traces[0], factors, net.lif, BackwardRequest(input_grad=False)).params
        np.testing.assert_allclose(got[0], expected[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got[1], expected[1], rtol=1e-5, atol=1e-6)
        assert np.abs(expected[0]).max() > 0


def test_wide_layers_and_csr_layers_return_a_dense_input_gradient(rng):
    """Factors only pay for a few neurons above (each input cell costs one multiply-add per neuron)."""
    wide, _, _ = build_network(rng, [12, FACTORED_MAX_NEURONS + 1], 1.0, "rows", LIFParameters())
    sparse, _, _ = build_network(rng, [12, 4], 0.5, "csr", LIFParameters())
    for net in (wide, sparse):
        x = (rng.random((4, 2, 12)) < 0.5).astype(np.float32)
        _, traces = net.forward(x)
        grad_spikes = rng.standard_normal(traces[0].u.shape).astype(np.float32)
        grad_in = net.layers[0].backward(traces[0], grad_spikes, net.lif, BackwardRequest(factors_ok=True)).input
        assert isinstance(grad_in, np.ndarray) and grad_in.shape == (4, 2, 12)


@pytest.mark.parametrize("counts", [False, True], ids=["spikes", "counts"])
def test_csr_kernels_equal_numpy_on_rows_longer_than_a_vector(rng, counts):
    """The csr weight gradient, and the moves between CSR data and a padded dense copy,
    16 synapses per gather or scatter: rows of 0 to 45 synapses (whole and partial
    vectors), 45 alive neurons in rows padded to 48."""
    n_in, n_alive, width, n_slots = 30, 45, 48, 12
    mask = rng.random((n_in, n_alive)) < rng.random((n_in, 1))
    mask[3], mask[4] = False, True
    store = SynapseStore.from_dense(rng.standard_normal((n_in, n_alive)).astype(np.float32), mask)
    rows, columns = store.rows(), store.indices
    x = (rng.random((n_slots, 1, n_in)) < 0.4) * (rng.integers(1, 4, (n_slots, 1, n_in)) if counts else 1)
    by_row = group_by_row(dense_to_events(x.astype(np.float32)), n_in)
    assert (by_row.val is None) == (not counts)
    grad_u = rng.standard_normal((n_slots, width)).astype(np.float32)

    grad_data = np.full(store.nnz, np.nan, np.float32)
    _weight_grad_csr(by_row.row_ptr, by_row.slot, by_row.val, store.indptr, columns, grad_u, grad_data)
    expected = x[:, 0, :].T.astype(np.float64) @ grad_u[:, :n_alive].astype(np.float64)
    np.testing.assert_allclose(grad_data, expected[rows, columns], rtol=1e-5, atol=1e-5)

    dense = np.full((n_in, width), -7.0, np.float32)
    _scatter_csr(store.data, store.indptr, columns, dense)
    expected_dense = np.full((n_in, width), -7.0, np.float32)
    expected_dense[rows, columns] = store.data
    np.testing.assert_array_equal(dense, expected_dense)  # missing synapses and padding untouched
    gathered = np.empty(store.nnz, np.float32)
    _gather_csr(dense, store.indptr, columns, gathered)
    np.testing.assert_array_equal(gathered, store.data)


@pytest.mark.parametrize("kind", ["triangle", "atan", "fast_sigmoid"])
def test_smooth_surrogates_are_derivatives_of_their_primitive(kind):
    width = 0.5
    a = 1 / width
    primitives = {
        "triangle": lambda x: np.select([x < -width, x < 0, x < width],
                                        [0.0, 0.5 * (1 + x / width) ** 2, 1 - 0.5 * (1 - x / width) ** 2], 1.0),
        "atan": lambda x: np.arctan(np.pi * a * x / 2) / np.pi + 0.5,
        "fast_sigmoid": lambda x: x / (1 + a * np.abs(x)),
    }
    x = np.linspace(-2, 2, 401)
    x = x[np.abs(np.abs(x) - width) > 1e-3]  # away from the triangle's kinks
    numeric = (primitives[kind](x + 1e-6) - primitives[kind](x - 1e-6)) / 2e-6
    np.testing.assert_allclose(surrogate_grad(x, kind, width), numeric, rtol=1e-3, atol=1e-4)


def test_rectangular_surrogate_is_the_paper_window():
    x = np.array([-0.6, -0.5, -0.49, 0.0, 0.49, 0.5, 0.6], dtype=np.float32)
    np.testing.assert_array_equal(surrogate_grad(x), [0, 0, 1, 1, 1, 0, 0])


@pytest.mark.parametrize("path", ["rows", "csr"])
def test_counts_and_gradients_with_pruned_output_neurons(rng, path):
    """Dead output neurons count 0 and their dL/dcount is dropped; the alive ones keep
    their own columns of the counts and of dL/dcount (the dense twin: dead columns have no
    weights and a bias far below threshold)."""
    net, weights, biases = build_network(rng, [30, 20, 6], 0.7, path, LIFParameters())
    net.layers[1].kill([1, 3])
    weights[1][:, [1, 3]] = 0
    ref_biases = [biases[0], biases[1].copy()]
    ref_biases[1][[1, 3]] = -100.0
    x = (rng.random((8, 6, 30)) < 0.4).astype(np.float32)
    labels = np.array([1, 0, 3, 2, 4, 5])
    counts, traces = net.forward(x)
    ref_counts, ref_trace = network_forward(x, weights, ref_biases)
    np.testing.assert_array_equal(counts, ref_counts)
    assert np.all(counts[:, [1, 3]] == 0) and counts[:, [0, 2, 4, 5]].any()
    _, grad_counts = mse_rate(counts.copy(), labels, 8)
    grads = net.backward(traces, grad_counts)
    grads_w, _ = network_backward(ref_trace, weights, grad_counts, lambda u: surrogate_grad(u - np.float32(0.5)))
    for layer, grad, gw in zip(net.layers, grads, grads_w):
        np.testing.assert_allclose(grad.params[0], gw[layer.store.rows(), layer.store.indices], rtol=1e-4,
                                   atol=1e-6)
        assert np.abs(grad.params[0]).max() > 0


@pytest.mark.parametrize("path", ["rows", "csr"])
def test_would_be_gradients_through_two_pruned_layers(rng, path, monkeypatch):
    """Dead neurons in two stacked layers: each layer's dead columns get, summed against
    its input events, the error the layer above sends back to their rows. The middle
    layer's weights from the dead neurons below go to its *alive* neurons only (and in a
    padded rows copy, to no padding column). Oracle: the NumPy LIF backward of the
    recorded traces. The layers' uninitialised float buffers are filled with NaN, so a
    read of the padding past the alive neurons shows."""
    import evsim.layers.linear
    from tests.reference import lif_backward

    def poisoned(shape, dtype=np.float32):
        out = aligned_empty(shape, dtype)
        out[...] = np.nan if np.dtype(dtype).kind == "f" else 255
        return out

    aligned_empty = evsim.layers.linear.aligned_empty
    monkeypatch.setattr(evsim.layers.linear, "aligned_empty", poisoned)

    net, weights, _ = build_network(rng, [12, 10, 8, 3], 1.0, path, LIFParameters())
    first, middle, top = net.layers
    first.kill([2, 5])
    middle.kill([1, 4])
    assert middle.rows_copied == (path == "rows")  # 6 alive neurons: rows padded to 16
    x = (rng.random((6, 5, 12)) < 0.6).astype(np.float32)
    counts, traces = net.forward(x)
    _, grad_counts = mse_rate(counts.copy(), rng.integers(0, 3, 5), 6)
    grads = net.backward(traces, grad_counts, would_be_grad=True)

    def grad_u_of(k, grad_o):
        u, o = traces[k].u, traces[k].spikes.astype(np.float32)
        return lif_backward(grad_o.astype(np.float32), u, o, surrogate_grad(u - np.float32(0.5)))

    w1, w2 = middle.store.to_dense(), top.store.to_dense()
    grad_u2 = grad_u_of(2, np.broadcast_to(grad_counts, traces[2].u.shape))
    sent2 = grad_u2 @ w2.T  # [T, B, 10]: the error of every middle neuron's row, dead ones too
    grad_u1 = grad_u_of(1, sent2[:, :, middle.alive_index])
    sent1 = grad_u1 @ w1[:, middle.alive_index].T  # [T, B, 12]
    into_middle = np.zeros(x.shape[:2] + (10,), np.float32)
    into_middle[:, :, first.alive_index] = traces[0].spikes
    assert first.incomplete.tolist() == [2, 5] and middle.incomplete.tolist() == [1, 4]
    want_first = np.einsum("tbi,tbj->ij", x, sent1[:, :, [2, 5]])
    want_middle = np.einsum("tbi,tbj->ij", into_middle, sent2[:, :, [1, 4]])
    np.testing.assert_allclose(grads[0].would_be, want_first, rtol=1e-4, atol=1e-5 * np.abs(want_first).max())
    np.testing.assert_allclose(grads[1].would_be, want_middle, rtol=1e-4, atol=1e-5 * np.abs(want_middle).max())
    assert np.abs(want_first).min(axis=0).max() > 0 and np.abs(want_middle).max() > 0
    want_grad = np.einsum("tbi,tbj->ij", into_middle, grad_u1)
    np.testing.assert_allclose(grads[1].params[0], want_grad[middle.store.rows(), middle.local_index[middle.store.indices]],
                               rtol=1e-4, atol=1e-5 * np.abs(want_grad).max())


def test_a_layer_of_exactly_the_factored_maximum_returns_factors(rng):
    """FACTORED_MAX_NEURONS alive neurons is still narrow enough for factors (the bound is
    inclusive); their product is the dense input gradient."""
    net, _, _ = build_network(rng, [12, FACTORED_MAX_NEURONS], 1.0, "rows", LIFParameters())
    x = (rng.random((4, 2, 12)) < 0.5).astype(np.float32)
    _, traces = net.forward(x)
    grad_spikes = rng.standard_normal(traces[0].u.shape).astype(np.float32)
    layer = net.layers[0]
    dense = layer.backward(traces[0], grad_spikes, net.lif).input
    factors = layer.backward(traces[0], grad_spikes, net.lif, BackwardRequest(factors_ok=True)).input
    assert isinstance(factors, InputGradFactors)
    product = factors.grad_u[:, :FACTORED_MAX_NEURONS] @ factors.weights
    np.testing.assert_allclose(product.reshape(dense.shape), dense, rtol=1e-5, atol=1e-6)
