"""Every error answers in the seed's shape, ``{"status":"error","errorDescription":...}``, also
those FastAPI and Starlette make themselves (unknown path, wrong method, validation), and the
OpenAPI document declares the statuses the API answers: 400 for a bad request, never 422."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import HTTPException, Query
from fastapi.testclient import TestClient
from starlette.routing import BaseRoute, Mount
from test_api import PASSWORDS, basic  # tests/http is on sys.path

from adapters.server.bootstrap import Server, build
from adapters.server.settings import load_settings

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


@pytest.fixture
def server(tmp_path: Path) -> Server:
    return build(
        load_settings(data_dir=tmp_path, smtp_listen_port=0, login_max_failures=1_000),
        demo_passwords=PASSWORDS,
    )


@pytest.fixture
def client(server: Server) -> Iterator[TestClient]:
    with TestClient(server.app) as c:
        yield c


def seed_error(r: Any) -> str:
    """The answer's ``errorDescription``, after checking the answer is exactly the seed's shape."""
    assert r.headers["content-type"].startswith("application/json"), (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"status", "errorDescription"}, body
    assert body["status"] == "error" and isinstance(body["errorDescription"], str), body
    assert body["errorDescription"].strip(), body
    description: str = body["errorDescription"]
    return description


SAMPLES = {"channel": "email"}
"""Path parameters that must name something real to reach the body (the rest are any id)."""


def concrete(path: str) -> str:
    """A request path for a route's template: each ``{parameter}`` becomes a plain value."""
    return re.sub(r"\{([^}:]+)(:[^}]*)?\}", lambda m: SAMPLES.get(m[1], "x1"), path)


