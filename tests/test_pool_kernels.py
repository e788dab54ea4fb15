"""Average and max pooling of events against the dense NumPy twins of tests/reference.py."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evsim.kernels.avg_pool import avg_pool_backward, avg_pool_events
from evsim.kernels.conv_geometry import pool_geometry
from evsim.kernels.events import dense_to_events
from evsim.kernels.max_pool import max_pool_backward, max_pool_events
from tests.reference import avg_pool2d, avg_pool2d_backward, dyadic_weights, max_pool2d, max_pool2d_backward


def maps(rng, shape, activity, values=(1.0,)):
    x = (rng.random(shape) < activity) * rng.choice(np.asarray(values, dtype=np.float32), size=shape)
    return x.astype(np.float32)


def densify(ptr, idx, val, n_slots, n):
    dense = np.zeros((n_slots, n), dtype=np.float32)
    for s in range(n_slots):
        dense[s, idx[ptr[s]:ptr[s + 1]]] = val[ptr[s]:ptr[s + 1]]
    return dense


def check_structure(ptr, idx, val):
    assert ptr.dtype == np.int64 and idx.dtype == np.int32 and val.dtype == np.float32
    assert ptr[0] == 0 and np.all(np.diff(ptr) >= 0) and ptr[-1] == idx.size == val.size
    for s in range(ptr.size - 1):
        assert np.all(np.diff(idx[ptr[s]:ptr[s + 1]]) > 0), "indices ascend within a slot"
    assert np.all(val != 0)


SIZES = [(2, 8, 8), (2, 6, 4), (3, 7, 9), (1, 5, 5), (2, 3, 3)]  # divisible and not (PyTorch floors)


@pytest.mark.parametrize("kernel", [1, 2, 3])
@pytest.mark.parametrize("channels, height, width", SIZES)
def test_avg_pool_forward_equals_twin(rng, kernel, channels, height, width):
    x = maps(rng, (6, channels, height, width), 0.4, values=(1.0, 2.0, 0.5))
    ev = dense_to_events(x.reshape(2, 3, -1))
    geo = pool_geometry(channels, height, width, kernel)
    ptr, idx, val = avg_pool_events(ev.ptr, ev.idx, ev.val, geo)
    check_structure(ptr, idx, val)
    ref = avg_pool2d(x, kernel).reshape(6, -1)
    np.testing.assert_array_equal(densify(ptr, idx, val, 6, geo.n_out), ref)


def test_avg_pool_spikes_give_quarters(rng):
    x = maps(rng, (4, 3, 8, 8), 0.5)
    ev = dense_to_events(x.reshape(4, 1, -1))
    _, _, val = avg_pool_events(ev.ptr, ev.idx, ev.val, pool_geometry(3, 8, 8, 2))
    assert set(np.unique(val)) <= {0.25, 0.5, 0.75, 1.0}


def test_avg_pool_windows_that_cancel_give_no_event_and_leave_no_state(rng):
    # A window whose values sum to zero gives no event, and the kernel's per-task sums
    # start the next slot clean: slot 1 repeats slot 0's cells without the cancelling one.
    x = np.zeros((2, 2, 4, 4), dtype=np.float32)
    x[0, 0, 0, 0], x[0, 0, 0, 1] = 1.0, -1.0  # window (0, 0, 0) cancels
    x[0, 1, 2, 3] = 0.5
    x[1, 0, 0, 0] = 1.0
    ev = dense_to_events(x.reshape(2, 1, -1))
    geo = pool_geometry(2, 4, 4, 2)
    ptr, idx, val = avg_pool_events(ev.ptr, ev.idx, ev.val, geo)
    check_structure(ptr, idx, val)
    np.testing.assert_array_equal(densify(ptr, idx, val, 2, geo.n_out), avg_pool2d(x, 2).reshape(2, -1))
    assert list(idx[ptr[0]:ptr[1]]) == [1 * 4 + 1 * 2 + 1] and list(idx[ptr[1]:ptr[2]]) == [0]


@pytest.mark.parametrize("kernel", [2, 3])
@pytest.mark.parametrize("channels, height, width", SIZES)
def test_avg_pool_backward_equals_twin(rng, kernel, channels, height, width):
    if kernel > min(height, width):
        return
    geo = pool_geometry(channels, height, width, kernel)
    grad_out = dyadic_weights(rng, (5, channels, geo.out_height, geo.out_width), 0.5)
    ref = avg_pool2d_backward(grad_out, (channels, height, width), kernel).reshape(5, -1)
    np.testing.assert_array_equal(avg_pool_backward(grad_out.reshape(5, -1), geo), ref)
    mask = rng.random((5, geo.n_in)) < 0.3
    np.testing.assert_array_equal(avg_pool_backward(grad_out.reshape(5, -1), geo, mask), np.where(mask, ref, 0))


@pytest.mark.parametrize("kernel", [1, 2, 3])
@pytest.mark.parametrize("channels, height, width", SIZES)
def test_max_pool_forward_and_backward_equal_twin(rng, kernel, channels, height, width):
    x = maps(rng, (6, channels, height, width), 0.4, values=(1.0, 2.0, 3.0))  # many ties
    ev = dense_to_events(x.reshape(3, 2, -1))
    geo = pool_geometry(channels, height, width, kernel)
    ptr, idx, val, argmax = max_pool_events(ev.ptr, ev.idx, ev.val, geo)
    check_structure(ptr, idx, val)
    ref, ref_arg = max_pool2d(x, kernel)
    np.testing.assert_array_equal(densify(ptr, idx, val, 6, geo.n_out), ref.reshape(6, -1))
    slots = np.repeat(np.arange(6), np.diff(ptr))
    np.testing.assert_array_equal(argmax, ref_arg.reshape(6, -1)[slots, idx])
    grad_out = dyadic_weights(rng, ref.shape, 0.7)
    got = max_pool_backward(grad_out.reshape(6, -1), ptr, idx, argmax, geo)
    np.testing.assert_array_equal(got, max_pool2d_backward(grad_out, ref_arg, (channels, height, width)).reshape(6, -1))


def test_max_pool_ties_go_to_the_lowest_index():
    x = np.zeros((1, 1, 4, 4), dtype=np.float32)
    x[0, 0, 0, 1] = x[0, 0, 1, 0] = x[0, 0, 1, 1] = 1.0  # window (0, 0): three tied spikes
    x[0, 0, 3, 3] = 1.0
    ev = dense_to_events(x.reshape(1, 1, -1))
    ptr, idx, val, argmax = max_pool_events(ev.ptr, ev.idx, ev.val, pool_geometry(1, 4, 4, 2))
    assert idx.tolist() == [0, 3] and argmax.tolist() == [1, 15]


def test_pool_refusals(rng):
    with pytest.raises(ValueError, match="larger than the 3x5 map"):
        pool_geometry(2, 3, 5, 4)
    with pytest.raises(ValueError, match="kernel must be >= 1"):
        pool_geometry(2, 3, 5, 0)
    ev = dense_to_events(-np.ones((1, 1, 16), dtype=np.float32))
    with pytest.raises(ValueError, match="nonnegative"):
        max_pool_events(ev.ptr, ev.idx, ev.val, pool_geometry(1, 4, 4, 2))
    with pytest.raises(ValueError, match="grad_out must be"):
        avg_pool_backward(np.zeros((2, 3), np.float32), pool_geometry(1, 4, 4, 2))
    with pytest.raises(ValueError, match="mask must be"):
        avg_pool_backward(np.zeros((2, 4), np.float32), pool_geometry(1, 4, 4, 2), np.zeros((2, 15), np.uint8))
    with pytest.raises(ValueError, match="grad_out must be"):
        max_pool_backward(np.zeros((2, 3), np.float32), np.zeros(3, np.int64), np.zeros(0, np.int32),
                          np.zeros(0, np.int32), pool_geometry(1, 4, 4, 2))


def test_no_events():
    ev = dense_to_events(np.zeros((2, 3, 32), dtype=np.float32))
    geo = pool_geometry(2, 4, 4, 2)
    ptr, idx, _ = avg_pool_events(ev.ptr, ev.idx, ev.val, geo)
    assert ptr.tolist() == [0] * 7 and idx.size == 0
    ptr, idx, _, argmax = max_pool_events(ev.ptr, ev.idx, ev.val, geo)
    assert ptr.tolist() == [0] * 7 and argmax.size == 0


@settings(max_examples=20, deadline=None)
@given(kernel=st.integers(1, 4), height=st.integers(4, 11), width=st.integers(4, 11), activity=st.floats(0, 1),
       seed=st.integers(0, 2**16))
def test_pooling_property(kernel, height, width, activity, seed):
    rng = np.random.default_rng(seed)
    x = maps(rng, (4, 2, height, width), activity, values=(1.0, 3.0, 0.25))
    ev = dense_to_events(x.reshape(2, 2, -1))
    geo = pool_geometry(2, height, width, kernel)
    ptr, idx, val = avg_pool_events(ev.ptr, ev.idx, ev.val, geo)
    check_structure(ptr, idx, val)
    np.testing.assert_array_equal(densify(ptr, idx, val, 4, geo.n_out), avg_pool2d(x, kernel).reshape(4, -1))
    ptr, idx, val, argmax = max_pool_events(ev.ptr, ev.idx, ev.val, geo)
    check_structure(ptr, idx, val)
    ref, ref_arg = max_pool2d(x, kernel)
    np.testing.assert_array_equal(densify(ptr, idx, val, 4, geo.n_out), ref.reshape(4, -1))
    np.testing.assert_array_equal(argmax, ref_arg.reshape(4, -1)[np.repeat(np.arange(4), np.diff(ptr)), idx])


def test_avg_pool_backward_of_chosen_channels_is_their_slice_of_the_whole(rng):
    geo = pool_geometry(5, 6, 6, 2)
    grad_out = rng.standard_normal((4, geo.n_out)).astype(np.float32)
    whole = avg_pool_backward(grad_out, geo).reshape(4, 5, 36)
    for channels in ([0, 2, 3], [4], [], [1, 0]):
        np.testing.assert_array_equal(avg_pool_backward(grad_out, geo, channels=np.array(channels, int)),
                                      whole[:, channels].reshape(4, -1))
    with pytest.raises(ValueError, match="channels"):
        avg_pool_backward(grad_out, geo, channels=np.array([5]))
