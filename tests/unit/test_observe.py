"""The pure parts of issue 15B: route labels, client request ids, JSON log lines, account states."""

from __future__ import annotations

import json
import logging

import pytest

from ki2api.server.json_log import JsonFormatter
from ki2api.server.middleware import given_request_id
from ki2api.server.observe import _key_label, route_label


@pytest.mark.parametrize(
    ("path", "label"),
    [
        ("/v1/chat/completions", "/v1/chat/completions"),
        ("/v1/messages", "/v1/messages"),
        ("/v1/responses/resp_123", "/v1/responses/{id}"),
        ("/v1/models/claude-sonnet-4", "/v1/models/{id}"),
        ("/metrics", "/metrics"),
        ("/wp-admin/../../etc/passwd", "other"),
        ("/v1/chat/completions/", "other"),
    ],
)
def test_route_labels_are_a_bounded_set(path: str, label: str) -> None:
    assert route_label(path) == label


@pytest.mark.parametrize(
    ("header", "kept"),
    [
        (b"abc-123", "abc-123"),
        (b"  spaced out  ", "spaced out"),
        (b"~" * 128, "~" * 128),
        (b"x" * 129, None),
        (b"tab\there", None),
        (b"\xc3\xbcnicode", None),
        (b"", None),
        (None, None),
    ],
)
def test_a_client_request_id_is_kept_only_when_fit(header: bytes | None, kept: str | None) -> None:
    headers = [(b"x-request-id", header)] if header is not None else []
    assert given_request_id({"type": "http", "headers": headers}) == kept


def test_a_json_log_line_is_one_object_with_the_request_fields() -> None:
    record = logging.LogRecord(
        "ki2api.access", logging.INFO, "f", 1, "POST %s %d", ("/x", 200), None
    )
    record.ki2api = {"request_id": "r-1", "status": 200, "model": "m"}
    line = JsonFormatter().format(record)
    assert "\n" not in line
    data = json.loads(line)
    assert data["level"] == "info" and data["logger"] == "ki2api.access"
    assert data["message"] == "POST /x 200" and data["request_id"] == "r-1"
    assert data["time"].endswith("Z")


def test_a_json_log_line_keeps_a_multiline_message_on_one_line() -> None:
    record = logging.LogRecord("ki2api", logging.WARNING, "f", 1, "two\nlines", None, None)
    line = JsonFormatter().format(record)
    assert "\n" not in line and json.loads(line)["message"] == "two\nlines"


@pytest.mark.parametrize(
    ("fingerprint", "label"),
    [("key-1", "key-1"), ("ci-bot", "ci-bot"), ("none", "none"), ("invalid:3f2a9c", "invalid")],
)
def test_every_wrong_key_shares_one_label(fingerprint: str, label: str) -> None:
    assert _key_label(fingerprint) == label
