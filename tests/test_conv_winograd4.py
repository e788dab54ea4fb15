"""Inference through a 3 x 3 convolution by Winograd's F(4x4, 3x3), its LIF step and 2 x 2
average pooling (evsim/kernels/conv_winograd4.py) against a float64 twin, and the choice
of the fused pass's kernel (evsim/kernels/conv_paths.pooled_path).

G holds sixths, so the currents are never exact: the spikes are compared with the twin's
wherever the twin's membrane stays clear of the threshold (a window is left out from the
first step one of its units comes within 1e-4 of it: a spike there may go either way, and
the unit's later steps with it)."""
import numpy as np
import pytest

from evsim.kernels import conv_winograd4
from evsim.kernels.conv_geometry import conv_geometry
from evsim.kernels.conv_lif_pool import conv_lif_pool
from evsim.kernels.conv_paths import AVX2, AVX512, pooled_events_work, pooled_path, pooled_work
from tests.reference import avg_pool2d, conv2d_forward
from tests.test_conv_kernels import block_csr, event_maps

V_TH, DECAY = 0.5, 0.2


def test_transforms_compute_the_correlation(rng):
    """``A^T [(G g G^T) * (B^T d B)] A`` is the 4 x 4 cross-correlation of a 6 x 6 window
    with a 3 x 3 kernel."""
    for _ in range(20):
        d, g = rng.normal(size=(6, 6)), rng.normal(size=(3, 3))
        u = conv_winograd4.G @ g @ conv_winograd4.G.T
        v = conv_winograd4.B_T @ d @ conv_winograd4.B_T.T
        out = conv_winograd4.A_T @ (u * v) @ conv_winograd4.A_T.T
        direct = np.array([[np.sum(d[y:y + 3, x:x + 3] * g) for x in range(4)] for y in range(4)])
        np.testing.assert_allclose(out, direct, rtol=0, atol=1e-12)


def twin(x, weight, bias, pad, reset):
    """Spikes ``[T, B, F, Ho, Wo]`` and membrane of the spiking convolution in float64."""
    n_steps, batch = x.shape[:2]
    u_prev = o_prev = 0.0
    us, os = [], []
    for t in range(n_steps):
        current = conv2d_forward(x[t].astype(np.float64), weight.astype(np.float64), 1, pad)
        current += bias.astype(np.float64)[None, :, None, None]
        u = DECAY * u_prev * (1 - o_prev) + current if reset == "hard" else DECAY * u_prev - V_TH * o_prev + current
        o = (u > V_TH).astype(np.float64)
        us.append(u)
        os.append(o)
        u_prev, o_prev = u, o
    return np.stack(os), np.stack(us)


@pytest.mark.parametrize("n_filters, dead", [(6, (2,)), (7, ()), (13, (4,)), (40, (3, 9, 30, 31))])
@pytest.mark.parametrize("height, width, pad", [(7, 19, 1), (16, 16, 1), (9, 8, 0), (5, 40, 2), (33, 34, 1),
                                                (8, 8, 1), (30, 62, 0)])
