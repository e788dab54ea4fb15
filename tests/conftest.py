import numpy as np
import pytest

from evsim.layers import SparseLinear
from evsim.synapses import SynapseStore
from tests.reference import dyadic_weights


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def make_layer(rng, n_in, n_out, density=1.0, path="auto", bias_scale=0.25, scale=64):
    """A layer with dyadic weights/biases (exact in float32) and its dense twin."""
    weight = dyadic_weights(rng, (n_in, n_out), density, scale)
    mask = weight != 0
    bias = (rng.integers(-8, 9, n_out) / 64 * bias_scale * 4).astype(np.float32)
    layer = SparseLinear(SynapseStore.from_dense(weight, mask), bias, path=path)
    return layer, weight, bias


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """No test may reach the network: loaders never probe for downloads."""
    monkeypatch.setenv("EVSIM_OFFLINE", "1")
