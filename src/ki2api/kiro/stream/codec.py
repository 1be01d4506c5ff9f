"""AWS event-stream codec (application/vnd.amazon.eventstream).

Frame layout (docs/kiro-protocol.md §5.2): total_length u32 | headers_length u32 | prelude_crc u32 |
headers | payload | message_crc u32, big-endian, CRC-32 (zlib). Header value types 0..9 (§5.3).

Encoder: `encode_frame`, `encode_event`, `encode_exception`.
Decoder: `EventStreamDecoder` (feed bytes in any pieces, get whole `Frame`s; `finish()` at end of
stream). It fails closed: any corruption raises a `CodecError` and every later call raises
`DecoderClosedError`; there is no byte-skipping resync.
"""

from __future__ import annotations

import binascii
import struct
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from types import MappingProxyType
from typing import TypeAlias

__all__ = [
    "CodecError",
    "DecoderClosedError",
    "EventStreamDecoder",
    "Frame",
    "FrameTooLargeError",
    "HeaderType",
    "HeaderValue",
    "InvalidFrameError",
    "InvalidHeaderError",
    "MessageCRCError",
    "PreludeCRCError",
    "TruncatedStreamError",
    "TypedHeader",
    "decode_all",
    "encode_event",
    "encode_exception",
    "encode_frame",
]