@pytest.mark.parametrize("reset", ["hard", "subtract"])
@pytest.mark.parametrize("dense_input", [False, True])
def test_pooled_spikes_match_float64_twin(rng, n_filters, dead, height, width, pad, reset, dense_input):
    """Away from the threshold, the pooled spikes are the twin's, from events or a map of
    window counts, over odd and even maps (the floor rule drops a last row or column),
    rows of tiles that fill no vector or several (groups of four tiles on every row),
    borders of 0-2 cells, pruned kernels (an input channel without any) and dead filters,
    whose pooled channels are left untouched."""
    channels, n_steps, batch = 3, 5, 3
    alive = np.setdiff1d(np.arange(n_filters), dead)
    weight = rng.normal(0.0, 0.4, (alive.size, channels, 3, 3)).astype(np.float32)
    stored = rng.random((channels, alive.size)) < 0.7
    stored[1, :] = False  # a channel whose kernels are all pruned
    weight *= stored.T[:, :, None, None]
    indptr, columns, data = block_csr(weight, stored)
    bias = rng.normal(0.0, 0.1, alive.size).astype(np.float32)
    x, ev = event_maps(rng, (n_steps, batch, channels, height, width), 0.3, values=(1.0, 2.0, 0.25, 0.75))
    geo = conv_geometry(channels, height, width, 3, 1, pad)
    spikes, u = twin(x, weight, bias, pad, reset)
    windows = avg_pool2d(spikes.reshape(n_steps * batch, alive.size, geo.out_height, geo.out_width), 2) * 4
    # A unit near the threshold once: its window's count is left unchecked from then on.
    near = np.logical_or.accumulate(np.abs(u - V_TH) < 1e-4, axis=0).reshape(windows.shape[:2] + u.shape[-2:])
    unsure = avg_pool2d(near.astype(np.float64), 2) > 0
    assert 0.05 < spikes.mean() < 0.95 and unsure.mean() < 0.05  # (discrete inputs repeat membranes)
    pooled = np.full((n_steps, batch, n_filters * windows[0, 0].size), 255, np.uint8)
    drive = (x * 4).astype(np.uint8).reshape(n_steps, batch, -1) if dense_input else ev
    conv_lif_pool(drive, indptr, columns, data, geo, bias, DECAY, V_TH, reset == "hard", "winograd4", alive, pooled)
    got = pooled.reshape(n_steps * batch, n_filters, *windows.shape[2:])
    np.testing.assert_array_equal(np.where(unsure, 0, got[:, alive]), np.where(unsure, 0, windows))
    assert (got[:, list(dead)] == 255).all()


def test_refuses_what_it_cannot_run(rng):
    weight = rng.normal(size=(4, 2, 5, 5)).astype(np.float32)
    indptr, columns, data = block_csr(weight, np.ones((2, 4), bool))
    _, ev = event_maps(rng, (2, 3, 2, 8, 8), 0.3)
    out = np.zeros((2, 3, 4 * 16), np.uint8)
    with pytest.raises(ValueError, match="3 x 3"):
        conv_lif_pool(ev, indptr, columns, data, conv_geometry(2, 8, 8, 5, 1, 2), np.zeros(4, np.float32), 0.2, 0.5,
                      True, "winograd4", np.arange(4), out)


def test_pooled_path_follows_the_measured_costs():
    """On AVX2 the fused pass takes F(4x4, 3x3) for conv2 of the paper's N-MNIST network
    on its input at initialisation (15-37 % nonzero), F(2x2, 3x3) for the same channels
    on an 8 x 8 map, which fills half of F(4x4)'s tile vector, and the event path for
    sparse input: conv1 on N-MNIST's 6 % (measured by bench_pooled_paths, runs s43-a/b:
    7.6-7.8 against 12.0-14.4 us a slot), conv2 below about 7 %. AVX-512's table (runs
    s50-a/b/c) takes the same for the paper's layers, and the event path for the 8 x 8 map
    at 30 % (5.4-7.0 us a slot at 15 % against 12.0-15.6 for F(4x4)). Other kernel sizes
    take the direct convolution on dense input."""
    conv1, conv2 = conv_geometry(2, 32, 32, 3, 1, 1), conv_geometry(15, 16, 16, 3, 1, 1)
    assert pooled_path(conv2, 40, 0.15, AVX2) == pooled_path(conv2, 40, 0.37, AVX2) == "winograd4"
    assert pooled_path(conv_geometry(15, 8, 8, 3, 1, 1), 40, 0.3, AVX2) == "winograd"
    assert pooled_path(conv1, 15, 0.06, AVX2) == pooled_path(conv2, 40, 0.04, AVX2) == "events"
    assert pooled_path(conv1, 15, 0.3, AVX2) != "events"
    assert pooled_path(conv2, 40, 0.15, AVX512) == pooled_path(conv2, 40, 0.37, AVX512) == "winograd4"
    assert pooled_path(conv1, 15, 0.06, AVX512) == pooled_path(conv2, 40, 0.04, AVX512) == "events"
    assert pooled_path(conv_geometry(15, 8, 8, 3, 1, 1), 40, 0.3, AVX512) == "events"
    assert pooled_path(conv_geometry(15, 16, 16, 5, 1, 2), 40, 0.4, AVX512) == "direct"
    assert pooled_path(conv_geometry(2, 32, 32, 3, 2, 1), 15, 0.4, AVX512) is None
    assert pooled_path(conv_geometry(15, 16, 16, 5, 1, 2), 40, 0.4, AVX2) == "direct"
    assert pooled_path(conv_geometry(15, 16, 16, 5, 1, 2), 40, 0.01, AVX2) == "events"


