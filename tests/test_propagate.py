"""Event-driven propagation + LIF against the dense NumPy reference (exact equality)."""
import numpy as np
import pytest

from evsim.kernels.events import dense_to_events
from evsim.neuron import LIFParameters
from tests.conftest import make_layer
from tests.reference import dyadic_weights, lif_forward


def spikes_input(rng, shape, activity):
    return (rng.random(shape) < activity).astype(np.float32)


@pytest.mark.parametrize("path", ["rows", "csr"])
@pytest.mark.parametrize("reset", ["hard", "subtract"])
@pytest.mark.parametrize("density", [1.0, 0.3, 0.02])
def test_forward_equals_dense_reference(rng, path, reset, density):
    layer, weight, bias = make_layer(rng, 200, 25, density, path, scale=16)
    x = spikes_input(rng, (7, 5, 200), 0.2)
    lif = LIFParameters(reset=reset)
    _, trace = layer.forward(dense_to_events(x), lif)
    u_ref, o_ref = lif_forward(x, weight, bias, reset=reset)
    np.testing.assert_array_equal(trace.u, u_ref)
    np.testing.assert_array_equal(trace.spikes, o_ref.astype(np.uint8))
    assert o_ref.sum() > 0, "test input should make neurons fire"


@pytest.mark.parametrize("path", ["rows", "csr"])
@pytest.mark.parametrize("n_out", [1, 15, 16, 17, 33])
def test_forward_equals_dense_reference_for_every_last_vector_width(rng, path, n_out):
    """The LIF scan runs 16 neurons per vector; the last vector holds 1, 15, 16, 1 or 1 of them."""
    layer, weight, bias = make_layer(rng, 40, n_out, 0.7, path, scale=16)
    x = spikes_input(rng, (6, 3, 40), 0.4)
    _, trace = layer.forward(dense_to_events(x), LIFParameters())
    u_ref, o_ref = lif_forward(x, weight, bias)
    np.testing.assert_array_equal(trace.u, u_ref)
    np.testing.assert_array_equal(trace.spikes, o_ref.astype(np.uint8))
    assert o_ref[:, :, -1].sum() > 0, "the last neuron should fire"


def test_auto_path_scatters_only_below_the_density_threshold(rng):
    """csr below CSR_DENSITY_THRESHOLD among the alive neurons, rows above; neuron-level
    pruning keeps the alive neurons complete, so a layer pruned that way stays on rows."""
    from evsim.layers.linear import CSR_DENSITY_THRESHOLD

    for density, path in ((0.5 * CSR_DENSITY_THRESHOLD, "csr"), (2 * CSR_DENSITY_THRESHOLD, "rows")):
        layer, _, _ = make_layer(rng, 2000, 100, density, "auto")
        assert layer.path == path, density
    layer, _, _ = make_layer(rng, 200, 100, 1.0, "auto")
    layer.kill(np.arange(99))
    assert layer.store.density < CSR_DENSITY_THRESHOLD and layer.path == "rows"


def test_paths_agree_on_count_inputs(rng):
    """Count frames: a value k acts as k events."""
    rows, weight, bias = make_layer(rng, 40, 30, 0.5, "rows")
    csr = type(rows)(rows.store, bias, path="csr")
    x = rng.integers(0, 4, size=(6, 4, 40)).astype(np.float32) * (rng.random((6, 4, 40)) < 0.3)
    events = dense_to_events(x)
    out_rows, tr_rows = rows.forward(events, LIFParameters())
    out_csr, tr_csr = csr.forward(events, LIFParameters())
    u_ref, o_ref = lif_forward(x, weight, bias)
    np.testing.assert_array_equal(tr_rows.u, u_ref)
    np.testing.assert_array_equal(tr_csr.u, u_ref)
    np.testing.assert_array_equal(out_rows.idx, out_csr.idx)
    np.testing.assert_array_equal(out_rows.ptr, out_csr.ptr)


@pytest.mark.parametrize("path", ["rows", "csr"])
def test_empty_rows_and_silent_steps(rng, path):
    """Inputs with no synapses and time steps with no events at all."""
    layer, weight, bias = make_layer(rng, 30, 12, 0.5, path)
    layer.store.prune(np.isin(layer.store.rows(), [0, 3, 7]))  # rows 0, 3, 7 lose all synapses
    layer.rebuild()
    weight[[0, 3, 7]] = 0
    x = spikes_input(rng, (8, 3, 30), 0.4)
    x[[1, 4, 5]] = 0  # silent steps
    x[:, :, [0, 3, 7]] = 1  # the empty rows fire every step
    _, trace = layer.forward(dense_to_events(x), LIFParameters())
    u_ref, o_ref = lif_forward(x, weight, bias)
    np.testing.assert_array_equal(trace.u, u_ref)
    np.testing.assert_array_equal(trace.spikes, o_ref.astype(np.uint8))


