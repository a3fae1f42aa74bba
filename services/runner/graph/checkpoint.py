"""A LangGraph checkpointer on plain Redis (no modules), its keys expiring with the run.

One thread per run. A thread is two hashes: ``…:cps`` (checkpoint id → checkpoint, metadata,
parent) and ``…:writes`` (pending writes of each checkpoint), both under the run's retention TTL.
Whole checkpoints are stored (no per-channel blobs): a run's graph state is small, and one HSET
makes a checkpoint durable in one round trip. Async only: the runner drives graphs with ``astream``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import msgspec
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
    get_checkpoint_metadata,
    writes_sort_key,
)
from redis.asyncio import Redis

from shared.keys import Keys

SEP = "\x00"
"""Between a field's parts: checkpoint namespaces themselves contain ``|`` and ``:``."""


class Stored(msgspec.Struct, array_like=True):
    ctype: str
    checkpoint: bytes
    mtype: str
    metadata: bytes
    parent: str


class StoredWrite(msgspec.Struct, array_like=True):
    task_id: str
    channel: str
    vtype: str
    value: bytes
    task_path: str


Writes = dict[tuple[str, str], list[tuple[tuple[str, str, int], StoredWrite]]]
"""(namespace, checkpoint id) → its pending writes with their sort keys."""


