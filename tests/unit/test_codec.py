"""ki2api.kiro.stream.codec: the event-stream decoder (and the encoder, checked byte for byte).

Oracles, in order of independence: the fixture built with botocore (tests/fixtures), the hex
vector of docs/kiro-protocol.md §5.4, frames hand-assembled with zlib in `codec_cases`, botocore's
own decoder reading what our encoder writes, and finally our encoder for round trips.
"""

from __future__ import annotations

import json
import random
import struct
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ki2api.kiro.stream.codec import (
    CodecError,
    DecoderClosedError,
    EventStreamDecoder,
    Frame,
    FrameTooLargeError,
    HeaderType,
    HeaderValue,
    InvalidFrameError,
    InvalidHeaderError,
    MessageCRCError,
    PreludeCRCError,
    TruncatedStreamError,
    TypedHeader,
    decode_all,
    encode_event,
    encode_exception,
    encode_frame,
)
from tests.unit.codec_cases import (
    EPOCH,
    VECTORS,
    decode_pieces,
    expected_frame,
    flip_bit,
    frame_summary,
    prelude,
    random_pieces,
    raw_frame,
    raw_header,
    raw_string,
)

POSITIVE: list[dict[str, Any]] = VECTORS["positive"]
NEGATIVE: list[dict[str, Any]] = VECTORS["negative"]
STREAM: dict[str, Any] = VECTORS["stream"]
STREAM_BYTES = bytes.fromhex(STREAM["hex"])

# The exact refusal expected for each named negative vector (others: any CodecError).
NEGATIVE_ERRORS: dict[str, type[CodecError]] = {
    "prelude CRC wrong": PreludeCRCError,
    "message CRC wrong": MessageCRCError,
    "payload byte flipped": MessageCRCError,
    "truncated at end of stream": TruncatedStreamError,
    "total length below minimum": InvalidFrameError,
    "headers length beyond frame": InvalidFrameError,
    "declared length 64 MiB (over any sane bound)": FrameTooLargeError,
}

# docs/kiro-protocol.md §5.4, copied from the document.
DOC_HEX = (
    "0000007c0000005c3bddcf780b3a6576656e742d74797065070016617373697374616e74526573706f6e7365"
    "4576656e740d3a636f6e74656e742d747970650700106170706c69636174696f6e2f6a736f6e0d3a6d657373"
    "6167652d747970650700056576656e747b22636f6e74656e74223a224869227db02babdc"
)


def _assert_decoded_as(frame: Frame, case: dict[str, Any]) -> None:
    want = expected_frame(case)
    assert list(frame.headers) == [name for name, _, _ in want.headers]  # order kept
    for name, value, htype in want.headers:
        got = frame.headers[name]
        assert type(got) is type(value), name  # True must not pass for 1
        assert got == value, name
        assert frame.header_types[name] is htype, name
    assert frame.payload == want.payload


# --------------------------------------------------------------------------- fixture vectors


@pytest.mark.parametrize("case", POSITIVE, ids=[c["name"] for c in POSITIVE])
def test_positive_vector_decodes(case: dict[str, Any]) -> None:
    frames = decode_all(bytes.fromhex(case["hex"]))
    assert len(frames) == 1
    _assert_decoded_as(frames[0], case)


@pytest.mark.parametrize("case", POSITIVE, ids=[c["name"] for c in POSITIVE])
def test_positive_vector_decodes_from_one_byte_pieces(case: dict[str, Any]) -> None:
    data = bytes.fromhex(case["hex"])
    frames = decode_pieces(data[i : i + 1] for i in range(len(data)))
    assert len(frames) == 1
    _assert_decoded_as(frames[0], case)


@pytest.mark.parametrize("case", POSITIVE, ids=[c["name"] for c in POSITIVE])
def test_encoder_reproduces_positive_vector(case: dict[str, Any]) -> None:
    want = expected_frame(case)
    headers = [(name, TypedHeader(htype, value)) for name, value, htype in want.headers]
    assert encode_frame(headers, want.payload).hex() == case["hex"]


