"""Leaky integrate-and-fire neurons and surrogate gradients.

The model (STBP-style discrete LIF, the SD-SNN reference code's default)::

    u[t] = decay * u[t-1] * (1 - o[t-1]) + I[t]      hard reset (default)
    u[t] = decay * u[t-1] - v_th * o[t-1] + I[t]     subtractive reset
    o[t] = H(u[t] - v_th)

with ``I[t] = W x[t] + b``. Backpropagation replaces H' by a surrogate
``g(u - v_th)``; :func:`surrogate_grad` evaluates it. With ``detach_reset`` the
reset term carries no gradient.

References
----------
Wu et al., "Spatio-temporal backpropagation for training high-performance spiking
neural networks", Frontiers in Neuroscience 2018.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from evsim.errors import ConfigError

RESETS = ("hard", "subtract")
SURROGATES = ("rectangular", "triangle", "atan", "fast_sigmoid")
# A threshold or width float32 holds as a positive finite number.
_FLOAT32_TINY, _FLOAT32_MAX = float(np.finfo(np.float32).smallest_subnormal), float(np.finfo(np.float32).max)


class LIFParameters(NamedTuple):
    """LIF neuron parameters (dimensionless; one step = one frame).

    Attributes
    ----------
    decay : membrane leak factor per step, in [0, 1) (default 0.2).
    v_th : firing threshold (default 0.5).
    reset : ``"hard"`` (reset to 0) or ``"subtract"`` (subtract ``v_th``).
    surrogate : ``"rectangular"``, ``"triangle"``, ``"atan"`` or ``"fast_sigmoid"``.
    width : surrogate width: the rectangle's half-width (default 0.5, so
        g = 1 for |u - v_th| < 0.5) and the triangle's half-base; for ``atan`` and
        ``fast_sigmoid`` the slope scale is ``1 / width``.
    detach_reset : if True, no gradient flows through the reset term.
    """

    decay: float = 0.2
    v_th: float = 0.5
    reset: str = "hard"
    surrogate: str = "rectangular"
    width: float = 0.5
    detach_reset: bool = False

    @classmethod
    def from_tau(cls, tau_mem: float, dt: float = 1.0, **kwargs) -> "LIFParameters":
        """Parameterise the leak by a membrane time constant: ``decay = exp(-dt / tau_mem)``."""
        if not tau_mem > 0:
            raise ConfigError(f"tau_mem must be > 0, got {tau_mem}")
        return cls(decay=math.exp(-dt / tau_mem), **kwargs)

    @classmethod
    def from_dict(cls, values, where: str = "lif") -> "LIFParameters":
        """Inverse of ``_asdict()`` for parameters read back from a file: every field must
        be there (a default in place of a lost field would change every spike), with its
        type, finite, and accepted by :meth:`validate`.

        Raises
        ------
        ConfigError
            Naming the first missing, unknown or invalid field (as ``where.field``).
        """
        if not isinstance(values, dict):
            raise ConfigError(f"{where} must be an object of {', '.join(cls._fields)}, got {values!r}")
        missing = [name for name in cls._fields if name not in values]
        if missing:
            raise ConfigError(f"{where} has no {missing[0]!r}")
        unknown = sorted(str(name) for name in values if name not in cls._fields)
        if unknown:
            raise ConfigError(f"{where} has an unknown field {unknown[0]!r}; its fields are {', '.join(cls._fields)}")
        for name, default in cls._field_defaults.items():
            value = values[name]
            if isinstance(default, bool):
                ok, kind = isinstance(value, bool), "true or false"
            elif isinstance(default, float):
                ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                kind = "a finite number"
            else:
                ok, kind = isinstance(value, str), "a string"
            if not ok:
                raise ConfigError(f"{where}.{name} must be {kind}, got {value!r}")
        try:
            return cls(**values).validate()
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None

    def validate(self) -> "LIFParameters":
        """Return self, or raise ConfigError naming the invalid field."""
        for name in ("decay", "v_th", "width"):
            value = getattr(self, name)
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise ConfigError(f"LIF {name} must be a number, got {value!r}")
        if not isinstance(self.detach_reset, (bool, np.bool_)):  # "no" would read as true
            raise ConfigError(f"detach_reset must be True or False, got {self.detach_reset!r}")
        if not 0.0 <= self.decay < 1.0:
            raise ConfigError(f"decay must be in [0, 1), got {self.decay}")
        if not _FLOAT32_TINY <= self.v_th <= _FLOAT32_MAX:  # the kernels compare in float32
            raise ConfigError(f"v_th must be > 0 and finite in float32, got {self.v_th}")
        if self.reset not in RESETS:
            raise ConfigError(f"unknown reset {self.reset!r}; choose one of {', '.join(RESETS)}")
        if self.surrogate not in SURROGATES:
            raise ConfigError(f"unknown surrogate {self.surrogate!r}; choose one of {', '.join(SURROGATES)}")
        if not _FLOAT32_TINY <= self.width <= _FLOAT32_MAX:
            raise ConfigError(f"surrogate width must be > 0 and finite in float32, got {self.width}")
        return self


def surrogate_grad(x: np.ndarray, kind: str = "rectangular", width: float = 0.5) -> np.ndarray:
    """Surrogate derivative of the spike function at ``x = u - v_th``.

    Parameters
    ----------
    x : float32 array of membrane distances to threshold.
    kind : one of :data:`SURROGATES`.
    width : see :class:`LIFParameters`.

    Returns
    -------
    ndarray of the same shape, float32.

    Notes
    -----
    rectangular  g = 1 if |x| < width else 0 (STBP / SD-SNN code, not normalised)
    triangle     g = max(0, 1 - |x| / width) / width
    atan         g = a / (2 (1 + (pi a x / 2)^2)), a = 1 / width (derivative of
                 atan(pi a x / 2) / pi + 1/2, integral 1)
    fast_sigmoid g = 1 / (1 + a |x|)^2 with a = 1 / width (SuperSpike)
    """
    x = np.asarray(x, dtype=np.float32)
    w = np.float32(width)
    if kind == "rectangular":
        return (np.abs(x) < w).astype(np.float32)
    if kind == "triangle":
        return np.maximum(np.float32(0), np.float32(1) - np.abs(x) / w) / w
    if kind == "atan":
        a = np.float32(1.0) / w
        return a / (np.float32(2) * (np.float32(1) + (np.float32(math.pi / 2) * a * x) ** 2))
    if kind == "fast_sigmoid":
        a = np.float32(1.0) / w
        return np.float32(1) / (np.float32(1) + a * np.abs(x)) ** 2
    raise ConfigError(f"unknown surrogate {kind!r}; choose one of {', '.join(SURROGATES)}")


# Seconds per time step in exported NIR graphs: snnTorch's NIR import assumes 0.1 ms.
NIR_DT = 1e-4


def lif_constants(lif: LIFParameters, dt: float = NIR_DT) -> tuple[float, float]:
    """``(tau, r)`` of NIR's continuous LIF (``tau dv/dt = -v + r I``) that forward Euler
    with step ``dt`` turns into ``lif``'s ``decay`` with unit input gain."""
    return dt / (1.0 - lif.decay), 1.0 / (1.0 - lif.decay)
