"""``make bench`` / ``python -m bench``: every row of issue 10 in one table, from one run.

Starts its own redis-servers (no persistence): one for Tickertape, one for the peer job queues
(their harness flushes it). Prints the table, writes bench/results/latest.json and latest.md.

    .venv/bin/python -m bench                    # everything (~25 minutes on 2 cores, ~20 of it rows 7-9)
    BENCH_QUICK=1 .venv/bin/python -m bench      # tiny sizes, 1 repetition: a smoke run
    .venv/bin/python -m bench --only submit,e2e  # some sections
Env: BENCH_REPS (default 3), BENCH_N (runs and peer jobs per repetition, default 1000),
BENCH_PEERS (comma-separated peer variants). The LLM-bound sections (issue 20; bench/llm_rows.py):
BENCH_INFLIGHT (runs in flight per size, default 10,100,1000,5000), BENCH_INFLIGHT_WATCHED,
BENCH_WATCH_RUNS, BENCH_WATCHERS_PER_RUN, BENCH_WATCH_ONE; row 9's BENCH_PEERS_INFLIGHT (1000) and
BENCH_LLM_PEERS (arq,saq,taskiq,bullmq; each installed once into its own virtualenv). A reduced sweep:
    BENCH_INFLIGHT=10,100 BENCH_WATCH_RUNS=100 .venv/bin/python -m bench --only llm,watchers
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench import external, llm_rows, scaling, submit_bench
from bench.common import ROOT, Row, not_measured, quick, raise_open_files, reps
from bench.report import text_table, write
from shared.redis_server import RedisServer

logger = logging.getLogger("bench")

SECTIONS = ("submit", "e2e", "sse", "projector", "runner", "scaling", "llm", "watchers", "llm-peers")


class Context:
    """What the sections share: the Redis servers and a scratch folder."""

    def __init__(self, workdir: Path, redis_url: str, peers_redis_url: str) -> None:
        self.workdir = workdir
        self.redis_url = redis_url
        self.peers_redis_url = peers_redis_url


def _e2e(ctx: Context) -> list[Row]:
    return scaling.measure_e2e(ctx.redis_url, ctx.peers_redis_url, ctx.workdir)


def _scaling(ctx: Context) -> list[Row]:
    return scaling.measure_scaling(ctx.redis_url, ctx.workdir)


def _projector(ctx: Context) -> list[Row]:
    # the projector bench flushes its database: give it one of its own
    return external.measure_projector(_db(ctx.redis_url, 1), ctx.workdir)


def _db(url: str, index: int) -> str:
    """The same server, another database: for benches that FLUSHDB theirs."""
    return f"{url.rsplit('/', 1)[0]}/{index}"


RUNS: dict[str, Callable[[Context], list[Row]]] = {
    "submit": lambda ctx: submit_bench.measure(ctx.redis_url, ctx.workdir),
    "e2e": _e2e,
    "sse": lambda ctx: external.measure_sse(ctx.redis_url, ctx.workdir),
    "projector": _projector,
    "runner": lambda ctx: external.measure_runner(_db(ctx.redis_url, 2), ctx.workdir),
    "scaling": _scaling,
    "llm": lambda ctx: llm_rows.measure_inflight(_db(ctx.redis_url, 3), ctx.workdir),
    "watchers": lambda ctx: llm_rows.measure_watchers(_db(ctx.redis_url, 3), ctx.workdir),
    "llm-peers": lambda ctx: llm_rows.measure_peers(_db(ctx.redis_url, 3), ctx.peers_redis_url, ctx.workdir),
}


def run_section(name: str, ctx: Context) -> list[Row]:
    """A section's rows; one that crashes yields a row saying so, never a made-up figure."""
    try:
        return RUNS[name](ctx)
    except Exception as exc:
        logger.exception("section %s failed", name)
        return [not_measured(name, f"section {name}", "", "", f"{type(exc).__name__}: {exc}"[:200])]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections {unknown}; choose from {SECTIONS}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s bench %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logger.info("open-files limit %d (soft raised to hard: the watchers need sockets)", raise_open_files())
    began, rows, timings = time.monotonic(), [], {}
    with tempfile.TemporaryDirectory(prefix="tt-bench-") as tmp:
        workdir = Path(tmp)
        with RedisServer(workdir / "redis") as redis, RedisServer(workdir / "peers-redis") as peers_redis:
            ctx = Context(workdir, redis.url, peers_redis.url)
            for name in SECTIONS:
                if name in chosen:
                    started = time.monotonic()
                    logger.info("section %s ...", name)
                    rows += run_section(name, ctx)
                    timings[name] = round(time.monotonic() - started, 1)
                    logger.info("section %s done in %.0f s", name, timings[name])
    elapsed = time.monotonic() - began
    print(text_table(rows))
    meta = {"elapsed_s": round(elapsed, 1), "quick": quick(), "reps": reps(), "sections_s": timings}
    json_path, md_path = write(rows, args.out, meta)
    print(f"\n{elapsed:.0f} s; wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
