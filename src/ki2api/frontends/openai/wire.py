"""Pydantic models of the OpenAI Chat Completions request, and `parse_chat_request`.

Validation is strict on JSON types (a string is never coerced to a number or a bool, an int is
accepted where a float is expected) and lenient on shape: unknown fields are accepted everywhere
and ignored (`model_extra` lists them). Values that we accept but cannot honour (audio and file
parts, `n > 1`, remote image URLs) are typed here so that `to_core` can answer with a precise 400.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.core.stream_limits import MAX_STOP_CHARS
from ki2api.frontends.jsonbody import parse_json_object
from ki2api.frontends.validation import describe_validation_error

__all__ = [
    "AssistantMessage",
    "ChatCompletionRequest",
    "ChatMessage",
    "DeveloperMessage",
    "FilePart",
    "FunctionCall",
    "FunctionDef",
    "ImageURL",
    "ImageURLPart",
    "InputAudioPart",
    "NamedToolChoice",
    "RefusalPart",
    "ResponseFormat",
    "StreamOptions",
    "SystemMessage",
    "TextContentPart",
    "Tool",
    "ToolCall",
    "ToolMessage",
    "UserMessage",
    "parse_chat_request",
]


class WireModel(BaseModel):
    """Strict JSON types, unknown keys kept (and ignored)."""

    model_config = ConfigDict(extra="allow", strict=True)


# --- content parts ---------------------------------------------------------------------------


class TextContentPart(WireModel):
    type: Literal["text"]
    text: str


class ImageURL(WireModel):
    url: str
    detail: str | None = None


class ImageURLPart(WireModel):
    type: Literal["image_url"]
    image_url: ImageURL | str  # some older clients send the URL as a bare string

    @property
    def url(self) -> str:
        return self.image_url if isinstance(self.image_url, str) else self.image_url.url


class InputAudioPart(WireModel):
    type: Literal["input_audio"]
    input_audio: dict[str, Any]


class FilePart(WireModel):
    type: Literal["file"]
    file: dict[str, Any]


class RefusalPart(WireModel):
    type: Literal["refusal"]
    refusal: str


UserPart: TypeAlias = Annotated[
    TextContentPart | ImageURLPart | InputAudioPart | FilePart, Field(discriminator="type")
]
AssistantPart: TypeAlias = Annotated[TextContentPart | RefusalPart, Field(discriminator="type")]

# --- messages --------------------------------------------------------------------------------


class SystemMessage(WireModel):
    role: Literal["system"]
    content: str | list[TextContentPart]
    name: str | None = None


class DeveloperMessage(WireModel):
    role: Literal["developer"]
    content: str | list[TextContentPart]
    name: str | None = None


class UserMessage(WireModel):
    role: Literal["user"]
    content: str | list[UserPart]
    name: str | None = None


class FunctionCall(WireModel):
    name: Annotated[str, Field(min_length=1)]
    arguments: str


class ToolCall(WireModel):
    id: Annotated[str, Field(min_length=1)]  # pairs the call with its tool message
    type: Literal["function"] = "function"
    function: FunctionCall


class AssistantMessage(WireModel):
    role: Literal["assistant"]
    content: str | list[AssistantPart] | None = None
    refusal: str | None = None
    tool_calls: list[ToolCall] | None = None
    name: str | None = None


class ToolMessage(WireModel):
    role: Literal["tool"]
    tool_call_id: Annotated[str, Field(min_length=1)]
    content: str | list[TextContentPart]


ChatMessage: TypeAlias = Annotated[
    SystemMessage | DeveloperMessage | UserMessage | AssistantMessage | ToolMessage,
    Field(discriminator="role"),
]

# --- tools and options -----------------------------------------------------------------------


class FunctionDef(WireModel):
    name: str = Field(min_length=1)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(WireModel):
    type: Literal["function"] = "function"
    function: FunctionDef


class FunctionName(WireModel):
    name: str


class NamedToolChoice(WireModel):
    type: Literal["function"]
    function: FunctionName


class StreamOptions(WireModel):
    include_usage: bool | None = None


class ResponseFormat(WireModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None


Probability: TypeAlias = Annotated[float, Field(ge=0, le=1)]
PositiveInt: TypeAlias = Annotated[int, Field(ge=1)]


StopString = Annotated[str, Field(max_length=MAX_STOP_CHARS)]


class ChatCompletionRequest(WireModel):
    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    max_tokens: PositiveInt | None = None
    max_completion_tokens: PositiveInt | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Probability | None = None
    n: PositiveInt | None = None
    stop: StopString | Annotated[list[StopString], Field(max_length=4)] | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    reasoning_effort: str | None = None
    user: str | None = None
    seed: int | None = None
    metadata: dict[str, Any] | None = None
    logit_bias: dict[str, float] | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    response_format: ResponseFormat | None = None
    modalities: list[str] | None = None

    def ignored_fields(self) -> list[str]:
        """Names of the top-level fields we do not know (accepted and ignored), for logging."""
        return sorted(self.model_extra or {})


def parse_chat_request(body: bytes) -> ChatCompletionRequest:
    """Parse and validate a request body; every failure is an INVALID_REQUEST `GatewayError`."""
    data = parse_json_object(body)
    try:
        return ChatCompletionRequest.model_validate(data)
    except ValidationError as exc:
        message, param = describe_validation_error(exc, data)
        raise GatewayError(ErrorKind.INVALID_REQUEST, message, param=param) from None
