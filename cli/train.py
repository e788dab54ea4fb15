"""``evsim train``: resolve the options, build a TrainConfig, train (or resume), report.

Each option's value comes from, in order: the command line, the ``--config`` TOML
file (keys are option names with underscores), the dataset's preset
(:mod:`evsim.presets`), the option's default.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import signal
import threading
from pathlib import Path

import click
import numba
from click.core import ParameterSource

from evsim.checkpoint import CHECKPOINT_BEST, CHECKPOINT_LATEST
from evsim.cli.options import NonEmptyPath, declared_options
from evsim.cli.runs import typed
from evsim.config import (CONFIG_TOML, DEFAULTS, config_from_options, default_run_dir, options_from_file,
                          paper_arch, resolve_options)
from evsim.presets import PAPER_ARCHS
from evsim.compression import format_report
from evsim.data.cache import resolve_cache_dir
from evsim.errors import ConfigError
from evsim.runlock import run_lock
from evsim.train import (TrainingInterrupted, check_new_run_dir, resume as resume_training,
                         saved_checkpoint_policy, train as run_training, trained_results)

# Options that may accompany --resume: they change what is shown or kept, not what is
# computed, (--epochs) extend the run, or (--data-dir) say where its data folder is now.
RESUME_COMPATIBLE = ("progress", "epochs", "checkpoints", "data_dir")


@click.command()
@functools.partial(declared_options, default_from_declaration=False)
@click.option("--config", "config_file", type=NonEmptyPath(dir_okay=False, path_type=Path), default=None,
              help="TOML file of options (keys: option names with underscores, e.g. batch_size = 100); "
                   "command-line options override it.")
@click.option("--resume", "resume_dir", type=NonEmptyPath(file_okay=False, path_type=Path), default=None,
              help="Continue the run in this folder exactly, from its checkpoint-latest.npz, with its own "
                   "configuration (only --progress/--no-progress, --checkpoints, --epochs to extend a run, and "
                   "--data-dir where its data folder moved, may be given with it).")
@click.pass_context
def train(ctx, config_file, resume_dir, **opts):
    """Train a spiking network with BPTT on the event-driven engine.

    Unset options take the value from --config FILE, else the dataset's preset, else
    the default shown. Ctrl-C (or SIGTERM) stops after the current batch and writes a checkpoint;
    continue with --resume RUN_DIR (with --epochs N to extend a finished run).
    """
    given = {name for name in opts if ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE}
    config = None
    if resume_dir is not None:
        with run_lock(resume_dir):  # a run still writing the folder is named as such, whatever it holds yet
            _check_resumable(resume_dir, sorted(given - set(RESUME_COMPATIBLE)) + (["config"] if config_file else []))
        out, progress = resume_dir, opts["progress"] is not False
        checkpoints = opts["checkpoints"] if "checkpoints" in given else None  # None: the run's own
    else:
        options = resolve_options({name: opts[name] for name in given if name in DEFAULTS},
                                  options_from_file(config_file, given) if config_file else {})
        if options["cache_dir"] is None:  # recorded as found (the default), so config.toml says it
            options["cache_dir"] = resolve_cache_dir(None).resolve()
        if options["threads"] == 0:  # "all cores", recorded as the count: a repeat needs the same one to be exact
            options["threads"] = numba.config.NUMBA_NUM_THREADS
        out, progress = options["out"] or default_run_dir(options["dataset"]), options["progress"]
        checkpoints = options["checkpoints"]
        config = config_from_options(options, out)
        if options["out"] is not None:  # a default folder is claimed new (claim_run_dir)
            with run_lock(out):  # a run training there now is named as such, not as one to --resume
                check_new_run_dir(out)
        if options["dataset"] == "dvsgesture" and config.arch == paper_arch("dvsgesture", options["downsample"]) \
                and config.arch != PAPER_ARCHS["dvsgesture"]:
            click.echo(f"NOTE: --arch paper with --downsample {options['downsample']} is {config.arch}, the paper's "
                       f"layers on the smaller frames, not the paper's network ({PAPER_ARCHS['dvsgesture']})")
    claimed = None
    # Until training installs its own handlers (and after it restores them), SIGTERM ends the
    # command like Ctrl-C does: through the cleanup below, not with the folder it claimed left.
    previous = signal.signal(signal.SIGTERM, _terminated) if threading.current_thread() is threading.main_thread() \
        else None
    try:
        if config is None:
            summary = resume_training(out, progress, click.echo, opts["epochs"] if "epochs" in given else None,
                                      checkpoints, typed(ctx, "data_dir"))
        else:
            if options["out"] is None:
                out = claimed = claim_run_dir(out)
                config = dataclasses.replace(config, out=str(out))
            summary = run_training(config, out, progress, click.echo, checkpoints)
    except TrainingInterrupted as exc:
        stopped = "Interrupted" if exc.signum == signal.SIGINT else f"Stopped by {signal.Signals(exc.signum).name}"
        if saved_checkpoint_policy(out) == "none" and (out / CHECKPOINT_LATEST).exists():
            # That checkpoint holds the run's own epoch count: the hint repeats --epochs to extend it.
            epochs = f" --epochs {opts['epochs']}" if config is None and "epochs" in given else ""
            click.echo(f"{stopped}: {exc}; not saved (--checkpoints none), but {out / CHECKPOINT_LATEST} still "
                       f"holds the state of an earlier session.\nResume from there with: evsim train --resume {out}"
                       f"{epochs}", err=True)
        elif (out / CHECKPOINT_LATEST).exists():
            click.echo(f"{stopped}: {exc}; the state is saved in {out / CHECKPOINT_LATEST}.\n"
                       f"Resume with: evsim train --resume {out}", err=True)
        else:
            click.echo(f"{stopped}: {exc}; no checkpoint kept (--checkpoints none): the run cannot be resumed",
                       err=True)
        ctx.exit(128 + exc.signum)  # the shell's code for death by that signal: 130, 143
    except Terminated:
        click.echo("Stopped by SIGTERM outside an epoch" + (f"; resume with: evsim train --resume {out}" if
                                                            (out / CHECKPOINT_LATEST).exists() else ""), err=True)
        ctx.exit(128 + signal.SIGTERM)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if claimed is not None:
            _remove_if_empty(claimed)  # a run that failed before writing anything leaves no folder
    if summary.get("test_acc_at_best_val") is not None:
        chosen = (f"at the best validation epoch {summary['best_epoch']} ({100 * summary['val_acc_best']:.2f}% val): "
                  f"{100 * summary['test_acc_at_best_val']:.2f}%; best over epochs, paper-style: "
                  f"{100 * summary['best_test_acc']:.2f}%")
    else:
        chosen = f"best over epochs, paper-style: {100 * summary['best_test_acc']:.2f}%"
    if summary.get("layers"):
        click.echo(format_report(summary["layers"], summary["compression"]))
    if summary.get("sop_reduction") is not None:
        macs = ("" if summary.get("mac_reduction") is None else
                f", {100 * summary['mac_reduction']:.1f}% of the MACs (the first layer's, on analog input)")
        click.echo(f"on the test set, pruning saves {100 * summary['sop_reduction']:.1f}% of the SOPs{macs} and "
                   f"{100 * summary['energy_reduction']:.1f}% of the energy of the same activity unpruned")
    click.echo(f"done: test accuracy {100 * summary['test_acc']:.2f}% ({chosen}), "
               f"{summary['synapses']} synapses (compression {100 * summary['compression']:.1f}%), "
               f"data {summary['data_source']}, {summary['wall_s']:.0f}s -> {out}")


def claim_run_dir(base: Path) -> Path:
    """Make and return a new folder ``base``, or ``base-2``, ``base-3``, ... when taken: mkdir
    is atomic, so runs started in the same second (same default --out) never share one."""
    base.parent.mkdir(parents=True, exist_ok=True)
    for n in itertools.count(1):
        path = base if n == 1 else base.with_name(f"{base.name}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue


class Terminated(Exception):
    """SIGTERM arrived outside a training epoch."""


def _terminated(signum, frame):
    raise Terminated()


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()  # refuses a folder that holds anything
    except OSError:
        pass


def _check_resumable(run_dir: Path, conflicting: list[str]) -> None:
    """Refuse options that would change a resumed run, and folders without a checkpoint."""
    if conflicting:
        flags = ", ".join(f"--{name.replace('_', '-')}" for name in conflicting)
        raise ConfigError(f"--resume continues {run_dir} with its saved configuration; drop {flags} "
                          f"(to change it, start a new run: evsim train --config {run_dir / CONFIG_TOML} --out NEW_DIR)")
    if not (run_dir / CHECKPOINT_LATEST).exists() and saved_checkpoint_policy(run_dir) == "none":
        raise ConfigError(f"{run_dir} was trained with --checkpoints none: it has no checkpoint to resume from; "
                          f"start it again: evsim train --config {run_dir / CONFIG_TOML} --out NEW_DIR")
    if (run_dir / CHECKPOINT_LATEST).exists() or not (run_dir / CONFIG_TOML).exists():
        return
    results = trained_results(run_dir)
    if results:  # a new run there would be refused: the folder holds a trained run's files
        best = (f"copy {CHECKPOINT_BEST} to {CHECKPOINT_LATEST} to resume from the best epoch, or "
                if CHECKPOINT_BEST in results else "")
        raise ConfigError(f"{run_dir} has no {CHECKPOINT_LATEST} but holds a trained run ({', '.join(results)}); "
                          f"restore {CHECKPOINT_LATEST}, {best}or repeat the run in a new folder: evsim train "
                          f"--config {run_dir / CONFIG_TOML} --out NEW_DIR")
    raise ConfigError(f"{run_dir} has no checkpoint yet (the run stopped before its first epoch ended); "
                      f"start it again: evsim train --config {run_dir / CONFIG_TOML} --out {run_dir} (with a lower "
                      "--lr if its training diverged)")

