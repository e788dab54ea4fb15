"""``evsim train``."""
import click


@click.command()
def train():
    """Train a spiking network."""
