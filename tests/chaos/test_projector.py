"""Fault 3: the projector SIGKILLed again and again while a burst of runs is written."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from tests.chaos.harness import Cluster, record
from tests.runner.support import submit
from tests.support.processes import ROOT, ServiceProcess

KILLS = 4


async def test_repeated_sigkills_leave_a_read_model_identical_to_a_clean_rebuild(
    redis_url: str, tmp_path: Path
) -> None:
    """30 runs executed by 2 runners while the projector is SIGKILLed 4 times and restarted: once
    caught up, the read model equals the fold of every run stream, and its checksum (every column
    of runs, archive and checkpoint) equals that of a clean rebuild from the log."""
    cluster = Cluster(redis_url, tmp_path, step_delay_s=0.02)
    try:
        await cluster.start(cluster.projector, cluster.runner("a"), cluster.runner("b"))
        run_ids = [await submit(cluster.store) for _ in range(30)]
        for _ in range(KILLS):
            await asyncio.sleep(0.6)
            cluster.projector.kill()
            cluster.projector = ServiceProcess(
                "projector", cluster.env, port=cluster.projector.port, log_dir=cluster.log_dir
            )
            await cluster.start(cluster.projector)
        await cluster.wait_terminal(run_ids)
        assert await cluster.assert_exactly_once(run_ids) == {"completed": 30}
        await cluster.assert_read_model_is_the_fold(run_ids)
        cluster.projector.stop()  # SIGTERM: drains, closes the database, releases its lock
        incremental = cluster.checksum()
        rebuilt = await asyncio.to_thread(_rebuild_from_log, cluster)
        assert cluster.checksum() == incremental, rebuilt
        record("projector_sigkill", {"kills": KILLS, "runs": 30, "checksum_equal_to_rebuild": True})
    finally:
        await cluster.stop()


def _rebuild_from_log(cluster: Cluster) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "services.projector", "rebuild", "--from-log"],
        env=cluster.projector.env, cwd=ROOT, capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    return done.stdout.decode()
