"""The model registry: which ``model_id`` a run may name, and how to reach that model.

The default registry ships with the runner (``services/runner/pipeline/models.toml``); an
operator extends or overrides it with a file of the same shape named by ``TT_MODELS``. Only the
NAME of the environment variable holding an API key is ever stored, never the key.
"""

from __future__ import annotations

import os
import socket
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import msgspec

from shared.config import ConfigError

DEFAULT_MODEL_ID = "offline"
DEFAULT_REGISTRY = Path(__file__).resolve().parent.parent / "services/runner/pipeline/models.toml"
MODELS_ENV = "TT_MODELS"

Provider = Literal["offline", "openai"]


class ModelSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One registry entry."""

    id: str
    label: str = ""
    provider: Provider = "offline"
    base_url: str = ""
    api_key_env: str = ""
    model: str = ""
    prompt_usd_per_m: float = 0.0
    completion_usd_per_m: float = 0.0
    max_tokens: int = 1024
    json_mode: bool = True
    tools: bool = True
    """The endpoint takes OpenAI-style tools; false gives the analysts the evidence in the prompt."""
    timeout_s: float | None = None

    def cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        """Estimated cost of a call from the registry's prices."""
        return (prompt_tokens * self.prompt_usd_per_m + completion_tokens * self.completion_usd_per_m) / 1e6

    def api_key(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The key from the environment variable this entry names (None when unnamed or unset)."""
        if not self.api_key_env:
            return None
        return (os.environ if environ is None else environ).get(self.api_key_env) or None


class _Registry(msgspec.Struct, forbid_unknown_fields=True):
    models: dict[str, dict[str, Any]] = {}


def _read(path: Path) -> dict[str, dict[str, Any]]:
    try:
        with path.open("rb") as handle:
            raw = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{MODELS_ENV}: cannot read model registry {path}: {exc}") from exc
    try:
        return msgspec.convert(raw, _Registry).models
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{MODELS_ENV}: model registry {path}: {exc}") from exc


def _spec(model_id: str, fields: dict[str, Any], path: Path) -> ModelSpec:
    try:
        spec = msgspec.convert({**fields, "id": model_id}, ModelSpec)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{MODELS_ENV}: model {model_id!r} in {path}: {exc}") from exc
    if spec.provider == "openai" and not (spec.base_url and spec.model):
        raise ConfigError(f"{MODELS_ENV}: model {model_id!r} in {path} needs base_url and model")
    return spec


def load_registry(extra_path: str | Path | None = None) -> dict[str, ModelSpec]:
    """The default registry merged with ``extra_path`` (else the file ``TT_MODELS`` names)."""
    extra = extra_path if extra_path is not None else os.environ.get(MODELS_ENV) or None
    paths = [DEFAULT_REGISTRY, *([Path(extra)] if extra else [])]
    merged: dict[str, ModelSpec] = {}
    for path in paths:
        for model_id, fields in _read(path).items():
            base = msgspec.structs.asdict(merged[model_id]) if model_id in merged else {}
            merged[model_id] = _spec(model_id, {**base, **fields}, path)
    return merged


def model_ids(extra_path: str | Path | None = None) -> tuple[str, ...]:
    """Every valid ``model_id``, the default first."""
    ids = sorted(load_registry(extra_path))
    return tuple(sorted(ids, key=lambda m: m != DEFAULT_MODEL_ID))


LOOPBACK = ("127.0.0.1", "localhost", "::1")
PROBE_TIMEOUT_S = 0.3


def missing_key(spec: ModelSpec, environ: Mapping[str, str] | None = None) -> str | None:
    """Why ``spec`` cannot run with this environment's keys (None when it can): names the variable."""
    if spec.provider == "openai" and spec.api_key_env and spec.api_key(environ) is None:
        return f"needs the environment variable {spec.api_key_env}"
    return None


def _listening(url: str) -> bool:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", port), PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def unavailable(spec: ModelSpec, environ: Mapping[str, str] | None = None) -> str | None:
    """Why a run naming ``spec`` would fail here, or None. A missing key is read from the
    environment; a keyless endpoint on this machine (Ollama, vLLM) gets a TCP connect, since a
    local server that is not running is the usual reason such a model fails (on loopback a refusal
    is immediate, so the check is synchronous). Remote endpoints are not probed: reaching them is
    the run's business, and /models must stay fast."""
    reason = missing_key(spec, environ)
    if reason or spec.provider != "openai" or spec.api_key_env:
        return reason
    if urlsplit(spec.base_url).hostname in LOOPBACK and not _listening(spec.base_url):
        return f"nothing is listening at {spec.base_url}"
    return None


def available_ids(models: Mapping[str, ModelSpec]) -> list[str]:
    """The ids a run may name here now, sorted."""
    return sorted(m for m, spec in models.items() if unavailable(spec) is None)
