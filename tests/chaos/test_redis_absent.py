"""Fault 6: Redis unreachable when the services start."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from shared.redis_server import RedisServer, free_port
from tests.chaos.harness import Cluster, record

BODY = {"symbol": "AAPL", "analysts": ["market"], "pipeline": "noop", "join": False}


def _status(url: str) -> int:
    return httpx.get(url, timeout=5).status_code


async def test_services_wait_not_ready_and_a_submission_is_503_with_retry_after(tmp_path: Path) -> None:
    """With no Redis, every service stays alive (/healthz 200) and not ready (/readyz 503); a
    submission answers 503 problem+json with Retry-After within seconds, never a hang or a 500.
    Once Redis starts on that address, all become ready and a run completes."""
    port = free_port()
    cluster = Cluster(f"redis://127.0.0.1:{port}/0", tmp_path / "state")
    gateway, runner = cluster.gateway(), cluster.runner("r")
    try:
        await cluster.start(cluster.projector, runner, gateway)
        services = (cluster.projector, runner, gateway)
        assert [_status(f"{s.url}/healthz") for s in services] == [200, 200, 200]
        assert [_status(f"{s.url}/readyz") for s in services] == [503, 503, 503]
        began = time.monotonic()
        refused = httpx.post(f"{gateway.url}/api/trading/runs", json=BODY, timeout=30)
        answered_s = time.monotonic() - began
        assert refused.status_code == 503, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert int(refused.headers["retry-after"]) > 0
        assert refused.json()["status"] == 503 and "Traceback" not in refused.text
        assert answered_s < 10
        assert all(s.process is not None and s.process.poll() is None for s in services)

        with RedisServer(tmp_path / "redis", port=port):
            began = time.monotonic()
            while [_status(f"{s.url}/readyz") for s in services] != [200, 200, 200]:
                assert time.monotonic() - began < 30, [_status(f"{s.url}/readyz") for s in services]
                time.sleep(0.1)
            ready_s = time.monotonic() - began
            accepted = httpx.post(f"{gateway.url}/api/trading/runs", json=BODY, timeout=10)
            assert accepted.status_code == 202, accepted.text
            run_id = accepted.json()["runId"]
            await cluster.wait_terminal([run_id], timeout_s=30)
            record("redis_absent_at_start", {"submit_503_after_s": round(answered_s, 2),
                                             "all_ready_after_redis_up_s": round(ready_s, 2)})  # fmt: skip
            await cluster.stop()
    finally:
        await cluster.stop()
