"""``make mutate``: do the tests fail when a guarantee is broken? Measured by mutation.

Two parts, each in a scratch copy of the tree under ``.state/mutate/`` (the work tree is never
edited, so an interrupted run leaves nothing behind):
- Python: mutmut over the modules that carry guarantees, one module group at a time, each group
  against only the tests mapped to it (``MODULES``); mutmut then runs, per mutant, only those of
  them that call the mutated function.
- Lua: a named list of breaks of the scripts in ``shared/scripts.py`` (``LUA``), each a regex on the
  script text applied alone and run against its tests. A pattern that no longer matches fails the
  run: a refactor of the scripts must update the list, not silently shrink it.

    .venv/bin/python -m bench.mutate                   # everything
    .venv/bin/python -m bench.mutate --only lua,reducer
Prints the kill ratio per module and lists the survivors; exits 1 if a Lua mutant survives or a
pattern is stale.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRATCH = ROOT / ".state" / "mutate"
PY = ROOT / ".venv" / "bin"
COPIED = ("shared", "services", "tests", "bench", "pyproject.toml")

STORE_TESTS = (
    "tests/shared/test_store.py",
    "tests/shared/test_store_guarantees.py",
    "tests/runner/test_store_appends.py",
    "tests/runner/test_cancel_before_start.py",
)

MODULES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "reducer": (
        ("shared/reducer.py", "shared/run_state.py"),
        (
            "tests/shared/test_reducer.py",
            "tests/shared/test_reducer_endings.py",
            "tests/shared/test_reducer_progress.py",
            "tests/shared/test_reducer_describe.py",
            "tests/projector/test_apply_mut.py",
            "tests/shared/test_events.py",
            "tests/projector/test_projection.py",
        ),
    ),
    "projection": (
        ("services/projector/projection.py", "services/projector/db.py"),
        (
            "tests/projector/test_projection.py",
            "tests/projector/test_db.py",
            "tests/projector/test_exactly_once.py",
            "tests/projector/test_consumer.py",
        ),
    ),
    "retention": (
        ("services/projector/retention.py", "shared/clock.py"),
        (
            "tests/projector/test_retention.py",
            "tests/projector/test_clock_skew.py",
            "tests/projector/test_retention_clock.py",
            # in-process replicas (~3 s each): the only tests of the horizon and abandoned groups
            "tests/projector/test_replicas.py::test_trimming_the_log_waits_for_the_slowest_replica_until_the_horizon",
            "tests/projector/test_replicas.py::test_the_group_of_a_renamed_replica_holds_the_log_only_until_the_horizon",
        ),
    ),
    "runner": (
        ("services/runner/runs.py", "services/runner/leases.py", "services/runner/execution.py"),
        (
            "tests/runner/test_worker.py",
            "tests/runner/test_failures.py",
            "tests/runner/test_cancel.py",
            "tests/runner/test_leases.py",
            "tests/runner/test_cancel_before_start.py",
            "tests/runner/test_executor.py",
        ),
    ),
    "sse": (
        ("services/gateway/sse.py", "services/gateway/hub.py", "services/gateway/frames.py"),
        (
            "tests/gateway/test_sse.py",
            "tests/gateway/test_hub.py",
            "tests/gateway/test_sse_resume.py",
            "tests/gateway/test_isolation.py",
            # Resets from the read model (a projector process serves the snapshot; ~4 s each, so
            # these only): a trim behind a followed run, a trimmed run nobody follows (its owner
            # looked up in Redis), an expired stream (its owner check by the read model).
            "tests/gateway/test_with_projector.py::test_a_client_joining_a_followed_run_trimmed_meanwhile_gets_a_reset",
            "tests/gateway/test_with_projector.py::test_every_client_of_a_trimmed_run_gets_a_reset_also_while_the_hub_follows_it",
            "tests/gateway/test_with_projector.py::test_expired_run_stream_gives_reset_from_the_read_model",
            # Throughput and GC tuning, not a guarantee: 11 s a surviving mutant for nothing.
            "--deselect=tests/gateway/test_sse.py::test_200_clients_all_get_every_event_on_a_flat_connection_count",
            "--deselect=tests/gateway/test_hub.py::test_tune_gc_freezes_the_loaded_heap_and_raises_the_thresholds",
        ),
    ),
}
"""Group name → (modules mutated, the tests that claim to cover them)."""


@dataclass(frozen=True)
class LuaMutant:
    name: str
    pattern: str
    replacement: str
    tests: tuple[str, ...] = ()
    """Tests beyond ``STORE_TESTS`` that guard this rule at the runner or gateway level."""


_ENDED = "if phase == 'ended' then"

LUA: tuple[LuaMutant, ...] = (
    LuaMutant("drop the ended guard", r"if phase == 'ended' then return \{'refused', 'ended'\} end", ""),
    LuaMutant("abandon after the end", _ENDED, _ENDED.replace(" then", " and ARGV[3] ~= 'abandon' then")),
    LuaMutant("start after the end", _ENDED, _ENDED.replace(" then", " and ARGV[3] ~= 'start' then")),
    LuaMutant("cancel after the end", _ENDED, _ENDED.replace(" then", " and ARGV[3] ~= 'cancel' then")),
    LuaMutant(
        "skip the fence check",
        r"  if redis.call\('HGET', KEYS\[3\], 'fence'\) ~= fence then return \{'refused', 'fenced'\} end\n",
        "",
    ),
    LuaMutant(
        "a second start with the live fence",
        r"if phase == 'running' and redis.call\('HGET', KEYS\[3\], 'fence'\) == fence then",
        "if false then",
    ),
    LuaMutant("events before the start", r"if phase ~= 'running' then return \{'refused', phase\} end", ""),
    LuaMutant(
        "a re-sent append appends twice",
        r"(HGET', KEYS\[3\], seen\)\n)if before then return \{'ok', before\} end",
        r"\1",
    ),
    LuaMutant(
        "cancel from another user",
        r"if redis.call\('HGET', KEYS\[3\], 'user'\) ~= ARGV\[6\] then",
        "if false then",
    ),
    LuaMutant(
        "cancel of a running run ends it",
        r"\(t == 'cancel' and phase == 'queued'\)",
        "t == 'cancel'",
        ("tests/runner/test_cancel.py",),
    ),
    LuaMutant(
        "cancel while queued leaves it queued",
        r" or \(t == 'cancel' and phase == 'queued'\)",
        "",
        ("tests/gateway/test_sse_resume.py",),
    ),
    LuaMutant(
        "don't set expiry at terminal",
        r"  redis.call\('SREM', KEYS\[4\], ARGV\[2\]\)\n  redis.call\('EXPIRE', KEYS\[1\], ARGV\[4\]\)\n",
        "  redis.call('SREM', KEYS[4], ARGV[2])\n",
    ),
    LuaMutant(
        "a terminal run stays active",
        r"  redis.call\('SREM', KEYS\[4\], ARGV\[2\]\)\n  redis.call\('EXPIRE', KEYS\[1\], ARGV\[4\]\)\n",
        "  redis.call('EXPIRE', KEYS[1], ARGV[4])\n",
    ),
    LuaMutant(
        "retry leaves the run running",
        r"redis.call\('HSET', KEYS\[3\], 'phase', 'queued', 'fence', ''\)",
        "redis.call('HSET', KEYS[3], 'fence', '')",
        ("tests/runner/test_failures.py",),
    ),
    LuaMutant(
        "ack a fenced runner's entry",
        r"if entry ~= '' and refused ~= 'fenced' then",
        "if entry ~= '' then",
        ("tests/runner/test_leases.py",),
    ),
    LuaMutant("a batch goes on past a refusal", r"    if not refused then\n", "    if true then\n"),
    LuaMutant("ended runs count against the cap", r"or phase == 'ended' then", "then"),
    LuaMutant("the cap lets one more in", r"\) >= cap then", ") > cap then"),
    LuaMutant("the idempotency key is ignored", r"if prev then return \{'duplicate', prev\} end", ""),
    LuaMutant(
        "end_lost overwrites a known run",
        r"if redis.call\('EXISTS', KEYS\[3\]\) == 1 then return \{'refused', 'known'\} end",
        "",
    ),
    LuaMutant(
        "an outcome claim takes no lease",
        r"for _, run in ipairs\(due\) do redis.call\('ZADD', KEYS\[1\], 'XX', ARGV\[2\], run\) end",
        "",
        ("tests/runner/pipeline/test_sweep.py",),
    ),
    LuaMutant(
        "an outcome settles without its claim",
        r"if \(not score\) or tonumber\(score\) ~= tonumber\(ARGV\[2\]\) then return 0 end",
        "",
        ("tests/runner/pipeline/test_sweep.py",),
    ),
)


SCRIPT_ERRORS = ("nonexistent global", "Error compiling script", "Error running script")
"""Signs in the test output that a mutated script does not run at all (a bad mutant, not a kill)."""


def copy_tree(dest: Path) -> None:
    """A fresh copy of what the tests import, without caches."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis")
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore)
        else:
            shutil.copy2(src, dest / name)


