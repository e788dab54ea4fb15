import numpy as np
import pytest
from click.testing import CliRunner

from evsim.cli.main import main
from evsim.config import CONFIG_TOML, config_toml
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


def run(args):
    return CliRunner().invoke(main, args, prog_name="evsim")


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:") and "Traceback" not in result.output, result.output
    return lines[0]


@pytest.fixture
def captured(monkeypatch):
    """Replace training by a recorder of the resolved TrainConfig that writes, like training
    once the data has loaded, the run's config.toml."""
    configs = []

    def fake_training(config, out, progress, echo, *args):
        configs.append(config)
        out.mkdir(parents=True, exist_ok=True)
        (out / CONFIG_TOML).write_text(config_toml(config))
        return {"test_acc": 0.5, "best_test_acc": 0.5, "synapses": 1, "compression": 0.0, "data_source": "x",
                "wall_s": 0.0}

    monkeypatch.setattr("evsim.cli.train.run_training", fake_training)
    return configs
