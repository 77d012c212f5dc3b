"""Random bytes and random mutations of a valid mail: a ParsedMessage or MessageRefused, never
anything else, and the input is never modified."""

from __future__ import annotations

from email.message import EmailMessage

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from interactions_core.ingest import IngestLimits, MessageRefused, ParsedMessage, parse_message
from interactions_core.testing import InMemoryAttachmentStore


def _valid_mail() -> bytes:
    m = EmailMessage()
    m["From"] = '"Jörg, Müller" <jorg@example.de>'
    m["To"] = "support@example.com, Bob <bob@example.org>"
    m["Cc"] = "=?utf-8?q?Caf=C3=A9?= <cafe@example.net>"
    m["Subject"] = "Grüße – =?bad?= résumé"
    m["Message-ID"] = "<valid@example.de>"
    m["In-Reply-To"] = "<parent@example.com>"
    m["References"] = "<root@example.com> <parent@example.com>"
    m["Date"] = "Mon, 05 Jan 2026 10:00:00 +0100"
    m["Auto-Submitted"] = "no"
    m.set_content("Hello there, \nflowed text.\n", params={"format": "flowed"})
    m.add_alternative("<p>Hello <b>there</b> &amp; <a href='https://x'>x</a></p>", subtype="html")
    m.add_attachment(b"%PDF-1.4\x00\xff", maintype="application", subtype="pdf", filename="Ré.pdf")
    inner = EmailMessage()
    inner["Subject"] = "inner"
    inner.set_content("inner body")
    m.add_attachment(inner)
    return m.as_bytes()


VALID = _valid_mail()
LIMITS = IngestLimits(max_parts=50, max_depth=8, max_attachments=5)
SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)

TOKENS = [
    b"\r\n",
    b"\n",
    b"\r\n\r\n",
    b":",
    b"<",
    b">",
    b'"',
    b"=?",
    b"?=",
    b"--",
    b";",
    b"(",
    b")",
    b"\x00",
    b"\xff",
    b"\xc3",
    b" ",
    b"boundary=",
    b"Content-Type: multipart/mixed; boundary=x\r\n",
    b"Content-Transfer-Encoding: base64\r\n",
    b"charset=x-unknown",
    b"filename*0*=",
]


def _check(raw: bytes) -> None:
    copy = bytes(raw)
    store = InMemoryAttachmentStore()
    try:
        result = parse_message(raw, attachments=store, limits=LIMITS)
    except MessageRefused as exc:
        assert exc.kind in ("invalid", "too_large")
        assert exc.description
    else:
        assert isinstance(result, ParsedMessage)
        assert len(result.email.attachments) <= LIMITS.max_attachments
        for attachment in result.email.attachments:
            assert store.get(attachment.id)[:0] == b""
        # Everything handed out is valid text (no lone surrogates from undecoded octets).
        result.email.text.encode("utf-8")
        result.email.html.encode("utf-8")
        result.email.subject.encode("utf-8")
        for a in (*result.email.to, *result.email.cc):
            (a.addr + a.name).encode("utf-8")
    assert raw == copy


@SETTINGS
@given(st.binary(max_size=3000))
def test_random_bytes(raw: bytes) -> None:
    _check(raw)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(VALID)
    for _ in range(draw(st.integers(1, 8))):
        pos = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["insert", "delete", "replace", "truncate"]))
        chunk = draw(st.one_of(st.sampled_from(TOKENS), st.binary(min_size=1, max_size=8)))
        if op == "insert":
            data[pos:pos] = chunk
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 64))]
        elif op == "replace":
            data[pos : pos + len(chunk)] = chunk
        else:
            del data[pos:]
    return bytes(data)


@SETTINGS
@given(mutated())
def test_mutated_mail(raw: bytes) -> None:
    _check(raw)


def test_the_unmutated_mail_is_clean() -> None:
    result = parse_message(VALID, attachments=InMemoryAttachmentStore())
    assert result.problems == ()
    assert result.email.text == "Hello there, flowed text.\n"
    assert [a.mimetype for a in result.email.attachments] == ["application/pdf", "message/rfc822"]
