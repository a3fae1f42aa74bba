"""The projectors the gateway reads from: probed in the background, failed over on any error.

Each projector folds the whole log into its own SQLite file, so any healthy one can answer. A
background probe every ``interval_s`` keeps a health flag per projector; a request goes to the
healthy projector that is most caught up and, on an error, tries the next one at once. A refused
connection marks a projector down at once; a slow one is marked down by two missed probes, so a
busy moment does not take the only projector out. With none healthy a request still asks those
that were only slow (a late answer beats a 503 on a loaded host), never one that refused
connections; with none of those either it fails at once and callers answer from the run stream
or with 503.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec
from prometheus_client import Gauge

from services.gateway.problems import Problem
from shared import streamids
from shared.lifecycle import Service

logger = logging.getLogger(__name__)

RETRY_AFTER_S = 2
CHECKPOINT_EVERY = 10
"""Probes in a row that only ask /healthz (no Redis work) before one asks for the checkpoint."""


MISSES_DOWN = 2
"""Probes in a row that time out or fail before a projector that accepts connections is skipped."""


class ProjectorUnavailable(Problem):
    """No projector answered: 503 with Retry-After wherever it escapes to."""

    def __init__(self, detail: str) -> None:
        super().__init__(
            503,
            f"The read model (run history) is briefly unavailable: {detail}. Retry in a few seconds; "
            "submitting, following and cancelling runs keep working.",
            slug="read-model-unavailable",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )


class _Checkpoint(msgspec.Struct):
    last_id: str


@functools.cache
def _up_gauge() -> Gauge:
    return Gauge("tickertape_gateway_projector_up", "Projector answering this gateway's probes", ["url"])


@dataclass(slots=True)
class Projector:
    url: str
    healthy: bool = False
    checkpoint: tuple[int, int] = (0, 0)
    missed: int = 0
    refused: bool = False
    """Down because it refused a connection (gone), not because it was slow."""

    def view(self) -> dict[str, Any]:
        ms, seq = self.checkpoint
        return {"url": self.url, "healthy": self.healthy, "checkpoint": f"{ms}-{seq}"}


class ProjectorPool(Service):
    """Reads from whichever projector is healthy; ``start()`` probes once before serving."""

    name = "projectors"

    def __init__(
        self, urls: Sequence[str], *, timeout_s: float, interval_s: float = 0.5, probe_timeout_s: float = 0.3
    ) -> None:
        super().__init__(grace_s=0.0)
        self.members = [Projector(url.rstrip("/")) for url in urls]
        self.interval_s = interval_s
        self.probe_timeout = httpx.Timeout(probe_timeout_s)
        # A projector is on the local network: a refused or unanswered connect means it is down.
        timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 0.25))
        self.http = httpx.AsyncClient(timeout=timeout)
        self._probes = 0
        self._checkpoint = msgspec.json.Decoder(_Checkpoint)

    async def start(self) -> None:
        await self.probe()
        self.spawn(self.every(self.interval_s, self.probe), "probe")

    async def close(self) -> None:
        await self.http.aclose()

    @property
    def healthy(self) -> list[Projector]:
        """Healthy projectors, the most caught up first."""
        return sorted((m for m in self.members if m.healthy), key=lambda m: m.checkpoint, reverse=True)

    def _candidates(self) -> list[Projector]:
        """The healthy projectors or, with none, those that were only slow to answer probes."""
        return self.healthy or [m for m in self.members if not m.refused]

    def status(self) -> list[dict[str, Any]]:
        return [m.view() for m in self.members]

    async def get(self, path: str, params: Mapping[str, str | int]) -> httpx.Response:
        """The first answer below 500 from a healthy projector; ProjectorUnavailable if none."""
        candidates = self._candidates()
        for member in candidates:
            try:
                response = await self.http.get(member.url + path, params=params)
            except httpx.ConnectError as exc:  # refused: it is gone, stop sending it requests
                self._down(member, f"{type(exc).__name__} {exc}", refused=True)
                continue
            except httpx.HTTPError as exc:  # slow: try the next one, the probes judge this one
                logger.info("projector %s did not answer %s: %s", member.url, path, type(exc).__name__)
                continue
            if response.status_code < 500:
                return response
            self._down(member, f"answered {response.status_code}")
        reason = "no projector is reachable" if not candidates else "every projector failed this request"
        raise ProjectorUnavailable(reason)

    async def probe(self) -> None:
        """Refresh every projector's health (and, now and then, its checkpoint)."""
        with_checkpoint = self._probes % CHECKPOINT_EVERY == 0
        self._probes += 1
        await asyncio.gather(*(self._probe(m, with_checkpoint) for m in self.members))

    async def _probe(self, member: Projector, with_checkpoint: bool) -> None:
        path = "/internal/checkpoint" if with_checkpoint else "/healthz"
        try:
            response = await self.http.get(member.url + path, timeout=self.probe_timeout)
        except httpx.ConnectError as exc:
            self._down(member, f"probe: {type(exc).__name__} {exc}", refused=True)
            return
        except httpx.HTTPError as exc:
            self._missed(member, f"probe: {type(exc).__name__}")
            return
        if response.status_code != 200:
            self._missed(member, f"probe answered {response.status_code}")
            return
        if with_checkpoint:
            try:
                member.checkpoint = streamids.parse(self._checkpoint.decode(response.content).last_id)
            except (msgspec.DecodeError, ValueError):
                logger.warning("projector %s sent an unreadable checkpoint", member.url)
        self._up(member)

    def _missed(self, member: Projector, reason: str) -> None:
        """A slow or failing probe: down on the second in a row (one can be a busy moment)."""
        member.missed += 1
        if member.missed >= MISSES_DOWN:
            self._down(member, reason)

    def _up(self, member: Projector) -> None:
        if not member.healthy:
            logger.info("projector %s is healthy", member.url)
        member.healthy = True
        member.missed = 0
        member.refused = False
        _up_gauge().labels(member.url).set(1)

    def _down(self, member: Projector, reason: str, *, refused: bool = False) -> None:
        if member.healthy:
            logger.warning("projector %s is down: %s", member.url, reason)
        member.healthy = False
        member.refused = refused
        _up_gauge().labels(member.url).set(0)
