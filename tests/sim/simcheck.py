"""Helpers of the simulator's tests: OpenAPI checks, a webhook receiver, SSE reading."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import jsonschema

# A copy of Reader's published OpenAPI file (github.com/vakra-dev/reader-docs, openapi.json).
OPENAPI_FILE = Path(__file__).parent / "data" / "reader-openapi.json"
OPENAPI: dict[str, Any] = json.loads(OPENAPI_FILE.read_text(encoding="utf-8"))


def response_schema(path: str, method: str, status: int) -> dict[str, Any]:
    """The OpenAPI schema of one response, with ``#/components`` resolvable inside it.

    Statuses the OpenAPI file does not list for the operation (injected 500s, 429s on GETs,
    405) are checked against the shared ``ErrorEnvelope``.
    """
    responses = OPENAPI["paths"][path][method.lower()]["responses"]
    if str(status) in responses:
        schema = responses[str(status)]["content"]["application/json"]["schema"]
    else:
        assert status >= 400, f"{method} {path} answered {status}, not in the OpenAPI file"
        schema = {"$ref": "#/components/schemas/ErrorEnvelope"}
    return {**schema, "components": OPENAPI["components"]}


def assert_valid(response: httpx.Response, path: str) -> dict[str, Any]:
    """Check a JSON response against Reader's OpenAPI schema; return its body."""
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-request-id"]
    body = response.json()
    schema = response_schema(path, response.request.method, response.status_code)
    jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    ).validate(body)
    if response.status_code >= 400:
        code = body["error"]["code"]
        assert body["error"]["docsUrl"] == (
            "https://reader.dev/docs/home/concepts/errors#" + code.replace("_", "-")
        )
    return dict(body)


