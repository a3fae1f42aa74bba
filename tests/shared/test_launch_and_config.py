"""The Redis launcher and the settings reader."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import redis

from shared.config import CommonSettings, ConfigError, Env
from shared.redis_server import RedisServer, find_redis_server


def test_launcher_starts_a_real_server_on_a_free_loopback_port_and_stops_it(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", appendonly=True)
    assert server.port != 6379
    with server:
        client = redis.Redis.from_url(server.url)
        assert client.ping()
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("dir")["dir"] == str(tmp_path / "redis")
        client.close()
        process = server.process
    assert process is not None and process.poll() is not None
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", server.port), timeout=0.5):
        pass


def test_a_redis_server_binary_is_always_found() -> None:
    assert find_redis_server().exists()


def test_settings_name_the_malformed_variable() -> None:
    with pytest.raises(ConfigError, match="TT_RUN_STREAM_TTL_S"):
        CommonSettings.from_env(Env({"TT_RUN_STREAM_TTL_S": "two days"}))
    with pytest.raises(ConfigError, match="TT_X must be at least 1"):
        Env({"TT_X": "0"}).integer("X", 5, minimum=1)
    with pytest.raises(ConfigError, match="TT_FLAG"):
        Env({"TT_FLAG": "maybe"}).flag("FLAG", False)


def test_redis_url_and_prefix_come_from_the_environment() -> None:
    settings = CommonSettings.from_env(Env({"REDIS_URL": "redis://h:1/2", "TT_PREFIX": "x:"}))
    assert settings.redis_url == "redis://h:1/2"
    assert settings.keys.run("r") == "x:run:r"


def test_a_killed_server_started_again_keeps_its_port_and_its_appended_data(tmp_path: Path) -> None:
    """What `tickertape up` relies on when it restarts its Redis: same URL, same AOF."""
    server = RedisServer(tmp_path / "redis", appendonly=True, appendfsync="always")
    with server:
        client = redis.Redis.from_url(server.url)
        client.set("kept", "yes")
        client.close()
        url = server.url
        server.kill()
        server.start()
        client = redis.Redis.from_url(server.url)
        assert server.url == url
        assert client.get("kept") == b"yes"
        client.close()