def _check_stream(frames: list[Frame]) -> None:
    assert len(frames) == STREAM["frames"]
    payloads = [(f.event_type, json.loads(f.payload)) for f in frames]
    text = "".join(p["content"] for t, p in payloads if t == "assistantResponseEvent")
    tool_input = "".join(p.get("input", "") for t, p in payloads if t == "toolUseEvent")
    assert text == STREAM["text"]
    assert tool_input == STREAM["tool_input"]
    assert all(f.message_type == "event" for f in frames)


def test_stream_vector_decodes_whole() -> None:
    _check_stream(decode_all(STREAM_BYTES))


def test_stream_vector_every_two_way_split() -> None:
    reference = frame_summary(decode_all(STREAM_BYTES))
    for cut in range(len(STREAM_BYTES) + 1):
        frames = decode_pieces([STREAM_BYTES[:cut], STREAM_BYTES[cut:]])
        assert frame_summary(frames) == reference, f"split at {cut}"


@pytest.mark.parametrize("max_piece", [1, 2, 3, 7, 13, 64, 200, 2000], ids=lambda n: f"max{n}")
def test_stream_vector_random_pieces(max_piece: int) -> None:
    reference = frame_summary(decode_all(STREAM_BYTES))
    for seed in range(60):
        pieces = random_pieces(STREAM_BYTES, random.Random(seed), max_piece)
        assert frame_summary(decode_pieces(pieces)) == reference, f"seed {seed}"


@pytest.mark.parametrize("case", NEGATIVE, ids=[c["name"] for c in NEGATIVE])
def test_negative_vector_refused(case: dict[str, Any]) -> None:
    expected = NEGATIVE_ERRORS.get(case["name"], CodecError)
    with pytest.raises(CodecError) as info:
        decode_all(bytes.fromhex(case["hex"]))
    assert isinstance(info.value, expected)
    if case["name"] in NEGATIVE_ERRORS:
        assert type(info.value) is expected


@pytest.mark.parametrize("case", NEGATIVE, ids=[c["name"] for c in NEGATIVE])
def test_negative_vector_refused_in_one_byte_pieces(case: dict[str, Any]) -> None:
    data = bytes.fromhex(case["hex"])
    with pytest.raises(CodecError):
        decode_pieces(data[i : i + 1] for i in range(len(data)))


# ---------------------------------------------------------------- docs/kiro-protocol.md §5.4


def test_doc_vector_decodes() -> None:
    data = bytes.fromhex(DOC_HEX)
    assert len(data) == 124
    assert struct.unpack(">III", data[:12]) == (0x7C, 0x5C, 0x3BDDCF78)
    assert data[-4:] == bytes.fromhex("b02babdc")
    [frame] = decode_all(data)
    assert frame == Frame(
        headers={
            ":event-type": "assistantResponseEvent",
            ":content-type": "application/json",
            ":message-type": "event",
        },
        payload=b'{"content":"Hi"}',
    )
    assert (frame.message_type, frame.event_type, frame.exception_type) == (
        "event",
        "assistantResponseEvent",
        None,
    )


def test_doc_vector_reproduced_by_encoder() -> None:
    assert encode_event("assistantResponseEvent", b'{"content":"Hi"}').hex() == DOC_HEX


def test_exception_frame_accessors() -> None:
    [frame] = decode_all(encode_exception("ThrottlingException", b'{"message":"slow"}'))
    assert frame.message_type == "exception"
    assert frame.exception_type == "ThrottlingException"
    assert frame.event_type is None


# --------------------------------------------------------------------------- multibyte splits

TEXTS = ["Hello, ", "世界", "🎉🎊", "Grüße ", "漢字と絵文字👩‍💻", "", "x" * 3000, "末尾🙂"]


def _text_stream() -> tuple[bytes, list[Frame]]:
    frames = [
        Frame(
            headers={
                ":event-type": "assistantResponseEvent",
                ":content-type": "application/json",
                ":message-type": "event",
            },
            payload=json.dumps({"content": t}, ensure_ascii=False).encode("utf-8"),
        )
        for t in TEXTS
    ]
    data = b"".join(encode_event("assistantResponseEvent", f.payload) for f in frames)
    return data, frames


