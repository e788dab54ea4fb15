"""The Python API keeps a network's results true to its weights and structure: copies run
their own weights and refuse other networks' traces, gradients apply only to the structure
they were taken on, and every public entry refuses input the kernels would misread with
one evsim error."""
import copy
import pickle
import subprocess
import sys
import textwrap
from typing import NamedTuple

import numpy as np
import pytest

import evsim
import evsim.layers.base as layer_base
from evsim import Events, StaticDrive
from evsim.errors import ConfigError, EvsimError, ShapeError
from evsim.kernels.events import dense_to_events
from evsim.layers import Pool2d, SparseLinear, SpikingConv2d
from evsim.layers.base import LayerGrads, Parameter
from evsim.synapses import SynapseStore


def spikes(rng, shape, p=0.4):
    return (rng.random(shape) < p).astype(np.float32)


def events(ptr, idx, val, n_steps, batch):
    return Events(np.asarray(ptr, np.int64), np.asarray(idx, np.int32), np.asarray(val, np.float32), n_steps, batch)


def train(net, x, labels, steps=3):
    optimizer = evsim.Optimizer("adam", lr=0.05)
    for _ in range(steps):
        counts, traces = net.forward(x)
        _, grad_counts = evsim.mse_rate(counts, labels, x.shape[0])
        optimizer.step(net.parameters(net.backward(traces, grad_counts)))


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_copy_runs_the_weights_it_trains(how, tmp_path):
    # 32 hidden neurons, all synapses: the rows path runs the store's data in place (a view).
    rng = np.random.default_rng(0)
    x, labels = spikes(rng, (4, 4, 16), 0.3), np.array([0, 1, 2, 3])
    original = evsim.Network.from_spec("16-32-4", rng=0)
    net = copy.deepcopy(original) if how == "deepcopy" else pickle.loads(pickle.dumps(original))
    train(net, x, labels)
    evsim.save_network(tmp_path / "net.npz", net)
    rebuilt = evsim.load_network(tmp_path / "net.npz")
    (counts, traces), (want, want_traces) = net.forward(x), rebuilt.forward(x)
    np.testing.assert_array_equal(traces[0].u, want_traces[0].u)
    np.testing.assert_array_equal(counts, want)
    assert not np.array_equal(original.layers[0].store.data, net.layers[0].store.data)  # the original untouched


def test_a_copy_refuses_the_originals_traces_and_gradients():
    rng = np.random.default_rng(1)
    x = spikes(rng, (3, 2, 8))
    for spec in ("8-6-3", "1x6x6-2C3-AP2-3"):
        net = evsim.Network.from_spec(spec, rng=0)
        n_in = net.layers[0].n_in
        counts, traces = net.forward(x[:, :, :1].repeat(n_in, axis=2) if n_in != 8 else x)
        _, grad_counts = evsim.mse_rate(counts, np.array([0, 1]), 3)
        grads = net.backward(traces, grad_counts)
        twin = copy.deepcopy(net)
        with pytest.raises(ShapeError, match="another network, a copy"):
            twin.backward(traces, grad_counts)
        with pytest.raises(ShapeError, match="before a structural edit of it"):
            twin.parameters(grads)
        restored_net, restored_traces = pickle.loads(pickle.dumps((net, traces)))
        with pytest.raises(ShapeError, match="another network, a copy"):
            restored_net.backward(restored_traces, grad_counts)


