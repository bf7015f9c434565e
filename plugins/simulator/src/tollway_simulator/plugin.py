"""Tollway plugin: registers the ``simulate`` command."""

from __future__ import annotations

import click

from tollway import hookimpl
from tollway_simulator.cli import simulate


@hookimpl
def register_commands(cli: click.Group) -> None:
    cli.add_command(simulate)  # the click command defined in this package
