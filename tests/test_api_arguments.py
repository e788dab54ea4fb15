"""Arguments of the public Python API that cannot mean anything are one clear evsim error,
never a raw exception, a silently wrong result or a file that does not load back."""
from __future__ import annotations

import numpy as np
import pytest

import evsim
from evsim.errors import CheckpointError, ConfigError, EvsimError, ShapeError, StructureError
from evsim.inspect import record_dataset
from evsim.nir_io import network_to_nir, write_nir
from evsim.synapses import SynapseStore

X = (np.random.default_rng(0).random((4, 2, 8)) < 0.5).astype(np.float32)
LABELS = np.array([0, 1])


def _net(spec: str = "8-6-3") -> evsim.Network:
    return evsim.Network.from_spec(spec, rng=0)


def _grads(network: evsim.Network):
    counts, traces = network.forward(X)
    _, grad = evsim.mse_rate(counts, LABELS, 4)
    return network.backward(traces, grad)


def _dataset() -> evsim.Dataset:
    split = evsim.Split(np.full((6, 8), 0.5, np.float32), np.arange(6) % 3)
    return evsim.Dataset(name="t", train=split, test=split, n_classes=3, sample_shape=(8,), encoding="rate",
                         source="s")


@pytest.mark.parametrize("target", [1.5, -0.1, float("nan")])
def test_magnitude_pruning_refuses_a_target_outside_0_1(target):
    network = _net()
    with pytest.raises(ConfigError, match=r"--target-sparsity must be a number in \[0, 1\)"):
        evsim.MagnitudePruning(network, target)
    assert network.synapses == 8 * 6 + 6 * 3


def test_magnitude_pruning_of_every_synapse_still_cuts_the_network():
    with pytest.raises(ConfigError, match="cuts the network"):
        evsim.MagnitudePruning(_net(), 1.0)


@pytest.mark.parametrize("kwargs", [dict(samples=-1), dict(samples=0), dict(samples=2.5), dict(batch_size=0),
                                    dict(batch_size=-5), dict(time_steps=0), dict(time_steps=-2), dict(seed=-1)])
def test_profile_refuses_counts_out_of_range(kwargs):
    with pytest.raises(ConfigError, match=f"{next(iter(kwargs))} must be a whole number"):
        evsim.profile(_net("8-3"), _dataset(), **{"time_steps": 4, **kwargs})


@pytest.mark.parametrize("data, kind", [(5, "int"), ({"x": X}, "dict"), ("abc", "str")])
def test_profile_names_data_it_cannot_take(data, kind):
    with pytest.raises(ConfigError, match=f"profile takes a Dataset.*got {kind}$"):
        evsim.profile(_net(), data)


@pytest.mark.parametrize("kwargs", [dict(samples=0), dict(samples=-1), dict(time_steps=0)])
def test_record_dataset_refuses_counts_out_of_range(kwargs):
    with pytest.raises(ConfigError, match="must be a whole number >= 1"):
        record_dataset(_net("8-3"), _dataset(), **{"time_steps": 4, **kwargs})


def test_evaluate_refuses_a_zero_batch_size():
    with pytest.raises(ConfigError, match="batch_size must be a whole number >= 1"):
        evsim.evaluate.evaluate(_net("8-3"), _dataset(), 4, batch_size=0)


@pytest.mark.parametrize("index_map", [np.arange(1, dtype=np.int32), np.arange(5.0), [0, 1, 2, 3, 4],
                                       np.array([0, 2, 1, 3, 4]), np.arange(-1, 4)])
def test_dense_to_events_refuses_an_index_map_that_does_not_fit(index_map):
    dense = np.ones((1, 1, 5), np.float32)
    with pytest.raises(ShapeError, match="index_map must be"):
        evsim.dense_to_events(dense, index_map)


def test_dense_to_events_maps_columns_with_any_integer_index_map():
    dense = np.ones((1, 1, 3), np.float32)
    assert evsim.dense_to_events(dense, np.array([1, 4, 9], np.int64)).idx.tolist() == [1, 4, 9]


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(betas=(1.0, 0.999)), "betas"), (dict(betas=(0.9, 1.0)), "betas"), (dict(betas=(float("nan"), 0.9)), "betas"),
    (dict(eps=0.0), "eps"), (dict(name="sgd", momentum=float("nan")), "momentum"), (dict(momentum=1.0), "momentum"),
    (dict(lr="0.01"), "learning rate must be"), (dict(lr=float("inf")), "learning rate must be"), (dict(steps=-1), "steps"),
    (dict(steps=0.5), "steps")])
