"""The endpoints the agent desktop (``adapters.desktop``, docs/desktop.md) needs beyond the seed's
API, for any front end: the targets a Transfer may name, and a mail made safe to show.

* ``GET /me/transfer-targets``: ``agents`` (id, name, ready), ``skills``, ``queues``;
* ``GET /me/interactions/{id}/content``: the mail's ``date``, whether it has HTML, how many
  remote images it shows, the seconds left of the agent's offer of it;
* ``GET /me/interactions/{id}/content/html``: the HTML part sanitised (``mail_html``), as a
  document under its own CSP; ``?images=show`` keeps the remote images.

Like every ``/me`` path they are authenticated by the app's middleware, answer an interaction
the agent may not see exactly as an unknown id (404), and answer errors in the seed's shape.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from interactions_core.engine import Engine
from interactions_core.errors import InteractionNotFound, InteractionsError
from interactions_core.model import Interaction
from interactions_core.wire import InteractionMessage

from . import mail_html
from .app import API, ERRORS, Api, from_domain
from .auth import AuthResult

TRANSFER_TARGETS = API + "/me/transfer-targets"
CONTENT = API + "/me/interactions/{interaction_id}/content"
CONTENT_HTML = CONTENT + "/html"


def _agent(request: Request) -> str:
    result: AuthResult = request.state.auth
    return result.agent_id


def transfer_targets(engine: Engine, agent_id: str) -> dict[str, Any]:
    """Who and where ``agent_id`` may transfer to: the other agents (with whether they are
    Ready), every skill an agent has or a queue requires, the queues the router serves."""
    engine.service.agent(agent_id)  # NotFound for an agent the directory no longer has
    others = sorted((a for a in engine.directory.agents() if a.id != agent_id), key=lambda a: a.id)
    with engine.store.unit_of_work() as uow:
        ready = {a.id: bool((s := uow.channels.get(a.id)) and s.ready) for a in others}
    config = engine.config
    queue_skills = engine.router.config.queue_skills
    skills = {s for a in engine.directory.agents() for s in a.skills} | set(queue_skills.values())
    queues = {*config.mailbox_queues.values(), config.default_queue, *queue_skills}
    queues |= set(config.queues or ())
    queues -= {config.draft_queue, config.sent_queue, config.done_queue, config.automatic_queue}
    return {
        "agents": [{"id": a.id, "name": a.name or a.id, "ready": ready[a.id]} for a in others],
        "skills": sorted(s for s in skills if s),
        "queues": sorted(q for q in queues if q),
    }


def visible_interaction(
    engine: Engine, agent_id: str, interaction_id: str
) -> tuple[InteractionMessage, Interaction, float | None]:
    """The interaction as the agent sees it and as stored, and the seconds left of the agent's
    offer of it (None when it is not offered to the agent); ``InteractionNotFound`` for one the
    agent may not see, exactly as for an unknown id."""
    view = engine.interaction(agent_id, interaction_id)
    with engine.store.unit_of_work() as uow:
        found = uow.interactions.get(interaction_id)
    if found is None:  # removed between the two reads
        raise InteractionNotFound(interaction_id)
    left: float | None = None
    if found.offer is not None and found.offer.agent_id == agent_id:
        deadline = found.offer.offered_at + engine.router.config.offer_timeout
        left = max(0.0, (deadline - engine.clock.now()).total_seconds())
    return view, found, left


def _content_ids(found: Interaction) -> dict[str, str]:
    return {a.content_id: a.id for a in found.email.attachments if a.content_id}


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def add_desktop_api(app: FastAPI, api: Api) -> None:
    """Adds the three routes above to ``app`` (the API's FastAPI app)."""
    ok_json: dict[int | str, dict[str, Any]] = {200: {"description": "OK"}, **ERRORS}

    @app.get(
        TRANSFER_TARGETS,
        summary="Who and where a Transfer may go: agents, skills, queues",
        responses=ok_json,
        response_model=None,
    )
    async def get_transfer_targets(request: Request) -> Response:
        try:
            targets = await api.core.run_quiet(transfer_targets, api.engine, _agent(request))
        except InteractionsError as exc:
            return from_domain(exc)
        return JSONResponse({"status": "ok", **targets})

    @app.get(
        CONTENT,
        summary="A mail's date, whether it has HTML, its remote images, the offer's time left",
        responses=ok_json,
        response_model=None,
    )
    async def get_content(interaction_id: str, request: Request) -> Response:
        try:
            _, found, left = await api.core.run_quiet(
                visible_interaction, api.engine, _agent(request), interaction_id
            )
        except InteractionsError as exc:
            return from_domain(exc)
        source = found.email.html
        remote = 0
        if source.strip():
            safe = await run_in_threadpool(
                mail_html.sanitize, source, found.id, _content_ids(found)
            )
            remote = safe.remote_images
        content = {
            "date": _iso(found.email.date),
            "html": bool(source.strip()),
            "remoteImages": remote,
            "offerExpiresInSeconds": None if left is None else round(left, 1),
        }
        return JSONResponse({"status": "ok", "content": content})

    @app.get(
        CONTENT_HTML,
        summary="The mail's HTML, sanitised, as a document for a sandboxed frame",
        description="Served under its own Content-Security-Policy (no script, images from "
        "this origin only unless images=show) with a CSP sandbox; cid: images point at the "
        "attachments, links open in a new tab with rel=noopener noreferrer.",
        responses={200: {"content": {"text/html": {}}}, **ERRORS},
        response_model=None,
        openapi_extra={
            "parameters": [
                {
                    "name": "images",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "enum": ["show", "block"]},
                    "description": "show: keep remote images (default: blocked)",
                }
            ]
        },
    )
    async def get_content_html(interaction_id: str, request: Request) -> Response:
        show = request.query_params.get("images") == "show"
        try:
            view, found, _ = await api.core.run_quiet(
                visible_interaction, api.engine, _agent(request), interaction_id
            )
        except InteractionsError as exc:
            return from_domain(exc)
        safe = await run_in_threadpool(
            mail_html.sanitize, found.email.html, found.id, _content_ids(found), remote_images=show
        )
        return HTMLResponse(
            mail_html.document(safe, view["email_object"]["Subject"]),
            headers=mail_html.document_headers(remote_images=show),
        )
