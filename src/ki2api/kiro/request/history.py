"""Arrange a conversation into the shape Kiro accepts: pure, deterministic, no I/O.

Kiro answers "Improperly formed request." to anything but: history that starts with a user
message, alternates user/assistant and ends with an assistant message; a current message from
the user with non-empty content; and toolResults that each answer a toolUse of the assistant
message right before them (docs/kiro-protocol.md §3.5, the Kiro IDE validator rules). `arrange`
repairs a conversation into that shape, always the same way:

1. Consecutive messages of the same role merge into one turn (texts joined with "\\n", other
   parts concatenated).
2. A conversation ending with an assistant message (prefill) gets an empty user turn after it,
   which becomes "Continue"; a conversation starting with an assistant message gets a user turn
   "Hello" before it (the Kiro IDE validator's fix).
3. Tool pairing, per user turn: results are de-duplicated by toolUseId (the first wins); a
   result whose id is not a toolUse of the assistant turn right before is turned into text
   (`[Tool result for ID]: ...`) in the user content, never dropped; a toolUse left without a
   result gets a synthetic error result ("Tool execution failed: ..."). ToolUses are
   de-duplicated by id.
4. Empty or blank texts: user -> "Continue", or exactly "" when it carries tool results (as
   real clients send such a turn, docs/kiro-protocol.md §3.5); assistant -> "I understand.",
   also when it carries toolUses (the IDE validator never sends an empty assistant message and
   neither do we).
5. Parts in the wrong place: an assistant's thinking is kept as `<thinking>...</thinking>\\n\\n`
   before its text (as other Kiro proxies re-wrap it; the form the model itself answers in
   thinking mode, so it keeps thinking after tool rounds); signatures are dropped, Kiro has no
   field for them. A user's thinking part is dropped. Images of an assistant, tool uses in a
   user message and tool results in an assistant message become short text notes; images
   inside tool results are attached to that user message.

The system prompt is not handled here (see `request.py`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ki2api.core.messages import (
    ImagePart,
    Message,
    Part,
    TextPart,
    ThinkingPart,
    ToolResultPart,
    ToolUsePart,
)

__all__ = [
    "ASSISTANT_PLACEHOLDER",
    "FIRST_USER_PLACEHOLDER",
    "MISSING_RESULT_TEXT",
    "USER_PLACEHOLDER",
    "AssistantTurn",
    "Dialogue",
    "UserTurn",
    "arrange",
    "plain_json",
    "result_text",
]

USER_PLACEHOLDER = "Continue"
FIRST_USER_PLACEHOLDER = "Hello"
ASSISTANT_PLACEHOLDER = "I understand."
MISSING_RESULT_TEXT = "Tool execution failed: no result was provided for this tool call."


@dataclass(slots=True)
class UserTurn:
    text: str
    images: list[ImagePart] = field(default_factory=list)
    tool_results: list[ToolResultPart] = field(default_factory=list)


@dataclass(slots=True)
class AssistantTurn:
    text: str
    tool_uses: list[ToolUsePart] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Dialogue:
    """`history` alternates user/assistant, starts with a user turn, ends with an assistant one."""

    history: list[UserTurn | AssistantTurn]
    current: UserTurn


@dataclass(slots=True)
class _Draft:
    role: Literal["user", "assistant"]
    texts: list[str] = field(default_factory=list)
    thinking: list[str] = field(default_factory=list)
    images: list[ImagePart] = field(default_factory=list)
    tool_uses: list[ToolUsePart] = field(default_factory=list)
    tool_results: list[ToolResultPart] = field(default_factory=list)


def plain_json(value: Any) -> Any:
    """Deep copy with every Mapping as a dict and every tuple as a list (JSON-ready)."""
    if isinstance(value, Mapping):
        return {str(k): plain_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain_json(v) for v in value]
    return value


def result_text(result: ToolResultPart) -> str:
    return "\n".join(p.text for p in result.content if isinstance(p, TextPart) and p.text)


def _result_as_text(result: ToolResultPart) -> str:
    label = " (error)" if result.is_error else ""
    return f"[Tool result for {result.tool_use_id}{label}]: {result_text(result) or '(empty)'}"


def _use_as_text(use: ToolUsePart) -> str:
    args = json.dumps(plain_json(use.input), ensure_ascii=False, sort_keys=True)
    return f"[Tool call {use.name} ({use.id}) with input {args}]"


def _add_user_part(d: _Draft, part: Part) -> None:
    match part:
        case TextPart(text=t) if t:
            d.texts.append(t)
        case ImagePart():
            d.images.append(part)
        case ToolUsePart():
            d.texts.append(_use_as_text(part))
        case ToolResultPart():
            d.tool_results.append(part)
            d.images.extend(p for p in part.content if isinstance(p, ImagePart))


def _add_assistant_part(d: _Draft, part: Part) -> None:
    match part:
        case TextPart(text=t) if t:
            d.texts.append(t)
        case ThinkingPart(text=t) if t:
            d.thinking.append(t)
        case ImagePart():
            d.texts.append("[image omitted]")
        case ToolUsePart():
            d.tool_uses.append(part)
        case ToolResultPart():
            d.texts.append(_result_as_text(part))


def _merge(messages: Sequence[Message]) -> list[_Draft]:
    drafts: list[_Draft] = []
    for message in messages:
        if not drafts or drafts[-1].role != message.role:
            drafts.append(_Draft(message.role))
        add = _add_user_part if message.role == "user" else _add_assistant_part
        for part in message.parts:
            add(drafts[-1], part)
    return drafts


def _dedupe_uses(uses: list[ToolUsePart]) -> list[ToolUsePart]:
    seen: set[str] = set()
    out = []
    for use in uses:
        if use.id not in seen:
            seen.add(use.id)
            out.append(use)
    return out


def _pair(user: _Draft, uses: list[ToolUsePart]) -> UserTurn:
    """Keep the results that answer `uses`; textify the rest; add failures for the unanswered."""
    wanted = {u.id for u in uses}
    kept: dict[str, ToolResultPart] = {}
    notes: list[str] = []
    for result in user.tool_results:
        if result.tool_use_id in kept:
            continue
        if result.tool_use_id in wanted:
            kept[result.tool_use_id] = result
        else:
            notes.append(_result_as_text(result))
    missing = [
        ToolResultPart(u.id, (TextPart(MISSING_RESULT_TEXT),), is_error=True)
        for u in uses
        if u.id not in kept
    ]
    results = [*kept.values(), *missing]
    text = "\n".join([*notes, *user.texts])
    if not text.strip():
        text = "" if results else USER_PLACEHOLDER  # real clients send "" with tool results
    return UserTurn(text=text, images=list(user.images), tool_results=results)


def _assistant(d: _Draft) -> AssistantTurn:
    text = "\n".join(d.texts)
    if not text.strip():
        text = ""
    if d.thinking:
        text = f"<thinking>{''.join(d.thinking)}</thinking>\n\n{text}"
    return AssistantTurn(text=text or ASSISTANT_PLACEHOLDER, tool_uses=_dedupe_uses(d.tool_uses))


def arrange(messages: Sequence[Message]) -> Dialogue:
    """Repair `messages` into Kiro's shape (see the module docstring for every rule)."""
    drafts = _merge(messages)
    if drafts and drafts[0].role == "assistant":
        drafts.insert(0, _Draft("user", texts=[FIRST_USER_PLACEHOLDER]))
    if not drafts or drafts[-1].role == "assistant":
        drafts.append(_Draft("user"))
    turns: list[UserTurn | AssistantTurn] = []
    previous_uses: list[ToolUsePart] = []
    for draft in drafts:
        if draft.role == "assistant":
            turn = _assistant(draft)
            previous_uses = turn.tool_uses
            turns.append(turn)
        else:
            turns.append(_pair(draft, previous_uses))
            previous_uses = []
    current = turns.pop()
    assert isinstance(current, UserTurn)
    return Dialogue(history=turns, current=current)
