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
:func:`record` (spikes and membrane potentials, a :class:`Recording`),
:func:`save_network` / :func:`load_network`.

Each name is imported on first use (a module-level ``__getattr__``), so that
``import evsim.cli.main`` starts fast, and can handle Ctrl-C, before NumPy and Numba load.
"""
import importlib

# name -> the module that defines it
_LAZY = {
    "load_network": "evsim.checkpoint", "save_network": "evsim.checkpoint",
    "TrainConfig": "evsim.config",
    "DataOptions": "evsim.data", "Dataset": "evsim.data", "Split": "evsim.data", "load_dataset": "evsim.data",
    "encode_events": "evsim.data.encoding",
    "EnergyModel": "evsim.energy", "EnergyReport": "evsim.energy",
    "EvsimError": "evsim.errors",
    "Evaluation": "evsim.evaluate", "profile": "evsim.evaluate",
    "Recording": "evsim.inspect", "record": "evsim.inspect",
    "Events": "evsim.kernels.events", "StaticDrive": "evsim.kernels.events", "dense_to_events": "evsim.kernels.events",
    "BackwardRequest": "evsim.layers", "Developing": "evsim.layers", "Layer": "evsim.layers",
    "LayerGrads": "evsim.layers", "SparseLinear": "evsim.layers",
    "cross_entropy": "evsim.loss", "mse_rate": "evsim.loss",
    "Network": "evsim.network",
    "LIFParameters": "evsim.neuron",
    "Optimizer": "evsim.optim",
    "SET": "evsim.structure", "SDSNN": "evsim.structure", "MagnitudePruning": "evsim.structure",
    "SDSNNConfig": "evsim.structure",
    "SynapseStore": "evsim.synapses",
    "Trainer": "evsim.train", "resume": "evsim.train",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # looked up once
        return value
    try:  # a submodule not imported yet (evsim.train, evsim.evaluate, ...)
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{name}":
            raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
