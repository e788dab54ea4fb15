import numpy as np
import pytest

from evsim.errors import ConfigError
from evsim.loss import cross_entropy, get_loss, mse_rate
from evsim.optim import Optimizer, Schedule
from tests.reference import adam as ref_adam, mse_rate as ref_mse, sgd as ref_sgd


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_adam_matches_reference_over_steps(rng, name):
    param = rng.normal(size=100).astype(np.float32)
    ref, m, v = param.astype(np.float64), np.zeros(100), np.zeros(100)
    state = {}
    opt = Optimizer(name, lr=1e-2, weight_decay=0.01)
    for step in range(1, 6):
        grad = rng.normal(size=100).astype(np.float32)
        opt.step([(param, grad, state)])
        ref, m, v = ref_adam(ref, grad.astype(np.float64), m, v, step, lr=1e-2, weight_decay=0.01,
                             decoupled=name == "adamw")
    np.testing.assert_allclose(param, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state["adam_m"], m, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_a_decay_that_takes_a_whole_weight_each_step_is_refused(name):
    # lr x weight decay >= 1 zeroes or flips every weight at each step (decoupled, SGD) or
    # swamps every gradient (Adam's L2): a run that can only stay at chance.
    with pytest.raises(ConfigError, match="below 1/learning rate = 100"):
        Optimizer(name, lr=1e-2, weight_decay=100.0)
    with pytest.raises(ConfigError, match="weight-decay must be >= 0"):
        Optimizer(name, lr=1e-2, weight_decay=-1.0)
    Optimizer(name, lr=1e-2, weight_decay=99.0)


def test_sgd_momentum(rng):
    param = np.ones(3, np.float32)
    state = {}
    opt = Optimizer("sgd", lr=0.1, momentum=0.9)
    opt.step([(param, np.ones(3, np.float32), state)])
    opt.step([(param, np.ones(3, np.float32), state)])
    # buf: 1 then 1.9 -> param = 1 - 0.1 - 0.19
    np.testing.assert_allclose(param, 0.71, rtol=1e-6)


def test_schedules():
    step = Schedule("step", step_epochs=10)
    assert [step.factor(e) for e in (0, 9, 10, 25)] == pytest.approx([1, 1, 0.1, 0.01])
    cosine = Schedule("cosine", warmup_epochs=2, total_epochs=12)
    assert cosine.factor(0) == pytest.approx(1 / 3)
    assert cosine.factor(2) == pytest.approx(1.0)
    assert cosine.factor(7) == pytest.approx(0.5)
    assert cosine.factor(12) == pytest.approx(0.0, abs=1e-12)


def test_bad_optimizer_options():
    with pytest.raises(ConfigError, match="unknown optimizer"):
        Optimizer("rmsprop")
    with pytest.raises(ConfigError, match="learning rate"):
        Optimizer(lr=0)
    with pytest.raises(ConfigError, match="unknown schedule"):
        Schedule("linear")
    with pytest.raises(ConfigError, match="unknown loss"):
        get_loss("hinge")


@pytest.mark.parametrize("loss_fn", [mse_rate, cross_entropy])
def test_loss_gradients_match_finite_differences(rng, loss_fn):
    counts = rng.integers(0, 10, (4, 5)).astype(np.float64)
    labels = np.array([0, 3, 4, 1])
    _, grad = loss_fn(counts.copy(), labels, 10)
    numeric = np.zeros_like(counts)
    for idx in np.ndindex(counts.shape):
        plus, minus = counts.copy(), counts.copy()
        plus[idx] += 1e-5
        minus[idx] -= 1e-5
        numeric[idx] = (loss_fn(plus, labels, 10)[0] - loss_fn(minus, labels, 10)[0]) / 2e-5
    np.testing.assert_allclose(grad, numeric, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_matches_reference_with_weight_decay_and_a_scheduled_rate(rng, nesterov):
    """The rate given to step() (the schedule's) is the one used, not the base rate."""
    param = rng.normal(size=50).astype(np.float32)
    ref, buf = param.astype(np.float64), np.zeros(50)
    state = {}
    opt = Optimizer("sgd", lr=0.1, momentum=0.8, nesterov=nesterov, weight_decay=0.05)
    for step, lr in enumerate([0.1, 0.05, 0.02, 0.01]):
        grad = rng.normal(size=50).astype(np.float32)
        opt.step([(param, grad, state)], lr=lr)
        ref, buf = ref_sgd(ref, grad.astype(np.float64), buf, lr, momentum=0.8, weight_decay=0.05, nesterov=nesterov)
    np.testing.assert_allclose(param, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state["momentum"], buf, rtol=1e-5, atol=1e-6)


def test_adam_eps_is_added_to_the_bias_corrected_root(rng):
    """Gradients of the size of eps: where eps enters is visible (PyTorch: sqrt(v_hat) + eps)."""
    param = np.zeros(20, np.float32)
    ref, m, v = np.zeros(20), np.zeros(20), np.zeros(20)
    state = {}
    opt = Optimizer("adam", lr=1e-2)
    for step in range(1, 4):
        grad = (rng.normal(size=20) * 1e-8).astype(np.float32)
        opt.step([(param, grad, state)])
        ref, m, v = ref_adam(ref, grad.astype(np.float64), m, v, step, lr=1e-2)
    np.testing.assert_allclose(param, ref, rtol=1e-3, atol=1e-6)  # the other placement is 3x to 30x off


def test_loss_values_by_hand():
    """mse: T = 10, counts [5, 0] and [2, 8], labels 0 and 1: rates minus targets
    [-0.5, 0] and [0.2, -0.2], mean square 0.0825. ce: logits [0, 1000] and [3, 3], labels 0
    and 1: -log p = 1000 (no overflow) and log 2."""
    counts = np.array([[5, 0], [2, 8]], np.float64)
    loss, grad = mse_rate(counts.copy(), np.array([0, 1]), 10)
    assert loss == pytest.approx(0.0825) == ref_mse(counts, np.array([0, 1]), 10)
    np.testing.assert_allclose(grad, 2 * np.array([[-0.5, 0], [0.2, -0.2]]) / (4 * 10), rtol=1e-6)
    loss, grad = cross_entropy(np.array([[0, 1000], [3, 3]], np.float64), np.array([0, 1]), 1000)
    assert loss == pytest.approx((1000 + np.log(2)) / 2)
    np.testing.assert_allclose(grad, [[-0.5, 0.5], [0.25, -0.25]], rtol=1e-6)


def test_loss_names():
    assert get_loss("mse") is mse_rate and get_loss("ce") is cross_entropy
