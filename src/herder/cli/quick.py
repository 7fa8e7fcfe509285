"""The quick path: the everyday commands parsed and run without typer.

``run_quick(argv)`` runs ``argv`` and returns True when it is one of ``COMMANDS`` with
options it fully understands; otherwise (``--help``, ``--version``, an unknown option,
a value that does not convert, shell completion) it returns False having done nothing,
and the typer tree (``herder.cli.tree``) runs the command instead, with its help and
its error messages. The two must accept the same options: ``tests/test_cli_quick.py``
compares every quick command's options with its typer twin's.

The parse follows click's rules where both accept the input: options and arguments in
any order, ``--name=value``, ``--`` ending the options, the value of an option taken
from its environment variable when it is not given, the top-level options (``--agent``,
``--manager``, ``--token-file``, ``--log-level``, ``--log-format``) before the command.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from herder.cli.agent_ops import DEFAULT_AGENT_URL
from herder.cli.manager_ops import DEFAULT_MANAGER_URL, TASK_STATUSES

# Names for the type checker only: typing, dataclasses and pathlib took ~15 ms of a quick command.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class Unsure(Exception):
    """The quick path does not take this command line: the typer tree will."""


class Opt:
    """An option: its names, where its value goes, and how it is read.

    ``kind``: ``flag`` (no value), ``str``, ``int``, ``path`` (any path), ``file`` (an
    existing file, else typer says so), ``multi`` (repeatable, a list), or ``choice``.
    Paths are passed on as text.
    """

    def __init__(
        self,
        names: tuple[str, ...],
        dest: str,
        kind: str = "str",
        envvar: str | None = None,
        default: Any = None,
        choices: tuple[str, ...] = (),
    ) -> None:
        self.names = names
        self.dest = dest
        self.kind = kind
        self.envvar = envvar
        self.default = default
        self.choices = choices

    def __repr__(self) -> str:
        return f"Opt({self.names!r}, {self.dest!r}, {self.kind!r})"


class Spec:
    """A quick command: its words, its arguments (the last may be ``*name``: the rest)."""

    def __init__(
        self,
        words: tuple[str, ...],
        args: tuple[str, ...],
        options: tuple[Opt, ...],
        run: Callable[[dict[str, Any]], None],
    ) -> None:
        self.words = words
        self.args = args
        self.options = options
        self.run = run

    def __repr__(self) -> str:
        return f"Spec({' '.join(self.words)!r})"


# Top-level options before the command (``herder --agent URL ps``); the typer tree's
# ``main_options`` takes the same.
LOG_LEVELS = ("debug", "info", "warning", "error")
TOP_OPTIONS = (
    Opt(("--log-level",), "log_level", "choice", choices=LOG_LEVELS),
    Opt(("--log-format",), "log_format", "choice", choices=("text", "json")),
    Opt(("--agent",), "agent"),
    Opt(("--manager",), "manager"),
    Opt(("--token-file",), "token_file"),
)

AGENT = Opt(("--agent",), "agent", envvar="HERDER_AGENT_URL", default=DEFAULT_AGENT_URL)
AGENT_TOKEN = Opt(("--token-file",), "token_file", "path", envvar="HERDER_TOKEN_FILE")
MANAGER = Opt(("--manager",), "manager", envvar="HERDER_MANAGER_URL", default=DEFAULT_MANAGER_URL)
MANAGER_TOKEN = Opt(("--token-file",), "token_file", "file", envvar="HERDER_MANAGER_TOKEN_FILE")
JSON = Opt(("--json",), "as_json", "flag", default=False)


def _ps(v: dict[str, Any]) -> None:
    from herder.cli.agent_ops import ps

    ps(v["agent"], v["token_file"], v["as_json"])


def _status(v: dict[str, Any]) -> None:
    from herder.cli.agent_ops import status

    status(v["agent"], v["token_file"], v["slug"])


def _logs(v: dict[str, Any]) -> None:
    from herder.cli.agent_ops import logs

    if v["lines"] is not None and v["lines"] < 0:
        raise Unsure("-n below 0")  # typer words the error
    logs(v["agent"], v["token_file"], v["slug"], follow=v["follow"], lines=v["lines"], build=v["build"])


def _action(verb: str) -> Callable[[dict[str, Any]], None]:
    def run(v: dict[str, Any]) -> None:
        from herder.cli.agent_ops import action

        action(v["agent"], v["token_file"], verb, v["slug"], v["as_json"])

    return run


def _reload(v: dict[str, Any]) -> None:
    from herder.cli.reload_ops import reload

    reload(v["agent"], v["token_file"], v["as_json"])


def _tasks_ls(v: dict[str, Any]) -> None:
    from herder.cli.manager_ops import ls_tasks

    ls_tasks(v["manager"], v["token_file"], v["status"], v["as_json"])


def _tasks_submit(v: dict[str, Any]) -> None:
    from herder.cli.manager_ops import SettingsError, parse_settings, submit, submit_body

    try:
        settings = parse_settings(v["settings_json"], v["setting"])
    except SettingsError as exc:
        raise Unsure(str(exc)) from None  # typer words the error
    if v["argv"]:
        if v["task_type"] != "command":
            raise Unsure("a program for a task that is not a command")
        settings["argv"] = v["argv"]
    body = submit_body(
        v["task_type"],
        settings,
        priority=v["priority"],
        tags=v["tag"],
        parser=v["parser"],
        task_id=v["task_id"],
        max_attempts=v["max_attempts"],
    )
    submit(v["manager"], v["token_file"], body, v["as_json"])


def _workers_ls(v: dict[str, Any]) -> None:
    from herder.cli.manager_ops import ls_workers

    ls_workers(v["manager"], v["token_file"], v["as_json"])


_SLUG = ("slug",)
COMMANDS: tuple[Spec, ...] = (
    Spec(("ps",), (), (JSON, AGENT, AGENT_TOKEN), _ps),
    Spec(("status",), _SLUG, (AGENT, AGENT_TOKEN), _status),
    Spec(
        ("logs",),
        _SLUG,
        (
            Opt(("--follow", "-f"), "follow", "flag", default=False),
            Opt(("--lines", "-n"), "lines", "int"),
            Opt(("--build",), "build", "flag", default=False),
            AGENT,
            AGENT_TOKEN,
        ),
        _logs,
    ),
    Spec(("rm",), _SLUG, (JSON, AGENT, AGENT_TOKEN), _action("delete")),
    Spec(("restart",), _SLUG, (JSON, AGENT, AGENT_TOKEN), _action("restart")),
    Spec(("stop",), _SLUG, (JSON, AGENT, AGENT_TOKEN), _action("stop")),
    Spec(("start",), _SLUG, (JSON, AGENT, AGENT_TOKEN), _action("start")),
    Spec(("reload",), (), (JSON, AGENT, AGENT_TOKEN), _reload),
    Spec(
        ("tasks", "ls"),
        (),
        (Opt(("--status",), "status", "choice", choices=TASK_STATUSES), JSON, MANAGER, MANAGER_TOKEN),
        _tasks_ls,
    ),
    Spec(
        ("tasks", "submit"),
        ("task_type", "*argv"),
        (
            Opt(("--settings",), "settings_json"),
            Opt(("--setting", "-s"), "setting", "multi"),
            Opt(("--parser",), "parser"),
            Opt(("--priority",), "priority", "int", default=0),
            Opt(("--tag", "-t"), "tag", "multi"),
            Opt(("--task-id",), "task_id", "int"),
            Opt(("--max-attempts",), "max_attempts", "int"),
            JSON,
            MANAGER,
            MANAGER_TOKEN,
        ),
        _tasks_submit,
    ),
    Spec(("workers", "ls"), (), (JSON, MANAGER, MANAGER_TOKEN), _workers_ls),
)


def _convert(opt: Opt, text: str) -> Any:
    if opt.kind == "int":
        try:
            return int(text)
        except ValueError:
            raise Unsure(f"{opt.names[0]}: not a number") from None
    if opt.kind == "choice" and text not in opt.choices:
        raise Unsure(f"{opt.names[0]}: not a choice")
    if opt.kind == "file" and not os.path.isfile(text):
        raise Unsure(f"{opt.names[0]}: not a file")  # typer says which way
    return text


def _parse_options(
    words: list[str], options: tuple[Opt, ...], *, stop_at_word: bool
) -> tuple[dict[str, Any], list[str], list[str]]:
    """(option values given, positional words, the words left after the first positional
    when ``stop_at_word``)."""
    by_name = {name: opt for opt in options for name in opt.names}
    given: dict[str, Any] = {}
    positional: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if word == "--" and not stop_at_word:
            positional.extend(words[i:])
            break
        if not word.startswith("-") or word == "-":
            if stop_at_word:
                return given, [word], words[i:]
            positional.append(word)
            continue
        name, eq, inline = word.partition("=")
        opt = by_name.get(name if name.startswith("--") else word)
        if opt is None:
            raise Unsure(f"{word}: not a quick option")
        if opt.kind == "flag":
            if eq:
                raise Unsure(f"{word}: a flag with a value")
            given[opt.dest] = True
            continue
        if eq:
            text = inline
        elif i < len(words):
            text, i = words[i], i + 1
        else:
            raise Unsure(f"{word}: no value")
        value = _convert(opt, text)
        if opt.kind == "multi":
            given.setdefault(opt.dest, []).append(value)
        else:
            given[opt.dest] = value
    return given, positional, []


def _env(name: str | None) -> str | None:
    value = os.environ.get(name) if name else None
    return value or None


def parse(argv: list[str]) -> tuple[Spec, dict[str, Any]]:
    """The command ``argv`` names and its values (defaults and environment filled in).

    Raises:
        Unsure: anything the quick path leaves to the typer tree.
    """
    if os.environ.get("_HERDER_COMPLETE"):
        raise Unsure("shell completion")
    top, first, rest = _parse_options(argv, TOP_OPTIONS, stop_at_word=True)
    if not first:
        raise Unsure("no command")
    words = first + rest
    spec = next((s for s in COMMANDS if tuple(words[: len(s.words)]) == s.words), None)
    if spec is None:
        raise Unsure(f"{words[0]}: not a quick command")
    given, positional, _ = _parse_options(words[len(spec.words) :], spec.options, stop_at_word=False)
    values: dict[str, Any] = {}
    top_token = top.get("token_file")
    for opt in spec.options:
        if opt.dest in given:
            values[opt.dest] = given[opt.dest]
            continue
        # A top-level option stands in for the variable (the typer tree sets it so).
        text = top.get(opt.dest) if opt.dest in ("agent", "manager") else None
        if opt.dest == "token_file" and top_token is not None:
            text = top_token
        text = text or _env(opt.envvar)
        values[opt.dest] = _convert(opt, text) if text is not None else opt.default
    variadic = spec.args and spec.args[-1].startswith("*")
    fixed = spec.args[:-1] if variadic else spec.args
    if len(positional) < len(fixed) or (len(positional) > len(fixed) and not variadic):
        raise Unsure("arguments")
    for name, value in zip(fixed, positional, strict=False):
        values[name] = value
    if variadic:
        values[spec.args[-1][1:]] = positional[len(fixed) :] or None
    return spec, values


def run_quick(argv: list[str]) -> bool:
    """Run ``argv`` if the quick path takes it (True); else do nothing (False)."""
    try:
        spec, values = parse(argv)
        spec.run(values)
    except Unsure:
        return False
    return True


__all__ = ["COMMANDS", "TOP_OPTIONS", "Opt", "Spec", "Unsure", "parse", "run_quick"]
