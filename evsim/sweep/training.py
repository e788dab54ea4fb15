"""Where a sweep meets ``evsim train``: the one module that imports the trainer and
its option resolution, so that a point means exactly what ``evsim train --config``
would make of the same table.

A point's options go through ``evsim train --config``'s own path
(:func:`evsim.config.options_from_text`, then :func:`evsim.config.resolve_options`:
file > preset > default), run on the point's table written as TOML: no second copy of
the option rules exists to drift from the first.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from evsim.config import (DEFAULTS, OPTIONS, TrainConfig, config_from_options, options_from_text, resolve_options,
                          to_toml)
from evsim.errors import ConfigError
from evsim.train import TrainingInterrupted, check_before_loading, resume, train

# Options of `evsim train` a sweep file may not set: the sweep chooses each point's
# folder, runs show no progress bars on workers, and keep every checkpoint (a point must
# be resumable, and its best checkpoint is part of its results).
SWEEP_OWNED = ("out", "progress", "checkpoints")


def option_names() -> list[str]:
    """The keys a sweep's ``[base]``, ``[axes]`` and ``[[tied]]`` tables may set."""
    return [name for name in DEFAULTS if name not in SWEEP_OWNED]


def option_kind(name: str) -> str:
    """How ``evsim train`` reads the option ``name``: ``int``, ``float``, ``choice``, ...
    (see :class:`evsim.config.Option`)."""
    return next(option.kind for option in OPTIONS if option.name == name)


def resolve(values: dict, out: Path, where: str) -> TrainConfig:
    """The :class:`TrainConfig` that ``evsim train --config F --out OUT`` makes of a
    config file F holding ``values``.

    Raises
    ------
    ConfigError
        If a value is of the wrong type or out of range, or the options together are
        no valid configuration; the message starts with ``where`` instead of F.
    """
    options = options_from_text(to_toml(values).encode(), where)
    try:
        return config_from_options(resolve_options({}, options), out)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def point_config(values: dict, out: Path, where: str) -> TrainConfig:
    """:func:`resolve`, then :func:`evsim.train.check_before_loading`: a point's configuration, refused
    up front for what its run would be refused for, whatever the data."""
    config = resolve(values, out, where)
    try:
        check_before_loading(config)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return config


def config_dict(config: TrainConfig) -> dict:
    """``config`` as plain data (what is sent to a worker and compared with a folder's ``config.json``)."""
    return config.to_dict()


def train_point(config: dict, run_dir: Path, echo: Callable[[str], None],
                stop_when: Callable[[], bool] | None = None) -> dict:
    """Train the run of ``config`` (see :func:`config_dict`) into ``run_dir``; its summary.
    ``stop_when``: see :func:`evsim.train.train`."""
    return train(TrainConfig.from_dict(config), run_dir, progress=False, echo=echo, stop_when=stop_when)


def resume_point(run_dir: Path, echo: Callable[[str], None], stop_when: Callable[[], bool] | None = None) -> dict:
    """Continue the run in ``run_dir`` from its latest checkpoint; its summary."""
    return resume(run_dir, progress=False, echo=echo, stop_when=stop_when)


# TrainConfig and TrainingInterrupted are the trainer's, for the sweep's other modules.
__all__ = ["SWEEP_OWNED", "TrainConfig", "TrainingInterrupted", "config_dict", "option_kind", "option_names",
           "point_config", "resolve", "resume_point", "train_point"]
