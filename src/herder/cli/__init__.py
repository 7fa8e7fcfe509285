"""The ``herder`` command: one module per command group, wired here.

Sub-commands import their heavy dependencies inside their own function, so
``herder --version`` and ``herder --help`` stay fast.
"""

from __future__ import annotations

import enum
import logging
from typing import Annotated

import typer

from herder import __version__
from herder.cli import (
    agent_cmd,
    call_cmd,
    keys_cmd,
    manager_cmd,
    pool_cmds,
    process_cmds,
    services_cmd,
    task_cmds,
    up_cmd,
)
from herder.cli.logsetup import setup_logging

app = typer.Typer(
    name="herder",
    help="Run, supervise and reach processes on a fleet of hosts.\n\n"
    "Start an agent with 'herder agent', then create processes over its REST API "
    "(or with 'herder run'). Errors and warnings go to stderr.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


class LogLevel(enum.StrEnum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


class LogFormat(enum.StrEnum):
    text = "text"
    json = "json"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"herder {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = False,
    log_level: Annotated[
        LogLevel, typer.Option("--log-level", help="Least severe log records shown (on stderr).")
    ] = LogLevel.info,
    log_format: Annotated[
        LogFormat, typer.Option("--log-format", help="text for people, json for log collectors.")
    ] = LogFormat.text,
) -> None:
    """Options that apply to every command."""
    setup_logging(log_level.value, log_format.value)
    # httpx logs every request at INFO; a CLI user wants the answer, not the trace.
    if log_level is not LogLevel.debug:
        logging.getLogger("httpx").setLevel(logging.WARNING)


agent_cmd.register(app)
process_cmds.register(app)
call_cmd.register(app)
pool_cmds.register(app)
manager_cmd.register(app)
task_cmds.register(app)
keys_cmd.register(app)
services_cmd.register(app)
up_cmd.register(app)


def main() -> None:
    """Entry point of the ``herder`` console script."""
    app()


__all__ = ["app", "main"]