def test_no_input_events_gives_bias_driven_dynamics(rng):
    layer, weight, bias = make_layer(rng, 10, 6)
    x = np.zeros((5, 2, 10), dtype=np.float32)
    events = dense_to_events(x)
    assert events.count == 0
    _, trace = layer.forward(events, LIFParameters())
    u_ref, _ = lif_forward(x, weight, bias)
    np.testing.assert_array_equal(trace.u, u_ref)


def test_golden_trace_constant_current():
    """Closed form: constant current I = 0.3, decay 0.2, v_th 0.5, hard reset.

    u1 = 0.3, u2 = 0.36, u3 = 0.372, u4 = 0.3744, ... never reaches 0.5 (limit 0.375);
    with I = 0.45: u1 = 0.45, u2 = 0.54 -> spike, u3 = 0.45 (reset), u4 = 0.54 -> spike.
    """
    from evsim.layers import SparseLinear
    from evsim.synapses import SynapseStore

    layer = SparseLinear(SynapseStore.from_dense(np.array([[0.3, 0.45]], np.float32)), np.zeros(2, np.float32))
    x = np.ones((4, 1, 1), dtype=np.float32)
    _, trace = layer.forward(dense_to_events(x), LIFParameters())
    np.testing.assert_allclose(trace.u[:, 0, 0], [0.3, 0.36, 0.372, 0.3744], rtol=1e-6)
    np.testing.assert_allclose(trace.u[:, 0, 1], [0.45, 0.54, 0.45, 0.54], rtol=1e-6)
    np.testing.assert_array_equal(trace.spikes[:, 0, 1], [0, 1, 0, 1])
    np.testing.assert_array_equal(trace.spikes[:, 0, 0], [0, 0, 0, 0])


@pytest.mark.parametrize("path", ["rows", "csr"])
def test_dead_neurons_are_compacted(rng, path):
    layer, weight, bias = make_layer(rng, 20, 10, 1.0, path)
    layer.kill([2, 5, 6])
    assert layer.alive_index.tolist() == [0, 1, 3, 4, 7, 8, 9]
    x = spikes_input(rng, (5, 3, 20), 0.5)
    out, trace = layer.forward(dense_to_events(x), LIFParameters())
    assert trace.u.shape == (5, 3, 7)
    u_ref, o_ref = lif_forward(x, weight[:, layer.alive_index], bias[layer.alive_index])
    np.testing.assert_array_equal(trace.u, u_ref)
    assert not np.isin(out.idx, [2, 5, 6]).any()


@pytest.mark.parametrize("tiles", [[0, 16, 32, 48, 100], [0, 80, 100], [0, 75, 100], [0, 3, 83, 100],
                                   [0, 16, 32, 48, 64, 100]])
@pytest.mark.parametrize("unit", [True, False])
@pytest.mark.parametrize("n_threads, n_tasks", [(1, 1), (2, 1), (2, 2), (2, 3), (1, 4)])
def test_tiled_row_sums_equal_numpy(rng, tiles, unit, n_threads, n_tasks):
    """Column tiles of 1-5 vectors, whole and partial; 8- and 1-row passes; empty rows;
    whole tiles per task with the rest split by rows (none, some or all of the tiles),
    on one thread or two."""
    import numba

    from evsim.kernels.propagate import _accumulate_rows, split_work

    n_rows, n_matrix, n = 23, 40, 100
    counts = rng.integers(0, 40, n_rows)
    counts[[0, 5, 22]] = 0
    ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    idx = rng.integers(0, n_matrix, ptr[-1]).astype(np.int32)
    val = np.ones(ptr[-1], np.float32) if unit else rng.integers(1, 4, ptr[-1]).astype(np.float32)
    matrix = (rng.integers(-64, 65, (n_matrix, n + 12)) / 16).astype(np.float32)  # dyadic: sums are exact
    expected = np.zeros((n_rows, n), np.float32)
    for r in range(n_rows):
        for e in range(ptr[r], ptr[r + 1]):
            expected[r] += val[e] * matrix[idx[e], :n]  # padded rows: columns past n are not read
    work = split_work(ptr, len(tiles) - 1, n_tasks)
    covered = np.zeros((n_rows, len(tiles) - 1), int)
    for task in work:
        for k0, k1, r0, r1 in task:
            covered[r0:r1, k0:k1] += 1
    assert np.all(covered == 1)  # every tile of every row in exactly one piece
    out = np.full((n_rows, n), np.nan, np.float32)
    previous = numba.get_num_threads()
    numba.set_num_threads(n_threads)
    try:
        _accumulate_rows(ptr, idx, None if unit else val, matrix, np.array(tiles, np.int64), work, out)
    finally:
        numba.set_num_threads(previous)
    np.testing.assert_array_equal(out, expected)


