"""No input makes the gateway answer 500.

A seeded-random set of mutated `POST /v1/chat/completions` requests (start from valid bodies
with tools, tool-call history, tool messages, image data URLs, stream on and off; delete keys,
swap values for other JSON types, unknown roles and part types, truncated JSON, random bytes,
invalid UTF-8, NaN literals, deep nesting, long strings) plus wrong content types and methods.
Every answer must be a non-500 status; every error is OpenAI's four-key error object; no answer
and no log record carries a traceback; the gateway stays healthy afterwards.
"""

from __future__ import annotations

import copy
import json
import logging
import random
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.conftest import API_KEY, Gateway
from tests.support.payloads import PNG_1X1, WEATHER_TOOL

SEED = 20250611
RANDOM_CASES = 300
MODEL = "claude-sonnet-4-20250514"
URL_PATH = "/v1/chat/completions"
# 502/503/504 are Kiro's own failures passed on; the emulator only sends them when told to.
UPSTREAM_STATUSES = frozenset({502, 503, 504})


def valid_bodies() -> list[dict[str, Any]]:
    """Bodies the gateway answers with 200; the mutations start from these."""
    user = {"role": "user", "content": "What is the weather in Paris?"}
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }
    return [
        {"model": MODEL, "messages": [{"role": "user", "content": "Hello"}]},
        {
            "model": MODEL,
            "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "system", "content": "Be brief."}, user],
        },
        {"model": MODEL, "tools": [WEATHER_TOOL], "tool_choice": "auto", "messages": [user]},
        {
            "model": MODEL,
            "stream": True,
            "tools": [WEATHER_TOOL],
            "messages": [
                {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
                user,
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 21 C"},
                {"role": "user", "content": "Thanks. And tomorrow?"},
            ],
        },
        {
            "model": MODEL,
            "temperature": 0.5,
            "max_tokens": 100,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is in this image?"},
                        {
                            "type": "image_url",
                            "image_url": {"url": f"data:image/png;base64,{PNG_1X1}"},
                        },
                    ],
                },
                {"role": "assistant", "content": [{"type": "text", "text": "A dot."}]},
                {"role": "user", "content": "Are you sure?"},
            ],
        },
    ]


# --- mutations ---------------------------------------------------------------------------------

Slot = tuple[Any, Any]  # (container, key or index) of a value inside a body


def slots(node: Any) -> list[Slot]:
    out: list[Slot] = []
    if isinstance(node, dict):
        items: Any = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    else:
        return out
    for key, child in items:
        out.append((node, key))
        out.extend(slots(child))
    return out


def nested(depth: int) -> str:
    """A placeholder that `encode` turns into `depth` levels of alternating objects and lists
    (too deep for `json.dumps` to write itself)."""
    return f"@deep:{depth}@"


def _deep_text(match: re.Match[bytes]) -> bytes:
    depth = int(match.group(1))
    opens = b"".join(b"[" if i % 2 else b'{"a":' for i in range(depth))
    closes = b"".join(b"]" if i % 2 else b"}" for i in reversed(range(depth)))
    return opens + b"1" + closes


def encode(body: Any) -> bytes:
    return re.sub(rb'"@deep:(\d+)@"', _deep_text, json.dumps(body).encode())


def other_values(rng: random.Random) -> list[Any]:
    return [
        None,
        0,
        -1,
        1.5,
        2**70,
        -(2**63) - 1,
        1e308,
        "",
        "x",
        "\u0000",
        "\U0001f600" * 3,
        True,
        False,
        [],
        [[[[None]]]],
        {},
        {"type": "no-such-type"},
        {"role": "no-such-role", "content": "x"},
        "z" * rng.randint(1_000, 100_000),
        "data:image/png;base64,!!!",
        "data:image/bmp;base64,AAAA",
        "data:;base64,",
        "https://example.com/cat.png",
        '{"city": ',  # truncated tool-call arguments
        nested(rng.choice([50, 300, 900])),
    ]


def delete_key(body: Any, rng: random.Random) -> Any:
    keyed = [(c, k) for c, k in slots(body) if isinstance(c, dict)]
    if keyed:
        container, key = rng.choice(keyed)
        del container[key]
    return body


def replace_value(body: Any, rng: random.Random) -> Any:
    container, key = rng.choice([(None, None), *slots(body)])
    if container is None:
        return rng.choice(other_values(rng))  # the whole body
    container[key] = rng.choice(other_values(rng))
    return body


def odd_tag(body: Any, rng: random.Random) -> Any:
    tagged = [(c, k) for c, k in slots(body) if k in ("role", "type")]
    if tagged:
        container, key = rng.choice(tagged)
        tags = ["wizard", "function", "", "ROLE", "image", "text ", "input_text", None, 3]
        container[key] = rng.choice(tags)
    return body


