"""The run folder lock: one process at a time writes a run folder.

A process that trains or resumes a run holds an exclusive ``fcntl.flock`` on
``RUN_DIR/.evsim.lock`` for as long as it writes there; a second process (another
``evsim train --out`` of the same folder, a sweep's worker) is refused at once with
one line, never queued behind it. The kernel releases a flock when its process dies,
so a lock left by a killed run never blocks the next one: the lock file is only a
name to lock, its presence means nothing. It is removed when the lock is released
(so a folder only read, or refused, is left as it was); a process that locked the
file just removed checks, and opens and locks the current one.

The lock is reentrant within the thread that holds it, so that a caller may hold it
across a decision and the training it leads to (a sweep point checks what its folder
holds, then trains or resumes) while :func:`evsim.train.train` takes it again inside.
Another thread of the same process is refused like another process: two flocks of
the same file through different open files exclude each other.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from pathlib import Path

from evsim.errors import EvsimError
from evsim.files import flock_held

LOCK_FILE = ".evsim.lock"

# The locks this process holds: resolved run folder -> [holding thread id, depth, fd].
# Process state by nature (a flock belongs to an open file of this process), guarded
# by a lock because sweep workers may run points on several threads.
_held: dict[Path, list] = {}
_held_guard = threading.Lock()


class RunLockedError(EvsimError, RuntimeError):
    """Another process (or thread) is writing this run folder."""


@contextlib.contextmanager
def run_lock(run_dir: Path | None):
    """Hold the exclusive lock of ``run_dir`` inside the block (``None``: no folder, no lock).

    The folder is made if missing; if it was made here and holds nothing but the lock
    file when the block ends (the run failed before writing anything), it is removed
    again, so a failed start leaves no folder behind. The lock file is removed on release.

    Raises
    ------
    RunLockedError
        If another process or thread holds the lock of ``run_dir``.
    """
    if run_dir is None:
        yield
        return
    run_dir = Path(run_dir).absolute()
    me = threading.get_ident()
    with _held_guard:
        held = _held.get(run_dir)
        if held is not None and held[0] == me:
            held[1] += 1
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield
        finally:
            with _held_guard:
                _held[run_dir][1] -= 1
        return

    created = _missing_folders(run_dir)
    fd = _acquire(run_dir)
    with _held_guard:
        _held[run_dir] = [me, 1, fd]
    try:
        yield
    finally:
        with _held_guard:
            del _held[run_dir]
        _release(run_dir, fd, created)


def is_locked(run_dir: Path) -> bool:
    """Whether a process holds the lock of ``run_dir`` now (it is being written). Looks
    only: no file or folder is made, and no lock is kept."""
    return flock_held(Path(run_dir) / LOCK_FILE)


def _acquire(run_dir: Path) -> int:
    """An open descriptor of the lock file of ``run_dir``, flocked exclusively."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = _holder(path)
            raise RunLockedError(f"{run_dir} is being written by another process{holder}; wait for it to finish "
                                 "or choose another folder") from None
        except BaseException:
            os.close(fd)
            raise
        # A lock file removed (by _release) between our open and our flock leaves us
        # holding the lock of a file no longer there: open the current one again.
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            run_dir.mkdir(parents=True, exist_ok=True)
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _holder(path: Path) -> str:
    """`` (pid N)`` naming the process that last took the lock, or nothing if unknown."""
    try:
        pid = path.read_text().strip()
    except OSError:
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""


def _missing_folders(run_dir: Path) -> list[Path]:
    """``run_dir`` and each of its parents that do not exist, ``run_dir`` first: the
    folders taking its lock will make."""
    missing, folder = [], run_dir
    while not folder.exists() and folder.parent != folder:
        missing.append(folder)
        folder = folder.parent
    return missing


def _release(run_dir: Path, fd: int, created: list[Path]) -> None:
    """Remove the lock file (and the folders made for this lock, ``run_dir`` first, each
    while it holds nothing else), then release the flock: a run leaves no trace of its lock."""
    try:
        (run_dir / LOCK_FILE).unlink(missing_ok=True)
        for folder in created:
            if any(folder.iterdir()):
                break
            folder.rmdir()
    except OSError:
        pass  # something appeared meanwhile, or the folder is not ours to tidy
    finally:
        os.close(fd)
