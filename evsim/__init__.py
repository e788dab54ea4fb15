"""evsim: event-driven spiking neural network simulation and training on CPU.

The public API; ``docs/python-api.md`` walks through it.

Networks: :class:`Network` (``Network.from_spec("2312-800-10")``), :class:`SparseLinear`,
:class:`SynapseStore`, :class:`LIFParameters`; one training step is
``network.forward`` -> a loss (:func:`mse_rate`) -> ``network.backward`` ->
``optimizer.step(network.parameters(grads))``.

Data: :class:`Dataset` and :class:`Split` (your own arrays), :func:`load_dataset`,
:class:`DataOptions`, :func:`encode_events`.

Training: :class:`TrainConfig`, :class:`Trainer`, :func:`resume` (and ``evsim.train.train``,
which a name of its own here would hide the module behind),
:class:`Optimizer`; structure controllers :class:`SDSNN` (with :class:`SDSNNConfig`),
:class:`MagnitudePruning`, :class:`SET`.

Results: ``evsim.evaluate.evaluate``, :func:`profile` (exact operations and energy),
:func:`save_network` / :func:`load_network`.
"""
from evsim.checkpoint import load_network, save_network
from evsim.config import TrainConfig
from evsim.data import DataOptions, Dataset, Split, load_dataset
from evsim.data.encoding import encode_events
from evsim.energy import EnergyModel, EnergyReport
from evsim.errors import EvsimError
from evsim.evaluate import Evaluation, profile
from evsim.kernels.events import Events, StaticDrive, dense_to_events
from evsim.layers import BackwardRequest, Developing, Layer, LayerGrads, SparseLinear
from evsim.loss import cross_entropy, mse_rate
from evsim.network import Network
from evsim.neuron import LIFParameters
from evsim.optim import Optimizer
from evsim.structure import SET, SDSNN, MagnitudePruning, SDSNNConfig
from evsim.synapses import SynapseStore
from evsim.train import Trainer, resume

__all__ = [
    "BackwardRequest", "DataOptions", "Dataset", "Developing", "EnergyModel", "EnergyReport", "Evaluation", "Events",
    "EvsimError", "LIFParameters", "Layer", "LayerGrads", "MagnitudePruning", "Network", "Optimizer", "SDSNN",
    "SDSNNConfig", "SET", "SparseLinear", "Split", "StaticDrive", "SynapseStore", "TrainConfig", "Trainer",
    "cross_entropy", "dense_to_events", "encode_events", "load_dataset", "load_network", "mse_rate", "profile",
    "resume", "save_network",
]