@pytest.mark.parametrize("max_piece", [1, 2, 3, 5, 50, 500, 5000], ids=lambda n: f"max{n}")
def test_multibyte_stream_random_pieces(max_piece: int) -> None:
    data, expected = _text_stream()
    for seed in range(40):
        frames = decode_pieces(random_pieces(data, random.Random(seed), max_piece))
        assert frames == expected, f"seed {seed}"
        text = "".join(json.loads(f.payload)["content"] for f in frames)
        assert text == "".join(TEXTS)


def test_split_inside_every_multibyte_character() -> None:
    data, expected = _text_stream()
    emoji = "🎉".encode()
    start = data.index(emoji)
    for cut in range(start, start + len(emoji) + 1):
        assert decode_pieces([data[:cut], data[cut:]]) == expected, f"split at {cut}"


def test_feed_accepts_bytearray_and_memoryview() -> None:
    data, expected = _text_stream()
    decoder = EventStreamDecoder()
    frames = decoder.feed(bytearray(data[:100]))
    frames += decoder.feed(memoryview(data)[100:])
    decoder.finish()
    assert frames == expected


def test_pending_bytes_tracks_the_partial_frame() -> None:
    frame = encode_event("assistantResponseEvent", b'{"content":"abc"}')
    decoder = EventStreamDecoder()
    assert decoder.pending_bytes == 0
    assert decoder.feed(frame + frame[:5]) != []
    assert decoder.pending_bytes == 5
    assert decoder.feed(frame[5:20]) == []
    assert decoder.pending_bytes == 20
    assert len(decoder.feed(frame[20:])) == 1
    assert decoder.pending_bytes == 0
    assert decoder.feed(b"") == []
    decoder.finish()


# --------------------------------------------------------------------------- corruption

GOOD = encode_event("assistantResponseEvent", b'{"content":"fine"}')
HEADERS_LEN = struct.unpack(">I", GOOD[4:8])[0]
PAYLOAD_AT = 12 + HEADERS_LEN
VALID_HEADER = raw_string(":message-type", "event")

