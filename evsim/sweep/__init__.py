"""Sweeps of training runs on Dask: ``evsim sweep SWEEP.toml`` and ``evsim sweep report DIR``.

- :mod:`evsim.sweep.plan`: the sweep file, checked whole and expanded into points;
- :mod:`evsim.sweep.point`: one point on a worker (skip, resume or train, under the run lock);
- :mod:`evsim.sweep.execute`: the Dask client, progress and the sweep's state file;
- :mod:`evsim.sweep.worker`: the embedded cluster's worker setup (Ctrl-C is the client's);
- :mod:`evsim.sweep.report`: ``results.csv``, ``report.md``, ``report.png``;
- :mod:`evsim.sweep.training`: the one place the sweep meets ``evsim train``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from evsim.errors import ConfigError
from evsim.runlock import run_lock
from evsim.sweep.execute import check_same_sweep, dask_client, local_workers, run_sweep
from evsim.sweep.plan import read_sweep, resolve_points
from evsim.sweep.report import write_report


def default_out(path: Path) -> Path:
    """``runs/<sweep file's stem>``: the same command run again continues the same sweep."""
    return Path("runs") / Path(path).stem


def sweep(path: Path, out: Path | None = None, scheduler: str | None = None, scheduler_file: Path | None = None,
          workers: int | None = None, progress: bool = True, echo: Callable[[str], None] = print) -> list[dict]:
    """Check the sweep file ``path`` whole, then run its points on Dask into ``out``.

    Finished points are skipped, interrupted ones resumed from their checkpoints; a
    point that fails is recorded with its one-line error and the others go on.

    Returns
    -------
    list of dict
        Each point's state (name, axes, options, status, action, error, seconds).

    Raises
    ------
    ConfigError
        If the file or any point's options are invalid (before anything runs), the
        folder holds another sweep, or the cluster cannot be reached or sized.
    RunLockedError
        If another process is running a sweep of the same folder.
    """
    if scheduler is not None and scheduler_file is not None:
        raise ConfigError("give --scheduler or --scheduler-file, not both")
    if scheduler is not None and not scheduler.strip():
        raise ConfigError("--scheduler is empty; give the address of a running Dask scheduler (tcp://HOST:PORT)")
    if workers is not None and (scheduler is not None or scheduler_file is not None):
        raise ConfigError("--workers sizes the embedded cluster; an existing cluster runs on its own workers")
    out = Path(out if out is not None else default_out(path)).absolute()
    plan = read_sweep(path)
    configs = resolve_points(plan, out)
    n_workers, threads = local_workers(configs, workers)
    with run_lock(out):  # one sweep of a folder at a time: a second would overwrite its sweep.json
        check_same_sweep(plan, out)
        with dask_client(scheduler, scheduler_file, n_workers) as client:
            if scheduler is None and scheduler_file is None:
                echo(f"sweep: {len(plan.points)} points -> {out}; local cluster of {n_workers} worker processes x "
                     f"{threads} threads")
            else:
                echo(f"sweep: {len(plan.points)} points -> {out}; cluster at {scheduler or scheduler_file}")
            return run_sweep(plan, configs, out, client, progress, echo)


__all__ = ["default_out", "sweep", "write_report"]
