"""A small Dockerfile reader for policy tests: stages of (instruction, argument) pairs."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Stage:
    """One ``FROM`` stage and the instructions under it."""

    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, instruction: str) -> list[str]:
        return [arg for name, arg in self.instructions if name == instruction]


def logical_lines(text: str) -> list[str]:
    """Instruction lines with backslash continuations joined and comments dropped."""
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    if current:
        lines.append(current)
    return lines


def parse(path: Path) -> list[Stage]:
    """The stages of a Dockerfile, in order."""
    stages: list[Stage] = []
    for line in logical_lines(path.read_text()):
        instruction, _, argument = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            words = argument.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        elif stages:
            stages[-1].instructions.append((instruction, argument.strip()))
    return stages


def build_args(path: Path) -> dict[str, str]:
    """Default values of ``ARG name=value`` lines anywhere in the file."""
    found: dict[str, str] = {}
    for line in logical_lines(path.read_text()):
        instruction, _, argument = line.partition(" ")
        if instruction.upper() == "ARG" and "=" in argument:
            name, _, value = argument.strip().partition("=")
            found[name] = value
    return found


def exec_form(argument: str) -> list[str]:
    """The JSON array of an exec-form ENTRYPOINT/CMD (raises on the shell form)."""
    value = json.loads(argument)
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"not an exec-form array: {argument}")
    return value


def copy_sources(argument: str) -> list[str]:
    """The context paths a ``COPY`` reads (none for ``COPY --from=...``)."""
    words = shlex.split(argument)
    if any(word.startswith("--from") for word in words):
        return []
    paths = [word for word in words if not word.startswith("--")]
    return paths[:-1]
