"""Task types: the compilers and parsers of the manager, as plugins (issue 6)."""

from __future__ import annotations

import pickle
import shlex
import shutil
import subprocess
from importlib.metadata import EntryPoint
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from herder.manager import tasktypes
from herder.manager.tasktypes import (
    Compiled,
    Progress,
    TaskTypeError,
    WorkItem,
    compiler_names,
    load_compiler,
    load_parser,
    normalize_settings,
    parser_names,
)
from herder.manager.tasktypes.compilers import (
    MAX_ARG_BYTES,
    CommandCompiler,
    FramesCompiler,
)
from herder.manager.tasktypes.parsers import FramesParser, NoneParser, PercentParser

SH = "/bin/sh"


def frames(**settings: Any) -> Compiled:
    return FramesCompiler().compile(settings)


def command(**settings: Any) -> Compiled:
    return CommandCompiler().compile(settings)


def ranges(compiled: Compiled) -> list[tuple[int | None, int | None]]:
    return [(item.frame_start, item.frame_end) for item in compiled.items]


def refused(compile: Any, settings: Any) -> TaskTypeError:
    with pytest.raises(TaskTypeError) as caught:
        compile(settings)
    return caught.value


# --- the error ---------------------------------------------------------------------------


def test_the_error_names_its_field_and_survives_pickling() -> None:
    error = TaskTypeError("settings.frame_end", "must be >= frame_start (10), got 5")
    assert isinstance(error, ValueError)
    assert (error.field, error.message) == ("settings.frame_end", "must be >= frame_start (10), got 5")
    assert str(error) == "settings.frame_end: must be >= frame_start (10), got 5"
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.field, copy.message, str(copy)) == (error.field, error.message, str(error))


def test_work_items_are_frozen_with_defaults() -> None:
    item = WorkItem(argv=["true"])
    assert (item.env, item.cwd, item.frame_start, item.frame_end, item.label) == ({}, None, None, None, "")
    with pytest.raises(AttributeError):
        item.label = "x"  # type: ignore[misc]
    assert WorkItem(argv=["a"]).env is not WorkItem(argv=["b"]).env


# --- settings ----------------------------------------------------------------------------


def test_settings_as_an_object_are_taken_as_they_are() -> None:
    settings = {"argv": ["true"]}
    assert normalize_settings(settings) is settings


def test_settings_as_a_json_string_as_the_seed_types_them() -> None:
    assert normalize_settings('{"argv": ["echo", "hi"], "cwd": "/tmp"}') == {
        "argv": ["echo", "hi"],
        "cwd": "/tmp",
    }
    compiled = load_compiler("frames").compile(
        '{"command": "render {frame}", "frame_start": 1, "frame_end": 2}'  # type: ignore[arg-type]
    )
    assert ranges(compiled) == [(1, 1), (2, 2)]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("[1, 2]", "must be a JSON object, got an array"),
        ('"text"', "must be a JSON object, got a string"),
        ("null", "must be a JSON object, got null"),
        ("3", "must be a JSON object, got a number"),
        ("", "not valid JSON"),
        ("{'single': 'quotes'}", "not valid JSON"),
        ('{"a": 1,}', "not valid JSON"),
        ('{"frame_start": NaN}', "not valid JSON: NaN is not JSON"),
        ('{"x": Infinity}', "not valid JSON"),
        ("[" * 100_000, "not valid JSON: nested too deeply"),
        ('{"x": ' + "9" * 5000 + "}", "not valid JSON"),
        (None, "got null"),
        (3, "got a number"),
        (True, "got a boolean"),
        ([{"argv": ["true"]}], "got an array"),
        (b'{"argv": ["true"]}', "got bytes"),
    ],
)
def test_settings_that_are_not_an_object_are_refused(value: Any, message: str) -> None:
    with pytest.raises(TaskTypeError) as caught:
        normalize_settings(value)
    assert caught.value.field == "settings"
    assert message in caught.value.message


