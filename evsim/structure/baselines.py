"""Baselines for honest comparison under the same trainer.

- :class:`MagnitudePruning`: gradual magnitude pruning (Zhu & Gupta 2017): sparsity
  rises as ``s_f (1 - (1 - p)^3)`` over the schedule, removing the smallest |w|.
- :class:`SET`: sparse evolutionary training (Mocanu et al. 2018): start at the target
  sparsity with random connectivity; every step remove the fraction ``zeta`` of the
  smallest-magnitude synapses and regrow as many at random missing positions.
"""
from __future__ import annotations

import numpy as np

from evsim.compression import units_with_input
from evsim.errors import ConfigError
from evsim.network import Network


def _stats(k, layer, pruned=0, regrown=0, **extra) -> dict:
    store = layer.store
    return {"layer": k, "synapses": store.nnz, "dense_synapses": layer.dense_synapses,
            "alive_neurons": int(units_with_input(layer).sum()), "neurons": layer.alive.size,
            "pruned": int(pruned), "regrown": int(regrown),
            "compression": round(1 - store.nnz / layer.dense_synapses, 6), **extra}


def magnitude(store) -> np.ndarray:
    """|w| of each synapse; a kernel's mean |w| (its L1 norm over K x K)."""
    return np.abs(store.data).reshape(store.nnz, store.block_size).mean(axis=1)


def prune_smallest(layer, n_remove: int) -> int:
    """Remove the ``n_remove`` existing synapses (kernels) of smallest magnitude (ties: lowest position)."""
    if n_remove <= 0:
        return 0
    order = np.argsort(magnitude(layer.store), kind="stable")[:n_remove]
    remove = np.zeros(layer.store.nnz, dtype=bool)
    remove[order] = True
    removed = layer.prune(remove)
    return removed


def check_fraction(name: str, value, up_to: str = "1)") -> None:
    """Refuse ``value`` unless it is a number in [0, 1] (NaN is not); the message says
    ``[0, <up_to>`` (a sparsity of 1 is refused later, with what it would cut)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not 0 <= value <= 1:
        raise ConfigError(f"{name} must be a number in [0, {up_to}, got {value!r}")


def kept_synapses(network: Network, k: int, sparsity: float) -> int:
    """The synapses (kernels) of layer ``k`` that ``sparsity`` keeps.

    Raises
    ------
    ConfigError
        If ``sparsity`` is not a number in [0, 1], or it keeps none: the layer would be
        cut, and the network would train at chance.
    """
    check_fraction("--target-sparsity", sparsity)
    layer = network.layers[k]
    keep = int(round(layer.dense_synapses * (1 - sparsity)))
    if keep <= 0:
        raise ConfigError(f"--target-sparsity {sparsity:g} leaves {network.layer_labels()[k]} ({layer.dense_synapses:,} "
                          f"synapses) none, which cuts the network; give at most "
                          f"{1 - 0.5 / layer.dense_synapses:.6g}")
    return keep


class MagnitudePruning:
    """Gradual magnitude pruning of developing layers to ``target`` sparsity over ``steps`` steps."""

    name = "magnitude"
    needs_would_be_grad = False

    def __init__(self, network: Network, target: float, start: int = 1, steps: int = 40):
        check_fraction("--target-sparsity", target)
        self.target, self.start, self.steps = target, start, max(steps, 1)
        self.step = 0
        self.layers = [k for k, layer in enumerate(network.layers) if layer.develops]
        for k in self.layers:
            kept_synapses(network, k, target)

    def sparsity_at(self, step: int) -> float:
        progress = min(max((step - self.start + 1) / self.steps, 0.0), 1.0)
        return self.target * (1 - (1 - progress) ** 3)

    def observe(self, network: Network, grads: list) -> None:
        pass

    def develop(self, network: Network, lr: float) -> list[dict]:
        self.step += 1
        sparsity = self.sparsity_at(self.step)
        stats = []
        for k in self.layers:
            layer = network.layers[k]
            dense = layer.dense_synapses
            pruned = prune_smallest(layer, layer.store.nnz - int(round(dense * (1 - sparsity))))
            stats.append(_stats(k, layer, pruned, target_sparsity=round(sparsity, 6)))
        return stats

    def state_dict(self) -> dict:
        """The schedule position, for checkpoints."""
        return {"step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.step = state["step"]


class SET:
    """Prune the smallest ``zeta`` fraction and regrow randomly, at constant ``sparsity``."""

    name = "set"
    needs_would_be_grad = False

    def __init__(self, network: Network, sparsity: float, zeta: float = 0.3, seed: int = 0):
        check_fraction("SET's zeta (the fraction replaced at each step)", zeta, "1]")
        self.zeta = zeta
        self.rng = np.random.default_rng([seed, 7])
        self.step = 0
        self.layers = [k for k, layer in enumerate(network.layers) if layer.develops]
        for k in self.layers:
            layer = network.layers[k]
            keep = kept_synapses(network, k, sparsity)
            remove = np.ones(layer.store.nnz, dtype=bool)
            remove[self.rng.choice(layer.store.nnz, size=keep, replace=False)] = False
            layer.prune(remove)

    def observe(self, network: Network, grads: list) -> None:
        pass

    def develop(self, network: Network, lr: float) -> list[dict]:
        self.step += 1
        stats = []
        for k in self.layers:
            layer = network.layers[k]
            n = int(self.zeta * layer.store.nnz)
            pruned = prune_smallest(layer, n)
            store = layer.store
            missing = np.flatnonzero(~store.mask().ravel())
            pick = self.rng.choice(missing, size=min(n, missing.size), replace=False)
            bound = 1.0 / np.sqrt(store.shape[0] * store.block_size)  # PyTorch's init: 1/sqrt(fan-in)
            weights = self.rng.uniform(-bound, bound, (pick.size,) + store.block_shape).astype(np.float32)
            regrown = layer.regrow(pick // store.shape[1], pick % store.shape[1], weights)
            stats.append(_stats(k, layer, pruned, regrown))
        return stats

    def state_dict(self) -> dict:
        """The step and the random generator's state (JSON-ready), for checkpoints."""
        return {"step": self.step, "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.step = state["step"]
        self.rng.bit_generator.state = state["rng"]
