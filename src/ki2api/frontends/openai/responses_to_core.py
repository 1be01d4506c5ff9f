"""OpenAI Responses request -> core `Conversation` (docs/api-compat.md §R.2, §R.3). Pure.

* The items are the whole conversation: a continuation's stored items first (`prior`: what
  `previous_response_id` named, its input and its output), then this request's `input`.
* `instructions` is the first system text; `system` / `developer` messages follow in order.
  A continuation does not inherit the previous response's `instructions` (as OpenAI).
* Assistant-side items in a row (`reasoning`, an assistant `message`, `function_call`s) make one
  assistant turn, its thinking first; a `reasoning` item's summary (or content) text is the
  thinking, its `encrypted_content` the signature. A `function_call_output` is a user turn with
  one tool result (the Kiro layer merges consecutive ones).
* `tools`: `function` tools become `ToolSpec`s; a `web_search` tool (any of `WEB_SEARCH_TYPES`)
  adds the gateway's search function (`responses_search`; not with `tool_choice: "none"`), which
  the route runs (`server/search_loop.py`); any other hosted tool is a 400 naming its type.
* A `web_search_call` item is the search function's call and its result (the text the model
  read, from `search_texts`, the stored response's; else the item's sources).
* `reasoning.effort` turns thinking on as Chat Completions' `reasoning_effort` does
  (`to_core.thinking_config`); `max_output_tokens` is the gateway-enforced `max_tokens`.
* `text.format` (`json_object` / `json_schema`) becomes a `JSONFormat` (`text_format`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.core.messages import (
    Conversation,
    GenParams,
    ImagePart,
    Message,
    Part,
    TextPart,
    ThinkingPart,
    ToolChoice,
    ToolResultPart,
    ToolSpec,
    ToolUsePart,
)
from ki2api.core.models import ModelInfo
from ki2api.frontends.json_output import (
    JSONFormat,
    json_object_format,
    json_schema_format,
    require_name,
)
from ki2api.frontends.openai.image_parts import image_part
from ki2api.frontends.openai.responses_search import (
    search_function_name,
    search_tool_spec,
    sources_text,
)
from ki2api.frontends.openai.responses_wire import (
    FunctionCallItem,
    FunctionCallOutputItem,
    InputFile,
    InputImage,
    InputItem,
    InputMessage,
    InputText,
    OutputText,
    ReasoningItem,
    Refusal,
    ResponsesRequest,
    WebSearchCallItem,
)
from ki2api.frontends.openai.to_core import thinking_config

__all__ = [
    "WEB_SEARCH_TYPES",
    "offers_search",
    "search_name",
    "text_format",
    "to_conversation",
    "web_search_tools",
]

WEB_SEARCH_TYPES = frozenset(
    {"web_search", "web_search_preview", "web_search_2025_08_26", "web_search_preview_2025_03_11"}
)
_FORMAT = "text.format"


def to_conversation(
    req: ResponsesRequest,
    model: ModelInfo,
    *,
    prior: Sequence[InputItem] = (),
    remote_images: bool = False,
    search_texts: Mapping[str, str] | None = None,
) -> Conversation:
    """Translate a validated request (after `prior`, a continuation's stored items;
    `search_texts`: the results text of its searches, by item id); unusable values raise
    INVALID_REQUEST with `param`."""
    _refuse_unsupported(req)
    system: list[str] = [req.instructions] if req.instructions else []
    items: list[tuple[str, InputItem]] = [("previous_response_id", it) for it in prior]
    items.extend((f"input.{i}", it) for i, it in enumerate(_input_items(req)))
    tools = _tools(req.tools or [])
    if offers_search(req):
        tools = (*tools, search_tool_spec(search_name(req)))
    searches = (search_name(req), search_texts or {})
    messages = _messages(items, system, remote_images, searches)
    if not items:
        raise _invalid("Missing required parameter: 'input' (no item to answer).", "input")
    return Conversation(
        model_id=model.kiro_id,
        messages=messages,
        system=tuple(system),
        tools=tools,
        tool_choice=_tool_choice(req, tools),
        params=GenParams(
            max_tokens=req.max_output_tokens,
            temperature=req.temperature,
            top_p=req.top_p,
            thinking=thinking_config(req.reasoning.effort if req.reasoning else None),
        ),
        native=model.native,
    )


def _input_items(req: ResponsesRequest) -> list[InputItem]:
    if req.input is None:
        return []
    if isinstance(req.input, str):
        return [InputMessage(role="user", content=req.input)]
    return list(req.input)


def _refuse_unsupported(req: ResponsesRequest) -> None:
    extra = req.model_extra or {}
    if req.background:
        raise _invalid("Background responses are not supported by this gateway.", "background")
    if extra.get("conversation") is not None:
        raise _invalid(
            "Conversations are not supported by this gateway: use previous_response_id or "
            "send the whole input.",
            "conversation",
        )
    if extra.get("prompt") is not None:
        raise _invalid("Prompt templates are not supported by this gateway.", "prompt")


def _messages(
    items: Sequence[tuple[str, InputItem]],
    system: list[str],
    remote: bool,
    searches: tuple[str, Mapping[str, str]],
) -> tuple[Message, ...]:
    out: list[Message] = []
    turn: list[Part] = []  # the assistant turn being gathered

    def flush() -> None:
        parts = sorted(turn, key=lambda p: not isinstance(p, ThinkingPart))
        if any(not isinstance(p, ThinkingPart) for p in parts):
            out.append(Message("assistant", tuple(parts)))
        turn.clear()

    for where, item in items:
        assistant = _assistant_side(item, where)
        if assistant is not None:
            turn.extend(assistant)
        elif isinstance(item, InputMessage) and item.role in ("system", "developer"):
            system.extend(_system_texts(item, where))
        elif isinstance(item, InputMessage):
            flush()
            out.append(Message("user", _user_parts(item, where, remote)))
        elif isinstance(item, FunctionCallOutputItem):
            flush()
            out.append(Message("user", (_tool_result(item, where, remote),)))
        elif isinstance(item, WebSearchCallItem):
            use, result = _search_pair(item, *searches)
            turn.append(use)
            flush()
            out.append(Message("user", (result,)))
        else:
            raise _invalid(
                f"Input items of type {item.type!r} are not supported by this gateway; send "
                "messages, function_call, function_call_output, reasoning and web_search_call "
                "items.",
                f"{where}.type" if where != "previous_response_id" else where,
            )
    flush()
    return tuple(out)


def _assistant_side(item: InputItem, where: str) -> list[Part] | None:
    """The parts of an assistant-side item (reasoning, function call, assistant message)."""
    if isinstance(item, ReasoningItem):
        return _thinking(item)
    if isinstance(item, FunctionCallItem):
        return [_tool_use(item, f"{where}.arguments")]
    if isinstance(item, InputMessage) and item.role == "assistant":
        return _assistant_texts(item)
    return None


def _thinking(item: ReasoningItem) -> list[Part]:
    texts = [s.text for s in item.summary] or [c.text for c in item.content or ()]
    text = "\n\n".join(t for t in texts if t)
    return [ThinkingPart(text, signature=item.encrypted_content)] if text else []


def _assistant_texts(item: InputMessage) -> list[Part]:
    if isinstance(item.content, str):
        return [TextPart(item.content)] if item.content else []
    texts = [p.refusal if isinstance(p, Refusal) else getattr(p, "text", "") for p in item.content]
    return [TextPart(t) for t in texts if t]


def _system_texts(item: InputMessage, where: str) -> list[str]:
    if isinstance(item.content, str):
        return [item.content] if item.content else []
    texts: list[str] = []
    for j, part in enumerate(item.content):
        if not isinstance(part, InputText | OutputText):
            raise _invalid(
                f"A {item.role} message takes text parts only.", f"{where}.content.{j}.type"
            )
        if part.text:
            texts.append(part.text)
    return texts


def _user_parts(item: InputMessage, where: str, remote: bool) -> tuple[Part, ...]:
    if isinstance(item.content, str):
        return (TextPart(item.content),) if item.content else ()
    parts: list[Part] = []
    for j, part in enumerate(item.content):
        found = _user_part(part, f"{where}.content.{j}", remote)
        if found is not None:
            parts.append(found)
    return tuple(parts)


def _user_part(part: Any, param: str, remote: bool) -> TextPart | ImagePart | None:
    if isinstance(part, InputText | OutputText):
        return TextPart(part.text) if part.text else None
    if isinstance(part, Refusal):
        return TextPart(part.refusal) if part.refusal else None
    if isinstance(part, InputImage):
        if part.image_url is None:
            raise _invalid(
                "Images by file_id are not supported by this gateway; send image_url (a data "
                "URL or an http(s) URL).",
                f"{param}.file_id" if part.file_id else f"{param}.image_url",
            )
        return image_part(part.image_url, param=f"{param}.image_url", remote=remote)
    assert isinstance(part, InputFile)
    raise _invalid("File inputs are not supported by Kiro; send text or images.", param)


def _tool_use(item: FunctionCallItem, param: str) -> ToolUsePart:
    if not item.arguments.strip():
        return ToolUsePart(id=item.call_id, name=item.name, input={})
    try:
        value = orjson.loads(item.arguments)
    except orjson.JSONDecodeError:
        raise _invalid("The function call arguments are not valid JSON.", param) from None
    if not isinstance(value, dict):
        raise _invalid("The function call arguments must be a JSON object.", param)
    return ToolUsePart(id=item.call_id, name=item.name, input=value)


def _tool_result(item: FunctionCallOutputItem, where: str, remote: bool) -> ToolResultPart:
    if isinstance(item.output, str):
        return ToolResultPart(tool_use_id=item.call_id, content=(TextPart(item.output),))
    content: list[TextPart | ImagePart] = []
    for j, part in enumerate(item.output):
        found = _user_part(part, f"{where}.output.{j}", remote)
        if found is not None:
            content.append(found)
    return ToolResultPart(tool_use_id=item.call_id, content=tuple(content))


def _search_pair(
    item: WebSearchCallItem, name: str, texts: Mapping[str, str]
) -> tuple[ToolUsePart, ToolResultPart]:
    """A search the gateway ran: the search function's call and the text the model read."""
    action = item.action or {}
    query, queries = action.get("query"), action.get("queries")
    if not isinstance(query, str):
        query = queries[0] if isinstance(queries, list) and queries else ""
    query = query if isinstance(query, str) else ""
    text = texts.get(item.id)
    if text is None:
        raw = action.get("sources")
        urls = [s.get("url") for s in raw if isinstance(s, dict)] if isinstance(raw, list) else []
        text = sources_text(query, [u for u in urls if isinstance(u, str)])
    use = ToolUsePart(id=item.id, name=name, input={"query": query})
    return use, ToolResultPart(tool_use_id=item.id, content=(TextPart(text),))


