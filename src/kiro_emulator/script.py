"""`<emu>{json}</emu>` directives in the user's text, and planning the reply (docs/emulator.md).

Pure functions: `parse_directives(content)` finds the directives (a block whose JSON does not
parse to an object stays in the text as it is) and `plan_reply(...)` decides what the "model"
says: native reasoning, text, repeated content events, and tool calls.

Thinking mode (docs/kiro-protocol.md §3.8): a message with `<thinking_mode>enabled</thinking_mode>`
(with `<max_thinking_length>`) or `<thinking_mode>adaptive</thinking_mode>` (with
`<thinking_effort>`) is answered with `<thinking>Thinking about: {message}</thinking>\n\n` before
the reply, as the real models do; the tags are not part of the echoed message. A `thinking`
directive replaces that text. The `reasoning` directive (a string, or `{"text", "signature"}`)
sends the thinking natively instead, as `reasoningContentEvent` frames before the text.
Native thinking (`additionalModelRequestFields.thinking.type: adaptive`, models.native_thinking)
is answered the same way, with the text `Thinking about: {message}`, no tags in the text.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = [
    "Directives",
    "Reply",
    "ToolCall",
    "input_from_schema",
    "parse_directives",
    "plan_reply",
    "split_text",
    "split_thinking_mode",
]

DIRECTIVE = re.compile(r"<emu>(.*?)</emu>", re.DOTALL)
CALL = re.compile(r"\b(?i:call)\s+([A-Za-z][A-Za-z0-9_-]*)")
THINKING_MODE = re.compile(
    r"<thinking_mode>(?:enabled|adaptive)</thinking_mode>"
    r"(?:<max_thinking_length>\d+</max_thinking_length>|<thinking_effort>\w+</thinking_effort>)?"
    r"\s*"
)
ECHO_LIMIT = 2_000
THINKING_ECHO_LIMIT = 200
NATIVE_SIGNATURE = "emulator-native-thinking"  # the signature of native-thinking replies
DEFAULT_SIGNATURE = "emu-signature"
REASONING_FRAMES = 3


@dataclass
class Directives:
    text: str | None = None
    chunks: int = 8
    events: int | None = None
    first_delay_s: float = 0.0
    delay_s: float = 0.0
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    fragments: int = 4
    thinking: str | None = None
    reasoning: dict[str, str] | None = None
    error: dict[str, Any] | None = None
    exception: dict[str, Any] | None = None
    truncate_after_events: int | None = None
    split_bytes: int | None = None
    context_usage: float | None = None
    repeat_text: list[str] = field(default_factory=list)
    metadata_usage: bool = False


def _count(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError
    return v


def _index(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError
    return v


def _seconds(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
        raise ValueError
    return float(v) / 1000.0


def _number(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ValueError
    return float(v)


def _string(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError
    return v


def _strings(v: Any) -> list[str]:
    if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
        raise ValueError
    return list(v)


def _objects(v: Any) -> list[dict[str, Any]]:
    if not isinstance(v, list):
        raise ValueError
    return [c for c in v if isinstance(c, dict) and isinstance(c.get("name"), str)]


def _error(v: Any) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise ValueError
    status = v.get("status")
    if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
        raise ValueError
    return v


def _flag(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError
    return v


def _reasoning(v: Any) -> dict[str, str]:
    if isinstance(v, str):
        return {"text": v, "signature": DEFAULT_SIGNATURE}
    if not isinstance(v, dict) or not isinstance(v.get("text"), str):
        raise ValueError
    signature = v.get("signature", DEFAULT_SIGNATURE)
    if not isinstance(signature, str):
        raise ValueError
    return {"text": v["text"], "signature": signature}


def _object(v: Any) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise ValueError
    return v


# directive key -> (Directives attribute, converter raising ValueError on a bad value)
_KEYS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "text": ("text", _string),
    "chunks": ("chunks", _count),
    "events": ("events", _count),
    "first_delay_ms": ("first_delay_s", _seconds),
    "delay_ms": ("delay_s", _seconds),
    "tool_calls": ("tool_calls", _objects),
    "fragments": ("fragments", _count),
    "thinking": ("thinking", _string),
    "reasoning": ("reasoning", _reasoning),
    "error": ("error", _error),
    "exception": ("exception", _object),
    "truncate_after_events": ("truncate_after_events", _index),
    "split_bytes": ("split_bytes", _count),
    "context_usage": ("context_usage", _number),
    "repeat_text": ("repeat_text", _strings),
    "metadata_usage": ("metadata_usage", _flag),
}


def parse_directives(content: str) -> tuple[Directives, str]:
    """Directives found in `content` (later blocks win) and the content without them.

    A block whose JSON is invalid or not an object is kept in the text literally; a key with a
    value of the wrong type is ignored.
    """
    directives = Directives()

    def consume(match: re.Match[str]) -> str:
        try:
            data = orjson.loads(match.group(1))
        except orjson.JSONDecodeError:
            return match.group(0)
        if not isinstance(data, dict):
            return match.group(0)
        for key, value in data.items():
            if key not in _KEYS:
                continue
            attr, convert = _KEYS[key]
            try:
                setattr(directives, attr, convert(value))
            except ValueError:
                continue
        return ""

    return directives, DIRECTIVE.sub(consume, content)


def split_text(text: str, n: int) -> list[str]:
    """`text` in at most `n` nearly equal non-empty pieces (split on characters, not bytes)."""
    if not text:
        return []
    n = max(1, min(n, len(text)))
    size, extra = divmod(len(text), n)
    pieces, start = [], 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        pieces.append(text[start:end])
        start = end
    return pieces


def _schema_type(schema: dict[str, Any]) -> str | None:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None and isinstance(schema.get("properties"), dict):
        return "object"
    return kind if isinstance(kind, str) else None


def input_from_schema(schema: Any, depth: int = 0) -> Any:
    """A value satisfying a JSON schema: first enum value / "x" / 1 / true per property type."""
    if not isinstance(schema, dict) or depth > 8:
        return "x"
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    kind = _schema_type(schema)
    options = schema.get("anyOf") or schema.get("oneOf")
    if kind is None and isinstance(options, list) and options:
        return input_from_schema(options[0], depth + 1)
    if kind == "object":
        props = schema.get("properties")
        items = props.items() if isinstance(props, dict) else ()
        return {k: input_from_schema(v, depth + 1) for k, v in items}
    if kind == "array":
        return [input_from_schema(schema.get("items"), depth + 1)]
    return {"integer": 1, "number": 1, "boolean": True, "null": None}.get(kind or "", "x")


@dataclass(frozen=True)
class ToolCall:
    name: str
    tool_use_id: str
    input_json: str  # streamed as string fragments (may be invalid JSON with raw_input)
    fragments: int
    stop: bool = True


@dataclass(frozen=True)
class Reply:
    text: str
    repeat: list[str]
    tool_calls: list[ToolCall]
    reasoning: list[dict[str, str]] = field(default_factory=list)  # reasoningContentEvent payloads


def _directed_calls(d: Directives, new_id: Callable[[], str]) -> list[ToolCall]:
    calls = []
    for spec in d.tool_calls:
        raw = spec.get("raw_input")
        text = raw if isinstance(raw, str) else orjson.dumps(spec.get("input", {})).decode()
        frags = spec.get("fragments", d.fragments)
        frags = frags if isinstance(frags, int) and not isinstance(frags, bool) else d.fragments
        tid = spec.get("toolUseId")
        tid = tid if isinstance(tid, str) and tid else new_id()
        calls.append(ToolCall(spec["name"], tid, text, max(1, frags), not spec.get("no_stop")))
    return calls


def _called_tools(
    content: str, tools: dict[str, dict[str, Any]], d: Directives, new_id: Callable[[], str]
) -> list[ToolCall]:
    names = [n for n in dict.fromkeys(CALL.findall(content)) if n in tools]
    return [
        ToolCall(n, new_id(), orjson.dumps(input_from_schema(tools[n])).decode(), d.fragments)
        for n in names
    ]


def split_thinking_mode(content: str) -> tuple[bool, str]:
    """(whether `content` turns thinking mode on, `content` without the thinking-mode tags)."""
    stripped, count = THINKING_MODE.subn("", content)
    return count > 0, stripped


def _reasoning_frames(reasoning: dict[str, str]) -> list[dict[str, str]]:
    frames: list[dict[str, str]] = [
        {"text": piece} for piece in split_text(reasoning["text"], REASONING_FRAMES)
    ] or [{"text": ""}]
    frames[-1]["signature"] = reasoning["signature"]
    return frames


def plan_reply(
    content: str,
    tools: dict[str, dict[str, Any]],
    d: Directives,
    new_id: Callable[[], str],
    *,
    native_thinking: bool = False,
) -> Reply:
    """What to answer to `content` (already stripped of directives)."""
    thinking_mode, content = split_thinking_mode(content)
    calls = _directed_calls(d, new_id) if d.tool_calls else _called_tools(content, tools, d, new_id)
    if d.text is not None:
        text = d.text
    elif calls or d.repeat_text:
        text = ""
    else:
        text = ("Echo: " + content.strip())[:ECHO_LIMIT]
    thinking = d.thinking
    if thinking is None and thinking_mode and d.reasoning is None:
        thinking = "Thinking about: " + content.strip()[:THINKING_ECHO_LIMIT]
    if thinking is not None:
        text = f"<thinking>{thinking}</thinking>\n\n{text}"
    reasoning = _reasoning_frames(d.reasoning) if d.reasoning is not None else []
    if native_thinking and not reasoning and d.thinking is None:
        thought = "Thinking about: " + content.strip()[:THINKING_ECHO_LIMIT]
        reasoning = _reasoning_frames({"text": thought, "signature": NATIVE_SIGNATURE})
    return Reply(text, d.repeat_text, calls, reasoning)
