"""Dataset registry.

Each loader module registers a function ``load(options: DataOptions) -> Dataset``
under a name with :func:`register`, together with the check of its options and the
framing options (:data:`~evsim.data.base.FRAMING_OPTIONS`) it takes.
:func:`check_options` is the one place a dataset's options are checked: by
:func:`load_dataset` before anything loads, and by ``TrainConfig.validate`` before a
run starts. Adding a dataset is one module with one decorated function, imported below.
"""
from __future__ import annotations

from typing import Callable

from evsim.data.base import ENCODINGS, FRAMING_OPTIONS, DataOptions, Dataset, Split
from evsim.errors import ConfigError, DataError

DATASETS: dict[str, Callable[[DataOptions], Dataset]] = {}
_CHECKS: dict[str, Callable[[DataOptions], None] | None] = {}
_TAKES: dict[str, tuple[str, ...]] = {}


def register(name: str, check: Callable[[DataOptions], None] | None = None, takes: tuple[str, ...] = ()):
    """Decorator: register ``fn(options) -> Dataset`` under ``name``.

    Parameters
    ----------
    name : the dataset's name (``--dataset NAME``).
    check : ``check(options)`` raising :class:`ConfigError` for options this dataset
        refuses; run by :func:`check_options` before anything loads. It refuses the
        framing options the dataset does not take with :func:`refuse_framing_options`.
    takes : the :data:`~evsim.data.base.FRAMING_OPTIONS` the dataset uses; the messages
        of the others name the datasets that take them.
    """
    unknown = set(takes) - set(FRAMING_OPTIONS)
    if unknown:
        raise ValueError(f"takes: {', '.join(sorted(unknown))} not in FRAMING_OPTIONS {FRAMING_OPTIONS}")

    def wrap(fn):
        DATASETS[name] = fn
        _CHECKS[name] = check
        _TAKES[name] = tuple(takes)
        return fn

    return wrap


def check_options(name: str, options: DataOptions) -> None:
    """Refuse ``options`` that dataset ``name`` cannot use, before any data is loaded.

    Raises
    ------
    ConfigError
        If ``name`` is not registered, or the dataset's check refuses an option; one
        line naming the option and what to do.
    """
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; choose one of: {', '.join(sorted(DATASETS))}")
    check = _CHECKS[name]
    if check is not None:
        check(options)


def refuse_framing_options(name: str, options: DataOptions, hints: dict[str, str] | None = None) -> None:
    """Refuse each framing option set away from its :class:`DataOptions` default that
    dataset ``name`` does not take (for the loaders' checks).

    Parameters
    ----------
    hints : ``{option: text}`` appended in brackets to that option's message, e.g. what
        the dataset offers instead.

    Raises
    ------
    ConfigError
        ``--crop applies to nmnist only, not mnist; leave --crop unset, and crop out of a config file``.
    """
    for option in FRAMING_OPTIONS:
        if option in _TAKES.get(name, ()) or getattr(options, option) == getattr(DataOptions, option):
            continue
        flag = "--" + option.replace("_", "-")
        names = [d for d, takes in _TAKES.items() if option in takes]
        takers = (", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else "".join(names)) or "no dataset"
        hint = (hints or {}).get(option)
        # Named both ways: the value may come from a config file (a run's config.toml).
        raise ConfigError(f"{flag} applies to {takers} only, not {name}; leave {flag} unset"
                          + (f" ({hint})" if hint else "") + f", and {option} out of a config file")


def load_dataset(name: str, options: DataOptions | None = None) -> Dataset:
    """Load dataset ``name`` with ``options``, after :func:`check_options`.

    Raises
    ------
    ConfigError
        If ``name`` is not registered or an option does not apply to it.
    DataError
        If the loader's data is unreadable, or a split holds no samples.
    """
    options = options or DataOptions()
    check_options(name, options)
    dataset = DATASETS[name](options)
    for split in ("train", "test"):  # before anything trains on it or a run folder is written
        if len(getattr(dataset, split)) == 0:
            raise DataError(f"{name}: the {split} split holds no samples ({dataset.meta.get('root') or 'no folder'}); "
                            "check the data files")
    return dataset


# Loader modules register themselves on import (in this order, which the messages use).
from evsim.data import mnist, nmnist, cifar10, dvsgesture, tonic_sets  # noqa: E402,F401,I001

__all__ = ["DATASETS", "DataOptions", "Dataset", "Split", "ENCODINGS", "register", "check_options",
           "refuse_framing_options", "load_dataset"]
