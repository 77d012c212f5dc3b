"""The agent HTTP API (FastAPI) under ``/api/v2``, exactly as the seed describes it.

Bodies are read and parsed here, not by FastAPI: the size is capped before reading, malformed
or hostile JSON (too deep, huge numbers) is a 400 in the seed's error shape, and the
``operationName`` union is validated by the core, which lists every problem. The OpenAPI page
still shows the union with its discriminator and an example per operation.

Status codes: 400 bad request, 401 not authenticated, 403 CSRF, 404 unknown or not the agent's,
409 not allowed in this state or a version conflict, 413 too large, 429 too many failed logins,
503 store busy.

``GET /health`` (outside ``/api/v2``, unauthenticated) says whether this process should get
traffic: for a load balancer's health checks and for operators (docs/http.md, health).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from http.cookies import SimpleCookie
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, TypeAdapter
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from interactions_core.engine import Engine
from interactions_core.errors import InteractionsError, InvalidRequest, TooLarge
from interactions_core.operations import CreateEmail, parse_json
from interactions_core.results import Result

from ..eventlog import logged
from ..runtime import CoreRunner
from . import docs, errors, hot, uploads
from .auth import SESSION_COOKIE, AuthError, AuthResult, HttpAuth
from .hot import BodyReader, HotRoutes, HotTable

if TYPE_CHECKING:  # a type only: adapters never import the composition root (test_layers)
    from ..server.node import NodeStatus

API = "/api/v2"
INTERACTIONS = API + "/me/interactions"
INTERACTION = INTERACTIONS + "/{interaction_id}"
INTERACTION_SINGULAR = API + "/me/interaction/{interaction_id}"  # the seed spells it so too
STATUS = {
    "invalid": 400,
    "not_found": 404,
    "not_allowed": 409,
    "conflict": 409,
    "too_large": 413,
    "unavailable": 503,
}


class OkResponse(BaseModel):
    model_config = ConfigDict(extra="allow")
    status: str = "ok"


ErrorResponse = errors.ErrorResponse  # the seed's error shape (every error answers it)


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in (
        (400, "Bad request: malformed JSON, unknown operationName or bad fields"),
        (401, "Not authenticated"),
        (403, "Missing or invalid Csrf token"),
        (404, "No such interaction for this agent"),
        (409, "Not allowed in the current state, or changed concurrently"),
        (413, "Too large"),
        (429, "Too many failed logins"),
        (503, "Busy; try again"),
    )
}

EXAMPLES: dict[str, dict[str, Any]] = {
    "Accept": {"operationName": "Accept"},
    "Reject": {"operationName": "Reject"},
    "Reply": {"operationName": "Reply", "subjectPrefix": "Re: ", "quoteOriginal": True},
    "ReplyAll": {
        "operationName": "ReplyAll",
        "replyToStartLine": "You wrote:",
        "indentCharacter": "> ",
        "quoteOriginal": True,
        "queueName": "Drafts",
    },
    "Forward": {"operationName": "Forward", "toAddress": "partner@example.net"},
    "CancelReply": {"operationName": "CancelReply"},
    "Send": {
        "operationName": "Send",
        "queueName": "Sent",
        "email_object": {
            "toAddress": "customer@example.org",
            "subject": "Re: Order 42",
            "text": "It ships today.",
            "ccAddress": ["colleague@example.org"],
        },
    },
    "Transfer": {"operationName": "Transfer", "agentId": "bob"},
    "StopProcessing": {"operationName": "StopProcessing"},
    "PlaceInQueue": {"operationName": "PlaceInQueue", "queueName": "Support"},
    "PlaceInWorkbin": {"operationName": "PlaceInWorkbin", "workbinName": "Personal"},
    "Pull": {"operationName": "Pull"},
    "UpdateProperties": {
        "operationName": "UpdateProperties",
        "userData": {"Priority": 3},
        "comment": "VIP",
    },
    "LinkAttachment": {"operationName": "LinkAttachment", "attachmentId": "<id>"},
}
CREATE_EXAMPLE = {
    "operationName": "CreateEmail",
    "queueName": "Drafts",
    "interactionType": "Outbound",
    "interactionSubType": "OutboundNew",
}


class ApiApp(FastAPI):
    """FastAPI plus the operation union's schemas and Basic security in its OpenAPI."""

    extra_schemas: dict[str, Any] = {}  # noqa: RUF012 - replaced per instance
    hot_routes: HotTable  # the routes answered before the router (adapters.http.hot)

    def openapi(self) -> dict[str, Any]:
        schema = super().openapi()
        components = schema.setdefault("components", {})
        components.setdefault("schemas", {}).update(self.extra_schemas)
        components["securitySchemes"] = {"basic": {"type": "http", "scheme": "basic"}}
        schema["security"] = [{"basic": []}]
        return errors.declare_errors(schema)  # 400, never FastAPI's 422 (errors.py)


