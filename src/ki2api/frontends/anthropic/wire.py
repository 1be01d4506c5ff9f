"""Pydantic models of the Anthropic Messages request (docs/api-compat.md §B.2, §B.3) and the
parsers.

Strict on JSON types (a string is never coerced to a number), lenient on shape: unknown fields
are accepted everywhere and ignored (`cache_control`, `citations`, `metadata`,
`context_management`, `service_tier`, `container`, ...); `output_config.format`,
`output_format` and `thread` are read by `output_format.py`. Content blocks are discriminated by
`type`; server-tool blocks (`server_tool_use`, `*_tool_result`, `mcp_*`) are accepted as
`ServerToolBlock`, and a tool with a `type` other than `custom` is a `ServerTool` (dropped from
the upstream request by `to_core`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.core.stream_limits import MAX_STOP_CHARS, MAX_STOP_SEQUENCES
from ki2api.frontends.jsonbody import parse_json_object
from ki2api.frontends.validation import describe_validation_error

__all__ = [
    "Base64Source",
    "ContentBlock",
    "ContentSource",
    "CountTokensRequest",
    "CustomTool",
    "DocumentBlock",
    "FileSource",
    "ImageBlock",
    "InputMessage",
    "MessagesBase",
    "MessagesRequest",
    "PlainTextSource",
    "RedactedThinkingBlock",
    "ServerTool",
    "ServerToolBlock",
    "TextBlock",
    "ThinkingBlock",
    "ThinkingConfigWire",
    "ToolChoiceWire",
    "ToolResultBlock",
    "ToolUseBlock",
    "URLSource",
    "parse_count_tokens_request",
    "parse_messages_request",
]


class WireModel(BaseModel):
    """Strict JSON types, unknown keys kept (and ignored)."""

    model_config = ConfigDict(extra="allow", strict=True)


NonEmpty: TypeAlias = Annotated[str, Field(min_length=1)]

# --- sources ---------------------------------------------------------------------------------


class Base64Source(WireModel):
    type: Literal["base64"]
    media_type: str
    data: str


class URLSource(WireModel):
    type: Literal["url"]
    url: str


class FileSource(WireModel):
    type: Literal["file"]
    file_id: str


class PlainTextSource(WireModel):
    type: Literal["text"]
    data: str
    media_type: str | None = None


class TextBlock(WireModel):
    type: Literal["text"]
    text: str


class ImageBlock(WireModel):
    type: Literal["image"]
    source: Annotated[Base64Source | URLSource | FileSource, Field(discriminator="type")]


class ContentSource(WireModel):
    type: Literal["content"]
    content: str | list[Annotated[TextBlock | ImageBlock, Field(discriminator="type")]]


DocumentSource: TypeAlias = Annotated[
    Base64Source | URLSource | FileSource | PlainTextSource | ContentSource,
    Field(discriminator="type"),
]

# --- content blocks --------------------------------------------------------------------------


class DocumentBlock(WireModel):
    type: Literal["document"]
    source: DocumentSource
    title: str | None = None
    context: str | None = None


class ToolUseBlock(WireModel):
    type: Literal["tool_use"]
    id: NonEmpty
    name: NonEmpty
    input: dict[str, Any]


class ToolResultBlock(WireModel):
    type: Literal["tool_result"]
    tool_use_id: NonEmpty
    content: (
        str
        | list[Annotated[TextBlock | ImageBlock | DocumentBlock, Field(discriminator="type")]]
        | None
    ) = None
    is_error: bool | None = None


class ThinkingBlock(WireModel):
    type: Literal["thinking"]
    thinking: str
    signature: str | None = None


class RedactedThinkingBlock(WireModel):
    type: Literal["redacted_thinking"]
    data: str


class ServerToolBlock(WireModel):
    """`server_tool_use`, `web_search_tool_result` and the other server-tool blocks."""

    type: str
    id: str | None = None
    name: str | None = None
    input: Any = None
    tool_use_id: str | None = None
    content: Any = None


_SERVER_BLOCK_PREFIXES = ("server_tool_use", "mcp_tool_use", "mcp_tool_result")


def _block_tag(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    if not isinstance(kind, str):
        return "missing"
    if kind.endswith("_tool_result") and kind != "tool_result" or kind in _SERVER_BLOCK_PREFIXES:
        return "server"
    return kind


ContentBlock: TypeAlias = Annotated[
    Annotated[TextBlock, Tag("text")]
    | Annotated[ImageBlock, Tag("image")]
    | Annotated[DocumentBlock, Tag("document")]
    | Annotated[ToolUseBlock, Tag("tool_use")]
    | Annotated[ToolResultBlock, Tag("tool_result")]
    | Annotated[ThinkingBlock, Tag("thinking")]
    | Annotated[RedactedThinkingBlock, Tag("redacted_thinking")]
    | Annotated[ServerToolBlock, Tag("server")],
    Discriminator(
        _block_tag,
        custom_error_type="invalid_block_type",
        custom_error_message=(
            "unknown content block `type`: expected text, image, document, tool_use, "
            "tool_result, thinking, redacted_thinking or a server tool block"
        ),
    ),
]


class InputMessage(WireModel):
    role: Literal["user", "assistant", "system"]
    content: str | list[ContentBlock]


# --- tools and options -----------------------------------------------------------------------


class CustomTool(WireModel):
    name: NonEmpty
    description: str | None = None
    input_schema: dict[str, Any] = Field(default_factory=dict)
    type: Literal["custom"] | None = None


class ServerTool(WireModel):
    """A tool Anthropic runs itself (`web_search_20250305`, `code_execution_*`, ...)."""

    type: str
    name: str | None = None


def _tool_tag(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return "custom" if kind in (None, "custom") else "server"


ToolWire: TypeAlias = Annotated[
    Annotated[CustomTool, Tag("custom")] | Annotated[ServerTool, Tag("server")],
    Discriminator(_tool_tag),
]


class ToolChoiceWire(WireModel):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class ThinkingConfigWire(WireModel):
    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: int | None = None
    display: str | None = None


class MessagesBase(WireModel):
    """What a Messages request and a count_tokens request share."""

    model: NonEmpty
    messages: list[InputMessage] = Field(min_length=1)
    system: str | list[TextBlock] | None = None
    tools: list[ToolWire] | None = None
    tool_choice: ToolChoiceWire | None = None
    thinking: ThinkingConfigWire | None = None
    output_config: dict[str, Any] | None = None
    output_format: Any = None  # the older structured outputs (output_format.py)


class MessagesRequest(MessagesBase):
    max_tokens: Annotated[int, Field(ge=0)]
    stream: bool | None = False
    stop_sequences: (
        Annotated[
            list[Annotated[str, Field(max_length=MAX_STOP_CHARS)]],
            Field(max_length=MAX_STOP_SEQUENCES),
        ]
        | None
    ) = None
    temperature: Annotated[float, Field(ge=0, le=1)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    top_k: Annotated[int, Field(ge=0)] | None = None
    metadata: dict[str, Any] | None = None
    thread: Any = None  # the message-threads beta: refused (output_format.py)


class CountTokensRequest(MessagesBase):
    pass


def _parse(model: type[WireModel], body: bytes) -> Any:
    data = parse_json_object(body)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        message, param = describe_validation_error(exc, data)
        raise GatewayError(ErrorKind.INVALID_REQUEST, message, param=param) from None


def parse_messages_request(body: bytes) -> MessagesRequest:
    """Parse and validate; every failure is an INVALID_REQUEST `GatewayError`."""
    req: MessagesRequest = _parse(MessagesRequest, body)
    return req


def parse_count_tokens_request(body: bytes) -> CountTokensRequest:
    req: CountTokensRequest = _parse(CountTokensRequest, body)
    return req
