"""``evsim profile RUN_DIR``: exact synaptic operations and estimated energy of a trained run."""
from __future__ import annotations

from pathlib import Path

import click

from evsim.cli.options import NonEmptyPath, dataset_options, integer, number
from evsim.cli.runs import (CHECKPOINTS, check_outputs, load_run_dataset, load_run_network, other_data_path,
                            run_config, typed)
from evsim.energy import EnergyModel
from evsim.evaluate import profile as run_profile
from evsim.files import write_json_atomic
from evsim.inspect import layer_names
from evsim.plots import figure_format, plot_energy
from evsim.runlock import folder_identity, written_into


@click.command()
@click.argument("run_dir", type=NonEmptyPath(file_okay=False, path_type=Path))
@click.option("--checkpoint", type=click.Choice(list(CHECKPOINTS)), default="latest", show_default=True,
              help="Which saved network of the run to profile.")
@click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True)
@click.option("--samples", type=integer(1), default=None, help="Profile only the first N samples.")
@click.option("--batch-size", type=integer(1), default=250, show_default=True)
@click.option("--json", "json_path", type=NonEmptyPath(dir_okay=False, path_type=Path), default=None,
              help="Write the report as JSON here [default: RUN_DIR/profile-<checkpoint>-<split>.json].")
@click.option("--plot", "--png", "png_path", type=NonEmptyPath(dir_okay=False, path_type=Path), default=None,
              help="Write the figure here; its suffix picks the format: .png, .pdf or .svg "
                   "[default: RUN_DIR/profile-<checkpoint>-<split>.png]. --png is the same option.")
@click.option("--e-ac", type=number(0), default=0.9, show_default=True, help="pJ per accumulate.")
@click.option("--e-mac", type=number(0), default=4.6, show_default=True, help="pJ per multiply-accumulate.")
@click.option("--e-neuron", type=number(0), default=0.0, show_default=True, help="pJ per neuron update.")
@dataset_options
@click.pass_context
def profile(ctx, run_dir, checkpoint, split, samples, batch_size, json_path, png_path, e_ac, e_mac, e_neuron,
            **data_options):
    """Count the synaptic operations a trained network really performs, and estimate its energy.

    The dataset options are for a folder without config.json (evsim import-nir); a
    trained run takes --source: other data than its own, whose files are named for it, and
    --data-dir: where its data folder is now, if it moved (the files must be the run's)."""
    found = folder_identity(run_dir)  # the folder loaded: results go to it or nowhere
    given = json_path, png_path
    # Named like eval's confusion-<checkpoint>-<split>.png: profiles of other checkpoints and splits stay.
    name = f"profile-{checkpoint}-{split}"
    json_path, png_path = json_path or run_dir / f"{name}.json", png_path or run_dir / f"{name}.png"
    figure_format(png_path)
    check_outputs(json_path, png_path, chosen={path: option for path, option, mine in zip(
        (json_path, png_path), ("--json FILE", "--plot FILE"), given) if mine is None})
    network, config, loaded = load_run_network(run_dir, checkpoint)
    config = run_config(ctx, run_dir, network, config, data_options, allowed=("source", "data_dir"))
    dataset, other = load_run_dataset(config, run_dir, typed(ctx, "source"), typed(ctx, "data_dir"))
    if other:  # the run's own profile.json and .png hold its own data's
        json_path, png_path = (mine or other_data_path(path, dataset)
                               for mine, path in zip(given, (json_path, png_path)))
        check_outputs(json_path, png_path, chosen={path: option for path, option, mine in zip(
            (json_path, png_path), ("--json FILE", "--plot FILE"), given) if mine is None})
    report = run_profile(network, dataset, model=EnergyModel(e_ac, e_mac, e_neuron),
                         time_steps=config.time_steps, split=split, samples=samples, batch_size=batch_size,
                         seed=config.seed)
    click.echo(f"{run_dir} ({loaded}), {dataset.name} {split} split")
    click.echo(report.table())
    summary = {"run_dir": str(run_dir), "checkpoint": loaded, "dataset": dataset.name, "split": split,
               **report.summary()}
    with written_into(run_dir, found, "evsim profile", json_path, png_path):  # both new or both old
        plot_energy(summary, png_path, layer_names(network))
        write_json_atomic(json_path, summary)
    click.echo(f"wrote {json_path} and {png_path} ({loaded})")
