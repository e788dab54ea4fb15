"""``evsim sweep``: run a sweep file on Dask (``evsim sweep [run] SWEEP.toml``) and report
on its folder (``evsim sweep report DIR``)."""
from __future__ import annotations

import signal
import tempfile
from pathlib import Path

import click

from evsim.cli.options import NonEmptyPath, integer
from evsim.cli.runs import check_outputs
from evsim.errors import ConfigError
from evsim.sweep import default_out, sweep as run_sweep_file, write_report


class SweepGroup(click.Group):
    """A group whose default subcommand is ``run``: ``evsim sweep FILE.toml`` means
    ``evsim sweep run FILE.toml``."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["run", *args]
        return super().parse_args(ctx, args)


@click.group(cls=SweepGroup)
def sweep():
    """Sweeps of training runs on Dask.

    \b
    evsim sweep SWEEP.toml [--out DIR] [--workers N | --scheduler ADDRESS | --scheduler-file FILE]
    evsim sweep report DIR
    """


@sweep.command("run")
@click.argument("sweep_file", type=NonEmptyPath(dir_okay=False, path_type=Path))
@click.option("--out", type=NonEmptyPath(file_okay=False, path_type=Path), default=None,
              help="Sweep folder [default: runs/<file stem>]; running again continues it.")
@click.option("--scheduler", default=None, help="Address of a running Dask scheduler (tcp://HOST:PORT).")
@click.option("--scheduler-file", type=NonEmptyPath(dir_okay=False, path_type=Path), default=None,
              help="Scheduler file of a running Dask cluster (dask scheduler --scheduler-file FILE).")
@click.option("--workers", type=integer(1), default=None,
              help="Worker processes of the embedded cluster [default: cores // threads per run].")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show the progress bar.")
@click.pass_context
def run(ctx, sweep_file, out, scheduler, scheduler_file, workers, progress):
    """Run every point of SWEEP_FILE (skipping finished ones, resuming interrupted ones).

    The file is checked whole first. Without --scheduler or --scheduler-file the
    points run on an embedded Dask LocalCluster of worker processes, workers x
    threads per run within this machine's cores. Exit code 1 if any point failed.
    """
    folder = out if out is not None else default_out(sweep_file)
    if scheduler is None and scheduler_file is None:
        _check_temporary_folder()
    try:
        states = run_sweep_file(sweep_file, out, scheduler, scheduler_file, workers, progress, click.echo)
    except KeyboardInterrupt as exc:
        left = getattr(exc, "still_running", None)
        points = f"{len(left or ())} point{'' if left and len(left) == 1 else 's'}"
        if not left:
            running = ""
        elif scheduler is None and scheduler_file is None:
            running = f"; {points} that did not stop in time keep their last epoch's checkpoint"
        else:
            running = (f"; {points} still running on the cluster's workers stop after their current batch "
                       f"({', '.join(left[:5])}{', ...' if len(left) > 5 else ''}): run the same command again "
                       "once they have")
        click.echo(f"Interrupted: finished points are kept in {folder}; run the same command again to continue "
                   f"(interrupted points resume from their last checkpoint){running}", err=True)
        ctx.exit(128 + getattr(exc, "signum", signal.SIGINT))  # the shell's code for that signal: 130, 143
    failed = [s for s in states if s["status"] != "done"]
    skipped = sum(s["action"] == "skipped" and s["status"] == "done" for s in states)
    resumed = sum(s["action"] == "resumed" and s["status"] == "done" for s in states)
    sources = sorted({s["data_source"] for s in states if s.get("data_source")})
    click.echo(f"done: {len(states) - len(failed)} of {len(states)} points finished ({skipped} already before, "
               f"{resumed} resumed), {len(failed)} failed"
               + (f", on {' and '.join(sources)} data" if sources else "")
               + f" -> {folder}; report: evsim sweep report {folder}")
    for state in failed:
        click.echo(f"failed: {state['name']}: {state['error']}", err=True)
    if failed:
        ctx.exit(1)


def _check_temporary_folder() -> None:
    """Refuse, in one line, a machine where the embedded cluster's workers (which need a
    temporary folder) cannot start.

    Raises
    ------
    ConfigError
        If no temporary folder is writable.
    """
    try:
        tempfile.gettempdir()
    except FileNotFoundError:
        raise ConfigError("no writable temporary folder ($TMPDIR, /tmp, /var/tmp, the current folder) for the "
                          "embedded Dask cluster's workers; set TMPDIR to a writable folder, or give --scheduler "
                          "of a running cluster") from None


@sweep.command("report")
@click.argument("sweep_dir", type=NonEmptyPath(file_okay=False, path_type=Path))
def report(sweep_dir):
    """Write results.csv, report.md and report.png into the sweep folder SWEEP_DIR."""
    paths, unreadable = write_report(sweep_dir, check_outputs)
    click.echo(f"wrote {paths['csv']}, {paths['md']}, {paths['png']}")
    for row in unreadable:
        click.echo(f"unreadable: {row['point']}: {row['error']}", err=True)
