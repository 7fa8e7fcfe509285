"""Procfiles: parsing, finding the app's root, and errors that name the line.

The parser and the file lookup are tested directly; the last tests go through the
agent's API with a ``file://`` directory so that a bad Procfile is seen as the user
sees it: a process in state ``failed`` whose ``error`` says what is wrong.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from herder.agent import Agent
from herder.agent.apps.procfile import MAX_PROCFILE_BYTES, find_app_root, parse_procfile, read_command
from herder.agent.errors import ProcfileError
from tests.helpers import wait_http


def test_parse_good_procfile_with_comments_blank_lines_and_spaces() -> None:
    text = (
        "# the web tier\n"
        "\n"
        "web: gunicorn app:wsgi --bind 0.0.0.0:$PORT\n"
        "   \n"
        "  worker :   celery -A app worker   \n"
        "\t# indented comment\n"
        "release-task:./manage.py migrate\n"
        "clock_2: python clock.py # not a comment: part of the command\n"
    )
    assert parse_procfile(text) == {
        "web": "gunicorn app:wsgi --bind 0.0.0.0:$PORT",
        "worker": "celery -A app worker",
        "release-task": "./manage.py migrate",
        "clock_2": "python clock.py # not a comment: part of the command",
    }


def test_parse_keeps_colons_in_the_command() -> None:
    assert parse_procfile("web: env A=b:c sh -c 'echo x: y'") == {"web": "env A=b:c sh -c 'echo x: y'"}


def test_parse_windows_line_endings() -> None:
    assert parse_procfile("web: a\r\nworker: b\r\n") == {"web": "a", "worker": "b"}


def test_parse_empty_file_has_no_types() -> None:
    assert parse_procfile("") == {}
    assert parse_procfile("# only a comment\n\n") == {}


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("web: ok\nthis is not a procfile line\n", 2),
        ("web: ok\n\n# c\nweb server: two words\n", 4),
        ("web ok\n", 1),
        ("web: ok\n: no type\n", 2),
        ("web: a\nworker/1: b\n", 2),
        ("web: a\nw\u00e9b: accented type\n", 2),
    ],
)
def test_garbage_line_is_refused_naming_its_number(text: str, line: int) -> None:
    with pytest.raises(ProcfileError, match=rf"line {line} is not '<process type>: <command>'"):
        parse_procfile(text)


def test_garbage_line_error_quotes_the_line() -> None:
    with pytest.raises(ProcfileError) as info:
        parse_procfile("web: ok\nrm -rf --no-preserve-root\n")
    assert "rm -rf --no-preserve-root" in str(info.value)


def test_duplicate_type_is_refused() -> None:
    with pytest.raises(ProcfileError, match=r"line 3: process type 'web' appears twice"):
        parse_procfile("web: a\nworker: b\nweb: c\n")


@pytest.mark.parametrize("line", ["web:", "web:   ", "web :\t"])
def test_empty_command_is_refused(line: str) -> None:
    with pytest.raises(ProcfileError, match=r"line 2: process type 'web' has no command"):
        parse_procfile(f"worker: x\n{line}\n")


def test_process_type_too_long_is_garbage() -> None:
    with pytest.raises(ProcfileError, match="line 1"):
        parse_procfile("w" * 65 + ": x\n")


# -- finding the Procfile ------------------------------------------------------------


def test_app_root_is_the_directory_with_the_procfile(tmp_path: Path) -> None:
    (tmp_path / "Procfile").write_text("web: x\n")
    (tmp_path / "sub").mkdir()
    assert find_app_root(tmp_path) == tmp_path


def test_app_root_is_the_single_top_level_folder(tmp_path: Path) -> None:
    inner = tmp_path / "myapp-1.2.3"
    inner.mkdir()
    (inner / "Procfile").write_text("web: x\n")
    (tmp_path / ".hidden").write_text("ignored, as macOS and git leave these around")
    assert find_app_root(tmp_path) == inner


def test_no_procfile_in_two_top_level_folders(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "Procfile").write_text("web: x\n")
    with pytest.raises(ProcfileError, match="no Procfile"):
        find_app_root(tmp_path)


def test_procfile_two_levels_down_is_not_found(tmp_path: Path) -> None:
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    (deep / "Procfile").write_text("web: x\n")
    with pytest.raises(ProcfileError, match="no Procfile"):
        find_app_root(tmp_path)


def test_missing_procfile(tmp_path: Path) -> None:
    (tmp_path / "README").write_text("no Procfile here")
    with pytest.raises(ProcfileError, match=r"no Procfile at the root of the app"):
        find_app_root(tmp_path)


def test_procfile_that_is_a_directory_is_not_a_procfile(tmp_path: Path) -> None:
    (tmp_path / "Procfile").mkdir()
    with pytest.raises(ProcfileError, match="no Procfile"):
        find_app_root(tmp_path)


# -- reading a command ---------------------------------------------------------------


def test_read_command(tmp_path: Path) -> None:
    (tmp_path / "Procfile").write_text("web: serve --port $PORT\nworker: work\n")
    assert read_command(tmp_path, "web") == "serve --port $PORT"
    assert read_command(tmp_path, "worker") == "work"


def test_unknown_process_type_lists_the_known_ones(tmp_path: Path) -> None:
    (tmp_path / "Procfile").write_text("worker: w\nweb: s\n")
    with pytest.raises(ProcfileError) as info:
        read_command(tmp_path, "clock")
    assert str(info.value) == "unknown process type 'clock'; the Procfile defines: web, worker"


def test_unknown_process_type_in_an_empty_procfile(tmp_path: Path) -> None:
    (tmp_path / "Procfile").write_text("# nothing yet\n")
    with pytest.raises(ProcfileError, match="the Procfile defines: none"):
        read_command(tmp_path, "web")


def test_procfile_with_a_byte_order_mark(tmp_path: Path) -> None:
    (tmp_path / "Procfile").write_bytes(b"\xef\xbb\xbfweb: serve\n")
    assert read_command(tmp_path, "web") == "serve"


def test_procfile_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "Procfile").write_bytes(b"web: caf\xe9\n")
    with pytest.raises(ProcfileError, match="not UTF-8"):
        read_command(tmp_path, "web")


def test_procfile_too_big(tmp_path: Path) -> None:
    (tmp_path / "Procfile").write_text("# padding\n" * (MAX_PROCFILE_BYTES // 10 + 1) + "web: x\n")
    with pytest.raises(ProcfileError, match="larger than"):
        read_command(tmp_path, "web")


def test_procfile_symlink_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "elsewhere"
    secret.write_text("web: x\n")
    app = tmp_path / "app"
    app.mkdir()
    (app / "Procfile").symlink_to(secret)
    with pytest.raises(ProcfileError, match="not a regular file"):
        read_command(app, "web")


# -- through the API -----------------------------------------------------------------


async def _create_dir_app(client: httpx.AsyncClient, app_dir: Path, process_type: str) -> dict:
    response = await client.post(
        "/create-process",
        json={"app": "pf", "node": "web.0", "source_url": app_dir.as_uri(), "process_type": process_type},
    )
    assert response.status_code == 201, response.text
    return response.json()


async def test_api_garbage_procfile_fails_naming_the_line(
    agent: Agent, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "Procfile").write_text("web: echo ok\n<<<garbage>>>\n")
    created = await _create_dir_app(client, app_dir, "web")
    doc = await wait_http(client, created["details"], lambda d: d["state"] == "failed")
    assert "Procfile line 2" in doc["error"]
    assert doc["pid"] is None
    assert (await client.get("/")).status_code == 200


async def test_api_unknown_process_type_fails_listing_known_ones(
    agent: Agent, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "Procfile").write_text("web: sleep 1000\nworker: sleep 1000\n")
    created = await _create_dir_app(client, app_dir, "clock")
    doc = await wait_http(client, created["details"], lambda d: d["state"] == "failed")
    assert doc["error"] == "unknown process type 'clock'; the Procfile defines: web, worker"


async def test_api_missing_procfile_fails(agent: Agent, client: httpx.AsyncClient, tmp_path: Path) -> None:
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "main.py").write_text("print('no Procfile')\n")
    created = await _create_dir_app(client, app_dir, "web")
    doc = await wait_http(client, created["details"], lambda d: d["state"] == "failed")
    assert "no Procfile" in doc["error"]
