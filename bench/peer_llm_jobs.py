"""A peer job queue on the LLM-bound workload (row 9): run inside the peer's own virtualenv.

    <venv>/bin/python bench/peer_llm_jobs.py run PEER N REDIS_URL SIM_URL LIMIT_S

imports nothing of Tickertape (the peers pin other Redis clients): only the peer, httpx, redis
and psutil. Per measurement: FLUSHDB (a Redis of its own), start ONE worker process of the peer
with concurrency N, start the progress observer, enqueue N jobs at once (a burst of users),
wait until every job's last progress report arrived or LIMIT_S passed (then it reports the jobs
completed so far: "k/N in LIMIT_S s", never nothing), stop the worker, print one JSON line.

The job is bench/calls_pipeline.py's: ten sequential ``POST /v1/chat/completions`` to the
simulator, each followed by a progress report through the peer's own mechanism, carrying the
wall-clock stamp taken just before the report (the latency is observer arrival minus stamp):

- saq: ``job.update(progress=…, meta=…)`` (SET + PUBLISH on the job's channel); the observer is
  ``queue.listen`` (pub/sub) and reads the job on each notification, as saq's own clients do;
- bullmq: ``job.updateProgress`` (XADD to the queue's events stream); the observer is ``QueueEvents``;
- taskiq: ``ProgressTracker.set_progress`` (a key in the Redis result backend); taskiq has no
  push for it, so the observer polls the jobs' progress keys with one MGET every POLL_S;
- arq: no progress API; the closest equivalent is a Redis PUBLISH on arq's own connection
  (``ctx["redis"]``), observed by a subscriber.
"""

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import psutil
import redis.asyncio as aredis

CALLS = 10
QUEUE = "llm"
CHANNEL = "llm:progress"
POLL_S = 0.05
TIMEOUT_S = 900.0
"""How long a job may run."""
GRACE_S = 10.0
"""How long the observer and the worker get to stop before they are cut."""


async def ten_calls(http, sim_url, i, report):
    """The job: ten model calls, a progress report after each."""
    http = http[i % len(http)]  # a job sticks to one client
    for k in range(CALLS):
        body = {"model": "sim-1", "messages": [{"role": "user", "content": f"job {i} step {k}"}],
                "max_tokens": 300, "temperature": 0.2}  # fmt: skip
        response = await http.post(f"{sim_url}/v1/chat/completions", json=body, timeout=120)
        response.raise_for_status()
        tokens = response.json()["usage"]["completion_tokens"]
        await report(k + 1, time.time(), tokens)


SHARD = 8
"""Connections per client of a sharded worker (the default; ``PEER_HTTP=single``: one client)."""


