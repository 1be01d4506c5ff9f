"""core.models: exact names, the family rule for Claude names, overrides, the fallback switch,
the live catalogue built from what the accounts offer.

Issue 10 §3 changed the family rule: a newer (or in-between) version is never served by an older
model any more (`claude-opus-5-5` used to go to claude-opus-4.8); it is a 404 naming the closest
offered models. Dates, `-latest`, `[1m]`, versionless and older names still resolve.
"""

from __future__ import annotations

import pytest

from ki2api.core.models import (
    ModelCatalogue,
    ModelInfo,
    OfferedModel,
    default_catalogue,
    family_version,
    not_offered_hint,
    public_name,
)

PARSE_CASES = [
    pytest.param("claude-opus-4-5", ("opus", (4, 5)), id="dashed"),
    pytest.param("claude-opus-4.5", ("opus", (4, 5)), id="dotted (Kiro style)"),
    pytest.param("claude-sonnet-4", ("sonnet", (4, 0)), id="major only"),
    pytest.param("claude-sonnet-4-0", ("sonnet", (4, 0)), id="explicit .0"),
    pytest.param("claude-opus-5-5", ("opus", (5, 5)), id="future version"),
    pytest.param("claude-sonnet-4-5-20250929", ("sonnet", (4, 5)), id="dated"),
    pytest.param("claude-sonnet-4-20250514", ("sonnet", (4, 0)), id="dated major only"),
    pytest.param("claude-sonnet-4-5-20250929[1m]", ("sonnet", (4, 5)), id="dated + [1m]"),
    pytest.param("claude-opus-4-6[1M]", ("opus", (4, 6)), id="[1M] upper case"),
    pytest.param("claude-haiku-4-5-latest", ("haiku", (4, 5)), id="-latest"),
    pytest.param("claude-opus-latest", ("opus", None), id="family -latest"),
    pytest.param("claude-haiku", ("haiku", None), id="family only"),
    pytest.param("  Claude-Opus-4-8  ", ("opus", (4, 8)), id="case and blanks"),
    pytest.param("claude-3-7-sonnet-20250219", ("sonnet", (3, 7)), id="claude 3 order"),
    pytest.param("claude-3-5-haiku-latest", ("haiku", (3, 5)), id="claude 3 order -latest"),
    pytest.param("claude-3-opus-20240229", ("opus", (3, 0)), id="claude 3 opus"),
    pytest.param("gpt-4o", None, id="other vendor"),
    pytest.param("claude-2.1", None, id="no family"),
    pytest.param("claude-instant-1", None, id="unknown family"),
    pytest.param("claude-opus-4-5-thinking", None, id="unknown suffix"),
    pytest.param("my-claude-opus-4-5", None, id="prefix"),
    pytest.param("claude-opus-4-5[2m]", None, id="other bracket suffix"),
    pytest.param("auto", None, id="auto"),
    pytest.param("", None, id="empty"),
]


@pytest.mark.parametrize(("name", "expected"), PARSE_CASES)
def test_family_version(name: str, expected: object) -> None:
    assert family_version(name) == expected


RESOLVE_CASES = [
    # exact names keep their listed id
    pytest.param("claude-sonnet-4-5", "claude-sonnet-4-5", "claude-sonnet-4.5", id="exact"),
    pytest.param("CLAUDE-SONNET-4-5", "claude-sonnet-4-5", "claude-sonnet-4.5", id="exact, case"),
    pytest.param("auto", "auto", "auto", id="auto"),
    pytest.param("claude-opus-5", "claude-opus-5", "claude-opus-5", id="opus 5 is itself"),
    pytest.param("claude-sonnet-5", "claude-sonnet-5", "claude-sonnet-5", id="sonnet 5 itself"),
    pytest.param("claude-opus-5[1m]", "claude-opus-5[1m]", "claude-opus-5", id="opus 5 [1m]"),
    # a newer name is never served by an older model (issue 10): 404
    pytest.param("claude-opus-5-5", None, None, id="future opus"),
    pytest.param("claude-opus-6", None, None, id="future opus major"),
    pytest.param("claude-sonnet-5-1", None, None, id="future sonnet"),
    pytest.param("claude-haiku-5-0", None, None, id="future haiku"),
    # family rule: the requested id is echoed, the Kiro id is the entry of that version
    pytest.param(
        "claude-sonnet-4-5-20250929[1m]",
        "claude-sonnet-4-5-20250929[1m]",
        "claude-sonnet-4.5",
        id="dated [1m]",
    ),
    pytest.param("claude-opus-4-6[1m]", "claude-opus-4-6[1m]", "claude-opus-4.6", id="[1m]"),
    pytest.param(
        "claude-opus-4-7-20260301", "claude-opus-4-7-20260301", "claude-opus-4.7", id="new date"
    ),
    pytest.param("claude-opus-4.8", "claude-opus-4.8", "claude-opus-4.8", id="Kiro id as name"),
    pytest.param("claude-sonnet-4-latest", "claude-sonnet-4-latest", "claude-sonnet-4", id="4"),
    pytest.param("claude-opus-latest", "claude-opus-latest", "claude-opus-5", id="opus latest"),
    pytest.param("claude-sonnet", "claude-sonnet", "claude-sonnet-5", id="sonnet newest"),
    pytest.param("claude-haiku-4-5-latest", "claude-haiku-4-5-latest", "claude-haiku-4.5", id="h"),
    pytest.param("claude-sonnet-4-7", None, None, id="gap: not served by an older one"),
    pytest.param("claude-opus-4-1", "claude-opus-4-1", "claude-opus-4.5", id="older: oldest"),
    pytest.param(
        "claude-3-7-sonnet-latest", "claude-3-7-sonnet-latest", "claude-sonnet-4", id="claude 3.7"
    ),
    pytest.param(
        "claude-3-5-haiku-20241022", "claude-3-5-haiku-20241022", "claude-haiku-4.5", id="3.5 haiku"
    ),
    pytest.param(" claude-opus-4-8 ", "claude-opus-4-8", "claude-opus-4.8", id="blanks stripped"),
    # other names are unknown: 404
    pytest.param("gpt-4o", None, None, id="gpt"),
    pytest.param("claude-2.1", None, None, id="claude 2"),
    pytest.param("claude-opus-4-5-thinking", None, None, id="unknown suffix"),
    pytest.param("", None, None, id="empty"),
]


