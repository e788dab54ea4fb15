"""Training configuration: the one declaration of every option, :class:`TrainConfig`,
and TOML config files.

Every option of ``evsim train`` is declared once, in :data:`OPTIONS`: its name (the
TOML key; ``--name-with-dashes`` on the command line), how its value is read and
checked, its default, its help, and where it lives in :class:`TrainConfig`. The click
options, the TOML keys, the presets (:mod:`evsim.presets`, which override defaults per
dataset), :class:`TrainConfig`'s defaults and its validation all derive from it, so a
value is refused with the same message from the command line, a config file or Python.

A config file is one flat TOML table whose keys are option names::

    dataset = "nmnist"
    epochs = 12
    hidden = [800]          # or "800,400"
    dev_interval = 4        # batches; or "epoch", or "auto" (10 per epoch, the default)
    lr = 1e-3

Precedence, per option: the command line, then the file, then the dataset's preset,
then the option's default. A run folder's ``config.toml`` holds every option resolved
this way, so ``evsim train --config RUN_DIR/config.toml`` repeats the run.
"""
from __future__ import annotations

import dataclasses
import datetime
import difflib
import json
import math
import os
import re
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numba
import numpy as np

from evsim.data import DATASETS, DataOptions, check_options
from evsim.data.base import ENCODINGS, SOURCES, read_from
from evsim.errors import ConfigError
from evsim.kernels.events import INT32_MAX
from evsim.loss import LOSSES, get_loss
from evsim.neuron import RESETS, SURROGATES, LIFParameters
from evsim.optim import OPTIMIZERS, SCHEDULES, Optimizer, Schedule
from evsim.network import parse_develop, parse_spec, spec_shapes
from evsim.presets import PAPER_ARCHS, PRESETS
from evsim.readers import read_small_file
from evsim.structure import STRUCTURES, SDSNNConfig

CONFIG_TOML = "config.toml"
PAPER = "paper"
AUTO = "auto"
AUTO_STEPS_PER_EPOCH = 10
FLOAT32_MAX = float(np.finfo(np.float32).max)
# Which checkpoints a run folder keeps (``--checkpoints``): they do not change the result,
# so they are not part of TrainConfig. "all": checkpoint-latest.npz and checkpoint-best.npz
# (a hard link when the same epoch); "latest": only the file --resume needs; "none": no
# checkpoint at all, only network.npz and the metrics (the run cannot be resumed).
CHECKPOINT_POLICIES = ("all", "latest", "none")


@dataclass(frozen=True)
class Option:
    """One option of ``evsim train``.

    Attributes
    ----------
    name : the TOML key (``--name-with-dashes`` on the command line).
    kind : how a value is read: ``int``, ``float``, ``choice``, ``bool``, ``path``,
        ``hidden`` (layer sizes) or ``dev_interval``.
    default : the value when neither the command line, a file nor a preset sets it.
    help : one sentence for ``--help``.
    target : where the value lives in :class:`TrainConfig` (``"epochs"``,
        ``"data.slicing"``, ``"lif.reset"``, ``"sdsnn.rho_init"``).
    low, high, low_open : the range of a number.
    choices : the values of a ``choice``.
    data : also an option of every command that loads a dataset.
    """

    name: str
    kind: str
    default: Any
    help: str
    target: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    choices: tuple = ()
    data: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def convert(self, value: Any) -> Any:
        """``value`` (from the command line as text, from TOML or Python typed) as this
        option's value.

        Raises
        ------
        ConfigError
            Naming the option, the value and what it must be.
        """
        try:
            return _CONVERTERS[self.kind](self, value)
        except ConfigError as exc:
            shown = value if isinstance(value, str) and value.strip() else repr(value)  # '' shows as such
            said = self.kind == "arch" and isinstance(value, str) and repr(value.strip()) in str(exc)  # quoted there
            message, _, why = str(exc).partition("; ")  # a reason after "; " comes after the value
            raise ConfigError(f"{self.flag} {message}" + ("" if said else f", got {shown}")
                              + (f"; {why}" if why else "")) from None


# Text: ASCII digits only (str.isdigit also takes '²' and int() takes '٣'; float() takes
# '1_000', 'infinity' and non-ASCII digits). 'nan' and 'inf' pass, to be refused as not finite.
_INTEGER_TEXT = re.compile(r"[+-]?[0-9]+")
_NUMBER_TEXT = re.compile(r"[+-]?(([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|nan|inf|infinity)", re.IGNORECASE)


def _integer(option: Option, value) -> int:
    if isinstance(value, str):
        if not _INTEGER_TEXT.fullmatch(value.strip()):
            raise ConfigError("must be a whole number written with the digits 0-9")
        value = int(value.strip())
    if isinstance(value, (bool, float)) or not isinstance(value, (int, np.integer)):
        raise ConfigError("must be a whole number")
    value = int(value)
    if abs(value) > INT32_MAX:
        raise ConfigError(f"must be at most {INT32_MAX} in size, the largest count evsim's int32 counters hold")
    low = -INT32_MAX if option.low is None else option.low
    high = INT32_MAX if option.high is None else option.high
    if value < low:
        raise ConfigError(f"must be >= {low}" if option.high in (None, math.inf) else f"must be in {low}..{high}")
    if value > high:
        why = (f"; this machine has {high} (NUMBA_NUM_THREADS), and a run made with more cores needs as many to be "
               f"repeated bit for bit (give --threads {high} to run it here, not bit for bit)"
               if option.name == "threads" else "")
        raise ConfigError((f"must be <= {high}" if option.low is None else f"must be in {low}..{high}") + why)
    return value


