"""`tickertape up` notes where it runs; every other command finds the stack there, on any ports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from services.cli.settings import DEFAULT_API_URL, ClientSettings
from shared.config import Env
from tests.cli.test_up import Up


def cli(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI as a person runs it: no TT_API_URL, no REDIS_URL, only the state folder."""
    env = {k: v for k, v in os.environ.items() if k not in ("TT_API_URL", "REDIS_URL")}
    env["TT_STATE_DIR"] = str(state_dir)
    command = [sys.executable, "-m", "services.cli", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)


def test_commands_use_the_urls_up_noted_in_the_state_dir(up: Up, tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    note = json.loads((state_dir / "up.lock").read_text())
    assert note["api_url"] == f"http://127.0.0.1:{up.port}" and note["redis_url"].startswith("redis://")

    submitted = cli(state_dir, "submit", "AAPL", "--analysts", "market")
    assert submitted.returncode == 0, submitted.stderr
    run_id = submitted.stdout.split("run ", 1)[1].split()[0]
    assert f"http://127.0.0.1:{up.port}/#/runs/{run_id}" in submitted.stdout

    watched = cli(state_dir, "watch", "--redis", run_id[-6:])  # Redis found too, id by its tag
    assert watched.returncode == 0, watched.stdout + watched.stderr
    assert "Decision:" in watched.stdout


def test_a_note_of_a_stopped_up_is_ignored_and_the_environment_wins(tmp_path: Path) -> None:
    note = {"pid": os.getpid(), "api_url": "http://127.0.0.1:1234", "redis_url": "redis://127.0.0.1:1235/0"}
    (tmp_path / "up.lock").write_text(json.dumps(note))
    base = {"TT_STATE_DIR": str(tmp_path)}

    noted = ClientSettings.from_env(Env(base))
    assert (noted.api_url, noted.redis_url) == (note["api_url"], note["redis_url"])
    told = ClientSettings.from_env(
        Env({**base, "TT_API_URL": "http://127.0.0.1:9/", "REDIS_URL": "redis://x"})
    )
    assert (told.api_url, told.redis_url) == ("http://127.0.0.1:9", "redis://x")

    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    assert gone.returncode == 0
    (tmp_path / "up.lock").write_text(json.dumps({**note, "pid": int(gone.stdout)}))
    stale = ClientSettings.from_env(Env(base))
    assert (stale.api_url, stale.redis_url) == (DEFAULT_API_URL, None)
