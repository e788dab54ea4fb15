"""``evsim eval RUN_DIR``: accuracy, confusion matrix and operations of a trained run."""
from __future__ import annotations

from pathlib import Path

import click

from evsim.cli.options import NonEmptyPath, dataset_options, integer
from evsim.cli.runs import (CHECKPOINTS, check_outputs, load_run_dataset, load_run_network, other_data_path,
                            run_config, typed)
from evsim.data.base import first_steps
from evsim.errors import ConfigError
from evsim.evaluate import evaluate
from evsim.files import write_json_atomic
from evsim.plots import figure_format, plot_confusion
from evsim.runlock import folder_identity, written_into


@click.command("eval")
@click.argument("run_dir", type=NonEmptyPath(file_okay=False, path_type=Path))
@click.option("--checkpoint", type=click.Choice(list(CHECKPOINTS)), default="latest", show_default=True,
              help="latest: the network after the last epoch; best: at the best validation accuracy (for a run "
                   "trained with --val-fraction 0, the best test accuracy: then an optimistic estimate).")
@click.option("--split", type=click.Choice(["test", "train", "val"]), default="test", show_default=True,
              help="val: the run's validation split (held out of train as in training).")
@click.option("--batch-size", type=integer(1), default=None, help="Samples per forward pass "
              "[default: the run's eval batch size].")
@click.option("--plot", "plot_path", type=NonEmptyPath(dir_okay=False, path_type=Path), default=None,
              help="The confusion matrix; its suffix picks the format: .png, .pdf or .svg "
                   "[default: RUN_DIR/confusion-<checkpoint>-<split>.png].")
@click.option("--json", "json_path", type=NonEmptyPath(dir_okay=False, path_type=Path), default=None,
              help="Also write the result (accuracy, per-class accuracy, confusion, SOPs, and each sample's "
                   "label, prediction and output spike counts) as JSON here.")
@dataset_options
@click.pass_context
def eval_command(ctx, run_dir, checkpoint, split, batch_size, plot_path, json_path, **data_options):
    """Evaluate a trained run: accuracy, confusion matrix (a figure in RUN_DIR, or --plot), SOPs per sample.

    The dataset options are for a folder without config.json (evsim import-nir); of
    them, a trained run takes --time-steps T: its accuracy when it answers after T
    steps (for event data, the first T frames of each recording; T at most the run's),
    --source: other data than its own (e.g. real where it trained on the emulation),
    whose figure is named for that source, and --data-dir: where its data folder is
    now, if it moved (the files must be the run's).
    """
    found = folder_identity(run_dir)  # the folder loaded: results go to it or nowhere
    own = (run_dir / "config.json").is_file()
    steps = data_options["time_steps"] if own else None
    png = plot_path or run_dir / (f"confusion-{checkpoint}-{split}" + (f"-T{steps}" if steps else "") + ".png")
    figure_format(png)
    check_outputs(png, *([] if json_path is None else [json_path]), chosen=None if plot_path else {png: "--plot FILE"})
    network, config, loaded = load_run_network(run_dir, checkpoint)
    config = run_config(ctx, run_dir, network, config, data_options, allowed=("time_steps", "source", "data_dir"))
    dataset, other = load_run_dataset(config, run_dir, typed(ctx, "source"), typed(ctx, "data_dir"))
    if other and plot_path is None:
        png = other_data_path(png, dataset)
        check_outputs(png, chosen={png: "--plot FILE"})
    if split == "val" and not config.val_fraction:
        raise ConfigError(f"{run_dir} trained without a validation split (--val-fraction 0); choose test or train")
    steps = steps or config.time_steps
    dataset = first_steps(dataset, steps)
    result = evaluate(network, dataset, steps, split, batch_size or config.eval_batch_size, config.seed)
    summary = {"run_dir": str(run_dir), "checkpoint": loaded, "time_steps": steps, **result.summary()}
    # the figure and the JSON both new or both old, and in the folder loaded
    with written_into(run_dir, found, "evsim eval", png, json_path):
        plot_confusion(result.confusion, png, f"{run_dir.resolve().name}, T = {steps}: "
                                              f"{100 * result.accuracy:.2f}%\n{dataset.name} {split} "
                                              f"({dataset.source}), {loaded}")
        if json_path is not None:
            write_json_atomic(json_path, {**summary, "predictions": result.predictions()})
    click.echo(f"{run_dir} ({loaded}), {split} split: {result.samples} samples, T = {steps}, data {dataset.source}")
    click.echo(f"accuracy        {100 * result.accuracy:.2f}%")
    click.echo("per class       " + "  ".join(f"{k}: {'-' if acc is None else f'{100 * acc:.1f}%'}"
                                              for k, acc in enumerate(summary["per_class_accuracy"])))
    click.echo(f"SOPs per sample {summary['sops_per_sample']:,.0f}"
               + (f" + {summary['macs_per_sample']:,.0f} MACs" if summary["macs_per_sample"] else "")
               + f"; energy {summary['energy_uj_per_sample']:.4f} uJ per sample")
    click.echo(summary["energy_note"])
    click.echo(f"wrote {png}" + (f" and {json_path}" if json_path is not None else ""))
