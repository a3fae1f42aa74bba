from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.stack import Stack


@pytest.fixture(scope="module")
def stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The whole system with no pacing delay, shared by the tests of a module."""
    with Stack(redis_url, tmp_path_factory.mktemp("stack"), step_delay_s=0.0) as running:
        yield running
