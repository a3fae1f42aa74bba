"""The model transport over TLS and across a server's keep-alive timeout.

Hosted models are reached over HTTPS, and their servers close idle keep-alive connections on
their own schedule: the runner's transport must verify the server's certificate against the CA
bundle the environment names (``SSL_CERT_FILE``, as httpx does), refuse one it does not trust,
and never send a call down a connection the server has already closed.
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from services.runner.http_pool import ModelTransport

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
ANSWER = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{"ok":true}'


def certificate(directory: Path, name: str, san: str) -> tuple[Path, Path]:
    """A self-signed certificate for ``san`` (``IP:…`` or ``DNS:…``) and its key, by openssl."""
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", f"/CN={name}", "-addext", f"subjectAltName={san}",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


async def answer_every_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while await reader.readuntil(b"\r\n\r\n"):
            writer.write(ANSWER)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


@asynccontextmanager
async def serving(handler: Handler, tls: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=tls)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


def server_tls(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


async def test_a_model_over_tls_is_reached_with_the_ca_the_environment_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = certificate(tmp_path, "model", "IP:127.0.0.1")
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    transport = ModelTransport(2)
    async with serving(answer_every_request, server_tls(cert, key)) as port:
        async with httpx.AsyncClient(transport=transport) as http:
            for _ in range(3):
                response = await http.post(f"https://127.0.0.1:{port}/v1/chat/completions", json={})
                assert (response.status_code, response.json()) == (200, {"ok": True})
    assert transport.opened == 1  # the TLS connection is kept alive for the next call


async def test_a_model_whose_certificate_is_not_trusted_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another CA in the environment, or a certificate for another name: a connect error, and the
    call's slot is free again; nothing is sent to the server."""
    trusted, _ = certificate(tmp_path, "trusted", "IP:127.0.0.1")
    stranger = certificate(tmp_path, "stranger", "IP:127.0.0.1")
    wrong_name = certificate(tmp_path, "elsewhere", "DNS:models.example")
    for cert, key, ca in ((*stranger, trusted), (*wrong_name, wrong_name[0])):
        monkeypatch.setenv("SSL_CERT_FILE", str(ca))
        transport = ModelTransport(1)  # a new context per CA: the transport loads it once
        async with serving(answer_every_request, server_tls(cert, key)) as port:
            async with httpx.AsyncClient(transport=transport) as http:
                with pytest.raises(httpx.ConnectError, match=r"CERTIFICATE_VERIFY_FAILED|certificate"):
                    await http.post(f"https://127.0.0.1:{port}/v1/chat/completions", json={})
        assert transport.in_use == 0


async def test_a_connection_the_server_closed_while_idle_is_not_used_again() -> None:
    """Servers drop idle keep-alive connections (uvicorn after 5 s, hosted APIs after their own
    timeout): the next call opens a new one instead of failing on the closed one."""
    served = 0

    async def answer_once_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        await reader.readuntil(b"\r\n\r\n")
        writer.write(ANSWER)  # keep-alive by HTTP/1.1's default, then the server's idle timeout
        await writer.drain()
        served += 1
        await asyncio.sleep(0.05)
        writer.close()

    transport = ModelTransport(1)
    async with serving(answer_once_then_close) as port, httpx.AsyncClient(transport=transport) as http:
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        for _ in range(3):
            assert (await http.post(url, json={})).status_code == 200
            async with asyncio.timeout(5):
                while transport.idle():  # until the close has reached the runner
                    await asyncio.sleep(0.01)
    assert (served, transport.opened) == (3, 3)
