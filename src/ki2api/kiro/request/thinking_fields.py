"""Kiro's thinking mode: the tags that turn it on (docs/kiro-protocol.md §3.8). Pure.

Kiro has no request field for extended thinking that every model takes; the Kiro proxies turn it
on by text: `<thinking_mode>enabled</thinking_mode><max_thinking_length>N</max_thinking_length>`,
or for adaptive thinking
`<thinking_mode>adaptive</thinking_mode><thinking_effort>E</thinking_effort>`.
The model then starts its answer with `<thinking>…</thinking>` (split off by
`kiro/stream/thinking_split.py`).

Models whose ListAvailableModels `additionalModelRequestFieldsSchema` offers them (the 4.6+
models, docs/kiro-protocol.md §4.3) get the native fields instead (`native_request_fields`):
`{"thinking": {"type": "adaptive"}, "output_config": {"effort": E}, "max_tokens": N}`, as kiro-cli
sends them (§3.3, §3.8). Native thinking has no budget: an `enabled` budget becomes an effort
(up to 4096 tokens low, up to 16384 medium, more high). Efforts keep xhigh and max natively.

* Budget (`enabled`): `ThinkingConfig.budget_tokens` clamped to [1024, 24576]; none given means
  20000. These are kiro.rs's and AIClient's numbers (kiro-gw uses 4000 capped at 10000); 1024 is
  also Anthropic's own minimum, and Claude Code's 31999 becomes 24576.
* Effort (`adaptive`): Kiro's tag takes low / medium / high. `minimal` -> low; `xhigh` and `max`
  -> high; none or anything unknown -> high (kiro.rs's default for adaptive).
"""

from __future__ import annotations

from typing import Final

from ki2api.core.messages import ThinkingConfig

__all__ = [
    "DEFAULT_BUDGET",
    "DEFAULT_EFFORT",
    "MAX_BUDGET",
    "MIN_BUDGET",
    "clamp_budget",
    "kiro_effort",
    "native_effort",
    "native_request_fields",
    "thinking_prefix",
]

MIN_BUDGET: Final = 1024
MAX_BUDGET: Final = 24576
DEFAULT_BUDGET: Final = 20000
DEFAULT_EFFORT: Final = "high"
_EFFORTS: Final = {
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "xhigh": "high",
    "max": "high",
}


def clamp_budget(budget_tokens: int | None) -> int:
    """The `max_thinking_length` Kiro gets for a requested budget (None: the default)."""
    if budget_tokens is None:
        return DEFAULT_BUDGET
    return max(MIN_BUDGET, min(MAX_BUDGET, budget_tokens))


def kiro_effort(effort: str | None) -> str:
    """The `thinking_effort` Kiro gets for a requested effort (None or unknown: high)."""
    return _EFFORTS.get((effort or "").strip().lower(), DEFAULT_EFFORT)


_NATIVE_EFFORTS: Final = ("low", "medium", "high", "xhigh", "max")


def native_effort(config: ThinkingConfig) -> str:
    """The `output_config.effort` for `config`: the asked effort (minimal -> low; unknown or
    none -> high), or for a budget: <= 4096 low, <= 16384 medium, else high."""
    if config.kind == "adaptive":
        asked = (config.effort or "").strip().lower()
        if asked == "minimal":
            return "low"
        return asked if asked in _NATIVE_EFFORTS else DEFAULT_EFFORT
    budget = clamp_budget(config.budget_tokens)
    return "low" if budget <= 4096 else "medium" if budget <= 16384 else "high"


def native_request_fields(
    config: ThinkingConfig | None, max_tokens: int | None, offered: frozenset[str]
) -> dict[str, object]:
    """The `additionalModelRequestFields` for a model that offers `offered` natively ("thinking",
    "effort", "max_tokens"); empty when there is nothing to send. Thinking goes natively only when
    the model offers the `thinking` field (else `thinking_prefix` carries it as text)."""
    fields: dict[str, object] = {}
    if config is not None and "thinking" in offered:
        fields["thinking"] = {"type": "adaptive"}
        if "effort" in offered:
            fields["output_config"] = {"effort": native_effort(config)}
    if max_tokens is not None and max_tokens > 0 and "max_tokens" in offered:
        fields["max_tokens"] = max_tokens
    return fields


def thinking_prefix(config: ThinkingConfig | None) -> str:
    """The tags that turn thinking on for `config`, or "" when thinking is off (None)."""
    if config is None:
        return ""
    if config.kind == "adaptive":
        effort = kiro_effort(config.effort)
        return f"<thinking_mode>adaptive</thinking_mode><thinking_effort>{effort}</thinking_effort>"
    budget = clamp_budget(config.budget_tokens)
    return (
        f"<thinking_mode>enabled</thinking_mode><max_thinking_length>{budget}</max_thinking_length>"
    )