def error(status: int, description: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        {"status": "error", "errorDescription": description}, status_code=status, headers=headers
    )


def from_domain(exc: InteractionsError) -> JSONResponse:
    return error(STATUS.get(exc.kind, 400), exc.description)


def from_result(result: Result) -> JSONResponse:
    """The core's answer with the status its error kind maps to (200 for a success)."""
    status = 200 if result.ok else STATUS.get(result.kind or "invalid", 400)
    return JSONResponse(dict(result), status_code=status)


HEALTH_PATH = "/health"
HEALTH_TIMEOUT_S = 2.5
"""The longest ``GET /health`` waits for the database check (which bounds itself at 2 s)."""
RUNNING_ROLES = ("leader", "follower")


class Api:
    """Everything the routes need: the engine (called through the core runner), authentication,
    limits."""

    def __init__(
        self,
        core: CoreRunner,
        engine: Engine,
        auth: HttpAuth,
        *,
        max_body_bytes: int = 1024 * 1024,
        max_attachment_bytes: int = 25 * 1024 * 1024,
        node: NodeStatus | None = None,
        check_database: Callable[[], Awaitable[None]] | None = None,
        health_timeout: float = HEALTH_TIMEOUT_S,
    ) -> None:
        """``node``: this process in a cluster (its id, role and notification tail), shown by
        ``GET /health``; without one the process counts as running. ``check_database``:
        returns when the database answered, raises (its message: why not) when it did not; it
        should bound itself (``adapters.server.health``), and ``GET /health`` gives up on it
        after ``health_timeout`` seconds anyway. Without one the database counts as reachable.
        """
        self.core = core
        self.engine = engine
        self.auth = auth
        self.max_body_bytes = max_body_bytes
        self.max_attachment_bytes = max_attachment_bytes
        self.node = node
        self.check_database = check_database
        self.health_timeout = health_timeout


async def read_json(request: Request, limit: int) -> Any:
    """The body as JSON, bounded in size and depth; ``InvalidRequest``/``TooLarge`` otherwise."""
    return await read_json_from(request.stream(), request.headers.get("content-length"), limit)


