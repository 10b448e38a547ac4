"""Host-neutral request and response, the error body of the contract, and CORS."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)  # names in lower case
    body: bytes = b""


@dataclass
class Response:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body)


class ApiError(Exception):
    """An error answered with the contract's error body; nothing of the request is applied."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def encode_json(payload: Any) -> bytes:
    """UTF-8 JSON. A string UTF-8 cannot carry (a lone surrogate that slipped through)
    is sent as its JSON escape rather than failing the answer."""
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode("ascii")


def json_headers(headers: dict[str, str] | None = None) -> dict[str, str]:
    return {
        "content-type": "application/json; charset=utf-8",
        "cache-control": "no-store",
        **(headers or {}),
    }


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(status, json_headers(headers), encode_json(payload))


def error_response(error: ApiError) -> Response:
    payload = {"success": False, "error": {"code": error.code, "message": error.message}}
    return json_response(error.status, payload, error.headers)


def cors_headers(origin: str | None, allowed: tuple[str, ...]) -> dict[str, str]:
    """CORS headers for an allowed origin, none otherwise (the browser then blocks)."""
    if not origin or not allowed:
        return {}
    if "*" in allowed:
        allow = "*"
    elif origin.rstrip("/") in allowed:
        allow = origin
    else:
        return {}
    return {
        "access-control-allow-origin": allow,
        "access-control-allow-methods": "GET, POST, OPTIONS",
        "access-control-allow-headers": "authorization, content-type",
        "access-control-max-age": "86400",
        "vary": "Origin",
    }
