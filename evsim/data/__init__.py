"""Dataset registry.

Each loader module registers a function ``load(options: DataOptions) -> Dataset``
under a name with :func:`register`; :func:`load_dataset` looks it up. Adding a
dataset is one module with one decorated function, imported below.
"""
from __future__ import annotations

from typing import Callable

from evsim.data.base import DataOptions, Dataset, Split, ENCODINGS
from evsim.errors import ConfigError

DATASETS: dict[str, Callable[[DataOptions], Dataset]] = {}


def register(name: str):
    """Decorator: register ``fn(options) -> Dataset`` under ``name``."""

    def wrap(fn):
        DATASETS[name] = fn
        return fn

    return wrap


def load_dataset(name: str, options: DataOptions | None = None) -> Dataset:
    """Load dataset ``name`` with ``options``.

    Raises
    ------
    ConfigError
        If ``name`` is not registered.
    """
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; choose one of: {', '.join(sorted(DATASETS))}")
    return DATASETS[name](options or DataOptions())


# Loader modules register themselves on import.
from evsim.data import cifar10, dvsgesture, mnist, nmnist  # noqa: E402,F401

__all__ = ["DATASETS", "DataOptions", "Dataset", "Split", "ENCODINGS", "register", "load_dataset"]
