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
        return str(uuid.uuid5(_NAMESPACE, "client:" + conv.conversation_id))
    return str(uuid.uuid5(_NAMESPACE, "start:" + start_digest(conv, with_model=False)))
