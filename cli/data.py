"""``evsim data ...``: inspect, show and emulate datasets."""
from __future__ import annotations

import click


@click.group()
def data():
    """Inspect, show and emulate datasets."""
