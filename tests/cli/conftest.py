"""A running `tickertape up` for the CLI tests that need a whole stack."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.test_up import Up, up_env


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    launcher = Up(up_env(tmp_path / "state"))
    try:
        launcher.wait_for("Tickertape is up")
        yield launcher
    finally:
        launcher.stop()