def test_tiles_fit_budget_in_whole_vectors():
    from evsim.kernels.propagate import TILE_BYTES, TILE_VECTORS, tile_bounds

    widest = TILE_VECTORS * 16
    for n_rows, n_columns in ((2312, 800), (1280, 800), (700, 800), (2312, 283), (10, 1000), (2312, 10), (3300, 800)):
        bounds = tile_bounds(n_rows, n_columns)
        widths = np.diff(bounds)
        assert bounds[0] == 0 and bounds[-1] == n_columns
        assert np.all(widths[:-1] % 16 == 0) and np.all(widths * n_rows * 4 <= TILE_BYTES)
        assert np.all(widths <= widest)  # the sums fit in registers
        if widest * n_rows * 4 <= TILE_BYTES:
            assert np.all(widths[:-1] == widest)  # whole widest tiles, then the rest
        else:
            assert widths.max() - widths.min() <= 16  # near-equal: no thin remainder tile
    assert np.diff(tile_bounds(3300, 800)).max() < widest  # a tall matrix: narrower tiles
    assert np.diff(tile_bounds(10**7, 800)).tolist() == [16] * 50  # never below one vector
    assert tile_bounds(100, 40).tolist() == [0, 40]
    assert tile_bounds(100, 0).tolist() == [0, 0]  # no columns: one empty tile


@pytest.mark.parametrize("n_columns", [48, 64])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_row_sums_split_by_tiles_or_rows(rng, n_columns, n_threads):
    """Two threads split 4 tiles (64 columns) by tile, and 3 tiles (48) as one whole
    tile each plus the third by rows: every split gives NumPy's sums."""
    import numba

    from evsim.kernels.propagate import accumulate_rows, tile_bounds

    matrix = (rng.integers(-64, 65, (20_000, n_columns)) / 16).astype(np.float32)
    assert tile_bounds(*matrix.shape).size - 1 == n_columns // 16  # one vector per tile
    counts = rng.integers(0, 30, 9)
    ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    idx = rng.integers(0, 20_000, ptr[-1]).astype(np.int32)
    val = np.ones(ptr[-1], np.float32)
    out = np.full((9, n_columns), np.nan, np.float32)
    previous = numba.get_num_threads()
    numba.set_num_threads(n_threads)
    try:
        accumulate_rows(ptr, idx, val, matrix, out)
    finally:
        numba.set_num_threads(previous)
    expected = np.stack([matrix[idx[ptr[r]:ptr[r + 1]]].sum(axis=0) for r in range(9)])
    np.testing.assert_array_equal(out, expected)


def test_integer_count_frames_run_as_their_float_twin(rng):
    """Frames keep their stored uint8/uint16 type through encoding; the network's
    result is the same as for the float32 copy (count k = k events)."""
    from evsim.data.encoding import encode_batch
    from evsim.network import Network

    net = Network.mlp([48, 20, 4], rng)
    for dtype in (np.uint8, np.uint16):
        frames = (rng.integers(0, 4, (3, 6, 2, 24)) * (rng.random((3, 6, 2, 24)) < 0.3)).astype(dtype)
        drive = encode_batch(frames, "frames", 6, rng)
        assert drive.dtype == dtype and drive.shape == (6, 3, 48) and drive.flags.c_contiguous
        counts, traces = net.forward(drive)
        ref_counts, ref_traces = net.forward(drive.astype(np.float32))
        np.testing.assert_array_equal(counts, ref_counts)
        np.testing.assert_array_equal(traces[0].u, ref_traces[0].u)


def test_row_sums_of_a_strided_matrix(rng):
    """A non-contiguous matrix (a column slice) gives the same sums as its copy."""
    from evsim.kernels.propagate import accumulate_rows

    wide = (rng.integers(-8, 9, (30, 70)) / 8).astype(np.float32)
    ptr = np.array([0, 5, 5, 23], np.int64)
    idx = rng.integers(0, 30, 23).astype(np.int32)
    val = np.ones(23, np.float32)
    out, ref = np.empty((3, 40), np.float32), np.empty((3, 40), np.float32)
    accumulate_rows(ptr, idx, val, wide[:, 10:50], out)
    accumulate_rows(ptr, idx, val, np.ascontiguousarray(wide[:, 10:50]), ref)
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(ref[1], 0)
    np.testing.assert_array_equal(ref[0], wide[idx[:5], 10:50].sum(axis=0))


