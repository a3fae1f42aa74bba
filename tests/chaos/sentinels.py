"""A primary, a replica and three Sentinels on loopback: real processes, free ports, a tmp folder.

To make the replica lag, it is switched to replicate through a ``CuttableProxy`` that drops what
the primary sends (a frozen replica would not do: the kernel keeps what was sent to its socket,
and it reads all of it once thawed). The switch is made just before the kill: the Sentinels put
a replica that follows another address back on the master after ``failover-timeout``.

Sentinel is Debian's ``redis-sentinel`` when installed (``make system-deps``), else the suite's
redis-server binary started with ``--sentinel`` (the same program in Sentinel mode).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import shutil
import subprocess
import time
from pathlib import Path

import redis

from shared.config import RedisTarget, SentinelSpec
from shared.redis_server import RedisLaunchError, RedisServer, find_redis_server, free_port
from tests.chaos.proxy import CuttableProxy

MASTER = "ttmaster"


def sentinel_command() -> list[str] | None:
    """How to start a Sentinel here, or None when no binary can."""
    on_path = shutil.which("redis-sentinel")
    if on_path:
        return [on_path]
    with contextlib.suppress(RedisLaunchError):
        return [str(find_redis_server()), "--sentinel"]
    return None


class SentinelSet:
    """``start()`` the primary, its replica and three Sentinels; ``kill_primary()`` to fail over."""

    def __init__(self, root: Path, *, down_after_ms: int = 1000, failover_timeout_ms: int = 3000) -> None:
        command = sentinel_command()
        if command is None:
            raise RedisLaunchError("no redis-sentinel (or redis-server) to start Sentinels with")
        self.command = command
        self.root = root
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.primary = RedisServer(root / "primary", appendonly=True)
        self.link = CuttableProxy(self.primary.port)
        self.replica = RedisServer(
            root / "replica", appendonly=True, extra_args=("--replicaof", "127.0.0.1", str(self.primary.port))
        )
        self.ports = [free_port() for _ in range(3)]
        self.sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def spec(self) -> SentinelSpec:
        return SentinelSpec(tuple(("127.0.0.1", port) for port in self.ports), MASTER)

    @property
    def target(self) -> RedisTarget:
        return RedisTarget("redis://127.0.0.1:1/0", self.spec)  # the URL's host is never used

    def env(self) -> dict[str, str]:
        """What a service needs to find the master through these Sentinels."""
        nodes = ",".join(f"127.0.0.1:{port}" for port in self.ports)
        return {"TT_REDIS_SENTINELS": nodes, "TT_REDIS_SENTINEL_MASTER": MASTER}

    def start(self, timeout_s: float = 20.0) -> None:
        try:
            self.primary.start()
            self.link.start()
            self.replica.start()
            for index, port in enumerate(self.ports):
                self.sentinels.append(self._start_sentinel(index, port))
            self._wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise

    def _start_sentinel(self, index: int, port: int) -> subprocess.Popen[bytes]:
        folder = self.root / f"sentinel{index}"
        folder.mkdir(parents=True, exist_ok=True)
        conf = folder / "sentinel.conf"
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndaemonize no\ndir {folder}\nlogfile {folder / 'sentinel.log'}\n"
            f"sentinel monitor {MASTER} 127.0.0.1 {self.primary.port} 2\n"
            f"sentinel down-after-milliseconds {MASTER} {self.down_after_ms}\n"
            f"sentinel failover-timeout {MASTER} {self.failover_timeout_ms}\n"
            f"sentinel parallel-syncs {MASTER} 1\n"
        )
        binary, *flags = self.command
        return subprocess.Popen(
            [binary, str(conf), *flags], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
        )

    def _wait_ready(self, timeout_s: float) -> None:
        """Until the replica is in sync and every Sentinel knows it and the two other Sentinels
        (a failover needs a majority of Sentinels that know each other)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._ready():
                return
            time.sleep(0.2)
        raise RedisLaunchError(f"Sentinels not ready within {timeout_s}s; see {self.root}/*/*.log")

    def _ready(self) -> bool:
        with contextlib.suppress(redis.RedisError):
            with redis.Redis(port=self.replica.port, socket_timeout=1) as replica:
                if replica.info("replication").get("master_link_status") != "up":
                    return False
            for port in self.ports:
                with redis.Redis(port=port, socket_timeout=1, decode_responses=True) as sentinel:
                    state = sentinel.execute_command("SENTINEL", "MASTER", MASTER)  # parsed to a dict
                    if int(state["num-slaves"]) < 1 or int(state["num-other-sentinels"]) < 2:
                        return False
            return True
        return False

    def master_port(self) -> int:
        """The master's port as the first Sentinel that answers sees it."""
        for port in self.ports:
            with contextlib.suppress(redis.RedisError):
                with redis.Redis(port=port, socket_timeout=1, decode_responses=True) as sentinel:
                    _, master_port = sentinel.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER)
                    return int(master_port)
        raise RedisLaunchError("no Sentinel answered")

    def kill_primary(self, lagging_s: float = 0.0) -> float:
        """SIGKILL the primary (it stays down); with ``lagging_s``, what it sends the replica in
        that time before the kill is dropped (the replica lags), and the link is cut after it.
        Returns the ``time.monotonic()`` of the kill."""
        if lagging_s > 0:
            self._replicate_through_link()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            cut = pool.submit(self.link.cut, lagging_s + 0.3) if lagging_s > 0 else None
            time.sleep(lagging_s)
            self.primary.kill()
            killed = time.monotonic()
            if cut is not None:
                cut.result()
        return killed

    def _replicate_through_link(self, timeout_s: float = 10.0) -> None:
        with redis.Redis(port=self.replica.port, socket_timeout=2, decode_responses=True) as replica:
            replica.execute_command("REPLICAOF", "127.0.0.1", str(self.link.port))
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                info = replica.info("replication")
                if info.get("master_port") == self.link.port and info.get("master_link_status") == "up":
                    return
                time.sleep(0.02)
        raise RedisLaunchError("the replica did not resume replication through the proxy")

    def stop(self) -> None:
        for process in self.sentinels:
            process.terminate()
        for process in self.sentinels:
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.sentinels = []
        self.replica.stop()
        self.primary.stop()
        with contextlib.suppress(RuntimeError):  # never started
            self.link.stop()
