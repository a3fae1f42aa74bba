"""A TCP proxy (asyncio, in its own thread) between a service and Redis, whose links can be cut."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from types import TracebackType

from shared.redis_server import free_port


class CuttableProxy:
    """Forwards 127.0.0.1:``port`` to ``target_port``; ``cut()`` aborts every open link at once.

    An abort sends RST both ways wherever the bytes are: a command may have reached Redis and
    its reply be lost, or be cut half-written. That is the blip the services must survive.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.cuts = 0
        self.links = 0
        self.replies_lost = 0
        self._losing = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="proxy", daemon=True)
        self._open: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> CuttableProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        return self

    def cut(self, lose_replies_s: float = 0.0) -> int:
        """Abort every link; returns how many were cut.

        With ``lose_replies_s`` Redis's replies are thrown away for that long first, so the
        commands sent meanwhile are executed but never acknowledged (the worst moment to cut).
        """
        return asyncio.run_coroutine_threadsafe(self._cut(lose_replies_s), self._loop).result(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._link, "127.0.0.1", self.port)

    async def _link(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            redis_r, redis_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_w.transport.abort()
            return
        self.links += 1
        self._open |= {client_w, redis_w}
        try:
            await asyncio.gather(self._pipe(client_r, redis_w), self._pipe(redis_r, client_w, replies=True))
        finally:
            for writer in (client_w, redis_w):
                self._open.discard(writer)
                writer.transport.abort()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, replies: bool = False
    ) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                if replies and self._losing:
                    self.replies_lost += 1
                    continue
                writer.write(data)
                await writer.drain()
        writer.transport.abort()

    async def _cut(self, lose_replies_s: float = 0.0) -> int:
        if lose_replies_s > 0:
            self._losing = True
            await asyncio.sleep(lose_replies_s)
        self._losing = False
        writers = list(self._open)
        for writer in writers:
            writer.transport.abort()
        self._open.clear()
        self.cuts += 1
        return len(writers) // 2

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._cut()

    def __enter__(self) -> CuttableProxy:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
