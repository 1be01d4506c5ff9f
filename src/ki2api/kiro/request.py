"""Conversation -> the `generateAssistantResponse` JSON body (KIRO_PROTOCOL.md 3.3). Pure.

The history repairs (merging, alternation, prefill, tool pairing, placeholders) live in
`history.arrange`; this module renders the result and owns these choices:

* System texts are joined with "\\n\\n" and prefixed, as `"{system}\\n\\n{text}"`, to the FIRST
  user message of the conversation: the first history entry when there is history, else the
  current message (the AIClient / kiro-gw rule). It stays at the start of the context where
  the model expects it, is sent once, and needs no invented assistant reply (the other
  choices: a synthetic user/"OK" pair, or prefixing the current message, which ki2api did and
  which moves the instructions after the whole history).
* Tools (`userInputMessageContext.tools`) go on the current message only; history user
  entries carry `modelId`, `origin` and, when any, `images` and `toolResults`.
* A tool name used in history but not offered by this request gets a placeholder tool spec,
  so the history stays valid upstream (kiro.rs does this; AIClient injects a dummy tool for
  the no-tools case). The tool mapping is split in small functions (`tool_spec_entry`,
  `tool_entries`, `placeholder_tool_entries`) so that name shortening, description limits,
  schema normalisation and tool_choice can be added around them.
* Images: `format` is the media subtype (`jpg` -> `jpeg`); only Kiro's formats (gif, jpeg,
  png, webp) are sent; any other image becomes a text note rather than a request Kiro rejects.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

from ki2api.core.messages import Conversation, ImagePart, ToolResultPart, ToolSpec
from ki2api.kiro.history import AssistantTurn, UserTurn, arrange, plain_json, result_text

__all__ = [
    "AGENT_TASK_TYPE",
    "CHAT_TRIGGER_TYPE",
    "IMAGE_FORMATS",
    "ORIGIN",
    "PLACEHOLDER_TOOL_DESCRIPTION",
    "PLACEHOLDER_TOOL_SCHEMA",
    "build_request",
    "image_entry",
    "placeholder_tool_entries",
    "tool_entries",
    "tool_result_entry",
    "tool_spec_entry",
]

CHAT_TRIGGER_TYPE = "MANUAL"
AGENT_TASK_TYPE = "vibe"
ORIGIN = "AI_EDITOR"
IMAGE_FORMATS = frozenset({"gif", "jpeg", "png", "webp"})
PLACEHOLDER_TOOL_DESCRIPTION = "Tool used earlier in this conversation."
PLACEHOLDER_TOOL_SCHEMA: Mapping[str, Any] = MappingProxyType({"type": "object", "properties": {}})
_EMPTY_RESULT = "(empty)"


def tool_spec_entry(name: str, description: str, schema: Any) -> dict[str, Any]:
    """One tool. Kiro refuses an empty description, so a blank one becomes `Tool: {name}`."""
    return {
        "toolSpecification": {
            "name": name,
            "description": description.strip() or f"Tool: {name}",
            "inputSchema": {"json": plain_json(schema)},
        }
    }


def tool_entries(tools: Iterable[ToolSpec]) -> list[dict[str, Any]]:
    return [tool_spec_entry(t.name, t.description, t.input_schema) for t in tools]


def placeholder_tool_entries(used: Iterable[str], offered: Iterable[str]) -> list[dict[str, Any]]:
    """Specs for tool names used in history but not offered now, in first-use order."""
    have = set(offered)
    out: list[dict[str, Any]] = []
    for name in used:
        if name not in have:
            have.add(name)
            out.append(tool_spec_entry(name, PLACEHOLDER_TOOL_DESCRIPTION, PLACEHOLDER_TOOL_SCHEMA))
    return out


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
        "content": "\n".join([text, *notes]),
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


def _assistant_message(turn: AssistantTurn) -> dict[str, Any]:
    msg: dict[str, Any] = {"content": turn.text}
    if turn.tool_uses:
        msg["toolUses"] = [
            {"toolUseId": u.id, "name": u.name, "input": plain_json(u.input)}
            for u in turn.tool_uses
        ]
    return msg


def build_request(
    conv: Conversation, *, conversation_id: str, profile_arn: str | None
) -> dict[str, Any]:
    """The whole request body for `conv`. Deterministic: same input, same output."""
    dialogue = arrange(conv.messages)
    system = "\n\n".join(s for s in conv.system if s)
    first_user = dialogue.history[0] if dialogue.history else dialogue.current

    def user_text(turn: UserTurn) -> str:
        return f"{system}\n\n{turn.text}" if system and turn is first_user else turn.text

    used = [u.name for t in dialogue.history if isinstance(t, AssistantTurn) for u in t.tool_uses]
    tools = tool_entries(conv.tools) + placeholder_tool_entries(used, (t.name for t in conv.tools))
    history = [
        {"userInputMessage": _user_message(t, conv.model_id, user_text(t), [])}
        if isinstance(t, UserTurn)
        else {"assistantResponseMessage": _assistant_message(t)}
        for t in dialogue.history
    ]
    current = _user_message(dialogue.current, conv.model_id, user_text(dialogue.current), tools)
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
    return body
