"""A sweep file, checked whole and expanded into points.

A sweep file is TOML with three parts::

    [base]                          # options of every point: the keys of `evsim train --config`
    dataset = "nmnist"
    epochs = 12

    [axes]                          # each a non-empty list; a point per combination
    structure = ["sdsnn", "none"]
    seed = [0, 1, 2]

    [[tied]]                        # points whose option is another point's result
    structure = ["magnitude", "set"]            # their own values (lists, combined)
    to = { structure = "sdsnn" }                # tied to the point with these axis values, the others equal
    take = { target_sparsity = "developing_sparsity" }  # option = that run's summary.json field

Every point is an ordinary run folder under the sweep folder, named by its axis values
in the file's order (``structure=sdsnn,seed=0``). Each point must resolve to a valid
``evsim train`` configuration before anything runs; a tied point is checked with its
taken option left to the base, preset or default until its run is known.
"""
from __future__ import annotations

import difflib
import itertools
import json
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from evsim.errors import ConfigError
from evsim.network import parse_spec
from evsim.readers import read_small_file
from evsim.sweep.point import comparable
from evsim.sweep.training import TrainConfig, config_dict, option_kind, option_names, point_config

SECTIONS = ("base", "axes", "tied")
TIED_KEYS = ("to", "take")
# summary.json fields a tied point may take (numbers that describe a finished run), and their kinds.
TAKEABLE = {"compression": "float", "developing_sparsity": "float", "neurons_pruned": "float", "test_acc": "float",
            "best_test_acc": "float", "synapses": "int", "sops_per_sample": "float", "energy_uj_per_sample": "float"}
MAX_FILE_BYTES = 1 << 20
LOG_SUFFIX = ".log"  # each point's output: logs/<point name>.log
# A point's name is a file name (its folder's, its log's): NAME_MAX of common file systems.
MAX_NAME_BYTES = 255 - len(LOG_SUFFIX)


@dataclass(frozen=True)
class Point:
    """One run of a sweep.

    name : its folder's name, from ``axes``.
    axes : the values it takes on each axis (and on a tied table's own keys), in order.
    options : every option the sweep file gives it (base, then axes).
    tied_to : the name of the point whose result it takes, or None.
    take : option -> summary field of ``tied_to``'s run.
    """

    name: str
    axes: dict
    options: dict
    tied_to: str | None = None
    take: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Sweep:
    """A checked sweep file: its points, parents before the points tied to them."""

    path: Path
    points: tuple[Point, ...]
    axes: tuple[str, ...]

    def point(self, name: str) -> Point:
        return next(p for p in self.points if p.name == name)


