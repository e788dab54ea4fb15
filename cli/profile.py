"""``evsim profile RUN_DIR``: exact synaptic operations and estimated energy of a trained run."""
from __future__ import annotations

from pathlib import Path

import click

from evsim.checkpoint import NETWORK_FILE, load_network
from evsim.cli.options import FiniteFloatRange
from evsim.cli.runs import read_config
from evsim.data import DataOptions, load_dataset
from evsim.energy import EnergyModel, profile as run_profile
from evsim.files import write_json_atomic
from evsim.plots import plot_energy


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True)
@click.option("--samples", type=click.IntRange(min=1), default=None, help="Profile only the first N samples.")
@click.option("--batch-size", type=click.IntRange(min=1), default=250, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the report as JSON here [default: RUN_DIR/profile.json].")
@click.option("--png", "png_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the figure here [default: RUN_DIR/profile.png].")
@click.option("--e-ac", type=FiniteFloatRange(min=0), default=0.9, show_default=True, help="pJ per accumulate.")
@click.option("--e-mac", type=FiniteFloatRange(min=0), default=4.6, show_default=True, help="pJ per multiply-accumulate.")
@click.option("--e-neuron", type=FiniteFloatRange(min=0), default=0.0, show_default=True, help="pJ per neuron update.")
def profile(run_dir, split, samples, batch_size, json_path, png_path, e_ac, e_mac, e_neuron):
    """Count the synaptic operations a trained network really performs, and estimate its energy."""
    config = read_config(run_dir)
    network = load_network(run_dir / NETWORK_FILE)
    data = {k: (Path(v) if k in ("data_dir", "cache_dir") and v else v) for k, v in config["data"].items()}
    dataset = load_dataset(config["dataset"], DataOptions(**data))
    if dataset.meta.get("notice"):
        click.echo(f"NOTE: {dataset.meta['notice']}")
    report = run_profile(network, dataset, model=EnergyModel(e_ac, e_mac, e_neuron),
                         time_steps=config["time_steps"], split=split, samples=samples, batch_size=batch_size,
                         seed=config["seed"])
    click.echo(report.table())
    summary = report.summary()
    write_json_atomic(json_path or run_dir / "profile.json", summary)
    plot_energy(summary, png_path or run_dir / "profile.png")
    click.echo(f"wrote {json_path or run_dir / 'profile.json'} and {png_path or run_dir / 'profile.png'}")
