"""``evsim inspect RUN_DIR``: spike rasters, firing rates and operations per time step of a trained run."""
from __future__ import annotations

from pathlib import Path

import click

from evsim.cli.options import NonEmptyPath, dataset_options, integer
from evsim.cli.runs import (CHECKPOINTS, check_outputs, load_run_dataset, load_run_network, other_data_path,
                            run_config, typed)
from evsim.files import write_json_atomic
from evsim.inspect import INSPECT_BATCH_SIZE, analog_outputs, layer_names, plot_inspection, record_dataset
from evsim.plots import figure_format, run_title
from evsim.runlock import folder_identity, written_into


@click.command("inspect")
@click.argument("run_dir", type=NonEmptyPath(file_okay=False, path_type=Path))
@click.option("--checkpoint", type=click.Choice(list(CHECKPOINTS)), default="latest", show_default=True,
              help="Which saved network of the run to inspect.")
@click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True)
@click.option("--samples", type=integer(1), default=256, show_default=True,
              help="Samples (the split's first) the rates and operation counts are taken over.")
@click.option("--batch-size", type=integer(1), default=INSPECT_BATCH_SIZE, show_default=True,
              help="Samples per forward pass (recorded batch by batch: memory grows with it, not with --samples).")
@click.option("--rasters", type=integer(0, 10), default=3, show_default=True,
              help="Samples whose spike rasters are drawn.")
@click.option("--plot", "plot_path", type=NonEmptyPath(dir_okay=False, path_type=Path), default=None,
              help="The figure; its suffix picks the format: .png, .pdf or .svg "
                   "[default: RUN_DIR/inspect-<checkpoint>-<split>.png].")
@click.option("--json", "json_path", type=NonEmptyPath(dir_okay=False, path_type=Path), default=None,
              help="Also write the statistics (rates per layer and step, operations per step) as JSON here.")
@dataset_options
@click.pass_context
def inspect_command(ctx, run_dir, checkpoint, split, samples, batch_size, rasters, plot_path, json_path,
                    **data_options):
    """See what a trained network does: spike rasters per layer for a few samples, the
    firing rates of its neurons, the firing rate and synaptic operations per time step.

    The dataset options are for a folder without config.json (evsim import-nir); a
    trained run takes --source: other data than its own, whose figure is named for it, and
    --data-dir: where its data folder is now, if it moved (the files must be the run's).
    From Python: evsim.record(network, drive) returns the same recordings."""
    found = folder_identity(run_dir)  # the folder loaded: results go to it or nowhere
    # Named like eval's and profile's figures: inspections of other checkpoints and splits stay.
    given_plot, plot_path = plot_path, plot_path or run_dir / f"inspect-{checkpoint}-{split}.png"
    figure_format(plot_path)
    check_outputs(plot_path, *([] if json_path is None else [json_path]),
                  chosen=None if given_plot else {plot_path: "--plot FILE"})
    network, config, loaded = load_run_network(run_dir, checkpoint)
    config = run_config(ctx, run_dir, network, config, data_options, allowed=("source", "data_dir"))
    dataset, other = load_run_dataset(config, run_dir, typed(ctx, "source"), typed(ctx, "data_dir"))
    if other and given_plot is None:
        plot_path = other_data_path(plot_path, dataset)
        check_outputs(plot_path, chosen={plot_path: "--plot FILE"})
    rec, labels = record_dataset(network, dataset, split, samples, config.time_steps, config.seed, batch_size,
                                 rasters)
    summary = {"run_dir": str(run_dir), "checkpoint": loaded, "split": split, "data_source": dataset.source,
               **rec.summary()}
    analog = analog_outputs(rec, network)
    # the figure and the JSON both new or both old, and in the folder loaded
    with written_into(run_dir, found, "evsim inspect", plot_path, json_path):
        plot_inspection(rec, plot_path, labels, rasters,
                        f"{run_title(config.to_dict(), run_dir.resolve().name)} ({loaded}; {split} split, "
                        f"data {dataset.source})", layer_names(network), analog)
        if json_path is not None:
            write_json_atomic(json_path, summary)
    for layer, name, kind, values in zip(summary["layers"], layer_names(network), network.layers, analog):
        ops = f"{sum(layer['ops_per_step']):,.0f} operations per sample"
        if values:  # a pooling of direct-encoded input: analog values, the same at every step
            click.echo(f"L{layer['layer']} ({name}): {layer['neurons']} units, mean output value "
                       f"{layer['firing_rate_alive']:.4g}, {layer['silent_alive']} always 0; {ops}")
            continue
        if not getattr(kind, "spiking", True):  # a pooling: values, no neurons to be alive or silent
            click.echo(f"L{layer['layer']} ({name}): {layer['neurons']} units, mean output "
                       f"{100 * layer['firing_rate_alive']:.2f}% of steps, {layer['silent_alive']} always 0; {ops}")
            continue
        click.echo(f"L{layer['layer']} ({name}): {layer['alive']}/{layer['neurons']} neurons alive, mean firing rate "
                   f"{100 * layer['firing_rate_alive']:.2f}% of steps, {layer['silent_alive']} alive but silent; {ops}")
    click.echo(f"wrote {plot_path}" + (f" and {json_path}" if json_path is not None else "")
               + f" ({loaded}, {rec.samples} {split} samples, data {dataset.source})")
