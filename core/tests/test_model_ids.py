"""``tollway.provider.ModelIds``: client model ids → the upstream's ids (``config.model_ids``)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tollway.config import ProviderConfig
from tollway.provider import ModelIds


def ids(raw: Any) -> ModelIds:
    return ModelIds(ProviderConfig(name="p", type="bedrock", config={"model_ids": raw}), "E")


def test_mapped_and_unmapped_models() -> None:
    m = ids({"claude-sonnet-4-5": "us.anthropic.claude-sonnet-4-5-20250929-v1:0"})
    assert "claude-sonnet-4-5" in m and "gpt-4o" not in m
    assert m.upstream("claude-sonnet-4-5") == "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
    assert m.upstream("gpt-4o") == "gpt-4o"
    assert m.problems() == []


def test_absent_is_empty_and_fine() -> None:
    m = ModelIds(ProviderConfig(name="p", type="gemini"))
    assert m.map == {} and m.problems() == []


def test_problems_name_the_entry() -> None:
    assert ids(["x"]).problems() == [
        "config.model_ids: must be a table mapping the model ids clients send to the "
        "provider's model ids (e.g. E)"
    ]
    bad = ids({"ok": "fine", "glob-*": "x", "empty": "", "number": 3})
    assert [p.split(":")[0] for p in bad.problems()] == [
        "config.model_ids.glob-*",
        "config.model_ids.empty",
        "config.model_ids.number",
    ]
    assert bad.map == {"ok": "fine"}  # only the valid entries are ever used


@given(st.dictionaries(st.text(min_size=1), st.one_of(st.text(), st.integers(), st.none())))
def test_every_key_is_either_used_or_reported(raw: dict[str, Any]) -> None:
    m = ids(raw)
    problems = m.problems()
    assert len(problems) == len(raw) - len(m.map)
    for key, value in raw.items():
        reported = any(p.startswith(f"config.model_ids.{key}: {value!r} ") for p in problems)
        assert (key in m.map) != reported
