"""The neutral conversation: what every frontend translates into and every backend reads.

Frozen dataclasses only; no pydantic and nothing of ours is imported here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

__all__ = [
    "Conversation",
    "GenParams",
    "ImagePart",
    "Message",
    "Part",
    "RemoteImagePart",
    "Role",
    "TextPart",
    "ThinkingConfig",
    "ThinkingPart",
    "ToolChoice",
    "ToolResultPart",
    "ToolSpec",
    "ToolUsePart",
]

Role: TypeAlias = Literal["user", "assistant"]
JSONObject: TypeAlias = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class TextPart:
    text: str


@dataclass(frozen=True, slots=True)
class ImagePart:
    """An inline image: `media_type` like ``image/png``; `data_b64` plain base64 (no data: URL)."""

    media_type: str
    data_b64: str


@dataclass(frozen=True, slots=True)
class RemoteImagePart(ImagePart):
    """An image the client gave by URL, not fetched yet. Until the gateway fetches it (one step
    of the chat pipeline, `images/remote.py`) it stands for one image: a tiny placeholder in
    `media_type`/`data_b64`, so sizes and token counts treat it as an image. `param` says where
    the client put it (for an error about it)."""

    url: str = ""
    param: str | None = None

    @classmethod
    def placeholder(cls, url: str, *, param: str | None) -> RemoteImagePart:
        return cls(media_type="image/png", data_b64="AAAA", url=url, param=param)


@dataclass(frozen=True, slots=True)
class ThinkingPart:
    text: str
    signature: str | None = None


@dataclass(frozen=True, slots=True)
class ToolUsePart:
    """A tool call made by the assistant. `input` is the parsed JSON object of its arguments."""

    id: str
    name: str
    input: JSONObject


@dataclass(frozen=True, slots=True)
class ToolResultPart:
    """The result of a tool call, sent back by the user side."""

    tool_use_id: str
    content: tuple[TextPart | ImagePart, ...]
    is_error: bool = False


Part: TypeAlias = TextPart | ImagePart | ThinkingPart | ToolUsePart | ToolResultPart


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    parts: tuple[Part, ...]

    def text(self) -> str:
        """The concatenated text parts (no separator), as a convenience for translators."""
        return "".join(p.text for p in self.parts if isinstance(p, TextPart))


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    description: str
    input_schema: JSONObject


@dataclass(frozen=True, slots=True)
class ToolChoice:
    """`auto` (default), `none`, `required` (some tool), `tool` (the one named)."""

    mode: Literal["auto", "none", "required", "tool"] = "auto"
    name: str | None = None
    parallel: bool = True


@dataclass(frozen=True, slots=True)
class ThinkingConfig:
    """Extended thinking: `budget_tokens` for the enabled kind, `effort` for the adaptive kind."""

    kind: Literal["enabled", "adaptive"] = "enabled"
    budget_tokens: int | None = None
    effort: str | None = None


@dataclass(frozen=True, slots=True)
class GenParams:
    """Sampling and length settings. Kiro honours none of them natively (see the README)."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    thinking: ThinkingConfig | None = None


@dataclass(frozen=True, slots=True)
class Conversation:
    """One request, neutral of dialect.

    `model_id` is the *upstream* (Kiro) model id, already resolved by the frontend through
    `core.models.ModelCatalogue`. `system` holds the system/developer texts in order.
    """

    model_id: str
    messages: tuple[Message, ...]
    system: tuple[str, ...] = ()
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: ToolChoice = field(default_factory=ToolChoice)
    params: GenParams = field(default_factory=GenParams)
    conversation_id: str | None = None
    # the native fields the model takes ("thinking", "effort", "max_tokens": its
    # additionalModelRequestFieldsSchema, core.models.ModelInfo.native); empty: none known
    native: frozenset[str] = frozenset()
