"""Send keeps the mail's parts consistent (docs/operations/send.md): the text and the HTML part
of the delivered ``multipart/alternative`` say the same thing, whichever the agent edited.

Each reply is composed by the real core (a quoted ReplyAll: text and HTML both quote the
original), sent through the SMTP transport and dispatcher to a real aiosmtpd relay, and both
parts are read back from what the relay received.
"""

from __future__ import annotations

from email.message import EmailMessage
from typing import Any

from adapters.smtp import MailDispatcher, RelayConfig, SmtpTransport
from interactions_core.testing import Harness

from .conftest import Sink, queued_reply

ORIGINAL = "My invoice is wrong."  # the inbound text the draft quotes (conftest.INBOUND)

NEW_HTML = (
    "<html><head><title>Reply</title><style>p { color: red }</style></head><body>"
    "<p>Hello Bob,</p>"
    "<p>the corrected invoice is <a href='https://billing.example.com/inv/42'>here</a>"
    " &amp; costs 12&nbsp;&euro;.</p>"
    "<ul><li>no fee</li><li>paid&nbsp;by card</li></ul>"
    "<div>Regards,<br>Alice</div>"
    "<script>document.write('tracking')</script>"
    "</body></html>"
)
NEW_TEXT = (
    "Hello Bob,\n"
    "\n"
    "the corrected invoice is here <https://billing.example.com/inv/42> & costs 12 €.\n"
    "\n"
    "- no fee\n"
    "- paid by card\n"
    "Regards,\n"
    "Alice\n"
)


async def deliver(h: Harness, sink: Sink, send: dict[str, Any] | None) -> EmailMessage:
    queued_reply(h, send=send, attach=False)
    relay = RelayConfig(host="127.0.0.1", port=sink.port, security="none")
    transport = SmtpTransport(relay, h.attachments)
    d = MailDispatcher(
        h.store, transport, h.clock, lambda e, r: h.service.mail_failed(e.mail.interaction_id, r)
    )
    try:
        assert await d.drain_once() == 1
        assert d.stats.sent == 1
    finally:
        await transport.close()
    (got,) = sink.received
    return got.message


def parts(message: EmailMessage) -> tuple[str | None, str | None]:
    """The delivered text and HTML parts (LF line endings), None for a part not sent."""
    found = []
    for kind in ("plain", "html"):
        part = message.get_body((kind,))
        if part is None or part.get_content_type() != f"text/{kind}":
            found.append(None)
        else:
            found.append(str(part.get_content()).replace("\r\n", "\n"))
    return found[0], found[1]


async def test_html_only_the_text_part_is_read_from_the_new_html(
    harness: Harness, sink: Sink
) -> None:
    message = await deliver(harness, sink, {"structuredText": NEW_HTML})
    assert message.get_content_type() == "multipart/alternative"
    text, html = parts(message)
    assert html is not None and html.strip() == NEW_HTML
    assert text == NEW_TEXT
    # Not the composed draft's text (its quote of the original), nor the HTML's hidden parts.
    assert ORIGINAL not in text
    assert "tracking" not in text and "color" not in text and "Reply" not in text


async def test_html_only_with_the_quote_keeps_it_in_both_parts(
    harness: Harness, sink: Sink
) -> None:
    html_in = (
        "<div>It is fixed.</div>"
        f'<blockquote type="cite"><div>{ORIGINAL}</div></blockquote>'
        "<p>Support</p>"
    )
    text, html = parts(await deliver(harness, sink, {"structuredText": html_in}))
    assert html is not None and html.strip() == html_in
    assert text == f"It is fixed.\n> {ORIGINAL}\n\nSupport\n"


async def test_both_given_both_are_sent_as_given(harness: Harness, sink: Sink) -> None:
    send = {"text": "Plain, as the agent wrote it.\n", "structuredText": "<p>Rich, too.</p>"}
    text, html = parts(await deliver(harness, sink, send))
    assert text == "Plain, as the agent wrote it.\n"
    assert html is not None and html.strip() == "<p>Rich, too.</p>"


async def test_text_only_drops_the_composed_html(harness: Harness, sink: Sink) -> None:
    message = await deliver(harness, sink, {"text": "Only text.\n"})
    assert message.get_content_type() == "text/plain"
    assert parts(message) == ("Only text.\n", None)


async def test_nothing_given_sends_the_draft_as_composed(harness: Harness, sink: Sink) -> None:
    text, html = parts(await deliver(harness, sink, None))
    assert text is not None and f"> {ORIGINAL}" in text
    assert html is not None and ORIGINAL in html and "<blockquote" in html


async def test_empty_html_keeps_the_draft_text_alone(harness: Harness, sink: Sink) -> None:
    message = await deliver(harness, sink, {"structuredText": ""})
    assert message.get_content_type() == "text/plain"
    text, html = parts(message)
    assert html is None and text is not None and f"> {ORIGINAL}" in text
