"""``evsim eval RUN_DIR``: accuracy, confusion matrix and operations of a trained run."""
from __future__ import annotations

from pathlib import Path

import click

from evsim.cli.options import NonEmptyPath, dataset_options, integer
from evsim.cli.runs import CHECKPOINTS, check_outputs, load_run_dataset, load_run_network, run_config
from evsim.evaluate import evaluate
from evsim.files import write_json_atomic
from evsim.plots import plot_confusion


@click.command("eval")
@click.argument("run_dir", type=NonEmptyPath(file_okay=False, path_type=Path))
@click.option("--checkpoint", type=click.Choice(list(CHECKPOINTS)), default="latest", show_default=True,
              help="latest: the network after the last epoch; best: at the best test accuracy (chosen on the "
                   "test split, so its test accuracy is an optimistic estimate).")
@click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True)
@click.option("--batch-size", type=integer(1), default=None, help="Samples per forward pass "
              "[default: the run's eval batch size].")
@click.option("--json", "json_path", type=NonEmptyPath(dir_okay=False, path_type=Path), default=None,
              help="Also write the result (accuracy, per-class accuracy, confusion, SOPs) as JSON here.")
@dataset_options
@click.pass_context
def eval_command(ctx, run_dir, checkpoint, split, batch_size, json_path, **data_options):
    """Evaluate a trained run: accuracy, confusion matrix (PNG in RUN_DIR), SOPs per sample.

    The dataset options are for a folder without config.json (evsim import-nir)."""
    png = run_dir / f"confusion-{checkpoint}-{split}.png"
    check_outputs(png, *([] if json_path is None else [json_path]))
    network, config, loaded = load_run_network(run_dir, checkpoint)
    config = run_config(ctx, run_dir, config, data_options)
    dataset = load_run_dataset(config)
    result = evaluate(network, dataset, config.time_steps, split, batch_size or config.eval_batch_size, config.seed)
    summary = {"run_dir": str(run_dir), "checkpoint": loaded, **result.summary()}
    plot_confusion(result.confusion, png, f"{dataset.name} {split} ({dataset.source}), {loaded}: "
                                          f"{100 * result.accuracy:.2f}%")
    click.echo(f"{run_dir} ({loaded}), {split} split: {result.samples} samples, data {dataset.source}")
    click.echo(f"accuracy        {100 * result.accuracy:.2f}%")
    click.echo("per class       " + "  ".join(f"{k}: {'-' if acc is None else f'{100 * acc:.1f}%'}"
                                              for k, acc in enumerate(summary["per_class_accuracy"])))
    click.echo(f"SOPs per sample {summary['sops_per_sample']:,.0f}"
               + (f" + {summary['macs_per_sample']:,.0f} MACs" if summary["macs_per_sample"] else "")
               + f"; energy {summary['energy_uj_per_sample']:.4f} uJ per sample")
    click.echo(summary["energy_note"])
    if json_path is not None:
        write_json_atomic(json_path, summary)
    click.echo(f"wrote {png}" + (f" and {json_path}" if json_path is not None else ""))
