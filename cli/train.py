"""``evsim train``: resolve the options, build a TrainConfig, train (or resume), report.

Each option's value comes from, in order: the command line, the ``--config`` TOML
file (keys are option names with underscores), the dataset's preset
(:mod:`evsim.presets`), the option's default.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import click
import numba
from click.core import ParameterSource

from evsim.checkpoint import CHECKPOINT_BEST, CHECKPOINT_LATEST, NETWORK_FILE
from evsim.cli.options import FiniteFloatRange, dataset_options
from evsim.config import CONFIG_TOML, config_from_options, read_config_file
from evsim.data.cache import resolve_cache_dir
from evsim.errors import ConfigError
from evsim.neuron import RESETS, SURROGATES
from evsim.optim import OPTIMIZERS, SCHEDULES
from evsim.presets import preset
from evsim.structure import STRUCTURES
from evsim.train import (AUTO, CHECKPOINT_POLICIES, TrainingInterrupted, parse_hidden, resume as resume_training,
                         saved_checkpoint_policy, train as run_training)

# Options that may accompany --resume: they change what is shown or kept, not what is
# computed, or (--epochs) extend the run.
RESUME_COMPATIBLE = ("progress", "epochs", "checkpoints")
# Files of a run that trained (a new run refuses a folder holding one). config.toml and
# config.json alone are a run that stopped before its first epoch ended: it restarts there.
RUN_RESULTS = ("metrics.jsonl", "summary.json", "training.png", NETWORK_FILE, CHECKPOINT_LATEST, CHECKPOINT_BEST)
# What the config file's values must be before click converts them (click would turn
# 5 into the path "5" or raise a TypeError for a list): (option type, accepted, wording).
FILE_VALUE_TYPES = (
    (click.types.IntParamType, (int,), "an integer"),
    (click.types.FloatParamType, (int, float), "a number"),
    (click.types.BoolParamType, (bool,), "true or false"),
    (click.Path, (str,), "a string path"),
)


def _hidden(ctx, param, value):
    if value is None:
        return value
    try:
        return parse_hidden(str(value))
    except ConfigError as exc:
        raise click.BadParameter(str(exc).split("; ")[0].replace("--hidden ", "")) from None


@click.command()
@dataset_options
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Training epochs [preset: 15].")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Samples per batch [preset: 100].")
@click.option("--hidden", callback=_hidden, default=None, help="Hidden layer sizes, e.g. 800 or 800,400 [preset].")
@click.option("--lr", type=FiniteFloatRange(min=0, min_open=True), default=None, help="Learning rate [preset: 1e-3].")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default=None, help="Optimizer [preset: adam].")
@click.option("--weight-decay", type=FiniteFloatRange(min=0), default=0.0, show_default=True)
@click.option("--schedule", type=click.Choice(SCHEDULES), default="constant", show_default=True,
              help="Learning-rate schedule: x0.1 every --step-epochs, or cosine with --warmup-epochs.")
@click.option("--step-epochs", type=click.IntRange(min=1), default=30, show_default=True)
@click.option("--warmup-epochs", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--loss", type=click.Choice(["mse", "ce"]), default=None, help="mse on rates (paper) or ce [preset: mse].")
@click.option("--reset", type=click.Choice(RESETS), default="hard", show_default=True, help="Membrane reset.")
@click.option("--surrogate", type=click.Choice(SURROGATES), default="rectangular", show_default=True)
@click.option("--path", type=click.Choice(["auto", "rows", "csr"]), default="auto", show_default=True,
              help="Propagation path (auto chooses per layer by synapse density).")
@click.option("--structure", type=click.Choice(STRUCTURES), default=None,
              help="Structural development: SD-SNN, none, or a baseline [preset: sdsnn].")
@click.option("--dev-interval", default=None,
              help="Development step every N batches, 'epoch' (the paper) or 'auto' (10 per epoch) [preset: auto].")
@click.option("--spine-steps", type=click.IntRange(min=1), default=18, show_default=True,
              help="SD-SNN K: consecutive steps before a dendritic-spine range changes (a preset may set it).")
@click.option("--regrow-steps", type=click.IntRange(min=1), default=12, show_default=True,
              help="SD-SNN R: consecutive qualifying steps before a synapse regrows (a preset may set it).")
@click.option("--rho-init", type=FiniteFloatRange(0, 100, max_open=True), default=None,
              help="SD-SNN initial pruning percentage [preset: 35 MNIST, 45 N-MNIST, 60 DVS-Gesture].")
@click.option("--rho-max", type=FiniteFloatRange(0, 100, max_open=True), default=65.0, show_default=True,
              help="SD-SNN cap on the pruning percentage (a preset may set it).")
@click.option("--target-sparsity", type=FiniteFloatRange(0, 1, min_open=True, max_open=True), default=0.5,
              show_default=True, help="Sparsity for the magnitude and set baselines.")
@click.option("--val-fraction", type=FiniteFloatRange(0, 1, max_open=True), default=None,
              help="Fraction of the training split held out (stratified, seeded) to choose checkpoint-best; "
                   "0 = none, best then chosen on the test split [preset: 0.1].")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--threads", type=click.IntRange(0, numba.config.NUMBA_NUM_THREADS), default=0, show_default=True,
              help="Numba threads (0 = all cores).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run folder [default: runs/<dataset>-<timestamp>].")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show progress bars.")
@click.option("--checkpoints", type=click.Choice(CHECKPOINT_POLICIES), default="all", show_default=True,
              help="Checkpoints to keep (89 MB each for the default N-MNIST run): all = checkpoint-latest.npz and "
                   "checkpoint-best.npz; latest = only the one --resume needs; none = only network.npz and the "
                   "metrics (the run cannot be resumed). With --resume: the run's own unless given.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="TOML file of options (keys: option names with underscores, e.g. batch_size = 100); "
                   "command-line options override it.")
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Continue the run in this folder exactly, from its checkpoint-latest.npz, with its own "
                   "configuration (only --progress/--no-progress may be given with it).")
@click.pass_context
def train(ctx, config_file, resume_dir, **opts):
    """Train a spiking network with BPTT on the event-driven engine.

    Unset options take the value from --config FILE, else the dataset's preset, else
    the default shown. Ctrl-C stops after the current batch and writes a checkpoint;
    continue with --resume RUN_DIR.
    """
    given = {name for name in opts if ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE}
    config = None
    if resume_dir is not None:
        _check_resumable(resume_dir, sorted(given - set(RESUME_COMPATIBLE)) + (["config"] if config_file else []))
        out, progress, checkpoints = resume_dir, opts["progress"], opts["checkpoints"]
    else:
        options = _resolve(opts, given, _file_options(ctx, config_file) if config_file else {})
        config = config_from_options(options)
        out, progress, checkpoints = Path(config.out), options["progress"], options["checkpoints"]
        if any((out / name).exists() for name in RUN_RESULTS):
            raise ConfigError(f"{out} already holds a training run; continue it with --resume {out}, "
                              "or choose another --out")
    try:
        if config is None:
            summary = resume_training(out, progress, click.echo, opts["epochs"] if "epochs" in given else None,
                                      checkpoints if "checkpoints" in given else None)
        else:
            summary = run_training(config, out, progress, click.echo, checkpoints)
    except TrainingInterrupted as exc:
        if (out / CHECKPOINT_LATEST).exists():
            click.echo(f"Interrupted: {exc}; the state is saved in {out / CHECKPOINT_LATEST}.\n"
                       f"Resume with: evsim train --resume {out}", err=True)
        else:
            click.echo(f"Interrupted: {exc}; no checkpoint kept (--checkpoints none): the run cannot be resumed",
                       err=True)
        ctx.exit(130)
    if summary.get("test_acc_at_best_val") is not None:
        chosen = (f"at the best validation epoch {summary['best_epoch']} ({100 * summary['val_acc_best']:.2f}% val): "
                  f"{100 * summary['test_acc_at_best_val']:.2f}%; best over epochs, paper-style: "
                  f"{100 * summary['best_test_acc']:.2f}%")
    else:
        chosen = f"best over epochs, paper-style: {100 * summary['best_test_acc']:.2f}%"
    click.echo(f"done: test accuracy {100 * summary['test_acc']:.2f}% ({chosen}), "
               f"{summary['synapses']} synapses (compression {100 * summary['compression']:.1f}%), "
               f"data {summary['data_source']}, {summary['wall_s']:.0f}s -> {out}")


def _check_resumable(run_dir: Path, conflicting: list[str]) -> None:
    """Refuse options that would change a resumed run, and folders without a checkpoint."""
    if conflicting:
        flags = ", ".join(f"--{name.replace('_', '-')}" for name in conflicting)
        raise ConfigError(f"--resume continues {run_dir} with its saved configuration; drop {flags} "
                          f"(to change it, start a new run: evsim train --config {run_dir / CONFIG_TOML} --out NEW_DIR)")
    if not (run_dir / CHECKPOINT_LATEST).exists() and saved_checkpoint_policy(run_dir) == "none":
        raise ConfigError(f"{run_dir} was trained with --checkpoints none: it has no checkpoint to resume from; "
                          f"start it again: evsim train --config {run_dir / CONFIG_TOML} --out NEW_DIR")
    if not (run_dir / CHECKPOINT_LATEST).exists() and (run_dir / CONFIG_TOML).exists():
        raise ConfigError(f"{run_dir} has no checkpoint yet (the run stopped before its first epoch ended); "
                          f"start it again: evsim train --config {run_dir / CONFIG_TOML} --out {run_dir}")


def _file_options(ctx: click.Context, path: Path) -> dict:
    """The config file's values, converted and checked exactly like the same options on the command line."""
    params = {param.name: param for param in ctx.command.params if param.name not in ("config_file", "resume_dir")}
    values = read_config_file(path, list(params))
    converted = {}
    for key, value in values.items():
        param, given = params[key], value
        if key == "hidden" and isinstance(value, (list, int)) and not isinstance(value, bool):
            value = ",".join(str(size) for size in (value if isinstance(value, list) else [value]))
        for kind, accepted, wording in FILE_VALUE_TYPES:
            # type(), not isinstance(): true is no integer (TOML values have exact types)
            if isinstance(param.type, kind) and type(value) not in accepted:
                raise ConfigError(f"{path}: {key} = {given!r}: expected {wording}")
        try:
            converted[key] = param.process_value(ctx, value)
            if key == "dev_interval":
                converted[key] = _dev_interval(converted[key])
        except click.BadParameter as exc:
            raise ConfigError(f"{path}: {key} = {given!r}: {exc.message}") from None
    return converted


