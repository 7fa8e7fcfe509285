"""The built-in task types: ``command`` (one program) and ``frames`` (a frame range in chunks).

Both validate every setting strictly, because what they accept is stored and later run
on a worker, where a mistake is expensive to find: unknown keys are refused (a typo such
as ``chunksize`` would otherwise be ignored silently), booleans are not integers, and
strings a worker could not pass to ``exec`` (NUL characters, lone surrogates, more than
the kernel takes for one argument) are refused here rather than failing there.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import string
from typing import Any

from herder.manager.tasktypes import Compiled, TaskTypeError, WorkItem, _json_kind, normalize_settings

SHELL = "/bin/sh"
MAX_FRAMES = 100_000
MAX_CHUNKS = 10_000
# Frame numbers are stored in the seed's integer columns (32-bit in PostgreSQL).
FRAME_LIMIT = 2**31 - 1
# Linux refuses one argument or variable longer than MAX_ARG_STRLEN (32 pages, NUL included).
MAX_ARG_BYTES = 32 * 4096 - 1
# And the whole of argv + environment beyond ARG_MAX (often 2 MiB, shared with the worker's
# own environment): a budget of half that leaves room for what the worker adds.
MAX_EXEC_BYTES = 1 << 20
PLACEHOLDERS = ("frame", "start", "end")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# What can change how `a && b` groups when `a` is a shell text: list separators, background,
# pipelines and `||`, line continuations, and a `#` that starts a word (a comment; Blender's
# `//out/####` is not one). Texts without any are joined as they are; others run each in a
# subshell, `( text\n)`, whose newline ends a trailing comment.
_SHELL_STRUCTURE = re.compile(r"[;&|\n\\]|(?:^|[\s;&|<>()])#")


def _check_keys(settings: dict[str, Any], allowed: tuple[str, ...], task_type: str) -> None:
    for key in settings:
        if key not in allowed:
            raise TaskTypeError(
                f"settings.{key}", f"unknown setting for a {task_type} task; it takes {', '.join(allowed)}"
            )


def _check_text(value: str, field: str, what: str) -> None:
    """Refuse a string no worker can hand to the kernel: NUL ends C strings, and lone
    surrogates (which JSON's ``\\ud800`` escapes produce) have no UTF-8 encoding."""
    if "\0" in value:
        raise TaskTypeError(field, f"{what} contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise TaskTypeError(field, f"{what} is not valid text (a lone surrogate)") from None


def _shell_text(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise TaskTypeError(field, f"must be a string (a shell command), got {_json_kind(value)}")
    if not value.strip():
        raise TaskTypeError(field, "must not be empty")
    _check_text(value, field, "the command")
    return value


def _argv(value: Any, field: str) -> list[str]:
    if not isinstance(value, list):
        raise TaskTypeError(field, f"must be a list of strings, got {_json_kind(value)}")
    if not value:
        raise TaskTypeError(field, "must not be empty: it names at least the program")
    for index, arg in enumerate(value):
        if not isinstance(arg, str):
            raise TaskTypeError(field, f"item {index} must be a string, got {_json_kind(arg)}")
        _check_text(arg, field, f"item {index}")
    if not value[0]:
        raise TaskTypeError(field, "item 0, the program, must not be empty")
    return list(value)


def _env(settings: dict[str, Any]) -> dict[str, str]:
    value = settings.get("env")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TaskTypeError("settings.env", f"must be an object of strings, got {_json_kind(value)}")
    for name, text in value.items():
        if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
            raise TaskTypeError(
                "settings.env", f"{name!r} is not a variable name (letters, digits, _; not a digit first)"
            )
        if not isinstance(text, str):
            raise TaskTypeError(
                "settings.env", f"the value of {name} must be a string, got {_json_kind(text)}"
            )
        _check_text(text, "settings.env", f"the value of {name}")
    return dict(value)


def _cwd(settings: dict[str, Any]) -> str | None:
    value = settings.get("cwd")
    if value is None:
        return None
    if not isinstance(value, str):
        raise TaskTypeError("settings.cwd", f"must be a string (a directory), got {_json_kind(value)}")
    if not value:
        raise TaskTypeError("settings.cwd", "must not be empty")
    _check_text(value, "settings.cwd", "the directory")
    return value


def _format(settings: dict[str, Any]) -> str:
    value = settings.get("format")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise TaskTypeError("settings.format", f"must be a string, got {_json_kind(value)}")
    return value


def _int(settings: dict[str, Any], key: str, default: int | None = None) -> int:
    value = settings.get(key)
    if value is None:
        if default is None:
            raise TaskTypeError(f"settings.{key}", "required: an integer")
        return default
    # bool is an int subclass: `true` for a frame number is a client's mistake, not frame 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise TaskTypeError(f"settings.{key}", f"must be an integer, got {_json_kind(value)}")
    return value


def _env_bytes(env: dict[str, str]) -> int:
    return sum(len(k.encode()) + len(v.encode()) + 2 for k, v in env.items())


def _check_exec_size(argv: list[str], env_bytes: int, field: str) -> None:
    """Refuse work the kernel would refuse to start (E2BIG), naming the setting to change."""
    total = env_bytes
    for arg in argv:
        size = len(arg.encode())
        if size > MAX_ARG_BYTES:
            raise TaskTypeError(
                field,
                f"makes a command argument of {size:,} bytes; a worker can pass at most {MAX_ARG_BYTES:,}",
            )
        total += size + 1
    if total > MAX_EXEC_BYTES:
        raise TaskTypeError(
            field, f"makes a command and environment of {total:,} bytes; at most {MAX_EXEC_BYTES:,}"
        )


def _short(text: str, limit: int = 60) -> str:
    """One line of at most ``limit`` characters, for a listing's label."""
    first, _, rest = text.strip().partition("\n")
    if rest or len(first) > limit:
        return first[: limit - 1].rstrip() + "…"
    return first


class CommandCompiler:
    """``command``: one program, as an argv or a shell command.

    Settings: ``{"argv": ["prog", "arg"]}`` or ``{"shell": "prog arg | other"}`` (exactly
    one), and optionally ``env`` (variable names to strings), ``cwd`` and ``format``.
    An argv runs as is; a shell command runs as ``/bin/sh -c text``.
    """

    name: str = "command"
    # One item whatever the settings: cheap enough to compile on the manager's event loop
    # (compilers without this run in a thread: a frames task may make 10,000 items).
    inline: bool = True
    KEYS = ("argv", "shell", "env", "cwd", "format")

    def compile(self, settings: dict[str, Any]) -> Compiled:
        """One work item for ``settings``; ``TaskTypeError`` names the first bad key."""
        settings = normalize_settings(settings)
        _check_keys(settings, self.KEYS, self.name)
        argv_value, shell_value = settings.get("argv"), settings.get("shell")
        if argv_value is not None and shell_value is not None:
            raise TaskTypeError("settings.shell", "argv and shell exclude each other; give one of them")
        if argv_value is None and shell_value is None:
            raise TaskTypeError("settings.argv", "required: a list of strings (or shell, a string)")
        if shell_value is not None:
            text = _shell_text(shell_value, "settings.shell")
            argv, label, field = [SHELL, "-c", text], _short(text), "settings.shell"
        else:
            argv = _argv(argv_value, "settings.argv")
            label, field = _short(shlex.join(argv)), "settings.argv"
        env, cwd, fmt = _env(settings), _cwd(settings), _format(settings)
        env_bytes = _env_bytes(env)
        if env_bytes > MAX_EXEC_BYTES:
            raise TaskTypeError("settings.env", f"is {env_bytes:,} bytes; at most {MAX_EXEC_BYTES:,}")
        _check_exec_size(argv, env_bytes, field)
        item = WorkItem(argv=argv, env=env, cwd=cwd, label=label)
        return Compiled(items=[item], frame_start=None, frame_end=None, format=fmt)


@dataclasses.dataclass(frozen=True, slots=True)
class _Template:
    """A checked command text (one shell string, or one argv item).

    With placeholders, ``pattern`` is a ``str.format`` pattern rebuilt here from the parsed
    text, whose only fields are the bare names in ``names``: formatting it cannot follow
    attributes or items (``{frame.__class__}``) the way the client's own text could.
    Without placeholders, ``pattern`` is the final text (``{{`` already undone).
    """

    pattern: str
    names: frozenset[str]

    def render(self, frame: int, start: int, end: int) -> str:
        return self.pattern.format(frame=frame, start=start, end=end) if self.names else self.pattern


def _template(text: str, where: str) -> _Template:
    """Check ``text``, refusing any placeholder but ``{frame}``, ``{start}``, ``{end}``."""
    hint = "write literal braces as {{ and }}"
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise TaskTypeError("settings.command", f"{exc} ({where}); {hint}") from None
    literals: list[str] = []
    pattern: list[str] = []
    names: set[str] = set()
    for literal, name, spec, conversion in parsed:
        literals.append(literal)
        pattern.append(literal.replace("{", "{{").replace("}", "}}"))
        if name is None:
            continue
        if name not in PLACEHOLDERS or spec or conversion:
            shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise TaskTypeError(
                "settings.command",
                f"unknown placeholder {shown} ({where}); the placeholders are {{frame}}, {{start}}"
                f" and {{end}}; {hint}",
            )
        pattern.append("{" + name + "}")
        names.add(name)
    if not names:
        return _Template("".join(literals), frozenset())
    return _Template("".join(pattern), frozenset(names))


class FramesCompiler:
    """``frames``: a command over a frame range, one work item per chunk of frames.

    Settings: ``command`` (a shell string, or an argv list) with the placeholders
    ``{frame}``, ``{start}`` and ``{end}`` (literal braces as ``{{`` and ``}}``),
    ``frame_start``, ``frame_end`` (inclusive, not before the start), ``chunk_size``
    (frames per work item, default 1), and optionally ``env``, ``cwd``, ``format``.

    The range is cut into chunks ``[s, min(s + chunk_size - 1, frame_end)]``. A command
    with ``{frame}`` runs once per frame of its chunk, in order, stopping at the first
    failure (``a && b`` in one ``/bin/sh -c``), so a chunk is one item and one process
    tree on its worker; ``{start}`` and ``{end}`` are the chunk's first and last frames.
    A command without ``{frame}`` runs once per chunk (a renderer given a range).
    At most 100,000 frames and 10,000 chunks per task, so a typo in a range cannot
    flood the database; a task at those limits compiles in a few tenths of a second, so
    a server calls ``compile`` off its event loop.
    """

    name: str = "frames"
    KEYS = ("command", "frame_start", "frame_end", "chunk_size", "env", "cwd", "format")

    def compile(self, settings: dict[str, Any]) -> Compiled:
        """One work item per chunk, in frame order; ``TaskTypeError`` names the first bad key."""
        settings = normalize_settings(settings)
        _check_keys(settings, self.KEYS, self.name)
        shell, templates = self._command(settings.get("command"))
        used = frozenset[str]().union(*(template.names for template in templates))
        if not used:
            raise TaskTypeError(
                "settings.command",
                "has no placeholder: use {frame}, or {start} and {end} for a chunk's range",
            )
        start, end, chunk = self._range(settings)
        env, cwd, fmt = _env(settings), _cwd(settings), _format(settings)
        env_bytes = _env_bytes(env)
        if env_bytes > MAX_EXEC_BYTES:
            raise TaskTypeError("settings.env", f"is {env_bytes:,} bytes; at most {MAX_EXEC_BYTES:,}")
        per_frame = "frame" in used
        items: list[WorkItem] = []
        for low in range(start, end + 1, chunk):
            high = min(low + chunk - 1, end)
            argv = self._argv(shell, templates, low, high, per_frame)
            # A long chunk of {frame} commands is the one way to grow a command: say so.
            field = "settings.chunk_size" if per_frame and high > low else "settings.command"
            _check_exec_size(argv, env_bytes, field)
            label = f"frame {low}" if low == high else f"frames {low}-{high}"
            items.append(
                WorkItem(argv=argv, env=dict(env), cwd=cwd, frame_start=low, frame_end=high, label=label)
            )
        return Compiled(items=items, frame_start=start, frame_end=end, format=fmt)

    @staticmethod
    def _command(value: Any) -> tuple[bool, list[_Template]]:
        """Whether the command is a shell string, and its parsed template(s)."""
        if value is None:
            raise TaskTypeError(
                "settings.command", "required: a shell string or an argv list, with {frame} or {start}/{end}"
            )
        if isinstance(value, str):
            return True, [_template(_shell_text(value, "settings.command"), "in the command")]
        if isinstance(value, list):
            argv = _argv(value, "settings.command")
            return False, [_template(arg, f"in item {index}") for index, arg in enumerate(argv)]
        raise TaskTypeError(
            "settings.command", f"must be a shell string or a list of strings, got {_json_kind(value)}"
        )

    @staticmethod
    def _range(settings: dict[str, Any]) -> tuple[int, int, int]:
        start, end = _int(settings, "frame_start"), _int(settings, "frame_end")
        for key, value in (("frame_start", start), ("frame_end", end)):
            if not -FRAME_LIMIT <= value <= FRAME_LIMIT:
                raise TaskTypeError(f"settings.{key}", f"{value} is out of range (±{FRAME_LIMIT:,})")
        if end < start:
            raise TaskTypeError("settings.frame_end", f"must be >= frame_start ({start}), got {end}")
        chunk = _int(settings, "chunk_size", default=1)
        if chunk < 1:
            raise TaskTypeError("settings.chunk_size", f"must be at least 1, got {chunk}")
        frames = end - start + 1
        if frames > MAX_FRAMES:
            raise TaskTypeError(
                "settings.frame_end", f"the range has {frames:,} frames; at most {MAX_FRAMES:,} per task"
            )
        chunks = -(-frames // chunk)
        if chunks > MAX_CHUNKS:
            least = -(-frames // MAX_CHUNKS)
            raise TaskTypeError(
                "settings.chunk_size",
                f"makes {chunks:,} chunks; at most {MAX_CHUNKS:,} per task (a chunk_size of {least} or more)",
            )
        return start, end, chunk

    @staticmethod
    def _argv(shell: bool, templates: list[_Template], low: int, high: int, per_frame: bool) -> list[str]:
        """The argv of the chunk ``[low, high]``."""
        if not per_frame or low == high:
            rendered = [template.render(low, low, high) for template in templates]
            return [SHELL, "-c", rendered[0]] if shell else rendered
        frames = range(low, high + 1)
        if shell:
            (template,) = templates
            # Frame numbers (digits, "-") cannot add shell structure: the first frame decides.
            wrap = _SHELL_STRUCTURE.search(template.render(low, low, high)) is not None
            texts = (template.render(frame, low, high) for frame in frames)
            return [SHELL, "-c", " && ".join(f"( {text}\n)" if wrap else text for text in texts)]
        # shlex.join of each frame's argv, with the items that have no placeholder quoted once
        # (frame numbers are safe characters for shlex.quote, so quoting commutes with them).
        quoted = [None if template.names else shlex.quote(template.pattern) for template in templates]
        return [
            SHELL,
            "-c",
            " && ".join(
                " ".join(
                    shlex.quote(template.render(frame, low, high)) if constant is None else constant
                    for template, constant in zip(templates, quoted, strict=True)
                )
                for frame in frames
            ),
        ]