def test_pooled_events_work_counts_stepped_lanes_and_taps():
    """The event path steps the cells inside pooling windows (a 15 x 15 map: 14 x 14) on
    the filters' padded lanes, and adds a weight row of those lanes per (event, tap)."""
    geometry = conv_geometry(3, 15, 15, 3, 1, 1)
    stepped, adds = pooled_events_work(geometry, 20, 0.1)
    assert stepped == 14 * 14 * 32
    assert adds == pytest.approx(0.1 * 3 * 225 * 9 * 2)


def test_pooled_work_counts_the_lanes_each_kernel_computes():
    """Outputs computed: the direct convolution the map's, F(2x2) and F(4x4) whole tile
    vectors (conv2 of the paper: 16 x 16 outputs, 4 F(2x2) vectors of 16 tiles of 4, one
    F(4x4) vector of 16 tiles of 16; an 8 x 8 map: still one F(4x4) vector)."""
    work = pooled_work(15, 40, 16, 16, "avx2")
    assert work["direct"][0] == work["winograd"][0] == work["winograd4"][0] == 40 * 256
    assert pooled_work(15, 40, 8, 8, "avx2")["winograd4"] == (40 * 256, 36 * 15 * 40)
    assert pooled_work(15, 40, 8, 8, "avx2")["winograd"][0] == 40 * 2 * 64  # two vectors: AVX2's block


def test_multiply_adds_count_padded_lanes_and_filters():
    """36 positions x used channels x filters padded to the block x tile vectors: the
    paper's conv2 (16 x 16 map, 4 x 4 tiles, one vector) and conv1 (32 x 32, four)."""
    assert conv_winograd4.multiply_adds(15, 40, 16, 16) == 36 * 15 * 40 * 1
    assert conv_winograd4.multiply_adds(2, 15, 32, 32) == 36 * 2 * 16 * 4
    assert conv_winograd4.tile_layout(8, 8)[:2] == (4, 1)  # 2 x 2 tiles padded to rows of four


