"""SynapseStore: canonical CSR and aligned state under any prune/regrow sequence."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from evsim.errors import ShapeError
from evsim.synapses import SynapseStore


def tagged_store(rng, n_pre, n_post, density):
    """A store whose state arrays tag each synapse by its (pre, post) key, so any
    misalignment after a structural edit is visible."""
    store = SynapseStore.uniform(n_pre, n_post, rng, density)
    keys = store.rows().astype(np.int64) * n_post + store.indices
    store.set_state("key", keys.astype(np.float64))
    store.set_state("adam_m", store.data * 2)
    return store


def assert_consistent(store):
    assert store.is_canonical()
    keys = store.rows().astype(np.int64) * store.shape[1] + store.indices
    np.testing.assert_array_equal(store.state["key"], keys)
    assert np.unique(keys).size == keys.size
    for values in store.state.values():
        assert values.shape[0] == store.nnz


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n_pre=st.integers(1, 12), n_post=st.integers(1, 12),
       density=st.floats(0.0, 1.0), ops=st.lists(st.sampled_from(["prune", "regrow", "columns"]), max_size=8))
def test_any_edit_sequence_keeps_csr_canonical_and_state_aligned(seed, n_pre, n_post, density, ops):
    rng = np.random.default_rng(seed)
    store = tagged_store(rng, n_pre, n_post, density)
    for op in ops:
        before = store.mask()
        if op == "prune":
            remove = rng.random(store.nnz) < 0.4
            gone = np.argwhere(before)[remove] if store.nnz else np.zeros((0, 2), int)
            store.prune(remove)
            assert not store.mask()[tuple(gone.T)].any()
        elif op == "columns":
            cols = rng.choice(n_post, size=rng.integers(0, n_post + 1), replace=False)
            store.prune_columns(cols)
            assert store.fan_in()[cols].sum() == 0
        else:
            free = np.argwhere(~before)
            pick = free[rng.random(len(free)) < 0.5]
            w = rng.normal(size=len(pick)).astype(np.float32)
            store.regrow(pick[:, 0], pick[:, 1], w)
            dense = store.to_dense()
            np.testing.assert_array_equal(dense[pick[:, 0], pick[:, 1]], w)
            # Regrown synapses carry fresh (zero) state, never stale moments.
            new = np.isin(store.rows().astype(np.int64) * n_post + store.indices, pick[:, 0] * n_post + pick[:, 1])
            assert np.all(store.state["adam_m"][new] == 0)
            store.state["key"][new] = (store.rows().astype(np.int64) * n_post + store.indices)[new]
        assert_consistent(store)


def test_prune_then_regrow_restores_the_pattern(rng):
    store = tagged_store(rng, 6, 5, 1.0)
    dense = store.to_dense()
    remove = rng.random(store.nnz) < 0.5
    removed = np.argwhere(store.mask())[remove]
    store.prune(remove)
    store.regrow(removed[:, 0], removed[:, 1], dense[removed[:, 0], removed[:, 1]])
    np.testing.assert_array_equal(store.to_dense(), dense)
    assert store.nnz == 30


def test_dense_roundtrip_keeps_explicit_mask(rng):
    w = rng.normal(size=(4, 3)).astype(np.float32)
    mask = np.array([[1, 0, 1], [0, 0, 0], [1, 1, 1], [0, 1, 0]], bool)
    w[0, 0] = 0.0  # an existing synapse whose weight is exactly zero stays a synapse
    store = SynapseStore.from_dense(w, mask)
    assert store.nnz == 6
    np.testing.assert_array_equal(store.mask(), mask)
    np.testing.assert_array_equal(store.to_dense(), w * mask)
    assert store.density == pytest.approx(0.5)


def test_uniform_init_bound_and_density(rng):
    store = SynapseStore.uniform(400, 300, rng, density=0.25)
    assert abs(store.density - 0.25) < 0.01
    assert np.abs(store.data).max() <= 1 / 20
    assert store.data.dtype == np.float32 and store.indices.dtype == np.int32


def test_regrow_rejects_existing_and_duplicate_pairs(rng):
    store = SynapseStore.from_dense(np.eye(3, dtype=np.float32))
    with pytest.raises(ValueError, match="already exists"):
        store.regrow([1], [1], [0.5])
    with pytest.raises(ValueError, match="twice"):
        store.regrow([0, 0], [1, 1], [0.5, 0.5])
    with pytest.raises(ShapeError, match="out of range"):
        store.regrow([3], [0], [0.5])
    with pytest.raises(ShapeError, match="equal-length"):
        store.regrow([0], [1, 2], [0.5])


def test_bad_shapes_are_rejected():
    store = SynapseStore.from_dense(np.eye(3, dtype=np.float32))
    with pytest.raises(ShapeError, match="aligned with data"):
        store.set_state("m", np.zeros(4))
    with pytest.raises(ShapeError, match="prune mask"):
        store.prune(np.zeros(2, bool))
    with pytest.raises(ShapeError, match="2-D"):
        SynapseStore.from_dense(np.zeros(3))


def test_regrow_takes_pairs_in_any_order_with_their_weights_and_initial_state():
    """Pairs given out of CSR order keep their own weights; state arrays named in
    ``initial_state`` start at that value, the others at 0, and existing entries keep theirs."""
    weights = np.array([[0.5, 0, 0.25], [0, 0, 0], [0, 0.75, 0]], np.float32)
    store = SynapseStore.from_dense(weights)
    store.set_state("r_plus", np.array([1.0, 2.0, 3.0], np.float32))
    store.set_state("adam_m", np.array([4.0, 5.0, 6.0], np.float32))
    assert store.regrow([2, 0, 1, 1], [2, 1, 2, 0], [-1.0, -2.0, -3.0, -4.0], {"r_plus": 9.0}) == 4
    expected = weights.copy()
    expected[[2, 0, 1, 1], [2, 1, 2, 0]] = [-1.0, -2.0, -3.0, -4.0]
    np.testing.assert_array_equal(store.to_dense(), expected)
    assert store.is_canonical()
    # CSR order: (0,0) (0,1)new (0,2) (1,0)new (1,2)new (2,1) (2,2)new
    np.testing.assert_array_equal(store.state["r_plus"], [1.0, 9.0, 2.0, 9.0, 9.0, 3.0, 9.0])
    np.testing.assert_array_equal(store.state["adam_m"], [4.0, 0.0, 5.0, 0.0, 0.0, 6.0, 0.0])


def test_store_canonicalises_duplicate_and_unsorted_entries():
    """A CSR matrix with a row's columns out of order and one (pre, post) pair twice becomes
    canonical: sorted, unique, the duplicate summed, int32/float32."""
    import scipy.sparse as sp

    matrix = sp.csr_matrix((np.array([1.0, 2.0, 3.0, 4.0]), np.array([2, 0, 2, 1]), np.array([0, 3, 3, 4])),
                           shape=(3, 3))
    store = SynapseStore(matrix)
    assert store.is_canonical() and store.nnz == 3
    np.testing.assert_array_equal(store.indices, [0, 2, 1])
    np.testing.assert_array_equal(store.to_dense(), [[2.0, 0, 4.0], [0, 0, 0], [0, 4.0, 0]])
    assert store.indptr.dtype == np.int32 and store.indices.dtype == np.int32 and store.data.dtype == np.float32


@pytest.mark.parametrize("indptr, indices, message", [
    ([0, 2, 3], [1, 1, 0], "sorted and unique"),      # a duplicate column in row 0
    ([0, 2, 3], [2, 1, 0], "sorted and unique"),      # row 0 out of order
    ([0, 2, 3], [0, 3, 1], r"must lie in \[0, 3\)"),  # column n_post
    ([0, 2, 3], [0, -1, 1], r"must lie in \[0, 3\)"),
    ([0, 2, 2], [0, 1, 2], "rise from 0 to nnz"),     # indptr ends before the last index
    ([1, 2, 3], [0, 1, 2], "rise from 0 to nnz"),
    ([0, 2, 1, 3], [0, 1, 2], "3 integers"),
])
def test_check_csr_refuses_each_broken_invariant(indptr, indices, message):
    from evsim.synapses import check_csr

    with pytest.raises(ShapeError, match=message):
        check_csr(np.array(indptr, np.int32), np.array(indices, np.int32), (2, 3))


def test_check_csr_accepts_empty_rows_and_equal_columns_in_different_rows():
    from evsim.synapses import check_csr

    check_csr(np.array([0, 2, 2, 4, 4], np.int32), np.array([1, 2, 0, 2], np.int32), (4, 3))
    check_csr(np.array([0, 0], np.int32), np.array([], np.int32), (1, 3))