def test_row_sums_need_a_contiguous_output(rng):
    """Sums are stored by flat offsets: a strided output is refused, not written wrongly."""
    from evsim.kernels.propagate import accumulate_rows

    matrix = np.ones((4, 20), np.float32)
    ptr, idx, val = np.array([0, 1], np.int64), np.array([2], np.int32), np.ones(1, np.float32)
    with pytest.raises(ValueError, match="C-contiguous"):
        accumulate_rows(ptr, idx, val, matrix, np.empty((1, 40), np.float32)[:, ::2])


def test_network_refuses_bad_input_with_one_line_errors(rng):
    """The kernels index memory unchecked, so bad input must stop at Network.forward:
    events out of range, of the wrong types or inconsistent, NaN values, wrong shapes."""
    from evsim.errors import ShapeError
    from evsim.network import Network

    net = Network.mlp([10, 5, 2], rng)
    good = dense_to_events((rng.random((3, 2, 10)) < 0.5).astype(np.float32))
    net.forward(good)
    bad = {
        "inputs 0..10, but the network has 10": good._replace(idx=np.where(good.idx == good.idx.max(), 10, good.idx).astype(np.int32)),
        "inputs -1": good._replace(idx=np.where(good.idx == good.idx.min(), -1, good.idx).astype(np.int32)),
        "int32 indices": good._replace(idx=good.idx.astype(np.int64)),
        "T\\*B\\+1 = 7 slot offsets": good._replace(ptr=good.ptr[:-1]),
        "never decrease": good._replace(ptr=np.array([0, 3, 1, 4, 5, 6, good.count], np.int64)),
        "NaN": good._replace(val=np.where(np.arange(good.count) == 0, np.nan, good.val).astype(np.float32)),
    }
    for message, events in bad.items():
        with pytest.raises(ShapeError, match=message):
            net.forward(events)
    with pytest.raises(ShapeError, match=r"must be \[T, B, 10\]"):
        net.forward(np.zeros((3, 2, 9), np.float32))
    with pytest.raises(ShapeError, match="NaN or infinite"):
        net.forward(np.full((3, 2, 10), np.inf, np.float32))


def test_auto_path_at_exactly_the_threshold_adds_rows(rng):
    """Scattering is chosen strictly below CSR_DENSITY_THRESHOLD: 100 synapses among
    40 x 100 alive pairs (exactly the threshold) stay on rows, 99 scatter."""
    from evsim.layers.linear import CSR_DENSITY_THRESHOLD, SparseLinear
    from evsim.synapses import SynapseStore

    mask = np.zeros((40, 100), bool)
    mask[np.arange(100) % 40, np.arange(100)] = True
    assert mask.sum() / mask.size == CSR_DENSITY_THRESHOLD
    weights = np.full(mask.shape, 0.5, np.float32)
    assert SparseLinear(SynapseStore.from_dense(weights, mask)).path == "rows"
    mask[0, 0] = False
    assert SparseLinear(SynapseStore.from_dense(weights, mask)).path == "csr"


def test_kill_zeroes_the_bias_and_its_moments_of_the_dead_neurons_only(rng):
    """A revived neuron starts from a zero bias with fresh optimizer moments."""
    layer, _, bias = make_layer(rng, 20, 10)
    layer.bias_state["adam_m"] = np.arange(1, 11, dtype=np.float32)
    layer.bias_state["adam_v"] = np.arange(11, 21, dtype=np.float32)
    assert layer.kill([2, 7]) == 40
    dead = np.isin(np.arange(10), [2, 7])
    np.testing.assert_array_equal(layer.bias, np.where(dead, 0, bias))
    np.testing.assert_array_equal(layer.bias_state["adam_m"], np.where(dead, 0, np.arange(1, 11)))
    np.testing.assert_array_equal(layer.bias_state["adam_v"], np.where(dead, 0, np.arange(11, 21)))
    layer.regrow([0], [7], [0.25])
    assert layer.alive[7] and not layer.alive[2] and layer.alive_index.tolist() == [0, 1, 3, 4, 5, 6, 7, 8, 9]