def http_client(n):
    """The worker's kept-alive model clients, job ``i`` on client ``i % len``: by default
    ceil(n / SHARD) clients of SHARD connections, so httpcore's pool walk (quadratic in a pool's
    connections, encode/httpcore#1035) stays small — what a user running n jobs at once has to do,
    and what Tickertape's runner did before its own transport. ``PEER_HTTP=single``: one client
    with a pool of ``n``, the OpenAI SDK's shape, which no peer survives at 1,000 in flight."""
    if os.environ.get("PEER_HTTP", "sharded") == "single":
        return [httpx.AsyncClient(limits=httpx.Limits(max_connections=n, max_keepalive_connections=n))]
    limits = httpx.Limits(max_connections=SHARD, max_keepalive_connections=SHARD)
    return [httpx.AsyncClient(limits=limits) for _ in range(-(-n // SHARD))]


async def close_http(clients):
    for client in clients:
        await client.aclose()


def ready():
    print("ready", flush=True)


class Tally:
    """What the observer saw: latencies (ms) of progress reports and the jobs that finished."""

    def __init__(self, n):
        self.n, self.latencies, self.done, self.seen = n, [], 0, set()
        self.finished = asyncio.Event()

    def saw(self, job, k, stamp, arrived=None):
        if (job, k) in self.seen:
            return
        self.seen.add((job, k))
        self.latencies.append(round(((arrived or time.time()) - stamp) * 1000, 3))
        if k == CALLS:
            self.done += 1
            if self.done >= self.n:
                self.finished.set()


# --- arq -------------------------------------------------------------------------------------


def arq_worker(n, url, sim_url):
    from arq.connections import RedisSettings
    from arq.worker import Worker, func

    async def job(ctx, i):
        async def report(k, stamp, tokens):
            await ctx["redis"].publish(CHANNEL, json.dumps([i, k, stamp]))

        await ten_calls(ctx["http"], sim_url, i, report)

    async def startup(ctx):
        ctx["http"] = http_client(n)
        ready()

    async def shutdown(ctx):
        await close_http(ctx["http"])

    settings = RedisSettings.from_dsn(url)
    Worker(functions=[func(job, name="llm")], redis_settings=settings, max_jobs=n, poll_delay=0.01,
           job_timeout=TIMEOUT_S, on_startup=startup, on_shutdown=shutdown).run()  # fmt: skip


async def arq_enqueue(n, url):
    from arq.connections import RedisSettings, create_pool

    pool = await create_pool(RedisSettings.from_dsn(url))
    began = time.time()
    for i in range(n):
        await pool.enqueue_job("llm", i)
    await pool.aclose()
    return began


async def pubsub_observer(url, tally, started):
    client = aredis.Redis.from_url(url)
    pubsub = client.pubsub()
    await pubsub.subscribe(CHANNEL)
    started.set()
    try:
        while not tally.finished.is_set():
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None:
                i, k, stamp = json.loads(message["data"])
                tally.saw(i, k, stamp)
    finally:
        await pubsub.aclose()
        await client.aclose()


# --- saq -------------------------------------------------------------------------------------


def saq_queue(url):
    from saq import Queue

    return Queue.from_url(url)


def saq_worker(n, url, sim_url):
    from saq import Worker

    async def job(ctx, *, i):
        async def report(k, stamp, tokens):
            await ctx["job"].update(progress=k / CALLS, meta={"k": k, "stamp": stamp})

        await ten_calls(ctx["http"], sim_url, i, report)

    async def startup(ctx):
        ctx["http"] = http_client(n)
        ready()

    async def shutdown(ctx):
        await close_http(ctx["http"])

    async def main():
        queue = saq_queue(url)
        worker = Worker(queue, [("llm", job)], concurrency=n, startup=startup, shutdown=shutdown)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        task = asyncio.create_task(worker.start())
        await stop.wait()
        await worker.stop()
        task.cancel()

    asyncio.run(main())


def saq_keys(n):
    return [f"job-{i}" for i in range(n)]


async def saq_enqueue(n, url):
    queue = saq_queue(url)
    await queue.connect()
    began = time.time()
    for i, key in enumerate(saq_keys(n)):
        await queue.enqueue("llm", key=key, timeout=int(TIMEOUT_S), i=i)
    await queue.disconnect()
    return began


async def saq_observer(url, tally, started):
    queue = saq_queue(url)
    await queue.connect()

    async def notified(job_key, status):
        arrived = time.time()
        job = await queue.job(job_key)
        if job is not None and job.meta.get("k"):
            tally.saw(job_key, job.meta["k"], job.meta["stamp"], arrived)
        return tally.finished.is_set()

    listening = asyncio.create_task(queue.listen(saq_keys(tally.n), notified, timeout=None))
    await asyncio.sleep(0.5)  # the SUBSCRIBE is out before the first job is enqueued
    started.set()
    try:
        await tally.finished.wait()
    finally:
        listening.cancel()
        await asyncio.gather(listening, return_exceptions=True)
        await queue.disconnect()


# --- taskiq ----------------------------------------------------------------------------------


def taskiq_broker(url, sim_url, n):
    from taskiq import Context, TaskiqDepends, TaskiqEvents
    from taskiq.depends.progress_tracker import ProgressTracker
    from taskiq.serializers import JSONSerializer
    from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

    results = RedisAsyncResultBackend(url, serializer=JSONSerializer())
    broker = RedisStreamBroker(url, queue_name=QUEUE).with_result_backend(results)

    # taskiq's dependency injection is declared by defaults, as its docs do
    async def job(i: int, context: Context = TaskiqDepends(), progress: ProgressTracker = TaskiqDepends()):  # noqa: B008
        async def report(k, stamp, tokens):
            await progress.set_progress("STARTED", {"k": k, "stamp": stamp})

        await ten_calls(context.state.http, sim_url, i, report)

    broker.register_task(job, task_name="llm")

    async def startup(state):
        state.http = http_client(n)

    broker.add_event_handler(TaskiqEvents.WORKER_STARTUP, startup)
    return broker


def taskiq_worker(n, url, sim_url):
    from taskiq.api import run_receiver_task

    async def main():
        broker = taskiq_broker(url, sim_url, n)
        broker.is_worker_process = True
        await broker.startup()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        task = asyncio.create_task(run_receiver_task(broker, max_async_tasks=n, run_startup=False))
        ready()
        await stop.wait()
        task.cancel()
        await broker.shutdown()

    asyncio.run(main())


async def taskiq_enqueue(n, url):
    broker = taskiq_broker(url, "", n)
    await broker.startup()
    task = broker.find_task("llm")
    began = time.time()
    for i in range(n):
        await task.kicker().with_task_id(f"job-{i}").kiq(i)
    await broker.shutdown()
    return began


async def taskiq_observer(url, tally, started):
    client = aredis.Redis.from_url(url)
    keys = [f"job-{i}__progress" for i in range(tally.n)]
    started.set()
    try:
        while not tally.finished.is_set():
            arrived = time.time()
            for key, raw in zip(keys, await client.mget(keys), strict=True):
                if raw is not None:
                    meta = json.loads(raw)["meta"]
                    tally.saw(key, meta["k"], meta["stamp"], arrived)
            await asyncio.sleep(POLL_S)
    finally:
        await client.aclose()


# --- bullmq ----------------------------------------------------------------------------------


def bullmq_worker(n, url, sim_url):
    from bullmq import Worker

    async def main():
        http = http_client(n)

        async def job(job, token):
            async def report(k, stamp, tokens):
                await job.updateProgress({"i": job.data["i"], "k": k, "stamp": stamp})

            await ten_calls(http, sim_url, job.data["i"], report)

        worker = Worker(QUEUE, job, {"connection": url, "concurrency": n})
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        ready()
        await stop.wait()
        await worker.close()
        await close_http(http)

    asyncio.run(main())


async def bullmq_enqueue(n, url):
    from bullmq import Queue

    queue = Queue(QUEUE, {"connection": url})
    began = time.time()
    for i in range(n):
        await queue.add("llm", {"i": i}, {"removeOnComplete": True})
    await queue.close()
    return began


async def bullmq_observer(url, tally, started):
    from bullmq import QueueEvents

    events = QueueEvents(QUEUE, {"connection": url, "autorun": False})

    def progress(args, *rest):
        data = args["data"]
        tally.saw(data["i"], data["k"], data["stamp"])

    events.on("progress", progress)
    running = asyncio.create_task(events.run())
    await asyncio.sleep(0.5)  # its first XREAD (from "$") is out before the first job
    started.set()
    try:
        await tally.finished.wait()
    finally:
        await events.close()
        running.cancel()


PEERS = {
    "arq": (arq_worker, arq_enqueue, pubsub_observer),
    "saq": (saq_worker, saq_enqueue, saq_observer),
    "taskiq": (taskiq_worker, taskiq_enqueue, taskiq_observer),
    "bullmq": (bullmq_worker, bullmq_enqueue, bullmq_observer),
}


# --- the measurement -------------------------------------------------------------------------


def spawn_worker(peer, n, url, sim_url):
    """The worker stays in this process's group, so the harness's kill of the group reaches it."""
    worker = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "worker", peer, str(n), url, sim_url],
        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    line = worker.stdout.readline()
    if line.strip() != b"ready":
        worker.kill()
        raise RuntimeError(f"{peer} worker did not start: {line!r}")
    # a worker that prints would otherwise block on a full pipe once 64 KB are unread
    threading.Thread(target=worker.stdout.read, daemon=True).start()
    return worker


def stop_worker(worker):
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(GRACE_S)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


async def stopped(tasks):
    """The observer's and sampler's outcomes; one that does not stop within GRACE_S is cancelled."""
    done, pending = await asyncio.wait(tasks, timeout=GRACE_S)
    for task in pending:
        task.cancel()
    outcomes = [t.exception() for t in done if not t.cancelled()]
    return outcomes + [TimeoutError(f"{len(pending)} task(s) did not stop")] * bool(pending)


async def sample_rss(proc, peak, stop):
    while not stop.is_set():
        peak[0] = max(peak[0], proc.memory_info().rss / 2**20)
        await asyncio.sleep(0.25)


async def measure(peer, n, url, sim_url, limit_s):
    _, enqueue, observe = PEERS[peer]
    await aredis.Redis.from_url(url).flushdb()
    worker = spawn_worker(peer, n, url, sim_url)
    proc = psutil.Process(worker.pid)
    await asyncio.sleep(0.5)
    idle_mb, cpu0 = proc.memory_info().rss / 2**20, proc.cpu_times()
    tally, started, stop, peak = Tally(n), asyncio.Event(), asyncio.Event(), [idle_mb]
    observer = asyncio.create_task(observe(url, tally, started))
    observer.add_done_callback(lambda _: (tally.finished.set(), started.set()))  # a crash ends the wait
    sampler = asyncio.create_task(sample_rss(proc, peak, stop))
    try:
        await started.wait()
        began = await enqueue(n, url)  # from the first job enqueued (the client connected)
        enqueued_s = time.time() - began
        try:
            await asyncio.wait_for(tally.finished.wait(), max(limit_s - (time.time() - began), 0.0))
        except TimeoutError:
            pass
        wall = time.time() - began
        cpu1 = proc.cpu_times()
    finally:
        stop.set()
        tally.finished.set()
        failures = await stopped([observer, sampler])
        stop_worker(worker)
    cpu = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
    return {"peer": peer, "n": n, "completed": tally.done, "wall_s": wall, "enqueue_s": enqueued_s,
            "latencies_ms": tally.latencies, "worker_cpu_s": cpu, "worker_rss_idle_mb": idle_mb,
            "worker_rss_peak_mb": peak[0], "limit_s": limit_s,
            "error": "; ".join(repr(f) for f in failures if f is not None)[:300]}  # fmt: skip


def main(argv):
    mode, peer, n, url, sim_url = argv[0], argv[1], int(argv[2]), argv[3], argv[4]
    if mode == "worker":
        PEERS[peer][0](n, url, sim_url)
    else:
        print(json.dumps(asyncio.run(measure(peer, n, url, sim_url, float(argv[5])))), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