def env_for(tree: Path) -> dict[str, str]:
    """The scratch tree first on the path, also for processes the tests start."""
    return {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}


UNGUARDED = (r"^\\s*logger\\.",)
"""Lines not mutated: what a log line says is not a guarantee (a regex per line, TOML-escaped)."""


def mutmut_config(modules: tuple[str, ...], tests: tuple[str, ...]) -> str:
    def toml_list(items: tuple[str, ...] | list[str]) -> str:
        return "[" + ", ".join(f'"{x}"' for x in items) + "]"

    return (
        "\n[tool.mutmut]\n"
        'source_paths = ["shared", "services"]\n'
        f"only_mutate = {toml_list(modules)}\n"
        f"pytest_add_cli_args_test_selection = {toml_list(tests)}\n"
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q", "-x"]\n'
        f"do_not_mutate_patterns = {toml_list(UNGUARDED)}\n"
        # mutmut's wall limit is (the tests' call time + constant) * multiplier; the call time
        # leaves out fixtures (a redis-server, a gateway, a projector process: seconds each on
        # busy cores), which with its defaults (1 s, * 15) timed out nearly every SSE mutant.
        "timeout_constant = 10.0\n"
        "timeout_multiplier = 5.0\n"
        "use_git_change_detection = false\n"
    )


