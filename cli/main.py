"""The ``evsim`` command: a click group; each subcommand lives in its own module."""
from __future__ import annotations

import sys

import click

from evsim.errors import EvsimError


class EvsimGroup(click.Group):
    """Turns every deliberate EvsimError into a one-line message and exit code 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except EvsimError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=EvsimGroup)
@click.version_option(package_name="evsim")
def main():
    """evsim: event-driven spiking neural network simulation and training on CPU."""


from evsim.cli.data import data  # noqa: E402
from evsim.cli.train import train  # noqa: E402

main.add_command(data)
main.add_command(train)
