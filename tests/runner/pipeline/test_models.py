"""The model registry file: defaults, an operator's file merged over them, bad files refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.config import ConfigError
from shared.models import DEFAULT_MODEL_ID, load_registry, model_ids


def test_default_registry_has_offline_first_and_the_examples() -> None:
    ids = model_ids()
    assert ids[0] == DEFAULT_MODEL_ID
    assert {"gpt-4o-mini", "grok-4-fast", "ollama-llama3.1"} <= set(ids)
    grok = load_registry()["grok-4-fast"]
    assert grok.base_url == "https://api.x.ai/v1" and grok.api_key_env == "XAI_API_KEY"
    assert grok.cost_usd(1_000_000, 0) == grok.prompt_usd_per_m


def test_operator_file_adds_and_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    extra = tmp_path / "models.toml"
    extra.write_text(
        '[models.vllm-qwen]\nprovider = "openai"\nbase_url = "http://10.0.0.5:8000/v1"\nmodel = "qwen"\n'
        "[models.gpt-4o-mini]\nprompt_usd_per_m = 9.0\n"
    )
    registry = load_registry(extra)
    assert registry["vllm-qwen"].api_key_env == ""
    assert registry["gpt-4o-mini"].prompt_usd_per_m == 9.0
    assert registry["gpt-4o-mini"].base_url == "https://api.openai.com/v1"  # the rest kept

    monkeypatch.setenv("TT_MODELS", str(extra))
    assert "vllm-qwen" in model_ids()


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('[models.x]\nprovider = "openai"\nmodel = "m"\n', "needs base_url"),
        ('[models.x]\nprovider = "carrier-pigeon"\n', "models.toml"),
        ('[models.x]\napi_key = "sk-123"\n', "api_key"),
        ("[models.x\n", "cannot read"),
    ],
)
def test_bad_registry_fails_naming_the_file(tmp_path: Path, text: str, fragment: str) -> None:
    extra = tmp_path / "models.toml"
    extra.write_text(text)
    with pytest.raises(ConfigError, match="TT_MODELS") as caught:
        load_registry(extra)
    assert fragment in str(caught.value)
