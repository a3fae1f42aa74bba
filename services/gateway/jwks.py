"""An issuer's public keys (a JWKS URL), cached and refetched at most once per interval.

A token naming an unknown ``kid`` triggers a refetch (that is how a rotation reaches us), but never
more often than ``refresh_s``, so random ``kid`` values cannot make the gateway hammer the issuer.
A fetch that fails (issuer down, slow past the timeout, a broken document) keeps the cached keys
and logs a warning: signed-in users keep working through an issuer outage.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import httpx
from jwt import PyJWK
from jwt.exceptions import PyJWTError

logger = logging.getLogger(__name__)

# Only asymmetric algorithms: a JWKS configuration never accepts a shared-secret (HS*) token, or
# an ``oct`` key in the set, which is how algorithm-confusion attacks get in.
JWKS_ALGORITHMS = frozenset({"RS256", "ES256"})


class JwksCache:
    """Keys by ``kid`` from one JWKS URL; ``key()`` refetches on a miss, rate-limited."""

    def __init__(
        self,
        url: str,
        *,
        refresh_s: float,
        max_age_s: float,
        timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.refresh_s = refresh_s
        self.max_age_s = max_age_s
        self.timeout_s = timeout_s
        self._clock = clock
        self._keys: dict[str, PyJWK] = {}
        self._fetched_at: float | None = None  # last successful fetch
        self._tried_at: float | None = None  # last attempt, successful or not
        self._lock = asyncio.Lock()
        self.fetches = 0

    async def key(self, kid: str | None) -> PyJWK | None:
        """The key for ``kid`` (None: not in the set even after a permitted refetch)."""
        if self._stale():
            await self.refresh()
        found = self._find(kid)
        if found is None and await self.refresh():
            found = self._find(kid)
        return found

    async def refresh(self) -> bool:
        """Fetch the set unless one was tried within ``refresh_s``; True when keys were replaced."""
        async with self._lock:  # concurrent misses share one fetch
            now = self._clock()
            if self._tried_at is not None and now - self._tried_at < self.refresh_s:
                return False
            self._tried_at = now
            keys = await self._fetch()
            if keys is None:
                return False
            self._keys, self._fetched_at = keys, self._clock()
            return True

    def _stale(self) -> bool:
        return self._fetched_at is None or self._clock() - self._fetched_at >= self.max_age_s

    def _find(self, kid: str | None) -> PyJWK | None:
        if kid is None:  # a token without a kid is only unambiguous against a one-key set
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    async def _fetch(self) -> dict[str, PyJWK] | None:
        self.fetches += 1
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s) as client:
                response = await client.get(self.url, headers={"accept": "application/json"})
            response.raise_for_status()
            keys = usable_keys(response.json())
        except (httpx.HTTPError, ValueError) as exc:
            logger.warning(
                "JWKS %s could not be fetched (%s: %s); keeping %d cached key(s)",
                self.url,
                type(exc).__name__,
                exc,
                len(self._keys),
            )
            return None
        logger.info("JWKS %s: %d usable key(s): %s", self.url, len(keys), sorted(keys))
        return keys


def usable_keys(document: object) -> dict[str, PyJWK]:
    """Signing keys with a ``kid`` and an accepted asymmetric algorithm, by ``kid``.

    Raises ValueError when the document is not a JWK set or holds no usable key (a fetch that
    returned an error page must not empty the cache).
    """
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ValueError("not a JWK set (no 'keys' list)")
    keys: dict[str, PyJWK] = {}
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig" or not entry.get("kid"):
            continue
        try:
            key = PyJWK(entry)
        except PyJWTError:
            continue  # a key type this gateway cannot use (skipped, as PyJWKSet does)
        if key.algorithm_name in JWKS_ALGORITHMS:
            keys[str(entry["kid"])] = key
    if not keys:
        raise ValueError(f"no usable signing key ({'/'.join(sorted(JWKS_ALGORITHMS))} with a kid)")
    return keys
