"""SPEC §3: the internal-protocol signature (with the SPEC's test vector) and the secrets."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tollway.secrets import NAMES, SecretsError, load_gateway_secrets
from tollway.signing import SignatureError, sign, signed_headers, verify

SECRET = b"shared-test-secret-32byteslong!!"
BODY = b'{"key_presented":"lw_vk_live_01HZX","gateway_node_id":"gw-a"}'
PATH = "/api/internal/gateway/resolve-key"


def test_spec_test_vector() -> None:
    assert hashlib.sha256(BODY).hexdigest().startswith("59f25745")
    assert hashlib.sha256(BODY).hexdigest().endswith("66816")
    assert (
        sign(SECRET, "POST", PATH, 1734567890, BODY)
        == "4e4c8634b10a7ef719cf6d56b89b7f44a5ac7544c03d98ef132b79d36a1a6a1f"
    )
    # The query string is not signed.
    assert sign(SECRET, "POST", PATH + "?x=1", 1734567890, BODY) == sign(
        SECRET, "POST", PATH, 1734567890, BODY
    )


def test_verify_accepts_fresh_and_rejects_tampered_stale_and_wrong_secret() -> None:
    headers = signed_headers(SECRET, "POST", PATH, BODY, now=1_000_000)
    verify(SECRET, "POST", PATH, headers, BODY, now=1_000_100)
    with pytest.raises(SignatureError, match="mismatch"):
        verify(SECRET, "POST", PATH, headers, BODY + b" ", now=1_000_000)
    with pytest.raises(SignatureError, match="off"):
        verify(SECRET, "POST", PATH, headers, BODY, now=1_000_301)
    with pytest.raises(SignatureError, match="mismatch"):
        verify(b"other", "POST", PATH, headers, BODY, now=1_000_000)
    with pytest.raises(SignatureError, match="missing"):
        verify(SECRET, "POST", PATH, {}, BODY)


@given(st.binary(max_size=200), st.sampled_from(["GET", "POST"]), st.integers(0, 2**33))
def test_any_change_to_the_body_breaks_the_signature(body: bytes, method: str, ts: int) -> None:
    headers = signed_headers(SECRET, method, PATH, body, now=ts)
    verify(SECRET, method, PATH, headers, body, now=ts)
    with pytest.raises(SignatureError):
        verify(SECRET, method, PATH, headers, body + b"x", now=ts)


def test_secrets_all_or_none(tmp_path: Path) -> None:
    with pytest.raises(SecretsError) as info:
        load_gateway_secrets(tmp_path, {"LW_VIRTUAL_KEY_PEPPER": "p"})
    assert "LW_GATEWAY_INTERNAL_SECRET" in str(info.value)
    assert "LW_GATEWAY_JWT_SECRET" in str(info.value)
    full = {n: f"value-{n}" for n in NAMES}
    assert load_gateway_secrets(tmp_path, full).pepper == b"value-LW_VIRTUAL_KEY_PEPPER"


def test_generated_once_and_private(tmp_path: Path) -> None:
    first = load_gateway_secrets(tmp_path, {})
    second = load_gateway_secrets(tmp_path, {})
    assert first == second and first.source == "generated"
    mode = (tmp_path / "gateway-secrets.json").stat().st_mode
    assert stat.S_IMODE(mode) == 0o600
