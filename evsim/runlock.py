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

A run folder may be moved or replaced (``mv RUN OTHER``) while a command uses it. Files
are written by path, so a command would then write into whatever folder now has the
name, or make a new one there: training checks before each epoch's writes that the
folder at the path is still the one it locked (:func:`check_lock_in_place`), and commands
that read a run and write into it, that it is still the one they read
(:func:`folder_identity`, :func:`written_into`).
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from pathlib import Path
from typing import Callable

from evsim.errors import EvsimError
from evsim.files import flock_held, written_together

LOCK_FILE = ".evsim.lock"

# The locks this process holds: resolved run folder -> [holding thread id, depth, fd,
# the folder's identity (folder_identity) when locked].
# Process state by nature (a flock belongs to an open file of this process), guarded
# by a lock because sweep workers may run points on several threads.
_held: dict[Path, list] = {}
_held_guard = threading.Lock()


class RunLockedError(EvsimError, RuntimeError):
    """Another process (or thread) is writing this run folder."""


class RunMovedError(EvsimError, RuntimeError):
    """The run folder a command works on was moved, deleted or replaced meanwhile."""


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
        _held[run_dir] = [me, 1, fd, folder_identity(run_dir)]
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
    while it holds nothing else), then release the flock: a run leaves no trace of its lock.
    A folder moved meanwhile loses its lock file where it is now; what has its old name
    (another run's folder, perhaps locked by another process) is left alone."""
    try:
        if _locks_here(run_dir, fd):
            (run_dir / LOCK_FILE).unlink()
            for folder in created:
                if any(folder.iterdir()):
                    break
                folder.rmdir()
        else:
            place = _current_place(fd)
            if place is not None and _locks_here(place, fd):
                (place / LOCK_FILE).unlink()
    except OSError:
        pass  # something appeared meanwhile, or the folder is not ours to tidy
    finally:
        os.close(fd)


def _locks_here(run_dir: Path, fd: int) -> bool:
    """Whether ``run_dir``'s lock file is the open file ``fd``."""
    try:
        return os.path.samestat(os.stat(run_dir / LOCK_FILE), os.fstat(fd))
    except OSError:
        return False


def _current_place(fd: int) -> Path | None:
    """The folder that holds the lock file open as ``fd`` now, wherever it was moved
    (Linux's /proc); None if it was deleted or this cannot be known."""
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None
    if target.endswith(" (deleted)") or not os.path.isabs(target):
        return None
    return Path(target).parent


def check_lock_in_place(run_dir: Path | None) -> None:
    """Refuse to write more into ``run_dir`` if the folder there is no longer the one this
    process locked (it was moved, deleted or replaced): what follows would go to another
    run's folder, or make a new one holding a part of this run. One stat; nothing is done
    for a folder this process does not lock. Where the folder went is known by the lock
    file it holds (open here).

    Raises
    ------
    RunMovedError
        Saying where the run's folder is now, if known, and how to resume it there.
    """
    if run_dir is None:
        return
    run_dir = Path(run_dir).absolute()
    with _held_guard:
        held = _held.get(run_dir)
    if held is None or folder_identity(run_dir) == held[3]:
        return
    place = _current_place(held[2])
    if place is None:
        raise RunMovedError(f"{run_dir} was moved, deleted or replaced while training; nothing more is written "
                            "there; if it was moved, resume it from its last checkpoint where it is now: "
                            "evsim train --resume NEW_PLACE")
    raise RunMovedError(f"{run_dir} was moved or replaced while training (now at {place}); nothing more is written "
                        f"to {run_dir}; resume it from its last checkpoint where it is now: "
                        f"evsim train --resume {place}")


def folder_identity(folder: Path) -> tuple[int, int] | None:
    """The identity (device, inode) of the folder ``folder`` names now; None if there is none."""
    try:
        stat = os.stat(folder)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


@contextlib.contextmanager
def written_into(folder: Path, identity: tuple[int, int] | None, command: str, *outputs: Path | None):
    """:func:`~evsim.files.written_together`, for ``outputs`` of ``command`` that may lie in
    the run folder ``folder`` (by their path): refused, as the block starts and again just
    before they are renamed into place (drawing a figure takes a second or more), if the
    folder there is no longer the one whose :func:`folder_identity` was ``identity`` when
    the command loaded it: they would go to another run's folder, or a new one. Outputs
    elsewhere are written wherever the folder went.

    Raises
    ------
    RunMovedError
        Saying that nothing was written, and what to do.
    """
    # By real paths: an output named through a link to the folder (or the folder through
    # one) is inside it all the same.
    root = Path(os.path.realpath(folder))
    inside = [path for path in outputs if path is not None and Path(os.path.realpath(path)).is_relative_to(root)]

    def check():
        if inside and folder_identity(folder) != identity:
            raise RunMovedError(f"{folder} was moved or replaced while {command} ran; nothing was written (it would "
                                f"have gone to {inside[0]}, no longer the run's); run {command} again on the run's "
                                "folder where it is now")

    with _checked_writes(check, folder):
        yield


@contextlib.contextmanager
def locked_writes(run_dir: Path):
    """:func:`~evsim.files.written_together` for files of the run ``run_dir`` this process
    trains, with :func:`check_lock_in_place` as the block starts and again just before
    they are renamed into place."""
    with _checked_writes(lambda: check_lock_in_place(run_dir), run_dir):
        yield


@contextlib.contextmanager
def _checked_writes(check: Callable[[], None], folder: Path):
    """``check()`` (raising RunMovedError), a written_together block, ``check()`` again
    before its files are renamed into place. A write in the block after the folder
    moved made a new, empty one at its path (its temporary file gone): removed again."""
    check()
    try:
        with written_together():
            yield
            check()
    except RunMovedError:
        with contextlib.suppress(OSError):
            Path(folder).rmdir()  # refuses a folder that holds anything
        raise