@pytest.mark.parametrize(("name", "public_id", "kiro_id"), RESOLVE_CASES)
def test_resolve(name: str, public_id: str | None, kiro_id: str | None) -> None:
    info = default_catalogue().resolve(name)
    if public_id is None:
        assert info is None
        return
    assert info is not None
    assert (info.id, info.kiro_id) == (public_id, kiro_id)


def test_family_match_keeps_the_entry_details() -> None:
    info = default_catalogue().resolve("claude-opus-4-8-20260101[1m]")
    assert info == ModelInfo(
        "claude-opus-4-8-20260101[1m]",
        "claude-opus-4.8",
        "Claude Opus 4.8",
        context_window=1_000_000,
    )


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("claude-opus-5-5", id="future"),
        pytest.param("claude-3-7-sonnet", id="older"),
        pytest.param("claude-haiku-latest", id="versionless"),
    ],
)
def test_fallback_off_only_listed_versions(name: str) -> None:
    catalogue = default_catalogue(family_fallback=False)
    assert catalogue.resolve(name) is None
    assert catalogue.resolve("claude-opus-4-8") is not None
    assert catalogue.resolve("claude-sonnet-4-5-20250929[1m]") is not None  # same version
    assert catalogue.with_overrides({"x": "auto"}).resolve(name) is None


def test_listing_unchanged_by_fallback() -> None:
    on, off = default_catalogue(), default_catalogue(family_fallback=False)
    assert on.all() == off.all()
    assert "claude-opus-5-5" not in {m.id for m in on.all()}


OVERRIDE_CASES = [
    pytest.param(
        {"claude-opus-4-8": "claude-sonnet-4.6"},
        "claude-opus-4-8-20260101",
        "claude-sonnet-4.6",
        id="an overridden name's dated form follows the override",
    ),
    pytest.param(
        {"claude-opus-4-9": "claude-opus-4.9"},
        "claude-opus-4-9-latest",
        "claude-opus-4.9",
        id="an added version resolves with its suffixes",
    ),
    pytest.param(
        {"claude-opus-4-9": "claude-opus-4.9"},
        "claude-opus-4-8-20260101",
        "claude-opus-4.8",
        id="the same version still wins",
    ),
    pytest.param(
        {"claude-opus-5-5": "claude-opus-4.7"},
        "claude-opus-5-5",
        "claude-opus-4.7",
        id="an exact override beats the rule",
    ),
    pytest.param(
        {"gpt-4o": "claude-sonnet-4.5"}, "gpt-4o", "claude-sonnet-4.5", id="non-claude override"
    ),
    pytest.param(
        {"claude-haiku-4-5": "auto", "claude-haiku-4-5-20251001": "auto"},
        "claude-haiku-4-5-20251101",
        "auto",
        id="haiku sent to auto",
    ),
]


@pytest.mark.parametrize(("overrides", "name", "kiro_id"), OVERRIDE_CASES)
def test_overrides_and_the_family_rule(overrides: dict[str, str], name: str, kiro_id: str) -> None:
    info = default_catalogue().with_overrides(overrides).resolve(name)
    assert info is not None
    assert (info.id, info.kiro_id) == (name, kiro_id)


def test_override_of_an_unlisted_name_adds_rather_than_replaces() -> None:
    base = default_catalogue()
    changed = base.with_overrides({"claude-opus-9-9": "claude-opus-4.7"})
    assert changed.all()[: len(base.all())] == base.all()
    assert changed.all()[-1].id == "claude-opus-9-9"


