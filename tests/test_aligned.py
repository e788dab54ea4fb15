import numpy as np
import pytest

from evsim.aligned import CACHE_LINE, aligned, aligned_empty
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
