"""Conversation -> the `generateAssistantResponse` JSON body (docs/kiro-protocol.md §3.3). Pure.

The history repairs (merging, alternation, prefill, tool pairing, placeholders) live in
`history.arrange`, the tool rules (names, descriptions, schemas, tool_choice) in `tools`; this
module renders the result and owns these choices:

* System texts are joined with "\\n\\n" and prefixed, as `"{system}\\n\\n{text}"`, to the FIRST
  user message of the conversation: the first history entry when there is history, else the
  current message (the AIClient / kiro-gw rule). It stays at the start of the context where
  the model expects it, is sent once, and needs no invented assistant reply (the other
  choices: a synthetic user/"OK" pair, or prefixing the current message, which ki2api did and
  which moves the instructions after the whole history). Over-long tool descriptions moved out
  of their specs are appended to the system text (`tools.tool_documentation`).
* Tools (`userInputMessageContext.tools`) go on the current message only; history user
  entries carry `modelId`, `origin` and, when any, `images` and `toolResults`.
* A tool name used in history but not offered by this request gets a placeholder tool spec,
  so the history stays valid upstream (kiro.rs does this; AIClient injects a dummy tool for
  the no-tools case). Every tool name goes upstream in its Kiro form (`tools.assign_tool_names`),
  in specs and in history `toolUses`; `KiroRequest.tool_names` maps them back.
* The tool_choice / parallel_tool_calls instruction, if any, is appended to the current
  message's text after a blank line.
* Thinking (`conv.params.thinking` set): the thinking-mode tags (`thinking_mode.thinking_prefix`)
  open the CURRENT message's text, followed by a blank line, on every request. Kiro proxies put
  them either in the system text (kiro.rs, AIClient) or in the current message; here the system
  text sits in the first history entry, which a tool round pushes further back and the size
  budget may trim away, while the current message is always sent and is the turn the model
  answers. History user entries never carry the tags (the client's history has none).
  A model whose catalogue entry offers native fields (`conv.native`, from ListAvailableModels)
  gets them instead, in the top-level `additionalModelRequestFields`
  (`thinking_mode.native_request_fields`: thinking, effort, max_tokens) and no tags.
* Images: `format` is the media subtype (`jpg` -> `jpeg`); only Kiro's formats (gif, jpeg,
  png, webp) are sent; any other image becomes a text note rather than a request Kiro rejects.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from ki2api.core.messages import Conversation, ImagePart, ToolResultPart
from ki2api.kiro.request.history import AssistantTurn, UserTurn, arrange, plain_json, result_text
from ki2api.kiro.request.thinking_fields import native_request_fields, thinking_prefix
from ki2api.kiro.request.tools import ToolPlan, plan_tools

__all__ = [
    "AGENT_TASK_TYPE",
    "CHAT_TRIGGER_TYPE",
    "IMAGE_FORMATS",
    "ORIGIN",
    "KiroRequest",
    "build_kiro_request",
    "build_request",
    "image_entry",
    "tool_result_entry",
]

CHAT_TRIGGER_TYPE = "MANUAL"
AGENT_TASK_TYPE = "vibe"
ORIGIN = "AI_EDITOR"
IMAGE_FORMATS = frozenset({"gif", "jpeg", "png", "webp"})
_EMPTY_RESULT = "(empty)"


@dataclass(frozen=True, slots=True)
class KiroRequest:
    """The body plus what the response side needs to undo the tool mapping.

    `tool_names`: Kiro name -> client name, for every tool name that differs upstream.
    `text_call_names`: the names (client and Kiro spelling) -> client name of the tools offered
    this turn, for recognising `[Called NAME with args: ...]` text (`called_text`).
    `single_tool_call`: the client asked for at most one tool call (parallel_tool_calls false).
    """

    body: dict[str, Any]
    tool_names: Mapping[str, str]
    text_call_names: Mapping[str, str]
    single_tool_call: bool


def tool_result_entry(result: ToolResultPart) -> dict[str, Any]:
    return {
        "toolUseId": result.tool_use_id,
        "content": [{"text": result_text(result) or _EMPTY_RESULT}],
        "status": "error" if result.is_error else "success",
    }


def image_entry(image: ImagePart) -> dict[str, Any] | None:
    """The Kiro image object, or None when Kiro does not take that format."""
    subtype = image.media_type.split(";", 1)[0].strip().lower().rpartition("/")[2]
    fmt = "jpeg" if subtype == "jpg" else subtype
    if fmt not in IMAGE_FORMATS:
        return None
    return {"format": fmt, "source": {"bytes": image.data_b64}}


def _user_message(
    turn: UserTurn, model_id: str, text: str, tools: list[dict[str, Any]]
) -> dict[str, Any]:
    images: list[dict[str, Any]] = []
    notes: list[str] = []
    for image in turn.images:
        entry = image_entry(image)
        if entry is None:
            notes.append(f"[image of unsupported type {image.media_type} omitted]")
        else:
            images.append(entry)
    msg: dict[str, Any] = {
        "content": "\n".join(t for t in (text, *notes) if t),
        "modelId": model_id,
        "origin": ORIGIN,
    }
    if images:
        msg["images"] = images
    context: dict[str, Any] = {}
    if tools:
        context["tools"] = tools
    if turn.tool_results:
        context["toolResults"] = [tool_result_entry(r) for r in turn.tool_results]
    if context:
        msg["userInputMessageContext"] = context
    return msg


def _assistant_message(turn: AssistantTurn, names: Mapping[str, str]) -> dict[str, Any]:
    msg: dict[str, Any] = {"content": turn.text}
    if turn.tool_uses:
        msg["toolUses"] = [
            {"toolUseId": u.id, "name": names.get(u.name, u.name), "input": plain_json(u.input)}
            for u in turn.tool_uses
        ]
    return msg


def _join(*texts: str) -> str:
    return "\n\n".join(t for t in texts if t)


def build_kiro_request(
    conv: Conversation, *, conversation_id: str, profile_arn: str | None
) -> KiroRequest:
    """The request for `conv` and its tool name map. Deterministic: same input, same output."""
    dialogue = arrange(conv.messages)
    used = [u.name for t in dialogue.history if isinstance(t, AssistantTurn) for u in t.tool_uses]
    plan = plan_tools(conv.tools, conv.tool_choice, used)
    system = _join(*conv.system, plan.documentation)
    first_user = dialogue.history[0] if dialogue.history else dialogue.current

    def user_text(turn: UserTurn) -> str:
        return _join(system, turn.text) if turn is first_user else turn.text

    history = [
        {"userInputMessage": _user_message(t, conv.model_id, user_text(t), [])}
        if isinstance(t, UserTurn)
        else {"assistantResponseMessage": _assistant_message(t, plan.names)}
        for t in dialogue.history
    ]
    native = native_request_fields(conv.params.thinking, conv.params.max_tokens, conv.native)
    tags = "" if "thinking" in native else thinking_prefix(conv.params.thinking)
    current_text = _join(tags, user_text(dialogue.current), plan.instruction)
    current = _user_message(dialogue.current, conv.model_id, current_text, plan.specs)
    body: dict[str, Any] = {
        "conversationState": {
            "conversationId": conversation_id,
            "agentTaskType": AGENT_TASK_TYPE,
            "chatTriggerType": CHAT_TRIGGER_TYPE,
            "currentMessage": {"userInputMessage": current},
            "history": history,
        }
    }
    if profile_arn:
        body["profileArn"] = profile_arn
    if native:
        body["additionalModelRequestFields"] = native
    return KiroRequest(
        body=body,
        tool_names=MappingProxyType(_reverse(plan)),
        text_call_names=MappingProxyType(_text_call_names(plan)),
        single_tool_call=bool(conv.tools) and not conv.tool_choice.parallel,
    )


def _reverse(plan: ToolPlan) -> dict[str, str]:
    return {kiro: client for client, kiro in plan.names.items() if kiro != client}


def _text_call_names(plan: ToolPlan) -> dict[str, str]:
    out: dict[str, str] = {}
    for client in plan.offered:
        out[client] = client
        out.setdefault(plan.names[client], client)
    return out


def build_request(
    conv: Conversation, *, conversation_id: str, profile_arn: str | None
) -> dict[str, Any]:
    """The whole request body for `conv` (`build_kiro_request(...).body`)."""
    return build_kiro_request(conv, conversation_id=conversation_id, profile_arn=profile_arn).body
