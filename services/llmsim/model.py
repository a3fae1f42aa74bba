"""What the simulator answers and how slowly: distributions, settings and per-call plans.

A call's plan (fault, time to first token, tokens, rate) is drawn from a generator seeded with
(seed, the request body, how many identical bodies came before), so the same sequence of
requests gets the same plans whatever order concurrent calls arrive in; a retried call is the
next occurrence of its body, so an injected fault is not repeated forever.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.config import ConfigError, Env

WORDS = (
    "revenue margin momentum support resistance volume trend outlook guidance risk catalyst "
    "valuation earnings sector rotation breakout drawdown volatility liquidity signal"
).split()


@dataclass(frozen=True, slots=True)
class Dist:
    """``fixed:X``, ``uniform:LO,HI`` or ``lognormal:MEDIAN,SIGMA`` (a bare number is fixed)."""

    kind: str
    a: float
    b: float = 0.0

    @classmethod
    def parse(cls, name: str, text: str) -> Dist:
        kind, _, args = text.partition(":") if ":" in text else ("fixed", "", text)
        try:
            values = [float(x) for x in args.split(",")]
        except ValueError:
            raise ConfigError(f"{name}: numbers expected in {text!r}") from None
        wanted = {"fixed": 1, "uniform": 2, "lognormal": 2}.get(kind)
        if wanted is None or len(values) != wanted or min(values) < 0:
            raise ConfigError(
                f"{name}: expected fixed:X, uniform:LO,HI or lognormal:MEDIAN,SIGMA"
                f" (non-negative), got {text!r}"
            )
        return cls(kind, values[0], values[1] if wanted == 2 else 0.0)

    def draw(self, rng: random.Random) -> float:
        if self.kind == "uniform":
            return rng.uniform(min(self.a, self.b), max(self.a, self.b))
        if self.kind == "lognormal":
            return self.a * math.exp(rng.gauss(0.0, self.b))
        return self.a

    @property
    def mean(self) -> float:
        if self.kind == "uniform":
            return (self.a + self.b) / 2
        if self.kind == "lognormal":
            return self.a * math.exp(self.b**2 / 2)
        return self.a


@dataclass(frozen=True, slots=True)
class SimSettings:
    """``TT_LLMSIM_*``: latency, size, fault rates, seed, where to listen."""

    ttft_s: Dist
    tokens_per_s: Dist
    completion_tokens: Dist
    rate_429: float
    rate_5xx: float
    retry_after_s: float
    seed: int
    host: str
    port: int

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SimSettings:
        env = Env(environ, prefix="TT_LLMSIM_")
        rates = (env.number("RATE_429", 0.0, minimum=0.0), env.number("RATE_5XX", 0.0, minimum=0.0))
        if sum(rates) > 1:
            raise ConfigError(f"TT_LLMSIM_RATE_429 + TT_LLMSIM_RATE_5XX must be at most 1, got {sum(rates)}")
        return cls(
            ttft_s=Dist.parse("TT_LLMSIM_TTFT_S", env.text("TTFT_S", "uniform:0.2,0.6")),
            tokens_per_s=Dist.parse("TT_LLMSIM_TOKENS_PER_S", env.text("TOKENS_PER_S", "uniform:80,160")),
            completion_tokens=Dist.parse(
                "TT_LLMSIM_COMPLETION_TOKENS", env.text("COMPLETION_TOKENS", "uniform:100,250")
            ),
            rate_429=rates[0],
            rate_5xx=rates[1],
            retry_after_s=env.number("RETRY_AFTER_S", 0.2, minimum=0.0),
            seed=env.integer("SEED", 0),
            host=env.text("HOST", "127.0.0.1"),
            port=env.integer("PORT", 8090, minimum=0),
        )

    def mean_call_s(self) -> float:
        """Mean simulated time of a successful call (first token plus the rest at the rate)."""
        return self.ttft_s.mean + self.completion_tokens.mean / max(self.tokens_per_s.mean, 1e-9)


@dataclass(frozen=True, slots=True)
class Plan:
    """One call: ``status`` (200, 429 or 5xx), then timing and size of a successful answer."""

    status: int
    ttft_s: float
    tokens: int
    tokens_per_s: float
    words: tuple[str, ...]

    @property
    def duration_s(self) -> float:
        return self.ttft_s + (self.tokens / self.tokens_per_s if self.tokens_per_s > 0 else 0.0)


class Planner:
    """Draws each call's plan; remembers how often each body was seen (for determinism)."""

    def __init__(self, settings: SimSettings) -> None:
        self.settings = settings
        self.seen: dict[bytes, int] = {}

    def plan(self, body: bytes, max_tokens: int | None) -> Plan:
        digest = hashlib.sha256(body).digest()[:16]
        occurrence = self.seen.get(digest, 0)
        self.seen[digest] = occurrence + 1
        rng = random.Random(f"{self.settings.seed}:{digest.hex()}:{occurrence}")
        s, fault = self.settings, rng.random()
        status = 429 if fault < s.rate_429 else 503 if fault < s.rate_429 + s.rate_5xx else 200
        tokens = max(1, round(s.completion_tokens.draw(rng)))
        if max_tokens is not None:
            tokens = max(1, min(tokens, max_tokens))
        words = tuple(rng.choice(WORDS) for _ in range(tokens))
        return Plan(status, s.ttft_s.draw(rng), tokens, max(s.tokens_per_s.draw(rng), 1e-3), words)


_OBJECT = re.compile(r"\{")


def quoted_objects(text: str) -> list[dict[str, Any]]:
    """The JSON objects quoted in ``text``, in order (shapes with placeholders do not parse)."""
    decoder, found, position = json.JSONDecoder(), [], 0
    for match in _OBJECT.finditer(text):
        if match.start() < position:
            continue
        try:
            value, end = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            found.append(value)
            position = end
    return found


def json_answer(prompt: str) -> str:
    """JSON mode's answer: the last object the prompt quotes (a prompt quoting a reference answer
    gets it back, so schema-checking callers accept it), else ``{}``."""
    objects = quoted_objects(prompt)
    return json.dumps(objects[-1] if objects else {})


def tool_arguments(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Placeholder arguments for a tool's JSON schema: each required property by its type."""
    samples: dict[str, Any] = {
        "string": "x",
        "integer": 1,
        "number": 1.0,
        "boolean": True,
        "array": [],
        "object": {},
    }
    properties = parameters.get("properties", {}) or {}
    required = parameters.get("required", list(properties))
    return {name: samples.get(str(properties.get(name, {}).get("type", "string")), "x") for name in required}
