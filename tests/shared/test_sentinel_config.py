"""The Sentinel settings: read once, validated at start, the password never shown."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from services.cli.launcher import Console, Launcher
from services.cli.settings import LaunchSettings
from shared.config import DEFAULT_REDIS_URL, CommonSettings, ConfigError, Env, RedisTarget, SentinelSpec


def _common(**environ: str) -> CommonSettings:
    return CommonSettings.from_env(Env(environ))


def test_sentinels_replace_the_url_with_host_port_pairs_and_the_master() -> None:
    common = _common(
        REDIS_URL="redis://127.0.0.1:6380/2",
        TT_REDIS_SENTINELS="10.0.0.1:26379, sentinel-b:26380,[::1]:26381",
        TT_REDIS_SENTINEL_MASTER="mymaster",
    )
    assert common.redis == RedisTarget(
        "redis://127.0.0.1:6380/2",
        SentinelSpec((("10.0.0.1", 26379), ("sentinel-b", 26380), ("::1", 26381)), "mymaster"),
    )


def test_without_sentinels_the_target_is_the_url_alone() -> None:
    common = _common(REDIS_URL="redis://127.0.0.1:6390/0")
    assert common.redis == RedisTarget("redis://127.0.0.1:6390/0", None)
    assert (common.submit_replicas, common.submit_wait_ms) == (1, 500)


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"TT_REDIS_SENTINELS": "10.0.0.1", "TT_REDIS_SENTINEL_MASTER": "m"}, "TT_REDIS_SENTINELS"),
        ({"TT_REDIS_SENTINELS": "10.0.0.1:port", "TT_REDIS_SENTINEL_MASTER": "m"}, "TT_REDIS_SENTINELS"),
        ({"TT_REDIS_SENTINELS": "a:1,,b:2", "TT_REDIS_SENTINEL_MASTER": "m"}, "TT_REDIS_SENTINELS"),
        ({"TT_REDIS_SENTINELS": ":26379", "TT_REDIS_SENTINEL_MASTER": "m"}, "TT_REDIS_SENTINELS"),
        ({"TT_REDIS_SENTINELS": "a:70000", "TT_REDIS_SENTINEL_MASTER": "m"}, "TT_REDIS_SENTINELS"),
        ({"TT_REDIS_SENTINELS": "a:26379"}, "TT_REDIS_SENTINEL_MASTER"),
        ({"TT_REDIS_SENTINEL_MASTER": "m"}, "TT_REDIS_SENTINELS"),
        ({"TT_REDIS_SENTINEL_PASSWORD": "pw"}, "TT_REDIS_SENTINELS"),
        ({"TT_SUBMIT_REPLICAS": "-1"}, "TT_SUBMIT_REPLICAS"),
        ({"TT_SUBMIT_WAIT_MS": "soon"}, "TT_SUBMIT_WAIT_MS"),
    ],
)
def test_a_malformed_or_partial_setting_fails_at_start_naming_its_variable(
    environ: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError, match=named):
        _common(**environ)


def test_the_sentinel_password_is_kept_but_never_shown() -> None:
    common = _common(
        TT_REDIS_SENTINELS="127.0.0.1:26379",
        TT_REDIS_SENTINEL_MASTER="m",
        TT_REDIS_SENTINEL_PASSWORD="s3cret-pw",
    )
    assert common.sentinel is not None and common.sentinel.password == "s3cret-pw"
    for shown in (repr(common), str(common.sentinel), repr(common.redis)):
        assert "s3cret-pw" not in shown


def test_up_starts_no_redis_when_sentinels_are_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``tickertape up`` with Sentinels: the URL handed to the services is REDIS_URL's (the
    Sentinels, inherited from the environment, choose the master) and no redis-server starts."""
    monkeypatch.setenv("TT_REDIS_SENTINELS", "127.0.0.1:26379")
    monkeypatch.setenv("TT_REDIS_SENTINEL_MASTER", "m")
    monkeypatch.setenv("TT_REDIS_SENTINEL_PASSWORD", "s3cret-pw")
    monkeypatch.delenv("REDIS_URL", raising=False)
    out = io.StringIO()
    launcher = Launcher(LaunchSettings.from_env(Env({"TT_STATE_DIR": str(tmp_path)})), Console(out))
    assert launcher._redis_url() == DEFAULT_REDIS_URL
    assert launcher.redis is None and not (tmp_path / "redis").exists()
    assert "sentinel master 'm' via 127.0.0.1:26379" in out.getvalue()
    assert "s3cret-pw" not in out.getvalue()
    monkeypatch.setenv("TT_REDIS_SENTINELS", "127.0.0.1")
    with pytest.raises(ConfigError, match="TT_REDIS_SENTINELS"):
        launcher._redis_url()
