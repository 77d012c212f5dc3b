"""Bayeux batches go through the same strict JSON reader: a key given twice is refused.

Over long-polling the batch is an HTTP 400 (as any body that is not a JSON array of messages);
over a websocket the frame gets the Bayeux error ``400::malformed JSON: ...``, the reason naming
the key and its path (as the HTTP API's 400 does). Nothing of the batch
reaches a session, and the client's session keeps working.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from adapters.cometd import CometdSettings

from .conftest import ServerHarness
from .raw import LongPolling, WebSocketClient


async def test_long_polling_refuses_a_repeated_key_with_400(make_server: Any) -> None:
    server: ServerHarness = make_server(CometdSettings())
    client = LongPolling(server, "agent20")
    try:
        handshake = (
            b'[{"channel":"/meta/handshake","version":"1.0","minimumVersion":"1.0",'
            b'"supportedConnectionTypes":["long-polling"],"id":"h1","id":"h2"}]'
        )
        response = await client.http.post("/handshake", content=handshake)
        assert response.status_code == 400, response.text
        assert "[0].id: the key 'id' is given more than once" in response.text
        assert await server.inspect(lambda engine: len(engine.sessions)) == 0

        await client.start()
        cid = client.client_id
        publish = (
            '[{"channel":"/service/echo","clientId":"' + cid + '","data":{"text":"a","text":"b"}}]'
        )
        response = await client.http.post("", content=publish.encode())
        assert response.status_code == 400, response.text
        # A message naming two channels: a disconnect to one reader, a connect to another.
        twice = (
            '[{"channel":"/meta/disconnect","clientId":"' + cid + '","channel":"/meta/connect"}]'
        )
        response = await client.http.post("", content=twice.encode())
        assert response.status_code == 400, response.text
        # The form-encoded spelling of a batch ("message=...") is read the same way.
        response = await client.http.post(
            "",
            content=("message=" + quote(publish)).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert response.status_code == 400, response.text

        (reply,) = await client.connect(advice={"timeout": 0})
        assert reply["successful"] is True, reply
    finally:
        await client.aclose()


async def test_a_websocket_frame_with_a_repeated_key_gets_the_bayeux_error(
    make_server: Any,
) -> None:
    server: ServerHarness = make_server(CometdSettings())
    ws = await WebSocketClient.open(server)
    try:
        handshake = (
            '[{"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":'
            '["websocket"],"supportedConnectionTypes":["long-polling"]}]'
        )
        (reply,) = await ws.call(handshake)
        assert reply["successful"] is False
        assert reply["error"].startswith("400::malformed JSON: ")
        assert "[0].supportedConnectionTypes: the key 'supportedConnectionTypes'" in reply["error"]
        client_id = await ws.handshake("agent21")
        publish = (
            '[{"channel":"/service/echo","clientId":"' + client_id + '","data":{"n":1,"n":2}}]'
        )
        (reply,) = await ws.call(publish)
        assert reply["successful"] is False
        assert "[0].data.n: the key 'n' is given more than once" in reply["error"]
        (reply,) = await ws.call(
            [{"channel": "/meta/subscribe", "clientId": client_id, "subscription": "/me/*"}]
        )
        assert reply["successful"] is True, reply
    finally:
        await ws.close()