def methods_by_path(routes: list[BaseRoute]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = defaultdict(set)
    for route in routes:
        methods = getattr(route, "methods", None)
        if methods:
            found[getattr(route, "path")] |= set(methods)  # noqa: B009 - BaseRoute has no path
    return dict(found)


def test_unknown_paths_are_404_in_the_seed_shape(client: TestClient) -> None:
    for path in ("/nope", "/api/v2/nope", "/api/v2/me/nope", "/api/v2/me/interactions/x/y/z"):
        r = client.get(path, headers=basic("alice"))
        assert r.status_code == 404, (path, r.text)
        assert path in seed_error(r)
    # Under /api/v2/me, credentials first: an unknown path tells a stranger nothing.
    client.cookies.clear()
    r = client.get("/api/v2/me/nope")
    assert r.status_code == 401 and seed_error(r)


def test_every_route_with_a_wrong_method_is_405_with_allow(server: Server) -> None:
    """Each path of the app, with every method none of its routes takes: 405, the seed's
    shape, and an ``Allow`` header naming exactly the methods the path does take (all its
    routes' together: ``GET`` and ``POST /me/interactions`` are two routes)."""
    by_path = methods_by_path(server.app.routes)
    assert len(by_path) >= 14, by_path  # the API's paths, the docs' pages and /health
    checked = 0
    with TestClient(server.app) as client:
        for path, allowed in by_path.items():
            for method in METHODS:
                if method in allowed:
                    continue
                r = client.request(method, concrete(path), headers=basic("alice"))
                assert r.status_code == 405, (method, path, r.status_code, r.text)
                assert {m.strip() for m in r.headers["allow"].split(",")} == allowed, (path, r)
                description = seed_error(r)
                assert method in description and concrete(path) in description, description
                checked += 1
    assert checked >= 50, checked


def test_every_mount_answers_a_wrong_method_in_the_seed_shape(server: Server) -> None:
    """Mounted apps (none today; static files, say) answer in the same shape."""
    with TestClient(server.app) as client:
        for route in server.app.routes:
            if isinstance(route, Mount):
                r = client.request("PATCH", route.path + "/x1", headers=basic("alice"))
                assert r.status_code in (404, 405), (route.path, r.text)
                seed_error(r)


def request_bodies(server: Server) -> dict[tuple[str, str], set[str]]:
    """(method, path) of every documented operation that takes a body, with its media types."""
    document = server.app.openapi()
    bodies = {}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if "requestBody" in operation:
                bodies[method.upper(), path] = set(operation["requestBody"]["content"])
    return bodies


MALFORMED_JSON = (
    b'{"operationName": ',  # cut short
    b"",  # empty
    b"[]",  # not an object
    b'{"operationName": 5}',  # the wrong type
    b'{"operationName": "Accept", "operationName": "Reject"}',  # a key twice
    b"\xff\xfe",  # not UTF-8
    b"[" * 10_000 + b"]" * 10_000,  # too deep
)
MALFORMED_MULTIPART = (
    ("application/json", b'{"attachment": "x"}'),  # not multipart
    ("multipart/form-data", b"--x\r\n"),  # no boundary
    ("multipart/form-data; boundary=x", b"--x\r\nContent-Disposition: form-data\r\n\r\n"),
    ("multipart/form-data; boundary=x", b"garbage"),
)


def test_every_route_taking_a_body_answers_a_malformed_one_with_400(server: Server) -> None:
    """Every route of the app whose operation takes a body, with bodies it cannot read: 400 in
    the seed's shape (never FastAPI's 422, never a 500)."""
    bodies = request_bodies(server)
    routes = [
        (method, getattr(route, "path"))  # noqa: B009 - BaseRoute has no path
        for route in server.app.routes
        for method in sorted(getattr(route, "methods", None) or ())
        if (method, getattr(route, "path", None)) in bodies
    ]
    assert len(routes) == len(bodies) >= 5, (routes, bodies)
    with TestClient(server.app) as client:
        for method, path in routes:
            url = concrete(path)
            if "application/json" in bodies[method, path]:
                cases = [("application/json", body) for body in MALFORMED_JSON]
            else:
                assert bodies[method, path] == {"multipart/form-data"}, bodies[method, path]
                cases = list(MALFORMED_MULTIPART)
            for content_type, body in cases:
                headers = {**basic("alice"), "Content-Type": content_type}
                r = client.request(method, url, content=body, headers=headers)
                assert r.status_code == 400, (method, path, body[:40], r.status_code, r.text)
                seed_error(r)


def test_an_upload_without_its_field_is_400_naming_it(client: TestClient) -> None:
    r = client.post(
        "/api/v2/me/interactions/x1/attachments",
        files={"file": ("a.txt", b"hello", "text/plain")},
        headers=basic("alice"),
    )
    assert r.status_code == 400, r.text
    assert "'attachment' is required" in seed_error(r)
    r = client.post("/api/v2/me/interactions/x1/attachments", headers=basic("alice"))
    assert r.status_code == 400 and "multipart/form-data" in seed_error(r)


def test_fastapis_own_errors_answer_in_the_seed_shape(server: Server) -> None:
    """A route FastAPI validates (a typed query parameter, a pydantic body) and one raising
    ``HTTPException``, added to the real app: their errors are the seed's, 400 not 422, and an
    exception's status and headers are kept; an unhandled exception is a 500 in the shape."""

    @server.app.get("/probe/typed")
    async def typed(limit: int = Query()) -> dict[str, int]:
        return {"limit": limit}

    @server.app.post("/probe/model")
    async def model(body: dict[str, int]) -> dict[str, int]:
        return body

    @server.app.get("/probe/teapot")
    async def teapot() -> None:
        raise HTTPException(418, "I'm a teapot", headers={"X-Brew": "earl grey"})

    @server.app.get("/probe/crash")
    async def crash() -> None:
        raise RuntimeError("boom")

    with TestClient(server.app, raise_server_exceptions=False) as client:
        r = client.get("/probe/typed", params={"limit": "many"})
        assert r.status_code == 400
        assert seed_error(r).startswith("Invalid request: query.limit: ")
        r = client.get("/probe/typed")
        assert r.status_code == 400 and "query.limit: Field required" in seed_error(r)
        r = client.post("/probe/model", content=b"{", headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and "body" in seed_error(r)
        r = client.post("/probe/model", json={"a": "b"})
        assert r.status_code == 400 and "body.a" in seed_error(r)
        r = client.get("/probe/teapot")
        assert r.status_code == 418 and seed_error(r) == "I'm a teapot"
        assert r.headers["x-brew"] == "earl grey"
        r = client.get("/probe/crash")
        assert r.status_code == 500 and seed_error(r) == "Internal server error"
        assert "boom" not in r.text


def test_openapi_has_no_422_and_declares_400_where_bodies_are_parsed(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    text = json.dumps(document)
    assert '"422"' not in text and "HTTPValidationError" not in text
    assert '"ValidationError"' not in text
    error_ref = {"$ref": "#/components/schemas/ErrorResponse"}
    assert set(document["components"]["schemas"]["ErrorResponse"]["properties"]) == {
        "status",
        "errorDescription",
    }
    operations = [
        (method, path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]
    with_body = [(m, p, o) for m, p, o in operations if "requestBody" in o]
    assert len(with_body) >= 5
    for method, path, operation in operations:
        responses = operation["responses"]
        assert "422" not in responses, (method, path)
        if "requestBody" in operation or operation.get("parameters"):
            bad = responses.get("400")
            assert bad is not None, (method, path)
            assert bad["content"]["application/json"]["schema"] == error_ref, (method, path)