def test_compilers_refuse_settings_that_are_not_an_object() -> None:
    for compiler in (CommandCompiler(), FramesCompiler()):
        assert refused(compiler.compile, "[]").field == "settings"
        assert refused(compiler.compile, 7).field == "settings"


# --- entry points --------------------------------------------------------------------------


def test_the_installed_task_types_and_parsers() -> None:
    assert compiler_names() == ["command", "frames"]
    assert parser_names() == ["frames", "none", "percent"]
    assert isinstance(load_compiler("command"), CommandCompiler)
    assert isinstance(load_compiler("frames"), FramesCompiler)
    assert isinstance(load_parser("frames"), FramesParser)
    assert isinstance(load_parser("percent"), PercentParser)
    assert isinstance(load_parser("none"), NoneParser)
    for name in compiler_names():
        assert load_compiler(name).name == name
    for name in parser_names():
        assert load_parser(name).name == name


def test_an_unknown_task_type_names_the_installed_ones() -> None:
    with pytest.raises(TaskTypeError) as caught:
        load_compiler("blender")
    assert caught.value.field == "type"
    assert caught.value.message == "unknown task type 'blender'; installed: command, frames"


def test_an_unknown_parser_names_the_installed_ones() -> None:
    with pytest.raises(TaskTypeError) as caught:
        load_parser("Frames")
    assert caught.value.field == "parser"
    assert caught.value.message == "unknown parser 'Frames'; installed: frames, none, percent"


@pytest.mark.parametrize("name", [None, 3, ["frames"], ""])
def test_a_name_that_is_not_a_known_string_is_unknown(name: Any) -> None:
    assert refused(load_compiler, name).field == "type"
    assert refused(load_parser, name).field == "parser"


def test_each_parser_is_new_and_keeps_its_own_state() -> None:
    first, second = load_parser("frames"), load_parser("frames")
    assert first is not second
    assert first.parse("Fra:3") == Progress(frame=3)
    assert first.parse("Fra:3") is None
    assert second.parse("Fra:3") == Progress(frame=3)


def test_entry_points_are_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = tasktypes.entry_points

    def counting(*, group: str) -> Any:
        calls.append(group)
        return real(group=group)

    monkeypatch.setattr(tasktypes, "entry_points", counting)
    tasktypes._clear_caches()
    try:
        for _ in range(5):
            load_compiler("frames")
            load_parser("percent")
            compiler_names()
        with pytest.raises(TaskTypeError):
            load_parser("nope")
        assert sorted(calls) == ["herder.compilers", "herder.parsers"]
    finally:
        tasktypes._clear_caches()


class Upper:
    """A third party's compiler, installed through a (simulated) entry point."""

    name = "upper"

    def compile(self, settings: dict[str, Any]) -> Compiled:
        return Compiled([WorkItem(argv=["echo", str(settings["text"]).upper()])], None, None, "")


class NotACompiler:
    name = "broken"


@pytest.fixture
def third_party(monkeypatch: pytest.MonkeyPatch) -> Any:
    real = tasktypes.entry_points

    def with_plugins(*, group: str) -> Any:
        points = list(real(group=group))
        if group == "herder.compilers":
            points.append(EntryPoint("upper", f"{__name__}:Upper", group))
            points.append(EntryPoint("broken", f"{__name__}:NotACompiler", group))
        return points

    monkeypatch.setattr(tasktypes, "entry_points", with_plugins)
    tasktypes._clear_caches()
    yield
    tasktypes._clear_caches()


@pytest.mark.usefixtures("third_party")
def test_a_third_party_task_type_is_found_by_its_entry_point() -> None:
    assert compiler_names() == ["broken", "command", "frames", "upper"]
    compiled = load_compiler("upper").compile({"text": "hi"})
    assert compiled.items[0].argv == ["echo", "HI"]
    # A plugin that makes no compiler is the installation's fault: not a client's 4xx.
    with pytest.raises(TypeError, match="does not make a task type"):
        load_compiler("broken")


