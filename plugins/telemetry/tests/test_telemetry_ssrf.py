"""The OTLP endpoint and the SSRF guard: refused at start-up when it names a guarded address
(any spelling, any of the settings), checked again by the exporter's session before it sends,
and redirects never followed."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator

import pytest
import requests

from tollway.outbound import OutboundPolicy, OutboundRefused, parse_cidrs
from tollway_telemetry import TelemetrySettings, resolve
from tollway_telemetry._export import _RecordingSession, classify
from tollway_telemetry._settings import check_endpoint

GUARD = OutboundPolicy()


@pytest.mark.parametrize(
    "env",
    [
        {"GATEWAY_OTEL_DEFAULT_ENDPOINT": "http://127.1:4318"},
        {"GATEWAY_OTEL_DEFAULT_ENDPOINT": "http://2130706433:4318"},
        {"GATEWAY_OTEL_DEFAULT_ENDPOINT": "http://[::ffff:169.254.169.254]/"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://localhost.:4318"},
        {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://10.0.0.5:4318/v1/traces"},
    ],
)
def test_guarded_endpoints_are_refused_at_start(env: dict[str, str]) -> None:
    config = resolve(TelemetrySettings(), env)
    with pytest.raises(ValueError, match=r"SSRF guard.*GATEWAY_OUTBOUND_ALLOW_CIDRS"):
        check_endpoint(config, GUARD, env)
    # Local mode, or the operator's allowlist, lets it through.
    assert check_endpoint(config, OutboundPolicy(guard=False), env).outbound is None
    allow = OutboundPolicy(allow_cidrs=parse_cidrs("0.0.0.0/0,::/0"))
    assert check_endpoint(config, allow, env).outbound is allow


def test_the_toml_endpoint_is_checked_and_names_its_field() -> None:
    config = resolve(TelemetrySettings(endpoint="http://0x7f.1:4318"), {})
    with pytest.raises(ValueError, match=r"^plugin\.telemetry\.endpoint: 0x7f\.1 \(127\.0\.0\.1\)"):
        check_endpoint(config, GUARD, {})


def test_the_control_planes_own_endpoint_is_trusted() -> None:
    env = {"LW_GATEWAY_BASE_URL": "http://10.0.0.2:5560"}
    config = resolve(TelemetrySettings(), env)
    assert check_endpoint(config, GUARD, env).outbound is None


def test_user_info_is_refused() -> None:
    with pytest.raises(ValueError, match=r"user name or password .* not the URL"):
        resolve(TelemetrySettings(), {"GATEWAY_OTEL_DEFAULT_ENDPOINT": "https://u:pw@c.io/"})


class _Listener:
    def __init__(self, host: str) -> None:
        self.sock = socket.socket()
        self.sock.bind((host, 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()


@pytest.fixture
def redirector() -> Iterator[tuple[str, _Listener]]:
    """An HTTP server on 127.0.0.1 that answers 307 to a listener on 127.0.0.2."""
    try:
        target = _Listener("127.0.0.2")
    except OSError:
        pytest.skip("cannot bind 127.0.0.2 here")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.send_response(307)
            self.send_header("Location", f"http://127.0.0.2:{target.port}/v1/traces")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces", target
    server.shutdown()
    server.server_close()
    target.sock.close()


def test_the_exporter_session_never_follows_a_redirect(
    redirector: tuple[str, _Listener],
) -> None:
    url, target = redirector
    session = _RecordingSession(OutboundPolicy(allow_cidrs=parse_cidrs("127.0.0.1/32")))
    response = session.post(url, data=b"spans", timeout=5)
    assert response.status_code == 307
    assert target.connections == 0


def test_the_exporter_session_checks_before_sending(redirector: tuple[str, _Listener]) -> None:
    _, target = redirector
    session = _RecordingSession(GUARD)
    for guarded in (
        f"http://127.0.0.2:{target.port}/v1/traces",
        f"http://localhost:{target.port}/v1/traces",
    ):
        with pytest.raises(OutboundRefused):
            session.post(guarded, data=b"spans", timeout=5)
        kind, detail = classify(session.last_status, session.last_error)
        assert kind == "refused" and "SSRF guard" in detail
    assert target.connections == 0
    with pytest.raises(requests.ConnectionError):  # no guard: a plain connection attempt
        _RecordingSession().post("http://127.0.0.1:1/v1/traces", data=b"x", timeout=5)