# (id, bytes, decoder limits, exact exception)
CORRUPT: list[tuple[str, bytes, dict[str, int], type[CodecError]]] = [
    ("prelude-crc-bit", flip_bit(GOOD, 10, 3), {}, PreludeCRCError),
    ("total-length-bit", flip_bit(GOOD, 3, 1), {}, PreludeCRCError),
    ("total-length-high-bit", flip_bit(GOOD, 0, 7), {}, PreludeCRCError),
    ("headers-length-bit", flip_bit(GOOD, 7, 0), {}, PreludeCRCError),
    ("header-name-bit", flip_bit(GOOD, 14, 2), {}, MessageCRCError),
    ("header-value-bit", flip_bit(GOOD, PAYLOAD_AT - 2, 5), {}, MessageCRCError),
    ("payload-bit", flip_bit(GOOD, PAYLOAD_AT + 3, 6), {}, MessageCRCError),
    ("message-crc-bit", flip_bit(GOOD, len(GOOD) - 1, 0), {}, MessageCRCError),
    ("total-below-16", prelude(15, 0) + b"\0" * 3, {}, InvalidFrameError),
    ("total-zero", prelude(0, 0), {}, InvalidFrameError),
    ("headers-beyond-total", prelude(40, 25) + b"\0" * 28, {}, InvalidFrameError),
    ("headers-length-huge", prelude(40, 0xFFFFFFFF), {}, InvalidFrameError),
    ("message-1GiB", prelude(1 << 30, 10), {}, FrameTooLargeError),
    ("message-max-u32", prelude(0xFFFFFFFF, 0), {}, FrameTooLargeError),
    ("message-over-limit", GOOD, {"max_message_bytes": len(GOOD) - 1}, FrameTooLargeError),
    ("headers-128KiB+1", prelude(200 * 1024, 128 * 1024 + 1), {}, FrameTooLargeError),
    ("headers-over-limit", GOOD, {"max_headers_bytes": HEADERS_LEN - 1}, FrameTooLargeError),
    (
        "duplicate-header",
        raw_frame(raw_string(":event-type", "a") + raw_string(":event-type", "a"), b"{}"),
        {},
        InvalidHeaderError,
    ),
    ("unknown-type-10", raw_frame(raw_header(b"x", 10), b""), {}, InvalidHeaderError),
    ("unknown-type-255", raw_frame(raw_header(b"x", 255, b"\0" * 8), b""), {}, InvalidHeaderError),
    ("name-past-block", raw_frame(b"\x09:msg", b"{}"), {}, InvalidHeaderError),
    ("type-byte-missing", raw_frame(VALID_HEADER + b"\x01x", b""), {}, InvalidHeaderError),
    (
        "string-past-block",
        raw_frame(raw_header(b"s", 7, b"\x00\x09abc"), b""),
        {},
        InvalidHeaderError,
    ),
    ("string-length-cut", raw_frame(raw_header(b"s", 7, b"\x00"), b""), {}, InvalidHeaderError),
    (
        "bytes-past-block",
        raw_frame(raw_header(b"b", 6, b"\xff\xffab"), b""),
        {},
        InvalidHeaderError,
    ),
    ("short-cut", raw_frame(raw_header(b"h", 3, b"\x01"), b""), {}, InvalidHeaderError),
    ("integer-cut", raw_frame(raw_header(b"i", 4, b"\x01\x02\x03"), b""), {}, InvalidHeaderError),
    ("long-cut", raw_frame(raw_header(b"l", 5, b"\x00" * 7), b""), {}, InvalidHeaderError),
    ("timestamp-cut", raw_frame(raw_header(b"t", 8, b"\x00" * 4), b""), {}, InvalidHeaderError),
    ("uuid-cut", raw_frame(raw_header(b"u", 9, b"\x00" * 15), b""), {}, InvalidHeaderError),
    (
        "timestamp-out-of-range",
        raw_frame(raw_header(b"t", 8, struct.pack(">q", 2**62)), b""),
        {},
        InvalidHeaderError,
    ),
    (
        "string-bad-utf8",
        raw_frame(raw_header(b"s", 7, b"\x00\x02\xc3\x28"), b""),
        {},
        InvalidHeaderError,
    ),
    (
        "string-lone-surrogate",
        raw_frame(raw_header(b"s", 7, b"\x00\x03\xed\xa0\x80"), b""),
        {},
        InvalidHeaderError,
    ),
    ("name-bad-utf8", raw_frame(raw_header(b"\xff\xfe", 0), b""), {}, InvalidHeaderError),
    ("good-then-bad", GOOD + flip_bit(GOOD, PAYLOAD_AT, 0), {}, MessageCRCError),
]


@pytest.mark.parametrize(
    ("data", "limits", "error"), [c[1:] for c in CORRUPT], ids=[c[0] for c in CORRUPT]
)
def test_corruption_refused(data: bytes, limits: dict[str, int], error: type[CodecError]) -> None:
    decoder = EventStreamDecoder(**limits)
    with pytest.raises(CodecError) as info:
        decoder.feed(data)
    assert type(info.value) is error


@pytest.mark.parametrize(
    ("data", "limits", "error"), [c[1:] for c in CORRUPT], ids=[c[0] for c in CORRUPT]
)
def test_corruption_refused_in_small_pieces(
    data: bytes, limits: dict[str, int], error: type[CodecError]
) -> None:
    rng = random.Random(len(data))
    with pytest.raises(CodecError) as info:
        decode_pieces(random_pieces(data, rng, 3), **limits)
    assert type(info.value) is error


@pytest.mark.parametrize(
    ("data", "limits", "error"), [c[1:] for c in CORRUPT], ids=[c[0] for c in CORRUPT]
)
def test_decoder_unusable_after_error(
    data: bytes, limits: dict[str, int], error: type[CodecError]
) -> None:
    decoder = EventStreamDecoder(**limits)
    with pytest.raises(error):
        decoder.feed(data)
    for _ in range(2):
        with pytest.raises(DecoderClosedError):
            decoder.feed(GOOD)
    with pytest.raises(DecoderClosedError):
        decoder.finish()
    assert decoder.pending_bytes == 0


@pytest.mark.parametrize(
    "total",
    [1 << 30, 0xFFFFFFFF, 24 * 1024 * 1024 + 1],
    ids=["1GiB", "4GiB", "24MiB+1"],
)
def test_oversize_refused_from_the_prelude_alone(total: int) -> None:
    decoder = EventStreamDecoder()
    assert decoder.feed(prelude(total, 0)[:11]) == []
    with pytest.raises(FrameTooLargeError):
        decoder.feed(prelude(total, 0)[11:])  # the 12th byte: refused before any payload


