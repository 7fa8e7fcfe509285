"""``herder`` wires only the module of the command it runs: the same command either way."""

from __future__ import annotations

import subprocess

import pytest
from typer.testing import CliRunner

from herder import cli
from tests.helpers import HERDER


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["agent", "--port", "0"], "agent"),
        (["--log-level", "debug", "tasks", "ls"], "tasks"),
        (["--log-level=debug", "--log-format", "json", "ps"], "ps"),
        (["--help"], None),
        (["-h", "agent"], None),
        (["--version"], None),
        ([], None),
        (["no-such-command"], "no-such-command"),
    ],
)
def test_the_command_is_the_first_word_after_the_top_options(argv: list[str], command: str | None) -> None:
    assert cli._command_of(argv) == command


def test_every_command_belongs_to_exactly_one_module() -> None:
    owners: dict[str, list[str]] = {}
    for module in cli.COMMAND_MODULES:
        for name in cli._names_of(module):
            owners.setdefault(name, []).append(module.__name__)
    expected = {"agent", "run", "ps", "tasks", "workers", "keys", "services", "pools", "up", "call"}
    assert owners.keys() >= expected
    assert all(len(modules) == 1 for modules in owners.values()), owners


@pytest.mark.parametrize("module", cli.COMMAND_MODULES, ids=lambda m: m.__name__.rsplit(".", 1)[1])
def test_a_command_alone_has_the_same_help_as_in_the_whole_tree(module: object) -> None:
    runner = CliRunner()
    whole, alone = cli.build_app(), cli.build_app([module])  # type: ignore[list-item]
    for name in sorted(cli._names_of(module)):  # type: ignore[arg-type]
        expected = runner.invoke(whole, [name, "--help"])
        got = runner.invoke(alone, [name, "--help"])
        assert expected.exit_code == got.exit_code == 0, got.output
        assert got.output == expected.output


def test_the_binary_still_lists_every_command_and_refuses_an_unknown_one() -> None:
    listing = subprocess.run([HERDER, "--help"], capture_output=True, text=True, timeout=30)
    assert listing.returncode == 0
    for module in cli.COMMAND_MODULES:
        for name in cli._names_of(module):
            assert f"  {name} " in listing.stdout
    unknown = subprocess.run([HERDER, "no-such-command"], capture_output=True, text=True, timeout=30)
    assert unknown.returncode == 2
    assert "No such command" in unknown.stderr
    version = subprocess.run(
        [HERDER, "--log-level", "warning", "--version"], capture_output=True, text=True, timeout=30
    )
    assert version.returncode == 0
    assert version.stdout.startswith("herder ")