def finish(proc: subprocess.Popen[bytes], log: Path) -> None:
    """Wait for mutmut; once it printed its final rate, give it 30 s to exit, then end it: a thread
    a test left behind in its stats run can keep it alive after every verdict is on disk."""
    while proc.poll() is None:
        if "mutations/second" in log.read_text(errors="replace"):
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.terminate()
                proc.wait()
            return
        time.sleep(2)


def run_python(group: str, children: int) -> tuple[int, int, list[str]]:
    """mutmut over one module group: (killed, total, survivors)."""
    modules, tests = MODULES[group]
    tree = SCRATCH / group
    copy_tree(tree)
    with (tree / "pyproject.toml").open("a") as f:
        f.write(mutmut_config(modules, tests))
    mutmut = str(PY / "mutmut")
    log = tree / "mutmut.log"
    with log.open("w") as out:
        command = [mutmut, "run", "--max-children", str(children)]
        # A process group of its own: a mutant's test process killed at its time limit leaves
        # its redis-server and service processes behind, still in this group; they end with it.
        proc = subprocess.Popen(command, cwd=tree, stdout=out, stderr=out, start_new_session=True)
        try:
            finish(proc, log)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    listing = subprocess.run(
        [mutmut, "results", "--all", "true"], cwd=tree, capture_output=True, text=True
    ).stdout
    verdicts = dict(line.strip().rsplit(": ", 1) for line in listing.splitlines() if ": " in line)
    if not verdicts or all(v == "not checked" for v in verdicts.values()):
        print(f"{group}: mutmut ran no mutant (its clean run of the tests failed): see {log}", flush=True)
        return 0, 0, [f"{group}: NOT RUN (see {log})"]
    killed = sum(v in ("killed", "timeout") for v in verdicts.values())
    survivors = sorted(f"{name} ({v})" for name, v in verdicts.items() if v not in ("killed", "timeout"))
    return killed, len(verdicts), survivors


