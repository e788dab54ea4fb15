"""Click options made from the one declaration of every option (:data:`evsim.config.OPTIONS`)."""
from __future__ import annotations

import click

from evsim.config import OPTIONS, Option
from evsim.data import DataOptions
from evsim.errors import ConfigError
from evsim.presets import PRESETS


class DeclaredType(click.ParamType):
    """Reads a value with its :class:`~evsim.config.Option`'s own conversion and check."""

    def __init__(self, option: Option):
        self.option = option
        self.name = {"int": "integer", "float": "number", "path": "folder", "hidden": "sizes",
                     "dev_interval": "N|epoch|auto"}.get(option.kind, option.kind)

    def convert(self, value, param, ctx):
        if value is None or (not isinstance(value, str) and self.option.kind not in ("int", "float")):
            return value  # a preset's or file's value, already converted
        if self.option.kind == "arch" and not value.strip():  # an unset shell variable, not a wish for --hidden
            self.fail("is empty; leave --arch out for the fully connected network of --hidden, or give an "
                      "architecture like 2x32x32-15C3-AP2-300-10", param, ctx)
        try:
            return self.option.convert(value)
        except ConfigError as exc:
            self.fail(str(exc).removeprefix(self.option.flag + " "), param, ctx)


def integer(low: int | None = None, high: int | None = None) -> DeclaredType:
    """The click type of a whole-number option outside :data:`~evsim.config.OPTIONS`
    (``evsim eval --batch-size``, ...), read by the same rule: ASCII digits, within
    [low, high] and int32."""
    return DeclaredType(Option("value", "int", None, "", "", low=low, high=high))


def number(low: float | None = None, low_open: bool = False, high: float | None = None) -> DeclaredType:
    """The click type of a number option outside :data:`~evsim.config.OPTIONS` (``evsim
    profile --e-ac``, ...), read by the same rule: a finite number float32 holds, >= low
    (> low with ``low_open``), < high."""
    return DeclaredType(Option("value", "float", None, "", "", low=low, high=high, low_open=low_open))


_ANY_PATH = Option("path", "path", None, "", "")


class NonEmptyPath(click.Path):
    """``click.Path`` that refuses the empty string (which ``Path`` reads as the current
    folder), by the same rule as the declared path options."""

    def convert(self, value, param, ctx):
        if isinstance(value, str):
            try:
                _ANY_PATH.convert(value)
            except ConfigError as exc:
                message = str(exc).removeprefix(_ANY_PATH.flag + " ")
                if not self.dir_okay:  # "." is a folder: name what is wanted instead
                    message = message.replace("(give . for that)", "(give the path of a file)")
                self.fail(message, param, ctx)
        return super().convert(value, param, ctx)


def _defaults_text(option: Option) -> str:
    """``[default: 15; nmnist 12]``: the declared default and the presets that change it."""
    def show(value):
        if isinstance(value, (tuple, list)):
            return ",".join(str(v) for v in value)
        if option.kind == "arch" and value == "":
            return "<inputs>-<hidden>-<classes>"
        return "off" if value is False else "on" if value is True else str(value)

    if "[default" in option.help:
        return ""  # the help says what the default means
    by_dataset = [f"{name} {show(values[option.name])}" for name, values in PRESETS.items()
                  if option.name in values and values[option.name] != option.default]
    return f" [default: {show(option.default)}" + (f"; {', '.join(by_dataset)}" if by_dataset else "") + "]"


def click_option(option: Option, default_from_declaration: bool, defaults_text: str | None = None):
    """The click option of ``option``. With ``default_from_declaration`` False the option
    defaults to None, so that a config file or preset can fill what the command line left
    unset (``evsim train``); its help still shows the defaults (``defaults_text``, else
    the declared ones)."""
    default = option.default if default_from_declaration else None
    help_text = option.help + (_defaults_text(option) if defaults_text is None else defaults_text)
    if option.kind == "bool":
        return click.option(f"{option.flag}/--no-{option.flag[2:]}", default=default, help=help_text)
    if option.kind == "choice":
        return click.option(option.flag, type=click.Choice(option.choices), default=default, help=help_text)
    return click.option(option.flag, type=DeclaredType(option), default=default, help=help_text)


def declared_options(fn, data_only: bool = False, default_from_declaration: bool = True):
    """Decorate a command with the declared options (only the data ones with ``data_only``)."""
    for option in reversed([o for o in OPTIONS if o.data or not data_only]):
        # Commands that read a run or a dataset take T from it unless told.
        from_data = data_only and option.name == "time_steps"
        text = f" [default: a run's own T; else{_defaults_text(option).removeprefix(' [default:')}" if from_data else None
        fn = click_option(option, default_from_declaration and not from_data, text)(fn)
    return fn


def dataset_options(fn):
    """Options that choose and shape a dataset (``--dataset``, ``--data-dir``, ...); T
    defaults to None (the run's or the dataset's)."""
    return declared_options(fn, data_only=True)


def option_names(decorator) -> tuple[str, ...]:
    """The names click gives the parameters that ``decorator`` adds to a command, in order."""
    def probe(**kwargs):
        """Stands for a command."""

    return tuple(param.name for param in click.command()(decorator(probe)).params)


# The parameters of dataset_options, as click names them (e.g. "data_dir").
DATASET_OPTION_NAMES = option_names(dataset_options)


def data_options_from(kwargs: dict, time_steps: int, seed: int = 0) -> DataOptions:
    """Build :class:`DataOptions` from parsed click options (pops the data keys)."""
    data_dir = kwargs.pop("data_dir")  # else the loader reads $EVSIM_DATA, and names it if it is no folder
    kwargs.pop("time_steps", None)
    return DataOptions(
        data_dir=data_dir,
        cache_dir=kwargs.pop("cache_dir"),
        source=kwargs.pop("source"),
        time_steps=time_steps,
        encoding=kwargs.pop("encoding"),
        slicing=kwargs.pop("slicing"),
        crop=kwargs.pop("crop"),
        denoise_us=kwargs.pop("denoise_us"),
        downsample=kwargs.pop("downsample"),
        seed=seed,
    )
