"""Model catalogue: public model names and the Kiro model ids they map to.

Data plus `resolve()`; the table can be extended or overridden from configuration
(`KI2API_MODEL_MAP`, a JSON object of public name -> Kiro id).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["DEFAULT_MODEL", "ModelCatalogue", "ModelInfo", "default_catalogue"]

DEFAULT_MODEL = "claude-sonnet-4-20250514"


@dataclass(frozen=True, slots=True)
class ModelInfo:
    id: str  # public name, as clients send it
    kiro_id: str  # the upstream modelId
    display_name: str
    context_window: int = 200_000
    max_output_tokens: int = 64_000
    created: int = 1_747_267_200  # 2025-05-15, a fixed epoch so /v1/models is stable


# (public name, kiro id, display name, context window)
_DEFAULTS: tuple[tuple[str, str, str, int], ...] = (
    ("claude-sonnet-4-20250514", "claude-sonnet-4", "Claude Sonnet 4", 200_000),
    ("claude-sonnet-4-0", "claude-sonnet-4", "Claude Sonnet 4", 200_000),
    ("claude-sonnet-4-5-20250929", "claude-sonnet-4.5", "Claude Sonnet 4.5", 200_000),
    ("claude-sonnet-4-5", "claude-sonnet-4.5", "Claude Sonnet 4.5", 200_000),
    ("claude-sonnet-4-6", "claude-sonnet-4.6", "Claude Sonnet 4.6", 1_000_000),
    ("claude-haiku-4-5-20251001", "claude-haiku-4.5", "Claude Haiku 4.5", 200_000),
    ("claude-haiku-4-5", "claude-haiku-4.5", "Claude Haiku 4.5", 200_000),
    ("claude-opus-4-5-20251101", "claude-opus-4.5", "Claude Opus 4.5", 200_000),
    ("claude-opus-4-5", "claude-opus-4.5", "Claude Opus 4.5", 200_000),
    ("claude-opus-4-6", "claude-opus-4.6", "Claude Opus 4.6", 1_000_000),
    ("claude-opus-4-7", "claude-opus-4.7", "Claude Opus 4.7", 1_000_000),
    ("claude-opus-4-8", "claude-opus-4.8", "Claude Opus 4.8", 1_000_000),
    ("auto", "auto", "Kiro auto", 200_000),
)


class ModelCatalogue:
    """Ordered public names -> ModelInfo. Lookup is case-insensitive."""

    def __init__(self, models: tuple[ModelInfo, ...]) -> None:
        self._models = models
        self._by_name = {m.id.lower(): m for m in models}

    def resolve(self, name: str) -> ModelInfo | None:
        return self._by_name.get(name.strip().lower())

    def all(self) -> tuple[ModelInfo, ...]:
        return self._models

    def with_overrides(self, overrides: Mapping[str, str]) -> ModelCatalogue:
        """A catalogue where each `public -> kiro id` pair replaces or adds an entry."""
        models = list(self._models)
        for public, kiro_id in overrides.items():
            known = self.resolve(public)
            base = next((m for m in models if m.kiro_id == kiro_id), None)
            info = ModelInfo(
                id=public,
                kiro_id=kiro_id,
                display_name=base.display_name if base else public,
                context_window=base.context_window if base else 200_000,
            )
            if known is not None:
                models = [info if m.id == known.id else m for m in models]
            else:
                models.append(info)
        return ModelCatalogue(tuple(models))


def default_catalogue() -> ModelCatalogue:
    return ModelCatalogue(tuple(ModelInfo(p, k, d, w) for p, k, d, w in _DEFAULTS))
