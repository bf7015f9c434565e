"""tollway.media: the transcription form read with werkzeug and rebuilt with aiohttp round-trips
(hypothesis), undocumented fields are dropped, and the usage of an answer is read."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tollway import Usage
from tollway.media import (
    TRANSCRIPTION_FIELDS,
    FormError,
    UploadedFile,
    form_body,
    parse_form,
    transcription_usage,
)

texts = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r"), max_size=40)
single = sorted(f for f in TRANSCRIPTION_FIELDS if not f.endswith("[]") and f != "model")


@settings(max_examples=60, deadline=None)
@given(
    data=st.binary(max_size=4096),
    filename=st.from_regex(r"[a-z0-9_.-]{1,20}", fullmatch=True),
    fields=st.dictionaries(st.sampled_from(single), texts, max_size=4),
    include=st.lists(texts, max_size=3),
    model=st.from_regex(r"[a-z0-9.-]{1,30}", fullmatch=True),
)
def test_form_round_trips(
    data: bytes, filename: str, fields: dict[str, str], include: list[str], model: str
) -> None:
    upload = UploadedFile(filename, "audio/wav", data)
    sent: dict[str, str | list[str]] = {**fields, "model": "client-model"}
    if include:
        sent["include[]"] = include
    body, content_type = asyncio.run(form_body(sent, upload, model=model))
    got, file, dropped = parse_form(body, content_type)
    assert file == upload
    assert dropped == []
    assert got == {**sent, "model": model}  # the routed model replaces the client's


def test_undocumented_fields_are_dropped_and_named() -> None:
    body, content_type = asyncio.run(
        form_body(
            {"model": "whisper-1", "secret_flag": "1"},
            UploadedFile("a.wav", "audio/wav", b"RIFF"),
            model="whisper-1",
        )
    )
    fields, upload, dropped = parse_form(body, content_type)
    assert fields == {"model": "whisper-1"} and upload is not None
    assert dropped == ["secret_flag"]


@pytest.mark.parametrize(
    ("content_type", "fragment"),
    [
        ("application/json", "must be multipart/form-data"),
        (None, "no content type"),
        ("multipart/form-data", "no boundary"),
    ],
)
def test_not_a_form(content_type: str | None, fragment: str) -> None:
    with pytest.raises(FormError, match=fragment):
        parse_form(b"{}", content_type)


def test_transcription_usage() -> None:
    assert transcription_usage(b'{"text":"x","usage":{"type":"duration","seconds":3}}') == Usage(
        audio_seconds=3.0
    )
    assert transcription_usage(b'{"text":"x","duration":2.5}') == Usage(audio_seconds=2.5)
    assert transcription_usage(
        b'{"text":"x","usage":{"type":"tokens","input_tokens":7,"output_tokens":2}}'
    ) == Usage(input_tokens=7, output_tokens=2)
    assert transcription_usage(b"plain text answer") is None
    assert transcription_usage(b'{"text":"x"}') is None