def test_optimizer_refuses_constants_that_break_its_update(kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment):
        evsim.Optimizer(**kwargs)


@pytest.mark.parametrize("lr", [-1.0, float("nan"), "x"])
def test_an_optimizer_step_refuses_a_learning_rate_below_zero_or_not_a_number(lr):
    network = _net()
    before = network.layers[0].store.data.copy()
    optimizer = evsim.Optimizer()
    with pytest.raises(ConfigError, match="learning rate must be a finite number >= 0"):
        optimizer.step(network.parameters(_grads(network)), lr=lr)
    assert np.array_equal(network.layers[0].store.data, before) and optimizer.steps == 0


@pytest.mark.parametrize("dtype", [complex, object])
def test_an_optimizer_step_refuses_gradients_that_are_not_real(dtype):
    network = _net()
    params = [(v, g.astype(dtype), s) for v, g, s in network.parameters(_grads(network))]
    with pytest.raises(ShapeError, match="gradients must be arrays of real numbers"):
        evsim.Optimizer().step(params)


def test_float16_gradients_update_as_float32_ones():
    a, b = _net(), _net()
    ga, gb = _grads(a), _grads(b)
    evsim.Optimizer().step([(v, g.astype(np.float16), s) for v, g, s in a.parameters(ga)])
    evsim.Optimizer().step([(v, g.astype(np.float16).astype(np.float32), s) for v, g, s in b.parameters(gb)])
    assert np.array_equal(a.layers[0].store.data, b.layers[0].store.data)


@pytest.mark.parametrize("loss", [evsim.mse_rate, evsim.cross_entropy])
def test_losses_refuse_an_empty_batch(loss):
    with pytest.raises(ShapeError, match="no samples"):
        loss(np.zeros((0, 3), np.float32), np.zeros(0, np.int64), 4)


@pytest.mark.parametrize("dtype", [object, complex])
def test_losses_refuse_counts_that_are_not_real(dtype):
    with pytest.raises(ShapeError, match="of real numbers"):
        evsim.mse_rate(np.array([[1, 2]], dtype=dtype), np.array([0]), 4)


@pytest.mark.parametrize("kwargs, fragment", [(dict(decay="0.2"), "decay must be a number"),
                                              (dict(detach_reset="no"), "detach_reset must be True or False")])
def test_lif_parameters_refuse_values_of_the_wrong_type(kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment):
        evsim.Network.from_spec("8-3", lif=evsim.LIFParameters(**kwargs))


def test_regrowing_an_existing_synapse_is_an_evsim_error_and_a_value_error():
    layer = _net().layers[0]
    with pytest.raises(StructureError, match="already exists") as caught:
        layer.regrow([0], [0], [1.0])
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, EvsimError)


@pytest.mark.parametrize("pre, post, weights, fragment", [([0.9], [0], [1.0], "integer unit indices"),
                                                          ([0], [0], [np.nan], "NaN or infinite")])
def test_regrow_refuses_float_indices_and_nan_weights(pre, post, weights, fragment):
    layer = _net().layers[0]
    layer.prune(np.r_[True, np.zeros(layer.store.nnz - 1, bool)])
    with pytest.raises(ShapeError, match=fragment):
        layer.regrow(pre, post, weights)
    assert layer.store.nnz == 47


def test_prune_columns_refuses_a_negative_index():
    store = SynapseStore.from_dense(np.ones((3, 4), np.float32))
    with pytest.raises(ShapeError, match="prune_columns takes indices"):
        store.prune_columns([-1])
    assert store.nnz == 12


@pytest.mark.parametrize("mask", [np.full(48, np.nan), np.zeros(48)])
def test_prune_takes_a_boolean_mask_only(mask):
    layer = _net().layers[0]
    with pytest.raises(ShapeError, match="boolean mask"):
        layer.prune(mask)
    assert layer.store.nnz == 48


@pytest.mark.parametrize("make", [lambda n: evsim.SET(n, 0.5, zeta=-0.1), lambda n: evsim.SET(n, 0.5, zeta=1.5),
                                  lambda n: evsim.SET(n, -0.5), lambda n: evsim.SET(n, 0.5, zeta=float("nan"))])
def test_set_refuses_fractions_outside_0_1(make):
    with pytest.raises(ConfigError, match=r"must be a number in \[0, 1"):
        make(_net())


@pytest.mark.parametrize("kwargs, fragment", [(dict(rho_init="30"), "rho_init must be a number"),
                                              (dict(spine_steps=1.5), "spine_steps must be a whole number")])
def test_sdsnn_config_refuses_values_of_the_wrong_type(kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment):
        evsim.SDSNNConfig(**{"rho_init": 30, "rho_max": 50, **kwargs})


