"""Protocol edge cases over the wire: held connects, sweeping, advice, bad input, limits."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from adapters.cometd import CometdSettings, OverflowPolicy, basic_header
from adapters.cometd.protocol import is_valid_channel, matches

from .conftest import USERS, ServerHarness
from .raw import LongPolling, WebSocketClient, connect_message, handshake_message


async def wait_until(predicate: Any, server: ServerHarness, limit: float = 10) -> None:
    """Poll engine state (on its loop) until ``predicate(engine)`` holds."""
    async with asyncio.timeout(limit):
        while not await server.inspect(predicate):
            await asyncio.sleep(0.02)


def test_channel_names_and_wildcards() -> None:
    assert matches("/me/*", "/me/interactions")
    assert not matches("/me/*", "/me")
    assert not matches("/me/*", "/me/a/b")
    assert matches("/me/**", "/me/a/b")
    assert not matches("/me/**", "/me")
    assert not matches("/me/**", "/mess/a")
    assert is_valid_channel("/a/b-c_d", allow_wildcard=False)
    for bad in ["", "/", "a/b", "/a//b", "/a/*/b", "/a/***", "/a b", "/a/\u00e9", 7, None]:
        assert not is_valid_channel(bad, allow_wildcard=True), bad
    assert not is_valid_channel("/a/*", allow_wildcard=False)


async def test_url_suffixes_and_form_body(server: ServerHarness) -> None:
    client = LongPolling(server, "agent0")
    try:
        await client.handshake()
        for suffix in ["/connect", "/subscribe", "/", "/anything/else"]:
            message = connect_message(client.client_id, advice={"timeout": 0})
            (reply,) = await client.post([message], suffix)
            assert reply["successful"] is True, suffix
        form = {"message": json.dumps([connect_message(client.client_id, advice={"timeout": 0})])}
        response = await client.http.post("", data=form)
        assert response.json()[0]["successful"] is True
        (reply,) = await client.post(
            {"channel": "/meta/disconnect", "clientId": client.client_id, "id": 9}, "/disconnect"
        )
        assert reply == {
            "channel": "/meta/disconnect",
            "successful": True,
            "id": 9,
            "clientId": client.client_id,
        }
        assert (await client.http.get("")).status_code == 405
    finally:
        await client.aclose()


async def test_handshake_reply_and_advice_only_when_changed(server: ServerHarness) -> None:
    client = LongPolling(server, "agent1")
    try:
        reply = await client.handshake()
        assert reply["version"] == "1.0"
        assert set(reply["supportedConnectionTypes"]) == {"long-polling", "websocket"}
        assert reply["advice"] == {
            "reconnect": "retry",
            "interval": 0,
            "timeout": 25000,
            "maxInterval": 10000,
        }
        assert reply["id"] == "h1"
        assert "BAYEUX_BROWSER" in client.http.cookies
        # The first connect is answered at once, with advice; the next ones without.
        (first,) = await client.connect()
        assert first["advice"]["reconnect"] == "retry"
        server.publish("agent1", {"n": 1})
        (second,) = await client.connect(advice={"timeout": 0})
        assert "advice" not in second
        # A client's shorter advice.timeout is honoured (and advertised back).
        (third,) = await client.connect(advice={"timeout": 50})
        assert third["advice"]["timeout"] == 50
        # A longer one is capped at the server's maximum.
        assert (await client.subscribe("/me/interactions"))["successful"] is True
        fourth = asyncio.create_task(client.connect(advice={"timeout": 10**9}))
        await wait_until(lambda e: any(s.held for s in e.sessions.of_agent("agent1")), server)
        server.publish("agent1", {"n": 2})
        reply, _ = await fourth
        assert reply["advice"]["timeout"] == 25000
    finally:
        await client.aclose()


async def test_handshake_ignores_the_rest_of_its_batch(server: ServerHarness) -> None:
    client = LongPolling(server, "agent2")
    try:
        replies = await client.post(
            [
                handshake_message(),
                {"channel": "/meta/subscribe", "clientId": "x", "subscription": "/me/*"},
            ]
        )
        assert [r["channel"] for r in replies] == ["/meta/handshake"]
    finally:
        await client.aclose()


async def test_held_connect_answered_on_message(server: ServerHarness) -> None:
    client = LongPolling(server, "agent3")
    try:
        await client.start("/me/interactions")
        held = asyncio.create_task(client.connect())
        await wait_until(lambda e: any(s.held for s in e.sessions.of_agent("agent3")), server)
        server.publish("agent3", {"n": 1}, seq=41)
        server.publish("agent3", {"n": 2}, seq=42)
        reply, *messages = await held
        assert reply["successful"] is True
        if len(messages) == 1:  # the two publishes may land in different loop turns
            messages += (await client.connect())[1:]
        assert [(m["data"]["n"], m["id"]) for m in messages] == [(1, "41"), (2, "42")]
    finally:
        await client.aclose()


async def test_duplicate_connect_cancels_the_first(server: ServerHarness) -> None:
    client = LongPolling(server, "agent4")
    try:
        await client.start("/me/interactions")
        body = [connect_message(client.client_id, "first")]
        first = asyncio.create_task(client.http.post("/connect", json=body))
        await wait_until(lambda e: any(s.held for s in e.sessions.of_agent("agent4")), server)
        second = asyncio.create_task(client.connect(msg_id="second"))
        cancelled = await first
        assert cancelled.status_code == 409  # an error status, never 408
        server.publish("agent4", {"n": 1})
        reply, message = await second
        assert reply["id"] == "second"
        assert message["data"] == {"n": 1}
    finally:
        await client.aclose()


async def test_multiple_clients_in_one_browser(server: ServerHarness) -> None:
    tab1 = LongPolling(server, "agent5")
    try:
        await tab1.start("/me/interactions")
        tab2 = LongPolling(server, "agent5")
        tab2.http.cookies = tab1.http.cookies  # same browser (same BAYEUX_BROWSER cookie)
        await tab2.start("/me/interactions")
        held = asyncio.create_task(tab1.connect())
        await wait_until(lambda e: any(s.held for s in e.sessions.of_agent("agent5")), server)
        (reply,) = await tab2.connect()  # not held: the browser already holds one
        assert reply["advice"]["multiple-clients"] is True
        assert reply["advice"]["interval"] == 2000
        assert reply["advice"]["reconnect"] == "retry"
        server.publish("agent5", {"n": 1})
        assert [m["data"] for m in (await held)[1:]] == [{"n": 1}]
        # tab1's poll is over: tab2 is back to normal, and is told the advice changed back.
        reply, *messages = await tab2.connect()
        assert [m["data"] for m in messages] == [{"n": 1}]
        assert reply["advice"]["interval"] == 0
        assert "multiple-clients" not in reply["advice"]
        await tab2.aclose()
    finally:
        await tab1.aclose()


async def test_expired_session_gets_402_with_spread_handshake_advice(make_server: Any) -> None:
    server: ServerHarness = make_server(
        CometdSettings(max_interval_ms=200, sweep_period_ms=50, unknown_session_interval_ms=1500)
    )
    client = LongPolling(server, "agent6")
    try:
        await client.start("/me/interactions")
        await wait_until(lambda e: len(e.sessions) == 0, server)
        server.publish("agent6", {"lost": True})  # no live session: nothing to deliver
        (reply,) = await client.connect()
        assert reply["successful"] is False
        assert reply["error"] == "402::session_unknown"
        assert reply["advice"]["reconnect"] == "handshake"
        assert 0 <= reply["advice"]["interval"] <= 1500
        # 402 on other channels carries no advice (only connect drives reconnection).
        reply = await client.subscribe("/me/interactions")
        assert reply["error"] == "402::session_unknown"
        assert "advice" not in reply
    finally:
        await client.aclose()


async def test_session_between_connects_keeps_its_messages(server: ServerHarness) -> None:
    client = LongPolling(server, "agent7")
    try:
        await client.start("/me/interactions")
        for n in range(3):
            server.publish("agent7", {"n": n})  # no connect held right now
        _reply, *messages = await client.connect()
        assert [m["data"]["n"] for m in messages] == [0, 1, 2]
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    ("policy", "expected"),
    [(OverflowPolicy.CLOSE_SESSION, None), (OverflowPolicy.DROP_OLDEST, [5, 6, 7, 8, 9])],
)
async def test_queue_overflow_policy(
    make_server: Any, policy: OverflowPolicy, expected: list[int] | None
) -> None:
    server: ServerHarness = make_server(CometdSettings(max_queue=5, overflow_policy=policy))
    client = LongPolling(server, "agent8")
    try:
        await client.start("/me/interactions")
        for n in range(10):
            server.publish("agent8", {"n": n})
        reply, *messages = await client.connect()
        if expected is None:
            assert reply["error"] == "402::session_unknown"
            assert reply["advice"]["reconnect"] == "handshake"
        else:
            assert [m["data"]["n"] for m in messages] == expected
    finally:
        await client.aclose()


async def test_bad_input_gets_errors_not_crashes(make_server: Any) -> None:
    server: ServerHarness = make_server(CometdSettings(max_batch_messages=10, max_body_bytes=4096))
    client = LongPolling(server, "agent9")
    try:
        await client.start()
        cid = client.client_id
        for body in [b"{not json", b"42", b'"text"', b"", b"\xff\xfe"]:
            response = await client.http.post("", content=body)
            assert response.status_code == 400, body
        response = await client.http.post("", content=b"[" + b"{}," * 2000 + b"{}]")
        assert response.status_code == 413
        replies = await client.post([{"channel": "/meta/connect"}] * 11)
        assert len(replies) == 10
        assert {r["error"] for r in replies} == {"413::too many messages in one batch"}
        cases: list[tuple[Any, str]] = [
            (7, "400::bad message"),
            ({}, "400::invalid channel"),
            ({"channel": 5}, "400::invalid channel"),
            ({"channel": "no-slash"}, "400::invalid channel"),
            ({"channel": "/meta/connect", "clientId": cid, "id": {"x": 1}}, "400::invalid id"),
            ({"channel": "/meta/connect", "clientId": cid}, "400::bad message"),
            (
                {"channel": "/meta/connect", "clientId": cid, "connectionType": "smoke-signals"},
                "400::unsupported connection type",
            ),
            ({"channel": "/meta/connect", "clientId": ["x"]}, "402::session_unknown"),
            ({"channel": "/meta/subscribe", "clientId": 3, "subscription": "/me/*"}, "402"),
            ({"channel": "/service/echo", "clientId": cid}, "400::publish without data"),
            ({"channel": "/meta/handshake", "version": 2}, "400::unsupported version"),
            (
                {"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": "x"},
                "400::unsupported connection type",
            ),
        ]
        for message, error in cases:
            replies = await client.post([message])
            assert len(replies) == 1, message
            assert replies[0]["successful"] is False, message
            assert replies[0]["error"].startswith(error), (message, replies)
            assert "channel" in replies[0]
        # Still alive and well.
        (reply,) = await client.connect(advice={"timeout": 0})
        assert reply["successful"] is True
    finally:
        await client.aclose()


async def test_what_could_not_be_echoed_back_is_refused_and_poisons_nothing(
    make_server: Any,
) -> None:
    """JSON the parser accepts but no reply could carry: a lone surrogate, NaN, 1e999, deep
    nesting. Each is a 400 before it reaches a session (an echoed one used to fail the reply
    encoding, and with the ack extension every later connect too). The session keeps working."""
    server: ServerHarness = make_server(CometdSettings(max_body_bytes=1 << 20))
    client = LongPolling(server, "agent14")
    try:
        await client.start(ack=True)
        cid = client.client_id
        echo = '{"channel":"/service/echo","clientId":"%s","data":%s}'
        for data in ['"\\ud800"', "NaN", "Infinity", "1e999", "[" * 200 + "]" * 200]:
            body = ("[" + echo % (cid, data) + "]").encode()
            response = await client.http.post("", content=body)
            assert response.status_code == 400, (data, response.text)
        subscribe = '[{"channel":"/meta/subscribe","clientId":"%s","subscription":"/me/\\ud800"}]'
        assert (await client.http.post("", content=(subscribe % cid).encode())).status_code == 400
        connect = '[{"channel":"/meta/connect","clientId":"%s","connectionType":"long-polling",'
        timeout = (connect % cid + '"advice":{"timeout":1e999}}]').encode()
        assert (await client.http.post("", content=timeout)).status_code == 400
        deep = b"[" * 50_000 + b"]" * 50_000
        assert (await client.http.post("", content=deep)).status_code == 400
        (reply,) = await client.connect(advice={"timeout": 0}, ext={"ack": 1})
        assert reply["successful"] is True
    finally:
        await client.aclose()


async def test_websocket_bad_frames(make_server: Any) -> None:
    server: ServerHarness = make_server(CometdSettings(max_body_bytes=4096))
    ws = await WebSocketClient.open(server)
    try:
        (reply,) = await ws.call("{broken")
        assert reply["error"].startswith("400::malformed JSON: Malformed JSON: Expecting")
        client_id = await ws.handshake("agent12")
        replies = await ws.call([{"channel": "/meta/subscribe", "clientId": client_id}, "junk"])
        assert [r["error"] for r in replies] == ["400::invalid subscription", "400::bad message"]
        await ws.send("[" + "1," * 3000 + "1]")
        with pytest.raises(Exception):  # noqa: B017 - closed with 1009
            await ws.receive()
        assert ws.ws.close_code == 1009
    finally:
        await ws.close()


async def test_websocket_push_and_reconnect(server: ServerHarness) -> None:
    ws = await WebSocketClient.open(server)
    client_id = await ws.handshake("agent13")
    (reply,) = await ws.call(
        {"channel": "/meta/subscribe", "clientId": client_id, "subscription": "/v2/me/*"}
    )
    assert reply["successful"] is True
    connect = {**connect_message(client_id), "connectionType": "websocket"}
    (_first,) = await ws.call(connect)
    await ws.send(connect)  # held now: pushes arrive without waking it
    await wait_until(lambda e: any(s.held for s in e.sessions.of_agent("agent13")), server)
    server.publish("agent13", {"n": 1}, topic="/me/workbins")
    (pushed,) = await ws.receive()
    assert pushed == {"channel": "/v2/me/workbins", "data": {"n": 1}}
    await ws.close()
    # The session outlives its socket (within maxInterval); a new socket picks it up.
    server.publish("agent13", {"n": 2}, topic="/me/workbins")
    ws2 = await WebSocketClient.open(server)
    try:
        reply, message = await ws2.call({**connect, "ext": {"authorization": "ignored"}})
        assert reply["successful"] is True
        assert message["data"] == {"n": 2}
    finally:
        await ws2.close()


async def test_server_stop_answers_held_connects(make_server: Any) -> None:
    server: ServerHarness = make_server(CometdSettings())
    async with httpx.AsyncClient(
        base_url=server.url,
        headers={"Authorization": basic_header("agent14", USERS["agent14"])},
        timeout=15,
    ) as http:
        (hs,) = (await http.post("", json=[handshake_message()])).json()
        await http.post("", json=[connect_message(hs["clientId"])])
        held = asyncio.create_task(http.post("", json=[connect_message(hs["clientId"])]))
        await wait_until(lambda e: any(s.held for s in e.sessions.of_agent("agent14")), server)
        await asyncio.to_thread(server.stop)
        (reply,) = (await held).json()
        assert reply["successful"] is True