def test_limits_are_inclusive() -> None:
    frames = decode_pieces([GOOD], max_message_bytes=len(GOOD), max_headers_bytes=HEADERS_LEN)
    assert len(frames) == 1


def test_default_limits_accept_a_large_frame() -> None:
    payload = b"x" * (16 * 1024 * 1024)
    headers_block = raw_header(b"big", 6, struct.pack(">H", 0xFFFF) + b"y" * 0xFFFF)
    data = raw_frame(headers_block + raw_string("n", "v"), payload)
    [frame] = decode_pieces(random_pieces(data, random.Random(1), 1 << 20))
    assert frame.payload == payload
    assert frame.headers == {"big": b"y" * 0xFFFF, "n": "v"}


TRUNCATION_CUTS = [
    1,
    4,
    11,
    12,
    13,
    PAYLOAD_AT - 1,
    PAYLOAD_AT,
    PAYLOAD_AT + 1,
    len(GOOD) - 4,
    len(GOOD) - 1,
]


@pytest.mark.parametrize("cut", TRUNCATION_CUTS, ids=lambda c: f"cut{c}")
@pytest.mark.parametrize("frames_before", [0, 2], ids=["first", "third"])
def test_truncated_stream_fails_at_finish(cut: int, frames_before: int) -> None:
    decoder = EventStreamDecoder()
    decoded = decoder.feed(GOOD * frames_before + GOOD[:cut])
    assert len(decoded) == frames_before
    assert decoder.pending_bytes == cut
    with pytest.raises(TruncatedStreamError):
        decoder.finish()
    with pytest.raises(DecoderClosedError):
        decoder.feed(GOOD[cut:])
    with pytest.raises(DecoderClosedError):
        decoder.finish()


def test_clean_finish_is_idempotent_and_closes_feeding() -> None:
    decoder = EventStreamDecoder()
    assert len(decoder.feed(GOOD)) == 1
    decoder.finish()
    decoder.finish()
    with pytest.raises(DecoderClosedError):
        decoder.feed(GOOD)


def test_empty_stream_is_clean() -> None:
    assert decode_all(b"") == []


# --------------------------------------------------------------------------- round trips

U = uuid.UUID("0f8fad5b-d9cb-469f-a165-70867728950e")
WHEN = datetime(2026, 1, 1, 12, 30, 45, 123000, tzinfo=UTC)

# (id, header as given to encode_frame, decoded value, wire type)
ROUND_TRIP: list[tuple[str, HeaderValue | TypedHeader, HeaderValue, HeaderType]] = [
    ("bool-true", True, True, HeaderType.BOOL_TRUE),
    ("bool-false", False, False, HeaderType.BOOL_FALSE),
    ("byte-min", TypedHeader(HeaderType.BYTE, -128), -128, HeaderType.BYTE),
    ("byte-max", TypedHeader(HeaderType.BYTE, 127), 127, HeaderType.BYTE),
    ("short-min", TypedHeader(HeaderType.SHORT, -32768), -32768, HeaderType.SHORT),
    ("short-max", TypedHeader(HeaderType.SHORT, 32767), 32767, HeaderType.SHORT),
    ("int-min", TypedHeader(HeaderType.INTEGER, -(2**31)), -(2**31), HeaderType.INTEGER),
    ("int-inferred", 2**31 - 1, 2**31 - 1, HeaderType.INTEGER),
    ("long-inferred", 2**31, 2**31, HeaderType.LONG),
    ("long-min", TypedHeader(HeaderType.LONG, -(2**63)), -(2**63), HeaderType.LONG),
    ("long-max", TypedHeader(HeaderType.LONG, 2**63 - 1), 2**63 - 1, HeaderType.LONG),
    ("bytes-empty", b"", b"", HeaderType.BYTE_ARRAY),
    ("bytes-binary", bytes(range(256)), bytes(range(256)), HeaderType.BYTE_ARRAY),
    ("bytes-max", b"\xaa" * 0xFFFF, b"\xaa" * 0xFFFF, HeaderType.BYTE_ARRAY),
    ("string-empty", "", "", HeaderType.STRING),
    ("string-cjk-emoji", "汉字🎉 Grüße", "汉字🎉 Grüße", HeaderType.STRING),
    ("string-max", "s" * 0xFFFF, "s" * 0xFFFF, HeaderType.STRING),
    ("timestamp-datetime", WHEN, WHEN, HeaderType.TIMESTAMP),
    (
        "timestamp-ms-int",
        TypedHeader(HeaderType.TIMESTAMP, 1767225600123),
        EPOCH + timedelta(milliseconds=1767225600123),
        HeaderType.TIMESTAMP,
    ),
    (
        "timestamp-before-epoch",
        TypedHeader(HeaderType.TIMESTAMP, -1),
        EPOCH - timedelta(milliseconds=1),
        HeaderType.TIMESTAMP,
    ),
    (
        "timestamp-odd-ms",
        datetime(2025, 3, 4, 5, 6, 7, 999000, tzinfo=UTC),
        datetime(2025, 3, 4, 5, 6, 7, 999000, tzinfo=UTC),
        HeaderType.TIMESTAMP,
    ),
    ("uuid", U, U, HeaderType.UUID),
]

