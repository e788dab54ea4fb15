"""Atomic file writes: a result file is either the old one or the complete new one."""
from __future__ import annotations

import contextlib
import contextvars
import errno
import fcntl
import json
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import BinaryIO, Callable


def umasked(mode: int) -> int:
    """``mode`` less the current umask: what ``open()`` (0o666) or ``mkdir`` (0o777) gives
    a new file or folder. Needed because mkstemp and mkdtemp make theirs private."""
    umask = os.umask(0)  # the only portable way to read the umask is to set it
    os.umask(umask)
    return mode & ~umask


@contextlib.contextmanager
def errors_about(path: Path):
    """Report an ``OSError`` raised inside as one about ``path``, the name the user chose:
    not about the temporary name beside it that was really being written, and not about
    no file at all (a write that finds the disk full names none)."""
    try:
        yield
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc


# The temporary names evsim writes beside a file or folder NAME, with the writer's pid:
# .NAME.PID.RANDOM.tmp (write_atomic), .NAME.PID.link (link_atomic) and the folder
# .NAME.PID.tmp-RANDOM (evsim.data.cache.atomic_dir), RANDOM being tempfile's 8
# characters; names without the pid are recognised too (cleaned by age, below).
_TEMPORARY = re.compile(r"\.(?P<name>.+?)\.(?:(?P<pid>[0-9]+)\.)?(?:[a-z0-9_]{8}\.tmp|link|tmp-[a-z0-9_]{8})")
# A temporary without a pid is stale once this old: no write takes an hour.
STALE_WITHOUT_PID_S = 3600.0


# The longest file name most file systems take (NAME_MAX, in bytes), and the most that
# a temporary's name adds after its prefix (tempfile's 8 characters and ".tmp").
NAME_MAX = 255
_LONGEST_SUFFIX = 12


def temporary_prefix(path: Path) -> str:
    """The start of the name of a temporary written beside ``path`` by this process; NAME
    is shortened where the temporary's name would be longer than ``NAME_MAX`` bytes, so
    that any name a file can have can be written."""
    pid = os.getpid()
    name = Path(path).name
    room = NAME_MAX - len(f"...{pid}") - _LONGEST_SUFFIX
    encoded = os.fsencode(name)
    if len(encoded) > room:  # UTF-8 is cut at a character boundary; other bytes anywhere
        try:
            name = encoded.decode("utf-8")[:room]
            while len(name.encode("utf-8")) > room:
                name = name[:-1]
        except UnicodeDecodeError:
            name = os.fsdecode(encoded[:room])
    return f".{name}.{pid}."


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # another user's process (or a pid no process has)
        return True
    return True


def _stale(name: str, mtime: float) -> bool:
    """Whether ``name`` is an evsim temporary whose writer is gone: its pid is no live
    process, or, without a pid, it is older than ``STALE_WITHOUT_PID_S``."""
    if name.endswith(".lock"):  # a run folder's or cache entry's flock file: never a temporary
        return False
    match = _TEMPORARY.fullmatch(name)
    if match is None:
        return False
    if match["pid"] is None:
        return time.time() - mtime > STALE_WITHOUT_PID_S
    pid = int(match["pid"])
    return pid != os.getpid() and not _process_alive(pid)


def flock_held(path: Path) -> bool:
    """Whether a process holds a flock of the file ``path`` now. Looks only: no file is
    made, and no lock is kept."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False  # no lock file: nobody holds it
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # closing releases the shared lock, if taken
    return False


def _being_built(folder: Path, name: str) -> bool:
    """Whether the flock of what temporary ``name`` is built for (``.NAME.lock``, as cache
    entries are locked) is held: by a process of another machine or container sharing
    the folder, whose pid says nothing here."""
    return flock_held(Path(folder) / f".{_TEMPORARY.fullmatch(name)['name']}.lock")


def clean_output_temporaries(path: Path) -> list[Path]:
    """Delete the temporaries of ``path`` that killed evsim processes left beside it:
    only names :func:`write_atomic` gives ``path``'s temporaries (``.NAME.PID.<8 characters>.tmp``,
    the pid required) whose writer is not alive here. Nothing else in the folder is looked
    at: an output may go to any folder (a home folder, /tmp) where other hidden files are
    the user's. Returns what was deleted."""
    path = Path(path)
    prefix = temporary_prefix(path)
    name = prefix[1:-len(f".{os.getpid()}.")]
    pattern = re.compile(re.escape(f".{name}.") + r"(?P<pid>[0-9]+)\.[a-z0-9_]{8}\.tmp")
    removed = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match is None or _process_alive(int(match["pid"])):
            continue
        try:
            if entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            continue
    return removed