def test_override_keeps_the_fallback_setting() -> None:
    catalogue = default_catalogue(family_fallback=False).with_overrides({"a": "auto"})
    assert catalogue.family_fallback is False
    assert catalogue.resolve("claude-opus-5-5") is None


def test_a_catalogue_without_a_family() -> None:
    catalogue = ModelCatalogue((ModelInfo("claude-sonnet-4-5", "claude-sonnet-4.5", "S"),))
    assert catalogue.resolve("claude-opus-5-5") is None
    assert catalogue.resolve("claude-sonnet-9") is None  # newer: never the older 4.5
    info = catalogue.resolve("claude-3-5-sonnet")  # older: the oldest listed
    assert info is not None and info.kiro_id == "claude-sonnet-4.5"


def test_mapping_and_family_targets() -> None:
    catalogue = default_catalogue()
    assert catalogue.mapping()[0] == ("claude-sonnet-4-20250514", "claude-sonnet-4")
    assert ("auto", "auto") in catalogue.mapping()
    assert dict(catalogue.family_targets()) == {
        "opus": "claude-opus-5",
        "sonnet": "claude-sonnet-5",
        "haiku": "claude-haiku-4.5",
    }


def test_description_names_the_kiro_model() -> None:
    info = default_catalogue().resolve("claude-opus-4-8-20260101")
    assert info is not None
    assert info.description == "Claude Opus 4.8, served by the Kiro model claude-opus-4.8"


SUGGEST_CASES = [
    pytest.param("claude-opus-6", ["claude-opus-5", "claude-opus-4-8", "claude-opus-4-7"], id="6"),
    pytest.param("claude-opus-5-5", ["claude-opus-5", "claude-opus-4-8", "claude-opus-4-7"]),
    pytest.param("claude-sonnet-4-7", ["claude-sonnet-4-6", "claude-sonnet-4-5"], id="gap"),
    pytest.param("claude-haiku-9", ["claude-haiku-4-5"], id="one of the family"),
    pytest.param("gpt-4o", ["claude-opus-5", "claude-sonnet-5", "claude-haiku-4-5"], id="other"),
]


@pytest.mark.parametrize(("name", "expected"), SUGGEST_CASES)
def test_suggestions_name_the_closest_offered(name: str, expected: list[str]) -> None:
    catalogue = default_catalogue()
    assert catalogue.resolve(name) is None
    assert catalogue.suggestions(name)[: len(expected)] == expected


def test_not_offered_hint() -> None:
    hint = not_offered_hint(default_catalogue(), "claude-opus-6")
    assert hint == " Closest offered models: claude-opus-5, claude-opus-4-8, claude-opus-4-7."


@pytest.mark.parametrize(
    ("kiro_id", "expected"),
    [
        ("claude-opus-5.1", "claude-opus-5-1"),
        ("claude-sonnet-5", "claude-sonnet-5"),
        ("deepseek-3.2", "deepseek-3.2"),
        ("auto", "auto"),
    ],
)
def test_public_name(kiro_id: str, expected: str) -> None:
    assert public_name(kiro_id) == expected


OFFERED = (
    OfferedModel("auto", "Auto", 1_000_000, 64_000),
    OfferedModel(
        "claude-opus-4.8", "Claude Opus 4.8", 1_000_000, 128_000, native=frozenset({"effort"})
    ),
    OfferedModel("claude-opus-5.1", "Claude Opus 5.1", 1_000_000, 128_000),
    OfferedModel("glm-5", "GLM 5", 128_000, 8_192, images=False),
)


def test_with_offered_lists_what_is_offered_with_its_limits() -> None:
    live = default_catalogue().with_offered(OFFERED)
    ids = [m.id for m in live.all()]
    assert ids == ["claude-opus-4-8", "auto", "claude-opus-5-1", "glm-5"]
    opus = live.resolve("claude-opus-4-8")
    assert opus is not None
    assert (opus.context_window, opus.max_output_tokens, opus.native) == (
        1_000_000,
        128_000,
        frozenset({"effort"}),
    )
    glm = live.resolve("glm-5")
    assert glm is not None and glm.images is False and glm.context_window == 128_000
    auto = live.resolve("auto")
    assert auto is not None and auto.context_window == 1_000_000
    newer = live.resolve("claude-opus-5-1-20270101")
    assert newer is not None and newer.kiro_id == "claude-opus-5.1"
    assert live.resolve("claude-sonnet-4-5") is None  # not offered: 404
    assert live.resolve("claude-opus-5-2") is None


def test_with_offered_keeps_the_table_for_unknown_accounts() -> None:
    live = default_catalogue().with_offered(OFFERED, keep_unoffered=True)
    assert live.resolve("claude-sonnet-4-5") is not None
    assert len(live.all()) == len(default_catalogue().all()) + 2  # opus 5.1 and glm-5


def test_static_table_has_the_2026_models() -> None:
    catalogue = default_catalogue()
    for name in ("claude-opus-5", "claude-sonnet-5", "auto"):
        info = catalogue.resolve(name)
        assert info is not None and info.kiro_id == name and info.context_window == 1_000_000
