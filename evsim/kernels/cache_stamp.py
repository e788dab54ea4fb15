"""Numba's on-disk cache of the kernels, made fresh for the whole package at once.

Numba stamps a cached function with its own file's content, but a compiled kernel also
holds every ``@njit`` function it calls from other files and every module constant it
reads (a register block's shape, say). After a ``git pull`` into an editable install,
a kernel whose file did not change would load stale machine code built around another
file's old constants: wrong results, or memory corrupted past a scratch buffer. Here
every kernel is stamped with a hash of all the files of :mod:`evsim.kernels` and the
machine kind it is compiled for (:mod:`evsim.kernels.machine`), so any change to any of
them, or another forced kind, recompiles them all. The cache stays where Numba would put
it (``NUMBA_CACHE_DIR``, else beside the sources or in the user's cache).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from numba.core import caching

from evsim.kernels.machine import KIND

KERNELS = Path(__file__).resolve().parent
# Numba 0.62 made its cache implementation public (CacheImpl, was _CacheImpl).
_IMPL = getattr(caching, "CacheImpl", None) or getattr(caching, "_CacheImpl")


def package_stamp(folder: Path = KERNELS, kind: str = KIND) -> str:
    """sha256 of every ``.py`` file of ``folder`` (names and contents, in name order) and ``kind``."""
    digest = hashlib.sha256(kind.encode())
    for path in sorted(folder.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


class PackageStampLocator(caching._CacheLocator):
    """The locator Numba would choose for a kernel, its stamp joined with :func:`package_stamp`."""

    stamp = ""

    def __init__(self, inner):
        self._inner = inner

    def ensure_cache_path(self):
        self._inner.ensure_cache_path()

    def get_cache_path(self):
        return self._inner.get_cache_path()

    def get_source_stamp(self):
        return self._inner.get_source_stamp(), self.stamp

    def get_disambiguator(self):
        return self._inner.get_disambiguator()

    @classmethod
    def from_function(cls, py_func, py_file):
        if Path(py_file).resolve().parent != KERNELS:
            return None
        for locator in _IMPL._locator_classes:
            if locator is not cls:
                inner = locator.from_function(py_func, py_file)
                if inner is not None:
                    return cls(inner)
        return None


def install() -> None:
    """Put :class:`PackageStampLocator` first in Numba's list (once)."""
    if PackageStampLocator not in _IMPL._locator_classes:
        PackageStampLocator.stamp = package_stamp()
        _IMPL._locator_classes.insert(0, PackageStampLocator)
