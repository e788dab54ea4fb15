"""Command-line front end (installed as ``evsim.cli``)."""
