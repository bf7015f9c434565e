"""The outbound-URL policy (``tollway.outbound``): the normaliser, the classification of
addresses, URL checks and the allowlist."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tollway.config import ConfigError, load_settings
from tollway.outbound import (
    OutboundPolicy,
    OutboundRefused,
    guarded_address,
    normalise_host,
    parse_cidrs,
    redact_userinfo,
)

GUARD = OutboundPolicy()
LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")


def _spellings(n: int) -> list[str]:
    """``n`` (a 32-bit address) as decimal, hex, octal, short forms, and an IPv4-mapped IPv6."""
    a, b, c, d = n.to_bytes(4, "big")
    return [
        f"{a}.{b}.{c}.{d}",
        str(n),
        hex(n),
        "0" + oct(n)[2:],
        f"{a}.{(b << 16) | (c << 8) | d}",
        f"{a}.{b}.{(c << 8) | d}",
        f"{hex(a)}.{hex(b)}.{hex(c)}.{hex(d)}",
        f"0{oct(a)[2:]}.{b}.{c}.{d}",
        f"{a}.{b}.{c}.{d}.",
        f"[::ffff:{a}.{b}.{c}.{d}]",
        f"[::ffff:{n >> 16:x}:{n & 0xFFFF:x}]",
        f"[64:ff9b::{a}.{b}.{c}.{d}]",
    ]


@given(st.integers(int(LOOPBACK.network_address), int(LOOPBACK.broadcast_address)))
def test_every_loopback_address_in_every_spelling_is_refused(n: int) -> None:
    for spelling in _spellings(n):
        found = normalise_host(spelling)
        assert not isinstance(found, str), spelling
        assert guarded_address(found), spelling
        assert GUARD.url_problem(f"http://{spelling}:8080/v1") is not None, spelling


@given(st.sampled_from(["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"]))
def test_private_networks_are_refused(cidr: str) -> None:
    net = ipaddress.IPv4Network(cidr)
    for ip in (net.network_address, net.network_address + 1, net.broadcast_address):
        for spelling in _spellings(int(ip)):
            assert GUARD.url_problem(f"https://{spelling}/") is not None, spelling


_PUBLIC = st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address).filter(lambda ip: ip.is_global)


@given(_PUBLIC)
def test_public_addresses_pass_in_every_spelling(ip: ipaddress.IPv4Address) -> None:
    if ip.is_multicast or ip.is_reserved:
        return
    for spelling in _spellings(int(ip)):
        found = normalise_host(spelling)
        assert (
            found == ip
            or getattr(found, "ipv4_mapped", None) == ip
            or (isinstance(found, ipaddress.IPv6Address) and int(found) & 0xFFFFFFFF == int(ip))
        ), spelling
        assert GUARD.url_problem(f"https://{spelling}/v1") is None, spelling


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "LOCALHOST",
        "localhost.",
        "api.localhost",
        "0.0.0.0",
        "0",
        "[::]",
        "[::1]",
        "[fd12:3456::1]",
        "[fe80::1]",
        "169.254.169.254",
        "100.100.100.200",
        "224.0.0.1",
        "[::127.0.0.1]",
        "[2002:7f00:1::]",
        "%31%32%37.0.0.1",
        "１２７.０.０.１",
        "127。0。0。1",
        "metadata.google.internal",
    ],
)
def test_guarded_hosts(host: str) -> None:
    assert GUARD.url_problem(f"http://{host}:80/") is not None


@pytest.mark.parametrize("host", ["api.openai.com", "8.8.8.8", "[2606:4700::1111]", "1e100.net"])
def test_public_hosts(host: str) -> None:
    assert GUARD.url_problem(f"https://{host}/") is None


def test_local_environment_only_checks_the_shape() -> None:
    local = OutboundPolicy(guard=False)
    assert local.url_problem("http://127.0.0.1:8000/v1") is None
    assert local.url_problem("ftp://example.com/") is not None
    problem = local.url_problem("https://user:hunter2@example.com/")
    assert problem is not None
    assert "api_key / a header, not the URL" in problem and "hunter2" not in problem


def test_allowlist() -> None:
    policy = OutboundPolicy(allow_cidrs=parse_cidrs("10.0.0.0/8, 127.0.0.1"))
    assert policy.url_problem("http://10.1.2.3:8000/") is None
    assert policy.url_problem("http://167837954/") is None  # 10.1.2.2
    assert policy.url_problem("http://127.0.0.1/") is None
    assert policy.url_problem("http://[::ffff:127.0.0.1]/") is None
    assert policy.url_problem("http://localhost/") is None
    assert policy.url_problem("http://127.0.0.2/") is not None
    assert policy.url_problem("http://192.168.1.1/") is not None
    with pytest.raises(ValueError, match="GATEWAY_OUTBOUND_ALLOW_CIDRS: 'ten' is not a network"):
        parse_cidrs("10.0.0.0/8,ten")


def test_allow_private_and_reserved_names() -> None:
    policy = OutboundPolicy(private_names=frozenset({"vllm.internal"}))
    assert policy.url_problem("http://10.0.0.12/", allow_private=True) is None
    assert policy.url_problem("http://vllm.internal:8000/", allow_private=True) is None
    problem = policy.url_problem("http://VLLM.internal.:8000/")
    assert problem is not None and "allow_private_network" in problem


def test_check_url_names_the_field() -> None:
    with pytest.raises(
        OutboundRefused, match=r"^guardrails\.pre\[0\]\.url: 127\.1 \(127\.0\.0\.1\)"
    ):
        GUARD.check_url("http://127.1:6379/", "guardrails.pre[0].url")


def test_check_resolved_refuses_a_name_that_resolves_inside() -> None:
    name = socket.gethostname()
    try:
        found = {info[4][0] for info in socket.getaddrinfo(name, 80)}
    except OSError:
        pytest.skip(f"host name {name!r} does not resolve here")
    if not all(guarded_address(ipaddress.ip_address(a.partition("%")[0])) for a in found):
        pytest.skip(f"host name {name!r} resolves to public addresses")
    with pytest.raises(OutboundRefused, match=f"^endpoint: {name} resolves to"):
        GUARD.check_resolved(f"http://{name}:1/", "endpoint")
    with pytest.raises(OutboundRefused, match="loopback/private"):
        GUARD.check_resolved("http://localhost.localdomain.:1/", "endpoint")
    OutboundPolicy(guard=False).check_resolved("http://localhost:1/")


def test_redact_userinfo() -> None:
    assert redact_userinfo("https://u:p@h:1/x?a@b") == "https://****@h:1/x?a@b"
    assert redact_userinfo("https://h/x?a@b") == "https://h/x?a@b"


def test_config_file_checks() -> None:
    def providers(**extra: object) -> dict[str, object]:
        return {"providers": [{"name": "p", "type": "custom", **extra}]}

    with pytest.raises(ConfigError, match="allow_private_network = true"):
        load_settings({}, overrides=providers(base_url="http://2130706433:8000/v1"))
    with pytest.raises(ConfigError, match=r"providers\[0\]\.base_url: .*not the URL"):
        load_settings(
            {"ENVIRONMENT": "local"}, overrides=providers(base_url="https://u:pw@example.com/")
        )
    ok = load_settings(
        {}, overrides=providers(base_url="http://10.0.0.12:8000/v1", allow_private_network=True)
    )
    assert ok.providers[0].allow_private_network
    ok = load_settings(
        {"GATEWAY_OUTBOUND_ALLOW_CIDRS": "10.0.0.0/8"},
        overrides=providers(base_url="http://10.0.0.12:8000/v1"),
    )
    assert ok.outbound_allow_cidrs == ["10.0.0.0/8"]
    with pytest.raises(ConfigError, match="GATEWAY_OUTBOUND_ALLOW_CIDRS"):
        load_settings({"GATEWAY_OUTBOUND_ALLOW_CIDRS": "nope"})
