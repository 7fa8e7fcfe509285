"""Relayed services (#15): a peer that cannot listen (a browser tab) registers without a URL,
and the manager relays calls to it over the peer's own link.

Everything here is real: a manager on loopback, a Python peer holding its link (what a page
does with herder.js), callers through ``dial`` and through ``herder call`` as a subprocess.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from herder.auth import init_keys
from herder.manager.config import ManagerConfig
from herder.manager.server import Manager
from herder.rpc import CallTimeout, HandshakeRefused, RemoteError, dial, find
from herder.rpc.client import connect
from herder.rpc.discovery import buy_token, manager_rpc_url
from herder.rpc.peer import Peer
from tests.helpers import HERDER, poll

PAGE = "/alice/dev/page/1.0.0/browser/tab/page-1"


@contextlib.asynccontextmanager
async def running_manager(data_dir: Path) -> AsyncIterator[Manager]:
    """A real manager on a loopback port (SQLite; the registry lives in its memory)."""
    async with Manager(ManagerConfig(port=0, data_dir=data_dir)) as manager:
        yield manager


@pytest.fixture
async def manager(tmp_path: Path) -> AsyncIterator[Manager]:
    async with running_manager(tmp_path / "manager") as running:
        yield running


class Page:
    """What a browser tab offers: methods, and what it saw (a Python peer stands in for it)."""

    def __init__(self) -> None:
        self.alerts: list[str] = []
        self.slow_started = asyncio.Event()
        self.slow_cancelled = asyncio.Event()
        self.release = asyncio.Event()

    def handlers(self) -> dict[str, Callable[..., Any]]:
        return {
            "alert": self.alert,
            "fail": self.fail,
            "slow": self.slow,
            "countdown": self.countdown,
            "adder": self.adder,
        }

    async def alert(self, text: str, *, loud: bool = False) -> str:
        """Show text."""
        self.alerts.append(text.upper() if loud else text)
        return f"shown: {text}"

    async def fail(self) -> None:
        error = ValueError("the page refuses")
        error.code = "page_refused"  # type: ignore[attr-defined]
        error.field = "text"  # type: ignore[attr-defined]
        raise error

    async def slow(self) -> str:
        self.slow_started.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.slow_cancelled.set()
            raise
        return "done"

    async def countdown(self, n: int, tick: Any) -> str:
        for i in range(n, 0, -1):
            await tick(i)
        return "liftoff"

    def adder(self, base: int) -> Callable[[int], int]:
        return lambda x: base + x


@contextlib.asynccontextmanager
async def page_link(
    manager: Manager, page: Page, key: str = PAGE, token: str | None = None
) -> AsyncIterator[Peer]:
    """The page's link to the manager, registered under ``key`` without a URL."""
    async with connect(manager_rpc_url(manager.url), token=token, handlers=page.handlers()) as link:
        document = await link.call("register_service", key, None, {"title": "a tab"}, 0)
        assert document["relay"] is True
        yield link


def herder_call(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HERDER, "call", *argv], capture_output=True, text=True, timeout=60, check=False)


async def test_a_peer_registered_without_a_url_is_called_through_the_manager(manager: Manager) -> None:
    page = Page()
    async with page_link(manager, page):
        [found] = await find("/alice/dev/page", manager=manager.url)
        assert found["relay"] is True
        assert found["url"] == manager.url.replace("http://", "ws://") + "/relay/page-1"
        assert found["metadata"] == {"title": "a tab"}
        async with dial("/alice/dev/page", manager=manager.url) as tab:
            assert await tab.call("alert", "hi") == "shown: hi"
            assert await tab.call("alert", "hey", loud=True) == "shown: hey"
            assert page.alerts == ["hi", "HEY"]
            assert await tab.call("ping", target="meta") == "pong"
            assert "alert" in [m["name"] for m in await tab.call("methods", target="meta")]
            with pytest.raises(RemoteError) as refused:
                await tab.call("fail")
            assert (refused.value.code, refused.value.type) == ("application_error", "page_refused")
            assert refused.value.data == {"field": "text"}
            with pytest.raises(RemoteError) as unknown:
                await tab.call("nothing")
            assert unknown.value.code == "unknown_method"
            with pytest.raises(CallTimeout):
                await tab.call("slow", timeout=0.5)
            await asyncio.wait_for(page.slow_cancelled.wait(), 10)  # the cancel reached the page


