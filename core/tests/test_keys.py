"""Tests of tollway.keys: the virtual key format (SPEC §3)."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import pickle
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ulid import ULID

from tollway.keys import (
    CROCKFORD,
    KEY_LENGTH,
    KeyFormatError,
    KeyHasher,
    check_key_format,
    checksum,
    display_prefix,
    hash_key,
    keys_equal,
    mint_key,
)

# A fixed, valid key (its checksum computed by hand below).
EXAMPLE = "lw_vk_live_01J9Z8X4T7Q2M5N8P3R6S9V2W41GW"


def _reference_checksum(first37: str) -> str:
    crc = zlib.crc32(first37.encode()) & 0x7FFF
    return "".join(CROCKFORD[(crc >> shift) & 31] for shift in (10, 5, 0))


def refused(presented: str | None) -> KeyFormatError:
    with pytest.raises(KeyFormatError) as info:
        check_key_format(presented)
    return info.value


def test_checksum_definition() -> None:
    assert checksum(EXAMPLE[:37]) == _reference_checksum(EXAMPLE[:37]) == EXAMPLE[37:]


@pytest.mark.parametrize("env", ["live", "test"])
def test_mint_then_check(env: str) -> None:
    for _ in range(200):
        key = mint_key(env)
        assert len(key) == KEY_LENGTH
        assert key.startswith(f"lw_vk_{env}_")
        assert str(ULID.from_str(key[11:37])) == key[11:37]
        assert key[37:] == _reference_checksum(key[:37])
        assert check_key_format(key) == key


def test_mint_rejects_unknown_env() -> None:
    with pytest.raises(ValueError):
        mint_key("prod")


def test_mint_is_unique() -> None:
    keys = {mint_key() for _ in range(1000)}
    assert len(keys) == 1000


def test_display_prefix() -> None:
    assert display_prefix(EXAMPLE) == "lw_vk_live_01J9Z8X"
    assert len(display_prefix(mint_key())) == 18


def test_legacy_37_char_key_accepted() -> None:
    legacy = "lw_vk_test_" + str(ULID())
    assert len(legacy) == 37
    assert check_key_format(legacy) == legacy
    assert check_key_format(EXAMPLE[:37]) == EXAMPLE[:37]


@pytest.mark.parametrize("presented", [None, "", "   "])
def test_missing(presented: str | None) -> None:
    err = refused(presented)
    assert err.code == "missing_key"
    assert "Authorization" in str(err)


def test_truncated_prefix_paste() -> None:
    err = refused(EXAMPLE[:25])
    assert err.code == "malformed_key"
    msg = str(err)
    assert "25 characters" in msg and "40 characters" in msg and "prefix" in msg
    assert EXAMPLE[:25] not in msg


@pytest.mark.parametrize("cut", [1, 2, 5, 10, 20, 30, 36, 38, 39])
def test_truncated_keys(cut: int) -> None:
    assert refused(EXAMPLE[:cut]).code == "malformed_key"


@pytest.mark.parametrize("extra", ["0", "ABC", "\n", " ", "XYZ123"])
def test_extended_keys(extra: str) -> None:
    err = refused(EXAMPLE + extra)
    assert err.code == "malformed_key"


def test_lowercase_refused() -> None:
    err = refused(EXAMPLE[:11] + EXAMPLE[11:].lower())
    assert err.code == "malformed_key"
    assert "lower-case" in str(err)
    err = refused(EXAMPLE[:11] + EXAMPLE[11:37].lower())  # legacy form too
    assert err.code == "malformed_key"


@pytest.mark.parametrize(
    "prefix", ["lw_vk_prod_", "LW_VK_LIVE_", "lw-vk-live_", "lw_vk_livex", "sk_vk_live_"]
)
def test_wrong_prefix(prefix: str) -> None:
    err = refused(prefix + EXAMPLE[11:])
    assert err.code == "malformed_key"
    assert "lw_vk_live_" in str(err)


def test_out_of_range_ulid_refused() -> None:
    body = "lw_vk_live_8" + EXAMPLE[12:37]
    assert refused(body + checksum(body)).code == "malformed_key"


def test_bad_checksum() -> None:
    bad = EXAMPLE[:37] + ("000" if EXAMPLE[37:] != "000" else "111")
    err = refused(bad)
    assert err.code == "bad_checksum"
    assert "mistyped" in str(err)


def test_friendly_hints() -> None:
    assert "OpenAI" in str(refused("sk-proj-abcdefghijklmnopqrstuvwxyz0123456789"))
    assert "Anthropic" in str(refused("sk-ant-api03-abcdefghijklmnopqrstuvwxyz"))
    assert "environment variable" in str(refused("$LANGWATCH_VK"))
    assert "twice" in str(refused("Bearer " + EXAMPLE))
    assert "spaces" in str(refused(" " + EXAMPLE))


def test_messages_never_contain_more_than_the_display_prefix() -> None:
    key = mint_key()
    variants = [
        key[:-1] + ("0" if key[-1] != "0" else "1"),  # bad checksum
        key + "X",
        key[:11] + key[11:].lower(),
        key[:38],
        key[:12] + "I" + key[13:],
        "Bearer " + key,
        " " + key,
        "lw_vk_prod_" + key[11:],
        "sk-" + key,
    ]
    for presented in variants:
        msg = str(refused(presented))
        assert key[:19] not in msg
        assert key[11:37] not in msg
        assert presented[18:] not in msg or len(presented[18:]) < 3


SUBSTITUTES = CROCKFORD + CROCKFORD.lower() + "_-ILOU iluo!~é"


@st.composite
def keys(draw: st.DrawFn) -> str:
    """A well-formed 40-char key built from drawn bytes (no external randomness)."""
    body = f"lw_vk_{draw(st.sampled_from(['live', 'test']))}_"
    body += str(ULID.from_bytes(draw(st.binary(min_size=16, max_size=16))))
    return body + checksum(body)


@given(keys(), st.integers(0, KEY_LENGTH - 1), st.sampled_from(SUBSTITUTES))
def test_every_single_char_substitution_is_refused(key: str, pos: int, char: str) -> None:
    assert check_key_format(key) == key
    if char == key[pos]:
        char = "!"
    mutated = key[:pos] + char + key[pos + 1 :]
    assert refused(mutated).code in ("bad_checksum", "malformed_key")


def test_every_single_char_substitution_exhaustive() -> None:
    # The checksum catches every one-character typo within the alphabet, at every position.
    key = mint_key()
    for pos in range(11, 40):
        for char in CROCKFORD:
            if char == key[pos]:
                continue
            mutated = key[:pos] + char + key[pos + 1 :]
            assert refused(mutated).code in ("bad_checksum", "malformed_key")


def test_adjacent_transpositions_refused() -> None:
    key = mint_key()
    for pos in range(11, 39):
        if key[pos] == key[pos + 1]:
            continue
        swapped = key[:pos] + key[pos + 1] + key[pos] + key[pos + 2 :]
        assert refused(swapped).code in ("bad_checksum", "malformed_key")


@given(st.text(max_size=60))
def test_arbitrary_text_never_crashes(text: str) -> None:
    try:
        assert check_key_format(text) == text
    except KeyFormatError as err:
        assert err.code in ("missing_key", "malformed_key", "bad_checksum")


def test_hash_key_is_hmac_sha256() -> None:
    pepper = b"pepper-bytes"
    expected = hmac.new(pepper, EXAMPLE.encode(), hashlib.sha256).hexdigest()
    assert hash_key(pepper, EXAMPLE) == expected
    assert len(expected) == 64
    assert hash_key(b"other", EXAMPLE) != expected


@given(st.binary(max_size=80), st.text(st.characters(blacklist_categories=("Cs",)), max_size=60))
def test_key_hasher_is_hash_key(pepper: bytes, secret: str) -> None:
    hasher = KeyHasher(pepper)
    # Twice: each call starts again from the pepper's keyed state.
    assert hasher(secret) == hasher(secret) == hash_key(pepper, secret)
    assert hasher(secret + "x") == hash_key(pepper, secret + "x")


def test_keys_equal() -> None:
    assert keys_equal(EXAMPLE, EXAMPLE)
    assert not keys_equal(EXAMPLE, EXAMPLE[:-1] + "X")
    assert not keys_equal(EXAMPLE, "")
    assert keys_equal("é", "é") and not keys_equal("é", "e")


def test_error_pickles() -> None:
    err = refused("lw_vk_live_")
    copy = pickle.loads(pickle.dumps(err))
    assert copy.code == err.code and str(copy) == str(err)


def test_keys_minted_together_share_no_randomness() -> None:
    """python-ulid is monotonic within a millisecond; minted secrets must not be."""
    from tollway.keys import mint_key

    keys = [mint_key("live") for _ in range(50)]
    randoms = [k[21:37] for k in keys]  # the ULID's 16 random characters
    assert len(set(randoms)) == 50
    ints = sorted(int.from_bytes(r.encode(), "big") for r in randoms)
    assert all(b - a > 1 for a, b in itertools.pairwise(ints))
