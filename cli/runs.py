"""Reading run folders written by ``evsim train`` (shared by profile, eval and export)."""
from __future__ import annotations

import json
from pathlib import Path

import click

from evsim.checkpoint import CHECKPOINT_BEST, CHECKPOINT_LATEST, NETWORK_FILE, load_checkpoint, load_network
from evsim.data import Dataset, load_dataset
from evsim.errors import CheckpointError, ConfigError
from evsim.network import Network
from evsim.train import TrainConfig

CHECKPOINTS = {"latest": CHECKPOINT_LATEST, "best": CHECKPOINT_BEST}


def read_config(run_dir: Path) -> dict:
    """The run's ``config.json``."""
    path = run_dir / "config.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found; is {run_dir} a run folder written by evsim train?") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: corrupt JSON ({exc.msg} at line {exc.lineno})") from None


def load_run_dataset(config: TrainConfig) -> Dataset:
    """The run's dataset, announcing an emulated or substitute source."""
    dataset = load_dataset(config.dataset, config.data)
    if dataset.meta.get("notice"):
        click.echo(f"NOTE: {dataset.meta['notice']}")
    return dataset


def load_run_network(run_dir: Path, checkpoint: str) -> tuple[Network, TrainConfig, str]:
    """The network of checkpoint ``"latest"`` or ``"best"``, the run's configuration, and
    what was loaded (``"checkpoint-best.npz, epoch 7/12"``).

    A run written before checkpoints existed has only ``network.npz``: it stands in
    for ``latest``.

    Raises
    ------
    CheckpointError
        If the folder has no such checkpoint, or it is corrupt.
    """
    path = run_dir / CHECKPOINTS[checkpoint]
    if path.is_file():
        state = load_checkpoint(path)
        config = TrainConfig.from_dict(state.config)
        where = f"epoch {state.epoch}/{config.epochs}" if state.in_epoch is None else \
            f"stopped inside epoch {state.epoch + 1}/{config.epochs}"
        return state.network, config, f"{path.name}, {where}"
    if checkpoint == "latest" and (run_dir / NETWORK_FILE).is_file():
        return load_network(run_dir / NETWORK_FILE), TrainConfig.from_dict(read_config(run_dir)), NETWORK_FILE
    raise CheckpointError(f"{path}: no checkpoint here; is {run_dir} a run folder written by evsim train "
                          "(it writes checkpoints at the end of every epoch)?")
