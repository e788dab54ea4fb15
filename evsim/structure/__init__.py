"""Structural development: SD-SNN and baselines behind one small interface.

A structure controller has ``needs_would_be_grad`` (whether backward must compute
would-be gradients of missing synapses), ``observe(network, grads)`` after each backward (``grads``: what
:meth:`~evsim.network.Network.backward` returned),
and ``develop(network, lr) -> list[dict]`` at the end of each development interval.
"""
from __future__ import annotations

from evsim.errors import ConfigError
from evsim.structure.baselines import SET, MagnitudePruning
from evsim.structure.sdsnn import SDSNN, SDSNNConfig

STRUCTURES = ("sdsnn", "none", "magnitude", "set")


def make_structure(name: str, network, sdsnn: SDSNNConfig, target_sparsity: float, schedule_steps: int,
                   adaptive_optimizer: bool, seed: int, epoch_batches: int | None = None,
                   interval: int | None = None):
    """The controller called ``name``, or None for ``"none"``. ``epoch_batches`` and
    ``interval``: batches per epoch and between development steps, when development runs
    every few batches (SD-SNN's would-be updates are taken over about an epoch, see
    :mod:`evsim.structure.sdsnn`)."""
    if name == "none":
        return None
    if name == "sdsnn":
        return SDSNN(network, sdsnn, adaptive_optimizer, epoch_batches, interval)
    if not 0 < target_sparsity < 1:
        raise ConfigError(f"--target-sparsity must be in (0, 1) for {name}, got {target_sparsity}")
    if name == "magnitude":
        return MagnitudePruning(network, target_sparsity, steps=schedule_steps)
    if name == "set":
        return SET(network, target_sparsity, seed=seed)
    raise ConfigError(f"unknown structure {name!r}; choose one of {', '.join(STRUCTURES)}")


__all__ = ["SDSNN", "SDSNNConfig", "SET", "MagnitudePruning", "STRUCTURES", "make_structure"]
