"""Every error the HTTP API answers is in the seed's shape, ``{"status": "error",
"errorDescription": "..."}``, including those FastAPI and Starlette make themselves:

* an unknown path (404) and a method a path does not take (405, with its ``Allow`` header);
* any other ``HTTPException`` (its status and headers kept, its ``detail`` the description);
* a ``RequestValidationError`` (parameters or a body FastAPI validated): 400, the API's status
  for a bad request, with every problem listed, never FastAPI's 422;
* an unhandled exception: 500 (Starlette still logs it and re-raises it to the server).

``declare_errors`` makes the OpenAPI document say the same: FastAPI adds a 422 response (and its
``HTTPValidationError`` schema) to every operation with parameters or a body, a status this API
never answers; it is removed, and such an operation declares 400 with the error schema.
"""

from __future__ import annotations

import json
from typing import Any, Final

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match

ERROR_SCHEMA: Final = "ErrorResponse"
VALIDATION_SCHEMAS: Final = ("HTTPValidationError", "ValidationError")
"""FastAPI's components for its 422 answer: dropped from the document with it."""


class ErrorResponse(BaseModel):
    """The seed's error shape."""

    status: str = "error"
    errorDescription: str


def error_response(
    status: int, description: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"status": "error", "errorDescription": description}, status_code=status, headers=headers
    )


def describe_http(request: Request, exc: HTTPException) -> str:
    """The routing errors say what was asked for; any other ``detail`` is told as it is."""
    path = request.url.path
    if exc.status_code == 404 and exc.detail == "Not Found":
        return f"No such resource: {path}"
    if exc.status_code == 405 and exc.detail == "Method Not Allowed":
        allowed = allowed_methods(request, exc)
        tail = f" (it takes {allowed})" if allowed else ""
        return f"Method {request.method} is not allowed on {path}{tail}"
    if isinstance(exc.detail, str):
        return exc.detail
    return json.dumps(exc.detail, default=str)


def describe_validation(exc: RequestValidationError) -> str:
    """Every problem, as ``where: what``: ``query.limit: Input should be a valid integer``."""
    problems = []
    for problem in exc.errors():
        where = ".".join(str(part) for part in problem.get("loc", ()))
        what = problem.get("msg", "invalid")
        problems.append(f"{where}: {what}" if where else str(what))
    return "Invalid request: " + ("; ".join(problems) or "the request could not be read")


def allowed_methods(request: Request, exc: HTTPException) -> str:
    """Every method the path takes. Starlette's 405 names only the first route whose path
    matched, but one path may be several routes (``GET`` and ``POST /me/interactions``)."""
    methods = {m.strip() for m in (exc.headers or {}).get("Allow", "").split(",") if m.strip()}
    for route in getattr(getattr(request.app, "router", None), "routes", ()):
        if isinstance(route, BaseRoute) and getattr(route, "methods", None):
            match, _ = route.matches(request.scope)
            if match is not Match.NONE:
                methods |= set(getattr(route, "methods", ()))
    return ", ".join(sorted(methods))


async def on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 405 and (allowed := allowed_methods(request, exc)):
        headers["Allow"] = allowed
    if exc.status_code in (204, 304):  # no body allowed (as Starlette's own handler does)
        return Response(status_code=exc.status_code, headers=headers)
    return error_response(exc.status_code, describe_http(request, exc), headers)


async def on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return error_response(400, describe_validation(exc))


async def on_server_error(request: Request, exc: Exception) -> Response:
    return error_response(500, "Internal server error")


def install(app: FastAPI) -> None:
    """The handlers above on ``app`` (FastAPI's ``HTTPException`` is a Starlette one)."""
    app.add_exception_handler(HTTPException, on_http_exception)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(Exception, on_server_error)


def declare_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` (an OpenAPI document) without any 422, and with a 400 in the seed's shape on
    every operation FastAPI gave one (or that has a request body). Idempotent."""
    needs_schema = False
    for item in schema.get("paths", {}).values():
        for operation in item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            validated = responses.pop("422", None) is not None
            if (validated or "requestBody" in operation) and "400" not in responses:
                responses["400"] = {
                    "description": "Bad request",
                    "content": {
                        "application/json": {
                            "schema": {"$ref": f"#/components/schemas/{ERROR_SCHEMA}"}
                        }
                    },
                }
                needs_schema = True
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name in VALIDATION_SCHEMAS:  # HTTPValidationError first: it refers to ValidationError
        if name in components and _is_fastapis(name, components[name]):
            rest = {key: value for key, value in schema.items() if key != "components"}
            others = {key: value for key, value in components.items() if key != name}
            if f'"#/components/schemas/{name}"' not in json.dumps([rest, others]):
                components.pop(name)
    if needs_schema and ERROR_SCHEMA not in components:
        components[ERROR_SCHEMA] = ErrorResponse.model_json_schema()
    return schema


def _is_fastapis(name: str, found: Any) -> bool:
    """Whether ``found`` is FastAPI's schema of that name, not an application's own model."""
    properties = found.get("properties", {}) if isinstance(found, dict) else {}
    if name == "HTTPValidationError":
        return set(properties) == {"detail"}
    return {"loc", "msg", "type"} <= set(properties)