def test_traces_pickled_in_one_process_are_refused_in_another(tmp_path):
    # Another process's plan numbers must not coincide with this one's.
    net = evsim.Network.from_spec("8-40-3", rng=0)
    counts, traces = net.forward(spikes(np.random.default_rng(0), (6, 4, 8), 0.5))
    (tmp_path / "a.pkl").write_bytes(pickle.dumps((traces, counts)))
    script = textwrap.dedent(f"""
        import pickle, numpy as np, evsim
        other = evsim.Network.from_spec("8-6-3", rng=1)
        traces, counts = pickle.loads(open({str(tmp_path / "a.pkl")!r}, "rb").read())
        _, g = evsim.mse_rate(counts, np.zeros(4, int), 6)
        try:
            other.backward(traces, g)
        except evsim.EvsimError as exc:
            print("refused:", exc)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "refused:" in out.stdout


def test_backward_refuses_traces_of_different_passes_or_out_of_order():
    rng = np.random.default_rng(0)
    net = evsim.Network.from_spec("8-6-3", rng=0)
    small_counts, small = net.forward(spikes(rng, (1, 1, 8)))
    _, big = net.forward(spikes(rng, (40, 9, 8)))
    _, grad_counts = evsim.mse_rate(small_counts, np.zeros(1, int), 1)
    with pytest.raises(ShapeError, match="different forward passes"):
        net.backward([big[0], small[1]], grad_counts)
    for bad, match in [(small[::-1], "pass forward's traces in order"), (small[:1], "the 2 traces"),
                       ([], "the 2 traces"), ("traces", "got str")]:
        with pytest.raises(ShapeError, match=match):
            net.backward(bad, grad_counts)
    with pytest.raises(ShapeError, match="real numbers"):
        net.backward(small, grad_counts.astype(object))
    # A layer's own backward compares dL/d(spikes) with its trace.
    with pytest.raises(ShapeError, match=r"dL/d\(spikes\) must be \[T, B, alive neurons\] = \[1, 1, 6\]"):
        net.layers[0].backward(small[0], np.zeros((40, 9, 6), np.float32), net.lif)
    conv = evsim.Network.from_spec("1x6x6-2C3-AP2-3", rng=0)
    c_small, conv_small = conv.forward(spikes(rng, (2, 1, 36)))
    _, conv_big = conv.forward(spikes(rng, (5, 3, 36)))
    _, g = evsim.mse_rate(c_small, np.zeros(1, int), 2)
    with pytest.raises(ShapeError, match="different forward passes"):
        conv.backward(conv_big[:2] + conv_small[2:], g)

    def unnumbered(trace):  # as forward_layer gives them: no pass to compare, the shapes are
        if hasattr(trace, "_replace"):
            return trace._replace(pass_id=0)
        trace.pass_id = 0
        return trace

    with pytest.raises(ShapeError, match="does not fit layer"):
        conv.backward([unnumbered(trace) for trace in conv_big[:2] + conv_small[2:]], g)


def test_forward_layer_and_the_layers_forward_check_their_events():
    net = evsim.Network.from_spec("8-6-3", rng=0)
    for bad, match in [(events([0, 1000], [1], [1], 1, 1), "never decrease and end"),
                       (events([0, 1], [100000], [1], 1, 1), "index inputs 100000..100000, but the layer has 8"),
                       (events([0, 1], [-5], [1], 1, 1), "index inputs -5"),
                       (np.ones((2, 1, 8), np.float32), "takes Events or a StaticDrive")]:
        with pytest.raises(ShapeError, match=match):
            net.forward_layer(0, bad)
    with pytest.raises(ShapeError, match="but the layer has 6"):
        net.forward_layer(1, events([0, 2], [2, 7], [1, 1], 1, 1))
    with pytest.raises(ShapeError, match="layer index 0..1, got 5"):
        net.forward_layer(5, events([0, 1], [1], [1], 1, 1))
    layer = SparseLinear(SynapseStore.from_dense(np.ones((4, 3), np.float32)))
    with pytest.raises(ShapeError, match="index inputs 10000000"):
        layer.forward(events([0, 1], [10 ** 7], [1], 1, 1), evsim.LIFParameters())
    with pytest.raises(ConfigError, match="LIFParameters"):
        layer.forward(events([0, 1], [1], [1], 1, 1), {"decay": 0.2})
    conv_net = evsim.Network.from_spec("2x6x6-4C3-AP2-5", rng=0)
    conv, pool = conv_net.layers[0], conv_net.layers[1]
    oob = events([0, 1], [10 ** 6], [1], 1, 1)
    for run in (lambda: conv_net.forward_layer(0, oob), lambda: conv.forward(oob, conv_net.lif),
                lambda: conv.forward_and_pool(oob, conv_net.lif, pool),
                lambda: conv.forward_pooled(oob, conv_net.lif, pool),
                lambda: pool.forward(events([0, 1], [10 ** 6], [1], 1, 1), conv_net.lif)):
        with pytest.raises(ShapeError, match="index inputs 1000000"):
            run()
    with pytest.raises(ShapeError, match="window counts must be"):
        conv.forward_pooled(np.ones((1, 1, 5), np.uint8), conv_net.lif, pool)
    good = evsim.dense_to_events(spikes(np.random.default_rng(0), (2, 3, 72)))
    want, _ = conv_net.forward(good)
    ran = good
    for k in range(len(conv_net.layers)):
        ran, _ = conv_net.forward_layer(k, ran)
    assert ran.n_steps == 2 and ran.batch == 3


def test_network_forward_checks_its_input_once_not_at_every_layer(monkeypatch):
    calls = []
    check = layer_base._checked_events
    monkeypatch.setattr(layer_base, "_checked_events", lambda *args: calls.append(1) or check(*args))
    x = evsim.dense_to_events(spikes(np.random.default_rng(0), (3, 2, 72)))
    for spec in ("72-20-10-5", "2x6x6-4C3-AP2-4C3-MP2-5"):
        net = evsim.Network.from_spec(spec, rng=0)
        calls.clear()
        net.forward(x)
        net.predict(x)
        assert len(calls) == 2


def test_int32_step_and_batch_counts_do_not_wrap():
    net = evsim.Network.from_spec("8-6-3", rng=0)
    steps, batch = np.int32(2 ** 16), np.int32(2 ** 16 + 1)
    wrapped = 2 ** 16  # what int32 makes of their product
    huge = Events(np.zeros(wrapped + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32), steps, batch)
    with pytest.raises(ShapeError, match="T\\*B\\+1 = 4295032833"):
        net.forward(huge)
    small = evsim.dense_to_events(spikes(np.random.default_rng(0), (2, 3, 8)))
    counts, _ = net.forward(small._replace(n_steps=np.int32(2), batch=np.int32(3)))
    np.testing.assert_array_equal(counts, net.forward(small)[0])


def test_the_layers_list_refuses_a_layer_that_does_not_chain():
    rng = np.random.default_rng(0)
    net = evsim.Network.from_spec("8-400-3", rng=0)
    head = net.layers[1]
    with pytest.raises(ShapeError, match="layer 0's 400 outputs feed layer 1's 2 inputs"):
        net.layers[1] = SparseLinear.uniform(2, 3, rng)
    assert net.layers[1] is head and net.sizes == [8, 400, 3]
    for change in (lambda: net.layers.append(SparseLinear.uniform(2, 3, rng)),
                   lambda: net.layers.insert(1, SparseLinear.uniform(3, 3, rng)), lambda: net.layers.reverse()):
        with pytest.raises(ShapeError):
            change()
    assert net.sizes == [8, 400, 3]
    net.layers[1] = SparseLinear.uniform(400, 3, rng)  # one that chains is taken
    with pytest.raises(ShapeError, match="do not chain"):
        net.layers = [net.layers[0], SparseLinear.uniform(2, 3, rng)]
    assert copy.deepcopy(net).sizes == pickle.loads(pickle.dumps(net)).sizes == [8, 400, 3]


def test_gradients_from_before_a_structural_edit_are_refused():
    rng = np.random.default_rng(0)
    x, labels = spikes(rng, (4, 2, 8), 0.5), np.array([0, 1])
    net = evsim.Network.from_spec("8-6-3", rng=0)
    hidden = net.layers[0]
    hidden.prune(np.arange(hidden.store.nnz) % 2 == 1)
    counts, traces = net.forward(x)
    _, grad_counts = evsim.mse_rate(counts, labels, 4)
    grads = net.backward(traces, grad_counts)
    remove = np.zeros(hidden.store.nnz, bool)
    remove[0] = True
    hidden.prune(remove)
    missing = np.argwhere(~hidden.store.mask())[-1]
    hidden.regrow([missing[0]], [missing[1]], [0.0])  # the same number of synapses as the gradients
    with pytest.raises(ShapeError, match=r"layer 0 \(fc1\) were taken before a structural edit of it .*run "
                                         "forward and backward again"):
        net.parameters(grads)
    counts, traces = net.forward(x)
    grads = net.backward(traces, evsim.mse_rate(counts, labels, 4)[1])
    hidden.store.prune(np.arange(hidden.store.nnz) == 0)  # an edit of the store itself, the layer not yet told
    with pytest.raises(ShapeError, match="before a structural edit"):
        net.parameters(grads)
    with pytest.raises(ShapeError, match="the 2 LayerGrads"):
        net.parameters(grads[:1])


def test_convolution_and_pooling_sizes_must_be_whole_numbers():
    store = SynapseStore.from_blocks(np.array([0, 2]), np.array([0, 1]), np.ones((2, 3, 3)) * 0.3, (1, 2))
    for kwargs, match in [({"stride": 1.5}, "stride must be a whole number, got 1.5"),
                          ({"pad": 0.5}, "pad must be a whole number, got 0.5"),
                          ({"stride": True}, "stride must be a whole number")]:
        with pytest.raises(ShapeError, match=match):
            SpikingConv2d(store, (1, 6, 6), **kwargs)
    assert SpikingConv2d(store, (1, 6, 6), stride=2.0, pad=1.0).geometry == SpikingConv2d(store, (1, 6, 6), 2, 1).geometry
    with pytest.raises(ShapeError, match="height must be a whole number"):
        SpikingConv2d(store, (1, 6.5, 6))
    with pytest.raises(ShapeError, match="kernel must be a whole number"):
        Pool2d((1, 4, 4), 1.5)
    with pytest.raises(ShapeError, match=r"in_shape must be \(channels, height, width\)"):
        SpikingConv2d(store, (1, 4))


def test_bias_assignment_is_checked_and_copied():
    rng = np.random.default_rng(0)
    x, labels = spikes(rng, (4, 2, 8), 0.5), np.array([0, 1])
    net = evsim.Network.from_spec("8-6-3", rng=0)
    hidden = net.layers[0]
    hidden.bias = np.full(6, 0.1)  # float64: converted
    assert hidden.bias.dtype == np.float32 and hidden.bias.flags.writeable
    read_only = np.full(6, 0.2, np.float32)
    read_only.setflags(write=False)
    hidden.bias = read_only
    train(net, x, labels, steps=1)
    assert not np.array_equal(hidden.bias, read_only)
    for bad, match in [(np.zeros(5), r"bias has shape \(5,\)"), (np.zeros(7), r"bias has shape \(7,\)"),
                       (np.array(["a"] * 6), "real numbers")]:
        with pytest.raises(ShapeError, match=match):
            hidden.bias = bad
    conv = evsim.Network.from_spec("1x6x6-2C3-3", rng=0).layers[0]
    with pytest.raises(ShapeError, match=r"expected \(2,\)"):
        conv.bias = np.zeros(3)


def test_construction_mistakes_are_evsim_errors():
    net = evsim.Network.from_spec("8-6-3", rng=0)
    block = SynapseStore.from_blocks(np.array([0, 2]), np.array([0, 1]), np.ones((2, 3, 3)), (1, 2))
    mistakes = [
        (lambda: evsim.Network([]), "at least one layer"),
        (lambda: evsim.Network(list(net.layers), lif={}), "LIFParameters"),
        (lambda: evsim.Network([Pool2d((1, 4, 4), 2)]), "no neurons to count"),
        (lambda: evsim.Network(["layer"]), "not a layer"),
        (lambda: SparseLinear(block), "single weights"),
        (lambda: net.set_path("dense"), "unknown propagation path 'dense'"),
        (lambda: net.forward(StaticDrive([[1.0] * 8], 3)), "static drive must be float32"),
    ]
    for rng in (-1, "a", 1.5, True):
        mistakes.append((lambda rng=rng: evsim.Network.from_spec("8-3", rng=rng), "rng must be"))
    for run, match in mistakes:
        with pytest.raises(EvsimError, match=match):
            run()
    assert all(layer.path_option == "auto" for layer in net.layers)  # the refused set_path changed nothing
    assert evsim.Network.from_spec("8-3", rng=np.int64(3)).sizes == [8, 3]


class _DenseTrace(NamedTuple):
    x: np.ndarray
    u: np.ndarray | None
    spikes: np.ndarray


class _DenseLIF:
    """A user's own layer, as evsim.Layer describes one: dense NumPy, its own trace type,
    ``forward(drive, lif, record=True)`` (the protocol's three arguments)."""

    def __init__(self, n_in, n_out, rng):
        self.n_in, self.n_out, self.develops = n_in, n_out, False
        self.alive, self.alive_index = np.ones(n_out, bool), np.arange(n_out, dtype=np.int32)
        self.w = (rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(np.float32)

    def forward(self, drive, lif, record=True):
        x = np.zeros((drive.n_steps * drive.batch, self.n_in), np.float32)
        for s in range(drive.n_steps * drive.batch):
            x[s, drive.idx[drive.ptr[s]:drive.ptr[s + 1]]] = drive.val[drive.ptr[s]:drive.ptr[s + 1]]
        x = x.reshape(drive.n_steps, drive.batch, self.n_in)
        u, o = np.zeros((2, drive.n_steps, drive.batch, self.n_out), np.float32)
        for t in range(drive.n_steps):
            u[t] = (lif.decay * u[t - 1] * (1 - o[t - 1]) if t else 0) + x[t] @ self.w
            o[t] = u[t] >= lif.v_th
        return dense_to_events(o), _DenseTrace(x, u if record else None, o)

    def backward(self, trace, grad_out, lif, request):
        surrogate = (np.abs(trace.u - lif.v_th) < lif.width) / (2 * lif.width)
        grad_u, carry = np.zeros_like(trace.u), 0
        for t in range(trace.u.shape[0] - 1, -1, -1):
            grad_u[t] = grad_out[t] * surrogate[t] + carry
            carry = grad_u[t] * lif.decay * (1 - trace.spikes[t])
        below = grad_u @ self.w.T if request.input_grad else None
        if below is not None and request.input_units is not None:
            below = below[:, :, request.input_units]
        return LayerGrads([np.einsum("tbi,tbo->io", trace.x, grad_u).astype(np.float32)], input=below)

    def parameters(self):
        return [Parameter(self.w, {})]

    def fan_out(self):
        return np.full(self.n_in, self.n_out, np.int64)

    def to_arrays(self, with_state):
        return {"w": self.w}

    def nir_nodes(self, name, lif):
        raise NotImplementedError


@pytest.mark.parametrize("where", ["output", "hidden"])
def test_a_layer_of_ones_own_trains_beside_evsims(where, tmp_path):
    """The checks added to forward and backward passed a fourth argument to every layer and
    took only evsim's trace types: a layer written to the protocol failed in forward,
    backward and predict."""
    rng = np.random.default_rng(0)
    own = _DenseLIF(20, 10, rng) if where == "hidden" else _DenseLIF(10, 3, rng)
    other = SparseLinear.uniform(10, 3, rng) if where == "hidden" else SparseLinear.uniform(20, 10, rng)
    network = evsim.Network([own, other] if where == "hidden" else [other, own])
    x = (rng.random((6, 4, 20)) < 0.3).astype(np.float32)
    before = own.w.copy()
    counts, traces = network.forward(x)
    _, grad_counts = evsim.mse_rate(counts, rng.integers(0, 3, 4), 6)
    evsim.Optimizer("adam", lr=1e-2).step(network.parameters(network.backward(traces, grad_counts)))
    assert not np.array_equal(own.w, before)
    np.testing.assert_array_equal(network.predict(x), network.forward(x)[0])
    with pytest.raises(ConfigError, match=f"layer {0 if where == 'hidden' else 1} is a _DenseLIF"):
        evsim.save_network(tmp_path / "n.npz", network)
    assert not (tmp_path / "n.npz").exists()


def test_backward_refuses_traces_of_two_passes_of_the_same_shape():
    """Two passes of the same T and batch on the same structure share their plans: mixed,
    their traces were taken as one pass's and gave wrong gradients."""
    network = evsim.Network.from_spec("64-32-4", rng=0)
    rng = np.random.default_rng(1)
    x1, x2 = ((rng.random((5, 3, 64)) < 0.3).astype(np.float32) for _ in range(2))
    counts, first = network.forward(x1)
    _, second = network.forward(x2)
    _, grad = evsim.mse_rate(counts, np.array([0, 1, 2]), 5)
    with pytest.raises(ShapeError, match="these traces come from different forward passes"):
        network.backward([first[0], second[1]], grad)
    network.backward(first, grad)  # one pass's, in order


def test_the_layer_list_takes_keywords_and_names_the_layers_that_do_not_chain():
    network = evsim.Network.from_spec("64-32-4", rng=0)
    network.layers.sort(key=lambda layer: -layer.n_in)  # already in that order: it chains
    with pytest.raises(ShapeError, match="layer 0's 4 outputs feed layer 1's 64 inputs"):
        network.layers.sort(key=lambda layer: layer.n_in)
    assert [layer.n_in for layer in network.layers] == [64, 32]
