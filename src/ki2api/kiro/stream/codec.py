"""AWS event-stream codec (application/vnd.amazon.eventstream).

Frame layout (docs/kiro-protocol.md §5.2): total_length u32 | headers_length u32 | prelude_crc u32 |
headers | payload | message_crc u32, big-endian, CRC-32 (zlib). Header value types 0..9 (§5.3).

Encoder: `encode_frame`, `encode_event`, `encode_exception` (from `frame_encoder`, with the header
value types). Decoder: `EventStreamDecoder` (feed bytes in any pieces, get whole `Frame`s, or raw
frames with `feed_raw`; `finish()` at end of stream). It fails closed: any corruption raises a
`CodecError` and every later call raises `DecoderClosedError`; there is no byte-skipping resync.
"""

from __future__ import annotations

import binascii
import struct
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType
from typing import NamedTuple, TypeAlias

from ki2api.kiro.stream.frame_encoder import (
    EPOCH,
    HeaderType,
    HeaderValue,
    TypedHeader,
    encode_event,
    encode_exception,
    encode_frame,
)

__all__ = [
    "CodecError",
    "DecoderClosedError",
    "EventStreamDecoder",
    "Frame",
    "FrameTooLargeError",
    "HeaderBlock",
    "HeaderType",
    "HeaderValue",
    "InvalidFrameError",
    "InvalidHeaderError",
    "MessageCRCError",
    "PreludeCRCError",
    "RawFrame",
    "TruncatedStreamError",
    "TypedHeader",
    "decode_all",
    "encode_event",
    "encode_exception",
    "encode_frame",
    "frame_of",
]

DEFAULT_MAX_MESSAGE_BYTES = 24 * 1024 * 1024
DEFAULT_MAX_HEADERS_BYTES = 128 * 1024
_PRELUDE = 12
_OVERHEAD = 16  # prelude + message CRC


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded event-stream message.

    `header_types` holds the wire type of each decoded header (empty for hand-built frames);
    it is not part of equality, so a decoded frame equals `Frame(headers=..., payload=...)`.
    `message_type` (":message-type", "event" when absent or not a string) and `event_type`
    (":event-type" when a string) are read from the headers when asked (the decoder's hot path,
    `feed_raw`, takes them from its cache of parsed headers blocks instead).
    """

    headers: dict[str, HeaderValue]
    payload: bytes
    header_types: Mapping[str, HeaderType] = field(default_factory=dict, compare=False, repr=False)

    @property
    def message_type(self) -> str:
        return _kinds(self.headers)[0]

    @property
    def event_type(self) -> str | None:
        return _kinds(self.headers)[1]

    @property
    def exception_type(self) -> str | None:
        v = self.headers.get(":exception-type")
        return v if isinstance(v, str) else None


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
        return EPOCH + timedelta(milliseconds=ms), end
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


class HeaderBlock(NamedTuple):
    """A parsed headers block, shared by every frame that carries the same bytes."""

    # read-only (a `Frame` gets a copy); a dict when made from a hand-built Frame
    values: MappingProxyType[str, HeaderValue] | dict[str, HeaderValue]
    types: Mapping[str, HeaderType]
    message_type: str
    event_type: str | None


# A frame as `EventStreamDecoder.feed_raw` gives it: (its parsed headers, its payload).
RawFrame: TypeAlias = tuple[HeaderBlock, bytes]
_Headers: TypeAlias = HeaderBlock


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
    return HeaderBlock(MappingProxyType(values), MappingProxyType(types), *_kinds(values))


# --------------------------------------------------------------------------- decoder

_U32X3 = struct.Struct(">III")
_U32 = struct.Struct(">I")
# Kiro repeats a handful of identical headers blocks in every answer: each is parsed once per
# process. A parsed block is read-only (a `Frame` gets a copy of its values), so every decoder
# shares this cache (of blocks that parsed, and of bounded size).
_CACHE_MAX_ENTRIES = 64
_CACHE_MAX_BLOCK = 1024
_HEADER_CACHE: dict[bytes, _Headers] = {}
# Frame is frozen and slotted: the decoder fills the slots with their descriptors' __set__.
_FRAME_FILL = (
    object.__new__,
    Frame.__dict__["headers"].__set__,
    Frame.__dict__["payload"].__set__,
    Frame.__dict__["header_types"].__set__,
)
_NO_HEADERS = HeaderBlock(MappingProxyType({}), MappingProxyType({}), "event", None)


def frame_of(raw: RawFrame) -> Frame:
    """The `Frame` of a raw frame (what `EventStreamDecoder.feed` gives for it)."""
    head, payload = raw
    new, set_headers, set_payload, set_types = _FRAME_FILL
    frame = new(Frame)  # Frame is frozen: fill its slots directly (2x faster)
    set_headers(frame, head.values.copy())  # the proxy's copy(): 8x dict(proxy)
    set_payload(frame, payload)
    set_types(frame, head.types)
    return frame


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
        self._last_block = b""
        self._last_headers = _NO_HEADERS  # the empty block's headers

    @property
    def pending_bytes(self) -> int:
        """Bytes received but not yet part of a complete frame."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        """Add a piece of the stream; return every frame it completes, in order."""
        raws = self.feed_raw(data)
        if not raws:
            return []
        # `frame_of` for each, inline: a call per frame would cost as much as the rest
        new, set_headers, set_payload, set_types = _FRAME_FILL
        frames: list[Frame] = []
        append = frames.append
        for head, payload in raws:
            frame = new(Frame)
            set_headers(frame, head.values.copy())
            set_payload(frame, payload)
            set_types(frame, head.types)
            append(frame)
        return frames

    def feed_raw(self, data: bytes | bytearray | memoryview) -> list[RawFrame]:
        """`feed`, each frame as (its parsed headers, its payload): no `Frame` object built,
        for a caller that looks at most frames' types only (`frame_of` makes the `Frame`)."""
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

    def _drain(self, chunk: bytes) -> tuple[list[RawFrame], int]:
        """Cut the complete frames out of `chunk` (the pending bytes): (frames, bytes consumed).

        The hot path, kept flat: one loop, locals only, helpers called only on a miss or error.
        A headers block equal to the previous frame's (Kiro repeats a few) is recognised in
        place, without cutting it out, and its parsed headers are reused.
        """
        frames: list[RawFrame] = []
        pos, end, need = 0, len(chunk), _PRELUDE
        max_message, max_headers = self._max_message, self._max_headers
        last_block, last_headers = self._last_block, self._last_headers
        last_len = len(last_block)
        crc32, prelude, u32 = binascii.crc32, _U32X3.unpack_from, _U32.unpack_from
        starts, append = chunk.startswith, frames.append
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
            append((last_headers, chunk[payload_at:crc_at]))
            pos += total
        self._need = need
        self._last_block, self._last_headers = last_block, last_headers
        return frames, pos

    @staticmethod
    def _headers(block: bytes) -> _Headers:
        parsed = _HEADER_CACHE.get(block)
        if parsed is None:
            parsed = _parse_headers(block)  # raises on a bad block: only good ones are kept
            if len(block) <= _CACHE_MAX_BLOCK:
                if len(_HEADER_CACHE) >= _CACHE_MAX_ENTRIES:
                    _HEADER_CACHE.clear()
                _HEADER_CACHE[block] = parsed
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
