"""Console sessions, the sign-in throttle, and the same-origin check on their own (no server)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tollway_control_plane.auth import SUPERUSER
from tollway_control_plane.console.sessions import (
    IDLE_SECONDS,
    MAX_AGE_SECONDS,
    LoginThrottle,
    SessionStore,
    request_is_https,
    same_origin,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_sessions_end_when_idle_or_too_old_or_signed_out() -> None:
    clock = Clock()
    store = SessionStore(clock)
    session = store.create(SUPERUSER)
    assert store.get(session.id) is session
    assert store.get("not-a-session") is None and store.get(None) is None
    clock.now += IDLE_SECONDS - 1
    assert store.get(session.id) is session  # used: the idle clock restarts
    clock.now += IDLE_SECONDS - 1
    assert store.get(session.id) is session
    clock.now += IDLE_SECONDS + 1
    assert store.get(session.id) is None  # idle too long

    busy = store.create(SUPERUSER)
    for _ in range(int(MAX_AGE_SECONDS // (IDLE_SECONDS / 2)) + 1):
        clock.now += IDLE_SECONDS / 2
        found = store.get(busy.id)
    assert found is None  # never idle, but past the maximum age

    other = store.create(SUPERUSER)
    store.end(other.id)
    assert store.get(other.id) is None


def test_csrf_tokens_compare_exactly() -> None:
    session = SessionStore().create(SUPERUSER)
    assert session.csrf_ok(session.csrf)
    for wrong in (None, "", session.csrf[:-1], session.csrf + "x", session.csrf.upper() + "!"):
        assert not session.csrf_ok(wrong)
    assert session.id != session.csrf


def test_login_throttle_blocks_an_address_for_the_window() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock)
    for _ in range(LoginThrottle.MAX_FAILURES):
        assert not throttle.blocked("10.0.0.1")
        throttle.failed("10.0.0.1")
    assert throttle.blocked("10.0.0.1")
    assert not throttle.blocked("10.0.0.2")  # per address
    clock.now += LoginThrottle.FAILURE_WINDOW_SECONDS + 1
    assert not throttle.blocked("10.0.0.1")
    throttle.failed("10.0.0.1")
    throttle.succeeded("10.0.0.1")
    assert not throttle.blocked("10.0.0.1")


@pytest.mark.parametrize(
    ("origin", "referer", "ok"),
    [
        ("http://127.0.0.1:5563", None, True),
        ("HTTP://127.0.0.1:5563/", None, True),
        ("https://127.0.0.1:5563", None, False),  # another scheme is another origin
        ("http://127.0.0.1:5564", None, False),
        ("http://127.0.0.1:5563.evil.example", None, False),
        ("null", "http://127.0.0.1:5563/console/keys", True),
        (None, "http://127.0.0.1:5563/console/keys?q=1", True),
        (None, "http://evil.example/http://127.0.0.1:5563/", False),
        (None, None, False),
        ("null", None, False),
    ],
)
def test_same_origin(origin: str | None, referer: str | None, ok: bool) -> None:
    assert same_origin(origin, referer, "http", "127.0.0.1:5563") is ok


_HOST = st.from_regex(r"[a-z0-9.-]{1,30}(:[0-9]{1,5})?", fullmatch=True)


@given(host=_HOST, other=_HOST, scheme=st.sampled_from(["http", "https"]))
def test_same_origin_is_exact(host: str, other: str, scheme: str) -> None:
    assert same_origin(f"{scheme}://{host}", None, scheme, host)
    assert same_origin(None, f"{scheme}://{host}/console/", scheme, host)
    assert same_origin(f"{scheme}://{other}", None, scheme, host) is (other == host)


def test_https_detection_trusts_the_proxy_header_only_when_told(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TOLLWAY_CONSOLE_TRUST_PROXY", raising=False)
    assert request_is_https("https", None)
    assert not request_is_https("http", "https")
    monkeypatch.setenv("TOLLWAY_CONSOLE_TRUST_PROXY", "true")
    assert request_is_https("http", "https")
    assert request_is_https("http", "HTTPS, http")
    assert not request_is_https("http", "http")
    assert not request_is_https("http", None)


def _apply(target: object, patch: object) -> object:
    """RFC 7386 merge patch application (the reference semantics the store implements)."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = _apply(result.get(k), v)
    return result


_LEAF = st.one_of(st.integers(), st.text(max_size=5), st.booleans(), st.lists(st.integers()))
_JSON = st.recursive(
    _LEAF, lambda inner: st.dictionaries(st.text(max_size=4), inner, max_size=4), max_leaves=12
)
_OBJECT = st.dictionaries(st.text(max_size=4), _JSON, max_size=5)


@given(current=_OBJECT, wanted=_OBJECT)
def test_config_edit_patch_turns_the_current_config_into_the_edited_one(
    current: dict[str, object], wanted: dict[str, object]
) -> None:
    from tollway_control_plane.console.keys import merge_patch

    assert _apply(current, merge_patch(current, wanted)) == wanted