# --- command -------------------------------------------------------------------------------


def test_command_with_an_argv() -> None:
    compiled = command(argv=["echo", "hello world"])
    assert compiled == Compiled(
        items=[WorkItem(argv=["echo", "hello world"], label="echo 'hello world'")],
        frame_start=None,
        frame_end=None,
        format="",
    )


def test_command_with_a_shell_string_runs_sh() -> None:
    compiled = command(shell="make -j4 && make install")
    (item,) = compiled.items
    assert item.argv == [SH, "-c", "make -j4 && make install"]
    assert item.label == "make -j4 && make install"


def test_command_with_env_cwd_and_format() -> None:
    compiled = command(argv=["render"], env={"A": "1", "_b2": ""}, cwd="/srv/job", format="PNG")
    (item,) = compiled.items
    assert (item.env, item.cwd, compiled.format) == ({"A": "1", "_b2": ""}, "/srv/job", "PNG")


def test_command_null_optional_settings_are_absent() -> None:
    compiled = command(argv=["true"], shell=None, env=None, cwd=None, format=None)
    assert compiled.items[0] == WorkItem(argv=["true"], label="true")
    assert compiled.format == ""


def test_command_labels_are_short_and_one_line() -> None:
    (item,) = command(shell="echo " + "x" * 200).items
    assert len(item.label) == 60
    assert item.label.endswith("…")
    (item,) = command(shell="set -e\nmake\n").items
    assert item.label == "set -e…"


def test_command_items_do_not_share_the_settings_lists() -> None:
    settings: dict[str, Any] = {"argv": ["echo", "a"], "env": {"X": "1"}}
    (item,) = command(**settings).items
    settings["argv"].append("b")
    settings["env"]["Y"] = "2"
    assert (item.argv, item.env) == (["echo", "a"], {"X": "1"})


@pytest.mark.parametrize(
    ("settings", "field", "message"),
    [
        ({}, "settings.argv", "required"),
        ({"env": {"A": "1"}}, "settings.argv", "required"),
        ({"argv": ["a"], "shell": "a"}, "settings.shell", "exclude each other"),
        ({"argv": []}, "settings.argv", "must not be empty"),
        ({"argv": "ls -l"}, "settings.argv", "must be a list of strings, got a string"),
        ({"argv": ["ls", 3]}, "settings.argv", "item 1 must be a string, got a number"),
        ({"argv": ["ls", None]}, "settings.argv", "item 1 must be a string, got null"),
        ({"argv": [""]}, "settings.argv", "the program, must not be empty"),
        ({"argv": ["ls", "a\0b"]}, "settings.argv", "NUL"),
        ({"argv": ["echo", "\ud800"]}, "settings.argv", "lone surrogate"),
        ({"argv": ["echo", "x" * (MAX_ARG_BYTES + 1)]}, "settings.argv", "at most 131,071"),
        ({"argv": ["echo", *["x" * 100_000] * 11]}, "settings.argv", "at most 1,048,576"),
        ({"shell": ""}, "settings.shell", "must not be empty"),
        ({"shell": "  \n"}, "settings.shell", "must not be empty"),
        ({"shell": ["ls"]}, "settings.shell", "must be a string"),
        ({"shell": "echo \0"}, "settings.shell", "NUL"),
        ({"argv": ["env"], "env": ["A=1"]}, "settings.env", "must be an object"),
        ({"argv": ["env"], "env": {"1A": "x"}}, "settings.env", "'1A' is not a variable name"),
        ({"argv": ["env"], "env": {"A-B": "x"}}, "settings.env", "'A-B' is not a variable name"),
        ({"argv": ["env"], "env": {"": "x"}}, "settings.env", "'' is not a variable name"),
        ({"argv": ["env"], "env": {"Ä": "x"}}, "settings.env", "is not a variable name"),
        ({"argv": ["env"], "env": {"A=B": "x"}}, "settings.env", "is not a variable name"),
        ({"argv": ["env"], "env": {"A": 1}}, "settings.env", "the value of A must be a string, got a number"),
        ({"argv": ["env"], "env": {"A": "x\0"}}, "settings.env", "NUL"),
        ({"argv": ["env"], "env": {f"V{i}": "x" * 100_000 for i in range(11)}}, "settings.env", "at most"),
        ({"argv": ["pwd"], "cwd": 3}, "settings.cwd", "must be a string"),
        ({"argv": ["pwd"], "cwd": ""}, "settings.cwd", "must not be empty"),
        ({"argv": ["pwd"], "format": 3}, "settings.format", "must be a string"),
        ({"argv": ["ls"], "args": ["-l"]}, "settings.args", "unknown setting for a command task"),
        ({"argvs": ["ls"]}, "settings.argvs", "it takes argv, shell, env, cwd, format"),
        ({"shell": "ls", "frame_start": 1}, "settings.frame_start", "unknown setting"),
    ],
)
def test_command_refusals(settings: dict[str, Any], field: str, message: str) -> None:
    error = refused(CommandCompiler().compile, settings)
    assert error.field == field
    assert message in error.message


