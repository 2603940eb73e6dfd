"""JWKS fetching: keys from the issuer's URL, cached, refreshed on an unknown ``kid``, rate-limited.

One :class:`JwksClient` per (URL, algorithms). ``keys(kid)`` answers from the cache while it is
fresh and knows the ``kid``; otherwise it fetches, at most once per ``min_refresh_seconds``
however many requests ask (a flood of tokens with random ``kid``s costs one fetch per interval)
and once at a time (concurrent callers share the fetch). A failed fetch keeps the keys it had:
an IdP outage does not log everybody out, and a key the IdP withdrew stops working at the
next successful fetch. Fetches have a timeout, a size limit and do not follow redirects.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence

import aiohttp

from agentgov.api.agentdeployment import JwtAlgorithm
from agentgov.sidecar.errors import ConfigError
from agentgov.sidecar.keys import KeySet, knows_kid, parse_jwks
from agentgov.sidecar.metrics import Metrics

log = logging.getLogger(__name__)


class JwksClient:
    """The keys published at one JWKS URL."""

    def __init__(
        self,
        url: str,
        algorithms: Sequence[JwtAlgorithm],
        session: aiohttp.ClientSession,
        *,
        timeout_seconds: float = 5.0,
        cache_seconds: float = 300.0,
        min_refresh_seconds: float = 30.0,
        max_bytes: int = 512 * 1024,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.algorithms = tuple(algorithms)
        self._session = session
        self._timeout = timeout_seconds
        self._cache_seconds = cache_seconds
        self._min_refresh = min_refresh_seconds
        self._max_bytes = max_bytes
        self._metrics = metrics
        self._clock = clock
        self._lock = asyncio.Lock()
        self._keys: KeySet | None = None
        self._fetched_at = float("-inf")
        self._attempted_at = float("-inf")
        self.last_error: str | None = None

    @property
    def cached(self) -> KeySet | None:
        return self._keys

    def _wants_fetch(self, kid: str | None, now: float) -> bool:
        if now - self._attempted_at < self._min_refresh:
            return False  # the rate limit holds for every reason to fetch
        if self._keys is None or now - self._fetched_at >= self._cache_seconds:
            return True
        return kid is not None and not knows_kid(self._keys, kid)

    async def keys(self, kid: str | None = None) -> KeySet | None:
        """Keys to verify a token with this ``kid``; None when no fetch ever succeeded."""
        if not self._wants_fetch(kid, self._clock()):
            return self._keys
        async with self._lock:
            # Someone else may have fetched while we waited.
            if self._wants_fetch(kid, self._clock()):
                await self._fetch()
        return self._keys

    async def _fetch(self) -> None:
        self._attempted_at = self._clock()
        try:
            keys, problems = await self._download()
        except (aiohttp.ClientError, TimeoutError, ConfigError, ValueError) as e:
            self.last_error = f"{type(e).__name__}: {e}"[:300]
            log.warning("JWKS %s: fetch failed (%s); keeping %s", self.url, self.last_error,
                        f"{len(self._keys)} cached key(s)" if self._keys is not None else "no keys")
            if self._metrics:
                self._metrics.jwks_fetches.labels(result="failure").inc()
            return
        for problem in problems:
            log.warning("JWKS %s: skipped %s", self.url, problem)
        self._keys, self._fetched_at, self.last_error = keys, self._clock(), None
        if self._metrics:
            self._metrics.jwks_fetches.labels(result="success").inc()

    async def _download(self) -> tuple[KeySet, list[str]]:
        timeout = aiohttp.ClientTimeout(total=self._timeout)
        async with self._session.get(self.url, timeout=timeout, allow_redirects=False,
                                     headers={"Accept": "application/json"}) as response:
            if response.status != 200:
                raise ValueError(f"HTTP {response.status}")
            body = await response.content.read(self._max_bytes + 1)
            if len(body) > self._max_bytes:
                raise ValueError(f"the JWKS is larger than {self._max_bytes} bytes")
        return parse_jwks(json.loads(body), self.algorithms, source="jwks")


class JwksClients:
    """One client per (URL, algorithms) the bundles in force name; made on first use."""

    def __init__(self, factory: Callable[[str, Sequence[JwtAlgorithm]], JwksClient]) -> None:
        self._factory = factory
        self._clients: dict[tuple[str, tuple[str, ...]], JwksClient] = {}

    def get(self, url: str, algorithms: Sequence[JwtAlgorithm]) -> JwksClient:
        key = (url, tuple(sorted(algorithms)))
        client = self._clients.get(key)
        if client is None:
            # A bundle change that names another URL drops the old client (and its keys).
            self._clients.clear()
            client = self._clients[key] = self._factory(url, algorithms)
        return client

    def all(self) -> list[JwksClient]:
        return list(self._clients.values())