def lua_mutants(source: str) -> list[tuple[LuaMutant, str]]:
    """Each mutant's mutated scripts.py; a pattern that does not match exactly once stops the run."""
    out = []
    for m in LUA:
        found = len(re.findall(m.pattern, source))
        if found != 1:
            sys.exit(f"Lua mutant {m.name!r}: pattern matches {found} times in shared/scripts.py; update LUA")
        out.append((m, re.sub(m.pattern, m.replacement, source)))
    return out


def run_lua() -> tuple[int, int, list[str]]:
    """Each named Lua break alone against its tests: (killed, total, survivors)."""
    original = (ROOT / "shared" / "scripts.py").read_text()
    mutants = lua_mutants(original)
    tree = SCRATCH / "lua"
    copy_tree(tree)
    scripts = tree / "shared" / "scripts.py"
    killed, survivors = 0, []
    for m, text in mutants:
        scripts.write_text(text)
        args = [str(PY / "pytest"), "-x", "-q", "-p", "no:cacheprovider", *STORE_TESTS, *m.tests]
        began = time.monotonic()
        proc = subprocess.run(args, cwd=tree, env=env_for(tree), capture_output=True, text=True)
        verdict = "killed" if proc.returncode == 1 else ("SURVIVED" if proc.returncode == 0 else "error")
        if any(sign in proc.stdout for sign in SCRIPT_ERRORS):
            verdict = "error"  # the mutant broke the script itself: killed for the wrong reason
        print(f"  lua: {m.name:<40} {verdict:<8} {time.monotonic() - began:5.1f}s", flush=True)
        if verdict == "killed":
            killed += 1
        else:
            survivors.append(f"lua: {m.name} ({verdict})")
            if verdict == "error":
                print(proc.stdout[-2000:], proc.stderr[-2000:])
    scripts.write_text(original)
    return killed, len(mutants), survivors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated: lua," + ",".join(MODULES))
    parser.add_argument("--children", type=int, default=2, help="mutmut's parallel test processes")
    args = parser.parse_args()
    wanted = [x for x in args.only.split(",") if x] or ["lua", *MODULES]
    rows: list[tuple[str, int, int]] = []
    survivors: list[str] = []
    for group in wanted:
        began = time.monotonic()
        print(f"{group}: running…", flush=True)
        killed, total, missed = run_lua() if group == "lua" else run_python(group, args.children)
        print(f"{group}: {killed}/{total} killed in {time.monotonic() - began:.0f}s", flush=True)
        rows.append((group, killed, total))
        survivors += missed
    print(f"\n{'module':<12} {'killed':>7} {'total':>6} {'ratio':>7}")
    for group, killed, total in rows:
        print(f"{group:<12} {killed:>7} {total:>6} {killed / max(total, 1):>7.1%}")
    py = [(k, t) for g, k, t in rows if g != "lua"]
    if py:
        k, t = sum(x for x, _ in py), sum(y for _, y in py)
        print(f"{'python':<12} {k:>7} {t:>6} {k / max(t, 1):>7.1%}")
    print("\nsurvivors:" if survivors else "\nno survivors")
    for name in survivors:
        print(f"  {name}")
    if any(s.startswith("lua:") for s in survivors):
        sys.exit(1)


if __name__ == "__main__":
    main()
