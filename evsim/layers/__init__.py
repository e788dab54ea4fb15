"""Layers of a spiking network: the protocols (:mod:`evsim.layers.base`) and each kind."""
from evsim.layers.base import BackwardRequest, Developing, InputGradFactors, Layer, LayerGrads, Parameter
from evsim.layers.conv import SpikingConv2d
from evsim.layers.linear import FACTORED_MAX_NEURONS, PATHS, LayerTrace, SparseLinear
from evsim.layers.pool import Pool2d, PoolTrace

# Layer kinds by the name checkpoints store (``l<k>_kind``); a file without it holds linear layers.
LAYER_KINDS = {SparseLinear.kind: SparseLinear, SpikingConv2d.kind: SpikingConv2d, Pool2d.kind: Pool2d}

__all__ = ["BackwardRequest", "Developing", "FACTORED_MAX_NEURONS", "InputGradFactors", "LAYER_KINDS", "Layer",
           "LayerGrads", "LayerTrace", "PATHS", "Parameter", "Pool2d", "PoolTrace", "SparseLinear", "SpikingConv2d"]
