"""Validation of a `generateAssistantResponse` body, rejecting what the real service rejects.

Each rule, its answer, and its source (tags and sections of docs/kiro-protocol.md). "Improper" is
400 `{"__type":"com.amazon.kiro.runtimeservice#ValidationException","message":"Improperly formed
request.","reason":null}` without an `x-amzn-errortype` header (real 400s, §6.1).

- body > 615,000 bytes, not counting images' base64 -> Improper. kiro-gw (§3.9); an
  883,531-byte body holding an 841 KB base64 PNG was accepted (§3.9).
- body not a JSON object, no `conversationState` object -> Improper. q-cli Smithy (§3.3).
- `chatTriggerType` not MANUAL | DIAGNOSTIC | INLINE_CHAT (so `AUTO` fails) -> Improper.
  Smithy enum; kiro2chat note (§3.3, §9).
- current `userInputMessage.content` missing, not a string, blank -> Improper. Smithy
  "required"; IDE validator NON_EMPTY_USER_MESSAGE (§3.5). Except: `""` (or blank) on a message
  that carries `toolResults` is accepted: real clients send exactly that (§3.5).
- current content > 600,000 characters -> 400 CONTENT_LENGTH_EXCEEDS_THRESHOLD. q-cli limits
  (§3.9), body from §6.2.
- `modelId` present but unknown -> 400 INVALID_MODEL_ID. kiro-gw, 2ue (§4.1, §6.2).
- history not a list, an entry not exactly one userInputMessage / assistantResponseMessage
  -> Improper. Smithy (§3.3).
- history not starting with user, not alternating, not ending with assistant -> Improper.
  IDE validator STARTS_WITH_USER_MESSAGE, ALTERNATING_MESSAGES, ENDS_WITH_USER_MESSAGE and
  the proxies' repairs (§3.5).
- history user message with blank content and no toolResults -> Improper. IDE validator
  NON_EMPTY_USER_MESSAGE (§3.5).
- assistant `content` not a string; a toolUse without string id / name, or whose `input` is
  not an object -> Improper. Smithy: request `input` is a JSON object (§3.3).
- a toolResult whose id is no toolUse of the immediately preceding assistant message
  -> Improper. §3.5; IDE TOOL_RESULTS_AND_NO_USES.
- a toolUse not answered by a toolResult in the next user message -> Improper. IDE validator
  TOOL_USES_AND_RESULTS (§3.5).
- the same toolUseId twice in one message -> Improper. Proxies dedupe (AIClient, kiro.rs; §3.5).
- toolResults anywhere but no `tools` in the current message -> Improper. §3.5
  (kiro-gw, AIClient).
- a history toolUse naming a tool absent from a non-empty `tools` -> Improper. kiro.rs adds
  placeholder tool definitions "so the upstream accepts history" (§3.5).
- more than 119 tools -> Improper. Reports of a limit under 120 tools (§3.6).
- tool name not `^[a-zA-Z][a-zA-Z0-9_-]*$` or > 64 chars, duplicate names -> Improper.
  q-cli consts, kiro-gw, AIClient (§3.6; 64 chosen over kiro.rs' 63, §9).
- tool description empty or > 10,240 chars, `inputSchema.json` not an object -> Improper.
  §3.6 (empty descriptions, the length caps); Smithy. The schema itself is not
  inspected: `$schema`, `additionalProperties: false`, nested `anyOf` / `not` were accepted by
  real Kiro (§3.6).
- image format not gif | jpeg | png | webp, bytes not base64, > 10 images, > 10 MB decoded
  -> Improper. Smithy enum; q-cli service limits (§3.7).
- `profileArn` present but not `arn:aws:codewhisperer:<region>:<12 digits>:profile/<ID>`
  -> Improper. Shape from §1.3.
- no `profileArn` from a social account -> 400 `profileArn is required for this request.`
  kiro-gw (§1.3, §6.2);
  IdC may omit it on the q / codewhisperer hosts (§1.3, §9).
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass
from typing import Any

import orjson

from .errors import CONTENT_TOO_LONG, IMPROPER, INVALID_MODEL, PROFILE_ARN_REQUIRED, Rejection
from .models import KNOWN_MODELS

__all__ = ["ChatRequest", "parse_chat", "MAX_BODY_BYTES", "MAX_CONTENT_CHARS"]

MAX_BODY_BYTES = 615_000
MAX_CONTENT_CHARS = 600_000
MAX_IMAGES = 10
MAX_IMAGE_BYTES = 10 * 1024 * 1024
MAX_TOOL_NAME = 64
MAX_TOOLS = 119  # "under 120 tools" (§3.6: decolua/9router #1184, #1242)
MAX_TOOL_DESCRIPTION = 10_240
TRIGGERS = frozenset({"MANUAL", "DIAGNOSTIC", "INLINE_CHAT"})
IMAGE_FORMATS = frozenset({"gif", "jpeg", "png", "webp"})
MODEL_IDS = frozenset(m.model_id for m in KNOWN_MODELS)
TOOL_NAME = re.compile(r"^[a-zA-Z][a-zA-Z0-9_-]*$")
PROFILE_ARN = re.compile(
    r"^arn:aws:codewhisperer:[a-z]{2}(-[a-z]+)+-\d:\d{12}:profile/[A-Za-z0-9]+$"
)


@dataclass(frozen=True)
class ChatRequest:
    """What the reply planner needs from a valid request."""

    content: str
    model_id: str
    conversation_id: str | None
    tools: dict[str, dict[str, Any]]  # offered tool name -> its JSON schema
    body_chars: int
    tool_results_text: str = ""  # the texts of the current message's toolResults


def _bad(why: str) -> Rejection:
    return IMPROPER.because(why)


def _obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad(f"{where} must be an object")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _bad(f"{where} must be a list")
    return value


def parse_chat(raw: bytes, auth_method: str) -> ChatRequest:
    """Validate a request body; raise `Rejection` with the real answer when it is invalid."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _bad("body is not JSON") from None
    body = _obj(body, "body")
    if len(raw) > MAX_BODY_BYTES and len(raw) - _image_chars(body) > MAX_BODY_BYTES:
        raise _bad(f"body is {len(raw)} bytes, over {MAX_BODY_BYTES} without its images")
    _check_profile_arn(body, auth_method)
    state = _obj(body.get("conversationState"), "conversationState")
    if state.get("chatTriggerType") not in TRIGGERS:
        raise _bad(f"chatTriggerType {state.get('chatTriggerType')!r} not in {sorted(TRIGGERS)}")
    conversation_id = state.get("conversationId")
    if conversation_id is not None and not isinstance(conversation_id, str):
        raise _bad("conversationId must be a string")
    current_msg = _obj(state.get("currentMessage"), "currentMessage")
    current = _obj(current_msg.get("userInputMessage"), "currentMessage.userInputMessage")
    content = _current_content(current)
    model_id = _model_id(current)
    messages = _history(state.get("history"))
    messages.append(("user", current))
    tools = _tools(current)
    _check_messages(messages, tools)
    chars = len(raw.decode(errors="replace"))
    results = _results_text(current)
    return ChatRequest(content, model_id, conversation_id, tools, chars, results)


