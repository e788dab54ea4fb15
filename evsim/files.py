"""Atomic file writes: a result file is either the old one or the complete new one."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
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
    """Report an ``OSError`` raised inside as one about ``path``, the name the user chose,
    not about the temporary name beside it that was really being written."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None:
            raise
        raise OSError(exc.errno, exc.strerror, str(path)) from exc


def write_atomic(path: Path, fill: Callable[[BinaryIO], object]) -> None:
    """Let ``fill(handle)`` write a temporary file beside ``path``, fsync, then rename it
    over ``path``.

    The file gets the mode a plain new file would get, not mkstemp's 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with errors_about(path):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                os.fchmod(handle.fileno(), umasked(0o666))
                fill(handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
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
    tmp = path.parent / f".{path.name}.{os.getpid()}.link"
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        with open(source, "rb") as original:
            write_atomic(path, lambda handle: shutil.copyfileobj(original, handle))
        return
    with errors_about(path):
        os.replace(tmp, path)


def write_json_atomic(path: Path, obj) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def jsonl_bytes(rows: list[dict]) -> bytes:
    """``rows`` as JSON lines, one object per line."""
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def write_jsonl_atomic(path: Path, rows: list[dict]) -> None:
    write_bytes_atomic(path, jsonl_bytes(rows))