def _sdsnn(network):
    return evsim.SDSNN(network, evsim.SDSNNConfig(spine_steps=1, regrow_steps=1, rho_init=30, rho_max=50))


@pytest.mark.parametrize("lr", [float("nan"), -1.0])
def test_sdsnn_develop_refuses_a_learning_rate_below_zero_or_nan(lr):
    network = _net()
    with pytest.raises(ConfigError, match="learning rate"):
        _sdsnn(network).develop(network, lr)


@pytest.mark.parametrize("other", ["8-10-3", "8-6-3"])
def test_sdsnn_develops_only_the_network_it_was_made_for(other):
    network = _net()
    controller = _sdsnn(network)
    controller.develop(network, 1e-2)
    with pytest.raises(ConfigError, match="the network it was made for"):
        controller.develop(_net(other), 1e-2)


def test_saving_refuses_a_folder_swapped_arguments_and_none(tmp_path):
    network = _net()
    with pytest.raises(ConfigError, match="is a folder"):
        evsim.save_network(tmp_path, network)
    with pytest.raises(ConfigError, match="is a folder"):
        write_nir(tmp_path, network)
    with pytest.raises(ConfigError, match="arguments swapped"):
        evsim.save_network(network, tmp_path / "a.npz")
    with pytest.raises(ConfigError, match="takes a Network, got NoneType"):
        network_to_nir(None)


def test_a_network_with_nan_weights_is_not_saved(tmp_path):
    network = _net()
    network.layers[0].store.data[0] = np.nan
    with pytest.raises(CheckpointError, match="not saved: layer 0 holds NaN"):
        evsim.save_network(tmp_path / "n.npz", network)
    assert not (tmp_path / "n.npz").exists()


def test_loading_with_an_unknown_path_option_names_the_option(tmp_path):
    evsim.save_network(tmp_path / "n.npz", _net())
    with pytest.raises(ConfigError, match="unknown propagation path 'dense'"):
        evsim.load_network(tmp_path / "n.npz", path_option="dense")


@pytest.mark.parametrize("args, kwargs", [((-1, float("nan")), {}), ((), dict(e_mac_pj="x"))])
def test_energy_model_refuses_negative_or_non_numbers(args, kwargs):
    with pytest.raises(ConfigError, match="must be a finite number >= 0"):
        evsim.EnergyModel(*args, **kwargs)


def test_profile_refuses_a_model_that_is_not_an_energy_model():
    with pytest.raises(ConfigError, match="model must be an EnergyModel"):
        evsim.profile(_net(), X, model="x")


@pytest.mark.parametrize("inputs", [np.full((6, 8), 0.5).astype(object), np.full((6, 8), 0.5).tolist()])
def test_a_split_refuses_inputs_that_are_not_a_real_array(inputs):
    with pytest.raises(ShapeError, match="a split's inputs must be a NumPy array of real numbers"):
        evsim.Split(inputs, np.arange(6) % 3)


def test_store_construction_and_regrowth_state_are_checked():
    """Raw OverflowError, IndexError and ValueError of the verification pass; NaN data and
    a NaN density made stores silently."""
    rng = np.random.default_rng(0)
    for args in ((-1, 3), (2, 0), (2.5, 3), (True, 3)):
        with pytest.raises(ShapeError, match="must be a whole number >= 1"):
            SynapseStore.uniform(*args, rng)
    with pytest.raises(ShapeError, match="density must be a number in"):
        SynapseStore.uniform(2, 3, rng, density=float("nan"))
    with pytest.raises(ShapeError, match=r"mask has shape \(3, 2\), the weights \(2, 3\)"):
        SynapseStore.from_dense(np.ones((2, 3)), mask=np.ones((3, 2), bool))
    with pytest.raises(ShapeError, match="NaN or infinite"):
        SynapseStore.from_dense(np.full((2, 3), np.nan))
    store = SynapseStore.from_dense(np.eye(3, dtype=np.float32))
    store.state = {"adam_m": np.zeros(store.nnz, np.float32)}
    before = (store.indptr.copy(), store.indices.copy(), store.data.copy())
    with pytest.raises(StructureError, match="initial_state must map state names to numbers"):
        store.regrow(np.array([0]), np.array([1]), np.array([0.5], np.float32), {"adam_m": "x"})
    assert all(np.array_equal(a, b) for a, b in zip(before, (store.indptr, store.indices, store.data)))
    with pytest.raises(CheckpointError, match="resume takes the run's folder, got NoneType"):
        evsim.resume(None)
