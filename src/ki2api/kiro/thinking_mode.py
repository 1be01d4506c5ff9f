"""Kiro's thinking mode: the tags that turn it on (docs/kiro-protocol.md §3.8). Pure.

Kiro has no request field for extended thinking that every model takes; the Kiro proxies turn it
on by text: `<thinking_mode>enabled</thinking_mode><max_thinking_length>N</max_thinking_length>`,
or for adaptive thinking
`<thinking_mode>adaptive</thinking_mode><thinking_effort>E</thinking_effort>`.
The model then starts its answer with `<thinking>…</thinking>` (split off by `kiro.thinking`).

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
