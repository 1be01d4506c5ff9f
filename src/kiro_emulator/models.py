"""The model ids the emulated upstream knows (docs/kiro-protocol.md §4.1) and the
ListAvailableModels and getUsageLimits answers built from them (§4.3, §4.4)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .errors import IMPROPER

__all__ = [
    "KNOWN_MODELS",
    "NATIVE_SCHEMA",
    "ModelEntry",
    "context_window",
    "list_models_page",
    "native_thinking",
    "usage_limits",
]

# additionalModelRequestFieldsSchema of the 4.6+ Claude models (§4.3: native thinking
# adaptive/disabled, output_config.effort, max_tokens; kiro-cli sent
# {"output_config": {"effort": "xhigh"}} for claude-opus-4.7, §3.3).
NATIVE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "thinking": {
            "type": "object",
            "properties": {"type": {"type": "string", "enum": ["adaptive", "disabled"]}},
        },
        "output_config": {
            "type": "object",
            "properties": {
                "effort": {"type": "string", "enum": ["low", "medium", "high", "xhigh", "max"]}
            },
        },
        "max_tokens": {"type": "integer", "minimum": 1},
    },
}


@dataclass(frozen=True, slots=True)
class ModelEntry:
    model_id: str
    name: str
    context_window: int = 200_000
    max_output: int = 64_000
    rate: float = 1.0
    images: bool = True
    native: bool = False  # offers NATIVE_SCHEMA (thinking, effort, max_tokens)
    listed: bool = True  # in ListAvailableModels (legacy ids are accepted, no longer listed)


# The real 2026 list (§4.3): `auto` has a 1M window; sonnet-5 and opus-5 (1M) are new; the
# legacy upper-case ids were accepted in 2025 and are absent from the 2026 list.
KNOWN_MODELS: tuple[ModelEntry, ...] = (
    ModelEntry("auto", "Auto", 1_000_000, rate=1.0),
    ModelEntry("claude-sonnet-4", "Claude Sonnet 4", rate=1.3),
    ModelEntry("claude-sonnet-4.5", "Claude Sonnet 4.5", rate=1.3),
    ModelEntry("claude-sonnet-4.6", "Claude Sonnet 4.6", 1_000_000, rate=1.3, native=True),
    ModelEntry("claude-sonnet-5", "Claude Sonnet 5", 1_000_000, rate=1.3, native=True),
    ModelEntry("claude-haiku-4.5", "Claude Haiku 4.5", rate=0.4),
    ModelEntry("claude-opus-4.5", "Claude Opus 4.5", rate=2.2),
    ModelEntry("claude-opus-4.6", "Claude Opus 4.6", 1_000_000, rate=2.2, native=True),
    ModelEntry("claude-opus-4.7", "Claude Opus 4.7", 1_000_000, rate=2.2, native=True),
    ModelEntry("claude-opus-4.8", "Claude Opus 4.8", 1_000_000, rate=2.2, native=True),
    ModelEntry("claude-opus-5", "Claude Opus 5", 1_000_000, 128_000, rate=2.2, native=True),
    ModelEntry(
        "CLAUDE_SONNET_4_20250514_V1_0", "Claude Sonnet 4 (legacy id)", rate=1.3, listed=False
    ),
    ModelEntry(
        "CLAUDE_3_7_SONNET_20250219_V1_0", "Claude 3.7 Sonnet (legacy)", rate=1.3, listed=False
    ),
    ModelEntry(
        "CLAUDE_SONNET_4_5_20250929_V1_0", "Claude Sonnet 4.5 (legacy)", rate=1.3, listed=False
    ),
    ModelEntry("deepseek-3.2", "DeepSeek 3.2", 128_000, 8_192, 0.5, images=False),
    ModelEntry("glm-5", "GLM 5", 128_000, 8_192, 0.5, images=False),
    ModelEntry("minimax-m2.1", "MiniMax M2.1", 200_000, 8_192, 0.5, images=False),
    ModelEntry("minimax-m2.5", "MiniMax M2.5", 200_000, 8_192, 0.5, images=False),
    ModelEntry("qwen3-coder-next", "Qwen3 Coder Next", 256_000, 8_192, 0.5, images=False),
)

_BY_ID = {m.model_id: m for m in KNOWN_MODELS}
FREE_LIMIT = 50


def context_window(model_id: str) -> int:
    entry = _BY_ID.get(model_id)
    return entry.context_window if entry else 200_000


def _model_json(m: ModelEntry) -> dict[str, Any]:
    return {
        "modelId": m.model_id,
        "modelName": m.name,
        "description": f"{m.name} (Kiro emulator)",
        "supportedInputTypes": ["TEXT", "IMAGE"] if m.images else ["TEXT"],
        "tokenLimits": {"maxInputTokens": m.context_window, "maxOutputTokens": m.max_output},
        "promptCaching": {
            "supportsPromptCaching": m.model_id.startswith("claude"),
            "maximumCacheCheckpointsPerRequest": 4,
            "minimumTokensPerCacheCheckpoint": 1024,
        },
        **({"additionalModelRequestFieldsSchema": NATIVE_SCHEMA} if m.native else {}),
        "rateMultiplier": m.rate,
        "rateUnit": "Credit",
    }


def native_thinking(body: dict[str, Any], model_id: str) -> bool:
    """Check a chat body's `additionalModelRequestFields` against the model's schema (only the
    NATIVE_SCHEMA models take any: thinking.type adaptive|disabled, output_config.effort in its
    enum, max_tokens >= 1; anything else is 400 "Improperly formed request."). True when it turns
    native thinking on (the reply then carries reasoningContentEvent frames)."""
    fields = body.get("additionalModelRequestFields")
    if fields is None:
        return False
    entry = _BY_ID.get(model_id)
    if not isinstance(fields, dict) or entry is None or not entry.native:
        raise IMPROPER.because(f"{model_id} takes no additionalModelRequestFields")
    props = NATIVE_SCHEMA["properties"]
    unknown = set(fields) - set(props)
    if unknown:
        raise IMPROPER.because(f"additionalModelRequestFields: unknown {sorted(unknown)}")
    thinking = fields.get("thinking", {"type": "disabled"})
    kinds = props["thinking"]["properties"]["type"]["enum"]
    if not isinstance(thinking, dict) or thinking.get("type") not in kinds:
        raise IMPROPER.because("additionalModelRequestFields.thinking.type")
    config = fields.get("output_config", {})
    efforts = props["output_config"]["properties"]["effort"]["enum"]
    if not isinstance(config, dict) or config.get("effort", "high") not in efforts:
        raise IMPROPER.because("additionalModelRequestFields.output_config.effort")
    max_tokens = fields.get("max_tokens", 1)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise IMPROPER.because("additionalModelRequestFields.max_tokens")
    return bool(thinking.get("type") == "adaptive")


def list_models_page(
    max_results: int, next_token: str | None, offered: Collection[str] | None = None
) -> dict[str, Any]:
    """One page of ListAvailableModels; `nextToken` is an opaque offset string. `offered`
    (an account's `models` behaviour) narrows the list to those ids."""
    listed = [m for m in KNOWN_MODELS if m.listed and (offered is None or m.model_id in offered)]
    start = int(next_token) if next_token and next_token.isdigit() else 0
    size = max(1, min(max_results, 50))
    page = listed[start : start + size]
    end = start + len(page)
    return {
        "defaultModel": {"modelId": "auto"},
        "models": [_model_json(m) for m in page],
        "nextToken": str(end) if end < len(listed) else None,
    }


def next_month_start(now: float) -> int:
    """Epoch seconds of the first day of the next month, UTC (when free quotas reset)."""
    t = datetime.fromtimestamp(now, UTC)
    year, month = (t.year + 1, 1) if t.month == 12 else (t.year, t.month + 1)
    return int(datetime(year, month, 1, tzinfo=UTC).timestamp())


def usage_limits(
    used: float,
    exhausted: bool,
    now: float,
    email: str,
    reset_at: float | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    """getUsageLimits for an account with `limit` requests (credits) a month (the free tier's
    50 by default) that has spent `used`; the quota resets at `reset_at` (epoch seconds), by
    default at the start of next month."""
    limit = FREE_LIMIT if limit is None else limit
    current = float(limit) if exhausted else float(used)
    reset = next_month_start(now) if reset_at is None else int(reset_at)
    return {
        "usageBreakdownList": [
            {
                "resourceType": "CREDIT",
                "unit": "INVOCATIONS",
                "displayName": "Credit",
                "displayNamePlural": "Credits",
                "currentUsage": int(current),
                "currentUsageWithPrecision": current,
                "usageLimit": limit,
                "usageLimitWithPrecision": float(limit),
                "nextDateReset": reset,
                "overageCharges": 0,
                "overageRate": 0.04,
                "overageCap": 0,
                "currency": "USD",
                "currentOverages": 0,
                "bonuses": [],
                "freeTrialInfo": None,
            }
        ],
        "userInfo": {"email": email, "userId": email.split("@")[0]},
        "subscriptionInfo": {
            "type": "Q_DEVELOPER_STANDALONE_FREE",
            "subscriptionTitle": "KIRO FREE",
            "overageCapability": "OVERAGE_INCAPABLE",
            "upgradeCapability": "UPGRADE_CAPABLE",
            "subscriptionManagementTarget": "PURCHASE",
        },
        "daysUntilReset": max(0, int((reset - now) // 86_400)),
        "nextDateReset": reset,
        "overageConfiguration": {"overageStatus": "DISABLED"},
        "limits": [],
    }
