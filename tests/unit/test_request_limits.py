"""Requests shaped as real clients send them (docs/kiro-protocol.md §3.9): image bytes do not count
against the text budget and have a cap of their own, too many tools is a 400 before anything is
sent, and the client version in the headers is current and configurable in one place."""

from __future__ import annotations

import base64
import os
import struct
import zlib

import orjson
import pytest

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.core.messages import (
    Conversation,
    ImagePart,
    Message,
    TextPart,
    ToolResultPart,
    ToolSpec,
)
from ki2api.kiro.request.budget import (
    DEFAULT_MAX_IMAGE_BYTES,
    DEFAULT_MAX_TOOLS,
    DEFAULT_MAX_UPSTREAM_BYTES,
    body_image_bytes,
    check_image_bytes,
    check_tools,
    conversation_image_bytes,
    fit_conversation,
    text_bytes,
)
from ki2api.kiro.request.build import build_request
from kiro_emulator.errors import Rejection
from kiro_emulator.validate import MAX_TOOLS, parse_chat


def png_b64(decoded_bytes: int) -> str:
    """A valid grayscale PNG of about `decoded_bytes` that does not compress (random pixels)."""
    width = 1024
    height = max(1, decoded_bytes // (width + 1))
    rows = b"".join(b"\0" + os.urandom(width) for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(rows, 1))
        + chunk(b"IEND", b"")
    )
    return base64.b64encode(png).decode()


BIG_PNG = png_b64(630_000)  # ~840 KB of base64, as in the real accepted request


def conv_with(*parts: TextPart | ImagePart, tools: int = 0) -> Conversation:
    specs = tuple(
        ToolSpec(f"tool_{i}", "A tool.", {"type": "object", "properties": {}}) for i in range(tools)
    )
    return Conversation("claude-sonnet-4", (Message("user", parts),), tools=specs)


def body_of(conv: Conversation) -> bytes:
    return orjson.dumps(build_request(conv, conversation_id="c" * 36, profile_arn=None))


def measure(conv: Conversation) -> int:
    return text_bytes(build_request(conv, conversation_id="c" * 36, profile_arn=None))


# --- image bytes and the text budget -----------------------------------------------------------


def test_png_is_valid_and_the_size_of_the_real_one() -> None:
    raw = base64.b64decode(BIG_PNG)
    assert raw.startswith(b"\x89PNG\r\n\x1a\n") and raw.endswith(b"IEND\xaeB`\x82")
    assert 830_000 < len(BIG_PNG) < 850_000


def test_text_bytes_leave_the_images_out() -> None:
    conv = conv_with(TextPart("look " + "t" * 43_000), ImagePart("image/png", BIG_PNG))
    body = build_request(conv, conversation_id="c" * 36, profile_arn=None)
    assert body_image_bytes(body) == len(BIG_PNG)
    assert text_bytes(body) == len(body_of(conv)) - len(BIG_PNG)
    assert text_bytes(body) < 48_000


def test_an_880_kb_request_with_one_large_image_fits() -> None:
    conv = conv_with(TextPart("look " + "t" * 43_000), ImagePart("image/png", BIG_PNG))
    assert len(body_of(conv)) > 880_000 > DEFAULT_MAX_UPSTREAM_BYTES
    assert fit_conversation(conv, measure=measure) is conv


def test_images_in_history_and_tool_results_are_left_out_too() -> None:
    small = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 300).decode()
    messages = (
        Message("user", (TextPart("first"), ImagePart("image/png", small))),
        Message("assistant", (TextPart("seen"),)),
        Message(
            "user",
            (ToolResultPart("t1", (TextPart("r"), ImagePart("image/png", small))), TextPart("x")),
        ),
    )
    conv = Conversation("claude-sonnet-4", messages)
    body = build_request(conv, conversation_id="c" * 36, profile_arn=None)
    assert conversation_image_bytes(conv) == 2 * len(small)
    assert text_bytes(body) == len(orjson.dumps(body)) - conversation_image_bytes(conv)


def test_text_still_counts() -> None:
    conv = conv_with(TextPart("t" * 500_000), TextPart("u" * 200_000))
    with pytest.raises(GatewayError) as info:
        fit_conversation(conv, measure=measure)
    assert info.value.kind is ErrorKind.CONTEXT_TOO_LONG


def test_images_over_their_cap_are_a_400() -> None:
    conv = conv_with(TextPart("look"), ImagePart("image/png", BIG_PNG))
    check_image_bytes(conv)  # the default cap takes it
    with pytest.raises(GatewayError) as info:
        fit_conversation(conv, measure=measure, max_image_bytes=800_000)
    err = info.value
    assert err.kind is ErrorKind.INVALID_REQUEST
    assert err.code == "images_too_large"
    assert "800,000" in err.message and f"{len(BIG_PNG):,}" in err.message
    assert DEFAULT_MAX_IMAGE_BYTES == 5 * 1024 * 1024


# --- tools ---------------------------------------------------------------------------------------


def test_too_many_tools_is_a_400_naming_the_limit_and_the_count() -> None:
    check_tools(conv_with(TextPart("hi"), tools=DEFAULT_MAX_TOOLS))
    with pytest.raises(GatewayError) as info:
        fit_conversation(conv_with(TextPart("hi"), tools=DEFAULT_MAX_TOOLS + 1), measure=measure)
    err = info.value
    assert err.kind is ErrorKind.INVALID_REQUEST
    assert err.param == "tools" and err.code == "too_many_tools"
    assert "120" in err.message and "119" in err.message
    with pytest.raises(GatewayError):
        check_tools(conv_with(TextPart("hi"), tools=11), max_tools=10)


# --- the emulator --------------------------------------------------------------------------------


def test_emulator_accepts_an_880_kb_body_with_a_large_image() -> None:
    conv = conv_with(TextPart("look " + "t" * 43_000), ImagePart("image/png", BIG_PNG))
    raw = body_of(conv)
    assert len(raw) > 880_000
    parse_chat(raw, "IdC")


def test_emulator_still_refuses_too_much_text() -> None:
    raw = body_of(conv_with(TextPart("t" * 400_000), ImagePart("image/png", BIG_PNG)))
    parse_chat(raw, "IdC")  # 400 KB of text and 840 KB of image: fine
    with pytest.raises(Rejection) as info:
        parse_chat(body_of(conv_with(TextPart("t" * 300_000), TextPart("u" * 320_000))), "IdC")
    assert info.value.status == 400
    assert info.value.body["message"] == "Improperly formed request."


def test_emulator_refuses_more_tools_than_kiro_takes() -> None:
    assert MAX_TOOLS == DEFAULT_MAX_TOOLS
    parse_chat(body_of(conv_with(TextPart("hi"), tools=MAX_TOOLS)), "IdC")
    with pytest.raises(Rejection) as info:
        parse_chat(body_of(conv_with(TextPart("hi"), tools=MAX_TOOLS + 1)), "IdC")
    assert info.value.status == 400
    assert info.value.body["message"] == "Improperly formed request."