def test_forward_pooled_runs_the_chosen_kernel(rng):
    """A layer's fused inference runs the kernel :func:`pooled_path` picks for it (on both
    kinds of machine, F(4x4, 3x3) for the paper's conv2), dead filters' channels zero."""
    import evsim

    net = evsim.Network.from_spec("15x16x16-40C3-AP2-4", rng=0)
    conv, pool = net.layers[:2]
    conv.kill(np.array([3, 17]))
    drive = ((rng.random((3, 4, conv.n_in)) < 0.4) * rng.integers(1, 5, (3, 4, conv.n_in))).astype(np.uint8)
    path = pooled_path(conv.geometry, conv.alive_filters.size, np.count_nonzero(drive) / drive.size)
    assert path == "winograd4"
    expected = np.zeros((3, 4, pool.n_out), np.uint8)
    conv_lif_pool(drive, conv.store.indptr, conv.columns, conv.store.data, conv.geometry,
                  conv.bias[conv.alive_filters], np.float32(net.lif.decay), np.float32(net.lif.v_th),
                  net.lif.reset == "hard", path, conv.alive_filters, expected)
    got = conv.forward_pooled(drive, net.lif, pool)
    assert got.any()
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("grid, reset", [(8, "hard"), (16, "hard"), (8, "subtract")])
def test_dyadic_weights_and_inputs_give_the_direct_convolutions_spikes_exactly(rng, grid, reset):
    """With weights on a grid of 1/8 or 1/16 (quantised networks) and spike or window-count
    inputs, many membranes land exactly on the threshold; the kernels' 3G transform keeps
    every step exact and one division by 9 rounds the sums once, so F(4x4)'s spikes are
    the direct convolution's bit for bit, ties included (with G's sixths, 44 % of a quantised
    paper network's output counts differed)."""
    channels, n_filters, height, width, n_steps, batch = 15, 40, 16, 16, 6, 4
    weight = np.round(rng.normal(0.0, 0.3, (n_filters, channels, 3, 3)) * grid).astype(np.float32) / grid
    stored = np.ones((channels, n_filters), bool)
    indptr, columns, data = block_csr(weight, stored)
    bias = (np.round(rng.normal(0.0, 0.1, n_filters) * grid) / grid).astype(np.float32)
    x, ev = event_maps(rng, (n_steps, batch, channels, height, width), 0.3, values=(1.0, 0.25, 0.5, 0.75))
    geo = conv_geometry(channels, height, width, 3, 1, 1)
    spikes, u = twin(x, weight, bias, 1, reset)
    assert np.count_nonzero(u == V_TH) > 100  # ties the test is about
    drive = (x * 4).astype(np.uint8).reshape(n_steps, batch, -1)
    got = {}
    for path in ("direct", "winograd4"):
        got[path] = np.zeros((n_steps, batch, n_filters * 64), np.uint8)
        conv_lif_pool(drive, indptr, columns, data, geo, bias, DECAY, V_TH, reset == "hard", path,
                      np.arange(n_filters), got[path])
    np.testing.assert_array_equal(got["winograd4"], got["direct"])
    windows = avg_pool2d(spikes.reshape(n_steps * batch, n_filters, 16, 16), 2) * 4
    np.testing.assert_array_equal(got["direct"].reshape(windows.shape), windows)


def test_a_quantised_network_predicts_what_it_forwards():
    """Network.predict on the paper's N-MNIST network with weights on a 1/8 grid, where
    the fused pass takes F(4x4) for conv2: the output counts are forward's exactly."""
    import evsim

    network = evsim.Network.from_spec("2x32x32-15C3-AP2-40C3-AP2-300-10", rng=0)
    for layer, gain in zip(network.layers, (2.0, 1.0, 2.0, 1.0, 6.0, 6.0)):  # spiking at every layer
        if hasattr(layer, "store"):
            layer.store.data[...] = np.round(layer.store.data * gain * 8) / 8
            layer.bias[...] = np.round(layer.bias * 8) / 8
    x = (np.random.default_rng(3).random((10, 16, 2048)) < 0.06).astype(np.float32)
    counts, _ = network.forward(x, record=False)
    assert counts.sum() > 100
    np.testing.assert_array_equal(network.predict(x), counts)


def test_inputs_beyond_the_limit_leave_winograd4_to_the_other_kernels():
    """F(4x4)'s error follows the largest input of a tile, so events larger than
    WINOGRAD4_INPUT_LIMIT take another kernel (values of 1e6 flipped units 0.35-0.78 from
    the threshold); spike and frame counts keep it."""
    import evsim
    from evsim.kernels.conv_paths import WINOGRAD4_INPUT_LIMIT

    conv1 = conv_geometry(2, 16, 16, 3, 1, 1)
    assert pooled_path(conv1, 8, 0.3) == pooled_path(conv1, 8, 0.3, largest_input=WINOGRAD4_INPUT_LIMIT) == "winograd4"
    assert pooled_path(conv1, 8, 0.3, largest_input=2 * WINOGRAD4_INPUT_LIMIT) not in ("winograd4", None)
    network = evsim.Network.from_spec("2x16x16-8C3-AP2-12C3-AP2-20-4", rng=0)
    for layer in network.layers:
        if hasattr(layer, "store"):
            layer.store.data[...] *= 4.0
    mask = np.random.default_rng(1).random((6, 16, 512)) < 0.1
    for value in (1e6, 1e9):
        x = (mask * value).astype(np.float32)
        np.testing.assert_array_equal(network.predict(x), network.forward(x, record=False)[0])
