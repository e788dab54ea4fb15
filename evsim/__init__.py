"""evsim: event-driven spiking neural network simulation and training on CPU.

``evsim.profile`` counts operations (:mod:`evsim.energy`); ``evsim.record`` records
spikes and membrane potentials (:mod:`evsim.inspect`). They are imported on first use,
so that ``import evsim.cli.main`` starts fast (and can handle Ctrl-C) before NumPy and
Numba load.
"""
_LAZY = {"EnergyModel": "evsim.energy", "EnergyReport": "evsim.energy", "profile": "evsim.energy",
         "Recording": "evsim.inspect", "record": "evsim.inspect"}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'evsim' has no attribute {name!r}")
