"""Numba kernels: small pure functions, one operation a file. Importing the package puts
the cache stamp of :mod:`evsim.kernels.cache_stamp` in place before any kernel compiles."""
from evsim.kernels.cache_stamp import install as _install_cache_stamp

_install_cache_stamp()
