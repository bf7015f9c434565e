"""The plugin passes the conformance kit's hook-plugin suite."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tollway_conformance import HookPluginSuite


class TestBlockWordsConforms(HookPluginSuite):
    entry_point = "tollway-block-words"
    # The evaluator is run by the guardrails plugin: load it beside ours in the gateway check,
    # and give the check's key a config that uses the evaluator.
    companions = ("tollway-guardrails",)
    key_config = {"guardrails": {"pre": [{"evaluator": "block-words", "words": ["zebra"]}]}}

    def works_alone_call(self, gateway: Any, model: str, fmt: str) -> None:
        super().works_alone_call(gateway, model, fmt)  # a clean request passes
        with pytest.raises(openai.PermissionDeniedError) as info:
            gateway.openai().chat.completions.create(
                model=model, messages=[{"role": "user", "content": "a Zebra!"}]
            )
        assert info.value.response.json()["error"]["type"] == "guardrail_blocked"
