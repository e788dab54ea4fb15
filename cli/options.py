"""Click options shared by several commands, and the option -> DataOptions bridge."""
from __future__ import annotations

import os
from pathlib import Path

import click

from evsim.data import DATASETS, DataOptions
from evsim.parse import Float32, NonEmptyPath, StrictInt


# Every float option is read as a float32 (the numbers training computes with).
FiniteFloatRange = Float32


def dataset_options(fn):
    """Options that choose and shape a dataset (``--dataset``, ``--data-dir``, ...)."""
    decorators = [
        click.option("--dataset", type=click.Choice(sorted(DATASETS)), default="nmnist"
                     if "nmnist" in DATASETS else "mnist", show_default=True, help="Dataset name."),
        click.option("--data-dir", type=NonEmptyPath(file_okay=False, path_type=Path), default=None,
                     help="Folder with real data files (default: $EVSIM_DATA)."),
        click.option("--source", type=click.Choice(["auto", "real", "emulated"]), default="auto",
                     show_default=True, help="Force real data or the offline emulation."),
        click.option("--time-steps", type=StrictInt(min=1), default=None,
                     help="Simulation steps / frames T (default: the dataset preset)."),
        click.option("--encoding", type=click.Choice(["rate", "direct", "frames"]), default=None,
                     help="Input encoding for static images (default: the dataset's)."),
        click.option("--slicing", type=click.Choice(["events", "time"]), default="events",
                     show_default=True, help="Event framing: equal event number or equal time bins."),
        click.option("--crop/--no-crop", default=False, show_default=True,
                     help="Crop N-MNIST 34x34 to 32x32."),
        click.option("--denoise-us", type=StrictInt(min=0), default=0, show_default=True,
                     help="tonic Denoise filter time in microseconds (0 = off)."),
        click.option("--downsample", type=StrictInt(min=0), default=0, show_default=True,
                     help="DVS-Gesture spatial size after downsampling (0 = native 128)."),
        click.option("--cache-dir", type=NonEmptyPath(file_okay=False, path_type=Path), default=None,
                     help="Cache for framed and emulated data (default: $EVSIM_CACHE or ~/.cache/evsim)."),
    ]
    for decorator in reversed(decorators):
        fn = decorator(fn)
    return fn


def option_names(decorator) -> tuple[str, ...]:
    """The names click gives the parameters that ``decorator`` adds to a command, in order."""
    def probe(**kwargs):
        """Stands for a command."""

    return tuple(param.name for param in click.command()(decorator(probe)).params)


# The parameters of dataset_options, as click names them (e.g. "data_dir").
DATASET_OPTION_NAMES = option_names(dataset_options)


def data_options_from(kwargs: dict, time_steps: int, seed: int = 0) -> DataOptions:
    """Build :class:`DataOptions` from parsed click options (pops the data keys)."""
    data_dir = kwargs.pop("data_dir") or (Path(os.environ["EVSIM_DATA"]) if os.environ.get("EVSIM_DATA") else None)
    kwargs.pop("time_steps", None)
    return DataOptions(
        data_dir=data_dir,
        cache_dir=kwargs.pop("cache_dir"),
        source=kwargs.pop("source"),
        time_steps=time_steps,
        encoding=kwargs.pop("encoding"),
        slicing=kwargs.pop("slicing"),
        crop=kwargs.pop("crop"),
        denoise_us=kwargs.pop("denoise_us"),
        downsample=kwargs.pop("downsample"),
        seed=seed,
    )