def read_sweep(path: Path) -> Sweep:
    """Read and check a sweep file (structure, keys and values' shapes; not yet the options).

    Raises
    ------
    ConfigError
        One line naming the file and the key at fault.
    """
    path = Path(path)
    values = _read_toml(path)
    for key in values:
        if key not in SECTIONS:
            raise ConfigError(f"{path}: unknown section {key!r}{_hint(key, SECTIONS)}; a sweep file has "
                              "[base], [axes] and [[tied]]")
    valid = option_names()
    base = _table(path, values, "base")
    axes = _table(path, values, "axes")
    if not base and not axes:  # else an empty file would train every default
        raise ConfigError(f"{path}: no [base] or [axes]; nothing to sweep")
    for key, value in base.items():
        _check_option(path, f"[base] {key}", key, valid)
        if isinstance(value, dict):
            raise ConfigError(f"{path}: [base] {key} is a table; give it a value")
    for key, value in axes.items():
        _check_option(path, f"[axes] {key}", key, valid)
        if key in base:
            raise ConfigError(f"{path}: {key} is both in [base] and in [axes]; keep one")
        _check_axis(path, f"[axes] {key}", value)
        if key == "arch" and any(isinstance(item, str) and not item.strip() for item in value):
            # "" would silently mean the fully connected network of hidden
            raise ConfigError(f"{path}: [axes] arch holds an empty architecture \"\"; give the fully connected "
                              "network as a string like \"784-800-10\"")
    if "hidden" in axes and "arch" in axes:  # an arch wins over hidden: points that differ only by name
        raise ConfigError(f"{path}: [axes] hidden and [axes] arch both give the network; vary one of them (an arch "
                          "string can be fully connected, e.g. \"784-16-10\")")
    if "hidden" in axes and base.get("arch"):  # the arch would win: every point the same network
        raise ConfigError(f"{path}: [axes] hidden varies a fully connected network but [base] arch = "
                          f"{base['arch']!r} fixes the network; vary arch in [axes] instead, or remove it from [base]")
    tied = values.get("tied", [])
    if not isinstance(tied, list) or not all(isinstance(t, dict) for t in tied):
        raise ConfigError(f"{path}: tied must be an array of tables ([[tied]])")

    names = list(axes)
    combos = [dict(zip(names, combo)) for combo in itertools.product(*axes.values())]
    points = []
    for combo in combos:
        points.append(Point(point_name(combo), combo, {**base, **combo}))
    for number, table in enumerate(tied, 1):
        points += _tied_points(path, f"[[tied]] #{number}", table, base, axes, combos, valid)
    seen = {}
    for p in points:
        if len(p.name.encode()) > MAX_NAME_BYTES:
            raise ConfigError(f"{path}: a point's name is {len(p.name.encode())} bytes, more than a folder name may "
                              f"hold ({MAX_NAME_BYTES}): {p.name[:60]}...; give shorter axis values")
        if p.name in seen:
            fix = ("give them different axis values" if p.axes == seen[p.name].axes else
                   "their axis values differ only in characters a folder name replaces with _; give values that "
                   "differ in letters or digits")
            raise ConfigError(f"{path}: two points are both named {p.name!r} ({_describe(seen[p.name])} and "
                              f"{_describe(p)}); {fix}")
        seen[p.name] = p
    return Sweep(path, tuple(points), tuple(names))


def resolve_points(sweep: Sweep, out: Path) -> dict[str, TrainConfig]:
    """Each point's training configuration, every point checked before any runs.

    Raises
    ------
    ConfigError
        Naming the file and the first point whose options are no valid run.
    """
    configs = {p.name: point_config(p.options, Path(out) / p.name, f"{sweep.path}: point {p.name}")
               for p in sweep.points}
    seen: dict[str, str] = {}
    for p in sweep.points:
        if p.tied_to:  # its taken option is not known yet
            continue
        values = comparable(config_dict(configs[p.name]))
        if values["arch"]:  # 15C3 and 15c3p1 are one network: compare its parts, not the string as written
            values["arch"] = parse_spec(values["arch"])
        run = json.dumps(values, sort_keys=True)
        if run in seen:  # 50 and 50.0, "8,8" and [8, 8]: one run, trained twice and counted twice
            raise ConfigError(f"{sweep.path}: points {seen[run]} and {p.name} are the same run (their axis values are "
                              "two spellings of one value); give each axis distinct values")
        seen[run] = p.name
    return configs


def point_name(values: dict) -> str:
    """A folder name from axis values: ``structure=sdsnn,seed=0`` (lists joined by ``-``,
    characters other than letters, digits, ``.``, ``_``, ``+`` and ``-`` replaced by ``_``)."""
    if not values:
        return "run"
    return ",".join(f"{key}={_name_value(value)}" for key, value in values.items())


