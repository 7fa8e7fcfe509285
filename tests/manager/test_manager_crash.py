"""A manager killed with SIGKILL under load, started again: nothing acknowledged is lost."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from tests.manager.conftest import ManagerProcess


async def test_sigkill_under_load_loses_no_acknowledged_task(db_url: str, tmp_path: Path) -> None:
    manager = ManagerProcess(tmp_path / "m", db_url).start()
    acknowledged: list[int] = []
    try:
        async with httpx.AsyncClient(base_url=manager.url, timeout=30) as client:

            async def submitter(n: int) -> None:
                for i in range(1000):
                    try:
                        response = await client.post(
                            "/tasks",
                            json={
                                "type": "command",
                                "settings": {"argv": ["true"]},
                                "task_id": n * 10000 + i,
                            },
                        )
                    except httpx.HTTPError:
                        return  # the manager died mid-request: this one was never acknowledged
                    if response.status_code == 202:
                        acknowledged.append(response.json()["id"])

            submitters = [asyncio.ensure_future(submitter(n)) for n in range(8)]
            deadline = asyncio.get_running_loop().time() + 30
            while len(acknowledged) < 150 and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.01)
            manager.kill()  # SIGKILL, with submissions in flight
            await asyncio.wait_for(asyncio.gather(*submitters), 30)
    finally:
        manager.kill()
    assert len(acknowledged) >= 150
    again = ManagerProcess(tmp_path / "m", db_url).start()
    try:
        async with httpx.AsyncClient(base_url=again.url, timeout=30) as client:
            known = {t["id"] for t in (await client.get("/tasks")).json()["tasks"]}
            missing = [t for t in acknowledged if t not in known]
            assert not missing
            detail = (await client.get(f"/tasks/{acknowledged[-1]}")).json()
            assert detail["status"] == "queued"
            assert len(detail["work_items"]) == 1
    finally:
        again.kill()
