"""Fault 7: the network between runners and Redis drops connections mid-command."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

from tests.chaos.harness import Cluster, record
from tests.chaos.proxy import CuttableProxy
from tests.runner.support import submit

RUNS = 12


async def test_connections_cut_under_runners_lose_and_double_no_run(redis_url: str, tmp_path: Path) -> None:
    """Two runners reach Redis through a proxy that aborts every link every 0.1-0.4 s (half of
    the time after swallowing Redis's replies for 50 ms: commands executed, never acknowledged)
    while 12 runs execute: each run still ends exactly once, completed, with no step completed twice,
    and no queue entry is left pending."""
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    cluster = Cluster(redis_url, tmp_path, step_delay_s=0.15)
    rng = random.Random(7)
    with CuttableProxy(port) as proxy:
        blipped = {"REDIS_URL": proxy.url, "TT_PROJECTOR_URL": cluster.projector.url}
        runners = [cluster.runner(name, **blipped) for name in ("a", "b")]
        try:
            await cluster.start(cluster.projector, *runners)
            run_ids = [await submit(cluster.store) for _ in range(RUNS)]
            links_cut, began = 0, time.monotonic()
            while time.monotonic() - began < 30:
                await asyncio.sleep(rng.uniform(0.1, 0.4))
                links_cut += await asyncio.to_thread(proxy.cut, rng.choice((0.0, 0.05)))
                states = [await cluster.store.state(r) for r in run_ids]
                if all(s is not None and s.terminal for s in states):
                    break
            await cluster.wait_terminal(run_ids, timeout_s=60)
            statuses = await cluster.assert_exactly_once(run_ids)
            assert statuses == {"completed": RUNS}, statuses
            await cluster.assert_queues_drained()
            assert all(r.process is not None and r.process.poll() is None for r in runners)
            record("network_blips", {"runs": RUNS, "cuts": proxy.cuts, "links_cut": links_cut,
                                     "links_opened": proxy.links, "replies_lost": proxy.replies_lost,
                                     "statuses": dict(statuses)})  # fmt: skip
        finally:
            await cluster.stop()
