"""``evsim train``: parse options, build a TrainConfig, train, report."""
from __future__ import annotations

import time
from pathlib import Path

import click

from evsim.cli.options import data_options_from, dataset_options
from evsim.errors import ConfigError
from evsim.neuron import RESETS, SURROGATES, LIFParameters
from evsim.optim import OPTIMIZERS, SCHEDULES
from evsim.presets import preset
from evsim.structure import STRUCTURES, SDSNNConfig
from evsim.train import TrainConfig, parse_hidden, train as run_training


def _hidden(ctx, param, value):
    if value is None:
        return None
    try:
        return parse_hidden(value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc).split("; ")[0].replace("--hidden ", "")) from None


@click.command()
@dataset_options
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Training epochs [preset: 15].")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Samples per batch [preset: 100].")
@click.option("--hidden", callback=_hidden, default=None, help="Hidden layer sizes, e.g. 800 or 800,400 [preset].")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None, help="Learning rate [preset: 1e-3].")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default=None, help="Optimizer [preset: adam].")
@click.option("--weight-decay", type=click.FloatRange(min=0), default=0.0, show_default=True)
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
              help="Development step every N batches, or 'epoch' (the paper) [preset].")
@click.option("--spine-steps", "spine_steps", type=click.IntRange(min=1), default=18, show_default=True,
              help="SD-SNN K: consecutive steps before a dendritic-spine range changes.")
@click.option("--regrow-steps", type=click.IntRange(min=1), default=12, show_default=True,
              help="SD-SNN R: consecutive qualifying steps before a synapse regrows.")
@click.option("--rho-init", type=click.FloatRange(0, 100, max_open=True), default=None,
              help="SD-SNN initial pruning percentage [preset: 35 MNIST, 45 N-MNIST, 60 DVS-Gesture].")
@click.option("--rho-max", type=click.FloatRange(0, 100, max_open=True), default=None,
              help="SD-SNN cap on the pruning percentage [preset: 65].")
@click.option("--target-sparsity", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.5,
              show_default=True, help="Sparsity for the magnitude and set baselines.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True, help="Numba threads (0 = all cores).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run folder [default: runs/<dataset>-<timestamp>].")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show progress bars.")
def train(**opts):
    """Train a spiking network with BPTT on the event-driven engine."""
    defaults = preset(opts["dataset"])
    pick = {key: defaults[key] if opts.get(key) is None else opts[key]
            for key in ("epochs", "batch_size", "time_steps", "hidden", "lr", "optimizer", "loss")}
    # The data seed stays fixed: the emulated dataset must not change (and be re-made) per training seed.
    data = data_options_from(opts, pick["time_steps"])
    structure = opts["structure"] or defaults["structure"]
    dev_interval = _dev_interval(opts["dev_interval"], defaults["dev_interval"])
    sdsnn = SDSNNConfig(spine_steps=opts["spine_steps"], regrow_steps=opts["regrow_steps"],
                        rho_init=opts["rho_init"] if opts["rho_init"] is not None else defaults["rho_init"],
                        rho_max=opts["rho_max"] if opts["rho_max"] is not None else defaults.get("rho_max", 65.0))
    out = opts["out"] or Path("runs") / f"{opts['dataset']}-{time.strftime('%Y%m%d-%H%M%S')}"
    config = TrainConfig(
        dataset=opts["dataset"], data=data, **pick,
        weight_decay=opts["weight_decay"], schedule=opts["schedule"], step_epochs=opts["step_epochs"],
        warmup_epochs=opts["warmup_epochs"], lif=LIFParameters(reset=opts["reset"], surrogate=opts["surrogate"]),
        path=opts["path"], seed=opts["seed"], threads=opts["threads"], out=str(out),
        structure=structure, dev_interval=dev_interval, sdsnn=sdsnn, target_sparsity=opts["target_sparsity"],
    )
    summary = run_training(config, out, progress=opts["progress"], echo=click.echo)
    click.echo(f"done: test accuracy {100 * summary['test_acc']:.2f}% (best {100 * summary['best_test_acc']:.2f}%), "
               f"{summary['synapses']} synapses (compression {100 * summary['compression']:.1f}%), "
               f"data {summary['data_source']}, {summary['wall_s']:.0f}s -> {out}")


def _dev_interval(value: str | None, default: int) -> int:
    """'epoch' -> 0 (once per epoch); a positive integer -> every N batches."""
    if value is None:
        return default
    if value == "epoch":
        return 0
    if value.isdigit() and int(value) > 0:
        return int(value)
    raise click.BadParameter(f"must be 'epoch' or a positive number of batches, got {value!r}",
                             param_hint="'--dev-interval'")