def search_name(req: ResponsesRequest) -> str:
    """The gateway's search function's name for this request (no client function has it)."""
    tools = req.tools or ()
    return search_function_name(
        t["name"] for t in tools if t.get("type") == "function" and isinstance(t.get("name"), str)
    )


def offers_search(req: ResponsesRequest) -> bool:
    """Whether the model is offered the search function: a web_search tool, and tools allowed."""
    return bool(web_search_tools(req.tools)) and req.tool_choice != "none"


def web_search_tools(tools: Sequence[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The request's web-search tools (hosted by OpenAI, by Kiro's search here)."""
    return [t for t in tools or () if _is_web_search(t.get("type"))]


def _is_web_search(kind: Any) -> bool:
    return isinstance(kind, str) and kind in WEB_SEARCH_TYPES


def _tools(tools: Sequence[dict[str, Any]]) -> tuple[ToolSpec, ...]:
    specs: list[ToolSpec] = []
    for i, tool in enumerate(tools):
        kind = tool.get("type")
        if kind == "function":
            specs.append(_function_tool(tool, f"tools.{i}"))
        elif not _is_web_search(kind):
            raise _invalid(
                f"The tool type {kind!r} is a hosted tool this gateway cannot run (Kiro has no "
                "such tool); only 'function' tools and 'web_search' are supported.",
                f"tools.{i}.type",
            )
    return tuple(specs)


def _function_tool(tool: dict[str, Any], where: str) -> ToolSpec:
    name = tool.get("name")
    if not isinstance(name, str) or not name:
        raise _invalid(f"Missing required parameter: '{where}.name'.", f"{where}.name")
    description = tool.get("description")
    if description is not None and not isinstance(description, str):
        raise _invalid(f"Invalid type for '{where}.description': expected a string.", where)
    parameters = tool.get("parameters")
    if parameters is None:
        parameters = {"type": "object", "properties": {}}
    elif not isinstance(parameters, dict):
        raise _invalid(
            f"Invalid type for '{where}.parameters': expected an object.", f"{where}.parameters"
        )
    return ToolSpec(name=name, description=description or "", input_schema=parameters)


def _tool_choice(req: ResponsesRequest, tools: tuple[ToolSpec, ...]) -> ToolChoice:
    parallel = req.parallel_tool_calls is not False
    choice = req.tool_choice
    if choice is None or choice == "auto":
        return ToolChoice("auto", parallel=parallel)
    if choice == "none":
        return ToolChoice("none", parallel=parallel)
    if choice == "required":
        if not tools:
            raise _invalid(
                "tool_choice 'required' needs a function tool in 'tools'.", "tool_choice"
            )
        return ToolChoice("required", parallel=parallel)
    if isinstance(choice, str):  # the Literal leaves no other string
        raise _invalid(f"Invalid tool_choice {choice!r}.", "tool_choice")
    if choice.type in WEB_SEARCH_TYPES and offers_search(req):  # a search first
        return ToolChoice("tool", name=search_name(req), parallel=parallel)
    name = getattr(choice, "name", None)
    if choice.type != "function" or not isinstance(name, str):
        raise _invalid(
            f"tool_choice of type {choice.type!r} is not supported by this gateway; use "
            "'auto', 'none', 'required' or a function.",
            "tool_choice.type",
        )
    if name not in {t.name for t in tools}:
        raise _invalid(
            f"tool_choice names the function {name!r}, which is not in 'tools'.", "tool_choice"
        )
    return ToolChoice("tool", name=name, parallel=parallel)


def text_format(req: ResponsesRequest) -> JSONFormat | None:
    """The JSON answer `text.format` asks for (None: plain text); a bad one is a 400."""
    fmt = req.text.format if req.text else None
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return json_object_format(param=_FORMAT)
    name = require_name(fmt.name, f"{_FORMAT}.name")
    if fmt.schema_ is None:
        raise _invalid(f"Missing required parameter: '{_FORMAT}.schema'.", f"{_FORMAT}.schema")
    return json_schema_format(
        fmt.schema_,
        schema_param=f"{_FORMAT}.schema",
        param=_FORMAT,
        name=name,
        description=fmt.description,
    )


def _invalid(message: str, param: str) -> GatewayError:
    return GatewayError(ErrorKind.INVALID_REQUEST, message, param=param)
