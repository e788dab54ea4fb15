"""The one boundary every file evsim reads passes: whatever a damaged or hostile file
makes a parser raise becomes one :class:`~evsim.errors.EvsimError` naming the file.

Parsers (gzip, zlib, pickle, tomllib, json, zipfile, NumPy's ``.npy`` reader, h5py,
tonic) raise dozens of exception types on bad input, and some of them only after
trying to allocate what a header declares or recursing as deep as the file nests.
So every reader of a user file runs inside :func:`reading`, and the two ways a small
file can ask for a lot are checked before parsing:

- text formats (TOML, JSON) are read with :func:`read_small_file`: a regular file of
  at most ``MAX_TEXT_BYTES`` (not a FIFO that never ends, not ``/dev/zero``);
- arrays (``.npy`` files, the ``.npy`` members of ``.npz`` checkpoints) have their
  declared shape x itemsize checked against the bytes that hold them
  (:func:`check_npy_file`, :func:`check_npz`) before NumPy allocates them.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import stat
import warnings
import zipfile
from pathlib import Path

import numpy as np

from evsim.errors import DataError, EvsimError
from evsim.host import physical_memory

MAX_TEXT_BYTES = 1 << 20  # a config file, config.json or manifest is a few KiB
# Deflate expands at most about 1032:1; a member that claims more is lying about its size.
_MAX_DEFLATE_RATIO = 1100


def reason(exc: BaseException) -> str:
    """One line describing ``exc``: its type and the first line of its message."""
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    if isinstance(exc, MemoryError):
        return "declares more data than fits in memory"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def declares_beyond_memory(exc: MemoryError) -> bool:
    """Whether ``exc`` is NumPy's refusal of an array larger than the machine's memory (a
    damaged header's size), not a process out of memory."""
    size = getattr(exc, "_total_size", None)
    return isinstance(size, int) and size > physical_memory()


# Errors only code makes, never a file's bytes: a bug in a reader shows as itself, not as
# a damaged file (whose parsers can raise anything else: struct.error, TokenError, ...).
CODE_ERRORS = (NameError, ImportError)


@contextlib.contextmanager
def reading(path: Path, what: str, error: type[EvsimError] = DataError, fix: str = "replace it with a good copy"):
    """Turn any exception raised inside into ``error`` naming ``path`` and ``what`` it
    should be; an EvsimError raised inside (a reader's own check) passes unchanged.

    Raises
    ------
    EvsimError
        ``error(f"{path}: not a readable {what} ({reason}); {fix}")``.
    """
    try:
        yield
    except (EvsimError, *CODE_ERRORS):
        raise
    except MemoryError as exc:
        if not declares_beyond_memory(exc):  # the process ran out, not the file wrong: said as such
            raise
        raise error(f"{path}: not a readable {what} ({reason(exc)}); {fix}") from None
    except Exception as exc:  # noqa: BLE001 -- the point: a damaged file can make a parser raise anything
        raise error(f"{path}: not a readable {what} ({reason(exc)}); {fix}") from None


def reads(what: str, error: type[EvsimError] = DataError, fix="replace it with a good copy"):
    """Decorator: run ``reader(path, ...)`` inside :func:`reading` for its ``path``
    (``fix`` is a text, or a function of the path giving one), after refusing a path
    that exists but is no regular file (opening a FIFO would wait for a writer forever,
    a device such as ``/dev/zero`` never ends)."""
    def wrap(reader):
        @functools.wraps(reader)
        def read(path, *args, **kwargs):
            check_regular(path, what, error)
            with reading(path, what, error, fix(Path(path)) if callable(fix) else fix):
                return reader(path, *args, **kwargs)
        return read
    return wrap


def cannot_read(path: Path, what: str, exc: OSError) -> str:
    """"PATH: cannot read the WHAT (reason); fix", the fix by the reason."""
    fix = {errno.ENOENT: "it is gone (a broken link?): restore it, or remove it",
           errno.EACCES: "fix its permissions", errno.EPERM: "fix its permissions",
           errno.ELOOP: "fix or remove the loop of symbolic links"}.get(exc.errno, "check the file and its disk")
    return f"{path}: cannot read the {what} ({exc.strerror}); {fix}"


def file_kind(mode: int) -> str:
    """'a folder', 'a FIFO' or 'a device or socket': what a path of ``st_mode`` ``mode`` is instead of a file."""
    return "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a device or socket"


def check_regular(path: Path, what: str, error: type[EvsimError] = DataError) -> None:
    """Refuse ``path`` if it exists and is not a regular file (a missing one is left to
    the reader, which says what should be there).

    Raises
    ------
    EvsimError
        ``error``: "PATH: is a FIFO, not a file (WHAT expected); give the path of a regular file".
    """
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return
    if not stat.S_ISREG(mode):
        raise error(f"{path}: is {file_kind(mode)}, not a file ({what} expected); give the path of a regular file")


def read_small_file(path: Path, what: str, error: type[EvsimError] = DataError,
                    max_bytes: int = MAX_TEXT_BYTES) -> bytes:
    """The bytes of ``path``, which must be a regular file of at most ``max_bytes``.

    Opened without blocking, so a FIFO is refused instead of waiting for a writer.

    Raises
    ------
    EvsimError
        ``error`` if the file is missing or unreadable, is not a regular file (a FIFO,
        a device such as ``/dev/zero``, a folder), or is larger than ``max_bytes``.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise error(f"{path}: no such {what} file") from None
    except OSError as exc:
        raise error(cannot_read(path, what, exc)) from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise error(f"{path}: is {file_kind(info.st_mode)}, not a {what} file; give the path of a regular file")
    with os.fdopen(fd, "rb") as handle:
        size = info.st_size
        if size > max_bytes:
            raise error(f"{path}: {size:,} bytes is too large for a {what} (at most {max_bytes:,}); "
                        "give the right file")
        with reading(path, what, error):
            data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:  # grew while being read
        raise error(f"{path}: too large for a {what} (more than {max_bytes:,} bytes); give the right file")
    return data


def read_json(path: Path, what: str, error: type[EvsimError] = DataError,
              fix: str = "restore it, or delete it to have it written again"):
    """The JSON value in ``path``, a regular file of at most ``MAX_TEXT_BYTES``.

    Raises
    ------
    EvsimError
        ``error`` naming the file if it is missing, not a small regular file, not
        UTF-8 JSON, or nested too deeply to parse.
    """
    raw = read_small_file(path, what, error)
    with reading(path, what, error, fix):
        return json.loads(raw.decode())


def npy_header(handle) -> tuple[tuple[int, ...], np.dtype, int]:
    """``(shape, dtype, data bytes)`` declared by the ``.npy`` header at ``handle``'s
    position, read without touching the data.

    Raises
    ------
    ValueError
        If the header is not a valid ``.npy`` header (or the dtype holds objects).
    """
    version = np.lib.format.read_magic(handle)
    with warnings.catch_warnings():
        # NumPy parses the header dict with ast.literal_eval: a damaged one ('\9') would
        # print the compiler's warning before it fails; as an error it fails quietly.
        warnings.simplefilter("error", DeprecationWarning)
        warnings.simplefilter("error", SyntaxWarning)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
        elif version in ((2, 0), (3, 0)):
            shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
        else:
            raise ValueError(f".npy format version {version} is not supported")
    if dtype.hasobject:
        raise ValueError("array of Python objects (needs pickle)")
    count = 1
    for size in shape:
        count *= int(size)
    return tuple(shape), dtype, count * dtype.itemsize


def check_npy_file(path: Path, what: str, error: type[EvsimError] = DataError) -> None:
    """Refuse a ``.npy`` file whose header declares more data than the file holds.

    Raises
    ------
    EvsimError
        ``error`` naming the file, the declared shape and the bytes it really has.
    """
    path = Path(path)
    with reading(path, what, error):
        with open(path, "rb") as handle:
            shape, dtype, nbytes = npy_header(handle)
            held = os.fstat(handle.fileno()).st_size - handle.tell()
    if nbytes > held:
        raise error(f"{path}: its header declares a {dtype} array of shape {shape} ({nbytes:,} bytes) but the "
                    f"file holds {held:,}; the file is truncated or corrupt, replace it")


def load_npy(path: Path, what: str = ".npy file", error: type[EvsimError] = DataError) -> np.ndarray:
    """The array in the ``.npy`` file ``path``, after :func:`check_npy_file`; never unpickled.

    Raises
    ------
    EvsimError
        ``error`` naming the file if it is not a regular ``.npy`` file, is truncated, or holds
        Python objects (loading them would run the file's code).
    """
    check_regular(path, what, error)
    check_npy_file(path, what, error)
    with reading(path, what, error):
        return np.load(path, allow_pickle=False)


def check_npz(path: Path) -> None:
    """Refuse an ``.npz`` archive before NumPy allocates its arrays: every ``.npy``
    member's declared shape x itemsize must fit the bytes the member holds, which must
    fit the archive. For use inside a reader's own error handling (or :func:`reading`).

    Raises
    ------
    ValueError
        Naming the first member whose declared size is impossible.
    zipfile.BadZipFile, OSError
        If ``path`` is not a readable zip archive.
    """
    archive = Path(path).stat().st_size
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                continue
            limit = info.compress_size if info.compress_type == zipfile.ZIP_STORED else \
                _MAX_DEFLATE_RATIO * info.compress_size + 1024
            if info.file_size > limit or info.compress_size > archive:
                raise ValueError(f"member {info.filename} claims {info.file_size:,} bytes, more than the archive "
                                 "can hold")
            with zf.open(info) as member:
                shape, dtype, nbytes = npy_header(member)
            if nbytes > info.file_size:
                raise ValueError(f"member {info.filename} declares a {dtype} array of shape {shape} "
                                 f"({nbytes:,} bytes) but holds {info.file_size:,}")