def deep_in_free_form(body: Any, rng: random.Random) -> Any:
    """Deep nesting where the wire accepts any JSON (metadata, tool schemas; the deeper tool
    schemas are in `test_deep_tool_schema` below)."""
    if not isinstance(body, dict):
        return body
    if rng.random() < 0.5:
        body["tools"] = [tool_with_schema(nested(rng.choice([20, 100])))]
    else:
        body["metadata"] = {"k": nested(rng.choice([100, 260, 600, 1000]))}
    return body


def tool_with_schema(schema: Any) -> dict[str, Any]:
    return {"type": "function", "function": {"name": "f", "parameters": schema}}


def long_text(body: Any, rng: random.Random) -> Any:
    messages = body.get("messages") if isinstance(body, dict) else None
    if isinstance(messages, list):
        text = "long " * rng.randint(1_000, 150_000)  # up to 750 kB; bigger: test_large_body
        messages.append({"role": "user", "content": text})
    return body


TREE_MUTATIONS: list[Callable[[Any, random.Random], Any]] = [
    delete_key,
    replace_value,
    replace_value,
    odd_tag,
    deep_in_free_form,
    long_text,
]


def truncate(raw: bytes, rng: random.Random) -> bytes:
    return raw[: rng.randrange(len(raw) or 1)]


def random_bytes(raw: bytes, rng: random.Random) -> bytes:
    return rng.randbytes(rng.randint(1, 2048))


