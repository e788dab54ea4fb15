"""Training configuration files (TOML) and the flat option view of a :class:`TrainConfig`.

A config file is one flat TOML table whose keys are ``evsim train``'s option names
written with underscores, and whose values are what the option takes::

    dataset = "nmnist"
    epochs = 12
    hidden = [800]          # or "800,400"
    dev_interval = 4        # batches; or "epoch", or "auto" (10 per epoch, the default)
    lr = 1e-3

Precedence, per option: the command line, then the file, then the dataset's preset
(:mod:`evsim.presets`), then the option's default. A run folder's ``config.toml``
holds every option resolved this way (all but ``out`` and ``progress``), so
``evsim train --config RUN_DIR/config.toml`` repeats the run.
"""
from __future__ import annotations

import difflib
import json
import math
import tomllib
from pathlib import Path

from evsim.data import DataOptions
from evsim.errors import ConfigError
from evsim.neuron import LIFParameters
from evsim.structure import SDSNNConfig
from evsim.train import TrainConfig

CONFIG_TOML = "config.toml"


def read_config_file(path: Path, valid_keys: list[str]) -> dict:
    """The key -> value table of a TOML config file.

    Raises
    ------
    ConfigError
        If the file is missing or not TOML, holds a nested table, or holds a key
        outside ``valid_keys`` (the message names the key and lists the valid ones).
    """
    path = Path(path)
    try:
        values = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    for key, value in values.items():
        if key not in valid_keys:
            close = difflib.get_close_matches(key.replace("-", "_"), valid_keys, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{path}: unknown key {key!r}{hint}; valid keys: {', '.join(sorted(valid_keys))}")
        if isinstance(value, dict):
            raise ConfigError(f"{path}: {key!r} is a table; config files are one flat table of option values")
    return values


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return repr(value) if math.isfinite(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    # A JSON string literal is a valid TOML basic string (same escapes).
    return json.dumps(str(value))


def to_toml(values: dict, header: str = "") -> str:
    """A flat TOML table of scalars and lists (``None`` values are left out: TOML has no null)."""
    lines = [f"# {line}" for line in header.splitlines()]
    lines += [f"{key} = {_toml_value(value)}" for key, value in values.items() if value is not None]
    return "\n".join(lines) + "\n"


def options_from_config(config: TrainConfig) -> dict:
    """The ``evsim train`` options (underscore names) that give ``config``, without ``out``."""
    data = config.data
    return {
        "dataset": config.dataset,
        "data_dir": None if data.data_dir is None else str(data.data_dir),
        "cache_dir": None if data.cache_dir is None else str(data.cache_dir),
        "source": data.source,
        "time_steps": config.time_steps,
        "encoding": data.encoding,
        "slicing": data.slicing,
        "crop": data.crop,
        "denoise_us": data.denoise_us,
        "downsample": data.downsample,
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "hidden": list(config.hidden),
        "lr": config.lr,
        "optimizer": config.optimizer,
        "weight_decay": config.weight_decay,
        "schedule": config.schedule,
        "step_epochs": config.step_epochs,
        "warmup_epochs": config.warmup_epochs,
        "loss": config.loss,
        "reset": config.lif.reset,
        "surrogate": config.lif.surrogate,
        "path": config.path,
        "structure": config.structure,
        "dev_interval": "epoch" if config.dev_interval == 0 else config.dev_interval,
        "spine_steps": config.sdsnn.spine_steps,
        "regrow_steps": config.sdsnn.regrow_steps,
        "rho_init": config.sdsnn.rho_init,
        "rho_max": config.sdsnn.rho_max,
        "target_sparsity": config.target_sparsity,
        "val_fraction": config.val_fraction,
        "seed": config.seed,
        "threads": config.threads,
    }


def config_from_options(options: dict) -> TrainConfig:
    """The :class:`TrainConfig` of fully resolved, already converted options.

    ``hidden`` is a tuple of sizes, ``dev_interval`` an integer (0 = once per
    epoch) or ``"auto"``, ``data_dir``/``cache_dir`` paths or None. The data seed stays fixed at 0:
    the emulated dataset must not change (and be re-made) per training seed.

    Raises
    ------
    ConfigError
        If the options do not make a valid configuration (checked before any data is loaded).
    """
    data = DataOptions(data_dir=options["data_dir"], cache_dir=options["cache_dir"], source=options["source"],
                       time_steps=options["time_steps"], encoding=options["encoding"], slicing=options["slicing"],
                       crop=options["crop"], denoise_us=options["denoise_us"], downsample=options["downsample"])
    return TrainConfig(
        dataset=options["dataset"], data=data, epochs=options["epochs"], batch_size=options["batch_size"],
        time_steps=options["time_steps"], hidden=tuple(options["hidden"]), lr=options["lr"],
        optimizer=options["optimizer"], weight_decay=options["weight_decay"], schedule=options["schedule"],
        step_epochs=options["step_epochs"], warmup_epochs=options["warmup_epochs"], loss=options["loss"],
        lif=LIFParameters(reset=options["reset"], surrogate=options["surrogate"]), path=options["path"],
        seed=options["seed"], threads=options["threads"], structure=options["structure"],
        dev_interval=options["dev_interval"], target_sparsity=options["target_sparsity"], out=str(options["out"]),
        val_fraction=options["val_fraction"],
        sdsnn=SDSNNConfig(spine_steps=options["spine_steps"], regrow_steps=options["regrow_steps"],
                          rho_init=options["rho_init"], rho_max=options["rho_max"]),
    ).validate()


def config_toml(config: TrainConfig) -> str:
    """The text of a run folder's ``config.toml``."""
    header = ("evsim train configuration, every option resolved (command line > --config file > preset > default).\n"
              "Repeat this run: evsim train --config config.toml --out NEW_RUN_DIR")
    return to_toml(options_from_config(config), header)