def _name_value(value) -> str:
    if isinstance(value, list):
        return "-".join(_name_value(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return re.sub(r"[^A-Za-z0-9._+-]", "_", str(value))


def _tied_points(path, where, table, base, axes, combos, valid) -> list[Point]:
    for key in ("to", "take"):
        if not isinstance(table.get(key), dict) or not table[key]:
            raise ConfigError(f"{path}: {where} needs {key} = {{ ... }}, a non-empty inline table")
    own = {key: value for key, value in table.items() if key not in TIED_KEYS}
    if not own:
        raise ConfigError(f"{path}: {where} gives no values of its own (e.g. structure = [\"magnitude\"])")
    for key, value in own.items():
        _check_option(path, f"{where} {key}", key, valid)
        if key in base:
            raise ConfigError(f"{path}: {where} {key} is also in [base]; put it in [axes] to vary it")
        _check_axis(path, f"{where} {key}", value)
    for key, value in table["to"].items():
        if key not in axes:
            raise ConfigError(f"{path}: {where} to.{key}: not an axis; choose from {', '.join(axes) or 'none'}")
        if value not in axes[key]:
            raise ConfigError(f"{path}: {where} to.{key} = {value!r} is not among [axes] {key} = {axes[key]!r}")
    for key, source in table["take"].items():
        _check_option(path, f"{where} take.{key}", key, valid)
        if key in own or key in axes:
            raise ConfigError(f"{path}: {where} take.{key}: the option is also given a value; take it or set it")
        if source not in TAKEABLE:
            raise ConfigError(f"{path}: {where} take.{key} = {source!r}: not a summary field to take; "
                              f"choose from {', '.join(TAKEABLE)}")
        _check_takes(path, f"{where} take.{key} = {source!r}", option_kind(key), TAKEABLE[source])
    points = []
    for parent in combos:
        if any(parent[key] != value for key, value in table["to"].items()):
            continue
        for combo in itertools.product(*own.values()):
            values = {**parent, **dict(zip(own, combo))}
            points.append(Point(point_name(values), values, {**base, **values}, point_name(parent),
                                dict(table["take"])))
    return points


def _check_takes(path: Path, where: str, option: str, field: str) -> None:
    """Refuse an option of kind ``option`` taking a summary field of kind ``field``."""
    if option not in ("int", "float"):
        raise ConfigError(f"{path}: {where}: the option is no number; take a result into a number option")
    if option == "int" and field != "int":
        integers = ", ".join(name for name, kind in TAKEABLE.items() if kind == "int")
        raise ConfigError(f"{path}: {where}: the option takes an integer, and that field is a fraction; "
                          f"take an integer field ({integers}) or into an option that takes fractions")


def _read_toml(path: Path) -> dict:
    text = read_small_file(path, "sweep", ConfigError, MAX_FILE_BYTES)  # a regular file, not too big
    try:
        return tomllib.loads(text.decode("utf-8-sig"))  # a byte-order mark, invisible in editors, is dropped
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a text file ({exc.reason}); a sweep file is UTF-8 TOML") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deep to be a sweep file") from None


def _table(path: Path, values: dict, name: str) -> dict:
    table = values.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: {name} must be a table ([{name}])")
    return table


def _check_option(path: Path, where: str, key: str, valid: list[str]) -> None:
    if key not in valid:
        raise ConfigError(f"{path}: {where}: unknown option {key!r}{_hint(key, valid)}; valid options: "
                          f"{', '.join(sorted(valid))}")


def _check_axis(path: Path, where: str, value) -> None:
    if not isinstance(value, list):
        raise ConfigError(f"{path}: {where} must be a list of values (an axis), got {value!r}")
    if not value:
        raise ConfigError(f"{path}: {where} is an empty list; give it at least one value")
    for item in value:
        if isinstance(item, dict):
            raise ConfigError(f"{path}: {where} holds a table; give it values")
        if isinstance(item, float) and not math.isfinite(item):
            raise ConfigError(f"{path}: {where} holds {item!r}; give finite numbers")
    if len({repr(item) for item in value}) < len(value):
        raise ConfigError(f"{path}: {where} = {value!r} repeats a value")


def _hint(key: str, valid) -> str:
    close = difflib.get_close_matches(key.replace("-", "_"), list(valid), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _describe(p: Point) -> str:
    return f"tied to {p.tied_to}" if p.tied_to else "an [axes] point"