def splice(raw: bytes, rng: random.Random) -> bytes:
    """Insert a bad fragment inside a JSON string or in place of a value."""
    bad = rng.choice(
        [b"\xff\xfe", b"\xc3", b"\xed\xa0\x80", b"\\ud800", b"\\x00", b'\\"', b"\x00", b"\\"]
    )
    at = raw.find(b'"', rng.randrange(len(raw) // 2 or 1)) + 1
    return raw[:at] + bad + raw[at:]


def number_literal(raw: bytes, rng: random.Random) -> bytes:
    literal = rng.choice([b"NaN", b"Infinity", b"-Infinity", b"1e999", b"0x10", b"01", b"1" * 400])
    return raw.replace(b'"model":', b'"n":' + literal + b',"model":', 1)


def deep_text(raw: bytes, rng: random.Random) -> bytes:
    depth = rng.choice([1_000, 1_100, 50_000])
    if not raw.endswith(b"}"):
        return b"[" * depth + raw + b"]" * depth
    return raw[:-1] + b',"x":' + b"[" * depth + b"]" * depth + b"}"


BYTE_MUTATIONS: list[Callable[[bytes, random.Random], bytes]] = [
    truncate,
    random_bytes,
    splice,
    number_literal,
    deep_text,
]


@dataclass
class Case:
    id: str
    body: bytes
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=dict)
    stream: bool = False


def random_case(index: int, rng: random.Random) -> Case:
    bodies = valid_bodies()
    body = copy.deepcopy(rng.choice(bodies))
    names = []
    for _ in range(rng.randint(1, 3)):
        mutation = rng.choice(TREE_MUTATIONS)
        body = mutation(body, rng)
        names.append(mutation.__name__)
    stream = isinstance(body, dict) and body.get("stream") is True
    raw = encode(body)
    if rng.random() < 0.35:
        mutation_b = rng.choice(BYTE_MUTATIONS)
        raw = mutation_b(raw, rng)
        names.append(mutation_b.__name__)
    return Case(f"{index}:{'+'.join(names)}", raw, stream=stream)


def random_cases(seed: int, count: int) -> list[Case]:
    rng = random.Random(seed)
    return [random_case(i, rng) for i in range(count)]


def fixed_cases() -> list[Case]:
    valid = json.dumps(valid_bodies()[0]).encode()
    cases = [
        Case(f"content-type {ct or 'none'}", valid, headers={"content-type": ct})
        for ct in (
            "",
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/json; charset=latin-1",
            "application/octet-stream",
        )
    ]
    cases += [Case(f"method {m}", valid, method=m) for m in ("GET", "PUT", "PATCH", "DELETE")]
    cases += [
        Case("empty body", b""),
        Case("json null", b"null"),
        Case("json string", b'"hi"'),
        Case("bom", b"\xef\xbb\xbf" + valid),
        Case("utf-16", json.dumps(valid_bodies()[0]).encode("utf-16")),
        Case("trailing garbage", valid + b"}"),
        Case("duplicate keys", valid[:-1] + b',"model":7}'),
    ]
    return cases


# --- the test ----------------------------------------------------------------------------------


@pytest.fixture
def server_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Also capture uvicorn's error logger (it does not propagate to the root logger)."""
    caplog.set_level(logging.WARNING)
    uvicorn_error = logging.getLogger("uvicorn.error")
    uvicorn_error.addHandler(caplog.handler)
    try:
        yield caplog
    finally:
        uvicorn_error.removeHandler(caplog.handler)


def problems_with(case: Case, r: httpx.Response) -> str | None:
    """Why this answer breaks the rules, or None."""
    if r.status_code == 500 or (r.status_code >= 500 and r.status_code not in UPSTREAM_STATUSES):
        return f"status {r.status_code}"
    if "Traceback" in r.text:
        return "traceback in the body"
    if r.status_code >= 400:
        try:
            error = r.json()["error"]
        except (ValueError, KeyError, TypeError):
            return f"status {r.status_code} without an OpenAI error body"
        if not isinstance(error, dict) or set(error) != {"message", "type", "param", "code"}:
            return f"status {r.status_code} with a malformed error: {error!r}"
        return None
    if case.stream and r.status_code == 200:
        if "data: [DONE]" not in r.text and 'data: {"error"' not in r.text:
            return "stream neither finished nor ended with an error"
    return None


def send(client: httpx.Client, case: Case) -> httpx.Response:
    headers = {"authorization": f"Bearer {API_KEY}", "content-type": "application/json"}
    headers.update(case.headers)
    if not headers["content-type"]:
        del headers["content-type"]
    return client.request(case.method, URL_PATH, content=case.body, headers=headers)


def tracebacks(caplog: pytest.LogCaptureFixture, start: int, end: int | None) -> str:
    records = caplog.records[start:end]
    return "\n".join(
        f"{r.name}: {r.getMessage()}\n{logging.Formatter().formatException(r.exc_info)}"
        for r in records
        if r.exc_info
    )


def run_cases(
    client: httpx.Client, cases: list[Case], log: pytest.LogCaptureFixture
) -> tuple[list[str], Counter[int]]:
    """Send every case; (what went wrong, how many answers of each status)."""
    failures: list[str] = []
    statuses: Counter[int] = Counter()
    starts: list[int] = []
    for case in cases:
        starts.append(len(log.records))
        try:
            r = send(client, case)
        except httpx.TransportError as exc:
            failures.append(f"[{case.id}] no answer ({exc!r}): {case.body[:160]!r}")
            continue
        statuses[r.status_code] += 1
        why = problems_with(case, r)
        if why is not None:
            failures.append(f"[{case.id}] {why}: {case.body[:160]!r} -> {r.text[:300]}")
    starts.append(len(log.records))
    for i, case in enumerate(cases):
        logged = tracebacks(log, starts[i], starts[i + 1])
        if logged:
            failures.append(f"[{case.id}] traceback logged: {case.body[:160]!r}\n{logged}")
    return failures, statuses


def check(gateway: Gateway, log: pytest.LogCaptureFixture, *cases: Case) -> Counter[int]:
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        failures, statuses = run_cases(client, list(cases), log)
    if failures:
        # pytrace=False: the report is the list itself (and no source is re-parsed after a
        # RecursionError, which trips a CPython 3.11 ast bug inside pytest's reporting)
        pytest.fail(f"{len(failures)} bad answer(s):\n" + "\n".join(failures), pytrace=False)
    return statuses


def test_no_input_answers_500(gateway: Gateway, server_log: pytest.LogCaptureFixture) -> None:
    statuses = check(gateway, server_log, *fixed_cases(), *random_cases(SEED, RANDOM_CASES))
    # the mix really exercised both the refusals and the path through Kiro
    assert statuses[400] >= 100 and statuses[200] >= 20, statuses
    health = httpx.get(f"{gateway.url}/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert check(gateway, server_log, Case("still works", encode(valid_bodies()[0]))) == {200: 1}


@pytest.mark.parametrize(
    "depth",
    [
        pytest.param(50, id="50"),
        pytest.param(200, id="200"),
        pytest.param(300, id="300"),
        pytest.param(600, id="600"),
        pytest.param(1000, id="1000"),
    ],
)
def test_deep_tool_schema(
    gateway: Gateway, server_log: pytest.LogCaptureFixture, depth: int
) -> None:
    body = valid_bodies()[0] | {"tools": [tool_with_schema(nested(depth))]}
    check(gateway, server_log, Case(f"tool schema {depth} deep", encode(body)))


@pytest.mark.parametrize("megabytes", [1.5, 4])
def test_large_body(
    gateway: Gateway, server_log: pytest.LogCaptureFixture, megabytes: float
) -> None:
    """Bodies well inside KI2API_MAX_BODY_BYTES (16 MiB) but over 1 MiB on the way upstream."""
    body = valid_bodies()[0]
    body["messages"].append({"role": "user", "content": "long " * int(megabytes * 2**20 / 5)})
    check(gateway, server_log, Case(f"{megabytes} MB of text", encode(body)))