@pytest.mark.parametrize("path", ["rows", "csr"])
def test_forward_runs_weights_changed_in_place(rng, path):
    """After the CSR data changes in place (as an optimizer step changes it), the next
    forward pass refreshes each layer's padded execution copy (20 and 4 alive neurons:
    both copied) and runs the new weights: the dense twin's counts and membranes."""
    from evsim.network import Network
    from tests.reference import network_forward

    layers, weights, biases = [], [], []
    for n_in, n_out in ((40, 20), (20, 4)):
        layer, weight, bias = make_layer(rng, n_in, n_out, 1.0, path, scale=16)
        layers.append(layer)
        weights.append(weight)
        biases.append(bias)
    net = Network(layers, LIFParameters())
    assert all(layer.rows_copied == (path == "rows") for layer in net.layers)
    x = spikes_input(rng, (6, 4, 40), 0.5)
    for k, layer in enumerate(net.layers):
        layer.store.data[:] = -layer.store.data  # what an optimizer step may do, in place
        weights[k] = -weights[k]
    counts, traces = net.forward(x)
    ref_counts, ref_trace = network_forward(x, weights, biases)
    np.testing.assert_array_equal(counts, ref_counts)
    for trace, (_, u_ref, _) in zip(traces, ref_trace):
        np.testing.assert_array_equal(trace.u, u_ref)
    assert ref_counts.any()


@pytest.mark.parametrize("n_columns", [65, 75, 79, 17])
def test_row_sums_write_nothing_past_the_output(rng, n_columns):
    """A row's last tile of 2-5 vectors with a partial last vector: its masked lanes are
    neither summed into the row nor stored past it. The output is the head of a larger
    buffer whose tail must stay untouched (a store of whole vectors would write the
    last row's sums there; inside the array, into the next row's first columns)."""
    from evsim.kernels.propagate import accumulate_rows, tile_bounds

    assert tile_bounds(20, n_columns).tolist() == [0, n_columns]
    n_rows = 9
    matrix = (rng.integers(-64, 65, (20, n_columns)) / 16).astype(np.float32)
    counts = rng.integers(0, 20, n_rows)
    ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    idx = rng.integers(0, 20, ptr[-1]).astype(np.int32)
    for val in (np.ones(ptr[-1], np.float32), rng.integers(1, 4, ptr[-1]).astype(np.float32)):
        buffer = np.full(n_rows * n_columns + 32, 7.5, np.float32)
        out = buffer[:n_rows * n_columns].reshape(n_rows, n_columns)
        accumulate_rows(ptr, idx, val, matrix, out)
        expected = np.stack([(val[ptr[r]:ptr[r + 1], None] * matrix[idx[ptr[r]:ptr[r + 1]]]).sum(axis=0)
                             for r in range(n_rows)])
        np.testing.assert_array_equal(out, expected)
        np.testing.assert_array_equal(buffer[n_rows * n_columns:], 7.5)


@pytest.mark.parametrize("width", [32, 64])
def test_weight_strips_hold_each_strip_of_inputs_contiguous(rng, width):
    from evsim.kernels.grad import weight_strips

    weights = rng.normal(size=(100, 7)).astype(np.float32)
    strips = weight_strips(weights, width)
    assert strips.shape == (-(-100 // width), 7, width) and strips.flags.c_contiguous
    for i in range(100):
        np.testing.assert_array_equal(strips[i // width, :, i % width], weights[i])
    assert not strips[-1, :, 100 - (strips.shape[0] - 1) * width:].any()


@pytest.mark.parametrize("n_in, n_alive", [(64, 5), (128, 300), (100, 33), (2560, 300)])
def test_input_grad_of_a_layer_above_a_map_equals_numpy(rng, n_in, n_alive):
    """The FC layer's input gradient on Numba's threads (register blocks, slots whose dL/du
    is all zero skipped), against NumPy, widths in and out of whole 64-column strips."""
    from evsim.layers.linear import _input_grad_dense

    grad_u = dyadic_weights(rng, (37, n_alive + 7), 0.3, scale=16).astype(np.float32)
    grad_u[::3] = 0.0
    grad_u[5, :n_alive] = 0.0
    grad_u[5, n_alive:] = 1.0  # padding columns past the alive neurons are never read
    weights = dyadic_weights(rng, (n_in, n_alive), scale=16).astype(np.float32)
    got = _input_grad_dense(grad_u, weights)
    assert got.shape == (37, n_in) and got.flags.c_contiguous
    np.testing.assert_array_equal(got, grad_u[:, :n_alive] @ weights.T)
