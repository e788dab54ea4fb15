"""Direct encoding as a StaticDrive: the same analog input at every step, propagated by
one product per sample; the oracle is the event path on the input repeated T times."""
import numpy as np
import pytest

from evsim.data.encoding import encode_events
from evsim.energy import count_network
from evsim.errors import ShapeError
from evsim.kernels.events import Events, StaticDrive, dense_to_events
from evsim.loss import mse_rate
from evsim.neuron import LIFParameters
from tests.test_bptt import build_network

T = 6


def dyadic_input(rng, batch, n_in):
    """Multiples of 1/16 in [-1, 1], a quarter of them 0: every sum is exact in float32."""
    x = rng.integers(-16, 17, (batch, n_in)).astype(np.float32) / np.float32(16)
    return x * (rng.random((batch, n_in)) < 0.75)


def both_drives(x):
    repeated = dense_to_events(np.ascontiguousarray(np.broadcast_to(x, (T,) + x.shape)))
    return StaticDrive(x, T), repeated


def network(rng, path, density, killed):
    net, _, _ = build_network(rng, [37, 21, 5], density, path, LIFParameters())
    if killed:
        net.layers[0].kill(np.array([2, 5, 19]))
    return net


CASES = [("rows", 1.0, False), ("rows", 1.0, True), ("rows", 0.5, False), ("csr", 1.0, False), ("csr", 0.5, True)]


@pytest.mark.parametrize("path,density,killed", CASES)
def test_static_drive_forward_equals_the_events_of_the_repeated_input(rng, path, density, killed):
    """Bit for bit (dyadic weights and inputs): membranes, spikes and counts of every layer,
    for whole and padded rows, pruned synapses and neurons, and the csr path."""
    net = network(rng, path, density, killed)
    static, repeated = both_drives(dyadic_input(rng, 7, 37))
    counts_s, traces_s = net.forward(static)
    counts_e, traces_e = net.forward(repeated)
    np.testing.assert_array_equal(counts_s, counts_e)
    for ts, te in zip(traces_s, traces_e):
        np.testing.assert_array_equal(ts.u, te.u)
        np.testing.assert_array_equal(ts.spikes, te.spikes)
    assert counts_s.sum() > 0


@pytest.mark.parametrize("path,density,killed", CASES)
def test_static_drive_gradients_equal_the_event_path(rng, path, density, killed):
    """Weight, bias and would-be gradients (dead neurons' error from the layer above
    included): the sum over steps first, then one product, against event by event."""
    net = network(rng, path, density, killed)
    static, repeated = both_drives(dyadic_input(rng, 7, 37))
    labels = rng.integers(0, 5, 7)
    grads = []
    for drive in (static, repeated):
        counts, traces = net.forward(drive)
        _, grad_counts = mse_rate(counts.copy(), labels, T)
        grads.append([(grad.params[0], grad.params[1], grad.would_be)
                      for grad in net.backward(traces, grad_counts, would_be_grad=True)])
    for (data_s, bias_s, would_s), (data_e, bias_e, would_e) in zip(*grads):
        np.testing.assert_allclose(data_s, data_e, rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(bias_s, bias_e)
        if would_e is None:
            assert would_s is None
        else:
            np.testing.assert_allclose(would_s, would_e, rtol=1e-5, atol=1e-7)
    first = grads[0][0]
    assert np.abs(first[0]).max() > 0 and (not net.layers[0].incomplete.size or np.abs(first[2]).max() > 0)


@pytest.mark.parametrize("analog", [True, False])
def test_static_drive_counts_the_operations_of_every_step(rng, analog):
    """Exact counts: a nonzero analog value is one multiply-accumulate per existing synapse
    at every step (zeros cost nothing); as counts, a value v is v events."""
    net = network(rng, "rows", 0.5, True)
    x = np.abs(dyadic_input(rng, 4, 37)) * 16  # whole counts, for the count reading
    static, repeated = both_drives(x)
    reports = []
    for drive in (static, repeated):
        counts, traces = net.forward(drive)
        reports.append(count_network(net, traces, analog, counts.shape[0]))
    for mine, theirs in zip(reports[0].layers, reports[1].layers):
        np.testing.assert_array_equal(mine.events, theirs.events)
        np.testing.assert_array_equal(mine.ops, theirs.ops)
        np.testing.assert_array_equal(mine.ops_unpruned, theirs.ops_unpruned)
    fan_out = np.diff(net.layers[0].store.indptr)
    weight = (x != 0) if analog else x
    assert reports[0].layers[0].ops.tolist() == [float((weight @ fan_out).sum())] * T


def test_direct_encoding_is_a_static_drive_and_bad_ones_are_refused(rng):
    images = rng.random((3, 2, 4, 5)).astype(np.float64)
    drive = encode_events(images, "direct", T, rng)
    assert isinstance(drive, StaticDrive) and drive.n_steps == T and drive.batch == 3
    assert drive.values.dtype == np.float32 and drive.values.flags.c_contiguous
    np.testing.assert_array_equal(drive.values, images.reshape(3, 40).astype(np.float32))
    assert isinstance(encode_events(images.reshape(3, 40), "rate", T, rng), Events)

    net = network(rng, "rows", 1.0, False)
    good = dyadic_input(rng, 2, 37)
    for bad, match in [(StaticDrive(good[:, :36], T), r"float32 \[B, 37\]"),
                       (StaticDrive(good.astype(np.float64), T), "float64"),
                       (StaticDrive(good, 0), "T = 0"),
                       (StaticDrive(good * np.float32(np.nan), T), "NaN")]:
        with pytest.raises(ShapeError, match=match):
            net.forward(bad)


def test_static_drive_never_reads_the_padding_of_its_rows(rng, monkeypatch):
    """dL/du rows are padded to whole cache lines and the padding is never written: with
    +inf and -inf there (summed over the steps: inf - inf, a warning), the gradients must
    be the same as before, without a warning."""
    import warnings

    import evsim.layers.linear

    aligned_empty = evsim.layers.linear.aligned_empty
    net = network(rng, "rows", 1.0, True)  # 18 alive neurons: rows padded to 32
    static, _ = both_drives(dyadic_input(rng, 7, 37))
    counts, traces = net.forward(static)
    _, grad_counts = mse_rate(counts.copy(), rng.integers(0, 5, 7), T)
    clean = [(grad.params[0], grad.would_be) for grad in net.backward(traces, grad_counts, would_be_grad=True)]

    def poisoned(shape, dtype=np.float32):
        out = aligned_empty(shape, dtype)
        if np.dtype(dtype).kind == "f":  # the float buffers; spikes are written whole
            out[...] = np.inf
            out[1::2] = -np.inf
        return out

    monkeypatch.setattr(evsim.layers.linear, "aligned_empty", poisoned)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        counts, traces = net.forward(static)
        grads = net.backward(traces, grad_counts, would_be_grad=True)
    for grad, (data, would_be) in zip(grads, clean):
        np.testing.assert_array_equal(grad.params[0], data)
        if would_be is not None:
            np.testing.assert_array_equal(grad.would_be, would_be)