def _results_text(current: dict[str, Any]) -> str:
    ctx = current.get("userInputMessageContext")
    results = ctx.get("toolResults") if isinstance(ctx, dict) else None
    texts = [
        block["text"]
        for result in results or ()
        if isinstance(result, dict) and isinstance(result.get("content"), list)
        for block in result["content"]
        if isinstance(block, dict) and isinstance(block.get("text"), str)
    ]
    return "\n".join(texts)


def _check_profile_arn(body: dict[str, Any], auth_method: str) -> None:
    arn = body.get("profileArn")
    if arn is None:
        if auth_method == "social":
            raise PROFILE_ARN_REQUIRED.because("social accounts must send profileArn")
        return
    if not isinstance(arn, str) or not PROFILE_ARN.match(arn):
        raise _bad("profileArn is not arn:aws:codewhisperer:<region>:<account>:profile/<id>")


def _current_content(current: dict[str, Any]) -> str:
    content = current.get("content")
    if not isinstance(content, str):
        raise _bad("current message content must be a string")
    if not content.strip() and not _carries_tool_results(current):
        raise _bad("current message content is empty and carries no toolResults")
    if len(content) > MAX_CONTENT_CHARS:
        raise CONTENT_TOO_LONG.because(f"content is {len(content)} chars")
    return content


