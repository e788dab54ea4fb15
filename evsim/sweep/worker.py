"""Preloaded by each worker of the embedded cluster (``LocalCluster(preload=...)``).

Ctrl-C in a terminal signals the whole process group, and so does a SIGTERM to the group
(systemd, a batch scheduler): the workers ignore both, and the client, which alone
reports the interruption, stops their points at a batch (see
:func:`evsim.sweep.execute.stop_points`) and shuts them down.
"""
from __future__ import annotations

import hashlib
import logging
import signal
import threading
from pathlib import Path


def dask_setup(worker) -> None:
    """Called by Dask in the worker process's main thread, before it takes tasks."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # killed mid-batch, a point would lose its epoch
    # A point's failure reaches the client as its outcome (run_point catches everything;
    # a dead worker as KilledWorker): the worker's own logs would only be the noise of a
    # shutdown (heartbeats to a scheduler already closed).
    logging.getLogger("distributed").setLevel(logging.CRITICAL)
    # tqdm's default lock is a multiprocessing semaphore; a worker stopped mid-run would
    # leave it to the resource tracker's "leaked semaphore" warning. Its bars are
    # disabled here and show in no other process: a thread lock serves.
    from tqdm import tqdm

    tqdm.set_lock(threading.RLock())


def source_stamp() -> str:
    """sha256 of evsim's Python sources as this process imports them (names relative to
    the package, so an editable install and a wheel of the same code agree): workers of
    another evsim would train other points, or fail on ones this evsim planned."""
    import evsim
    import evsim.cli

    digest = hashlib.sha256()
    cli = Path(evsim.cli.__file__).resolve().parent
    for prefix, root in (("evsim", Path(evsim.__file__).resolve().parent), ("evsim/cli", cli)):
        for path in sorted(root.rglob("*.py")):
            if prefix == "evsim" and path.is_relative_to(cli):
                continue  # inside the package in a wheel, beside it in an editable install: counted once
            digest.update(f"{prefix}/{path.relative_to(root).as_posix()}".encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()
