"""The context owns the model; the body is rewritten once, only when the model changed."""

from __future__ import annotations

import orjson

from tollway import QualifiedModel, RequestContext, parse_qualified_model


def ctx_for(raw: bytes) -> RequestContext:
    ctx = RequestContext(
        request_id="grq_x",
        endpoint="chat",
        method="POST",
        path="/v1/chat/completions",
        query_string=b"",
        headers={},
        trace_id="0" * 31 + "1",
        span_id="0" * 15 + "1",
    )
    ctx.raw_body = raw
    ctx.body = orjson.loads(raw)
    ctx.model = ctx.body["model"]
    return ctx


RAW = b'{"model":  "fast",  "messages": []}'


def test_unchanged_model_is_forwarded_byte_for_byte() -> None:
    ctx = ctx_for(RAW)
    assert ctx.body_bytes() is ctx.raw_body
    assert ctx.body_bytes("fast") is ctx.raw_body


def test_a_new_model_is_written_into_the_upstream_body_once() -> None:
    ctx = ctx_for(RAW)
    ctx.model = "gpt-4o-mini"
    assert ctx.body["model"] == "fast"  # the client's, as sent
    first = ctx.body_bytes()
    assert orjson.loads(first) == {"model": "gpt-4o-mini", "messages": []}
    assert ctx.body_bytes() is first  # serialised once
    # An attempt pinned to another model gets its own bytes.
    ctx.resolved_model = "gpt-4o"
    assert orjson.loads(ctx.body_bytes())["model"] == "gpt-4o"
    assert orjson.loads(ctx.body_bytes("gpt-4o-mini"))["model"] == "gpt-4o-mini"


def test_set_body_keeps_the_model_and_adopts_a_changed_one() -> None:
    ctx = ctx_for(RAW)
    ctx.model = "gpt-4o"
    ctx.set_body({**ctx.body, "messages": [{"role": "user", "content": "x"}]})
    assert ctx.model == "gpt-4o"
    assert orjson.loads(ctx.body_bytes())["model"] == "gpt-4o"
    # A plugin written before ctx.model owned the model rewrites the body's model only.
    ctx.set_body({**ctx.body, "model": "legacy"})
    assert ctx.model == "legacy" and orjson.loads(ctx.body_bytes())["model"] == "legacy"


def test_qualifier_parser() -> None:
    assert parse_qualified_model("openai/gpt-4o") == QualifiedModel("openai", "gpt-4o")
    assert parse_qualified_model("a/b/c") == QualifiedModel("a", "b/c")
    for plain in ("gpt-4o", "/gpt-4o", "openai/", ""):
        assert parse_qualified_model(plain) is None
    q = parse_qualified_model("my-azure/gpt-4o")
    assert q is not None and q.names("azure", "my-azure") and not q.names("azure", "other")
