import numpy as np
import pytest

from evsim.checkpoint import load_network, save_network
from evsim.errors import CheckpointError
from evsim.network import Network


def test_saved_network_gives_identical_spikes(rng, tmp_path):
    net = Network.mlp([20, 12, 4], rng)
    net.layers[0].kill([1, 5])
    net.layers[0].store.prune(rng.random(net.layers[0].store.nnz) < 0.3)
    net.layers[0].rebuild()
    save_network(tmp_path / "n.npz", net)
    back = load_network(tmp_path / "n.npz")
    x = (rng.random((6, 3, 20)) < 0.4).astype(np.float32)
    (c1, t1), (c2, t2) = net.forward(x), back.forward(x)
    np.testing.assert_array_equal(c1, c2)
    for a, b in zip(t1, t2):
        np.testing.assert_array_equal(a.spikes, b.spikes)
    assert back.layers[0].alive.tolist() == net.layers[0].alive.tolist()
    assert [layer.develops for layer in back.layers] == [True, False]


def test_missing_and_truncated_network_files(rng, tmp_path):
    with pytest.raises(CheckpointError, match="no trained network"):
        load_network(tmp_path / "absent.npz")
    save_network(tmp_path / "n.npz", Network.mlp([5, 3, 2], rng))
    data = (tmp_path / "n.npz").read_bytes()
    (tmp_path / "n.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_network(tmp_path / "n.npz")
