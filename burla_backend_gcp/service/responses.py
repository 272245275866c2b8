"""The cluster service's error answers: one JSON shape for every failure,
`{"error": CODE, "message": TEXT, ...details}`, so a client can turn CODE into the right typed
error (the provisioner raises NoCompatibleNodes for "no_compatible_nodes", UnauthorizedError
saying "run burla login" for "token_expired")."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web


class ApiFailure(web.HTTPException):
    """Raise in a handler: the client gets `status` with the JSON error body."""

    def __init__(self, status: int, code: str, message: str, **details: Any) -> None:
        self.status_code = status
        super().__init__(text=json.dumps({"error": code, "message": message, **details}), content_type="application/json")
        self.code = code


def service_url(request: web.Request) -> str:
    """The URL callers reach this service at (Cloud Run's front end says https)."""
    scheme = request.headers.get("X-Forwarded-Proto") or request.scheme
    return f"{scheme}://{request.host}"


def bad_request(message: str, **details: Any) -> ApiFailure:
    return ApiFailure(400, "invalid_request", message, **details)


def not_found(message: str) -> ApiFailure:
    return ApiFailure(404, "not_found", message)


async def json_body(request: web.Request) -> dict:
    """The request's JSON object, or a 400 that says what is wrong with it."""
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise bad_request("the request body must be a JSON object") from None
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    return body
