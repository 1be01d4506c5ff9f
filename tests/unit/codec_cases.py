"""Helpers for the codec tests: the vector fixture, hand-built frames, fragmentation.

The hand-built frames here are assembled from raw bytes with `zlib.crc32`, independently of
`ki2api.kiro.stream.codec.encode_frame`, so the decoder is not only checked against its own encoder.
"""

from __future__ import annotations

import json
import random
import struct
import uuid
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ki2api.kiro.stream.codec import EventStreamDecoder, Frame, HeaderType, HeaderValue

__all__ = [
    "EPOCH",
    "VECTORS",
    "ExpectedFrame",
    "decode_pieces",
    "expected_frame",
    "flip_bit",
    "prelude",
    "random_pieces",
    "raw_frame",
    "raw_header",
]

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "eventstream_vectors.json"
VECTORS: dict[str, Any] = json.loads(FIXTURE.read_text(encoding="utf-8"))
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class ExpectedFrame:
    """What a fixture frame must decode to: ordered (name, value, wire type), and the payload."""

    headers: tuple[tuple[str, HeaderValue, HeaderType], ...]
    payload: bytes

    @property
    def values(self) -> dict[str, HeaderValue]:
        return {name: value for name, value, _ in self.headers}

    @property
    def types(self) -> dict[str, HeaderType]:
        return {name: htype for name, _, htype in self.headers}


def _expected_value(spec: dict[str, Any], htype: HeaderType) -> HeaderValue:
    if "hex" in spec:
        raw = bytes.fromhex(spec["hex"])
        return uuid.UUID(bytes=raw) if htype is HeaderType.UUID else raw
    if htype is HeaderType.TIMESTAMP:
        return EPOCH + timedelta(milliseconds=spec["value"])
    value: HeaderValue = spec["value"]
    return value


def expected_frame(case: dict[str, Any]) -> ExpectedFrame:
    """Translate a fixture case ({headers: [{name, type, value|hex}], payload_utf8})."""
    headers = []
    for spec in case["headers"]:
        htype = HeaderType[spec["type"].upper()]
        headers.append((spec["name"], _expected_value(spec, htype), htype))
    return ExpectedFrame(tuple(headers), case["payload_utf8"].encode("utf-8"))


def prelude(total: int, headers_len: int) -> bytes:
    """A 12-byte prelude with a correct CRC, whatever the lengths claim."""
    head = struct.pack(">II", total, headers_len)
    return head + struct.pack(">I", zlib.crc32(head))


def raw_frame(header_block: bytes, payload: bytes) -> bytes:
    """Frame arbitrary (possibly invalid) header bytes and payload with correct CRCs."""
    body = prelude(16 + len(header_block) + len(payload), len(header_block))
    body += header_block + payload
    return body + struct.pack(">I", zlib.crc32(body))


def raw_header(name: bytes, type_byte: int, value: bytes = b"") -> bytes:
    """One header as bytes: u8 name length, name, type byte, raw value bytes."""
    return bytes([len(name)]) + name + bytes([type_byte]) + value


def raw_string(name: str, value: str) -> bytes:
    raw = value.encode("utf-8")
    return raw_header(name.encode("utf-8"), 7, struct.pack(">H", len(raw)) + raw)


def flip_bit(data: bytes, index: int, bit: int = 0) -> bytes:
    out = bytearray(data)
    out[index] ^= 1 << bit
    return bytes(out)


def random_pieces(data: bytes, rng: random.Random, max_piece: int) -> list[bytes]:
    """Cut `data` into pieces of random length in [1, max_piece] (empty pieces sprinkled in)."""
    pieces: list[bytes] = []
    pos = 0
    while pos < len(data):
        if rng.random() < 0.05:
            pieces.append(b"")
        size = rng.randint(1, max_piece)
        pieces.append(data[pos : pos + size])
        pos += size
    return pieces


def decode_pieces(pieces: Iterable[bytes], **limits: int) -> list[Frame]:
    """Feed every piece to one decoder, then `finish()`; return all frames in order."""
    decoder = EventStreamDecoder(**limits)
    frames: list[Frame] = []
    for piece in pieces:
        frames.extend(decoder.feed(piece))
    decoder.finish()
    return frames


def frame_summary(frames: Sequence[Frame]) -> list[tuple[dict[str, HeaderValue], bytes]]:
    return [(dict(f.headers), f.payload) for f in frames]
