"""A pytest plugin for the openai SDK's own Responses tests (test_openai_responses_sdk_suite.py).

Loaded into the SDK's pytest run (`-p sdk_responses_plugin`, this folder on PYTHONPATH). It
changes requests in exactly two ways, both written for a mock server that answers anything:

1. `responses.create()` is called with no argument at all (the SDK's create overloads have no
   required parameter: a stored prompt may carry the model). OpenAI answers such a body with 400
   "Missing required parameter: 'model'". The plugin adds `model` and `input` only when they are
   absent, so the call goes through translation, the upstream and the encoders, and the SDK
   validates a real `Response` (or a real event stream).
2. `retrieve` and `delete` name a fixed placeholder id (`resp_677efb5139a88190b512bc3fef8e535d`)
   that no server has stored. Before each such test the plugin stores a fresh response through
   the gateway's own `POST /responses` and sends the test's request to that id instead, so each
   test reads or deletes a response that exists (a delete test cannot see the previous one's).

Nothing else is touched: headers, query, the other fields and every assertion stay the SDK's.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from openai._base_client import BaseClient

PLACEHOLDERS = ("resp_677efb5139a88190b512bc3fef8e535d", "response_id")
MODEL = os.environ.get("KI2API_SDK_MODEL", "gpt-4o")
INPUT = "Hello from the openai SDK's own Responses tests."
_seeded: dict[str, str] = {}
_original_build = BaseClient._build_request


def _store_one() -> str:
    """A fresh stored response, made through the gateway's public API; its id."""
    base = os.environ["TEST_API_BASE_URL"].rstrip("/")
    body = json.dumps({"model": MODEL, "input": "A response to retrieve or delete."}).encode()
    request = urllib.request.Request(
        f"{base}/responses",
        data=body,
        method="POST",
        headers={"authorization": "Bearer My API Key", "content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 (127.0.0.1 only)
        stored: dict[str, Any] = json.loads(answer.read())
    return str(stored["id"])


def _build_request(self: Any, options: Any, *, retries_taken: int = 0) -> Any:
    update: dict[str, Any] = {}
    data = options.json_data
    if options.method.lower() == "post" and options.url == "/responses" and isinstance(data, dict):
        update["json_data"] = {"model": MODEL, "input": INPUT, **data}
    fresh = _seeded.get("id")
    segments = options.url.split("/")
    if fresh and any(s in PLACEHOLDERS for s in segments):
        update["url"] = "/".join(fresh if s in PLACEHOLDERS else s for s in segments)
    if update:
        options = options.model_copy(update=update)
    return _original_build(self, options, retries_taken=retries_taken)


BaseClient._build_request = _build_request  # type: ignore[method-assign]


@pytest.fixture(autouse=True)
def _fresh_stored_response(request: pytest.FixtureRequest) -> Iterator[None]:
    """Before a test that reads, lists or deletes the placeholder id: a fresh stored response."""
    name, path = request.node.name, str(request.node.path)
    on_stored = path.endswith(("test_responses.py", "test_input_items.py"))
    if (
        on_stored
        and "path_params" not in name
        and any(op in name for op in ("retrieve", "delete", "_list"))
    ):
        _seeded["id"] = _store_one()
    yield
    _seeded.pop("id", None)
