"""The JSON documents of work items, shared by the HTTP routes and the agents' link.

A work item is shown the same way to a client (``GET /tasks/{id}``), to a pulling
worker (``PATCH /workers/{id}``) and to a linked agent (the ``assign`` the dispatcher
pushes): one function builds it, from an ORM object or a row of a claim.
"""

from __future__ import annotations

from typing import Any


def item_document(item: Any) -> dict[str, Any]:
    """A work item as workers and clients see it (from an ORM object or a row)."""
    return {
        "id": item.id,
        "task_id": item.task_id,
        "index": item.index,
        "label": item.label,
        "argv": item.argv,
        "env": item.env,
        "cwd": item.cwd,
        "frame_start": item.frame_start,
        "frame_end": item.frame_end,
        "frame_current": item.frame_current,
        "percent": item.percent,
        "status": item.status,
        "worker_id": item.worker_id,
        "attempt": item.attempt,
        "exit_code": item.exit_code,
        "error": item.error,
        "started_at": item.started_at,
        "finished_at": item.finished_at,
    }


__all__ = ["item_document"]
