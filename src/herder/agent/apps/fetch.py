"""Fetching source archives: ``http(s)://`` and ``file://``, cached by content.

Downloads are not a way into the network behind the agent (``herder.egress``: the same
policy and resolver as the manager's proxy). Before connecting, the host name is
resolved and every address is checked: link-local and cloud-metadata addresses are
refused unless allowed, then the configured deny list applies, and a
non-empty allow list must match. The connection then goes to the address that was
checked (the name is sent as ``Host`` and as TLS SNI), so a DNS answer that changes
between check and connect gains nothing. Redirects are followed by hand, each hop
checked the same way.

The cache is content-addressed: ``cache/archives/<sha256>``. A URL fetched once is
reused for ``URL_CACHE_TTL_S``; concurrent fetches of one URL share one download, so
ten nodes of one app download once.

A download carries the ``X-Request-Id`` of the request that set it going (the create of
the process or pool, ``herder.requestid``), so the archive's server can log it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import tempfile
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from herder import egress
from herder.agent.config import FetchConfig
from herder.agent.errors import FetchError
from herder.requestid import HEADER, REQUEST_ID

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

ALLOWED_SCHEMES = ("http", "https", "file")
# A URL's archive is reused this long before it is downloaded again. Ten nodes created
# together share one download; a new release at the same URL is seen after this.
URL_CACHE_TTL_S = 300.0
METADATA_ADDRESSES = egress.METADATA_ADDRESSES
_RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})

IPAddress = egress.IPAddress


@dataclass(frozen=True, slots=True)
class Fetched:
    """A source ready to unpack (``archive``) or to run in place (``directory``)."""

    archive: Path | None
    directory: Path | None
    sha256: str | None


class AddressPolicy:
    """Decides whether a host and its resolved addresses may be fetched from: the shared
    ``herder.egress.Policy`` with the agent's ``[fetch]`` settings."""

    def __init__(self, config: FetchConfig) -> None:
        link_local = "a link-local or cloud-metadata address (set fetch.allow_link_local to allow)"
        refused = {"unspecified", "multicast"}
        if not config.allow_link_local:
            refused |= {"link-local", "cloud-metadata"}
        self._policy = egress.Policy(
            refused=frozenset(refused),
            deny=egress.HostList.parse(config.deny_hosts),
            allow_only=egress.HostList.parse(config.allow_hosts),
            deny_setting="fetch.deny_hosts",
            allow_setting="fetch.allow_hosts",
            describe={"link-local": link_local, "cloud-metadata": link_local},
        )

    def check(self, host: str, address: IPAddress) -> None:
        """Raise FetchError if ``host`` at ``address`` is refused."""
        reason = self._policy.refusal(host.lower().rstrip("."), address)
        if reason is not None:
            raise FetchError(f"download refused: {reason}")


async def resolve(host: str, port: int) -> list[IPAddress]:
    """All addresses of ``host`` (a literal address resolves to itself)."""
    try:
        return await egress.resolve(host, port)
    except egress.ResolveError as exc:
        raise FetchError(f"download failed: {exc}", transient=exc.transient) from exc


