"""Pydantic models of the OpenAI Responses API request (`POST /v1/responses`,
docs/api-compat.md §R), and `parse_responses_request`.

As for Chat Completions (`wire.py`): strict JSON types, unknown keys kept and ignored. Input
items are told apart by `type` (a bare `{"role", "content"}` is a message, as the API allows);
item types the gateway cannot take (`item_reference`, other hosted tools' calls) are typed
loosely here so that `responses_to_core` answers them with a precise 400. Tools stay plain
objects: a hosted tool's shape is not ours to check, only its `type`, which `responses_to_core`
refuses by name.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter, ValidationError

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.frontends.jsonbody import parse_json_object
from ki2api.frontends.validation import describe_validation_error

__all__ = [
    "FunctionCallItem",
    "FunctionCallOutputItem",
    "InputFile",
    "InputImage",
    "InputItem",
    "InputMessage",
    "InputText",
    "OtherItem",
    "OutputText",
    "ReasoningItem",
    "ReasoningOptions",
    "Refusal",
    "ResponsesRequest",
    "TextFormat",
    "TextOptions",
    "WebSearchCallItem",
    "dump_items",
    "parse_items",
    "parse_responses_request",
]


class WireModel(BaseModel):
    """Strict JSON types, unknown keys kept (and ignored)."""

    model_config = ConfigDict(extra="allow", strict=True)


# --- content parts ---------------------------------------------------------------------------


class InputText(WireModel):
    type: Literal["input_text"]
    text: str


class InputImage(WireModel):
    type: Literal["input_image"]
    image_url: str | None = None
    file_id: str | None = None
    detail: str | None = None


class InputFile(WireModel):
    type: Literal["input_file"]


class OutputText(WireModel):
    type: Literal["output_text"]
    text: str


class Refusal(WireModel):
    type: Literal["refusal"]
    refusal: str


ContentPart: TypeAlias = Annotated[
    InputText | InputImage | InputFile | OutputText | Refusal, Field(discriminator="type")
]
OutputPart: TypeAlias = Annotated[InputText | InputImage | InputFile, Field(discriminator="type")]

# --- input items -----------------------------------------------------------------------------


class InputMessage(WireModel):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[ContentPart]


class FunctionCallItem(WireModel):
    type: Literal["function_call"]
    call_id: Annotated[str, Field(min_length=1)]
    name: Annotated[str, Field(min_length=1)]
    arguments: str


class FunctionCallOutputItem(WireModel):
    type: Literal["function_call_output"]
    call_id: Annotated[str, Field(min_length=1)]
    output: str | list[OutputPart]


class SummaryText(WireModel):
    type: Literal["summary_text"] = "summary_text"
    text: str


class ReasoningText(WireModel):
    type: Literal["reasoning_text"] = "reasoning_text"
    text: str


class ReasoningItem(WireModel):
    type: Literal["reasoning"]
    summary: list[SummaryText] = Field(default_factory=list)
    content: list[ReasoningText] | None = None
    encrypted_content: str | None = None


class WebSearchCallItem(WireModel):
    """A web search the gateway ran (an earlier response's output item, passed back)."""

    type: Literal["web_search_call"]
    id: Annotated[str, Field(min_length=1)]
    status: str | None = None
    action: dict[str, Any] | None = None


class OtherItem(WireModel):
    """Any other item type (`item_reference`, a hosted tool's call): refused by to_core."""

    type: str


_KNOWN_ITEMS = frozenset(
    {"message", "function_call", "function_call_output", "reasoning", "web_search_call"}
)


def _item_tag(value: Any) -> str:
    if isinstance(value, dict):
        kind = value.get("type", "message")
    else:
        kind = getattr(value, "type", "message")
    return kind if isinstance(kind, str) and kind in _KNOWN_ITEMS else "other"


InputItem: TypeAlias = Annotated[
    Annotated[InputMessage, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")]
    | Annotated[ReasoningItem, Tag("reasoning")]
    | Annotated[WebSearchCallItem, Tag("web_search_call")]
    | Annotated[OtherItem, Tag("other")],
    Discriminator(_item_tag),
]

# --- options ---------------------------------------------------------------------------------


class TextFormat(WireModel):
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    description: str | None = None
    strict: bool | None = None


class TextOptions(WireModel):
    format: TextFormat | None = None
    verbosity: str | None = None


class ReasoningOptions(WireModel):
    effort: str | None = None
    summary: str | None = None
    generate_summary: str | None = None


class NamedFunction(WireModel):
    type: Literal["function"]
    name: Annotated[str, Field(min_length=1)]


class OtherToolChoice(WireModel):
    type: str


ToolChoiceValue: TypeAlias = (
    Literal["none", "auto", "required"]
    | Annotated[
        Annotated[NamedFunction, Tag("function")] | Annotated[OtherToolChoice, Tag("other")],
        Discriminator(lambda v: "function" if _type_of(v) == "function" else "other"),
    ]
)


def _type_of(value: Any) -> Any:
    return value.get("type") if isinstance(value, dict) else getattr(value, "type", None)


class ResponsesRequest(WireModel):
    model: str = Field(min_length=1)
    input: str | list[InputItem] | None = None
    instructions: str | None = None
    stream: bool | None = False
    store: bool | None = True
    previous_response_id: Annotated[str, Field(min_length=1)] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: ToolChoiceValue | None = None
    parallel_tool_calls: bool | None = None
    reasoning: ReasoningOptions | None = None
    text: TextOptions | None = None
    max_output_tokens: Annotated[int, Field(ge=1)] | None = None
    metadata: dict[str, str] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    include: list[str] | None = None
    background: bool | None = None
    user: str | None = None


def parse_responses_request(body: bytes) -> ResponsesRequest:
    """Parse and validate a request body; every failure is an INVALID_REQUEST `GatewayError`."""
    data = parse_json_object(body)
    try:
        return ResponsesRequest.model_validate(data)
    except ValidationError as exc:
        message, param = describe_validation_error(exc, data)
        raise GatewayError(ErrorKind.INVALID_REQUEST, message, param=param) from None


_ITEMS: TypeAdapter[list[InputItem]] = TypeAdapter(list[InputItem])


def parse_items(raw: Any) -> list[InputItem]:
    """Stored items (a continuation's conversation) back into models; a damaged record is an
    INTERNAL error (the gateway wrote it)."""
    try:
        return _ITEMS.validate_python(raw)
    except ValidationError:
        raise GatewayError(ErrorKind.INTERNAL, "a stored response could not be read") from None


def dump_items(req: ResponsesRequest) -> list[dict[str, Any]]:
    """This request's input as plain JSON items (a string input is one user message)."""
    if req.input is None:
        return []
    if isinstance(req.input, str):
        return [{"type": "message", "role": "user", "content": req.input}]
    return [item.model_dump(mode="json", by_alias=True, exclude_unset=True) for item in req.input]