def _number(option: Option, value) -> float:
    if isinstance(value, str):
        if not _NUMBER_TEXT.fullmatch(value.strip()):
            raise ConfigError("must be a number written with the digits 0-9 (such as 0.001 or 1e-3)")
        value = float(value.strip())
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ConfigError("must be a number")
    value = float(value)
    if not math.isfinite(value):
        raise ConfigError("must be a finite number")
    if abs(value) > FLOAT32_MAX:
        raise ConfigError(f"must be a finite number that float32 holds; it is beyond float32's range "
                          f"(+-{FLOAT32_MAX:.3g}), in which training computes")
    if value != 0 and np.float32(value) == 0:
        raise ConfigError("must be 0 or a number float32 holds; it is 0 in float32, in which training computes "
                          "(give a larger value)")
    if option.low is not None and (value < option.low or (option.low_open and value == option.low)):
        raise ConfigError(f"must be {'>' if option.low_open else '>='} {option.low:g}")
    if option.high is not None and value >= option.high:
        raise ConfigError(f"must be < {option.high:g}")
    return value


def _choice(option: Option, value):
    if value is None and option.default is None:  # the dataset's own (encoding)
        return None
    if value not in option.choices:
        close = difflib.get_close_matches(str(value), [str(c) for c in option.choices], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"must be one of {', '.join(map(str, option.choices))}{hint}")
    return value


def _boolean(option: Option, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ConfigError("must be true or false")
    return bool(value)


def _path(option: Option, value) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, (str, Path)):
        raise ConfigError("must be a path")
    if str(value).strip() == "":
        raise ConfigError("must not be an empty path, which would silently mean the current folder (give . for "
                          "that)")
    try:
        str(value).encode("utf-8")
    except UnicodeEncodeError:  # a name of bytes that are no UTF-8: config.toml could not hold it
        raise ConfigError("must be a path of UTF-8 characters; rename it") from None
    return Path(value)


def parse_hidden(value) -> tuple[int, ...]:
    """``"800"``, ``"800,400"``, ``800``, ``[800, 400]`` or ``(800,)`` -> ``(800,)`` / ``(800, 400)``."""
    if isinstance(value, str):
        parts = value.split(",")
        if not all(re.fullmatch(r"\s*[0-9]+\s*", part) for part in parts):
            raise ConfigError("must be comma-separated positive integers like 800 or 800,400")
        value = [int(part) for part in parts]
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value or \
            not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 1 <= v <= INT32_MAX
                    for v in value):
        raise ConfigError(f"must be positive layer sizes up to {INT32_MAX} like 800 or 800,400")
    return tuple(int(v) for v in value)


def parse_dev_interval(value) -> int | str:
    """``"epoch"`` -> 0 (once per epoch); ``"auto"`` stays (the trainer makes it 10 per
    epoch); a positive number of batches (text of ASCII digits, or an integer) stays."""
    if value == "epoch":
        return 0
    if value == AUTO:
        return AUTO
    if isinstance(value, str) and re.fullmatch(r"[0-9]+", value.strip()):
        value = int(value)
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and 1 <= value <= INT32_MAX:
        return int(value)
    raise ConfigError(f"must be 'epoch', 'auto' or a positive number of batches (1 to {INT32_MAX}, digits 0-9)")


def parse_arch(value) -> str:
    """An architecture string (checked for its notation and that its layers chain; whether
    it fits the data is checked when the network is built), ``"paper"``, or ``""`` (the
    network of --hidden)."""
    if not isinstance(value, str):
        raise ConfigError("must be an architecture string like 2x32x32-15C3-AP2-300-10")
    value = value.strip()
    if value.lower() == PAPER:  # PAPER, Paper: no architecture string could mean anything else
        return PAPER
    if re.search(r"\s", value):  # the layers are one word: a space inside one is a typo, not a separator
        raise ConfigError(f"architecture {value!r} has spaces in it; write it without them: "
                          f"{''.join(value.split())}")
    if value:
        spec_shapes(value)
    return value


_CONVERTERS = {
    "int": _integer, "float": _number, "choice": _choice, "bool": _boolean, "path": _path,
    "hidden": lambda option, value: parse_hidden(value),
    "dev_interval": lambda option, value: parse_dev_interval(value),
    "arch": lambda option, value: parse_arch(value),
    "develop": lambda option, value: parse_develop(value),
}

