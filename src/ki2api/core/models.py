"""Model catalogue: public model names and the Kiro model ids they map to.

`resolve()` first looks a name up exactly (case-insensitive; the table can be extended or
overridden from configuration, `KI2API_MODEL_MAP`, a JSON object of public name -> Kiro id),
then as a Kiro id (`claude-opus-4.8`). A Claude model name that is not listed
(`claude-sonnet-4-5-20250929[1m]`, `claude-haiku-latest`, `claude-3-7-sonnet`, …) then goes
through the family rule: the entry of the same family (opus, sonnet, haiku) and version; with
`family_fallback`, a name without a version gets the newest of the family and a name older than
every listed one the oldest. A newer or in-between version is never served by an older model:
it resolves to None (404), and `suggestions()` names the closest listed models.

The static table is the fallback; `with_offered()` builds the catalogue of what the accounts
really offer (ListAvailableModels, kiro/accounts/catalogue.py), with each model's real limits.
docs/models.md explains the choice.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

__all__ = [
    "DEFAULT_MODEL",
    "FAMILIES",
    "ModelCatalogue",
    "ModelInfo",
    "OfferedModel",
    "default_catalogue",
    "family_version",
    "not_offered_hint",
    "public_name",
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
    images: bool = True  # accepts image input
    # what the model's additionalModelRequestFieldsSchema offers: "thinking", "effort",
    # "max_tokens" (empty: unknown, or nothing native; thinking then travels as text tags)
    native: frozenset[str] = frozenset()

    @property
    def description(self) -> str:
        """One line for model listings: what this name is served by."""
        return f"{self.display_name}, served by the Kiro model {self.kiro_id}"


@dataclass(frozen=True, slots=True)
class OfferedModel:
    """One model of a ListAvailableModels answer (kiro/accounts/catalogue.py parses it)."""

    kiro_id: str
    display_name: str
    context_window: int = 200_000
    max_output_tokens: int = 64_000
    images: bool = True
    native: frozenset[str] = frozenset()


def public_name(kiro_id: str) -> str:
    """The public name of a Kiro id the static table does not know: dotted Claude versions
    become dashed (`claude-opus-5.1` -> `claude-opus-5-1`), other ids stay as they are."""
    if kiro_id.lower().startswith("claude-"):
        return re.sub(r"(?<=\d)\.(?=\d)", "-", kiro_id)
    return kiro_id


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
    ("claude-sonnet-5", "claude-sonnet-5", "Claude Sonnet 5", 1_000_000),
    ("claude-opus-5", "claude-opus-5", "Claude Opus 5", 1_000_000),
    ("auto", "auto", "Kiro auto", 1_000_000),
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

    Claude names not in the table resolve to the listed entry of the same family and version
    (dates, `-latest`, `[1m]` ignored). With `family_fallback` (the default) a name without a
    version resolves to the newest of its family and one older than every listed version to
    the oldest; a newer or in-between version never resolves (module docstring).
    """

    def __init__(self, models: tuple[ModelInfo, ...], *, family_fallback: bool = True) -> None:
        self._models = models
        self._by_name = {m.id.lower(): m for m in models}
        self._by_kiro_id: dict[str, ModelInfo] = {}
        for m in models:
            self._by_kiro_id.setdefault(m.kiro_id.lower(), m)
        self.family_fallback = family_fallback
        self._families = _family_table(models)

    def resolve(self, name: str) -> ModelInfo | None:
        """The entry for `name`; a family match carries `name` (as sent) as its public id."""
        key = name.strip().lower()
        exact = self._by_name.get(key)
        if exact is not None:
            return exact
        by_kiro_id = self._by_kiro_id.get(key)  # a Kiro id sent as the name: echoed as sent
        if by_kiro_id is not None:
            return replace(by_kiro_id, id=name.strip())
        parsed = family_version(name)
        if parsed is None:
            return None
        base = self.closest(*parsed)
        return None if base is None else replace(base, id=name.strip())

    def closest(self, family: str, version: Version | None) -> ModelInfo | None:
        """The entry of `family` for `version`: the same version; with `family_fallback` also
        the newest for no version and the oldest for a version older than every listed one.
        None: no such family here, or a version newer than (or between) the listed ones."""
        known = self._families.get(family)
        if not known:
            return None
        same = [info for v, info in known if v == version]
        if same:
            return same[0]
        if not self.family_fallback:
            return None
        if version is None:
            return known[-1][1]
        return known[0][1] if version < known[0][0] else None

    def suggestions(self, name: str, limit: int = 3) -> list[str]:
        """The listed public names closest to `name`, best first: the same family's nearest
        versions (newest first on a tie), else names spelled alike, else the newest entries."""
        short = self._short_names()
        parsed = family_version(name)
        if parsed is not None and parsed[0] in short:
            family, version = parsed
            known = sorted(short[family])
            want = version or known[-1]

            def distance(v: Version) -> tuple[int, int]:
                return (abs((v[0] - want[0]) * 100 + v[1] - want[1]), -(v[0] * 100 + v[1]))

            return [short[family][v] for v in sorted(known, key=distance)[:limit]]
        names = [m.id for m in self._models]
        alike = difflib.get_close_matches(name.strip().lower(), names, n=limit, cutoff=0.6)
        newest = [short[f][max(short[f])] for f in FAMILIES if f in short]
        return alike or newest[:limit] or names[:limit]

    def _short_names(self) -> dict[str, dict[Version, str]]:
        """family -> version -> the shortest listed public name of that version."""
        out: dict[str, dict[Version, str]] = {}
        for info in self._models:
            parsed = family_version(info.id)
            if parsed is None or parsed[1] is None:
                continue
            names = out.setdefault(parsed[0], {})
            old = names.get(parsed[1])
            if old is None or len(info.id) < len(old):
                names[parsed[1]] = info.id
        return out

    def kiro_ids(self) -> frozenset[str]:
        """Every Kiro model id this catalogue can send."""
        return frozenset(m.kiro_id for m in self._models)

    def with_offered(
        self, offered: Iterable[OfferedModel], *, keep_unoffered: bool = False
    ) -> ModelCatalogue:
        """The catalogue of what is really offered: the listed entries whose Kiro id is offered,
        with the offered limits, image support and native fields; then an entry per offered
        Kiro id the table lacks (public name: `public_name`). `keep_unoffered` keeps the other
        listed entries too (for accounts whose catalogue is not known yet)."""
        by_id: dict[str, OfferedModel] = {}
        for model in offered:
            by_id.setdefault(model.kiro_id, model)
        models: list[ModelInfo] = []
        for info in self._models:
            live = by_id.get(info.kiro_id)
            if live is not None:
                models.append(
                    replace(
                        info,
                        context_window=live.context_window,
                        max_output_tokens=live.max_output_tokens,
                        images=live.images,
                        native=live.native,
                    )
                )
            elif keep_unoffered:
                models.append(info)
        listed = {m.id.lower() for m in models} | {m.kiro_id for m in self._models}
        for live in by_id.values():
            name = public_name(live.kiro_id)
            if live.kiro_id in listed or name.lower() in listed:
                continue
            listed.add(name.lower())
            models.append(
                ModelInfo(
                    id=name,
                    kiro_id=live.kiro_id,
                    display_name=live.display_name,
                    context_window=live.context_window,
                    max_output_tokens=live.max_output_tokens,
                    images=live.images,
                    native=live.native,
                )
            )
        return ModelCatalogue(tuple(models), family_fallback=self.family_fallback)

    def all(self) -> tuple[ModelInfo, ...]:
        return self._models

    def mapping(self) -> tuple[tuple[str, str], ...]:
        """(public name, Kiro id) of every listed entry, in listing order."""
        return tuple((m.id, m.kiro_id) for m in self._models)

    def family_targets(self) -> tuple[tuple[str, str], ...]:
        """(family, Kiro id of its newest entry): where a name without a version goes."""
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


def not_offered_hint(catalogue: ModelCatalogue, name: str) -> str:
    """The sentence a 404 adds: the closest models the accounts do offer."""
    near = catalogue.suggestions(name)
    return f" Closest offered models: {', '.join(near)}." if near else ""


def default_catalogue(*, family_fallback: bool = True) -> ModelCatalogue:
    models = tuple(ModelInfo(p, k, d, w) for p, k, d, w in _DEFAULTS)
    return ModelCatalogue(models, family_fallback=family_fallback)