DEFAULT_MAX_MESSAGE_BYTES = 24 * 1024 * 1024
DEFAULT_MAX_HEADERS_BYTES = 128 * 1024
_PRELUDE = 12
_OVERHEAD = 16  # prelude + message CRC
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
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


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded event-stream message.

    `header_types` holds the wire type of each decoded header (empty for hand-built frames);
    it is not part of equality, so a decoded frame equals `Frame(headers=..., payload=...)`.
    `message_type` (":message-type", "event" when absent or not a string) and `event_type`
    (":event-type" when a string) are worked out from the headers when the frame is built (the
    decoder takes them from its cache of parsed headers blocks).
    """

    headers: dict[str, HeaderValue]
    payload: bytes
    header_types: Mapping[str, HeaderType] = field(default_factory=dict, compare=False, repr=False)
    message_type: str = field(init=False, compare=False, repr=False)
    event_type: str | None = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        message_type, event_type = _kinds(self.headers)
        _SET_MESSAGE_TYPE(self, message_type)
        _SET_EVENT_TYPE(self, event_type)

    @property
    def exception_type(self) -> str | None:
        v = self.headers.get(":exception-type")
        return v if isinstance(v, str) else None


_SET_MESSAGE_TYPE = Frame.__dict__["message_type"].__set__
_SET_EVENT_TYPE = Frame.__dict__["event_type"].__set__


def _kinds(headers: Mapping[str, HeaderValue]) -> tuple[str, str | None]:
    """(message type, event type) of a headers mapping, as `Frame` exposes them."""
    message_type = headers.get(":message-type", "event")
    event_type = headers.get(":event-type")
    return (
        message_type if isinstance(message_type, str) else "event",
        event_type if isinstance(event_type, str) else None,
    )


# --------------------------------------------------------------------------- errors


class CodecError(Exception):
    """Base of every decoding failure (maps to `ErrorKind.UPSTREAM_PROTOCOL`)."""


class PreludeCRCError(CodecError):
    """The CRC of the 8 length bytes does not match: the lengths cannot be trusted."""


class MessageCRCError(CodecError):
    """The CRC over the whole message does not match."""


class InvalidFrameError(CodecError):
    """The prelude lengths are inconsistent (total < 16, headers longer than the frame)."""


class FrameTooLargeError(InvalidFrameError):
    """The prelude declares a message or headers block above the configured limits."""


class InvalidHeaderError(CodecError):
    """Malformed headers block: overrun, unknown type, duplicate name, bad UTF-8, bad value."""


class TruncatedStreamError(CodecError):
    """The stream ended in the middle of a frame."""


class DecoderClosedError(CodecError):
    """The decoder failed (or finished) earlier and accepts no more input."""


# --------------------------------------------------------------------------- encoder


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
    return (aware - _EPOCH) // _ONE_MS


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


# --------------------------------------------------------------------------- header parsing

# A value parser takes the headers block and the offset of the value; returns (value, next offset).
_ValueParser: TypeAlias = Callable[[bytes, int], tuple[HeaderValue, int]]


def _take(block: bytes, off: int, size: int) -> int:
    end = off + size
    if end > len(block):
        raise InvalidHeaderError(f"header value at offset {off} runs past the headers block")
    return end


def _utf8(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidHeaderError(f"{what} is not valid UTF-8") from None


def _constant(value: bool) -> _ValueParser:
    return lambda block, off: (value, off)


def _fixed(fmt: str) -> _ValueParser:
    unpack, size = struct.Struct(fmt).unpack_from, struct.calcsize(fmt)

    def parse(block: bytes, off: int) -> tuple[HeaderValue, int]:
        end = _take(block, off, size)
        value: int = unpack(block, off)[0]
        return value, end

    return parse


def _sized(block: bytes, off: int) -> tuple[bytes, int]:
    start = _take(block, off, 2)
    end = _take(block, start, int.from_bytes(block[off:start], "big"))
    return block[start:end], end


def _string(block: bytes, off: int) -> tuple[HeaderValue, int]:
    raw, end = _sized(block, off)
    return _utf8(raw, "string header value"), end


def _timestamp(block: bytes, off: int) -> tuple[HeaderValue, int]:
    end = _take(block, off, 8)
    ms: int = struct.unpack_from(">q", block, off)[0]
    try:
        return _EPOCH + timedelta(milliseconds=ms), end
    except OverflowError:
        raise InvalidHeaderError("timestamp header out of range") from None


def _uuid(block: bytes, off: int) -> tuple[HeaderValue, int]:
    end = _take(block, off, 16)
    return uuid.UUID(bytes=block[off:end]), end


# Indexed by the wire type byte (HeaderType value).
_VALUE_PARSERS: tuple[_ValueParser, ...] = (
    _constant(True),
    _constant(False),
    _fixed(">b"),
    _fixed(">h"),
    _fixed(">i"),
    _fixed(">q"),
    _sized,
    _string,
    _timestamp,
    _uuid,
)
_HEADER_TYPES = tuple(HeaderType)

# A parsed headers block: (name -> value, name -> wire type, message type, event type).
_Headers: TypeAlias = tuple[dict[str, HeaderValue], Mapping[str, HeaderType], str, str | None]


def _parse_headers(block: bytes) -> _Headers:
    """Parse a whole headers block into (name -> value, name -> wire type).

    Dispatches on the type byte through `_VALUE_PARSERS`. Refuses: a name, type byte or value
    running past the block, an unknown type byte, a duplicate name, invalid UTF-8.
    """
    values: dict[str, HeaderValue] = {}
    types: dict[str, HeaderType] = {}
    off, end = 0, len(block)
    while off < end:
        name_end = off + 1 + block[off]
        if name_end >= end:  # the name and the type byte must both fit
            raise InvalidHeaderError(f"header at offset {off} runs past the headers block")
        name = _utf8(block[off + 1 : name_end], "header name")
        type_byte = block[name_end]
        if type_byte >= len(_VALUE_PARSERS):
            raise InvalidHeaderError(f"unknown header value type {type_byte} for {name!r}")
        if name in values:
            raise InvalidHeaderError(f"duplicate header {name!r}")
        values[name], off = _VALUE_PARSERS[type_byte](block, name_end + 1)
        types[name] = _HEADER_TYPES[type_byte]
    # the types are shared by every frame with this block: read-only
    return (values, MappingProxyType(types), *_kinds(values))


# --------------------------------------------------------------------------- decoder

_U32X3 = struct.Struct(">III")
_U32 = struct.Struct(">I")
_CACHE_MAX_ENTRIES = 64
_CACHE_MAX_BLOCK = 1024
# Frame is frozen and slotted: the decoder fills the slots with their descriptors' __set__.
_FRAME_FILL = (
    object.__new__,
    Frame.__dict__["headers"].__set__,
    Frame.__dict__["payload"].__set__,
    Frame.__dict__["header_types"].__set__,
    _SET_MESSAGE_TYPE,
    _SET_EVENT_TYPE,
)
_NO_HEADERS: _Headers = ({}, MappingProxyType({}), "event", None)


class EventStreamDecoder:
    """Incremental decoder: `feed` pieces of any size, get the frames each piece completes.

    Pending bytes accumulate in a bytearray. Nothing is decoded until `_need` bytes are pending
    (12 for a prelude, then the frame's declared total), so a tiny piece costs one append. When
    enough bytes are in, the pending bytes are snapshotted once to `bytes`, a read offset walks
    the snapshot cutting out every complete frame, and the consumed prefix is deleted from the
    bytearray in one step (never per frame).
    """

    def __init__(
        self,
        *,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        max_headers_bytes: int = DEFAULT_MAX_HEADERS_BYTES,
    ) -> None:
        self._max_message = max_message_bytes
        self._max_headers = max_headers_bytes
        self._buf = bytearray()
        self._need = _PRELUDE  # pending bytes needed before decoding can progress
        self._closed: str | None = None  # why the decoder accepts no more input
        # Kiro repeats a handful of identical headers blocks: parse each one once.
        self._header_cache: dict[bytes, _Headers] = {}
        self._last_block = b""
        self._last_headers = _NO_HEADERS  # the empty block's headers

    @property
    def pending_bytes(self) -> int:
        """Bytes received but not yet part of a complete frame."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        """Add a piece of the stream; return every frame it completes, in order."""
        if self._closed is not None:
            raise DecoderClosedError(f"decoder is closed ({self._closed})")
        buf = self._buf
        if buf or type(data) is not bytes or len(data) < self._need:
            buf += data
            if len(buf) < self._need:
                return []
            data = bytes(buf)
            buf.clear()
        try:
            frames, consumed = self._drain(data)
        except Exception as exc:
            self._fail(type(exc).__name__)
            raise
        if consumed < len(data):
            buf += data[consumed:]  # at most one partial frame
        return frames

    def finish(self) -> None:
        """Declare the end of the stream; raise `TruncatedStreamError` if a frame is incomplete."""
        if self._closed == "finished":
            return
        if self._closed is not None:
            raise DecoderClosedError(f"decoder is closed ({self._closed})")
        pending = self.pending_bytes
        if pending:
            self._fail("TruncatedStreamError")
            raise TruncatedStreamError(f"stream ended with {pending} bytes of an incomplete frame")
        self._closed = "finished"

    def _fail(self, reason: str) -> None:
        self._closed = reason
        self._buf = bytearray()
        self._header_cache = {}

    def _drain(self, chunk: bytes) -> tuple[list[Frame], int]:
        """Cut the complete frames out of `chunk` (the pending bytes): (frames, bytes consumed).

        The hot path, kept flat: one loop, locals only, helpers called only on a miss or error.
        A headers block equal to the previous frame's (Kiro repeats a few) is recognised in
        place, without cutting it out, and its parsed headers are reused.
        """
        frames: list[Frame] = []
        pos, end, need = 0, len(chunk), _PRELUDE
        max_message, max_headers = self._max_message, self._max_headers
        last_block, last_headers = self._last_block, self._last_headers
        last_len = len(last_block)
        crc32, prelude, u32, starts = (
            binascii.crc32,
            _U32X3.unpack_from,
            _U32.unpack_from,
            chunk.startswith,
        )
        new, set_headers, set_payload, set_types, set_message, set_event = _FRAME_FILL
        while end - pos >= _PRELUDE:
            total, headers_len, prelude_crc = prelude(chunk, pos)
            if crc32(chunk[pos : pos + 8]) != prelude_crc:
                raise PreludeCRCError(f"prelude CRC mismatch at stream offset {pos}")
            if not (
                _OVERHEAD <= total <= max_message
                and headers_len <= total - _OVERHEAD
                and headers_len <= max_headers
            ):
                raise _length_error(total, headers_len, max_message, max_headers)
            if end - pos < total:
                need = total
                break
            crc_at = pos + total - 4
            if crc32(chunk[pos + 8 : crc_at], prelude_crc) != u32(chunk, crc_at)[0]:
                raise MessageCRCError(f"message CRC mismatch at stream offset {pos}")
            payload_at = pos + _PRELUDE + headers_len
            if headers_len != last_len or not starts(last_block, pos + _PRELUDE):
                last_block = chunk[pos + _PRELUDE : payload_at]
                last_len, last_headers = headers_len, self._headers(last_block)
            frame = new(Frame)  # Frame is frozen: fill its slots directly (2x faster)
            set_headers(frame, last_headers[0].copy())
            set_payload(frame, chunk[payload_at:crc_at])
            set_types(frame, last_headers[1])
            set_message(frame, last_headers[2])
            set_event(frame, last_headers[3])
            frames.append(frame)
            pos += total
        self._need = need
        self._last_block, self._last_headers = last_block, last_headers
        return frames, pos

    def _headers(self, block: bytes) -> _Headers:
        parsed = self._header_cache.get(block)
        if parsed is None:
            parsed = _parse_headers(block)
            if len(block) <= _CACHE_MAX_BLOCK:
                if len(self._header_cache) >= _CACHE_MAX_ENTRIES:
                    self._header_cache.clear()
                self._header_cache[block] = parsed
        return parsed


def _length_error(total: int, headers_len: int, max_message: int, max_headers: int) -> CodecError:
    """The error for a prelude whose lengths failed the bounds check (checked in this order)."""
    if total < _OVERHEAD:
        return InvalidFrameError(f"total length {total} is below the 16-byte minimum")
    if headers_len > total - _OVERHEAD:
        return InvalidFrameError(f"headers length {headers_len} exceeds the frame ({total})")
    if total > max_message:
        return FrameTooLargeError(f"message of {total} bytes over the {max_message} limit")
    return FrameTooLargeError(f"headers of {headers_len} bytes over the {max_headers} limit")


def decode_all(data: bytes) -> list[Frame]:
    """Decode a complete stream; raise `TruncatedStreamError` if it ends mid-frame."""
    decoder = EventStreamDecoder()
    frames = decoder.feed(data)
    decoder.finish()
    return frames
