"""Which pipeline a runner executes: a ``module:callable`` taking (redis, http)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, cast

from shared.config import CommonSettings

if TYPE_CHECKING:
    import httpx
    from redis.asyncio import Redis

    from services.runner.pipeline import Runnable

PipelineFactory = Callable[["Redis", "httpx.AsyncClient"], "Runnable"]


class FactoryError(Exception):
    """TT_RUNNER_PIPELINE does not name a callable."""


def build_pipeline(redis: Redis, http: httpx.AsyncClient) -> Runnable:
    """The trading-agents pipeline with its settings from the environment."""
    from services.runner.pipeline import Pipeline, PipelineSettings

    return Pipeline(PipelineSettings.from_env(), redis, http)


def load_factory(
    path: str, registered: Mapping[str, str] | None = None, common: CommonSettings | None = None
) -> PipelineFactory:
    """Import ``module:callable``; fails at start with the name when it is wrong.

    With ``registered`` (``TT_PIPELINES``), the pipeline it builds also runs the requests that
    name a registered pipeline; those are imported on their first run."""
    factory = _import_factory(path)
    if not registered:
        return factory

    def build(redis: Redis, http: httpx.AsyncClient) -> Runnable:
        from services.runner.registry import Pipelines

        return Pipelines(factory(redis, http), registered, redis, common or CommonSettings.from_env())

    return build


def _import_factory(path: str) -> PipelineFactory:
    module_name, _, attr = path.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise FactoryError(f"TT_RUNNER_PIPELINE={path!r}: {exc}") from exc
    if not callable(factory):
        raise FactoryError(f"TT_RUNNER_PIPELINE={path!r} is not callable")
    return cast(PipelineFactory, factory)