class RedisSaver(BaseCheckpointSaver[str]):
    """Checkpoints of graph runs in Redis; ``written(thread, task)`` tells when a task's writes
    are durable (the adapter reports a node done only then)."""

    def __init__(self, redis: Redis, keys: Keys, ttl_s: int) -> None:
        super().__init__()
        self.redis, self.keys, self.ttl_s = redis, keys, ttl_s
        self._codec = msgspec.msgpack.Encoder()
        self._stored = msgspec.msgpack.Decoder(Stored)
        self._write = msgspec.msgpack.Decoder(StoredWrite)
        self._listeners: dict[str, dict[str, asyncio.Event]] = {}

    # -- durability notices for the adapter ---------------------------------------------------

    def listen(self, thread_id: str) -> None:
        self._listeners.setdefault(thread_id, {})

    def forget(self, thread_id: str) -> None:
        self._listeners.pop(thread_id, None)

    def written(self, thread_id: str, task_id: str) -> asyncio.Event:
        return self._listeners.setdefault(thread_id, {}).setdefault(task_id, asyncio.Event())

    # -- writing --------------------------------------------------------------------------------

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        conf = config["configurable"]
        thread_id, ns = conf["thread_id"], conf.get("checkpoint_ns", "")
        ctype, cbytes = self.serde.dumps_typed(checkpoint)
        mtype, mbytes = self.serde.dumps_typed(get_checkpoint_metadata(config, metadata))
        stored = Stored(ctype, cbytes, mtype, mbytes, conf.get("checkpoint_id") or "")
        await self._save(thread_id, "cps", {f"{ns}{SEP}{checkpoint['id']}": self._codec.encode(stored)})
        return {
            "configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": checkpoint["id"]}
        }

    async def aput_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        conf = config["configurable"]
        thread_id, ns, cp_id = conf["thread_id"], conf.get("checkpoint_ns", ""), conf["checkpoint_id"]
        fresh: dict[str, bytes] = {}
        special: dict[str, bytes] = {}
        for idx, (channel, value) in enumerate(writes):
            slot = WRITES_IDX_MAP.get(channel, idx)
            vtype, vbytes = self.serde.dumps_typed(value)
            field = SEP.join((ns, cp_id, task_id, str(slot)))
            encoded = self._codec.encode(StoredWrite(task_id, channel, vtype, vbytes, task_path))
            (special if slot < 0 else fresh)[field] = encoded
        await self._save(thread_id, "writes", special, keep=fresh)
        event = self._listeners.get(thread_id, {}).get(task_id)
        if thread_id in self._listeners:
            (event or self.written(thread_id, task_id)).set()

    async def _save(
        self, thread_id: str, kind: str, fields: dict[str, bytes], keep: dict[str, bytes] | None = None
    ) -> None:
        """HSET ``fields`` (HSETNX ``keep``: a regular write is never replaced) and renew the TTL."""
        key = f"{self.keys.graph(thread_id)}:{kind}"
        async with self.redis.pipeline(transaction=True) as pipe:
            if fields:
                pipe.hset(key, mapping=fields)  # type: ignore[arg-type]
            for field, value in (keep or {}).items():
                pipe.hsetnx(key, field, value)
            pipe.expire(key, self.ttl_s)
            pipe.time()
            *_, now = await pipe.execute()
        expires_ms = (int(now[0]) + self.ttl_s) * 1000
        await self.redis.zadd(self.keys.graph_threads, {thread_id: expires_ms})

    async def adelete_thread(self, thread_id: str) -> None:
        base = self.keys.graph(thread_id)
        await self.redis.delete(f"{base}:cps", f"{base}:writes")
        await self.redis.zrem(self.keys.graph_threads, thread_id)

    # -- reading --------------------------------------------------------------------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        conf = config["configurable"]
        thread_id, ns = conf["thread_id"], conf.get("checkpoint_ns", "")
        stored = await self._checkpoints(thread_id)
        wanted = get_checkpoint_id(config)
        ids = [cp for (n, cp) in stored if n == ns and (wanted is None or cp == wanted)]
        if not ids:
            return None
        cp_id = max(ids)
        return self._tuple(thread_id, ns, cp_id, stored[(ns, cp_id)], await self._writes(thread_id))

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        conf = config["configurable"] if config else {}
        threads = [conf["thread_id"]] if conf.get("thread_id") else await self._threads()
        before_id = get_checkpoint_id(before) if before else None
        left = limit
        for thread_id in threads:
            stored, writes = await self._checkpoints(thread_id), await self._writes(thread_id)
            for ns, cp_id in sorted(stored, key=lambda k: k[1], reverse=True):
                if not _selected(conf, ns, cp_id, before_id):
                    continue
                found = self._tuple(thread_id, ns, cp_id, stored[(ns, cp_id)], writes)
                if filter and any(found.metadata.get(k) != v for k, v in filter.items()):
                    continue
                if left is not None and left <= 0:
                    return
                left = None if left is None else left - 1
                yield found

    async def _threads(self) -> list[str]:
        now_s, _ = await self.redis.time()
        raw = await self.redis.zrangebyscore(self.keys.graph_threads, int(now_s) * 1000, "+inf")
        return [_text(t) for t in raw if isinstance(t, bytes | str)]

    async def _checkpoints(self, thread_id: str) -> dict[tuple[str, str], Stored]:
        raw: dict[bytes, bytes] = await self.redis.hgetall(f"{self.keys.graph(thread_id)}:cps")  # type: ignore[assignment]
        out: dict[tuple[str, str], Stored] = {}
        for field, value in raw.items():
            ns, _, cp_id = _text(field).partition(SEP)
            out[(ns, cp_id)] = self._stored.decode(value)
        return out

    async def _writes(self, thread_id: str) -> Writes:
        raw: dict[bytes, bytes] = await self.redis.hgetall(f"{self.keys.graph(thread_id)}:writes")  # type: ignore[assignment]
        out: Writes = {}
        for field, value in raw.items():
            ns, cp_id, task_id, slot = _text(field).split(SEP)
            write = self._write.decode(value)
            order = writes_sort_key(write.task_path, task_id, int(slot))
            out.setdefault((ns, cp_id), []).append((order, write))
        return out

    def _tuple(
        self,
        thread_id: str,
        ns: str,
        cp_id: str,
        stored: Stored,
        writes: Writes,
    ) -> CheckpointTuple:
        ordered = [w for _, w in sorted(writes.get((ns, cp_id), []), key=lambda item: item[0])]
        parent = stored.parent
        return CheckpointTuple(
            config=_config(thread_id, ns, cp_id),
            checkpoint=self.serde.loads_typed((stored.ctype, stored.checkpoint)),
            metadata=self.serde.loads_typed((stored.mtype, stored.metadata)),
            parent_config=(
                {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": parent}}
                if parent
                else None
            ),
            pending_writes=[
                (w.task_id, w.channel, self.serde.loads_typed((w.vtype, w.value))) for w in ordered
            ],
        )

    def get_next_version(self, current: str | None, channel: None) -> str:
        """``<counter>.<random>``, as LangGraph's own savers: ordered, and unique per write."""
        number = 0 if current is None else int(str(current).split(".")[0])
        return f"{number + 1:032}.{random.random():016}"

    # -- the synchronous API is not offered: graphs run under asyncio here ---------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        raise NotImplementedError("RedisSaver is async-only: use aget_tuple (graphs run with astream)")

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        raise NotImplementedError("RedisSaver is async-only: use alist")


def _selected(conf: dict[str, Any], ns: str, cp_id: str, before_id: str | None) -> bool:
    if conf.get("checkpoint_ns") is not None and conf["checkpoint_ns"] != ns:
        return False
    if conf.get("checkpoint_id") and conf["checkpoint_id"] != cp_id:
        return False
    return not (before_id and cp_id >= before_id)


def _config(thread_id: str, ns: str, cp_id: str) -> RunnableConfig:
    return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": cp_id}}


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw
