"""`apply_image_limits` and its helpers: pure, table-driven."""

from __future__ import annotations

from typing import Any

import pytest

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.core.messages import (
    Conversation,
    ImagePart,
    Message,
    Part,
    TextPart,
    ToolResultPart,
    ToolUsePart,
)
from ki2api.images.limits import (
    PLACEHOLDER_EARLIER,
    PLACEHOLDER_OVER_LIMIT,
    apply_image_limits,
    decoded_size,
    user_turn_ages,
)

AGES = [
    ("empty", [], []),
    ("one-user", ["user"], [0]),
    ("simple", ["user", "assistant", "user"], [1, None, 0]),
    ("user-run", ["user", "user", "assistant", "user", "user"], [1, 1, None, 0, 0]),
    ("prefill", ["user", "assistant"], [0, None]),
    ("assistant-run", ["user", "assistant", "assistant", "user"], [1, None, None, 0]),
    ("system-skipped", ["user", "system", "user", "assistant", "user"], [1, None, 1, None, 0]),
    ("assistant-first", ["assistant", "user"], [None, 0]),
]


@pytest.mark.parametrize(("roles", "expected"), [a[1:] for a in AGES], ids=[a[0] for a in AGES])
def test_user_turn_ages(roles: list[str], expected: list[int | None]) -> None:
    assert user_turn_ages(roles) == expected


SIZES = [("empty", "", 0), ("one", "QQ==", 1), ("two", "QUI=", 2), ("three", "QUJD", 3)]


@pytest.mark.parametrize(("data", "size"), [s[1:] for s in SIZES], ids=[s[0] for s in SIZES])
def test_decoded_size(data: str, size: int) -> None:
    assert decoded_size(data) == size


# --- apply_image_limits ----------------------------------------------------------------------
# A conversation is written as a list of ("u" | "a", parts); "I<n>" is an image whose data names
# it, "R<n>" a tool result holding image n, any other string a text part.


def img(n: int) -> ImagePart:
    """Image n: its base64 data is n in four digits, so 3 bytes decoded."""
    return ImagePart("image/png", f"{n:04d}")


def part(spec: str | Part) -> Part:
    if not isinstance(spec, str):
        return spec
    if spec.startswith("I"):
        return img(int(spec[1:]))
    if spec.startswith("R"):
        return ToolResultPart(f"t{spec[1:]}", (TextPart("out"), img(int(spec[1:]))))
    return TextPart(spec)


def conv(*turns: tuple[str, list[Any]]) -> Conversation:
    msgs = tuple(
        Message("user" if r == "u" else "assistant", tuple(part(p) for p in parts))
        for r, parts in turns
    )
    return Conversation(model_id="m", messages=msgs)


def show(c: Conversation) -> list[Any]:
    """The images and placeholders left, per message, in the spec notation."""
    names = {PLACEHOLDER_EARLIER: "E", PLACEHOLDER_OVER_LIMIT: "O"}

    def one(p: Part) -> Any:
        if isinstance(p, ImagePart):
            return f"I{int(p.data_b64)}"
        if isinstance(p, ToolResultPart):
            return [one(x) for x in p.content]
        if isinstance(p, TextPart):
            return names.get(p.text, p.text)
        return p

    return [[one(p) for p in m.parts] for m in c.messages]


CASES = [
    (
        "old-turns-placeholder",
        dict(keep_recent_user_turns=2),
        [("u", ["I1"]), ("a", ["ok"]), ("u", ["I2"]), ("a", ["ok"]), ("u", ["q", "I3"])],
        [["E"], ["ok"], ["I2"], ["ok"], ["q", "I3"]],
    ),
    (
        "user-run-is-one-turn",
        dict(keep_recent_user_turns=1),
        [("u", ["I1"]), ("a", ["ok"]), ("u", ["I2"]), ("u", ["I3"])],
        [["E"], ["ok"], ["I2"], ["I3"]],
    ),
    (
        "over-limit-oldest-placeholder",
        dict(max_per_request=3),
        [("u", ["I1", "I2"]), ("a", ["ok"]), ("u", ["I3", "I4"]), ("a", ["ok"]), ("u", ["I5"])],
        [["O", "O"], ["ok"], ["I3", "I4"], ["ok"], ["I5"]],
    ),
    (
        "over-limit-within-a-message-from-its-end",
        dict(max_per_request=2),
        [("u", ["I1", "I2"]), ("a", ["ok"]), ("u", ["I3"])],
        [["O", "I2"], ["ok"], ["I3"]],
    ),
    (
        "tool-result-images",
        dict(keep_recent_user_turns=1),
        [
            ("u", ["I1"]),
            ("a", ["calling"]),
            ("u", ["R2"]),
            ("a", ["calling"]),
            ("u", ["R3", "I4"]),
        ],
        [["E"], ["calling"], [["out", "E"]], ["calling"], [["out", "I3"], "I4"]],
    ),
    (
        "assistant-images-untouched",
        dict(keep_recent_user_turns=1),
        [("u", ["q"]), ("a", ["I1"]), ("u", ["I2"])],
        [["q"], ["I1"], ["I2"]],
    ),
    (
        "zero-images-allowed-no-images",
        dict(max_per_request=0),
        [("u", ["hi"])],
        [["hi"]],
    ),
    (
        "zero-images-history-placeholder",
        dict(max_per_request=0),
        [("u", ["I1"]), ("a", ["ok"]), ("u", ["hi"])],
        [["O"], ["ok"], ["hi"]],
    ),
]


@pytest.mark.parametrize(
    ("limits", "turns", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_apply_image_limits(limits: dict[str, int], turns: list[Any], expected: list[Any]) -> None:
    assert show(apply_image_limits(conv(*turns), **limits)) == expected


def test_unchanged_conversation_is_returned_as_is() -> None:
    c = conv(("u", ["I1"]), ("a", ["ok"]), ("u", ["q", "I2"]))
    assert apply_image_limits(c) is c


def test_other_fields_kept() -> None:
    c = conv(("u", ["I1"]), ("a", ["ok"]), ("u", ["q"]))
    out = apply_image_limits(c, keep_recent_user_turns=1)
    assert (out.model_id, out.system, out.tools) == (c.model_id, c.system, c.tools)
    assert out.messages[1] is c.messages[1]


def test_tool_result_fields_kept() -> None:
    c = conv(("u", ["R1"]), ("a", ["ok"]), ("u", ["q"]))
    result = apply_image_limits(c, keep_recent_user_turns=1).messages[0].parts[0]
    assert isinstance(result, ToolResultPart)
    assert (result.tool_use_id, result.is_error) == ("t1", False)


ERRORS = [
    (
        "latest-turn-over-count",
        dict(max_per_request=2),
        [("u", ["I1"]), ("a", ["ok"]), ("u", ["I2", "I3"]), ("u", ["I4"])],
        "latest message carries 3",
    ),
    (
        "latest-turn-tool-results-count",
        dict(max_per_request=1),
        [("u", ["q"]), ("a", [ToolUsePart("t1", "f", {})]), ("u", ["R1", "I2"])],
        "at most 1 images",
    ),
    (
        "image-too-large-latest",
        dict(max_bytes=2),
        [("u", ["I1"])],
        "too large: 3 bytes",
    ),
    (
        "image-too-large-recent-history",
        dict(max_bytes=2, keep_recent_user_turns=2),
        [("u", ["I1"]), ("a", ["ok"]), ("u", ["q"])],
        "the limit is 2 bytes",
    ),
]


@pytest.mark.parametrize(
    ("limits", "turns", "needle"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS]
)
def test_apply_image_limits_refuses(limits: dict[str, int], turns: list[Any], needle: str) -> None:
    c = conv(*turns)
    with pytest.raises(GatewayError) as info:
        apply_image_limits(c, **limits)
    assert info.value.kind is ErrorKind.INVALID_REQUEST
    assert info.value.param == "messages"
    assert needle in info.value.message


def test_oversized_image_dropped_as_old_is_not_refused() -> None:
    c = conv(("u", ["I1"]), ("a", ["ok"]), ("u", ["q"]))
    out = apply_image_limits(c, max_bytes=2, keep_recent_user_turns=1)
    assert show(out) == [["E"], ["ok"], ["q"]]


@pytest.mark.parametrize(
    "limits",
    [dict(max_per_request=-1), dict(max_bytes=0), dict(keep_recent_user_turns=0)],
    ids=["negative-count", "zero-bytes", "zero-turns"],
)
def test_bad_limits(limits: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        apply_image_limits(conv(("u", ["q"])), **limits)
