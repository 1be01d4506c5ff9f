"""Model catalogue: public model names and the Kiro model ids they map to.

`resolve()` first looks a name up exactly (case-insensitive; the table can be extended or
overridden from configuration, `KI2API_MODEL_MAP`, a JSON object of public name -> Kiro id).
A name that is not in the table but is a Claude model name (`claude-opus-5-5`,
`claude-sonnet-4-5-20250929[1m]`, `claude-haiku-latest`, `claude-3-7-sonnet`, …) then goes
through the family rule: the catalogue entry of the same family (opus, sonnet, haiku) whose
version is the same, else the newest one not newer than asked for, else the oldest one of the
family. docs/models.md explains the choice. Other names resolve to None (404).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

__all__ = [
    "DEFAULT_MODEL",
    "FAMILIES",
    "ModelCatalogue",
    "ModelInfo",
    "default_catalogue",
    "family_version",
]

DEFAULT_MODEL = "claude-sonnet-4-20250514"
FAMILIES = ("opus", "sonnet", "haiku")


@dataclass(frozen=True, slots=True)
class ModelInfo:
    id: str  # public name, as clients send it
    kiro_id: str  # the upstream modelId
    display_name: str
    context_window: int = 200_000
    max_output_tokens: int = 64_000
    created: int = 1_747_267_200  # 2025-05-15, a fixed epoch so /v1/models is stable

    @property
    def description(self) -> str:
        """One line for model listings: what this name is served by."""
        return f"{self.display_name}, served by the Kiro model {self.kiro_id}"


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

_FAMILY = "(?P<family>opus|sonnet|haiku)"
_VERSION = r"(?P<major>\d{1,2})(?:[-.](?P<minor>\d{1,2}))?"
_SUFFIXES = re.compile(r"(?:\[1m\]|-latest|-\d{8})$")
# claude-opus-4-5, claude-opus-4.5, claude-opus-5, claude-opus; and the Claude 3 order,
# claude-3-7-sonnet, claude-3-5-haiku, claude-3-opus.
_PATTERNS = (
    re.compile(rf"claude-{_FAMILY}(?:-{_VERSION})?"),
    re.compile(rf"claude-{_VERSION}-{_FAMILY}"),
)

Version = tuple[int, int]


def family_version(name: str) -> tuple[str, Version | None] | None:
    """(family, (major, minor) or None when no version is given) of a Claude model name.

    Case, surrounding blanks, a `[1m]` suffix, a trailing date `-YYYYMMDD` and `-latest` are
    ignored, in any order. None when the name is not a Claude opus/sonnet/haiku name.
    """
    text = name.strip().lower()
    while (stripped := _SUFFIXES.sub("", text)) != text:
        text = stripped
    for pattern in _PATTERNS:
        match = pattern.fullmatch(text)
        if match is None:
            continue
        if match["major"] is None:
            return match["family"], None
        return match["family"], (int(match["major"]), int(match["minor"] or 0))
    return None


class ModelCatalogue:
    """Ordered public names -> ModelInfo. Lookup is case-insensitive.

    With `family_fallback` (the default), Claude names not in the table resolve through the
    family rule (module docstring); without it, only exact names resolve.
    """

    def __init__(self, models: tuple[ModelInfo, ...], *, family_fallback: bool = True) -> None:
        self._models = models
        self._by_name = {m.id.lower(): m for m in models}
        self.family_fallback = family_fallback
        self._families = _family_table(models)

    def resolve(self, name: str) -> ModelInfo | None:
        """The entry for `name`; a family match carries `name` (as sent) as its public id."""
        exact = self._by_name.get(name.strip().lower())
        if exact is not None or not self.family_fallback:
            return exact
        parsed = family_version(name)
        if parsed is None:
            return None
        base = self.closest(*parsed)
        return None if base is None else replace(base, id=name.strip())

    def closest(self, family: str, version: Version | None) -> ModelInfo | None:
        """The entry of `family` for `version`: the same version, else the newest not newer,
        else the oldest of the family (None asks for the newest). None: no such family here."""
        known = self._families.get(family)
        if not known:
            return None
        if version is None:
            return known[-1][1]
        older = [info for v, info in known if v <= version]
        return older[-1] if older else known[0][1]

    def all(self) -> tuple[ModelInfo, ...]:
        return self._models

    def mapping(self) -> tuple[tuple[str, str], ...]:
        """(public name, Kiro id) of every listed entry, in listing order."""
        return tuple((m.id, m.kiro_id) for m in self._models)

    def family_targets(self) -> tuple[tuple[str, str], ...]:
        """(family, Kiro id of its newest entry): where unlisted future versions go."""
        return tuple((f, known[-1][1].kiro_id) for f, known in self._families.items())

    def with_overrides(self, overrides: Mapping[str, str]) -> ModelCatalogue:
        """A catalogue where each `public -> kiro id` pair replaces or adds an entry."""
        models = list(self._models)
        for public, kiro_id in overrides.items():
            known = self._by_name.get(public.strip().lower())
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
        return ModelCatalogue(tuple(models), family_fallback=self.family_fallback)


def _family_table(models: tuple[ModelInfo, ...]) -> dict[str, list[tuple[Version, ModelInfo]]]:
    """family -> [(version, first entry of that version)] sorted by version, from the public
    names of `models` (so `KI2API_MODEL_MAP` overrides of listed names are honoured)."""
    table: dict[str, dict[Version, ModelInfo]] = {}
    for info in models:
        parsed = family_version(info.id)
        if parsed is None:
            continue
        family, version = parsed
        if version is not None:
            table.setdefault(family, {}).setdefault(version, info)
    return {f: sorted(v.items(), key=lambda item: item[0]) for f, v in table.items()}


def default_catalogue(*, family_fallback: bool = True) -> ModelCatalogue:
    models = tuple(ModelInfo(p, k, d, w) for p, k, d, w in _DEFAULTS)
    return ModelCatalogue(models, family_fallback=family_fallback)
