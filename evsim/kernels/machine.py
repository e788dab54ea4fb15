"""The kind of machine the convolution kernels are compiled for: ``"avx512"`` or ``"avx2"``.

The kernels hold 16 float32 lanes, one AVX-512 register; AVX2 splits each in two and has
16 vector registers instead of 32. The kind decides the register blocks of the dense
convolution paths (:mod:`evsim.kernels.conv_direct`, :mod:`evsim.kernels.conv_winograd`)
and the table of crossovers that chooses between paths
(:data:`evsim.kernels.conv_paths.HOST`). Neither changes a sum's order: the blocks only
group the sums, so results are bit-identical across block shapes.

``EVSIM_MACHINE_KIND`` forces a kind (tests and benchmarks compare the two on one
machine; an AVX2 machine runs the AVX-512 blocks, only slower). The kernels' cache stamp
holds the kind (:mod:`evsim.kernels.cache_stamp`), so each kind compiles its own.
"""
from __future__ import annotations

import os

from evsim.errors import ConfigError

KINDS = ("avx512", "avx2")


def host_kind() -> str:
    """The kind Numba compiles for here: the host's CPU, or ``NUMBA_CPU_FEATURES``."""
    import numba
    from llvmlite import binding

    features = numba.config.CPU_FEATURES
    if features:
        return "avx512" if "+avx512f" in features.split(",") else "avx2"
    return "avx512" if binding.get_host_cpu_features().get("avx512f", False) else "avx2"


def _kind() -> str:
    given = os.environ.get("EVSIM_MACHINE_KIND", "")
    forced = given.strip().lower()  # AVX2 as well as avx2
    if not forced:
        return host_kind()
    if forced not in KINDS:
        raise ConfigError(f"EVSIM_MACHINE_KIND={given!r} is not a kind of machine; set one of {', '.join(KINDS)}, "
                          "or unset it to use this machine's")
    return forced


KIND = _kind()
