"""AWS event-stream encoding (application/vnd.amazon.eventstream): the header value types and
the frame encoder (`encode_frame`, `encode_event`, `encode_exception`). The decoder is in
`codec`, which re-exports all of this.

Frame layout (docs/kiro-protocol.md §5.2): total_length u32 | headers_length u32 | prelude_crc u32 |
headers | payload | message_crc u32, big-endian, CRC-32 (zlib). Header value types 0..9 (§5.3).
"""

from __future__ import annotations

import binascii
import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from typing import TypeAlias

__all__ = [
    "EPOCH",
    "HeaderType",
    "HeaderValue",
    "TypedHeader",
    "encode_event",
    "encode_exception",
    "encode_frame",
]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


class HeaderType(IntEnum):
    BOOL_TRUE = 0
    BOOL_FALSE = 1
    BYTE = 2
    SHORT = 3
    INTEGER = 4
    LONG = 5
    BYTE_ARRAY = 6
    STRING = 7
    TIMESTAMP = 8
    UUID = 9


HeaderValue: TypeAlias = bool | int | bytes | str | datetime | uuid.UUID


@dataclass(frozen=True, slots=True)
class TypedHeader:
    """A header value with an explicit wire type (needed for the integer widths)."""

    type: HeaderType
    value: HeaderValue


def _infer_type(value: HeaderValue) -> HeaderType:
    if isinstance(value, bool):
        return HeaderType.BOOL_TRUE if value else HeaderType.BOOL_FALSE
    if isinstance(value, str):
        return HeaderType.STRING
    if isinstance(value, bytes):
        return HeaderType.BYTE_ARRAY
    if isinstance(value, uuid.UUID):
        return HeaderType.UUID
    if isinstance(value, datetime):
        return HeaderType.TIMESTAMP
    return HeaderType.INTEGER if -(2**31) <= value < 2**31 else HeaderType.LONG


def _epoch_ms(value: datetime) -> int:
    """Exact milliseconds since the epoch (naive datetimes are local time, as `.timestamp()`)."""
    aware = value if value.tzinfo is not None else value.astimezone()
    return (aware - EPOCH) // _ONE_MS


def _encode_value(htype: HeaderType, value: HeaderValue) -> bytes:
    if htype in (HeaderType.BOOL_TRUE, HeaderType.BOOL_FALSE):
        return b""
    if htype in (HeaderType.STRING, HeaderType.BYTE_ARRAY):
        raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)  # type: ignore[arg-type]
        return struct.pack(">H", len(raw)) + raw
    if htype is HeaderType.UUID:
        assert isinstance(value, uuid.UUID)
        return value.bytes
    if htype is HeaderType.TIMESTAMP:
        ms = _epoch_ms(value) if isinstance(value, datetime) else int(value)
        return struct.pack(">q", ms)
    fmt = {HeaderType.BYTE: ">b", HeaderType.SHORT: ">h", HeaderType.INTEGER: ">i"}.get(htype, ">q")
    return struct.pack(fmt, int(value))  # type: ignore[arg-type]


def encode_frame(headers: Sequence[tuple[str, HeaderValue | TypedHeader]], payload: bytes) -> bytes:
    """Encode one message. Header order is kept as given."""
    hblock = bytearray()
    for name, raw in headers:
        typed = raw if isinstance(raw, TypedHeader) else TypedHeader(_infer_type(raw), raw)
        bname = name.encode("utf-8")
        hblock += bytes([len(bname)]) + bname + bytes([typed.type])
        hblock += _encode_value(typed.type, typed.value)
    total = 16 + len(hblock) + len(payload)
    prelude = struct.pack(">II", total, len(hblock))
    prelude_crc = binascii.crc32(prelude)
    body = prelude + struct.pack(">I", prelude_crc) + bytes(hblock) + payload
    return body + struct.pack(">I", binascii.crc32(body))


def encode_event(event_type: str, payload: bytes) -> bytes:
    """An `event` message with the three headers Kiro sends, in Kiro's order."""
    return encode_frame(
        [
            (":event-type", event_type),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        payload,
    )


def encode_exception(exception_type: str, payload: bytes) -> bytes:
    """An `exception` message (a mid-stream failure), e.g. ThrottlingException."""
    return encode_frame(
        [
            (":exception-type", exception_type),
            (":content-type", "application/json"),
            (":message-type", "exception"),
        ],
        payload,
    )
