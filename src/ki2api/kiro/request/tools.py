"""Client tools -> what Kiro accepts, invisibly to the client. Pure and deterministic.

Every rule, with its source (docs/kiro-protocol.md sections, proxy tags as used there):

* Names. Kiro takes `^[a-zA-Z][a-zA-Z0-9_-]*$`, at most 64 characters (§3.6: q-cli
  consts, kiro-gw, AIClient; our emulator enforces exactly this). A name that fits is sent as
  is. Any other name becomes `{sanitised prefix}_{first 10 hex of sha256(name)}`, at most 64
  characters (AIClient shortens with a sha256 prefix too): characters outside the alphabet become
  `_`, and a prefix that does not start with a letter gets `t_` in front. The same name always
  gives the same short name, in every request, so history stays consistent across turns. Should
  a short name equal a name that already fits, or another short name, the next candidate is made
  from `sha256(name + "#k")`, k = 1, 2, ... in sorted-name order: distinct names never collide.
  The same mapping applies to offered tools, to history `toolUses` and to placeholder specs, and
  `KiroRequest.tool_names` maps the short names back for the response.
* Descriptions. Blank -> `Tool: NAME` (Kiro refuses empty ones; §3.6, kiro-gw). Over 10,000
  characters (the cap of caidaoli, kiro.rs, zzb; §3.6) -> the full
  text moves into a "Tool documentation" section appended to the system text, and the spec keeps
  the first 200 characters plus a reference to that section (what kiro-gw does; truncating, as
  the others do, loses documentation the model needs).
* Schemas (§3.6, kiro-gw): the top level must be an object schema: a
  missing, non-mapping or empty schema becomes `{"type": "object", "properties": {}}`, a schema
  of another `type` is replaced by that (OpenAI itself only takes object parameters); a schema
  without `type` gets `"type": "object"`, and a `type` list holding "object" becomes "object".
  `properties` is added to the top-level object when missing. In every (sub)schema `$schema` is
  dropped and an empty `required: []` is dropped. Everything else is kept, `additionalProperties`
  included (kiro-gw removes it, kiro.rs sends it: conflicting reports, and dropping it changes
  what the model may send).
* `tool_choice` and `parallel_tool_calls`: Kiro has no such fields, and `chatTriggerType: AUTO`
  (caidaoli's idea) is rejected (§3.3). So: `auto` sends the tools; `none` sends no offered tools
  (only placeholder specs for tools used in history, which Kiro needs) and asks for a text
  answer; `required` and a named tool send the tools and ask for a call (of that tool); parallel
  off asks for at most one call (the translator also drops any later call, see
  `events.KiroStreamTranslator`). The instructions (`INSTRUCTIONS`) are appended to the current
  user message, after a blank line. docs/tools.md describes this for clients.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from ki2api.core.messages import ToolChoice, ToolSpec
from ki2api.kiro.request.history import plain_json

__all__ = [
    "DESCRIPTION_SUMMARY_CHARS",
    "INSTRUCTIONS",
    "MAX_DESCRIPTION",
    "MAX_TOOL_NAME",
    "PLACEHOLDER_TOOL_DESCRIPTION",
    "PLACEHOLDER_TOOL_SCHEMA",
    "TOOL_DOCS_HEADING",
    "ToolPlan",
    "assign_tool_names",
    "choice_instruction",
    "fit_description",
    "is_kiro_tool_name",
    "normalize_schema",
    "plan_tools",
    "shorten_tool_name",
    "tool_documentation",
    "tool_spec_entry",
]

MAX_TOOL_NAME = 64
MAX_DESCRIPTION = 10_000
DESCRIPTION_SUMMARY_CHARS = 200
_HASH_CHARS = 10
_NAME = re.compile(r"^[a-zA-Z][a-zA-Z0-9_-]*$")
_BAD_CHARS = re.compile(r"[^a-zA-Z0-9_-]")
PLACEHOLDER_TOOL_DESCRIPTION = "Tool used earlier in this conversation."
PLACEHOLDER_TOOL_SCHEMA: Mapping[str, Any] = MappingProxyType({"type": "object", "properties": {}})
TOOL_DOCS_HEADING = "# Tool documentation"

# Every text the gateway adds for tool_choice / parallel_tool_calls, in one place.
INSTRUCTIONS: Mapping[str, str] = MappingProxyType(
    {
        "none": "Do not use any tool for this reply: answer with text only.",
        "required": "This reply must use at least one of the offered tools.",
        "tool": "This reply must use the tool {name}, and no other tool.",
        "single": "Use at most one tool in this reply: make a single tool call, not several.",
        "docs_intro": (
            "Full descriptions of tools whose specification refers to this section,"
            " one subsection per tool name:"
        ),
        "docs_reference": (
            " [...] (Full description: see the '{name}' entry of the '# Tool documentation'"
            " section of the system prompt.)"
        ),
    }
)
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SCHEMA_ONE = ("items", "additionalProperties", "not", "contains", "if", "then", "else")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")


# -- names ------------------------------------------------------------------------------------


def is_kiro_tool_name(name: str) -> bool:
    return len(name) <= MAX_TOOL_NAME and _NAME.match(name) is not None


def shorten_tool_name(name: str, attempt: int = 0) -> str:
    """The short Kiro name for `name` (the `attempt`-th candidate when earlier ones collide)."""
    seed = name if attempt == 0 else f"{name}#{attempt}"
    digest = hashlib.sha256(seed.encode("utf-8")).hexdigest()[:_HASH_CHARS]
    prefix = _BAD_CHARS.sub("_", name)
    if not prefix[:1].isascii() or not prefix[:1].isalpha():
        prefix = "t_" + prefix
    return f"{prefix[: MAX_TOOL_NAME - _HASH_CHARS - 1]}_{digest}"


def assign_tool_names(names: Iterable[str]) -> dict[str, str]:
    """Client name -> Kiro name for each distinct name; injective and order-independent."""
    unique = sorted(set(names))
    out = {n: n for n in unique if is_kiro_tool_name(n)}
    taken = set(out)
    for name in unique:
        if name in out:
            continue
        attempt = 0
        short = shorten_tool_name(name)
        while short in taken:
            attempt += 1
            short = shorten_tool_name(name, attempt)
        taken.add(short)
        out[name] = short
    return out


# -- descriptions and schemas -----------------------------------------------------------------


def fit_description(kiro_name: str, description: str) -> tuple[str, str | None]:
    """(the spec's description, the full text to move to the system prompt or None)."""
    text = description.strip()
    if not text:
        return f"Tool: {kiro_name}", None
    if len(text) <= MAX_DESCRIPTION:
        return text, None
    summary = text[:DESCRIPTION_SUMMARY_CHARS].rstrip()
    return summary + INSTRUCTIONS["docs_reference"].format(name=kiro_name), text


def tool_documentation(docs: Sequence[tuple[str, str]]) -> str:
    """The system-prompt section holding moved descriptions ("" when there are none)."""
    if not docs:
        return ""
    sections = [f"## {name}\n\n{text}" for name, text in docs]
    return "\n\n".join([TOOL_DOCS_HEADING, INSTRUCTIONS["docs_intro"], *sections])


def _clean(schema: Any) -> Any:
    """Drop `$schema` and empty `required` in this schema and every subschema (a copy)."""
    if not isinstance(schema, dict):
        return schema
    out = {k: v for k, v in schema.items() if k != "$schema" and not (k == "required" and v == [])}
    for key in _SCHEMA_MAPS:
        if isinstance(out.get(key), dict):
            out[key] = {k: _clean(v) for k, v in out[key].items()}
    for key in _SCHEMA_ONE:
        if isinstance(out.get(key), dict):
            out[key] = _clean(out[key])
    for key in _SCHEMA_LISTS:
        if isinstance(out.get(key), list):
            out[key] = [_clean(v) for v in out[key]]
    return out


def normalize_schema(schema: Any) -> dict[str, Any]:
    """A JSON-ready object schema Kiro accepts (rules in the module docstring)."""
    plain = plain_json(schema)
    if not isinstance(plain, dict) or not plain:
        return {"type": "object", "properties": {}}
    kind = plain.get("type", "object")
    if isinstance(kind, list) and "object" in kind:
        kind = "object"
    if kind != "object":
        return {"type": "object", "properties": {}}
    out: dict[str, Any] = _clean({**plain, "type": "object"})
    if not isinstance(out.get("properties"), dict):
        out["properties"] = {}
    return out


def tool_spec_entry(name: str, description: str, schema: Any) -> dict[str, Any]:
    return {
        "toolSpecification": {
            "name": name,
            "description": description,
            "inputSchema": {"json": plain_json(schema)},
        }
    }


# -- tool_choice ------------------------------------------------------------------------------


def choice_instruction(choice: ToolChoice, kiro_name: str | None, offered: bool) -> str:
    """The text appended to the current message for `choice` ("" for none needed)."""
    if choice.mode == "none":
        return INSTRUCTIONS["none"]
    if not offered:
        return ""
    parts = []
    if choice.mode == "required":
        parts.append(INSTRUCTIONS["required"])
    elif choice.mode == "tool":
        parts.append(INSTRUCTIONS["tool"].format(name=kiro_name or choice.name))
    if not choice.parallel:
        parts.append(INSTRUCTIONS["single"])
    return " ".join(parts)


# -- the whole plan ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ToolPlan:
    """What the request needs for the tools of one conversation.

    `specs`: the `userInputMessageContext.tools` entries; `names`: client name -> Kiro name for
    every tool name of the request (offered and used in history); `documentation`: a section to
    append to the system text ("" if none); `instruction`: text to append to the current message
    ("" if none); `offered`: client names of the tools offered this turn.
    """

    specs: list[dict[str, Any]]
    names: dict[str, str]
    documentation: str
    instruction: str
    offered: tuple[str, ...]


def _unique(tools: Iterable[ToolSpec]) -> list[ToolSpec]:
    seen: dict[str, ToolSpec] = {}
    for tool in tools:
        seen.setdefault(tool.name, tool)
    return list(seen.values())


def plan_tools(tools: Sequence[ToolSpec], choice: ToolChoice, used: Sequence[str]) -> ToolPlan:
    """Specs, names, moved documentation and instructions for one request.

    `used` lists the tool names of the history's toolUses, in order of first use; each one
    not offered this turn gets a placeholder spec after the offered ones.
    """
    candidates = _unique(tools)
    names = assign_tool_names([*(t.name for t in candidates), *used])
    offer = [] if choice.mode == "none" else candidates
    specs: list[dict[str, Any]] = []
    docs: list[tuple[str, str]] = []
    for tool in offer:
        kiro = names[tool.name]
        description, moved = fit_description(kiro, tool.description)
        specs.append(tool_spec_entry(kiro, description, normalize_schema(tool.input_schema)))
        if moved is not None:
            docs.append((kiro, moved))
    have = {t.name for t in offer}
    for name in dict.fromkeys(used):
        if name not in have:
            specs.append(
                tool_spec_entry(names[name], PLACEHOLDER_TOOL_DESCRIPTION, PLACEHOLDER_TOOL_SCHEMA)
            )
    instruction = ""
    if candidates or specs:
        named = names.get(choice.name) if choice.name is not None else None
        instruction = choice_instruction(choice, named, offered=bool(offer))
    return ToolPlan(
        specs, names, tool_documentation(docs), instruction, tuple(t.name for t in offer)
    )