async def test_callbacks_cross_the_relay_both_ways(manager: Manager) -> None:
    page = Page()
    ticks: list[int] = []
    async with page_link(manager, page), dial("/alice/dev/page", manager=manager.url) as tab:
        assert await tab.call("countdown", 3, ticks.append) == "liftoff"
        assert ticks == [3, 2, 1]
        add_two = await tab.call("adder", 2)
        assert await add_two(40) == 42


async def test_herder_call_follows_the_relay(manager: Manager) -> None:
    page = Page()
    async with page_link(manager, page):
        done = await asyncio.to_thread(
            herder_call, "/alice/dev/page", "alert", "hi", "--manager", manager.url
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == "shown: hi"
        assert page.alerts == ["hi"]
        listed = await asyncio.to_thread(
            herder_call, "/alice/dev/page", "--methods", "--manager", manager.url
        )
        assert listed.returncode == 0, listed.stderr
        assert "alert" in listed.stdout
        failed = await asyncio.to_thread(herder_call, "/alice/dev/page", "fail", "--manager", manager.url)
        assert failed.returncode == 1
        assert "the page refuses" in failed.stderr


async def test_when_the_link_closes_pending_calls_fail_and_the_service_is_gone(manager: Manager) -> None:
    page = Page()
    async with dial_after_register(manager, page) as (link, tab):
        pending = asyncio.ensure_future(tab.call("slow"))
        await asyncio.wait_for(page.slow_started.wait(), 10)
        await link.close()
        with pytest.raises(RemoteError) as gone:
            await asyncio.wait_for(pending, 10)
        assert gone.value.code == "unknown_target"
        assert "went away" in gone.value.message
        assert await find("/alice/dev/page", manager=manager.url) == []
        with pytest.raises(RemoteError) as after:
            await tab.call("alert", "anyone?")
        assert after.value.code == "unknown_target"
    with pytest.raises(LookupError):
        async with dial("/alice/dev/page", manager=manager.url):
            pass


@contextlib.asynccontextmanager
async def dial_after_register(manager: Manager, page: Page) -> AsyncIterator[tuple[Peer, Peer]]:
    async with page_link(manager, page) as link, dial("/alice/dev/page", manager=manager.url) as tab:
        yield link, tab


async def test_the_page_comes_back_under_the_same_id_and_is_reached_again(manager: Manager) -> None:
    page = Page()
    async with dial_after_register(manager, page) as (link, tab):
        await link.close()
        await poll(lambda: manager.runtime is not None and "page-1" not in manager.runtime.services.index)
        async with page_link(manager, page):
            assert await tab.call("alert", "back") == "shown: back"


async def test_bad_registrations_are_refused_naming_the_field(manager: Manager) -> None:
    page = Page()
    async with connect(manager_rpc_url(manager.url), handlers=page.handlers()) as link:
        with pytest.raises(RemoteError) as ttl:
            await link.call("register_service", PAGE, None, {}, 30)
        assert ttl.value.data == {"field": "ttl_s"}
        with pytest.raises(RemoteError) as url:
            await link.call("register_service", PAGE, 42, {}, 0)
        assert url.value.data == {"field": "url"}
        await link.call("register_service", PAGE, "", {}, 0)  # "" is no URL too
        with pytest.raises(RemoteError) as renew:
            await link.call("renew_service", "page-1", 30)
        assert renew.value.data == {"field": "id"}


async def test_relayed_services_and_calls_in_flight_are_bounded(manager: Manager) -> None:
    from herder.manager.relay import MAX_CALLS_IN_FLIGHT, MAX_RELAYED_PER_LINK

    page = Page()
    async with page_link(manager, page) as link:
        for n in range(2, MAX_RELAYED_PER_LINK + 1):
            await link.call("register_service", f"/alice/dev/page/1.0.0/browser/tab/page-{n}", None, {}, 0)
        with pytest.raises(RemoteError) as capped:
            await link.call("register_service", "/alice/dev/page/1.0.0/browser/tab/one-more", None, {}, 0)
        assert capped.value.data == {"field": "url"}
        assert str(MAX_RELAYED_PER_LINK) in capped.value.message
        await link.call("register_service", PAGE, None, {"again": True}, 0)  # a replacement is no more
        async with dial("/alice/dev/page/1.0.0/browser/tab/page-1", manager=manager.url) as tab:
            waiting = [asyncio.ensure_future(tab.call("slow")) for _ in range(MAX_CALLS_IN_FLIGHT)]
            try:
                relay = manager.runtime.services.relay if manager.runtime else None
                assert relay is not None
                await poll(lambda: relay.in_flight("page-1") == MAX_CALLS_IN_FLIGHT)
                with pytest.raises(RemoteError) as overloaded:
                    await tab.call("alert", "one too many")
                assert overloaded.value.code == "overloaded"
            finally:
                page.release.set()
            assert set(await asyncio.gather(*waiting)) == {"done"}
            assert await tab.call("alert", "now") == "shown: now"


async def test_with_keys_any_user_with_a_token_calls_a_relayed_service(tmp_path: Path) -> None:
    init_keys(tmp_path / "manager")
    async with running_manager(tmp_path / "manager") as manager:
        assert manager.runtime is not None
        assert manager.authority is not None
        async with manager.runtime.transaction() as db:
            bob_key = (await manager.authority.issue_key(db, "bob", "user")).key
            carol_key = (await manager.authority.issue_key(db, "carol", "user")).key
        bob = await buy_token(manager.url, bob_key)
        page = Page()
        bobs = "/bob/dev/page/1.0.0/browser/tab/bob-tab"
        with pytest.raises(RemoteError, match="only under /bob"):
            async with page_link(manager, page, key=PAGE, token=bob):
                pass
        async with page_link(manager, page, key=bobs, token=bob):
            async with dial("/bob/dev/page", manager=manager.url, key=carol_key) as tab:
                assert await tab.call("alert", "from carol") == "shown: from carol"
            token_file = tmp_path / "carol.token"
            token_file.write_text(await buy_token(manager.url, carol_key))
            done = await asyncio.to_thread(
                herder_call,
                "/bob/dev/page",
                "alert",
                "cli",
                "--manager",
                manager.url,
                "--manager-token-file",
                str(token_file),
            )
            assert done.returncode == 0, done.stderr
            assert page.alerts == ["from carol", "cli"]
            with pytest.raises(HandshakeRefused):  # no token: the front door refuses the upgrade
                async with connect(manager.url.replace("http://", "ws://") + "/relay/bob-tab") as anonymous:
                    await anonymous.call("alert", "nobody")


async def test_a_python_registration_with_handlers_is_a_relayed_service(manager: Manager) -> None:
    from herder.rpc import Registration

    page = Page()
    registration = Registration(PAGE, None, {}, manager.url, None, handlers=page.handlers())
    await registration.start()
    try:
        async with dial("/alice/dev/page", manager=manager.url) as tab:
            assert await tab.call("alert", "from python") == "shown: from python"
    finally:
        await registration.close()
    assert await find("/alice/dev/page", manager=manager.url) == []


async def test_the_relay_answers_only_for_relayed_ids_and_the_proxy_does_not_reach_them(
    manager: Manager,
) -> None:
    import httpx

    page = Page()
    async with page_link(manager, page), httpx.AsyncClient(base_url=manager.url) as client:
        with pytest.raises(HandshakeRefused) as unknown:
            async with connect(manager.url.replace("http://", "ws://") + "/relay/nobody"):
                pass
        assert unknown.value.code == "404"
        proxied = await client.get("/proxy/page-1/")
        assert (proxied.status_code, proxied.json()["field"]) == (403, "id")


async def test_an_id_taken_over_by_another_link_stays_when_the_first_closes(manager: Manager) -> None:
    first, second = Page(), Page()
    async with (
        page_link(manager, first) as old_link,
        page_link(manager, second),
        dial("/alice/dev/page", manager=manager.url) as tab,
    ):
        await old_link.close()
        assert await tab.call("alert", "still here") == "shown: still here"
        assert (first.alerts, second.alerts) == ([], ["still here"])
        [found] = await find("/alice/dev/page", manager=manager.url)
        assert found["relay"] is True
