"""The docs' ``Escalate`` custom operation end to end on the real server: capabilities, the
HTTP API, its OpenAPI page, the lifecycle diagram."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from test_api import PASSWORDS, basic, deliver, offered, post  # tests/http is on sys.path

from adapters.server.bootstrap import build
from adapters.server.settings import load_settings
from interactions_core.diagram import render_page

DOCS = Path(__file__).resolve().parents[2] / "docs"


def escalate_spec() -> Any:
    """The ``ESCALATE`` spec exactly as docs/custom-operations.md defines it."""
    page = (DOCS / "custom-operations.md").read_text(encoding="utf-8")
    code = re.findall(r"```python\n(.*?)```", page, re.DOTALL)[0]
    definitions = code.split("\nalice = ")[0]  # the spec, not the walk-through after it
    namespace: dict[str, Any] = {"__name__": "docs_custom_operations"}
    exec(compile(definitions, "custom-operations.md", "exec", dont_inherit=True), namespace)
    return namespace["ESCALATE"]


def test_escalate_over_http_openapi_and_diagram(tmp_path: Path) -> None:
    spec = escalate_spec()
    server = build(
        load_settings(data_dir=tmp_path, smtp_listen_port=0),
        demo_passwords=PASSWORDS,
        operations=[spec],
    )
    with TestClient(server.app) as client:
        schema = client.get("/openapi.json").json()
        assert "Escalate" in schema["components"]["schemas"]
        body = schema["paths"]["/api/v2/me/interactions/{interaction_id}"]["post"]["requestBody"]
        content = body["content"]["application/json"]
        assert content["examples"]["Escalate"]["value"]["reason"] == "Refund over 500 EUR"
        members = {m["$ref"].rsplit("/", 1)[-1] for m in content["schema"]["oneOf"]}
        assert {"Escalate", "Accept", "Send"} <= members

        post(client, "/channels/email", {"operationName": "Ready"})
        deliver(server)
        iid = offered(client)
        assert post(client, f"/interactions/{iid}", {"operationName": "Accept"}).json() == {
            "status": "ok"
        }
        shown = client.get(f"/api/v2/me/interactions/{iid}", headers=basic("alice")).json()
        assert "Escalate" in shown["interaction"]["capabilities"]

        bad = post(client, f"/interactions/{iid}", {"operationName": "Escalate", "reason": ""})
        assert bad.status_code == 400 and "reason" in bad.json()["errorDescription"]
        r = post(client, f"/interactions/{iid}", {"operationName": "Escalate", "reason": "VIP"})
        assert r.json() == {"status": "ok"}
        shown = client.get(f"/api/v2/me/interactions/{iid}", headers=basic("alice")).json()
        assert shown["interaction"]["state"] == "Transferred"
        assert shown["interaction"]["userData"]["EscalationReason"] == "VIP"
        again = post(client, f"/interactions/{iid}", {"operationName": "Escalate", "reason": "x"})
        assert again.status_code == 409
    page = render_page(server.engine.lifecycle)
    assert "Accepted --> Transferred: Escalate" in page and "`Escalate`" in page
