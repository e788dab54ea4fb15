"""Strict parsing of option values: what a user types must mean one thing, or be refused.

Python's ``int`` and ``float`` read any Unicode digit (``int("٣") == 3``) while
``str.isdigit`` accepts characters ``int`` refuses (``"²"``); integers of any size
overflow the int32 counters of the kernels only after the run folder was written; a
float such as 1e308 is a valid Python float but infinity in float32, where training
computes. So every number option goes through one of these types:

- :class:`StrictInt`: ASCII digits only, within [min, max] (max int32 unless smaller);
- :class:`Float32`: a finite number that float32 represents (not 1e308, and not a
  nonzero value that float32 rounds to 0), ASCII only;
- :class:`NonEmptyPath`: a path that is not the empty string (``Path("")`` silently
  means the current folder).

:func:`parse_count` is the same integer rule for values parsed by hand (``--hidden``,
``--dev-interval``).
"""
from __future__ import annotations

import math
import re

import click
import numpy as np

from evsim.errors import ConfigError

INT32_MAX = 2**31 - 1
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_INTEGER = re.compile(r"[+-]?[0-9]+")
_DECIMAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


def parse_count(text: str, name: str, minimum: int = 1, maximum: int = INT32_MAX) -> int:
    """``text`` as an integer in [minimum, maximum], written in ASCII digits.

    Raises
    ------
    ConfigError
        Naming ``name``, the value and the range.
    """
    stripped = str(text).strip()
    if not _INTEGER.fullmatch(stripped):
        raise ConfigError(f"{name} must be a whole number written with the digits 0-9, got {text!r}")
    value = int(stripped)
    if not minimum <= value <= maximum:
        raise ConfigError(f"{name} must be in [{minimum}, {maximum}], got {value}")
    return value


def check_float32(value: float, name: str) -> float:
    """``value`` if float32 holds it as a finite number of the same sign (0 stays 0).

    Raises
    ------
    ConfigError
        If ``value`` is NaN or infinite, beyond float32's range (about 3.4e38), or a
        nonzero value below its smallest (about 1.4e-45) that would become 0.
    """
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    if abs(value) > _FLOAT32_MAX:
        raise ConfigError(f"{name} = {value:g} is beyond float32's range (+-{float(_FLOAT32_MAX):.3g}), in which "
                          "training computes; give a smaller value")
    if value != 0 and np.float32(value) == 0:
        raise ConfigError(f"{name} = {value:g} is 0 in float32, in which training computes; give a larger value "
                          "(or 0)")
    return value


class StrictInt(click.IntRange):
    """``click.IntRange`` that reads ASCII digits only and is bounded by int32 unless
    given a smaller maximum."""

    name = "integer"

    def convert(self, value, param, ctx):
        if isinstance(value, str) and not _INTEGER.fullmatch(value.strip()):
            self.fail(f"{value!r} is not a whole number written with the digits 0-9.", param, ctx)
        number = super().convert(value.strip() if isinstance(value, str) else value, param, ctx)
        if number > INT32_MAX:
            self.fail(f"{number} is larger than {INT32_MAX}, the largest count evsim's int32 counters hold.",
                      param, ctx)
        return number


class Float32(click.FloatRange):
    """``click.FloatRange`` that refuses NaN, infinities (which compare false with every
    bound, so ``FloatRange`` lets NaN through), non-ASCII numerals, and values float32
    cannot hold (:func:`check_float32`)."""

    name = "float32 range"

    def convert(self, value, param, ctx):
        if isinstance(value, str) and not _DECIMAL.fullmatch(value.strip()):
            self.fail(f"{value!r} is not a finite number written with the digits 0-9 (such as 0.001 or 1e-3).",
                      param, ctx)
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        try:
            return check_float32(number, param.name if param is not None else "value")
        except ConfigError as exc:
            self.fail(str(exc), param, ctx)


class NonEmptyPath(click.Path):
    """``click.Path`` that refuses the empty string, which ``Path`` reads as the current folder."""

    def convert(self, value, param, ctx):
        if isinstance(value, str) and not value.strip():
            self.fail("an empty path; give a file or folder name (use . for the current folder)", param, ctx)
        return super().convert(value, param, ctx)
