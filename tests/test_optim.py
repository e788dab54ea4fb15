import numpy as np
import pytest

from evsim.errors import ConfigError
from evsim.loss import cross_entropy, get_loss, mse_rate
from evsim.optim import Optimizer, Schedule
from tests.reference import adam as ref_adam


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
