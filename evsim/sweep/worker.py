"""Preloaded by each worker of the embedded cluster (``LocalCluster(preload=...)``).

Ctrl-C in a terminal signals the whole process group: the workers ignore it, and the
client, which alone reports the interruption, shuts them down.
"""
from __future__ import annotations

import logging
import signal
import threading


def dask_setup(worker) -> None:
    """Called by Dask in the worker process's main thread, before it takes tasks."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A point's failure reaches the client as its outcome (run_point catches everything;
    # a dead worker as KilledWorker): the worker's own logs would only be the noise of a
    # shutdown (heartbeats to a scheduler already closed).
    logging.getLogger("distributed").setLevel(logging.CRITICAL)
    # tqdm's default lock is a multiprocessing semaphore; a worker stopped mid-run would
    # leave it to the resource tracker's "leaked semaphore" warning. Its bars are
    # disabled here and show in no other process: a thread lock serves.
    from tqdm import tqdm

    tqdm.set_lock(threading.RLock())