def _resolve(opts: dict, given: set[str], from_file: dict) -> dict:
    """Every option's value: command line > config file > dataset preset > option default."""
    def pick(name: str, defaults: dict):
        if name in given:
            return opts[name]
        return from_file[name] if name in from_file else defaults.get(name, opts[name])

    defaults = preset(pick("dataset", {}))
    options = {name: pick(name, defaults) for name in opts}
    options["dev_interval"] = _dev_interval(options["dev_interval"])
    options["hidden"] = tuple(options["hidden"])
    if options["data_dir"] is None and os.environ.get("EVSIM_DATA"):
        options["data_dir"] = Path(os.environ["EVSIM_DATA"])
    if options["cache_dir"] is None:  # recorded as found ($EVSIM_CACHE or the default), so config.toml says it
        options["cache_dir"] = resolve_cache_dir(None)
    for key in ("data_dir", "cache_dir"):  # absolute: the saved run means the same data from any folder
        if options[key] is not None:
            options[key] = Path(options[key]).expanduser().resolve()
    if options["threads"] == 0:  # "all cores", recorded as the count: a repeat needs the same one to be exact
        options["threads"] = numba.config.NUMBA_NUM_THREADS
    options["out"] = options["out"] or Path("runs") / f"{options['dataset']}-{time.strftime('%Y%m%d-%H%M%S')}"
    return options


def _dev_interval(value: str | int) -> int | str:
    """'epoch' -> 0 (once per epoch); 'auto' stays (the trainer makes it 10 per epoch); a
    positive integer -> every N batches (a preset's 0 means per epoch)."""
    if isinstance(value, int) or value == AUTO:
        return value
    if value == "epoch":
        return 0
    if value.isdigit() and int(value) > 0:
        return int(value)
    raise click.BadParameter(f"must be 'epoch', 'auto' or a positive number of batches, got {value!r}",
                             param_hint="'--dev-interval'")
