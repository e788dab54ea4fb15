"""A process forked from one that has run evsim's parallel kernels cannot run them.

Numba's OpenMP threading layer, built on GNU OpenMP, is not fork-safe: a forked child's
first parallel loop prints "Terminating: fork() called from a process already using GNU
OpenMP" and the child kills itself with SIGTERM, so a ``multiprocessing`` pool (whose
default start method on Linux before Python 3.14 is fork) waits for its result forever.
Nothing in the child can reset that, so the entry points of the API that run parallel
kernels (a network's passes and input events, ``dense_to_events``, the optimizer's step,
SD-SNN's observe and develop) refuse to start instead, in one line that says what to do
(:func:`check_not_forked`). Workers started by
spawn or forkserver load the library afresh and run, as do forks of a process that has
run no kernel yet, and children of a fork-safe layer (TBB).
"""
from __future__ import annotations

import os

from numba.np.ufunc import parallel

from evsim.errors import ConfigError

FORKED_CHILD = ("this process was forked from one that had run evsim's kernels, and Numba's GNU OpenMP "
                "threading layer cannot run in a forked child (it would kill the process); start worker "
                "processes with multiprocessing.get_context('spawn') or 'forkserver' (Dask's own workers already "
                "do), or run evsim in the parent only after forking")

_forked_from_kernels = False


def _omp_runs_here() -> bool:
    """Whether this process has started Numba's GNU OpenMP threading layer."""
    if not parallel._is_initialized:
        return False
    from numba.np.ufunc import omppool  # present wherever the omp layer started

    return parallel.threading_layer() == "omp" and omppool.openmp_vendor == "GNU"


def _after_fork_in_child() -> None:
    global _forked_from_kernels
    _forked_from_kernels = _forked_from_kernels or _omp_runs_here()


os.register_at_fork(after_in_child=_after_fork_in_child)


def check_not_forked() -> None:
    """Raise ConfigError (:data:`FORKED_CHILD`) in a process forked from one running GNU
    OpenMP: its kernels would kill it."""
    if _forked_from_kernels:
        raise ConfigError(FORKED_CHILD)
