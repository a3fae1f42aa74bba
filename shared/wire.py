"""Commands packed by hiredis (C) instead of redis-py's asyncio packer (Python).

redis-py's synchronous client packs with ``hiredis.pack_command`` when hiredis is installed; its
asyncio client always packs in Python, argument by argument. A runner's batch call carries ~17
arguments per run (keys, fences, two encoded events), so that packer cost ~30-60 µs per no-op
run; hiredis packs the same bytes in ~3-5 µs. The projector's XACK of a catch-up batch (thousands
of IDs) and the gateway's submit script (13 arguments) gain the same way; every service's command
clients use it. The packing is the synchronous client's own
(``redis.connection.HiredisRespSerializer``): same bytes, same ``DataError`` for what cannot be
sent (None, bool, ...).
"""

from __future__ import annotations

from typing import Any

import hiredis
from redis.asyncio import Redis
from redis.exceptions import DataError


class HiredisPacking:
    """Mixin for a redis-py asyncio connection class: ``pack_command`` by hiredis."""

    def pack_command(self, *args: Any) -> list[bytes]:
        if isinstance(args[0], str):
            args = (*args[0].encode().split(), *args[1:])
        elif b" " in args[0]:
            args = (*args[0].split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError:  # hiredis takes no bytearray or memoryview (rare here): copy those
            views: Any = tuple(bytes(a) if isinstance(a, bytearray | memoryview) else a for a in args)
            try:
                return [hiredis.pack_command(views)]
            except TypeError as exc:
                raise DataError(str(exc)) from exc


_classes: dict[type, type] = {}


def fast_packing(redis: Redis) -> Redis:
    """``redis`` with its connections packing commands by hiredis (a dependency); call it
    before the first command (connections made earlier keep the Python packer). Keeps the
    pool's connection class (TCP, TLS, Unix socket) underneath."""
    pool = redis.connection_pool
    base = pool.connection_class
    if issubclass(base, HiredisPacking):
        return redis
    cls = _classes.get(base)
    if cls is None:
        cls = _classes[base] = type(f"Hiredis{base.__name__}", (HiredisPacking, base), {})
    pool.connection_class = cls
    return redis
