"""On-disk cache for framed and emulated datasets.

Every cache entry is a folder named by a hash of everything that shapes its content
(dataset, source files, frame count, slicing, crop, denoise, downsampling, code
version), so a changed option can never be served a stale entry. Entries are built in
a temporary sibling folder and renamed into place only when complete: an interrupted
or failed build leaves nothing half-written behind. Processes that need the same entry
at once build it once: the others wait on its lock, then read it.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import pwd
import shutil
import stat
import tempfile
from pathlib import Path

import numpy as np

from evsim.errors import DataError, EvsimError
from evsim.files import clean_stale_temporaries, errors_about, remove_path, temporary_prefix, umasked
from evsim.readers import check_regular, file_kind, read_json, reading


class NotARecording(DataError):
    """A path listed as a recording that is no regular file (a folder, a FIFO)."""


def default_cache_dir() -> Path:
    """``$EVSIM_CACHE`` if set, else ``~/.cache/evsim``; an empty or relative ``$HOME``
    (which would put the cache in ``/`` or wherever the command runs) stands for the
    user's home folder in the password database.

    Raises
    ------
    DataError
        If neither names a home folder.
    """
    env = os.environ.get("EVSIM_CACHE")
    if env:
        return Path(env)
    home = os.environ.get("HOME", "")
    if not os.path.isabs(home):
        try:
            home = pwd.getpwuid(os.getuid()).pw_dir
        except KeyError:
            home = ""
    if not os.path.isabs(home):
        raise DataError("no home folder for the default cache ($HOME is empty or relative); give a cache folder "
                        "with --cache-dir or $EVSIM_CACHE")
    return Path(home) / ".cache" / "evsim"


def resolve_cache_dir(cache_dir: Path | None) -> Path:
    """The cache folder to use: ``cache_dir`` or the default."""
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()


def cache_key(parts: dict) -> str:
    """Stable 16-hex-digit hash of a JSON-serialisable dict."""
    payload = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


_CHUNK = 1 << 20


def files_fingerprint(files: list, labels, relative: bool = True) -> dict:
    """Identity of a file set: count, total size, and one SHA-256 over every file's
    name, label, size and bytes.

    Names are taken relative to the folder that holds them all (``3/00012.bin`` under
    ``Train/``), marked ``"names": "relative"``: the same recordings moved, copied to a
    cluster node's scratch or given as another spelling of their folder are the same data.
    With ``relative`` False, the paths as given, as runs saved before recorded them.

    The bytes are read, not only ``stat``-ed: a recording rewritten with the same size
    and modification time (a copy that keeps times, a restored backup) must not be
    served its old frames. Reading and hashing runs at about 950 MB/s from the page
    cache, 1.5 s for the real N-MNIST's 70,000 recordings (``benchmarks/RESULTS.md``),
    against the 78 s framing them takes.
    """
    digest = hashlib.sha256()
    total = 0
    hashed = set()
    paths = [os.path.abspath(os.fspath(path)) if relative else os.fspath(path) for path in files]
    # every path starts with the folder that holds them all (os.path.relpath costs 20 us a file)
    start = len(os.path.join(os.path.commonpath({path.rpartition(os.sep)[0] or os.sep for path in paths}), "")) \
        if paths and relative else 0
    for path, label in zip(paths, labels):
        # Samples of one file (SHD's HDF5) add its bytes once: once per sample hashed the
        # whole file thousands of times. A file of one sample hashes as it always has.
        first = path not in hashed
        hashed.add(path)
        size = _hash_file(digest, path, path[start:], int(label), contents=first)
        total += size if first else 0
    identity = {"files": len(files), "bytes": total, "contents": digest.hexdigest()[:32]}
    return {**identity, "names": "relative"} if relative else identity


def fingerprint_change(then: dict, now: dict) -> str | None:
    """What differs between two datasets' fingerprints (``{split: files_fingerprint}``), in
    words (``"train 24 -> 26 recordings, test 6 -> 8 recordings"``), or None if nothing does.

    A split fingerprinted with its files' full paths (no ``"names"``: runs saved before
    names were relative) cannot be compared by contents with one of relative names; its
    count and size are compared (:func:`exact_fingerprint` computes the old kind, where
    the files have not moved)."""
    changes = []
    for split in [*then, *(split for split in now if split not in then)]:
        old, new = then.get(split), now.get(split)
        if old == new:
            continue
        if old is None or new is None:
            changes.append(f"{split} split {'added' if old is None else 'gone'}")
        elif old.get("files") != new.get("files"):
            changes.append(f"{split} {old.get('files')} -> {new.get('files')} recordings")
        elif old.get("bytes") != new.get("bytes"):
            changes.append(f"{split} {old.get('bytes'):,} -> {new.get('bytes'):,} bytes in {new.get('files')} "
                           "recordings")
        elif old.get("names") == new.get("names") and old.get("contents") != new.get("contents"):
            changes.append(f"{split} {new.get('files')} recordings of the same size as before, other contents, "
                           "names or labels")
        elif "sensor" in old and old["sensor"] != new.get("sensor"):  # a run saved before it was recorded has none
            changes.append(f"{split} framed for sensor {_size(old['sensor'])} -> {_size(new.get('sensor'))}")
    return ", ".join(changes) or None


def _size(sensor) -> str:
    return "x".join(map(str, sensor)) if isinstance(sensor, list) else str(sensor)


def exact_fingerprint(then: dict, now: dict, listing: dict | None) -> dict:
    """``now`` with each split ``then`` fingerprinted by full paths (a run saved before
    names were relative) fingerprinted that way again from ``listing`` (``{split: (files,
    labels)}``, as the data was found), so that the two compare exactly."""
    if listing is None:
        return now
    return {split: files_fingerprint(*listing[split], relative=False)
            if split in listing and isinstance(then.get(split), dict) and "names" not in then[split] else value
            for split, value in now.items()}


def _hash_file(digest, path, name: str, label: int, contents: bool = True) -> int:
    """Add ``name`` (``path`` as the fingerprint names it), the label, and ``path``'s size
    and (with ``contents``) bytes to ``digest``; return its size. An unreadable file adds
    its name only: its reader says why it cannot be read.

    Raises
    ------
    DataError
        If ``path`` is not a regular file (a folder named like a recording, a FIFO).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        digest.update(f"{name}\0{label}\0unreadable {exc.errno}\n".encode())
        return 0
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise NotARecording(f"{path}: is {file_kind(mode)}, not a recording; remove or rename it")
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        digest.update(f"{name}\0{label}\0{info.st_size}\n".encode())
        for chunk in iter(lambda: handle.read(_CHUNK), b"") if contents else ():
            digest.update(chunk)
    return info.st_size


@contextlib.contextmanager
def atomic_dir(final: Path):
    """Build a folder in a temporary sibling and rename it to ``final`` on success.

    Yields the temporary folder. On an exception the temporary folder is deleted and
    ``final`` is left untouched; an ``OSError`` that names no file (a full disk) is
    reported as one about ``final``. If ``final`` already exists and is not empty (a
    concurrent build finished first), the new build is discarded.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(final.parent)  # what killed builds left beside it (often several MB)
    with errors_about(final):
        tmp = Path(tempfile.mkdtemp(prefix=f"{temporary_prefix(final)}tmp-", dir=final.parent))
        tmp.chmod(umasked(0o777))  # a plain folder's mode, not mkdtemp's private 0700
    try:
        try:
            yield tmp
        except OSError as exc:
            if exc.filename is not None:
                raise
            # a full disk names no file: name the folder being built (deleted below)
            raise OSError(exc.errno, exc.strerror or str(exc), str(final)) from exc
        try:
            os.replace(tmp, final)  # succeeds when final is absent or an empty folder
        except OSError as exc:
            if not (final.is_dir() and any(final.iterdir())):
                raise OSError(exc.errno, exc.strerror, str(final)) from exc
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_entry(folder: Path, check) -> tuple | None:
    """``(check(arrays, meta), meta)`` of a complete cache entry, its arrays memory-mapped
    read-only; ``None`` if there is none or it is corrupt: a file missing, truncated or
    unreadable, or refused by ``check`` (a ``ValueError`` such as DataError)."""
    folder = Path(folder)
    if not (folder / "meta.json").exists():
        return None
    try:
        with reading(folder, "frame cache entry"):
            meta = read_json(folder / "meta.json", "frame cache entry's meta.json")
            arrays = {}
            for name in meta["arrays"]:
                check_regular(folder / f"{name}.npy", "frame cache array")  # np.load would wait on a FIFO
                arrays[name] = np.load(folder / f"{name}.npy", mmap_mode="r", allow_pickle=False)
            return check(arrays, meta), meta
    except EvsimError as exc:  # a ValueError such as DataError from check, or whatever a damaged file raised
        _refuse_unreadable_here(folder, exc)
        return None


# Reasons a sound entry cannot be opened by this process: no damage, so nothing to rebuild.
_NOT_DAMAGE = {errno.EMFILE: "raise the limit on open files (ulimit -n)", errno.ENFILE: "close other programs",
               errno.ENOMEM: "free some memory", errno.EACCES: "fix its permissions",
               errno.EPERM: "fix its permissions"}


def _refuse_unreadable_here(folder: Path, exc: BaseException) -> None:
    """Raise DataError if ``exc`` came from an OSError of this process's limits or rights
    (too many open files, no memory, no permission): deleting and framing the entry again
    would not help, and would throw away a sound one on every run."""
    seen = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _NOT_DAMAGE:
            raise DataError(f"{folder}: cannot read the cache entry ({seen.strerror}); "
                            f"{_NOT_DAMAGE[seen.errno]} and try again") from None
        seen = seen.__cause__ or seen.__context__


def cached_entry(folder: Path, build, check) -> tuple:
    """``(check(arrays, meta), meta)`` of the cache entry in ``folder``, built first by
    ``build(tmp_folder)`` if it is absent or corrupt.

    Raises
    ------
    DataError
        If a corrupt entry cannot be deleted, or the new one cannot be read back; the
        message names the folder to delete.
    """
    folder = Path(folder)
    clean_stale_temporaries(folder.parent)  # builds killed before: on every load, not only on a miss
    entry = load_entry(folder, check)
    if entry is not None:
        return entry
    with building_lock(folder):
        entry = load_entry(folder, check)  # another process may have built it while we waited
        if entry is not None:
            return entry
        if os.path.lexists(folder):  # corrupt (truncated file, bad index): served, it would fail every time
            try:
                remove_path(folder)
            except OSError as exc:
                what = "folder" if folder.is_dir() else "file"
                raise DataError(f"{folder}: cache entry is corrupt and cannot be deleted ({exc.strerror}); "
                                f"delete that {what} and try again") from None
        with atomic_dir(folder) as tmp:
            build(tmp)
        entry = load_entry(folder, check)
        if entry is None:
            raise DataError(f"{folder}: cache entry could not be read back after writing it; "
                            "delete that folder and try again")
        return entry


@contextlib.contextmanager
def building_lock(folder: Path):
    """Hold the exclusive flock of cache entry ``folder`` (waiting for it): processes that
    need the same entry at once (sweep workers on one machine) build it once, the
    others wait and then read it. The kernel releases a flock when its holder exits,
    even killed. The lock file is removed on release, so a waiter that locked the
    removed file opens the current one and locks again."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    path = folder.parent / f".{folder.name}.lock"
    while True:
        with errors_about(folder):
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


def write_meta(folder: Path, meta: dict, arrays: list[str]) -> None:
    """Write ``meta.json`` listing the ``.npy`` arrays that complete the entry."""
    meta = dict(meta, arrays=list(arrays))
    (Path(folder) / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True, default=_plain))


def _plain(value):
    """JSON fallback for NumPy scalars and paths."""
    if isinstance(value, np.generic):
        return value.item()
    return str(value)
