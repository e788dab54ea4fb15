import numpy as np
import pytest

from evsim.aligned import CACHE_LINE, BufferPool, aligned, aligned_empty, line_width
from evsim.layers import SparseLinear
from evsim.synapses import SynapseStore


def starts_on_a_line(a):
    return a.size == 0 or a.ctypes.data % CACHE_LINE == 0  # an empty array has no data to align


@pytest.mark.parametrize("shape", [(0,), (7,), (3, 5), (20, 64, 13)])
def test_aligned_arrays(shape):
    a = aligned_empty(shape, np.float32)
    assert a.shape == shape and a.dtype == np.float32 and a.flags.c_contiguous and starts_on_a_line(a)
    values = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
    misaligned = np.empty(values.size + 1, np.float32)[1:].reshape(shape)  # 4 bytes off a line
    misaligned[...] = values
    copy = aligned(misaligned)
    assert starts_on_a_line(copy) and np.array_equal(copy, values)
    assert aligned(copy) is copy  # already aligned: no copy


def test_synapse_data_and_layer_buffers_stay_on_cache_lines(rng):
    store = SynapseStore.uniform(300, 40, rng, 0.5)
    assert starts_on_a_line(store.data)
    store.prune(rng.random(store.nnz) < 0.3)
    assert starts_on_a_line(store.data)
    missing = np.argwhere(~store.mask())[:2]
    store.regrow(missing[:, 0], missing[:, 1], np.array([0.1, 0.2], np.float32))
    assert starts_on_a_line(store.data)
    layer = SparseLinear(store)
    assert starts_on_a_line(layer.weight_rows)


def test_rows_path_pads_rows_to_cache_lines_and_follows_the_weights(rng):
    """A layer whose alive neurons are not a whole number of cache lines runs on a padded
    copy, refreshed from the CSR data by every forward pass; spikes and gradients are the same
    as on the csr path, which has no rows (a layer of 32 neurons, 12 of them killed)."""
    from evsim.kernels.events import dense_to_events
    from evsim.neuron import LIFParameters
    from tests.conftest import dyadic_weights

    assert [line_width(n) for n in (1, 16, 17, 280)] == [16, 16, 32, 288]
    weights = dyadic_weights(rng, (50, 32), 1.0, 16)  # exact sums in either order
    layer = SparseLinear(SynapseStore.from_dense(weights, np.ones(weights.shape, bool)),
                         rng.normal(0, 0.1, 32).astype(np.float32))
    assert not layer.rows_copied and np.shares_memory(layer.weight_rows, layer.store.data)  # 32 columns
    layer.kill(np.arange(0, 24, 2))
    assert layer.rows_copied and layer.weight_rows.shape == (50, 32) and starts_on_a_line(layer.weight_rows)
    layer.store.data[:] *= np.float32(0.5)
    lif = LIFParameters()
    x = (rng.random((6, 3, 50)) < 0.3).astype(np.float32)
    _, trace = layer.forward(dense_to_events(x), lif)
    dense = layer.store.to_dense()[:, layer.alive_index]
    np.testing.assert_array_equal(layer.weight_rows[:, :20], dense)
    assert not layer.weight_rows[:, 20:].any()
    reference = SparseLinear(SynapseStore.from_dense(dense, np.ones(dense.shape, bool)), layer.bias[layer.alive_index],
                             path="csr")
    _, want = reference.forward(dense_to_events(x), lif)
    np.testing.assert_array_equal(trace.u, want.u)
    grad_spikes = rng.normal(0, 1, trace.u.shape).astype(np.float32)
    grads = layer.backward(trace, grad_spikes, lif)
    want_grads = reference.backward(want, grad_spikes, lif)
    np.testing.assert_allclose(grads.params[0], want_grads.params[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(grads.input, want_grads.input, rtol=1e-6, atol=1e-6)
    assert trace.spikes.any() and np.abs(grads.params[0]).max() > 0


def test_pool_hands_a_buffer_out_again_only_when_no_array_uses_it():
    pool = BufferPool(min_bytes=1)
    first = pool.take(1000)
    view = first[10:20]
    del first
    second = pool.take(1000)
    assert second.ctypes.data != view.base.ctypes.data  # a slice still uses the first buffer
    address = second.ctypes.data
    del second
    third = pool.take(900)
    assert third.ctypes.data == address and third.size >= 900 + CACHE_LINE
    assert pool.take(100).ctypes.data not in (address, view.base.ctypes.data)  # far smaller: a buffer of its own


def test_pool_releases_free_buffers_no_request_took_lately():
    pool = BufferPool(min_bytes=1)
    kept = pool.take(500)
    for size in range(1000, 200000, 1000):  # a new shape every time, each freed at once
        buffer = pool.take(size)
        del buffer
    sizes = sorted(b.size - CACHE_LINE for b in pool._buffers)
    assert sizes[0] == 500  # in use: stays
    assert len(sizes) <= pool.stale_requests + 2 and sizes[1] >= 199000 - 1000 * (pool.stale_requests + 1)
    del kept
    pool.clear()
    assert pool._buffers == []


def test_pool_keeps_a_batch_worth_of_buffers_freed_during_the_batch():
    """The first batch misses at every request; buffers it frees as it goes are what the
    next batch asks for again, so that batch allocates nothing."""
    pool = BufferPool(min_bytes=1)
    shapes = [3000, 9000, 4000, 12000, 5000, 7000]

    def batch():
        held = []
        for k, size in enumerate(shapes):
            held.append(pool.take(size))
            if k >= 2:
                held.pop(0)  # an earlier gradient freed mid-pass
    batch()
    before = {id(b) for b in pool._buffers}
    batch()
    assert {id(b) for b in pool._buffers} == before


def test_large_aligned_arrays_are_recycled_and_aligned():
    a = aligned_empty((600, 1000))
    address = a.ctypes.data
    assert address % CACHE_LINE == 0
    del a
    b = aligned_empty((600, 1000), np.uint8)  # a quarter of the bytes: not handed the same buffer
    c = aligned_empty((1000, 600))
    assert c.ctypes.data == address and c.ctypes.data % CACHE_LINE == 0 and b.ctypes.data % CACHE_LINE == 0
