"""URL rules judge the host as a client resolves it (case, IDNA, dot variants, trailing dot)."""

from __future__ import annotations

import idna
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tollway_policy_rules as pr
from tollway_policy_rules._urls import canonical_forms, canonical_host

DENY = pr.compile_rules({"urls": {"deny": ["evil\\.example"]}})
ALLOW = pr.compile_rules({"urls": {"allow": ["^https://good\\.example(/|$)"]}})


def judge(rules: pr.CompiledRules, url: str) -> pr.Refusal | None:
    return rules.evaluate({"messages": [{"role": "user", "content": f"see {url} now"}]}, "m")


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/x",
        "https://EVIL.EXAMPLE/x",
        "https://Evil.Example./x",
        "https://evil\u3002example/x",  # ideographic full stop
        "https://evil\uff0eexample/x",  # full-width full stop
        "https://evil\uff61example/x",  # half-width ideographic full stop
        "https://\uff25\uff36\uff29\uff2c.example/x",  # full-width letters
        "https://evil%2Eexample/x",
        "https://%65vil.example/x",
        "https://good.example@evil.example/x",
        "HTTPS://evil.example:443/x",
        "https://sub.EVIL.example/",
    ],
)
def test_deny_sees_the_canonical_host(url: str) -> None:
    refusal = judge(DENY, url)
    assert refusal is not None and refusal.list == "deny"
    assert refusal.value == url  # the message shows what the client sent


@pytest.mark.parametrize(
    "url",
    [
        "https://GOOD.example/a",
        "https://good\u3002example/",
        "https://good.example./",
        "https://good.example:443",
    ],
)
def test_allow_admits_spellings_of_the_allowed_host(url: str) -> None:
    assert judge(ALLOW, url) is None


@pytest.mark.parametrize(
    "url",
    [
        # The userinfo reads like the allowed host; the host is another.
        "https://good.example@evil.example/",
        "https://good.example%2F@evil.example/",
        "https://good.example:80@evil.example/",
        "https://good.example.evil.example/",
    ],
)
def test_allow_judges_the_real_host(url: str) -> None:
    refusal = judge(ALLOW, url)
    assert refusal is not None and refusal.list == "allow" and refusal.value == url


def test_unicode_and_punycode_patterns_both_match() -> None:
    unicode_rules = pr.compile_rules({"urls": {"deny": ["bücher\\.example"]}})
    ascii_rules = pr.compile_rules({"urls": {"deny": ["xn--bcher-kva\\.example"]}})
    for url in (
        "https://bücher.example/",
        "https://xn--bcher-kva.example/",
        "https://BÜCHER.example/",
    ):
        assert judge(unicode_rules, url) is not None, url
        assert judge(ascii_rules, url) is not None, url


@pytest.mark.parametrize(
    ("url", "forms"),
    [
        ("https://evil.example/P?q=A#F", ("https://evil.example/P?q=A#F",)),
        ("http://[::1]:80/x", ("http://[::1]/x",)),
        ("http://host:8080", ("http://host:8080",)),
        ("https://a_b.example/", ("https://a_b.example/",)),  # not IDNA-valid: kept
        ("https://host:0443/", ("https://host/",)),
    ],
)
def test_canonical_forms(url: str, forms: tuple[str, ...]) -> None:
    assert canonical_forms(url) == forms


_LABEL = st.text(
    alphabet=st.sampled_from([*"abcxyzEVIL09-_ÄéüßΣ例え", "\uff45", "\uff36"]),
    min_size=1,
    max_size=10,
)
_DOT = st.sampled_from([".", "\u3002", "\uff0e", "\uff61"])


@given(st.lists(st.tuples(_LABEL, _DOT), min_size=1, max_size=4), st.booleans())
def test_canonical_host_properties(parts: list[tuple[str, str]], trailing: bool) -> None:
    host = "".join(label + dot for label, dot in parts)
    if not trailing:
        host = host[:-1]
    canon = canonical_host(host)
    # Idempotent, lower-case, no dot variant, no trailing dot.
    assert canonical_host(canon) == canon
    assert canon == canon.lower()
    assert not any(d in canon for d in "\u3002\uff0e\uff61")
    assert not canon.endswith(".") or canon == "."
    # The same host whatever the spelling: ASCII upper case, other dots, a trailing dot.
    base = host.rstrip(".\u3002\uff0e\uff61")
    respelled = "".join(c.upper() if c.isascii() else c for c in base).replace(".", "\u3002")
    respelled += "\uff0e"
    assert canonical_host(respelled) == canon
    # ASCII whenever every label is valid IDNA.
    try:
        expected = idna.encode(
            host.translate({0x3002: ".", 0xFF0E: ".", 0xFF61: "."}).rstrip("."), uts46=True
        )
    except idna.IDNAError:
        return
    assert canon == expected.decode()


@given(st.text(max_size=40))
def test_canonical_forms_never_raise(text: str) -> None:
    forms = canonical_forms("https://" + text)
    assert forms and all(f.startswith("https://") for f in forms)