class Fetcher:
    """Downloads and caches archives; one instance per agent."""

    def __init__(self, cache_dir: Path, config: FetchConfig) -> None:
        self._archives = cache_dir / "archives"
        self._urls = cache_dir / "urls"
        self._archives.mkdir(parents=True, exist_ok=True)
        self._urls.mkdir(parents=True, exist_ok=True)
        self._config = config
        self._policy = AddressPolicy(config)
        self._inflight: dict[str, asyncio.Future[Fetched]] = {}

    def archive_path(self, sha256: str) -> Path:
        return self._archives / sha256

    async def fetch(self, url: str, *, prefer_sha256: str | None = None) -> Fetched:
        """Make ``url``'s source available locally.

        ``prefer_sha256`` names an archive fetched before (a restored process): if it is
        still cached, it is used without touching the network.

        Raises:
            FetchError: bad URL, refused address, HTTP error, too large, too slow.
        """
        if prefer_sha256 and self.archive_path(prefer_sha256).is_file():
            return Fetched(archive=self.archive_path(prefer_sha256), directory=None, sha256=prefer_sha256)
        parts = urllib.parse.urlsplit(url)
        if parts.scheme == "file":
            # Hashing and copying a large archive takes seconds: not on the event loop.
            return await asyncio.to_thread(self._fetch_file, parts)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise FetchError(f"download failed: {url!r} is not an http(s) or file URL")
        cached = self._cached(url)
        if cached is not None:
            return cached
        if url in self._inflight:
            return await asyncio.shield(self._inflight[url])
        future: asyncio.Future[Fetched] = asyncio.get_running_loop().create_future()
        self._inflight[url] = future
        try:
            result = await self._download(url)
        except asyncio.CancelledError:
            # The process that started the download was deleted; the others waiting on
            # it were not, and must retry rather than be cancelled with it.
            future.set_exception(FetchError(f"download failed: {url}: interrupted", transient=True))
            future.exception()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters (if any) get it via shield
            raise
        else:
            future.set_result(result)
            return result
        finally:
            del self._inflight[url]

    def _fetch_file(self, parts: urllib.parse.SplitResult) -> Fetched:
        if parts.netloc not in ("", "localhost"):
            raise FetchError("download failed: file URLs must name a local path (file:///...)")
        path = Path(urllib.parse.unquote(parts.path))
        if path.is_dir():
            return Fetched(archive=None, directory=path, sha256=None)
        if not path.is_file():
            raise FetchError(f"download failed: {path} does not exist")
        if path.stat().st_size > self._config.max_bytes:
            raise FetchError(f"download failed: {path} is larger than {self._config.max_bytes} bytes")
        digest = _sha256_file(path)
        dest = self.archive_path(digest)
        if not dest.exists():
            tmp = self._tempfile()
            with open(path, "rb") as src, open(tmp, "wb") as out:
                while chunk := src.read(1024 * 1024):
                    out.write(chunk)
            os.replace(tmp, dest)
        return Fetched(archive=dest, directory=None, sha256=digest)

    def _url_key(self, url: str) -> Path:
        return self._urls / hashlib.sha256(url.encode()).hexdigest()

    def _cached(self, url: str) -> Fetched | None:
        key = self._url_key(url)
        try:
            entry = json.loads(key.read_text())
        except (OSError, ValueError):
            return None
        digest = entry.get("sha256")
        if time.time() - float(entry.get("fetched_at", 0)) > URL_CACHE_TTL_S:
            return None
        if not isinstance(digest, str) or not self.archive_path(digest).is_file():
            return None
        return Fetched(archive=self.archive_path(digest), directory=None, sha256=digest)

    def _tempfile(self) -> Path:
        fd, name = tempfile.mkstemp(dir=self._archives, prefix=".part-")
        os.close(fd)
        return Path(name)

    async def _download(self, url: str) -> Fetched:
        tmp = self._tempfile()
        try:
            async with asyncio.timeout(self._config.timeout_s):
                digest = await self._follow(url, tmp)
        except TimeoutError as exc:
            tmp.unlink(missing_ok=True)
            raise FetchError(
                f"download failed: {url} took longer than {self._config.timeout_s:g} s",
                transient=True,
            ) from exc
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        dest = self.archive_path(digest)
        os.replace(tmp, dest)
        self._url_key(url).write_text(json.dumps({"sha256": digest, "fetched_at": time.time(), "url": url}))
        return Fetched(archive=dest, directory=None, sha256=digest)

    async def _follow(self, url: str, tmp: Path) -> str:
        import httpx  # imported on first download: the agent starts faster without it

        async with httpx.AsyncClient(follow_redirects=False, trust_env=False, timeout=30.0) as client:
            for _ in range(self._config.max_redirects + 1):
                request = await self._pinned_request(client, url)
                try:
                    response = await client.send(request, stream=True)
                except httpx.HTTPError as exc:
                    raise FetchError(f"download failed: {url}: {exc}", transient=True) from exc
                async with _closing(response):
                    if response.is_redirect:
                        location = response.headers.get("location", "")
                        url = urllib.parse.urljoin(url, location)
                        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
                            raise FetchError(f"download failed: redirect to {url!r} refused")
                        continue
                    if response.status_code != 200:
                        raise FetchError(
                            f"download failed: {url} answered HTTP {response.status_code}",
                            transient=response.status_code in _RETRYABLE_STATUS,
                        )
                    return await self._save(response, url, tmp)
        raise FetchError(f"download failed: more than {self._config.max_redirects} redirects")

    async def _pinned_request(self, client: httpx.AsyncClient, url: str) -> httpx.Request:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        addresses = await resolve(host, port)
        for address in addresses:
            self._policy.check(host, address)
        netloc = f"{egress.literal(addresses[0])}:{port}"
        pinned = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
        headers = {"Host": parts.netloc.rsplit("@", 1)[-1]}
        request_id = REQUEST_ID.get()  # the create's (or the pool's) request: herder.requestid
        if request_id is not None:
            headers[HEADER] = request_id
        return client.build_request("GET", pinned, headers=headers, extensions={"sni_hostname": host})

    async def _save(self, response: httpx.Response, url: str, tmp: Path) -> str:
        import httpx

        limit = self._config.max_bytes
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise FetchError(f"download failed: {url} is {declared} bytes, over the {limit}-byte limit")
        digest = hashlib.sha256()
        size = 0
        try:
            # Each write is one network chunk to a local file: cheaper than a thread hop.
            with open(tmp, "wb") as out:  # noqa: ASYNC230
                async for chunk in response.aiter_raw():
                    size += len(chunk)
                    if size > limit:
                        raise FetchError(f"download failed: {url} is over the {limit}-byte limit")
                    digest.update(chunk)
                    out.write(chunk)
        except httpx.HTTPError as exc:
            raise FetchError(f"download failed: {url}: {exc}", transient=True) from exc
        return digest.hexdigest()


class _closing:
    """``async with`` for a streamed httpx response."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response

    async def __aenter__(self) -> httpx.Response:
        return self._response

    async def __aexit__(self, *exc: object) -> None:
        await self._response.aclose()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()
