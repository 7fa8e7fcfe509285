"""The manager's answers (pydantic), for its OpenAPI document only.

The routes build their answers as plain dicts (faster than validating a model each time),
so these models only describe them: ``herder.manager.api`` names them, and this module is
imported when ``/openapi.json`` is first asked for (``herder.openapi_docs``), never at
start-up (defining them costs ~15 ms). ``tests/manager/test_openapi_contract.py`` checks
real answers against them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel


class _Document(BaseModel):
    """An answer's shape, for the OpenAPI document only: the routes build answers as plain
    dicts (faster), so its validator is built when first needed, never at start-up."""

    model_config = ConfigDict(defer_build=True)


TaskStatusName = Literal["queued", "assigned", "rendering", "paused", "completed", "failed", "canceled"]
ItemStatusName = Literal["queued", "assigned", "running", "completed", "failed", "canceled"]


class WorkerSummary(_Document):
    """A worker as ``GET /workers`` lists it (the seed's properties, and herder's)."""

    id: int
    hostname: str
    system: str
    status: Literal["enabled", "disabled"] = Field(description="The operator's switch.")
    activity: str | None = Field(description="What the worker last said it does: available, rendering.")
    connection: Literal["online", "offline"] = Field(description="Heard from within offline_after_s.")
    current_task: int | None = Field(description="The task of the work it runs now.")
    ip_address: str | None
    port: int | None
    log: str | None
    time_cost: float | None
    slots: int = Field(description="herder: how many pieces of work it runs at once.")
    tags: list[str] = Field(description="herder: what it offers; a task's tags must all be here.")
    agent_url: str | None = Field(description="herder: its agent's URL, when it is an agent.")


class WorkerList(RootModel[dict[str, WorkerSummary]]):
    """Workers keyed by hostname (``GET /workers``; ``POST /workers``: the one registered)."""

    model_config = ConfigDict(defer_build=True)


class WorkerDetail(_Document):
    """``GET /workers/{id}``: the seed's fields."""

    id: int
    hostname: str
    mac_address: str | None
    system: str
    update_frequent: dict[str, Any] = Field(description="Figures the worker sends often.")
    update_less_frequent: dict[str, Any] = Field(description="Figures the worker sends now and then.")


class WorkItemDocument(_Document):
    """A piece of a task's work, as a worker runs it (one command)."""

    id: int
    task_id: int
    index: int
    label: str
    argv: list[str]
    env: dict[str, str]
    cwd: str | None
    frame_start: int | None
    frame_end: int | None
    frame_current: int | None
    percent: float | None
    status: ItemStatusName
    worker_id: int | None
    attempt: int = Field(description="The fence: a report names the attempt it is about.")
    exit_code: int | None
    error: str | None
    started_at: float | None
    finished_at: float | None


class WorkerAssignment(_Document):
    """``PATCH /workers/{id}``: the work the worker runs now, if any (the seed's pull path)."""

    task_id: int | None
    work_item: WorkItemDocument | None


class TaskDocument(_Document):
    """A task: the seed's fields, with herder's additions."""

    id: int
    worker_id: int | None
    priority: int
    frame_start: int | None
    frame_end: int | None
    frame_current: int | None
    status: TaskStatusName | Literal["deleted"] = Field(description="'deleted' only in DELETE's answer.")
    format: str
    task_id: int | None = Field(description="The submitter's own id.")
    owner: str | None = Field(description="Who submitted it (with keys).")
    type: str = Field(description="The compiler.")
    parser: str
    settings: dict[str, Any]
    tags: list[str]
    error: str | None
    created_at: float
    updated_at: float


class TaskDetail(TaskDocument):
    """``GET /tasks/{id}``: a task with its work items, and why it waits."""

    work_items: list[WorkItemDocument]
    waiting: str | None = Field(description="Why a queued task is not running (no worker has its tags...).")


class TaskPage(_Document):
    """``GET /tasks``: a page of tasks, newest first."""

    tasks: list[TaskDocument]
    next: int | None = Field(description="Give it as ?before= for the next page; null: the last page.")


class TaskCounts(_Document):
    """``GET /tasks/counts``: how many tasks have each status, and in all."""

    queued: int
    assigned: int
    rendering: int
    paused: int
    completed: int
    failed: int
    canceled: int
    total: int


class ServiceDocument(_Document):
    """A registered service instance."""

    id: str
    key: str = Field(description="/<owner>/<environment>/<name>/...")
    url: str
    metadata: dict[str, Any]
    owner: str
    registered_at: float
    expires_at: float | None = Field(description="null: until its connection ends.")


class ServiceList(_Document):
    """``GET /services``: the services under a prefix of their key."""

    services: list[ServiceDocument]


class AccessToken(_Document):
    """``POST /auth/token``: an access token for the key given."""

    token: str
    expires_at: float


class KeyDocument(_Document):
    """A key the manager issued, as ``/auth/keys`` shows it (never the key itself)."""

    id: str = Field(description="The key's id (its jti): revoke it by this.")
    user: str
    role: Literal["admin", "user"]
    issued_at: float
    expires_at: float
    revoked_at: float | None


class IssuedKeyDocument(KeyDocument):
    """``POST /auth/keys``: the new key, shown this once (the manager does not keep it)."""

    key: str = Field(description="The signed key: give it to its holder; it buys tokens at /auth/token.")


class KeyList(_Document):
    """``GET /auth/keys``: every key issued, oldest first."""

    keys: list[KeyDocument]


class Jwks(_Document):
    """``GET /auth/jwks.json``: the public keys tokens are signed with (RFC 7517)."""

    keys: list[dict[str, Any]]
