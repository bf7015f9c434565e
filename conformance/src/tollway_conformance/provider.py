"""The provider suite: a provider adapter behind a real gateway, against the simulator.

Subclass :class:`ProviderSuite` in your provider package's tests::

    class TestAcmeProvider(ProviderSuite):
        entry_point = "tollway-provider-acme"  # the distribution that registers the adapter
        provider_type = "acme"                # its ``type``
        model = "acme-large"                  # a model the adapter serves
        upstream_path = "/v1"                 # the simulator speaks the OpenAI wire under /v1

The suite starts the provider simulator (``python -m tollway_simulator --port 0``) and a gateway
subprocess configured with one provider of your type pointing at it, a static key and only
your plugin and ``tollway-static-keys`` loaded. It drives every client format your adapter
claims (``Provider.endpoints``: ``chat``, ``messages``, ``responses``) and checks what the
client receives *and* what the gateway saw (the usage your adapter put on ``ctx.usage``, read
through a probe plugin). See docs/testing-plugins.md for each check and its failure messages.

With an upstream of your own, override the ``provider_upstream`` fixture, declare
:attr:`ProviderSuite.capabilities` (checks needing an undeclared one are skipped, saying why),
implement the fault interface (:mod:`tollway_conformance.faults`) in your test server and
:meth:`ProviderSuite.upstream_disconnects`. Override any ``test_…`` method to replace one check.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, TypeVar

import attrs
import httpx
import pluggy
import pytest

from tollway import hookspecs
from tollway.config import ProviderConfig
from tollway.plugins import ENTRY_POINT_GROUP, PROJECT_NAME
from tollway.provider import Provider
from tollway_conformance.faults import (
    CAPABILITIES,
    EVENT_DELAY_HEADER,
    FAULT_HEADER,
    OUTPUT_WORDS_HEADER,
)
from tollway_conformance.harness import (
    STATIC_KEYS,
    GatewayProcess,
    Simulator,
    free_port,
    provider_toml,
    start_gateway,
    stop,
)
from tollway_conformance.tool_checks import (
    chat_tools,
    embeddings_round_trip,
    image_request,
    messages_tools,
    responses_tools,
)
from tollway_conformance.wire import (
    FORMATS,
    PATHS,
    auth_headers,
    body_text,
    body_usage,
    frame_problems,
    parse_sse,
    request_body,
    stream_text,
    stream_usage,
)

__all__ = [
    "CAPABILITIES",
    "EVENT_DELAY_HEADER",
    "FAULT_HEADER",
    "OUTPUT_WORDS_HEADER",
    "ProviderSuite",
    "only_formats",
    "registered_providers",
]


PROMPT = "conformance check please answer"
UNREACHABLE_MODEL = "conformance-unreachable"
F = TypeVar("F", bound=Callable[..., Any])


def only_formats(*formats: str) -> Callable[[F], F]:
    """Run a ``client_format`` check only for these formats (when the adapter claims them)."""

    def mark(fn: F) -> F:
        fn.conformance_formats = formats  # type: ignore[attr-defined]
        return fn

    return mark


def registered_providers(entry_point: str) -> dict[str, type[Provider]]:
    """The provider classes the plugin behind ``entry_point`` registers, by ``type``."""
    eps = [
        ep
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        if ep.name == entry_point
    ]
    assert eps, (
        f"no entry point named {entry_point!r} in group {ENTRY_POINT_GROUP!r}: add "
        f'[project.entry-points.tollway] {entry_point} = "your_module" to pyproject.toml '
        "and reinstall the package (pip install -e .)"
    )
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    pm.register(eps[0].load(), name=entry_point)
    found: dict[str, type[Provider]] = {}
    pm.hook.register_providers(register=lambda cls: found.setdefault(cls.type, cls))
    return found


class ProviderSuite:
    """Subclass with ``entry_point``, ``provider_type`` and ``model`` (see the module doc)."""

    #: The entry-point (= distribution) name of the plugin that registers the adapter.
    entry_point: ClassVar[str] = ""
    #: The adapter's ``type`` (what ``[[providers]] type = …`` names).
    provider_type: ClassVar[str] = ""
    #: A model id the adapter serves (its ``default_models``, or the ``models`` you configure).
    model: ClassVar[str] = ""
    #: Client formats to test; ``None``: every text format the adapter's ``endpoints`` claims.
    formats: ClassVar[tuple[str, ...] | None] = None
    #: Appended to the simulator's URL to make ``base_url`` (``"/v1"`` for the OpenAI wire).
    upstream_path: ClassVar[str] = ""
    #: The upstream understands ``x-simulator-fault`` and friends (it is the simulator). Set
    #: ``False`` with your own upstream: the error, timeout and cancellation checks are skipped.
    #: (Kept for old suites: it removes ``"faults"`` from :attr:`capabilities`.)
    simulator_faults: ClassVar[bool] = True
    #: What the adapter and its upstream can do; each check needing one that is not declared
    #: is skipped with the reason printed (``pytest -rs``). Known names: :data:`CAPABILITIES`.
    capabilities: ClassVar[frozenset[str]] = frozenset({"streaming", "tools", "faults"})
    #: The upstream answers the same request with the same text (the simulator does).
    deterministic: ClassVar[bool] = True
    #: The model the embeddings check asks for (default: :attr:`model`).
    embedding_model: ClassVar[str] = ""
    #: ``SERVER_UPSTREAM_TIMEOUT_SECONDS`` of the suite's gateway (the timeout check waits it).
    upstream_timeout_seconds: ClassVar[float] = 1.0
    #: More environment for the gateway, and more entry points to load beside yours.
    gateway_env: ClassVar[dict[str, str]] = {}
    extra_plugins: ClassVar[tuple[str, ...]] = ()

    # --- what an author may override -------------------------------------------------------

    def provider_config(self, base_url: str) -> ProviderConfig:
        """The provider under test, pointing at ``base_url`` (the upstream)."""
        return ProviderConfig(
            name="under-test", type=self.provider_type, base_url=base_url, api_key="sk-conformance"
        )

    def unreachable_config(self, base_url: str) -> ProviderConfig:
        """A second provider of your type whose ``base_url`` refuses connections; it alone
        serves the model ``conformance-unreachable`` and is tried first."""
        main = self.provider_config(base_url)
        return attrs.evolve(
            main,
            name="conformance-unreachable",
            id=None,
            base_url=base_url,
            models=[UNREACHABLE_MODEL],
            priority=main.priority - 100,
        )

    @pytest.fixture(scope="class")
    @classmethod
    def provider_upstream(cls, tollway_simulator: Simulator) -> str:
        """The upstream's base URL: the simulator. Override (a class-scoped fixture, as here)
        to start an upstream of your own."""
        return tollway_simulator.url + cls.upstream_path

    # --- machinery -------------------------------------------------------------------------

    @classmethod
    def client_formats(cls) -> tuple[str, ...]:
        """The formats the checks run for (``client_format`` parameters)."""
        if cls.formats is not None:
            unknown = [f for f in cls.formats if f not in FORMATS]
            assert not unknown, f"formats {unknown} are not among {FORMATS}"
            return tuple(cls.formats)
        try:
            adapter = cls._adapter()
        except Exception:  # test_adapter_registered reports it
            return FORMATS[:1]
        served = adapter.endpoints | adapter.translated_endpoints()
        return tuple(f for f in FORMATS if f in served) or FORMATS[:1]

    @classmethod
    @functools.cache
    def _adapter(cls) -> type[Provider]:
        assert cls.entry_point, "set `entry_point` to the plugin's entry-point name"
        assert cls.provider_type, "set `provider_type` to the adapter's type"
        found = registered_providers(cls.entry_point)
        assert cls.provider_type in found, (
            f"plugin {cls.entry_point!r} registers no provider of type {cls.provider_type!r} "
            f"(it registers: {', '.join(sorted(found)) or 'none'}); call register(YourProvider) "
            "in a `register_providers(register)` hook implementation"
        )
        return found[cls.provider_type]

    @pytest.fixture(scope="class")
    @classmethod
    def provider_gateway(
        cls, provider_upstream: str, tmp_path_factory: pytest.TempPathFactory
    ) -> Iterator[GatewayProcess]:
        """A gateway with the provider under test (and the unreachable one), a static key
        whose fallback is capped at one attempt, and the conformance probe."""
        self = cls()
        assert self.model, "set `model` to a model id the adapter serves"
        dead = f"http://127.0.0.1:{free_port()}{self.upstream_path}"
        config = provider_toml(self.provider_config(provider_upstream)) + provider_toml(
            self.unreachable_config(dead)
        )
        env = {
            "SERVER_UPSTREAM_TIMEOUT_SECONDS": str(self.upstream_timeout_seconds),
            "SERVER_UPSTREAM_CONNECT_TIMEOUT_SECONDS": "3",
            **self.gateway_env,
        }
        plugins = dict.fromkeys([self.entry_point, STATIC_KEYS, *self.extra_plugins])
        gw = start_gateway(
            tmp_path_factory.mktemp("provider-suite"),
            config,
            env=env,
            plugins=list(plugins),
            probe=True,
            key_config={"fallback": {"max_attempts": 1}},
        )
        yield gw
        stop(gw.proc)

    def _post(
        self,
        gw: GatewayProcess,
        fmt: str,
        body: dict[str, Any],
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        return httpx.post(
            gw.url + PATHS[fmt],
            json=body,
            headers={**auth_headers(fmt, gw.key), **(headers or {})},
            timeout=30,
        )

    def _stream(
        self,
        gw: GatewayProcess,
        fmt: str,
        body: dict[str, Any],
        headers: dict[str, str] | None = None,
    ) -> tuple[httpx.Response, bytes]:
        with httpx.stream(
            "POST",
            gw.url + PATHS[fmt],
            json=body,
            headers={**auth_headers(fmt, gw.key), **(headers or {})},
            timeout=30,
        ) as resp:
            raw = resp.read()
        return resp, raw

    def _ok(self, resp: httpx.Response, what: str, gw: GatewayProcess) -> None:
        if resp.status_code != 200:
            raise AssertionError(
                f"{what}: expected 200, got {resp.status_code}: {resp.text[:500]}\n"
                f"gateway log (tail):\n{gw.logs()[-2000:]}"
            )

    def _needs(self, capability: str) -> None:
        """Skip this check, saying why, unless ``capability`` is declared."""
        assert capability in CAPABILITIES, capability
        declared = set(self.capabilities)
        if not self.simulator_faults:
            declared.discard("faults")
        if capability not in declared:
            pytest.skip(
                f"capability {capability!r} not declared (capabilities = "
                f"{sorted(declared)}): {CAPABILITIES[capability]}"
            )

    def _needs_faults(self) -> None:
        self._needs("faults")

    def upstream_disconnects(self, request: pytest.FixtureRequest) -> int:
        """How many streams the upstream saw its client (the gateway) leave. Default: the
        simulator's counter; with your own upstream, override it to read your test server's
        count (see docs/testing-plugins.md, "fault interface")."""
        sim: Simulator = request.getfixturevalue("tollway_simulator")
        return int(sim.stats()["streams_client_disconnected"])

    # --- checks ----------------------------------------------------------------------------

    def test_adapter_registered(self) -> None:
        """The plugin registers a ``Provider`` subclass of this type that claims the formats."""
        cls = self._adapter()
        assert issubclass(cls, Provider), f"{cls!r} must subclass tollway.provider.Provider"
        assert cls.send is not Provider.send, f"{cls.__qualname__} must implement send()"
        served = cls.endpoints | cls.translated_endpoints()
        missing = [f for f in self.client_formats() if f not in served]
        assert not missing, (
            f"formats {missing} are tested but {cls.__qualname__} serves {sorted(served)} "
            "(its `endpoints`, plus what the core translates to its native formats): add "
            "them to `endpoints`, or remove them from the suite's `formats`"
        )

    def test_non_stream_answer(self, provider_gateway: GatewayProcess, client_format: str) -> None:
        """A complete answer reaches the client with the routing headers."""
        fmt = client_format
        resp = self._post(provider_gateway, fmt, request_body(fmt, self.model, PROMPT))
        self._ok(resp, f"non-streaming {fmt} call", provider_gateway)
        assert resp.headers.get("content-type", "").startswith("application/json"), (
            f"a complete {fmt} answer must be application/json, got "
            f"{resp.headers.get('content-type')!r}"
        )
        text = body_text(fmt, resp.json())
        assert text, f"the {fmt} answer has no assistant text: {resp.text[:300]}"
        assert resp.headers.get("x-langwatch-provider") == self.provider_type
        assert resp.headers.get("x-langwatch-model") == self.model

    def test_stream_frames(self, provider_gateway: GatewayProcess, client_format: str) -> None:
        """Event order and termination as the official SDK of the format expects."""
        self._needs("streaming")
        fmt = client_format
        resp, raw = self._stream(
            provider_gateway, fmt, request_body(fmt, self.model, PROMPT, stream=True)
        )
        self._ok(resp, f"streaming {fmt} call", provider_gateway)
        ctype = resp.headers.get("content-type", "")
        assert ctype.startswith("text/event-stream"), (
            f"a {fmt} stream must be text/event-stream, got {ctype!r}: the adapter returned a "
            "complete body for a streaming request (return ProviderResult(events=…))"
        )
        assert resp.headers.get("cache-control") == "no-cache"
        problems = frame_problems(fmt, parse_sse(raw))
        assert not problems, f"the {fmt} stream is malformed:\n  " + "\n  ".join(problems)

    def test_stream_text_matches_non_stream(
        self, provider_gateway: GatewayProcess, client_format: str
    ) -> None:
        """Streaming and non-streaming calls of one request carry the same text."""
        self._needs("streaming")
        fmt = client_format
        resp = self._post(provider_gateway, fmt, request_body(fmt, self.model, PROMPT))
        self._ok(resp, f"non-streaming {fmt} call", provider_gateway)
        sresp, raw = self._stream(
            provider_gateway, fmt, request_body(fmt, self.model, PROMPT, stream=True)
        )
        self._ok(sresp, f"streaming {fmt} call", provider_gateway)
        whole, streamed = body_text(fmt, resp.json()), stream_text(fmt, parse_sse(raw))
        assert streamed, f"the {fmt} stream carried no text deltas"
        if self.deterministic:
            assert streamed == whole, (
                f"the {fmt} stream's text differs from the complete answer's:\n"
                f"  stream:   {streamed!r}\n  complete: {whole!r}"
            )

    def test_usage_reported(self, provider_gateway: GatewayProcess, client_format: str) -> None:
        """The adapter sets ``ctx.usage`` for complete answers and for streams, and it agrees
        with the usage the client sees."""
        fmt = client_format
        gw = provider_gateway
        for stream in (False, True):
            kind = "streaming" if stream else "non-streaming"
            body = request_body(fmt, self.model, PROMPT, stream=stream)
            if stream:
                resp, raw = self._stream(gw, fmt, body)
                self._ok(resp, f"{kind} {fmt} call", gw)
                seen = stream_usage(fmt, parse_sse(raw))
            else:
                resp = self._post(gw, fmt, body)
                self._ok(resp, f"{kind} {fmt} call", gw)
                seen = body_usage(fmt, resp.json())
            rec = gw.record_for(resp.headers["x-langwatch-request-id"])
            usage = rec["usage"]
            where = (
                "as the usage event passes (e.g. in relay_sse's inspect callback, or the "
                "translator's on_usage)"
                if stream
                else "from the response body's usage"
            )
            assert usage is not None, (
                f"usage not reported: after a successful {kind} {fmt} call the gateway's "
                f"ctx.usage is None. Set ctx.usage = tollway.Usage(input_tokens=…, "
                f"output_tokens=…) in send(), {where}; budgets, rate limits and traces "
                "depend on it"
            )
            assert usage["output_tokens"] > 0, (
                f"usage reported with output_tokens = 0 for a {kind} {fmt} answer with text: "
                f"{usage}; map the provider's output token count"
            )
            assert usage["input_tokens"] + usage["cache_read_input_tokens"] > 0, (
                f"usage reported with no input tokens for a {kind} {fmt} call: {usage}"
            )
            if fmt == "messages":
                # Anthropic clients always see usage (message_delta, the message's usage):
                # zeros there are a wrong answer, not an absent one.
                shown = seen[1] if seen is not None else None
                assert shown == usage["output_tokens"], (
                    f"the client sees {shown} output tokens in the {kind} messages answer, but "
                    f"the adapter reported {usage['output_tokens']} on ctx.usage. An Anthropic "
                    "client reads usage from message_delta (streams) or the message's usage: "
                    "a Messages-native adapter relays the upstream's; for a chat adapter the "
                    "core fills it from the chat usage chunk (the translated request asks for "
                    "stream_options.include_usage: read it in send(), not in the events "
                    "iterator, which runs after the client's own body was restored)"
                )
            elif seen is not None and seen[1]:
                assert usage["output_tokens"] == seen[1], (
                    f"the client sees {seen[1]} output tokens in the {kind} {fmt} answer, "
                    f"but the adapter reported {usage['output_tokens']} on ctx.usage"
                )

    @only_formats("chat")
    def test_chat_stream_usage_chunk_only_when_asked(
        self, provider_gateway: GatewayProcess, client_format: str
    ) -> None:
        """OpenAI chat streams: the usage chunk reaches the client only when it asked for it
        (``stream_options.include_usage``), yet the gateway accounts the tokens either way."""
        gw = provider_gateway
        body = request_body("chat", self.model, PROMPT, stream=True)
        resp, raw = self._stream(gw, "chat", body)
        self._ok(resp, "streaming chat call", gw)
        leaked = [
            ev.data[:120]
            for ev in parse_sse(raw)
            if ev.data != "[DONE]" and json.loads(ev.data).get("usage")
        ]
        assert not leaked, (
            "the client did not ask for usage (no stream_options.include_usage) but received "
            f"a usage chunk: {leaked[0]}. Drop the usage-only chunk the adapter asked for "
            "(return b'' for it from relay_sse's inspect callback)"
        )
        asked = {**body, "stream_options": {"include_usage": True}}
        resp, raw = self._stream(gw, "chat", asked)
        self._ok(resp, "streaming chat call with include_usage", gw)
        seen = stream_usage("chat", parse_sse(raw))
        assert seen is not None, (
            "the client asked for usage (stream_options.include_usage) and received no usage "
            "chunk; keep the upstream's usage chunk when the client asked for it"
        )

    def test_upstream_error_passes_through(
        self, provider_gateway: GatewayProcess, client_format: str
    ) -> None:
        """An upstream 500 reaches the client as a 500 naming the provider
        (``X-LangWatch-Provider``) — raise ``UpstreamHTTPError`` (``raise_for_upstream_status``)."""
        self._needs_faults()
        fmt = client_format
        resp = self._post(
            provider_gateway,
            fmt,
            request_body(fmt, self.model, PROMPT),
            {FAULT_HEADER: "500"},
        )
        assert resp.status_code == 500, (
            f"an upstream 500 must pass through as 500, got {resp.status_code}: "
            f"{resp.text[:300]}. Call `await raise_for_upstream_status(resp)` before reading "
            "the body"
        )
        assert resp.headers.get("x-langwatch-provider") == self.provider_type, (
            "X-LangWatch-Provider must name the provider whose error passed through"
        )
        assert resp.headers.get("x-langwatch-request-id", "").startswith("grq_")

    def test_connection_refused_is_502(
        self, provider_gateway: GatewayProcess, client_format: str
    ) -> None:
        """An upstream that refuses connections gives 502 ``provider_error``."""
        fmt = client_format
        resp = self._post(provider_gateway, fmt, request_body(fmt, UNREACHABLE_MODEL, PROMPT))
        assert resp.status_code == 502, (
            f"a provider whose base_url refuses connections must give 502 provider_error, got "
            f"{resp.status_code}: {resp.text[:300]}. Let http.post's UpstreamConnectError "
            "propagate out of send()"
        )
        err = resp.json()["error"]
        assert err["type"] == "provider_error", err
        assert resp.headers.get("x-langwatch-provider") == self.provider_type

    def test_timeout_is_504(self, provider_gateway: GatewayProcess) -> None:
        """An upstream that never answers gives 504 ``upstream_timeout`` once
        ``SERVER_UPSTREAM_TIMEOUT_SECONDS`` ran out."""
        self._needs_faults()
        fmt = self.client_formats()[0]
        t0 = time.monotonic()
        resp = self._post(
            provider_gateway,
            fmt,
            request_body(fmt, self.model, PROMPT),
            {FAULT_HEADER: "timeout"},
        )
        waited = time.monotonic() - t0
        assert resp.status_code == 504, (
            f"an upstream that never answers must give 504 upstream_timeout, got "
            f"{resp.status_code} after {waited:.1f} s: {resp.text[:300]}. Use the `http` "
            "argument of send() (the gateway's client and timeouts) and let "
            "UpstreamTimeoutError propagate"
        )
        assert resp.json()["error"]["type"] == "upstream_timeout"

    def test_midstream_failure_ends_with_error_event(
        self, provider_gateway: GatewayProcess, client_format: str
    ) -> None:
        """An upstream that dies mid-stream ends the client's stream with ``event: error``."""
        self._needs("streaming")
        self._needs_faults()
        fmt = client_format
        resp, raw = self._stream(
            provider_gateway,
            fmt,
            request_body(fmt, self.model, PROMPT, stream=True),
            {FAULT_HEADER: "midstream:3"},
        )
        assert resp.status_code == 200, resp.text[:300]
        events = parse_sse(raw)
        assert events, "the stream carried nothing"
        last = events[-1]
        assert last.name == "error", (
            "after the upstream cut the stream, the client's stream must end with an "
            f"`event: error` frame; it ended with {last.name or 'data'}: {last.data[:120]!r}. "
            "Raise UpstreamError subclasses from the events iterator (relay_sse does), never "
            "swallow the failure"
        )
        assert last.json()["error"]["type"] == "provider_error"

    def test_client_disconnect_closes_upstream(
        self, provider_gateway: GatewayProcess, request: pytest.FixtureRequest
    ) -> None:
        """A client that leaves mid-stream makes the gateway close the upstream connection."""
        self._needs("streaming")
        self._needs_faults()
        fmt = self.client_formats()[0]
        before = self.upstream_disconnects(request)
        headers = {
            **auth_headers(fmt, provider_gateway.key),
            EVENT_DELAY_HEADER: "25",
            OUTPUT_WORDS_HEADER: "400",
        }
        body = request_body(fmt, self.model, PROMPT, stream=True, max_tokens=1000)
        with (
            httpx.Client(timeout=30) as client,
            client.stream(
                "POST", provider_gateway.url + PATHS[fmt], json=body, headers=headers
            ) as resp,
        ):
            assert resp.status_code == 200, resp.read()[:300]
            received = 0
            for chunk in resp.iter_raw():
                received += len(chunk)
                if received > 200:
                    break
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if self.upstream_disconnects(request) > before:
                return
            time.sleep(0.05)
        raise AssertionError(
            "the client left mid-stream but the upstream saw no disconnect within 5 s "
            "(upstream_disconnects() did not grow): return ProviderResult(events=…, "
            "close=resp.close) so the gateway can release the upstream connection, and make "
            "sure the events iterator closes the response in a `finally` (relay_sse and "
            "relay_json_lines do). With your own upstream, upstream_disconnects() must count "
            "the streams whose client left"
        )

    def test_tool_call_round_trip(
        self, provider_gateway: GatewayProcess, client_format: str
    ) -> None:
        """The official SDK gets a tool call (complete and streamed) and can answer it."""
        self._needs("tools")
        fmt = client_format
        gw = provider_gateway
        if fmt == "chat":
            chat_tools(gw, self.model)
        elif fmt == "messages":
            messages_tools(gw, self.model)
        else:
            responses_tools(gw, self.model)

    @only_formats("chat", "messages")
    def test_image_input(self, provider_gateway: GatewayProcess, client_format: str) -> None:
        """A request with an image in the client's format is answered with text."""
        self._needs("vision")
        fmt = client_format
        resp = self._post(provider_gateway, fmt, image_request(fmt, self.model, PROMPT))
        self._ok(resp, f"{fmt} call with an image", provider_gateway)
        assert body_text(fmt, resp.json()), (
            f"the {fmt} answer to a request with an image has no text: {resp.text[:300]}; map "
            "image parts (tollway.formats.content_parts / image_part_url) to your upstream's"
        )

    def test_embeddings(self, provider_gateway: GatewayProcess) -> None:
        """``/v1/embeddings`` answers one vector per input and reports the input tokens."""
        self._needs("embeddings")
        embeddings_round_trip(provider_gateway, self.embedding_model or self.model)

    @only_formats("chat", "messages")
    def test_max_tokens_stop_reason(
        self, provider_gateway: GatewayProcess, client_format: str
    ) -> None:
        """A truncated answer says so in the client's format (``length`` / ``max_tokens``)."""
        self._needs_faults()
        fmt = client_format
        body = request_body(fmt, self.model, PROMPT, max_tokens=3)
        resp = self._post(provider_gateway, fmt, body, {OUTPUT_WORDS_HEADER: "20"})
        self._ok(resp, f"truncated {fmt} call", provider_gateway)
        doc = resp.json()
        if fmt == "chat":
            reason = doc["choices"][0]["finish_reason"]
            assert reason == "length", f"a truncated chat answer has finish_reason {reason!r}"
        else:
            reason = doc["stop_reason"]
            assert reason == "max_tokens", f"a truncated message has stop_reason {reason!r}"