# --- frames: chunking ----------------------------------------------------------------------


def test_frames_in_chunks_with_a_short_last_chunk() -> None:
    compiled = frames(command="render -s {start} -e {end}", frame_start=1, frame_end=10, chunk_size=3)
    assert ranges(compiled) == [(1, 3), (4, 6), (7, 9), (10, 10)]
    assert [item.argv[2] for item in compiled.items] == [
        "render -s 1 -e 3",
        "render -s 4 -e 6",
        "render -s 7 -e 9",
        "render -s 10 -e 10",
    ]
    assert [item.label for item in compiled.items] == ["frames 1-3", "frames 4-6", "frames 7-9", "frame 10"]
    assert (compiled.frame_start, compiled.frame_end, compiled.format) == (1, 10, "")


def test_frames_exact_multiples() -> None:
    compiled = frames(command="r {start}-{end}", frame_start=0, frame_end=99, chunk_size=25)
    assert ranges(compiled) == [(0, 24), (25, 49), (50, 74), (75, 99)]


def test_frames_chunk_larger_than_the_range_is_one_item() -> None:
    compiled = frames(command="r {start} {end}", frame_start=5, frame_end=10, chunk_size=1000)
    assert ranges(compiled) == [(5, 10)]
    assert compiled.items[0].argv == [SH, "-c", "r 5 10"]


def test_frames_a_single_frame() -> None:
    compiled = frames(command="r {frame}", frame_start=7, frame_end=7, chunk_size=10)
    assert ranges(compiled) == [(7, 7)]
    assert compiled.items[0].argv == [SH, "-c", "r 7"]
    assert compiled.items[0].label == "frame 7"


def test_frames_default_chunk_is_one_frame() -> None:
    compiled = frames(command="r {frame}", frame_start=1, frame_end=3)
    assert [item.argv for item in compiled.items] == [[SH, "-c", f"r {n}"] for n in (1, 2, 3)]


def test_frames_negative_and_zero() -> None:
    compiled = frames(command="r {frame}", frame_start=-2, frame_end=1, chunk_size=2)
    assert ranges(compiled) == [(-2, -1), (0, 1)]
    assert compiled.items[0].argv == [SH, "-c", "r -2 && r -1"]


def test_frames_limits_are_inclusive() -> None:
    compiled = frames(command="r {start} {end}", frame_start=1, frame_end=100_000, chunk_size=10)
    assert len(compiled.items) == 10_000
    assert ranges(compiled)[-1] == (99_991, 100_000)
    top = 2**31 - 1
    assert ranges(frames(command="r {frame}", frame_start=top, frame_end=top)) == [(top, top)]


# --- frames: commands ----------------------------------------------------------------------