async def read_json_from(chunks: AsyncIterator[bytes], declared: str | None, limit: int) -> Any:
    """``read_json`` over the body's ``chunks`` and its declared Content-Length (the framework's
    path and the hot routes', ``adapters.http.hot``, read bodies by this one rule)."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"request body over {limit} bytes")
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"request body over {limit} bytes")
        parts.append(chunk)
    body = b"".join(parts)
    if not body.strip():
        raise InvalidRequest("The request body must be a JSON object with an operationName")
    return parse_json(body)


def create_app(
    api: Api,
    *,
    lifespan: Callable[[FastAPI], Any] | None = None,
) -> ApiApp:
    app = ApiApp(
        title="interactions-core agent API",
        version="0.1.0",
        description="GWS-style agent API for e-mail interactions. Results arrive as CometD "
        "notifications on /api/v2/notifications (channel /me/interactions).",
        lifespan=lifespan,
        docs_url=None,  # FastAPI's pages load from a CDN: docs.py serves them offline
        redoc_url=None,
    )
    errors.install(app)  # FastAPI's own errors (404, 405, validation) in the seed's shape
    docs.add_docs(app)

    # The hot routes (below) answer inside the authentication, before FastAPI's router; each
    # is registered with FastAPI too, whose endpoint calls the same handler (adapters.http.hot).
    hot_routes = app.hot_routes = HotTable()

    def body_of_scope(scope: Scope, receive: Receive) -> BodyReader:
        declared = hot.header(scope, b"content-length")
        return lambda: read_json_from(hot.body_chunks(receive), declared, api.max_body_bytes)

    app.add_middleware(HotRoutes, table=hot_routes, body=body_of_scope)
    app.add_middleware(AuthMiddleware, auth=api.auth)  # added last: it runs first

    def agent_of(request: Request) -> str:
        result: AuthResult = request.state.auth
        return result.agent_id

    def body_of(request: Request) -> BodyReader:
        return lambda: read_json(request, api.max_body_bytes)

    async def operate(agent: str, interaction_id: str | None, read: BodyReader) -> Response:
        try:
            body = await read()
        except InteractionsError as exc:
            return from_domain(exc)
        call = api.core.run(api.engine.execute, agent, interaction_id, body)
        return from_result(await logged(call, agent, body, interaction_id=interaction_id))

    async def operation(agent: str, params: Mapping[str, str], read: BodyReader) -> Response:
        return await operate(agent, params["interaction_id"], read)

    async def creation(agent: str, params: Mapping[str, str], read: BodyReader) -> Response:
        return await operate(agent, None, read)

    def schema_of(shape: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        found = TypeAdapter(shape).json_schema(
            by_alias=True, ref_template="#/components/schemas/{model}"
        )
        return found, found.pop("$defs", {})

    # Not in the OpenAPI document: it is no part of the agent API, needs no credentials, and
    # answers 503 by design (starting, stopping, database down), which an API checker would
    # report as a server error. Documented in docs/http.md.
    @app.get(HEALTH_PATH, include_in_schema=False, response_model=None)
    async def health() -> Response:
        status, body = await health_report(api)
        return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})

    registry = api.engine.registry
    union_schema, union_defs = schema_of(registry.union())
    create_schema, create_defs = schema_of(CreateEmail)
    union_defs = {**union_defs, **create_defs}

    def body_doc(
        examples: Mapping[str, Mapping[str, Any]], schema: dict[str, Any] = union_schema
    ) -> dict[str, Any]:
        return {
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": schema,
                        "examples": {name: {"value": value} for name, value in examples.items()},
                    }
                },
            }
        }

    ok_doc: dict[int | str, dict[str, Any]] = {200: {"model": OkResponse}, **ERRORS}

    async def post_operation(interaction_id: str, request: Request) -> Response:
        return await operation(agent_of(request), request.path_params, body_of(request))

    for path, summary in (
        (INTERACTION, "Execute an operation on an interaction"),
        (INTERACTION_SINGULAR, "The seed's singular spelling of the same endpoint"),
    ):
        app.post(
            path,
            summary=summary,
            responses=ok_doc,
            openapi_extra=body_doc({**EXAMPLES, **registry.examples}),
            response_model=None,
        )(post_operation)
        hot_routes.add("POST", path, operation)

    @app.post(
        INTERACTIONS,
        summary="CreateEmail: a new outbound e-mail",
        responses=ok_doc,
        openapi_extra=body_doc({"CreateEmail": CREATE_EXAMPLE}, create_schema),
        response_model=None,
    )
    async def create_email(request: Request) -> Response:
        return await creation(agent_of(request), request.path_params, body_of(request))

    hot_routes.add("POST", INTERACTIONS, creation)

    async def answer(key: str, read: Callable[..., Any], *args: Any) -> Response:
        """A read through the core runner, answered as ``{"status": "ok", key: ...}``."""
        try:
            found = await api.core.run_quiet(read, *args)
        except InteractionsError as exc:
            return from_domain(exc)
        return JSONResponse({"status": "ok", key: found})

    async def listing(agent: str, params: Mapping[str, str], read: BodyReader) -> Response:
        return await answer("interactions", api.engine.interactions, agent)

    async def reading(agent: str, params: Mapping[str, str], read: BodyReader) -> Response:
        return await answer("interaction", api.engine.interaction, agent, params["interaction_id"])

    @app.get(INTERACTIONS, responses=ok_doc, response_model=None)
    async def list_interactions(request: Request) -> Response:
        return await listing(agent_of(request), request.path_params, body_of(request))

    @app.get(INTERACTION, responses=ok_doc, response_model=None)
    async def get_interaction(interaction_id: str, request: Request) -> Response:
        return await reading(agent_of(request), request.path_params, body_of(request))

    hot_routes.add("GET", INTERACTIONS, listing)
    hot_routes.add("GET", INTERACTION, reading)

    @app.post(
        API + "/me/interactions/{interaction_id}/attachments",
        responses=ok_doc,
        response_model=None,
        summary="Upload an attachment (multipart form field 'attachment') to a draft",
        description="With the optional form field 'contentId', the draft's HTML can show the "
        'upload inline as `<img src="cid:...">`: it is sent beside the HTML (multipart/related).',
        openapi_extra=uploads.OPENAPI,
    )
    async def upload_attachment(interaction_id: str, request: Request) -> Response:
        try:
            # Streamed to a temporary file and counted (413 past the limit, nothing more
            # read); read once only when within it, as the Engine takes bytes (docs/http.md).
            async with uploads.receive_upload(request, api.max_attachment_bytes) as upload:
                data = await run_in_threadpool(upload.read)
            added = await api.core.offload(  # up to max_attachment_bytes: off the loop
                api.engine.add_attachment,
                agent_of(request),
                interaction_id,
                upload.filename or "attachment",
                upload.content_type or "application/octet-stream",
                data,
                upload.content_id,
            )
        except InteractionsError as exc:
            return from_domain(exc)
        return JSONResponse({"status": "ok", "documentId": added.id, "attachment": added.to_wire()})

    @app.get(
        API + "/me/interactions/{interaction_id}/attachments/{attachment_id}",
        responses={200: {"content": {"application/octet-stream": {}}}, **ERRORS},
        response_model=None,
    )
    async def get_attachment(interaction_id: str, attachment_id: str, request: Request) -> Response:
        try:
            found, data = await api.core.offload(  # as large as an upload: off the loop
                api.engine.get_attachment, agent_of(request), interaction_id, attachment_id
            )
        except InteractionsError as exc:
            return from_domain(exc)
        return Response(
            data,
            media_type=found.mimetype,
            headers={
                "Content-Disposition": content_disposition(found.name),
                "X-Content-Type-Options": "nosniff",
                "Content-Security-Policy": "sandbox",
            },
        )

    @app.delete(
        API + "/me/interactions/{interaction_id}/attachments/{attachment_id}",
        responses=ok_doc,
        response_model=None,
    )
    async def delete_attachment(
        interaction_id: str, attachment_id: str, request: Request
    ) -> Response:
        try:
            await api.core.run(
                api.engine.remove_attachment, agent_of(request), interaction_id, attachment_id
            )
        except InteractionsError as exc:
            return from_domain(exc)
        return JSONResponse({"status": "ok"})

    @app.post(
        API + "/me/channels/{channel}",
        responses=ok_doc,
        response_model=None,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "operationName": {"type": "string", "enum": ["Ready", "NotReady"]},
                                "reason": {"type": "string"},
                            },
                            "required": ["operationName"],
                        },
                        "examples": {
                            "Ready": {"value": {"operationName": "Ready"}},
                            "NotReady": {"value": {"operationName": "NotReady", "reason": "Lunch"}},
                        },
                    }
                },
            }
        },
    )
    async def set_channel(channel: str, request: Request) -> Response:
        try:
            body = await read_json(request, api.max_body_bytes)
            if not isinstance(body, dict):
                raise InvalidRequest("The request body must be a JSON object with an operationName")
        except InteractionsError as exc:
            return from_domain(exc)
        agent = agent_of(request)
        call = api.core.run(api.engine.set_channel_state, agent, body, channel)
        return from_result(await logged(call, agent, body, channel=channel))

    @app.get(API + "/me", responses=ok_doc, response_model=None)
    async def me(request: Request) -> Response:
        return await answer("user", api.engine.agent_state, agent_of(request))

    @app.get(API + "/me/workbins", responses=ok_doc, response_model=None)
    async def workbins(request: Request) -> Response:
        return await answer("workbins", api.engine.workbins, agent_of(request))

    @app.get(API + "/me/workbins/{workbin_name}", responses=ok_doc, response_model=None)
    async def workbin_content(workbin_name: str, request: Request) -> Response:
        return await answer(
            "interactions", api.engine.workbin_content, agent_of(request), workbin_name
        )

    @app.post(API + "/me/logout", responses=ok_doc, response_model=None)
    async def logout(request: Request) -> Response:
        result: AuthResult = request.state.auth
        try:
            # Awaited: the session is gone everywhere before the answer says so.
            await api.auth.end_session(result.session_id)
        except InteractionsError as exc:  # its storage is down: 503, the cookie is kept
            return from_domain(exc)
        response = JSONResponse({"status": "ok"})
        response.delete_cookie(SESSION_COOKIE, path="/api")
        return response

    app.extra_schemas = union_defs
    return app


async def health_report(api: Api) -> tuple[int, dict[str, Any]]:
    """``GET /health``'s status and body: 200 when the database answered and the process is
    running (``leader`` or ``follower``), 503 otherwise (``starting``, ``stopping``, the
    database unreachable or not answering within ``api.health_timeout``)."""
    database = "ok"
    if api.check_database is not None:
        try:
            await asyncio.wait_for(api.check_database(), api.health_timeout)
        except TimeoutError:
            database = f"unreachable: no answer within {api.health_timeout:g} s"
        except Exception as exc:
            database = f"unreachable: {_first_line(exc)}"
    node = api.node
    role = node.role if node is not None else None
    running = node is None or role in RUNNING_ROLES
    body: dict[str, Any] = {
        "status": "ok" if running and database == "ok" else "error",
        "node": node.node_id if node is not None else None,
        "role": role,
        "database": database,
        "tail": None
        if node is None
        else {
            "position": node.tail_position,
            "lag": node.tail_lag,
            "ageSeconds": round(node.tail_age(), 3),
        },
    }
    if body["status"] != "ok":
        problems = [] if running else [f"the process is {role}"]
        if database != "ok":
            problems.append(f"the database is {database}")
        body["errorDescription"] = "; ".join(problems)
        return 503, body
    return 200, body


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


class AuthMiddleware:
    """Authenticates every ``/api/v2/me...`` request (a plain ASGI middleware: it adds nothing
    to a request's cost but the check). Sets the session cookie and the CSRF headers."""

    def __init__(self, app: ASGIApp, auth: HttpAuth) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(API + "/me"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        forwarded = [v for k, v in scope["headers"] if k.lower() == b"x-forwarded-for"]
        if len(forwarded) > 1:  # several lines are one list (RFC 9110 5.3), as uvicorn reads it
            headers["x-forwarded-for"] = b", ".join(forwarded).decode("latin-1")
        cookies = cookie_parser(headers.get("cookie", ""))
        client = scope.get("client")  # the peer; HttpAuth applies the trusted proxies
        method = scope["method"]
        try:
            result = await self.auth.authenticate(headers, cookies, client[0] if client else None)
            self.auth.check_csrf(method, headers, result)
        except AuthError as exc:
            await error(exc.status, exc.description, exc.headers)(scope, receive, send)
            return
        scope.setdefault("state", {})["auth"] = result
        extra: list[tuple[str, str]] = []
        if result.new_session:
            cookie = SimpleCookie()
            cookie[SESSION_COOKIE] = result.session_id
            morsel = cookie[SESSION_COOKIE]
            morsel["httponly"] = True
            morsel["samesite"] = "Lax"
            morsel["path"] = "/api"
            extra.append(("set-cookie", morsel.OutputString()))
        if self.auth.csrf and method == "GET":
            extra += [("X-CSRF-HEADER", "X-CSRF-TOKEN"), ("X-CSRF-TOKEN", result.csrf_token)]

        async def send_with_session(message: Message) -> None:
            if message["type"] == "http.response.start" and extra:
                response_headers = MutableHeaders(scope=message)
                for name, value in extra:
                    response_headers.append(name, value)
            await send(message)

        await self.app(scope, receive, send_with_session)


def content_disposition(name: str) -> str:
    """RFC 6266: an ASCII fallback plus the UTF-8 ``filename*``; never header-breaking."""
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in name)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"
