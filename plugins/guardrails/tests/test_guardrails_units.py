"""In-process tests: config validation, plan compilation, the webhook answer parser, evaluator
collection, the direction runner (with its metric) and the stream guard's budget."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from typing import Any

import orjson
import pluggy
import prometheus_client
import pytest

from tollway import RequestContext, ServiceUnavailable, Verdict, hookimpl, hookspecs
from tollway.guardrails import GuardrailRequest, content_texts, with_texts
from tollway_guardrails import (
    GuardrailsSettings,
    GuardrailsState,
    StreamGuard,
    WebhookError,
    collect_evaluators,
    compile_plan,
    parse_answer,
    sign,
    validate_guardrails_config,
)
from tollway_guardrails._run import run_direction
from tollway_pii_redact import PiiEvaluator

INSTALLED = ("pii", "webhook")
HOOK = {"evaluator": "webhook", "url": "https://policy.example/check"}


# --- validate_guardrails_config -------------------------------------------------------------------


def test_a_full_valid_config_has_no_problems() -> None:
    config = {
        "pre": ["pii", {**HOOK, "timeout_ms": 500, "secret": "s3cret"}],
        "post": ["pii"],
        "stream_chunk": [{"evaluator": "pii", "action": "block"}],
        "fail_open": {"pre": True, "post": False},
    }
    assert validate_guardrails_config(config, INSTALLED) == []
    assert validate_guardrails_config(None, INSTALLED) == []
    assert validate_guardrails_config({"pre": None, "fail_open": None}, INSTALLED) == []


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ("pii", "guardrails: must be an object"),
        (
            {"pree": ["pii"]},
            "guardrails.pree: unknown key (known: pre, post, stream_chunk, fail_open)",
        ),
        ({"pre": "pii"}, "guardrails.pre: must be an array of evaluators or null, not a string"),
        ({"post": [3]}, "guardrails.post[0]: must be an evaluator name or an object"),
        ({"pre": [""]}, "guardrails.pre[0]: an evaluator name cannot be empty"),
        ({"pre": [{"url": "x"}]}, "guardrails.pre[0].evaluator: an inline evaluator object needs"),
        (
            {"pre": ["pii", "langevals"]},
            "guardrails.pre[1]: no guardrail evaluator named 'langevals' is installed "
            "(installed: pii, webhook)",
        ),
        (
            {"pre": [{"evaluator": "webhook"}]},
            'guardrails.pre[0].url: the webhook evaluator needs "url"',
        ),
        (
            {"pre": [{**HOOK, "url": "ftp://x/y"}]},
            "guardrails.pre[0].url: 'ftp://x/y' is not an http:// or https:// URL",
        ),
        ({"pre": [{**HOOK, "headers": {}}]}, "guardrails.pre[0].headers: unknown key"),
        ({"pre": [{**HOOK, "secret": ""}]}, "guardrails.pre[0].secret: must be a non-empty string"),
        (
            {"post": [{**HOOK, "timeout_ms": 0}]},
            "guardrails.post[0].timeout_ms: must be a whole number",
        ),
        (
            {"fail_open": {"stream_chunk": True}},
            "guardrails.fail_open.stream_chunk: stream_chunk guardrails always fail open",
        ),
        (
            {"fail_open": {"pre": "yes"}},
            "guardrails.fail_open.pre: must be true, false or null, not a string",
        ),
        (
            {"fail_open": {"both": True}},
            "guardrails.fail_open.both: unknown key (known: pre, post)",
        ),
        ({"fail_open": True}, "guardrails.fail_open: must be an object"),
    ],
)
def test_problems_are_path_qualified(config: Any, problem: str) -> None:
    problems = validate_guardrails_config(config, INSTALLED)
    assert any(p.startswith(problem) for p in problems), problems


def test_inline_settings_are_checked_with_the_evaluators_own_validator() -> None:
    config = {"pre": [{"evaluator": "pii", "entities": ["email", "ssn"], "action": "mask"}]}
    # With names only, the pii settings cannot be checked…
    assert validate_guardrails_config(config, INSTALLED) == []
    # …with the evaluators, they are.
    problems = validate_guardrails_config(config, {"pii": PiiEvaluator(), "webhook": object()})
    assert problems == [
        "guardrails.pre[0].entities[1]: unknown entity 'ssn' (known: email, phone)",
        "guardrails.pre[0].action: must be one of redact, block, not 'mask'",
    ]


def test_no_evaluator_installed_is_said() -> None:
    (problem,) = validate_guardrails_config({"pre": ["pii"]}, [])
    assert problem.endswith("(installed: none)")


# --- compile_plan ---------------------------------------------------------------------------------


def test_plan_resolves_names_settings_and_timeouts() -> None:
    pii = PiiEvaluator()
    registry = {"pii": pii, "webhook": object()}
    plan = compile_plan(
        {
            "pre": ["pii", {**HOOK, "timeout_ms": 250}],
            "stream_chunk": ["nope"],
            "fail_open": {"post": True},
        },
        registry,
        2000,
    )
    first, second = plan.pre
    assert (first.name, first.evaluator, first.timeout_s, first.problem) == ("pii", pii, 2.0, None)
    assert first.sync is not None  # pii can judge stream chunks inline
    assert (second.name, second.timeout_s, second.settings["url"]) == ("webhook", 0.25, HOOK["url"])
    (broken,) = plan.stream_chunk
    assert broken.evaluator is None and broken.problem is not None
    assert "no guardrail evaluator named 'nope'" in broken.problem
    assert (plan.fail_open("pre"), plan.fail_open("post"), plan.fail_open("stream_chunk")) == (
        False,
        True,
        True,
    )


def test_a_direction_that_is_not_a_list_becomes_a_failing_entry() -> None:
    plan = compile_plan({"post": "pii"}, {"pii": PiiEvaluator()}, 2000)
    (ref,) = plan.post
    assert ref.problem is not None and "must be an array" in ref.problem


def test_plans_are_cached_per_config_object() -> None:
    state = GuardrailsState({"pii": PiiEvaluator()})
    config = {"pre": ["pii"]}
    assert state.plan(config) is state.plan(config)
    assert state.plan({"pre": ["pii"]}) is not state.plan(config)
    assert state.plan(None).pre == ()


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="stream_chunk_budget_ms"):
        GuardrailsSettings(stream_chunk_budget_ms=0)
    with pytest.raises(ValueError, match="stream_chunk_window_chars must be between 0 and 4096"):
        GuardrailsSettings(stream_chunk_window_chars=-1)
    assert GuardrailsSettings(stream_chunk_window_chars=0).stream_chunk_window_chars == 0


# --- the webhook answer ---------------------------------------------------------------------------


def test_signature_is_hmac_sha256_of_the_body() -> None:
    body = b'{"direction":"pre"}'
    assert sign("k", body) == hmac.new(b"k", body, hashlib.sha256).hexdigest()


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"nope", "invalid JSON"),
        (b"[]", "a JSON list, not an object"),
        (b'{"decision": "deny"}', "decision 'deny'"),
        (b'{"decision": "modify"}', "modify without a modified_content object"),
    ],
)
def test_unusable_answers_are_failures(raw: bytes, problem: str) -> None:
    with pytest.raises(WebhookError, match=problem):
        parse_answer(raw)


def test_answers() -> None:
    assert parse_answer(b'{"decision":"allow"}') == Verdict("allow", "", "webhook")
    assert parse_answer(b'{"decision":"block","reason":"no"}').reason == "no"
    v = parse_answer(b'{"decision":"modify","modified_content":{"output":"x"}}')
    assert v.content == {"output": "x"}


# --- collecting evaluators ------------------------------------------------------------------------


class _Good:
    async def evaluate(self, request: GuardrailRequest) -> Verdict:
        return Verdict("allow")


def _pm(*plugins: tuple[str, object]) -> pluggy.PluginManager:
    pm = pluggy.PluginManager("tollway")
    pm.add_hookspecs(hookspecs)
    for name, plugin in plugins:
        pm.register(plugin, name=name)
    return pm


class _Registers:
    def __init__(self, name: str, evaluator: object) -> None:
        self.name, self.evaluator = name, evaluator

    @hookimpl
    def register_guardrail_evaluators(self, register: Any) -> None:
        register(self.name, self.evaluator)


def test_collect_evaluators() -> None:
    good = _Good()
    assert collect_evaluators(_pm(("a", _Registers("x", good)))) == {"x": good}


def test_two_plugins_registering_one_name_are_named() -> None:
    pm = _pm(("plugin-a", _Registers("x", _Good())), ("plugin-b", _Registers("x", _Good())))
    with pytest.raises(ValueError, match="'x' is registered by two plugins") as info:
        collect_evaluators(pm)
    assert "plugin-a" in str(info.value) and "plugin-b" in str(info.value)


def test_an_object_without_evaluate_is_refused() -> None:
    with pytest.raises(ValueError, match="no async evaluate"):
        collect_evaluators(_pm(("bad", _Registers("x", object()))))


# --- running a direction --------------------------------------------------------------------------


def _ctx(endpoint: str = "chat") -> RequestContext:
    return RequestContext(
        request_id="grq_test",
        endpoint=endpoint,
        method="POST",
        path="/v1/chat/completions",
        query_string=b"",
        headers={},
        trace_id="0" * 32,
        span_id="0" * 16,
    )


def _sample(direction: str, verdict: str, cause: str = "verdict") -> float:
    value = prometheus_client.REGISTRY.get_sample_value(
        "gateway_guardrail_verdicts_total",
        {"direction": direction, "verdict": verdict, "cause": cause},
    )
    return value or 0.0


class _Fixed:
    def __init__(self, verdict: Verdict | Exception, delay: float = 0.0) -> None:
        self.verdict, self.delay = verdict, delay

    async def evaluate(self, request: GuardrailRequest) -> Verdict:
        await asyncio.sleep(self.delay)
        if isinstance(self.verdict, Exception):
            raise self.verdict
        return self.verdict


def _content(texts: list[str]) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": t} for t in texts]}


def test_block_is_counted_and_wins_over_a_failure() -> None:
    registry = {"boom": _Fixed(RuntimeError("down")), "no": _Fixed(Verdict("block", "nope"), 0.01)}
    plan = compile_plan({"pre": ["boom", "no"]}, registry, 2000)
    before = _sample("pre", "block")
    outage = _sample("pre", "block", "evaluator_failure")
    ctx = _ctx()
    decision = asyncio.run(run_direction(ctx, plan, "pre", _content(["hi"]), ["hi"]))
    assert decision.verdict == Verdict("block", "nope", "no")
    assert _sample("pre", "block") == before + 1
    assert _sample("pre", "block", "evaluator_failure") == outage + 1
    assert ctx.span_attributes["langwatch.guardrail.pre.decision"] == "block"


def test_failure_fails_closed_and_counts_a_block_caused_by_the_failure() -> None:
    # The reference's alert watches {verdict="block"} during an evaluator outage (fail-closed);
    # cause tells it from a block the evaluator decided.
    plan = compile_plan({"post": ["boom"]}, {"boom": _Fixed(RuntimeError("down"))}, 2000)
    before = _sample("post", "block", "evaluator_failure")
    decided = _sample("post", "block")
    with pytest.raises(ServiceUnavailable) as info:
        asyncio.run(run_direction(_ctx(), plan, "post", {"output": "x"}, ["x"]))
    assert info.value.code == "guardrail_unavailable"
    assert "'boom' (guardrails.post[0])" in info.value.message
    assert "RuntimeError: down" in info.value.message
    assert _sample("post", "block", "evaluator_failure") == before + 1
    assert _sample("post", "block") == decided
    assert (
        prometheus_client.REGISTRY.get_sample_value(
            "gateway_guardrail_verdicts_total",
            {"direction": "post", "verdict": "error", "cause": "evaluator_failure"},
        )
        is None
    )


def test_timeout_with_fail_open_passes_and_marks_the_span(caplog: pytest.LogCaptureFixture) -> None:
    registry = {"slow": _Fixed(Verdict("allow"), 1.0)}
    plan = compile_plan(
        {"pre": [{"evaluator": "slow", "timeout_ms": 20}], "fail_open": {"pre": True}},
        registry,
        2000,
    )
    before = _sample("pre", "fail_open", "evaluator_failure")
    ctx = _ctx()
    decision = asyncio.run(run_direction(ctx, plan, "pre", _content(["hi"]), ["hi"]))
    assert decision.verdict is None
    assert _sample("pre", "fail_open", "evaluator_failure") == before + 1
    assert ctx.span_attributes["langwatch.guardrail.pre_fail_open"].startswith("slow: timeout")
    (record,) = [r for r in caplog.records if r.getMessage().startswith("guardrail_fail_open")]
    assert record.levelname == "WARNING"
    assert record.__dict__["evaluator"] == "slow"


def test_modify_with_a_wrong_shape_is_a_failure() -> None:
    registry = {"bad": _Fixed(Verdict("modify", content={"messages": []}))}
    plan = compile_plan({"pre": ["bad"]}, registry, 2000)
    with pytest.raises(ServiceUnavailable, match="must have the 1 that were sent"):
        asyncio.run(run_direction(_ctx(), plan, "pre", _content(["hi"]), ["hi"]))


# --- the stream guard -----------------------------------------------------------------------------


def _chat_chunk(text: str) -> bytearray:
    doc = {"choices": [{"index": 0, "delta": {"content": text}}]}
    return bytearray(b"data: " + orjson.dumps(doc) + b"\n\n")


class _SyncUpper:
    """Upper-cases every text, inline."""

    def evaluate_sync(self, request: GuardrailRequest) -> Verdict:
        texts = content_texts(request.direction, request.content)
        new = [t.upper() for t in texts]
        return Verdict("modify", content=with_texts(request.direction, request.content, new))

    async def evaluate(self, request: GuardrailRequest) -> Verdict:
        return self.evaluate_sync(request)


class _SyncRaises:
    def evaluate_sync(self, request: GuardrailRequest) -> Verdict:
        raise RuntimeError("bug")

    async def evaluate(self, request: GuardrailRequest) -> Verdict:
        raise RuntimeError("bug")


def _guard(
    ctx: RequestContext, config: list[Any], registry: dict[str, Any], window: int = 0
) -> StreamGuard:
    plan = compile_plan({"stream_chunk": config}, registry, 2000)
    return StreamGuard(ctx, plan.stream_chunk, 0.05, window)


def _feed(guard: StreamGuard, ctx: RequestContext, *chunks: bytearray) -> list[bytes | Verdict]:
    async def run() -> list[bytes | Verdict]:
        out: list[bytes | Verdict] = [await guard.feed(ctx, bytes(c)) for c in chunks]
        out.append(await guard.end(ctx))
        return out

    return asyncio.run(run())


def _text(out: list[bytes | Verdict]) -> str:
    """The chat text of what was relayed."""
    text = ""
    for piece in out:
        if isinstance(piece, bytes):
            for line in piece.split(b"\n"):
                if line.startswith(b"data: {"):
                    for choice in orjson.loads(line[6:])["choices"]:
                        text += choice["delta"].get("content") or ""
    return text


def test_sync_evaluators_rewrite_the_chunk() -> None:
    ctx = _ctx()
    guard = _guard(ctx, ["upper", "raises"], {"upper": _SyncUpper(), "raises": _SyncRaises()})
    role_only = bytearray(b'data: {"choices":[{"delta":{"role":"assistant"}}]}\n\n')
    out = _feed(guard, ctx, _chat_chunk("hello"), role_only)
    assert isinstance(out[0], bytes) and b'"content":"HELLO"' in out[0]
    assert out[1] == bytes(role_only)  # no text: passed as it came
    assert ctx.span_attributes["langwatch.guardrail.stream_chunk_fail_open"] == (
        "raises: error: RuntimeError: bug"
    )


def test_a_fast_network_evaluator_blocks_the_chunk_it_judged() -> None:
    ctx = _ctx()
    registry = {"no": _Fixed(Verdict("block", "stop"), 0.005)}
    out = _feed(_guard(ctx, ["no"], registry), ctx, _chat_chunk("a"), _chat_chunk("b"))
    # The first chunk waited for its verdict: it is replaced by the block, nothing of it relayed.
    assert out[0] == Verdict("block", "stop", "no")
    assert ctx.span_attributes["langwatch.guardrail.stream_chunk.blocked_by"] == "no"


def test_a_network_evaluator_can_rewrite_the_chunk() -> None:
    ctx = _ctx()
    guard = _guard(ctx, ["upper"], {"upper": _AsyncOnly(_SyncUpper())})
    out = _feed(guard, ctx, _chat_chunk("quiet"))
    assert _text(out) == "QUIET"


def test_a_slow_evaluator_fails_open_at_the_budget() -> None:
    ctx = _ctx()
    guard = _guard(ctx, ["slow"], {"slow": _Fixed(Verdict("block", "late"), 0.5)})
    out = _feed(guard, ctx, _chat_chunk("one"), _chat_chunk("two"), _chat_chunk("three"))
    assert _text(out) == "onetwothree"  # the late blocks never came
    assert ctx.span_attributes["langwatch.guardrail.stream_chunk_fail_open"] == (
        "slow: timeout: no verdict within 50 ms"
    )
    assert ctx.span_attributes["langwatch.guardrail.stream_chunk.fail_open_count"] == 3


class _RedactSplit:
    """Replaces ``alice@example.com`` (seen whole only) with ``[EMAIL]``."""

    def evaluate_sync(self, request: GuardrailRequest) -> Verdict:
        texts = content_texts(request.direction, request.content)
        new = [t.replace("alice@example.com", "[EMAIL]") for t in texts]
        if new == texts:
            return Verdict("allow")
        return Verdict("modify", content=with_texts(request.direction, request.content, new))

    async def evaluate(self, request: GuardrailRequest) -> Verdict:
        return self.evaluate_sync(request)


def test_the_window_judges_a_pattern_split_across_chunks() -> None:
    chunks = [_chat_chunk(t) for t in ["mail ", "alice@exa", "mple.com", " now"]]
    for window, expected in [(32, "mail [EMAIL] now"), (0, "mail alice@example.com now")]:
        ctx = _ctx()
        out = _feed(_guard(ctx, ["r"], {"r": _RedactSplit()}, window), ctx, *chunks)
        assert _text(out) == expected
    ctx = _ctx()
    out = _feed(_guard(ctx, ["r"], {"r": _RedactSplit()}, 32), ctx, *chunks)
    assert out[:2] == [b"", b""]  # "mail alice@exa" held back (14 characters <= 32)
    assert isinstance(out[-1], bytes) and out[-1]  # the end flushes what was held


class _AsyncOnly:
    def __init__(self, inner: _SyncUpper) -> None:
        self.inner = inner

    async def evaluate(self, request: GuardrailRequest) -> Verdict:
        return self.inner.evaluate_sync(request)