def _model_id(current: dict[str, Any]) -> str:
    model_id = current.get("modelId", "auto")
    if not isinstance(model_id, str):
        raise _bad("modelId must be a string")
    if model_id not in MODEL_IDS:
        raise INVALID_MODEL.because(f"unknown modelId {model_id!r}")
    return model_id


def _history(history: Any) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    for i, item in enumerate(_list(history, "history")):
        entry = _obj(item, f"history[{i}]")
        if len(entry) != 1:
            raise _bad(f"history[{i}] must hold exactly one message")
        key, msg = next(iter(entry.items()))
        role = {"userInputMessage": "user", "assistantResponseMessage": "assistant"}.get(key)
        if role is None:
            raise _bad(f"history[{i}] has unknown message kind {key!r}")
        expected = "user" if i % 2 == 0 else "assistant"
        if role != expected:
            raise _bad(f"history[{i}] is {role}; history must start with user and alternate")
        out.append((role, _obj(msg, f"history[{i}].{key}")))
    if out and out[-1][0] != "assistant":
        raise _bad("history must end with an assistantResponseMessage")
    return out


def _carries_tool_results(msg: dict[str, Any]) -> bool:
    ctx = msg.get("userInputMessageContext")
    return (
        isinstance(ctx, dict)
        and isinstance(ctx.get("toolResults"), list)
        and bool(ctx["toolResults"])
    )


def _context(msg: dict[str, Any], where: str) -> dict[str, Any]:
    ctx = msg.get("userInputMessageContext")
    return {} if ctx is None else _obj(ctx, f"{where}.userInputMessageContext")


def _image_chars(body: dict[str, Any]) -> int:
    """Characters of image base64 in the body (0 for whatever is malformed: checked later)."""
    state = body.get("conversationState")
    if not isinstance(state, dict):
        return 0
    history = state.get("history")
    entries: list[Any] = [state.get("currentMessage")]
    entries += history if isinstance(history, list) else []
    total = 0
    for entry in entries:
        msg = entry.get("userInputMessage") if isinstance(entry, dict) else None
        images = msg.get("images") if isinstance(msg, dict) else None
        for image in images if isinstance(images, list) else ():
            source = image.get("source") if isinstance(image, dict) else None
            data = source.get("bytes") if isinstance(source, dict) else None
            total += len(data) if isinstance(data, str) else 0
    return total


def _tools(current: dict[str, Any]) -> dict[str, dict[str, Any]]:
    tools: dict[str, dict[str, Any]] = {}
    offered = _list(_context(current, "current").get("tools"), "tools")
    if len(offered) > MAX_TOOLS:
        raise _bad(f"{len(offered)} tools, over {MAX_TOOLS}")
    for i, item in enumerate(offered):
        entry = _obj(item, f"tools[{i}]")
        if "toolSpecification" not in entry and "cachePoint" in entry:
            continue
        spec = _obj(entry.get("toolSpecification"), f"tools[{i}].toolSpecification")
        name = spec.get("name")
        if not isinstance(name, str) or len(name) > MAX_TOOL_NAME or not TOOL_NAME.match(name):
            raise _bad(f"tools[{i}] name {name!r} is invalid")
        if name in tools:
            raise _bad(f"duplicate tool name {name!r}")
        desc = spec.get("description")
        if not isinstance(desc, str) or not desc.strip() or len(desc) > MAX_TOOL_DESCRIPTION:
            raise _bad(f"tool {name!r} description must be 1..{MAX_TOOL_DESCRIPTION} chars")
        schema = _obj(spec.get("inputSchema"), f"tool {name!r} inputSchema").get("json")
        tools[name] = _obj(schema, f"tool {name!r} inputSchema.json")
    return tools


