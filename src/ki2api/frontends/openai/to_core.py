"""OpenAI Chat Completions request -> core `Conversation` (docs/api-compat.md §A.2, §A.3). Pure.

* `system` and `developer` messages, wherever they appear, go to `Conversation.system` in order
  (one entry per string or text part; empty ones dropped).
* Empty user text is dropped (Claude rejects empty text blocks); the message itself stays.
* Each `tool` message becomes its own user message holding one `ToolResultPart`: merging
  consecutive results into one turn is the Kiro layer's job.
* `reasoning_effort` turns Kiro's thinking on as `ThinkingConfig("enabled", budget)`:
  `none` / `minimal` (and empty) -> off; `low` 4000, `medium` 10000, `high` 20000, `xhigh` /
  `max` 24576 tokens; any other value -> the Kiro default budget (20000). The budget form is
  the one every Kiro model takes (adaptive is for the newest ones only); see docs/thinking.md.
* An assistant message's `reasoning_content` (the DeepSeek convention some clients send back)
  becomes a `ThinkingPart` before its text, so a tool round keeps its thinking.
* Accepted and ignored: `logprobs` / `top_logprobs` (answered with `logprobs: null`), `seed`,
  `user`, `metadata`, `logit_bias`, penalties, `response_format`, and unknown fields. Refused
  with a 400: `n > 1`, audio output, audio and file inputs, remote images when the gateway does
  not fetch them (else they become `RemoteImagePart`s, fetched by the chat pipeline).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, assert_never

import orjson

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.core.messages import (
    Conversation,
    GenParams,
    Message,
    Part,
    TextPart,
    ThinkingConfig,
    ThinkingPart,
    ToolChoice,
    ToolResultPart,
    ToolSpec,
    ToolUsePart,
)
from ki2api.core.models import ModelInfo
from ki2api.frontends.openai.image_parts import image_part
from ki2api.frontends.openai.wire import (
    AssistantMessage,
    ChatCompletionRequest,
    DeveloperMessage,
    FilePart,
    ImageURLPart,
    InputAudioPart,
    RefusalPart,
    SystemMessage,
    TextContentPart,
    ToolCall,
    ToolMessage,
    UserMessage,
)

__all__ = ["REASONING_BUDGETS", "thinking_config", "to_conversation"]

# reasoning_effort -> thinking budget in tokens; None turns thinking off.
REASONING_BUDGETS: dict[str, int | None] = {
    "none": None,
    "minimal": None,
    "low": 4000,
    "medium": 10000,
    "high": 20000,
    "xhigh": 24576,
    "max": 24576,
}


def to_conversation(
    req: ChatCompletionRequest, model: ModelInfo, *, remote_images: bool = False
) -> Conversation:
    """Translate a validated request; unsupported values raise INVALID_REQUEST with `param`.
    `remote_images`: http(s) image URLs become `RemoteImagePart`s (the gateway fetches them),
    else they are refused."""
    _refuse_unsupported(req)
    system: list[str] = []
    messages: list[Message] = []
    for i, msg in enumerate(req.messages):
        if isinstance(msg, SystemMessage | DeveloperMessage):
            system.extend(_texts(msg.content))
        elif isinstance(msg, UserMessage):
            parts = _user_parts(msg, f"messages.{i}", remote_images)
            messages.append(Message("user", parts))
        elif isinstance(msg, AssistantMessage):
            messages.append(Message("assistant", _assistant_parts(msg, f"messages.{i}")))
        else:
            messages.append(Message("user", (_tool_result(msg),)))
    tools = tuple(
        ToolSpec(
            name=t.function.name,
            description=t.function.description or "",
            input_schema=_schema(t.function.parameters),
        )
        for t in req.tools or ()
    )
    return Conversation(
        model_id=model.kiro_id,
        messages=tuple(messages),
        system=tuple(system),
        tools=tools,
        tool_choice=_tool_choice(req, tools),
        params=_params(req),
        native=model.native,
    )


def _schema(parameters: dict[str, Any] | None) -> dict[str, Any]:
    """A function without `parameters` takes no arguments (a fresh dict each time)."""
    return parameters if parameters is not None else {"type": "object", "properties": {}}


def _refuse_unsupported(req: ChatCompletionRequest) -> None:
    if req.n is not None and req.n > 1:
        raise _invalid("n>1 is not supported by Kiro: it returns one choice per request.", "n")
    if req.modalities and "audio" in req.modalities:
        raise _invalid("Audio output is not supported by Kiro.", "modalities")
    if (req.model_extra or {}).get("audio") is not None:
        raise _invalid("Audio output is not supported by Kiro.", "audio")


def _texts(content: str | Sequence[TextContentPart]) -> list[str]:
    texts = [content] if isinstance(content, str) else [p.text for p in content]
    return [t for t in texts if t]


def _user_parts(msg: UserMessage, where: str, remote: bool) -> tuple[Part, ...]:
    if isinstance(msg.content, str):
        return (TextPart(msg.content),) if msg.content else ()
    parts = (_user_part(p, f"{where}.content.{j}", remote) for j, p in enumerate(msg.content))
    return tuple(p for p in parts if p is not None)


def _user_part(
    part: TextContentPart | ImageURLPart | InputAudioPart | FilePart, param: str, remote: bool
) -> Part | None:
    match part:
        case TextContentPart(text=text):
            return TextPart(text) if text else None
        case ImageURLPart(url=url):
            return image_part(url, param=f"{param}.image_url", remote=remote)
        case InputAudioPart():
            raise _invalid("Audio input (input_audio) is not supported by Kiro.", param)
        case FilePart():
            raise _invalid("File inputs are not supported by Kiro; send text or images.", param)
        case _:
            assert_never(part)


def _assistant_parts(msg: AssistantMessage, where: str) -> tuple[Part, ...]:
    texts: list[str] = []
    if isinstance(msg.content, str):
        texts.append(msg.content)
    elif msg.content is not None:
        texts.extend(p.refusal if isinstance(p, RefusalPart) else p.text for p in msg.content)
    if msg.refusal:
        texts.append(msg.refusal)
    parts: list[Part] = [TextPart(t) for t in texts if t]
    reasoning = (msg.model_extra or {}).get("reasoning_content")
    if isinstance(reasoning, str) and reasoning:
        parts.insert(0, ThinkingPart(reasoning))
    for k, call in enumerate(msg.tool_calls or ()):
        parts.append(_tool_use(call, f"{where}.tool_calls.{k}.function.arguments"))
    return tuple(parts)


def _tool_use(call: ToolCall, param: str) -> ToolUsePart:
    arguments = call.function.arguments
    if not arguments.strip():
        return ToolUsePart(id=call.id, name=call.function.name, input={})
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        raise _invalid("The tool call arguments are not valid JSON.", param) from None
    if not isinstance(value, dict):
        raise _invalid("The tool call arguments must be a JSON object.", param)
    return ToolUsePart(id=call.id, name=call.function.name, input=value)


def _tool_result(msg: ToolMessage) -> ToolResultPart:
    texts = [msg.content] if isinstance(msg.content, str) else [p.text for p in msg.content]
    content = tuple(TextPart(t) for t in texts)
    return ToolResultPart(tool_use_id=msg.tool_call_id, content=content)


def _tool_choice(req: ChatCompletionRequest, tools: tuple[ToolSpec, ...]) -> ToolChoice:
    parallel = req.parallel_tool_calls is not False
    choice = req.tool_choice
    if choice is None or choice == "auto":
        return ToolChoice("auto", parallel=parallel)
    if choice == "none":
        return ToolChoice("none", parallel=parallel)
    if choice == "required":
        if not tools:
            raise _invalid(
                "tool_choice 'required' needs at least one tool in 'tools'.", "tool_choice"
            )
        return ToolChoice("required", parallel=parallel)
    name = choice.function.name
    if name not in {t.name for t in tools}:
        raise _invalid(
            f"tool_choice names the function {name!r}, which is not in 'tools'.", "tool_choice"
        )
    return ToolChoice("tool", name=name, parallel=parallel)


def _params(req: ChatCompletionRequest) -> GenParams:
    stop = req.stop
    return GenParams(
        max_tokens=req.max_completion_tokens
        if req.max_completion_tokens is not None
        else req.max_tokens,
        temperature=req.temperature,
        top_p=req.top_p,
        stop=(stop,) if isinstance(stop, str) else tuple(stop or ()),
        thinking=thinking_config(req.reasoning_effort),
    )


def thinking_config(reasoning_effort: str | None) -> ThinkingConfig | None:
    """The thinking asked for by `reasoning_effort` (None: thinking off)."""
    effort = (reasoning_effort or "").strip().lower()
    if not effort:
        return None
    if effort not in REASONING_BUDGETS:
        return ThinkingConfig("enabled")
    budget = REASONING_BUDGETS[effort]
    return None if budget is None else ThinkingConfig("enabled", budget_tokens=budget)


def _invalid(message: str, param: str) -> GatewayError:
    return GatewayError(ErrorKind.INVALID_REQUEST, message, param=param)