def clean_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporaries that killed evsim processes left in ``folder`` (files and
    cache folders named as this module and :func:`evsim.data.cache.atomic_dir` name
    them, whose writer is gone); returns what was deleted. Anything else, symbolic links
    included, is left alone, and so is a temporary that cannot be deleted.
    """
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:  # no folder yet, or not readable: nothing of ours to clean
        return removed
    for entry in entries:
        try:
            info = entry.stat(follow_symlinks=False)
            if entry.is_symlink() or not _stale(entry.name, info.st_mtime) or _being_built(folder, entry.name):
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        except OSError:
            continue
        removed.append(Path(entry.path))
    return removed


def remove_path(path: Path) -> None:
    """Delete ``path``: a folder with everything in it, or a file or link (where a folder
    of evsim's own cache should be, a file is as damaged as a corrupt folder)."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def commit(tmp: Path, path: Path) -> None:
    """Rename the complete temporary ``tmp`` over ``path``: the one step at which a file
    written here changes (a kill before it leaves the old file, after it the new one;
    the fault-injection tests stop runs here)."""
    os.replace(tmp, path)


class _Block:
    """What a :func:`written_together` block holds until its end: the complete
    temporaries, (temporary, path), and the folders its writes created."""

    def __init__(self):
        self.files: list[tuple[str, Path]] = []
        self.folders: list[Path] = []


_held: contextvars.ContextVar[_Block | None] = contextvars.ContextVar("held", default=None)
# The signals a block's renames finish before: Ctrl-C and a plain kill.
_DEFERRED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def make_folders(folder: Path) -> list[Path]:
    """Make ``folder`` and the missing folders above it; those made, outermost first
    (for :func:`remove_folders` to take back)."""
    folder, missing = Path(folder), []
    while not os.path.isdir(folder) and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    made: list[Path] = []
    try:
        for folder in reversed(missing):
            try:
                os.mkdir(folder)
            except FileExistsError:  # made by another process meanwhile, or a file in the way
                if not os.path.isdir(folder):
                    raise
                continue
            made.append(folder)
    except BaseException:
        remove_folders(made)
        raise
    return made


def remove_folders(made: list[Path]) -> None:
    """Remove the folders ``made`` (as :func:`make_folders` returns them), deepest first,
    each only if empty: a failed write leaves no folder it created for nothing."""
    for folder in reversed(made):
        try:
            os.rmdir(folder)
        except OSError:  # something else was put there meanwhile: keep it
            pass


@contextlib.contextmanager
def _folders_locked(paths: list[Path]):
    """An exclusive flock of each folder holding one of ``paths``, meanwhile: two
    processes renaming outputs in the same folders take turns, so that each keeps a pair
    consistent. Taken in the order of the folders' device and inode numbers (the same
    in every process, whatever names lead there), so two processes never wait for each
    other; a folder that cannot be opened or locked (no read permission, a file system
    without flock) is renamed in unlocked."""
    with contextlib.ExitStack() as stack:
        folders = {}
        for folder in {Path(p).parent for p in paths}:
            try:
                fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
            except OSError:
                continue
            stack.callback(os.close, fd)
            info = os.fstat(fd)
            folders.setdefault((info.st_dev, info.st_ino), fd)  # one folder by two names: one lock
        for key in sorted(folders):
            try:
                fcntl.flock(folders[key], fcntl.LOCK_EX)
            except OSError as exc:
                if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                    raise
        yield  # closing the descriptors releases the locks


@contextlib.contextmanager
def _signals_deferred():
    """SIGINT and SIGTERM arriving meanwhile take effect only at the end: the renames of
    a block are not cut in two. Only the main thread can set handlers; elsewhere (and for
    a signal whose handler Python did not set) nothing is deferred."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {}
    try:
        for sig in _DEFERRED_SIGNALS:
            if signal.getsignal(sig) is not None:  # None: a handler not set from Python cannot be put back
                previous[sig] = signal.signal(sig, lambda signum, frame: caught.append(signum))
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(caught):
            signal.raise_signal(sig)  # now handled as it would have been


@contextlib.contextmanager
def written_together():
    """Files written atomically inside the block change together: each is written and
    synced to a temporary beside it as usual, and all are renamed over their paths only
    when the block ends without an error; otherwise none is, and the temporaries and the
    folders made for them are removed. A report and its figure are then both new or both
    old, never one new beside one old (a full disk, ``ulimit -f``, a bug in the second,
    Ctrl-C between them).

    The renames hold a flock of their folders, so two processes writing the same
    outputs rename one after the other (the last to rename wins every file), and defer
    SIGINT and SIGTERM to their end (in the main thread). SIGKILL cannot be deferred:
    a process killed with it between two renames leaves the first file new and the
    others old (and their temporaries, which the next command writing there removes).
    Blocks nest: an inner block's files wait for the outer block's end."""
    if _held.get() is not None:
        yield
        return
    block = _Block()
    renamed = 0
    try:
        token = _held.set(block)
        try:
            yield
        finally:
            _held.reset(token)
        with _folders_locked([path for _, path in block.files]), _signals_deferred():
            for tmp, path in block.files:
                with errors_about(path):
                    commit(tmp, path)
                renamed += 1
    except BaseException:
        for tmp, _ in block.files[renamed:]:
            Path(tmp).unlink(missing_ok=True)
        remove_folders(block.folders)
        raise


def write_atomic(path: Path, fill: Callable[[BinaryIO], object]) -> None:
    """Let ``fill(handle)`` write a temporary file beside ``path``, fsync, then rename it
    over ``path`` (inside :func:`written_together`, at the block's end). Missing folders
    above ``path`` are created, and removed again if the write fails.

    The file gets the mode a plain new file would get, not mkstemp's 0600.
    """
    path = Path(path)
    held = _held.get()
    made = make_folders(path.parent)
    if held is not None:
        held.folders.extend(made)  # removed by the block if it fails
    try:
        with errors_about(path):
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temporary_prefix(path), suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as handle:
                    os.fchmod(handle.fileno(), umasked(0o666))
                    fill(handle)
                    handle.flush()
                    os.fsync(handle.fileno())
                if held is None:
                    commit(tmp, path)
                else:
                    held.files.append((tmp, path))
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
    except BaseException:
        if held is None:
            remove_folders(made)
        raise


def write_bytes_atomic(path: Path, payload: bytes) -> None:
    """Write ``payload`` atomically (see :func:`write_atomic`)."""
    write_atomic(path, lambda handle: handle.write(payload))


def link_atomic(source: Path, path: Path) -> None:
    """Make ``path`` a hard link to ``source``, replacing it atomically: no second write of
    the same bytes. Where the file system has no hard links, copy ``source`` instead.
    Safe because files here are only ever replaced by rename, never rewritten in place,
    so the two names never change together."""
    path = Path(path)
    tmp = path.parent / f"{temporary_prefix(path)}link"
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        with open(source, "rb") as original:
            write_atomic(path, lambda handle: shutil.copyfileobj(original, handle))
        return
    with errors_about(path):
        commit(tmp, path)


def write_json_atomic(path: Path, obj) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def jsonl_bytes(rows: list[dict]) -> bytes:
    """``rows`` as JSON lines, one object per line."""
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def write_jsonl_atomic(path: Path, rows: list[dict]) -> None:
    write_bytes_atomic(path, jsonl_bytes(rows))