def _check_messages(messages: list[tuple[str, dict[str, Any]]], tools: dict[str, Any]) -> None:
    """Per-message checks plus the pairing of toolUses with the next message's toolResults."""
    pending: set[str] = set()
    any_results = False
    for i, (role, msg) in enumerate(messages):
        where = "current" if i == len(messages) - 1 else f"history[{i}]"
        if role == "assistant":
            pending = _assistant_tool_uses(msg, where, tools)
            continue
        results = _user_message(msg, where, is_current=where == "current")
        unknown = results - pending
        if unknown:
            raise _bad(f"{where} toolResults {sorted(unknown)} match no toolUse just before")
        unanswered = pending - results
        if unanswered:
            raise _bad(f"toolUses {sorted(unanswered)} are not answered by {where} toolResults")
        any_results = any_results or bool(results)
        pending = set()
    if any_results and not tools:
        raise _bad("toolResults present but the current message offers no tools")


def _ids(items: list[Any], where: str, key: str) -> list[str]:
    ids = []
    for j, item in enumerate(items):
        value = _obj(item, f"{where}[{j}]").get(key)
        if not isinstance(value, str) or not value:
            raise _bad(f"{where}[{j}].{key} must be a non-empty string")
        ids.append(value)
    if len(set(ids)) != len(ids):
        raise _bad(f"{where} repeats a toolUseId")
    return ids


def _assistant_tool_uses(msg: dict[str, Any], where: str, tools: dict[str, Any]) -> set[str]:
    if not isinstance(msg.get("content"), str):
        raise _bad(f"{where} assistant content must be a string")
    uses = _list(msg.get("toolUses"), f"{where}.toolUses")
    ids = _ids(uses, f"{where}.toolUses", "toolUseId")
    for use in uses:
        name = use.get("name")
        if not isinstance(name, str) or not name:
            raise _bad(f"{where} toolUse without a name")
        if not isinstance(use.get("input"), dict):
            raise _bad(f"{where} toolUse {name!r} input must be an object")
        if tools and name not in tools:
            raise _bad(f"{where} toolUse {name!r} names a tool absent from tools")
    return set(ids)


def _user_message(msg: dict[str, Any], where: str, is_current: bool) -> set[str]:
    """Checks a user message; returns the toolUseIds its toolResults answer."""
    results = _list(_context(msg, where).get("toolResults"), f"{where}.toolResults")
    ids = _ids(results, f"{where}.toolResults", "toolUseId")
    for result in results:
        if not isinstance(result.get("content"), list):
            raise _bad(f"{where} toolResult content must be a list")
        if result.get("status", "success") not in ("success", "error"):
            raise _bad(f"{where} toolResult status must be success or error")
    content = msg.get("content")
    if not isinstance(content, str):
        raise _bad(f"{where} content must be a string")
    if not is_current and not content.strip() and not results:
        raise _bad(f"{where} user content is empty and carries no toolResults")
    _check_images(msg.get("images"), where)
    return set(ids)


def _check_images(images: Any, where: str) -> None:
    items = _list(images, f"{where}.images")
    if len(items) > MAX_IMAGES:
        raise _bad(f"{where} has {len(items)} images, over {MAX_IMAGES}")
    for j, item in enumerate(items):
        image = _obj(item, f"{where}.images[{j}]")
        if image.get("format") not in IMAGE_FORMATS:
            raise _bad(f"{where}.images[{j}] format {image.get('format')!r} not supported")
        data = _obj(image.get("source"), f"{where}.images[{j}].source").get("bytes")
        try:
            decoded = binascii.a2b_base64(str(data).encode("ascii"), strict_mode=True)
            if not isinstance(data, str):
                raise ValueError
        except (ValueError, binascii.Error):
            raise _bad(f"{where}.images[{j}] bytes are not base64") from None
        if not decoded or len(decoded) > MAX_IMAGE_BYTES:
            raise _bad(f"{where}.images[{j}] is empty or over {MAX_IMAGE_BYTES} bytes")
