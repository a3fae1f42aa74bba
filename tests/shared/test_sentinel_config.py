"""The Sentinel settings: read once, validated at start, the password never shown."""

from __future__ import annotations

import pytest

from shared.config import CommonSettings, ConfigError, Env, RedisTarget, SentinelSpec


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