OPTIONS: tuple[Option, ...] = (
    # What data, and how it becomes input (also options of eval, profile and data).
    Option("dataset", "choice", "nmnist", "Dataset name.", "dataset", choices=tuple(DATASETS), data=True),
    Option("data_dir", "path", None, "Folder with the real data files [default: $EVSIM_DATA].", "data.data_dir",
           data=True),
    Option("source", "choice", "auto", "auto: real data if found, else the offline emulation; real or emulated "
           "force one.", "data.source", choices=SOURCES, data=True),
    Option("time_steps", "int", 20, "Simulation steps T (frames, for event data).", "time_steps", low=1,
           high=math.inf, data=True),
    Option("encoding", "choice", None, "How samples become input spikes: rate (Bernoulli spikes of static "
           "images), direct (analog values at every step) or frames (event recordings) [default: the dataset's].",
           "data.encoding", choices=ENCODINGS, data=True),
    Option("slicing", "choice", "events", "Event framing: equal event number or equal time bins.", "data.slicing",
           choices=("events", "time"), data=True),
    Option("crop", "bool", False, "Crop N-MNIST's 34x34 sensor to 32x32 [default: on where the network "
           "takes 32x32 maps, as the paper's does; off otherwise].", "data.crop", data=True),
    Option("denoise_us", "int", 0, "tonic Denoise filter time in microseconds (0 = off).", "data.denoise_us", low=0,
           data=True),
    Option("downsample", "int", 0, "Spatial size after downsampling, of the sensor's longer side (dvsgesture, "
           "cifar10dvs, folder; both axes scaled by one factor; 0 = the sensor's own, 128 for the first two).",
           "data.downsample", low=0, high=128, data=True),
    Option("cache_dir", "path", None, "Cache for framed and emulated data [default: $EVSIM_CACHE or "
           "~/.cache/evsim].", "data.cache_dir", data=True),
    # The network and its training.
    Option("epochs", "int", 15, "Training epochs.", "epochs", low=1),
    Option("batch_size", "int", 100, "Samples per batch.", "batch_size", low=1),
    Option("eval_batch_size", "int", 100, "Samples per forward pass when the validation and test splits are "
           "evaluated after each epoch: memory and speed (rate-coded inputs draw their spikes batch by batch, so "
           "their logged accuracies change slightly with it).", "eval_batch_size", low=1),
    Option("hidden", "hidden", (800,), "Hidden layer sizes, e.g. 800 or 800,400 (a network of fully connected "
           "layers <inputs>-<hidden>-<classes>, when --arch is not given).", "hidden"),
    Option("arch", "arch", "", "Network in the paper's notation, e.g. 2x32x32-15C3-AP2-40C3-AP2-300-10: the input "
           "CxHxW (or a size), <filters>C<kernel> spiking convolutions (s<stride> and p<pad> may follow, as in "
           "15C3s2p0; the padding defaults to K//2, so an even kernel grows the map by one: 1x28x28-6C4 gives "
           "29x29), AP<k>/MP<k> pooling, integers fully connected; or 'paper' for the dataset's network in the "
           "SD-SNN paper (dvsgesture with --downsample S: its layers on 2xSxS frames, a smaller network than the "
           "paper's); --hidden alone means the fully connected network.", "arch"),
    Option("lr", "float", 1e-3, "Learning rate.", "lr", low=0.0, low_open=True),
    Option("optimizer", "choice", "adam", "Optimizer.", "optimizer", choices=OPTIMIZERS),
    Option("weight_decay", "float", 0.0, "L2 weight decay (decoupled for adamw).", "weight_decay", low=0.0),
    Option("schedule", "choice", "constant", "Learning-rate schedule: x0.1 every --step-epochs (step), or cosine "
           "decay after --warmup-epochs (cosine).", "schedule", choices=SCHEDULES),
    Option("step_epochs", "int", 30, "Epochs between x0.1 steps of the step schedule.", "step_epochs", low=1),
    Option("warmup_epochs", "int", 0, "Epochs of linear warm-up before the cosine schedule.", "warmup_epochs",
           low=0),
    Option("loss", "choice", "mse", "mse on output rates (the paper) or ce (cross-entropy).", "loss",
           choices=LOSSES),
    Option("reset", "choice", "hard", "Membrane reset after a spike.", "lif.reset", choices=RESETS),
    Option("surrogate", "choice", "rectangular", "Surrogate of the spike's derivative in BPTT.", "lif.surrogate",
           choices=SURROGATES),
    Option("path", "choice", "auto", "Propagation path (auto chooses per layer by synapse density).", "path",
           choices=("auto", "rows", "csr")),
    # Structural development.
    Option("structure", "choice", "sdsnn", "Structural development: SD-SNN, none, or a baseline (magnitude "
           "pruning, SET).", "structure", choices=STRUCTURES),
    Option("dev_interval", "dev_interval", AUTO, "Development step every N batches, once per epoch ('epoch', "
           "the paper) or 10 per epoch ('auto').", "dev_interval"),
    Option("develop", "develop", "auto", "Layers structural development edits: auto (the authors' choice: every "
           "convolution but the first, and the hidden fully connected layers), fc (the hidden fully connected "
           "layers), or names like conv2,fc1 (conv<n>, fc<n>: the n-th convolution, fully connected layer).",
           "develop"),
    Option("spine_steps", "int", 18, "SD-SNN K: consecutive steps before a dendritic-spine range changes.",
           "sdsnn.spine_steps", low=1, high=1_000_000),
    Option("regrow_steps", "int", 12, "SD-SNN R: consecutive qualifying steps before a synapse regrows.",
           "sdsnn.regrow_steps", low=1, high=1_000_000),
    Option("rho_init", "float", 45.0, "SD-SNN initial pruning percentage.", "sdsnn.rho_init", low=0.0, high=100.0),
    Option("rho_max", "float", 65.0, "SD-SNN cap on the pruning percentage.", "sdsnn.rho_max", low=0.0,
           high=100.0),
    Option("filter_rho_init", "float", 5.0, "SD-SNN initial filter-pruning percentage of convolutions.",
           "sdsnn.filter_rho_init", low=0.0, high=100.0),
    Option("kernel_regrow_steps", "int", 18, "SD-SNN: a convolution's kernel regrows after more than this many "
           "consecutive qualifying steps.", "sdsnn.kernel_regrow_steps", low=0, high=1_000_000),
    Option("constrain_output", "bool", True, "SD-SNN holds the output layer's weights in their dendritic-spine "
           "ranges (it is never pruned).", "sdsnn.constrain_output"),
    Option("excess_per_epoch", "bool", True, "SD-SNN widens a dendritic-spine range by its weight's mean "
           "excess per epoch (as with the paper's one step per epoch), not per development interval.",
           "sdsnn.excess_per_epoch"),
    Option("target_sparsity", "float", 0.5, "Sparsity the magnitude and set baselines prune to.", "target_sparsity",
           low=0.0, low_open=True, high=1.0),
    Option("val_fraction", "float", 0.1, "Fraction of the training split held out (stratified, seeded) to choose "
           "checkpoint-best; 0 = none, best then chosen on the test split.", "val_fraction", low=0.0, high=1.0),
    Option("seed", "int", 0, "Seed of the initial weights, the sample order and rate coding.", "seed", low=0),
    Option("threads", "int", 0, "Numba threads (0 = all cores).", "threads", low=0,
           high=numba.config.NUMBA_NUM_THREADS),
    # Where the run goes and what it shows: not part of the configuration.
    Option("out", "path", None, "Run folder [default: runs/<dataset>-<timestamp>].", ""),
    Option("progress", "bool", True, "Show progress bars.", ""),
    Option("checkpoints", "choice", "all", "Checkpoints to keep (22-37 MB each for the default N-MNIST run): all = "
           "checkpoint-latest.npz and checkpoint-best.npz; latest = only the one --resume needs; none = only "
           "network.npz and the metrics (the run cannot be resumed). With --resume: the run's own unless given.", "",
           choices=CHECKPOINT_POLICIES),
)
OPTION_BY_NAME = {option.name: option for option in OPTIONS}
# The options a TrainConfig holds (all but out, progress and checkpoints).
CONFIG_OPTIONS = tuple(option for option in OPTIONS if option.target)
OPTION_NAME_BY_TARGET = {option.target: option.name for option in CONFIG_OPTIONS}
DEFAULTS = {option.name: option.default for option in OPTIONS}
for _dataset, _values in PRESETS.items():
    _unknown = sorted(set(_values) - set(DEFAULTS))
    if _unknown:
        raise ConfigError(f"preset {_dataset!r} sets {_unknown[0]!r}, which is not an option")


