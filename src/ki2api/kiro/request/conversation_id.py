"""Which conversation a request belongs to: the `conversationId` sent to Kiro and the digest the
pool's sticky key uses. Pure.

Real clients keep one `conversationId` per conversation across its turns (docs/kiro-protocol.md
§3.4), so the id is derived from what stays the same on every turn, never drawn per request:

1. the id the frontend found in the request (`Conversation.conversation_id`: Claude Code's
   session, from Anthropic `metadata.user_id`, see `frontends/anthropic/to_core.py`);
2. otherwise the conversation's start: the system texts and the first user message (its text
   parts, and its images' media types and sizes, never their bytes). Two conversations that
   open with the same system prompt and the same first message share an id; nothing more
   distinctive is known on the first turn.

The id is a UUID (uuid5 of either source, so a client's own identifier is never sent upstream
as is). The model is left out: switching models keeps the conversation. The pool's sticky key
(`pool_policy.conversation_key`) uses the same sources; it adds the model to the start digest.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import orjson

from ki2api.core.messages import Conversation, ImagePart, TextPart

__all__ = ["kiro_conversation_id", "start_digest"]

_NAMESPACE = uuid.UUID("5d6f3c0e-5a54-4f0e-9a0b-6b3d2c1e4f70")  # ki2api conversations
_NAMESPACE_BYTES = _NAMESPACE.bytes


def start_digest(conv: Conversation, *, with_model: bool) -> str:
    """A short hex digest of what every turn of a conversation repeats: the system texts and
    the first user message (the model too when `with_model`)."""
    first = next((m for m in conv.messages if m.role == "user"), None)
    parts = first.parts if first is not None else ()
    texts = [p.text for p in parts if isinstance(p, TextPart)]
    images = [[p.media_type, len(p.data_b64)] for p in parts if isinstance(p, ImagePart)]
    head: list[Any] = [conv.model_id] if with_model else []
    blob = orjson.dumps([*head, list(conv.system), texts, images])
    return hashlib.sha256(blob).hexdigest()[:24]


def kiro_conversation_id(conv: Conversation) -> str:
    """The `conversationId` for every request of this conversation (a UUID string)."""
    if conv.conversation_id:
        return _uuid5("client:" + conv.conversation_id)
    return _uuid5("start:" + start_digest(conv, with_model=False))


def _uuid5(name: str) -> str:
    """`str(uuid.uuid5(_NAMESPACE, name))`, the same string at a third of the cost (no UUID
    objects): on every request."""
    raw = bytearray(hashlib.sha1(_NAMESPACE_BYTES + name.encode()).digest()[:16])
    raw[6] = (raw[6] & 0x0F) | 0x50  # version 5
    raw[8] = (raw[8] & 0x3F) | 0x80  # the RFC 4122 variant
    x = raw.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"
