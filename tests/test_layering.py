"""The map in ARCHITECTURE.md, checked: who may import whom."""

from __future__ import annotations

import ast
import importlib
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


def test_the_link_contract_belongs_to_neither_side() -> None:
    """``herder.fleet`` is imported by the agent and the manager, so it imports neither."""
    imported = imports_of("fleet")
    assert not any(
        m.startswith(("herder.agent", "herder.manager", "herder.cli", "herder.client")) for m in imported
    )
    assert any(m.startswith("herder.fleet") for m in imports_of("agent"))
    assert any(m.startswith("herder.fleet") for m in imports_of("manager"))


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


def _top_packages() -> set[str]:
    return {p.name for p in SRC.iterdir() if (p / "__init__.py").exists()}


def _exports(package: str) -> set[str]:
    """The names ``herder.<package>`` lists in ``__all__`` (lazy packages list them without importing)."""
    module = importlib.import_module("herder." + package.replace("/", "."))
    return set(getattr(module, "__all__", ()))


def test_other_packages_are_reached_only_through_their_init() -> None:
    """STYLE.md: a package exports its API through ``__init__`` + ``__all__``; others import only that.

    Inside one top-level package (``herder.agent`` and its subpackages, say) modules import each
    other freely; across packages, ``from herder.rpc.peer import Peer`` is refused and
    ``from herder.rpc import Peer`` is the way, with ``Peer`` in ``herder.rpc.__all__``.
    """
    packages = _top_packages()
    exports = {package: _exports(package) for package in packages}
    reaching: list[str] = []
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC).parts
        own = parts[0] if len(parts) > 1 else None
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
                names: list[str] = []
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules = [node.module]
                names = [alias.name for alias in node.names]
            else:
                continue
            for module in modules:
                dotted = module.split(".")
                if dotted[0] != "herder" or len(dotted) < 2 or dotted[1] == own or dotted[1] not in packages:
                    continue
                where = f"{path.relative_to(SRC)}:{node.lineno}"
                if len(dotted) > 2:
                    reaching.append(f"{where} imports {module}")
                else:
                    missing = [n for n in names if n not in exports[dotted[1]]]
                    if missing:
                        reaching.append(f"{where} takes {missing} from {module}, not in its __all__")
    assert not reaching, "\n".join(reaching)


def test_every_package_exports_its_api() -> None:
    for init in SRC.rglob("__init__.py"):
        package = init.parent
        if "migrations" in package.parts or package == SRC:
            continue
        assert _exports_at(init), f"{init.relative_to(SRC)} has no __all__"


def _exports_at(init: Path) -> set[str]:
    return _exports(str(init.parent.relative_to(SRC)))