def preset(dataset: str) -> dict:
    """Every option's default for ``dataset``: the declared defaults with its preset over them.

    Raises
    ------
    ConfigError
        If ``dataset`` is no dataset evsim knows (naming the closest).
    """
    dataset = OPTION_BY_NAME["dataset"].convert(dataset)
    values = {**DEFAULTS, **PRESETS.get(dataset, {}), "dataset": dataset}
    return {name: OPTION_BY_NAME[name].convert(value) for name, value in values.items()}


def auto_dev_interval(batches_per_epoch: int) -> int:
    """Batches between development steps for ``dev_interval = "auto"``: 10 steps per
    epoch (at batch size 100 with the 10 % validation hold-out: every 3 of the 36 batches
    of the emulated N-MNIST's 4,000 training recordings, every 54 of the real 60,000's
    540), so that SD-SNN's schedule (pruning from step 2K = 36, the
    regeneration percentile at its cap by step 76) runs in the first 8 epochs of any
    dataset, and the structure then trains for the rest of the run."""
    return max(1, batches_per_epoch // AUTO_STEPS_PER_EPOCH)

@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (saved as ``config.json``)."""

    dataset: str = DEFAULTS["dataset"]
    data: DataOptions = field(default_factory=lambda: DataOptions(
        source=DEFAULTS["source"], time_steps=DEFAULTS["time_steps"], encoding=DEFAULTS["encoding"],
        slicing=DEFAULTS["slicing"], crop=DEFAULTS["crop"], denoise_us=DEFAULTS["denoise_us"],
        downsample=DEFAULTS["downsample"]))
    epochs: int = DEFAULTS["epochs"]
    batch_size: int = DEFAULTS["batch_size"]
    time_steps: int = DEFAULTS["time_steps"]
    hidden: tuple[int, ...] = DEFAULTS["hidden"]
    arch: str = DEFAULTS["arch"]
    lr: float = DEFAULTS["lr"]
    optimizer: str = DEFAULTS["optimizer"]
    weight_decay: float = DEFAULTS["weight_decay"]
    schedule: str = DEFAULTS["schedule"]
    step_epochs: int = DEFAULTS["step_epochs"]
    warmup_epochs: int = DEFAULTS["warmup_epochs"]
    loss: str = DEFAULTS["loss"]
    lif: LIFParameters = LIFParameters(reset=DEFAULTS["reset"], surrogate=DEFAULTS["surrogate"])
    path: str = DEFAULTS["path"]
    seed: int = DEFAULTS["seed"]
    threads: int = DEFAULTS["threads"]
    # Evaluation in batches of the default training batch (100), so that it reuses the
    # maps the buffer pool (evsim.aligned) keeps for training; larger batches need maps
    # the pool does not hold (conv1's spikes for 500 samples: 154 MB), faulted in afresh
    # at every evaluation (0.7 s of a default-run epoch's 9 s; benchmarks/RESULTS.md).
    eval_batch_size: int = DEFAULTS["eval_batch_size"]
    structure: str = DEFAULTS["structure"]
    dev_interval: int | str = DEFAULTS["dev_interval"]
    develop: str = DEFAULTS["develop"]
    sdsnn: SDSNNConfig = SDSNNConfig(spine_steps=DEFAULTS["spine_steps"], regrow_steps=DEFAULTS["regrow_steps"],
                                     rho_init=DEFAULTS["rho_init"], rho_max=DEFAULTS["rho_max"],
                                     filter_rho_init=DEFAULTS["filter_rho_init"],
                                     kernel_regrow_steps=DEFAULTS["kernel_regrow_steps"],
                                     constrain_output=DEFAULTS["constrain_output"],
                                     excess_per_epoch=DEFAULTS["excess_per_epoch"])
    target_sparsity: float = DEFAULTS["target_sparsity"]
    val_fraction: float = DEFAULTS["val_fraction"]
    out: str = ""

    def validate(self) -> "TrainConfig":
        """``self``, once every option's value passes its declaration's check (the same
        message as on the command line) and the options fit together.

        Raises
        ------
        ConfigError
            Naming the option and the fix.
        """
        for option in OPTIONS:
            # A dataset held in memory (Trainer(config, dataset)) has its own name; 0 stands for
            # 'epoch' once resolved; out, progress and checkpoints are not part of the configuration.
            if option.target and option.name != "dataset":
                value = _get(self, option.target)
                converted = _converted(option, value)
                scalar = option.kind in ("int", "float", "bool") and (isinstance(value, str) or converted != value)
                sizes = option.kind == "hidden" and (not isinstance(value, (tuple, list)) or tuple(value) != converted)
                if scalar or sizes:
                    why = (": text is read only from the command line and config files" if isinstance(value, str)
                           else " (a tuple of layer sizes)" if sizes else "")
                    raise ConfigError(f"{option.target} must be given as {converted!r}, not {value!r}{why}")
        if self.eval_batch_size < 1:
            raise ConfigError(f"eval_batch_size must be >= 1, got {self.eval_batch_size}")
        if self.dataset in DATASETS:  # a dataset held in memory (Trainer(config, dataset)) has its own name
            check_options(self.dataset, self.data)
        get_loss(self.loss)
        Optimizer(self.optimizer, self.lr, weight_decay=self.weight_decay)
        Schedule(self.schedule)
        if self.schedule == "cosine" and self.warmup_epochs >= self.epochs:
            raise ConfigError(f"--warmup-epochs {self.warmup_epochs} is not shorter than --epochs {self.epochs}: the "
                              "learning rate would never reach --lr; give fewer warm-up epochs")
        self.lif.validate()
        return self

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["data"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in out["data"].items()}
        out["lif"] = self.lif._asdict()
        out["sdsnn"] = dataclasses.asdict(self.sdsnn)
        out["hidden"] = list(self.hidden)
        return out

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """Inverse of :meth:`to_dict` (extra keys written beside it, like ``data_source``, are ignored).

        Raises
        ------
        ConfigError
            If a nested section has an unknown or missing field.
        """
        fields = {f.name for f in dataclasses.fields(cls)}
        values = with_added_keys(values)
        top = {k: v for k, v in values.items() if k in fields}
        try:
            top["data"] = DataOptions(**{k: (Path(v) if k in ("data_dir", "cache_dir") and v is not None else v)
                                         for k, v in values["data"].items()})
            top["lif"] = LIFParameters(**values["lif"])
            top["sdsnn"] = SDSNNConfig(**values["sdsnn"])
            top["hidden"] = tuple(values["hidden"])
            if isinstance(top.get("threads"), int) and not isinstance(top["threads"], bool):
                # A run saved on a machine with more cores runs here on the cores there are.
                top["threads"] = min(top["threads"], numba.config.NUMBA_NUM_THREADS)
            return cls(**top)
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"saved configuration does not match this evsim ({exc})") from None



# Options added after runs were saved without them, with the value that means what those
# runs did: a run saved before validation splits existed trained on the whole training split;
# one saved before --arch existed is the network of --hidden.
ADDED_KEYS = {"val_fraction": 0.0, "arch": "", "develop": "fc"}
# The same for the sdsnn section: filter and kernel constants (no saved run developed a
# convolution before them), no output constraint, ranges widened per interval.
ADDED_SDSNN_KEYS = {"filter_rho_init": 5.0, "filter_rho_decay": 5.0, "kernel_q_base": 65.0, "kernel_regrow_steps": 18,
                    "constrain_output": False, "excess_per_epoch": False}


def with_added_keys(values: dict) -> dict:
    """A saved configuration ``values`` with every key of :data:`ADDED_KEYS` (and of
    :data:`ADDED_SDSNN_KEYS` in its sdsnn section) it lacks."""
    values = {**ADDED_KEYS, **values}
    if isinstance(values.get("sdsnn"), dict):
        values["sdsnn"] = {**ADDED_SDSNN_KEYS, **values["sdsnn"]}
    return values


def _converted(option: Option, value):
    """``option.convert(value)``, for a value that may already be converted: a
    dev_interval of 0 is 'epoch' resolved (as a user's value, 0 is refused)."""
    return 0 if option.kind == "dev_interval" and value == 0 else option.convert(value)


def _get(config: TrainConfig, target: str):
    """The value at ``target`` (``"epochs"``, ``"data.slicing"``, ...) of ``config``."""
    value = config
    for part in target.split("."):
        value = getattr(value, part)
    return value


def options_from_config(config: TrainConfig) -> dict:
    """The ``evsim train`` options (underscore names) that give ``config``."""
    options = {}
    for option in CONFIG_OPTIONS:
        value = _get(config, option.target)
        if option.kind == "path":
            value = None if value is None else str(value)
        elif option.kind == "hidden":
            value = list(value)
        elif option.kind == "dev_interval" and value == 0:
            value = "epoch"
        options[option.name] = value
    return options


def config_from_options(options: dict, out: str | Path = "") -> TrainConfig:
    """The :class:`TrainConfig` of ``options`` (every option, converted), checked before any
    data is loaded. The data seed stays fixed at 0: the emulated dataset must not change
    (and be re-made) per training seed.

    Raises
    ------
    ConfigError
        If an option is missing or the options do not make a valid configuration.
    """
    missing = sorted({option.name for option in CONFIG_OPTIONS} - set(options))
    if missing:
        raise ConfigError(f"option {missing[0]!r} has no value")
    values = {option.name: _converted(option, options[option.name]) for option in CONFIG_OPTIONS}
    sections: dict[str, dict] = {"data": {"time_steps": values["time_steps"]}, "lif": {}, "sdsnn": {}}
    top = {}
    for option in CONFIG_OPTIONS:
        section, _, key = option.target.rpartition(".")
        (sections[section] if section else top)[key] = values[option.name]
    return TrainConfig(**top, data=DataOptions(**sections["data"]), lif=LIFParameters(**sections["lif"]),
                       sdsnn=SDSNNConfig(**sections["sdsnn"]), out=str(out)).validate()


# What a TOML value must be for each kind of option (TOML values have exact types:
# true is no integer, 5 is no path).
_TOML_TYPES = {"int": ((int,), "an integer"), "float": ((int, float), "a number"), "bool": ((bool,), "true or false"),
               "path": ((str,), "a string path"), "choice": ((str,), "a string"),
               "hidden": ((int, list, str), "a list of sizes like [800, 400]"),
               "dev_interval": ((int, str), "a number of batches, \"epoch\" or \"auto\""),
               "arch": ((str,), "a string like \"2x32x32-15C3-AP2-300-10\""),
               "develop": ((str,), "a string like \"auto\" or \"conv2,fc1\"")}


def options_from_file(path: Path, overridden=()) -> dict:
    """The options a TOML config file sets, converted and checked exactly like the same
    options on the command line; those ``overridden`` (given on the command line, which
    beats the file) are left out once their TOML type is checked: ``threads = 16`` from a
    bigger machine runs here with ``--threads 2``.

    Raises
    ------
    ConfigError
        Naming the file, the key and what its value must be.
    """
    return options_from_text(read_small_file(Path(path), "TOML config", ConfigError), path, overridden)


def options_from_text(text: bytes, where, overridden=()) -> dict:
    """:func:`options_from_file` of a config file's bytes ``text``; its messages start with
    ``where`` (the file, or what holds the table: a sweep's point)."""
    values = config_table(text, where, list(DEFAULTS))
    if not values:  # a wrong or truncated file, not a wish for every default (a sweep refuses it too)
        raise ConfigError(f"{where}: sets no option (empty, or only comments); give the options to run in it, or "
                          "leave --config out to train with the defaults")
    converted = {}
    for key, value in values.items():
        option = OPTION_BY_NAME[key]
        accepted, wording = _TOML_TYPES[option.kind]
        if type(value) not in accepted:  # a broken file, whatever overrides it
            raise ConfigError(f"{where}: {key} = {value!r}: expected {wording}")
        if key in overridden:
            continue
        try:
            converted[key] = option.convert(value)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {key} = {value!r}: {str(exc).removeprefix(option.flag + ' ')}") from None
    return converted


def resolve_options(given: dict, from_file: dict) -> dict:
    """Every option's value: ``given`` (the command line) > ``from_file`` > the dataset's
    preset > the declared default; data folders made absolute (the saved run means the
    same data from any folder), ``$EVSIM_DATA`` and ``$EVSIM_CACHE`` taken in."""
    dataset = given.get("dataset", from_file.get("dataset", DEFAULTS["dataset"]))
    options = {**preset(dataset), **from_file, **given}
    # A $EVSIM_DATA that is no folder stays with the loader, which names it in its refusal.
    if options["data_dir"] is None and os.environ.get("EVSIM_DATA") and Path(os.environ["EVSIM_DATA"]).is_dir():
        options["data_dir"] = Path(os.environ["EVSIM_DATA"])
    if options["cache_dir"] is None and os.environ.get("EVSIM_CACHE"):
        options["cache_dir"] = Path(os.environ["EVSIM_CACHE"])
    for key in ("data_dir", "cache_dir"):
        if options[key] is not None:
            try:
                options[key] = Path(options[key]).expanduser().resolve()
            except RuntimeError:  # Python 3.11 raises this, not an OSError, for a loop of symbolic links
                raise ConfigError(f"{key} {options[key]}: a loop of symbolic links; fix or remove the links, or "
                                  "choose another folder") from None
    if options["out"] is not None:  # ~ means the home folder in every path option, as in a shell
        options["out"] = Path(options["out"]).expanduser()
    chosen = {**from_file, **given}
    if "hidden" in given and given.get("arch"):
        raise ConfigError("--arch and --hidden both give the network; give one of them")
    if "hidden" in given or ("hidden" in chosen and "arch" not in chosen):
        # --hidden means the fully connected network, whatever the file's or the preset's --arch.
        options["arch"] = ""
    if options["arch"] == PAPER:
        if dataset not in PAPER_ARCHS:
            example = ("INPUTS-256-CLASSES (its samples are one-dimensional: no convolution)"
                       if dataset == "shd" else "CxHxW-15C3-AP2-40C3-AP2-300-CLASSES")  # shd: 700 channels
            raise ConfigError(f"--arch paper: the SD-SNN paper has no network for {dataset}; give an architecture "
                              f"for its input (e.g. --arch {example}, with the 'arch input' and classes that evsim "
                              f"data info --dataset {dataset} prints) or --hidden")
        options["arch"] = paper_arch(dataset, options["downsample"])
    if options["arch"] and "crop" not in chosen:
        options["crop"] = crops_by_default(dataset, options["arch"])
    refuse_unused(given, options)
    return options


def paper_arch(dataset: str, downsample: int = 0) -> str:
    """``--arch paper`` on ``dataset``: the paper's network; on DVS-Gesture downsampled to
    ``downsample``, its layers over the smaller frames (another network: its first fully
    connected layer takes fewer inputs)."""
    arch = PAPER_ARCHS[dataset]
    if dataset == "dvsgesture" and downsample:
        arch = arch.replace("2x128x128", f"2x{int(downsample)}x{int(downsample)}", 1)
    return arch


def crops_by_default(dataset: str, arch: str) -> bool:
    """``--crop``'s default for the network ``arch`` on ``dataset``: N-MNIST's sensor is
    34x34, and a network that takes 32x32 maps (the paper's) takes the frames cropped."""
    return dataset == "nmnist" and parse_spec(arch)[0] in ((2, 32, 32), (2 * 32 * 32,))


# Options that only one structure, schedule or kind of network reads: given for another,
# they would be recorded as if they had mattered. Each: the option -> (the setting it
# needs, the test on the resolved options). The SD-SNN constants (targets sdsnn.*) need
# --structure sdsnn.
_DEVELOPING = "--structure sdsnn, magnitude or set"
NEEDS = {
    "target_sparsity": ("--structure magnitude or set", lambda o: o["structure"] in ("magnitude", "set")),
    "develop": (_DEVELOPING, lambda o: o["structure"] != "none"),
    "dev_interval": (_DEVELOPING, lambda o: o["structure"] != "none"),
    "step_epochs": ("--schedule step", lambda o: o["schedule"] == "step"),
    "warmup_epochs": ("--schedule cosine", lambda o: o["schedule"] == "cosine"),
    "filter_rho_init": ("a network with convolutions", lambda o: _has_convolutions(o["arch"])),
    "kernel_regrow_steps": ("a network with convolutions", lambda o: _has_convolutions(o["arch"])),
}
_SDSNN_ONLY = ("--structure sdsnn", lambda o: o["structure"] == "sdsnn")


def _has_convolutions(arch: str) -> bool:
    return bool(arch) and any(isinstance(part, tuple) and part[0] == "conv" for part in parse_spec(arch)[1:])


def _setting(needs: str, options: dict) -> str:
    """What the run has instead of ``needs``: ``--structure none``, ``--schedule constant``, the network."""
    for name in ("structure", "schedule"):
        if needs.startswith(f"--{name} "):
            return f"--{name} {options[name]}"
    return (f"--arch {options['arch']}" if options["arch"] else
            f"--hidden {','.join(map(str, options['hidden']))}") + ", no convolution"


def _rules(name: str) -> list[tuple]:
    """The settings the option (or configuration field: ``"sdsnn.alpha"``) ``name`` needs to
    be read, as ``(what, test on the resolved options)``."""
    option = OPTION_BY_NAME.get(name)
    target = option.target if option is not None else name
    return ([_SDSNN_ONLY] if target.startswith("sdsnn.") else []) + ([NEEDS[name]] if name in NEEDS else [])


def option_read(name: str, options: dict) -> bool:
    """Whether a run with the resolved ``options`` reads the option (or configuration
    field) ``name``: ``target_sparsity`` is read by the magnitude and SET baselines only."""
    return all(test(options) for _, test in _rules(name))


def refuse_unused(given: dict, options: dict) -> None:
    """Refuse an option given on the command line that the run it resolves to does not read
    (``--rho-init`` with ``--structure none``, ``--step-epochs`` without the step schedule).
    Files and presets set every option, so only what was typed is checked for use.

    Raises
    ------
    ConfigError
        Naming the option, what reads it, and what this run has.
    """
    for name in given:
        option = OPTION_BY_NAME[name]
        flag = option.flag if option.kind != "bool" else f"{option.flag}/--no-{option.flag[2:]}"
        for needs, test in _rules(name):
            if not test(options):
                raise ConfigError(f"{flag} applies only with {needs}, and this run has "
                                  f"{_setting(needs, options)}; leave {flag} out")


def default_run_dir(dataset: str) -> Path:
    """``runs/<dataset>-<timestamp>``."""
    return Path("runs") / f"{dataset}-{time.strftime('%Y%m%d-%H%M%S')}"


def read_config_file(path: Path, valid_keys: list[str]) -> dict:
    """The key -> value table of a TOML config file.

    Raises
    ------
    ConfigError
        If the file is missing, is not a regular file of at most 1 MiB (a FIFO, a device),
        is not TOML, holds a nested table, or holds a key
        outside ``valid_keys`` (the message names the key and lists the valid ones).
    """
    return config_table(read_small_file(Path(path), "TOML config", ConfigError), path, valid_keys)


def config_table(text: bytes, where, valid_keys: list[str]) -> dict:
    """:func:`read_config_file` of a config file's bytes ``text``; its messages start with ``where``."""
    try:
        values = tomllib.loads(text.decode("utf-8-sig"))  # a byte-order mark, invisible in editors, is dropped
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where}: not a text file ({exc.reason}); a config file is UTF-8 TOML") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML ({exc})") from None
    except RecursionError:
        raise ConfigError(f"{where}: not valid TOML for evsim (values nested too deeply); config files are one "
                          "flat table of option values") from None
    for key, value in values.items():
        if key not in valid_keys:
            close = difflib.get_close_matches(key.replace("-", "_"), valid_keys, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{where}: unknown key {key!r}{hint}; valid keys: {', '.join(sorted(valid_keys))}")
        if isinstance(value, dict):
            raise ConfigError(f"{where}: {key!r} is a table; config files are one flat table of option values")
        if isinstance(value, list) and any(isinstance(item, (list, dict)) for item in value):
            raise ConfigError(f"{where}: {key!r} holds nested arrays or tables; an option's value is a number, a "
                              "string, true/false or a flat list")
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
    if isinstance(value, (datetime.date, datetime.time)):  # a TOML date stays one: no path, no number
        return value.isoformat()
    # A JSON string literal is a valid TOML basic string (same escapes), written as UTF-8:
    # JSON's \ud83d\ude00 escapes of characters beyond the BMP are no TOML.
    return json.dumps(str(value), ensure_ascii=False)


def to_toml(values: dict, header: str = "") -> str:
    """A flat TOML table of scalars and lists (``None`` values are left out: TOML has no null)."""
    lines = [f"# {line}" for line in header.splitlines()]
    lines += [f"{key} = {_toml_value(value)}" for key, value in values.items() if value is not None]
    return "\n".join(lines) + "\n"


def config_toml(config: TrainConfig, data_source: str | None = None, data_root: str | None = None,
                data_encoding: str | None = None) -> str:
    """The text of a run folder's ``config.toml``; with ``data_source``, the header says
    what data the run trained on (``source = "auto"`` alone does not). ``data_root``:
    the folder its files came from, where the dataset has one. ``data_encoding``: the
    encoding the dataset chose where ``--encoding`` was left to it, said in a comment."""
    header = ("evsim train configuration, every option resolved (command line > --config file > preset > default).\n"
              + (f"This run trained on data_source = {data_source}"
                 + ("" if data_source == "real" else " (not the real dataset)") + ".\n" if data_source else "")
              + "Repeat this run: evsim train --config config.toml --out NEW_RUN_DIR")
    options = options_from_config(config)
    from_data_dir = read_from(data_root, config.data.data_dir)
    if data_source is not None and options["source"] == "auto" and not (data_source != "real" and from_data_dir):
        # "auto" would take whatever data a repeat finds ($EVSIM_DATA, a download): the data
        # this run found is the source it names. Emulated recordings in --data-dir (evsim
        # data emulate-nmnist) stay "auto": "emulated" would be evsim's own, other data.
        options["source"] = "real" if data_source == "real" else "emulated"
    text = to_toml(options, header)
    if options["encoding"] is None and data_encoding is not None:
        # a comment: set, it would make the repeat another run (config.json's encoding
        # null, the dataset's own, is part of a run's identity in sweeps and comparisons)
        text += f"# encoding = {_toml_value(data_encoding)}  (the dataset's own: --encoding was not given)\n"
    return text