# Without the two 64 KiB values, so that all the rest fit in one 128 KiB headers block.
SMALL_ROUND_TRIP = [c for c in ROUND_TRIP if c[0] not in ("bytes-max", "string-max")]


@pytest.mark.parametrize(
    ("given", "value", "htype"), [c[1:] for c in ROUND_TRIP], ids=[c[0] for c in ROUND_TRIP]
)
def test_header_round_trip(
    given: HeaderValue | TypedHeader, value: HeaderValue, htype: HeaderType
) -> None:
    data = encode_frame([(":message-type", "event"), ("h", given)], b"{}")
    [frame] = decode_pieces(random_pieces(data, random.Random(7), 5))
    got = frame.headers["h"]
    assert type(got) is type(value)
    assert got == value
    assert frame.header_types == {":message-type": HeaderType.STRING, "h": htype}
    if isinstance(got, datetime):
        assert got.tzinfo is not None and got.utcoffset() == timedelta(0)


def test_all_ten_types_in_one_frame() -> None:
    cases = SMALL_ROUND_TRIP
    headers = [(f"h{i}", c[1]) for i, c in enumerate(cases)]
    [frame] = decode_all(encode_frame(headers, "ペイロード".encode()))
    assert frame.headers == {f"h{i}": c[2] for i, c in enumerate(cases)}
    assert set(frame.header_types.values()) == set(HeaderType)
    assert frame.payload.decode() == "ペイロード"


def _botocore_view(value: HeaderValue) -> object:
    """How botocore represents a decoded header value (timestamps as ms, uuids as bytes)."""
    if isinstance(value, datetime):
        return (value - EPOCH) // timedelta(milliseconds=1)
    if isinstance(value, uuid.UUID):
        return value.bytes
    return value


