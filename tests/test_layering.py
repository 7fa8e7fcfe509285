"""The map in ARCHITECTURE.md, checked: who may import whom."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "herder"


def imports_of(package: str) -> set[str]:
    found: set[str] = set()
    for path in (SRC / package).rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
    return found


def test_agent_and_manager_never_import_each_other() -> None:
    assert not any(m.startswith("herder.manager") for m in imports_of("agent"))
    assert not any(m.startswith("herder.agent") for m in imports_of("manager"))


def test_wire_is_sans_io_and_imports_nothing_of_herder() -> None:
    imported = imports_of("wire")
    assert not any(m.startswith("herder") and not m.startswith("herder.wire") for m in imported)
    assert "asyncio" not in imported
    assert "socket" not in imported


def test_lower_layers_do_not_import_the_cli_or_the_sdk() -> None:
    for package in ("agent", "manager", "rpc", "wire"):
        imported = imports_of(package)
        assert not any(m.startswith(("herder.cli", "herder.client")) for m in imported), package


def test_importing_herder_is_light() -> None:
    """``herder --version`` must not pay for FastAPI: the top package imports nothing heavy."""
    imported = imports_of(".")
    top = ast.parse((SRC / "__init__.py").read_text())
    assert not [n for n in ast.walk(top) if isinstance(n, ast.Import | ast.ImportFrom)]
    assert imported  # the walk found the tree at all
