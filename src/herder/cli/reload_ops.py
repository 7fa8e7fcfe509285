"""What ``herder reload`` does, without typer (the quick path runs it too).

``POST /reload-config`` on the agent; the answer printed as one line per kind of change
(``started: web.web.3``), or whole with ``--json``. A refused reload (the file does not
validate) is one line on stderr listing the problems, exit status 1, and nothing
changed on the agent.
"""

from __future__ import annotations

from herder.cli import output
from herder.cli.rest import request

# Names for the type checker only (see agent_ops): typing and pathlib cost a quick command.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

# The answer's lists, in the order they are printed.
KINDS = ("started", "stopped", "changed", "unchanged")


def reload(agent: str, token_file: Path | None, as_json: bool = False) -> None:
    """Ask the agent at ``agent`` to apply its config file again and print what it did."""
    doc = request("POST", f"{agent.rstrip('/')}/reload-config", token_file, {})
    if as_json:
        output.print_json(doc)
        return
    for kind in KINDS:
        names = doc.get(kind) or []
        print(f"{kind}: {', '.join(names) if names else '-'}")
    needed = doc.get("restart_needed") or []
    if needed:
        print(f"not applied (needs an agent restart): {', '.join(needed)}")


__all__ = ["reload"]