def test_frames_shell_with_frame_runs_each_frame_and_stops_at_the_first_failure() -> None:
    compiled = frames(
        command="blender -b scene.blend -o //out/#### -f {frame}", frame_start=1, frame_end=3, chunk_size=3
    )
    (item,) = compiled.items
    assert item.argv == [
        SH,
        "-c",
        "blender -b scene.blend -o //out/#### -f 1 && blender -b scene.blend -o //out/#### -f 2"
        " && blender -b scene.blend -o //out/#### -f 3",
    ]


def test_frames_argv_with_frame_chunk_of_one_stays_an_argv() -> None:
    compiled = frames(
        command=["blender", "-b", "my scene.blend", "-f", "{frame}"], frame_start=1, frame_end=2
    )
    assert [item.argv for item in compiled.items] == [
        ["blender", "-b", "my scene.blend", "-f", "1"],
        ["blender", "-b", "my scene.blend", "-f", "2"],
    ]


def test_frames_argv_with_frame_in_chunks_is_quoted_into_sh() -> None:
    compiled = frames(
        command=["blender", "-b", "my scene.blend", "-f", "{frame}"], frame_start=1, frame_end=3, chunk_size=2
    )
    assert [item.argv for item in compiled.items] == [
        [SH, "-c", "blender -b 'my scene.blend' -f 1 && blender -b 'my scene.blend' -f 2"],
        ["blender", "-b", "my scene.blend", "-f", "3"],
    ]


def test_frames_argv_with_start_and_end_runs_once_per_chunk() -> None:
    compiled = frames(
        command=["ffmpeg", "-start_number", "{start}", "-frames:v", "{end}", "-i", "in_%04d.png"],
        frame_start=1,
        frame_end=20,
        chunk_size=10,
    )
    assert [item.argv for item in compiled.items] == [
        ["ffmpeg", "-start_number", "1", "-frames:v", "10", "-i", "in_%04d.png"],
        ["ffmpeg", "-start_number", "11", "-frames:v", "20", "-i", "in_%04d.png"],
    ]


def test_frames_with_frame_start_and_end_together() -> None:
    compiled = frames(command="r {frame} of {start}..{end}", frame_start=1, frame_end=2, chunk_size=2)
    assert compiled.items[0].argv == [SH, "-c", "r 1 of 1..2 && r 2 of 1..2"]


def test_frames_literal_braces_are_escaped_by_doubling() -> None:
    compiled = frames(
        command="echo {{frame}} {frame} '}}{{' ${{HOME}}", frame_start=5, frame_end=5, chunk_size=1
    )
    assert compiled.items[0].argv == [SH, "-c", "echo {frame} 5 '}{' ${HOME}"]
    compiled = frames(command=["jq", "{{.f: {frame}}}"], frame_start=5, frame_end=5)
    assert compiled.items[0].argv == ["jq", "{.f: 5}"]


def test_frames_shell_texts_with_structure_run_each_in_a_subshell() -> None:
    compiled = frames(command="cd /x; r {frame}  # a note", frame_start=1, frame_end=2, chunk_size=2)
    assert compiled.items[0].argv == [SH, "-c", "( cd /x; r 1  # a note\n) && ( cd /x; r 2  # a note\n)"]


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX shell")
@pytest.mark.parametrize(
    ("command", "output", "status"),
    [
        # frames 1 and 2 run, 3 fails, 4 does not run.
        ("test $(( {frame} % 3 )) -ne 0 || exit 1; echo {frame}", "1\n2\n", 1),
        ("echo {frame} # {frame} is shown", "1\n2\n3\n4\n", 0),
        ("false || echo {frame}", "1\n2\n3\n4\n", 0),
        ("echo {frame} | cat; test {frame} -lt 2", "1\n2\n", 1),
        ("echo {frame} &\nwait", "1\n2\n3\n4\n", 0),
        ("if [ {frame} -eq 3 ]; then exit 7; fi; echo {frame}", "1\n2\n", 7),
    ],
)
def test_frames_chunk_scripts_behave_as_one_command_per_frame(command: str, output: str, status: int) -> None:
    (item,) = frames(command=command, frame_start=1, frame_end=4, chunk_size=4).items
    done = subprocess.run(item.argv, capture_output=True, text=True, timeout=10, check=False)
    assert (done.stdout, done.returncode) == (output, status)


