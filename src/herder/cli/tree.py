"""The ``herder`` command tree (typer): one module per command group, wired here.

Every command is defined here, with its help and its errors; ``herder.cli.quick`` runs
the everyday ones faster when it can, and leaves the rest to this tree.

Sub-commands import their heavy dependencies inside their own function, so
``herder --version`` and ``herder --help`` stay fast. And since typer turns every
registered function into a command at each start (a few hundred microseconds apiece,
some 40 of them), ``main`` wires only the module of the command being run when it can
tell which one that is (``_command_of``); anything else gets the whole tree.
"""

from __future__ import annotations

import enum
import logging
import os
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Annotated

import typer

from herder import __version__
from herder.cli import (
    agent_cmd,
    call_cmd,
    certs_cmd,
    keys_cmd,
    manager_cmd,
    pool_cmds,
    process_cmds,
    schedule_cmds,
    services_cmd,
    task_cmds,
    up_cmd,
)
from herder.cli.logsetup import setup_logging

# Every module that adds commands, in the order ``herder --help`` lists them.
COMMAND_MODULES: tuple[ModuleType, ...] = (
    agent_cmd,
    process_cmds,
    call_cmd,
    pool_cmds,
    manager_cmd,
    task_cmds,
    schedule_cmds,
    keys_cmd,
    certs_cmd,
    services_cmd,
    up_cmd,
)

# Options of the top-level callback that take a value (as in ``herder --log-level debug ps``).
_VALUED_OPTIONS = ("--log-level", "--log-format", "--agent", "--manager", "--token-file")


def _new_app() -> typer.Typer:
    return typer.Typer(
        name="herder",
        help="Run, supervise and reach processes on a fleet of hosts.\n\n"
        "Start an agent with 'herder agent', then create processes over its REST API "
        "(or with 'herder run'). Errors and warnings go to stderr.",
        no_args_is_help=True,
        add_completion=True,
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
    agent: Annotated[
        str | None,
        typer.Option("--agent", metavar="URL", help="The agent's URL, for every command that talks to one."),
    ] = None,
    manager: Annotated[
        str | None,
        typer.Option(
            "--manager", metavar="URL", help="The manager's URL, for every command that talks to one."
        ),
    ] = None,
    token_file: Annotated[
        str | None,
        typer.Option(
            "--token-file", metavar="FILE", help="File with the bearer token every request carries."
        ),
    ] = None,
) -> None:
    """Options that apply to every command.

    ``--agent``, ``--manager`` and ``--token-file`` may come before the command
    (``herder --agent URL ps``) or after it; after it, they win. Given before, they are
    passed on as the variables the commands read (HERDER_AGENT_URL, ...), which they
    then override.
    """
    given: list[tuple[str | None, tuple[str, ...]]] = [
        (agent, ("HERDER_AGENT_URL",)),
        (manager, ("HERDER_MANAGER_URL",)),
        (token_file, ("HERDER_TOKEN_FILE", "HERDER_MANAGER_TOKEN_FILE")),
    ]
    for value, names in given:
        for name in names:
            if value is not None:
                os.environ[name] = value
    setup_logging(log_level.value, log_format.value)
    # httpx logs every request at INFO; a CLI user wants the answer, not the trace.
    if log_level is not LogLevel.debug:
        logging.getLogger("httpx").setLevel(logging.WARNING)


def build_app(modules: Sequence[ModuleType] = COMMAND_MODULES) -> typer.Typer:
    """The ``herder`` command with the commands of these modules."""
    built = _new_app()
    built.callback()(main_options)
    for module in modules:
        module.register(built)
    return built


def _names_of(module: ModuleType) -> set[str]:
    """The top-level command and group names a module registers."""
    probe = typer.Typer()
    module.register(probe)
    names: set[object] = {info.name for info in probe.registered_commands}
    for group in probe.registered_groups:
        names.add(group.name or (group.typer_instance.info.name if group.typer_instance else None))
    return {name for name in names if isinstance(name, str)}


def _command_of(argv: Sequence[str]) -> str | None:
    """The command ``argv`` runs (its first word after the top-level options), if any."""
    words = iter(argv)
    for word in words:
        if word in _VALUED_OPTIONS:
            next(words, None)
        elif word.startswith("-"):
            if word in ("-h", "--help", "--version"):
                return None  # the whole tree answers these
        else:
            return word
    return None


def main() -> None:
    """Entry point of the ``herder`` console script."""
    command = _command_of(sys.argv[1:])
    owners = [m for m in COMMAND_MODULES if command is not None and command in _names_of(m)]
    build_app(owners if len(owners) == 1 else COMMAND_MODULES)()


app = build_app()


__all__ = ["app", "main"]