BOTOCORE_FRAMES: list[tuple[str, list[tuple[str, HeaderValue | TypedHeader]], bytes]] = [
    (
        "kiro-event",
        [
            (":event-type", "assistantResponseEvent"),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        b'{"content":"Hi"}',
    ),
    (
        "exception",
        [(":exception-type", "ThrottlingException"), (":message-type", "exception")],
        b'{"message":"slow"}',
    ),
    ("empty", [], b""),
    ("headers-only", [(":message-type", "event"), (":event-type", "dryRunSucceedEvent")], b""),
    ("multibyte", [("名前", "値🎉")], "汉字🎉".encode()),
    ("all-types", [(f"h{i}", c[1]) for i, c in enumerate(SMALL_ROUND_TRIP)], b"{}"),
    ("big-payload", [(":message-type", "event")], bytes(range(256)) * 1000),
]


@pytest.mark.parametrize(
    ("headers", "payload"), [c[1:] for c in BOTOCORE_FRAMES], ids=[c[0] for c in BOTOCORE_FRAMES]
)
def test_botocore_reads_what_we_encode(
    headers: list[tuple[str, HeaderValue | TypedHeader]], payload: bytes
) -> None:
    eventstream = pytest.importorskip("botocore.eventstream")
    data = encode_frame(headers, payload)
    buffer = eventstream.EventStreamBuffer()
    buffer.add_data(data)
    [message] = list(buffer)
    [ours] = decode_all(data)
    assert message.payload == payload == ours.payload
    assert message.headers == {k: _botocore_view(v) for k, v in ours.headers.items()}
    assert list(message.headers) == [name for name, _ in headers]


def test_botocore_agrees_on_the_stream_vector() -> None:
    eventstream = pytest.importorskip("botocore.eventstream")
    buffer = eventstream.EventStreamBuffer()
    buffer.add_data(STREAM_BYTES)
    theirs = [(dict(m.headers), m.payload) for m in buffer]
    assert frame_summary(decode_all(STREAM_BYTES)) == theirs


# --------------------------------------------------------------------------- properties


def _random_header(rng: random.Random) -> HeaderValue | TypedHeader:
    kind = rng.randrange(10)
    ints = {2: 7, 3: 15, 4: 31, 5: 63}
    if kind in ints:
        bits = ints[kind]
        return TypedHeader(HeaderType(kind), rng.randint(-(2**bits), 2**bits - 1))
    if kind == 6:
        return rng.randbytes(rng.randrange(40))
    if kind == 7:
        return "".join(rng.choice("aZ0 é汉🎉") for _ in range(rng.randrange(20)))
    if kind == 8:
        return EPOCH + timedelta(milliseconds=rng.randint(-(10**12), 10**13))
    if kind == 9:
        return uuid.UUID(int=rng.getrandbits(128))
    return kind == 0


def _random_frame(rng: random.Random) -> tuple[bytes, Frame]:
    headers = [
        (f"n{i}-{'é' * rng.randrange(3)}", _random_header(rng)) for i in range(rng.randrange(6))
    ]
    payload = "".join(rng.choice('{}"ab汉字🎉\\') for _ in range(rng.randrange(80))).encode()
    values = {name: h.value if isinstance(h, TypedHeader) else h for name, h in headers}
    return encode_frame(headers, payload), Frame(headers=values, payload=payload)


@pytest.mark.parametrize("seed", range(40))
def test_property_random_frames_random_pieces(seed: int) -> None:
    rng = random.Random(seed)
    built = [_random_frame(rng) for _ in range(rng.randint(1, 25))]
    data = b"".join(raw for raw, _ in built)
    frames = decode_pieces(random_pieces(data, rng, rng.choice([1, 4, 32, 512, len(data)])))
    assert frames == [frame for _, frame in built]


def test_frames_do_not_share_mutable_headers() -> None:
    first, second = decode_all(GOOD * 2)
    first.headers[":event-type"] = "tampered"
    assert second.headers[":event-type"] == "assistantResponseEvent"
    [third] = decode_all(GOOD)
    assert third.headers[":event-type"] == "assistantResponseEvent"


def test_many_distinct_header_blocks() -> None:
    # More distinct blocks than any cache would hold, interleaved with a repeated one.
    built = []
    for i in range(300):
        headers = [(":message-type", "event"), ("id", uuid.UUID(int=i)), ("pad", "p" * (i * 7))]
        built.append(
            (
                encode_frame(headers, b"%d" % i),
                {":message-type": "event", "id": uuid.UUID(int=i), "pad": "p" * (i * 7)},
            )
        )
        built.append((GOOD, decode_all(GOOD)[0].headers))
    frames = decode_pieces(random_pieces(b"".join(raw for raw, _ in built), random.Random(3), 700))
    assert [f.headers for f in frames] == [headers for _, headers in built]


def test_decoded_frame_equals_hand_built_frame_and_keeps_types_apart() -> None:
    [frame] = decode_all(GOOD)
    plain = Frame(headers=dict(frame.headers), payload=frame.payload)
    assert frame == plain
    assert plain.header_types == {}
    assert dict(frame.header_types) == dict.fromkeys(frame.headers, HeaderType.STRING)
    with pytest.raises(TypeError):
        frame.header_types[":event-type"] = HeaderType.UUID  # type: ignore[index]