def test_frames_env_cwd_and_format_reach_every_item_separately() -> None:
    compiled = frames(
        command="r {frame}", frame_start=1, frame_end=2, env={"A": "1"}, cwd="/job", format="OPEN_EXR"
    )
    assert [(item.env, item.cwd) for item in compiled.items] == [({"A": "1"}, "/job")] * 2
    assert compiled.items[0].env is not compiled.items[1].env
    assert compiled.format == "OPEN_EXR"


def test_frames_null_optional_settings_are_absent() -> None:
    compiled = frames(command="r {frame}", frame_start=1, frame_end=2, chunk_size=None, env=None, cwd=None)
    assert ranges(compiled) == [(1, 1), (2, 2)]


# --- frames: refusals ----------------------------------------------------------------------

BASE: dict[str, Any] = {"command": "r {frame}", "frame_start": 1, "frame_end": 10}


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"command": None}, "settings.command", "required"),
        ({"command": 3}, "settings.command", "a shell string or a list of strings, got a number"),
        ({"command": ""}, "settings.command", "must not be empty"),
        ({"command": []}, "settings.command", "must not be empty"),
        ({"command": ["r", 1]}, "settings.command", "item 1 must be a string"),
        ({"command": "render all"}, "settings.command", "has no placeholder"),
        ({"command": "render {{frame}}"}, "settings.command", "has no placeholder"),
        ({"command": "r {frame} {x}"}, "settings.command", "unknown placeholder {x}"),
        ({"command": "r {Frame}"}, "settings.command", "unknown placeholder {Frame}"),
        ({"command": "r {}"}, "settings.command", "unknown placeholder {}"),
        ({"command": "r {0}"}, "settings.command", "unknown placeholder {0}"),
        ({"command": "r {frame:04d}"}, "settings.command", "unknown placeholder {frame:04d}"),
        ({"command": "r {frame!r}"}, "settings.command", "unknown placeholder {frame!r}"),
        ({"command": "r {frame.real}"}, "settings.command", "unknown placeholder {frame.real}"),
        ({"command": "r {frame[0]}"}, "settings.command", "unknown placeholder {frame[0]}"),
        ({"command": "r {frame} {"}, "settings.command", "write literal braces as {{ and }}"),
        ({"command": "r {frame} }"}, "settings.command", "Single '}'"),
        ({"command": "awk '{print}' {frame}"}, "settings.command", "unknown placeholder {print}"),
        ({"command": ["r", "{frame}", "{x}"]}, "settings.command", "{x} (in item 2)"),
        ({"command": ["r", "{frame"]}, "settings.command", "(in item 1)"),
        ({"frame_start": None}, "settings.frame_start", "required: an integer"),
        ({"frame_start": True}, "settings.frame_start", "must be an integer, got a boolean"),
        ({"frame_start": 1.0}, "settings.frame_start", "must be an integer, got a number"),
        ({"frame_start": "1"}, "settings.frame_start", "must be an integer, got a string"),
        ({"frame_end": None}, "settings.frame_end", "required"),
        ({"frame_end": False}, "settings.frame_end", "got a boolean"),
        ({"frame_end": 0}, "settings.frame_end", "must be >= frame_start (1), got 0"),
        ({"frame_start": -(2**31)}, "settings.frame_start", "out of range"),
        ({"frame_end": 2**31}, "settings.frame_end", "out of range"),
        ({"frame_end": 100_001}, "settings.frame_end", "100,001 frames; at most 100,000 per task"),
        ({"frame_start": -(10**12), "frame_end": 10**12}, "settings.frame_start", "out of range"),
        ({"chunk_size": 0}, "settings.chunk_size", "must be at least 1, got 0"),
        ({"chunk_size": -5}, "settings.chunk_size", "must be at least 1"),
        ({"chunk_size": True}, "settings.chunk_size", "got a boolean"),
        ({"chunk_size": 2.5}, "settings.chunk_size", "got a number"),
        (
            {"frame_end": 10_001, "chunk_size": 1},
            "settings.chunk_size",
            "makes 10,001 chunks; at most 10,000 per task (a chunk_size of 2 or more)",
        ),
        ({"env": {"A B": "x"}}, "settings.env", "not a variable name"),
        ({"cwd": 1}, "settings.cwd", "must be a string"),
        ({"format": ["PNG"]}, "settings.format", "must be a string"),
        ({"chunksize": 10}, "settings.chunksize", "unknown setting for a frames task"),
        ({"shell": "r"}, "settings.shell", "it takes command, frame_start, frame_end, chunk_size"),
        # {frame} over a huge chunk would make an argument no kernel takes: say which knob.
        ({"frame_end": 20_000, "chunk_size": 20_000}, "settings.chunk_size", "a worker can pass at most"),
        ({"command": "r {start} " + "x" * MAX_ARG_BYTES}, "settings.command", "a worker can pass at most"),
    ],
)
def test_frames_refusals(change: dict[str, Any], field: str, message: str) -> None:
    settings = {**BASE, **change}
    error = refused(FramesCompiler().compile, {k: v for k, v in settings.items() if v is not None})
    assert error.field == field
    assert message in error.message


