"""`make run` installs only what running needs; the test targets install the dev tools as well."""

from __future__ import annotations

import subprocess

from tests.support.processes import ROOT


def planned(target: str, tmp_venv: str) -> list[str]:
    """The commands ``make <target>`` would run on a checkout whose environment is not set up."""
    done = subprocess.run(
        ["make", "-n", target, f"VENV={tmp_venv}", "UV=.tools/bin/uv"],
        cwd=ROOT, capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return done.stdout.splitlines()


def syncs(commands: list[str]) -> list[str]:
    return [c for c in commands if " sync " in c]


def test_run_syncs_the_runtime_only_without_uninstalling_the_dev_tools(tmp_path: object) -> None:
    run = syncs(planned("run", f"{tmp_path}/venv"))

    assert len(run) == 1 and "--no-dev" in run[0] and "--inexact" in run[0], run
    assert "--extra langgraph" in run[0] and "--group embedded-redis" in run[0]


def test_the_test_targets_sync_the_dev_tools_and_mark_the_runtime_done(tmp_path: object) -> None:
    for target in ("pytest", "lint", "typecheck"):
        commands = planned(target, f"{tmp_path}/venv")
        sync = syncs(commands)
        assert len(sync) == 1 and "--no-dev" not in sync[0] and "--extra langgraph" in sync[0], sync
        assert any(c.startswith("touch") and ".synced-runtime" in c for c in commands), commands
