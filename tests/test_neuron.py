import math

import pytest

from evsim.errors import ConfigError
from evsim.neuron import LIFParameters, surrogate_grad


def test_defaults_are_the_papers():
    lif = LIFParameters()
    assert (lif.decay, lif.v_th, lif.reset, lif.surrogate, lif.width) == (0.2, 0.5, "hard", "rectangular", 0.5)


def test_tau_parameterisation():
    assert LIFParameters.from_tau(2.0).decay == pytest.approx(math.exp(-0.5))
    with pytest.raises(ConfigError, match="tau_mem"):
        LIFParameters.from_tau(0)


@pytest.mark.parametrize("field,value,match", [
    ("decay", 1.0, "decay"), ("v_th", 0.0, "v_th"), ("reset", "soft", "unknown reset"),
    ("surrogate", "erf", "unknown surrogate"), ("width", -1.0, "width"),
])
def test_invalid_parameters(field, value, match):
    with pytest.raises(ConfigError, match=match):
        LIFParameters(**{field: value}).validate()


def test_unknown_surrogate_function():
    with pytest.raises(ConfigError, match="unknown surrogate"):
        surrogate_grad([0.0], "erf")