@given(
    start=st.integers(min_value=-10_000, max_value=10_000),
    length=st.integers(min_value=1, max_value=5_000),
    chunk=st.integers(min_value=1, max_value=6_000),
)
def test_chunks_cover_the_range_exactly_in_order(start: int, length: int, chunk: int) -> None:
    end = start + length - 1
    compiled = frames(command="r {start} {end}", frame_start=start, frame_end=end, chunk_size=chunk)
    spans = ranges(compiled)
    assert (compiled.frame_start, compiled.frame_end) == (start, end)
    assert len(spans) == -(-length // chunk)
    expected_low = start
    for low, high in spans:
        assert low == expected_low  # starts where the previous chunk ended: no gap, no overlap
        assert high is not None
        assert low <= high <= low + chunk - 1
        expected_low = high + 1
    assert expected_low == end + 1
    assert all(high is not None and low is not None and high - low + 1 == chunk for low, high in spans[:-1])
    assert [item.argv[2] for item in compiled.items] == [f"r {low} {high}" for low, high in spans]


_plain = st.text(st.characters(blacklist_characters="{}\0", blacklist_categories=("Cs",)), max_size=8)


@given(
    items=st.lists(st.tuples(_plain, st.booleans(), _plain), min_size=1, max_size=4),
    start=st.integers(min_value=-20, max_value=20),
    length=st.integers(min_value=2, max_value=6),
)
def test_argv_chunks_are_the_shlex_join_of_each_frames_argv(
    items: list[tuple[str, bool, str]], start: int, length: int
) -> None:
    items = [("prog", True, ""), *items]
    command = [prefix + ("{frame}" if has else "") + suffix for prefix, has, suffix in items]
    end = start + length - 1
    compiled = frames(command=command, frame_start=start, frame_end=end, chunk_size=length)
    expected = " && ".join(
        shlex.join([prefix + (str(f) if has else "") + suffix for prefix, has, suffix in items])
        for f in range(start, end + 1)
    )
    assert compiled.items[0].argv == [SH, "-c", expected]


# --- parsers -------------------------------------------------------------------------------


def feed(parser: Any, lines: list[str]) -> list[Progress | None]:
    return [parser.parse(line) for line in lines]


def test_frames_parser_reads_blender() -> None:
    lines = [
        "Blender 3.6.2 (hash e53e55951e7a built 2023-08-15 11:45:10)",
        "Read blend: /work/scene.blend",
        "Fra:1 Mem:22.45M (Peak 23.11M) | Time:00:00.56 | Syncing Cube",
        "Fra:1 Mem:142.02M (Peak 142.02M) | Time:00:01.20 | Remaining:00:10.01 | Rendered 1/64 Tiles",
        "Fra:1 Mem:142.02M (Peak 142.02M) | Time:00:09.87 | Sample 128/128",
        "Saved: '/tmp/render/0001.png'",
        " Time: 00:10.21 (Saving: 00:00.03)",
        "",
        "Fra:2 Mem:22.45M (Peak 142.02M) | Time:00:00.12 | Syncing Cube",
        "Fra:-3 Mem:1.00M | Time:00:00.01",
    ]
    assert feed(FramesParser(), lines) == [
        None,
        None,
        Progress(frame=1),
        None,  # the same frame again says nothing new
        None,
        None,
        None,
        None,
        Progress(frame=2),
        Progress(frame=-3),
    ]


def test_frames_parser_reads_ffmpeg() -> None:
    lines = [
        "Input #0, image2, from 'in_%04d.png':",
        "Stream mapping:",
        "frame=   48 fps=0.0 q=28.0 size=       0kB time=00:00:01.53 bitrate=   0.2kbits/s speed=3.05x",
        "frame=  240 fps= 30 q=28.0 size=    1024kB time=00:00:08.00 bitrate=1048.6kbits/s speed=2.01x",
        # -progress pipe:1
        "frame=241",
        "fps=30.00",
        # status updates separated by carriage returns arrive as one line: the last counts
        "frame=  250 fps= 30 q=28.0 size=1kB\rframe=  260 fps= 30 q=28.0 size=2kB\r",
        "frame=260",
        "keyframe=3 pkt_frame=9 frames=4 Frame: 5",
    ]
    assert feed(FramesParser(), lines) == [
        None,
        None,
        Progress(frame=48),
        Progress(frame=240),
        Progress(frame=241),
        None,
        Progress(frame=260),
        None,
        None,
    ]


@pytest.mark.parametrize(
    "line",
    ["Fra:12345678901 Mem:1M", "frame=99999999999", "Fra:2147483648", "Fra:" + "9" * 5000, "Fra: x"],
)
def test_frames_parser_ignores_numbers_that_are_not_frames(line: str) -> None:
    assert FramesParser().parse(line) is None


def test_percent_parser() -> None:
    lines = [
        "45%",
        " 45.5 %",
        "[ 12%] Building C object src/CMakeFiles/app.dir/main.c.o",
        "progress: 100%",
        " 45%|████▌     | 45/100 [00:01<00:01, 44.20it/s]",
        "downloaded 10% ... 20% ... 30%",
        "30% done",
        "uploading .5%",
        "CPU 150% (4 cores)",
        "no progress here",
        "printf('%d items', n); 100 percent",
        "",
    ]
    assert feed(PercentParser(), lines) == [
        Progress(percent=45.0),
        Progress(percent=45.5),
        Progress(percent=12.0),
        Progress(percent=100.0),
        Progress(percent=45.0),
        Progress(percent=30.0),
        None,  # unchanged
        Progress(percent=0.5),
        Progress(percent=100.0),  # clamped
        None,
        None,
        None,
    ]


def test_percent_parser_takes_whole_numbers_and_clamps() -> None:
    assert PercentParser().parse("1234.5%") == Progress(percent=100.0)
    assert PercentParser().parse("0%") == Progress(percent=0.0)
    assert PercentParser().parse("9" * 400 + "%") == Progress(percent=100.0)
    assert PercentParser().parse("x-5%") == Progress(percent=5.0)


def test_none_parser_never_reports() -> None:
    parser = NoneParser()
    assert feed(parser, ["Fra:1", "frame=2", "50%", ""]) == [None] * 4
