"""The shared mail rules: Message-IDs, the References bound, encoded words, file names."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.smtp.mime import build_message
from interactions_core.ingest import parse_message
from interactions_core.model import Address
from interactions_core.ports import OutgoingMail
from interactions_core.rfc5322 import (
    MAX_FILENAME_BYTES,
    MAX_MSG_ID_CHARS,
    MAX_REFERENCES,
    MsgId,
    bound_references,
    decode_encoded_words,
    is_strict_msg_id,
    msg_id,
    msg_ids,
    no_surrogates,
    safe_filename,
)
from interactions_core.testing import InMemoryAttachmentStore

SETTINGS = settings(max_examples=200, deadline=None)

# --------------------------------------------------------------------------- msg_ids


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, []),
        ("", []),
        ("<a@x>", ["<a@x>"]),
        ("<a@x> <b@x>", ["<a@x>", "<b@x>"]),
        ("<a@x>\r\n\t<b@x>", ["<a@x>", "<b@x>"]),  # folded (unfolding is the caller's job)
        ("<a@x>,<b@x>;<c@x>", ["<a@x>", "<b@x>", "<c@x>"]),
        ("< a@x >", ["<a@x>"]),  # FWS inside the brackets (obsolete syntax): dropped
        ("<a@x> <a@x>", ["<a@x>", "<a@x>"]),  # duplicates kept
        ("<abc>", ["<abc>"]),  # no "@": kept (lenient)
        ('<a..b@x> <"q"@x> <a@b@c>', ["<a..b@x>", '<"q"@x>', "<a@b@c>"]),
        ("<jörg@bücher.example>", ["<jörg@bücher.example>"]),  # RFC 6532
        ('Your message of "Monday" <p@x>', ["<p@x>"]),  # phrases dropped (RFC 5322 App. B)
        ("<b@x> (Jane's message)", ["<b@x>"]),
        ("(see <c@x>) <b@x>", ["<c@x>", "<b@x>"]),  # comments are not parsed
        ("junk <<>> <> < > trailing", []),
        ("<bad id@x>", []),  # white space inside
        ("<a<b@x>", ["<b@x>"]),  # a bracket inside: only the last "<" opens the id
        ("<a\x01b@x>", []),  # control character
        ("<a\u202eb@x>", []),  # format (bidi) character
        ("<a\u00a0b@x>", []),  # non-ASCII white space
        ("<" + "x" * MAX_MSG_ID_CHARS + ">", ["<" + "x" * MAX_MSG_ID_CHARS + ">"]),
        ("<" + "x" * (MAX_MSG_ID_CHARS + 1) + ">", []),
        ("a@x", []),  # bare: only with bare=True
        ("garbage", []),
    ],
)
def test_msg_ids(value: str | None, expected: list[str]) -> None:
    assert msg_ids(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a@x", ["<a@x>"]),
        ("  a@x ", ["<a@x>"]),
        ("a@x b@x, c@x;d@x", ["<a@x>", "<b@x>", "<c@x>", "<d@x>"]),
        ("Your message of Tuesday", []),  # no "@": not an id
        ("<a@x> b@x", ["<a@x>"]),  # brackets present: only bracketed ids
        ("a\x01@x", []),
    ],
)
def test_msg_ids_bare(value: str, expected: list[str]) -> None:
    assert msg_ids(value, bare=True) == expected


# --------------------------------------------------------------------------- msg_id


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("<a@x>", MsgId("<a@x>", True)),
        ("  <a@x>  ", MsgId("<a@x>", True)),
        ("(comment) <a@x> <b@x>", MsgId("<a@x>", True)),  # the first one
        ("<abc>", MsgId("<abc>", True)),
        ("bare-id@example.org", MsgId("<bare-id@example.org>", False)),
        ("  bare@x\t", MsgId("<bare@x>", False)),
        ("abc", None),  # bare needs an "@"
        ("a@x b@x", None),  # bare must be one token
        ("a@x (comment)", None),
        ("<>", None),
        ("<a@x", None),
        ("x" * MAX_MSG_ID_CHARS + "@x", None),
    ],
)
def test_msg_id(value: str | None, expected: MsgId | None) -> None:
    assert msg_id(value) == expected


# --------------------------------------------------------------------------- strictness


@pytest.mark.parametrize(
    "value",
    [
        "<a@x>",
        "<a.b.c@x.example>",
        "<!#$%&'*+-/=?^_`{|}~@x>",
        "<a@[1.2.3.4]>",
        "<a@[]>",
        "<jörg@bücher.example>",
        "<" + "x" * (MAX_MSG_ID_CHARS - 2) + "@x>",
    ],
)
def test_strict_msg_ids(value: str) -> None:
    assert is_strict_msg_id(value)
    assert msg_ids(value) == [value]  # strict ids are always kept


@pytest.mark.parametrize(
    "value",
    [
        "<abc>",  # no "@"
        "<a@b@c>",
        "<.a@x>",
        "<a.@x>",
        "<a..b@x>",
        '<"q"@x>',  # obsolete id-left
        "<a@x..y>",
        "<a@[x]y>",
        "<a@[x\\]>",
        "<a(b)@x>",
        "<a,b@x>",
        "<a:b@x>",
        "<@x>",
        "<a@>",
        "a@x",  # no brackets
        "<a@x> ",
        "<a b@x>",
        "<a\x01@x>",
        "<" + "x" * (MAX_MSG_ID_CHARS - 1) + "@x>",  # too long
        "",
        "<>",
    ],
)
def test_not_strict_msg_ids(value: str) -> None:
    assert not is_strict_msg_id(value)


# --------------------------------------------------------------------------- properties

# What mime.py may write: visible ASCII, no "<" or ">", with or without "@".
_ID_CHARS = st.sampled_from([chr(c) for c in range(0x21, 0x7F) if chr(c) not in "<>"])
LENIENT_IDS = st.text(_ID_CHARS, min_size=1, max_size=MAX_MSG_ID_CHARS).map(lambda s: f"<{s}>")
_ATEXT = st.text(st.sampled_from("abcXYZ019!#$%&'*+-/=?^_`{|}~"), min_size=1, max_size=12)
STRICT_IDS = st.builds(
    lambda left, right: f"<{'.'.join(left)}@{'.'.join(right)}>",
    st.lists(_ATEXT, min_size=1, max_size=3),
    st.lists(_ATEXT, min_size=1, max_size=3),
)
ANY_IDS = st.one_of(LENIENT_IDS, STRICT_IDS)


@given(ids=st.lists(ANY_IDS, max_size=30), sep=st.sampled_from([" ", "\r\n ", "\t", ", "]))
@SETTINGS
def test_a_written_list_is_read_back(ids: list[str], sep: str) -> None:
    value = sep.join(ids)
    assert msg_ids(value) == ids
    assert msg_ids(value, bare=True) == ids


@given(value=st.text(max_size=200))
@SETTINGS
def test_every_id_read_is_canonical_and_strict_ones_are_kept(value: str) -> None:
    for found in msg_ids(value):
        assert msg_ids(found) == [found]  # canonical: idempotent
        assert msg_id(found) == MsgId(found, True)
        inner = found[1:-1]
        assert 1 <= len(inner) <= MAX_MSG_ID_CHARS
        assert inner.isprintable() and not any(c.isspace() or c in "<>" for c in inner)
    for found in msg_ids(value, bare=True):
        assert msg_ids(found) == [found]


@given(found=STRICT_IDS)
@SETTINGS
def test_generated_strict_ids_are_strict(found: str) -> None:
    assert is_strict_msg_id(found)
    assert is_strict_msg_id(found.replace("@", "", 1)) is False


def _mail(message_id: str, in_reply_to: str | None, references: tuple[str, ...]) -> OutgoingMail:
    return OutgoingMail(
        interaction_id="I1",
        mailbox="support@example.com",
        from_=Address(addr="support@example.com"),
        to=(Address(addr="bob@example.org"),),
        subject="Re: x",
        text="Hello",
        message_id=message_id,
        in_reply_to=in_reply_to,
        references=references,
        date=datetime(2026, 1, 5, 9, 0, tzinfo=UTC),
    )


@given(
    own=STRICT_IDS,
    parent=ANY_IDS,
    chain=st.lists(ANY_IDS, max_size=MAX_REFERENCES),
)
@SETTINGS
def test_the_rule_round_trips_what_mime_writes(own: str, parent: str, chain: list[str]) -> None:
    """Whatever ids mime.py accepts come back unchanged from its bytes, read by the rule from
    the header block and by ingestion (``parse_message``)."""
    data = build_message(_mail(own, parent, tuple(chain))).data
    head = data.split(b"\r\n\r\n", 1)[0]
    assert all(len(line) <= 998 for line in head.split(b"\r\n"))
    fields = _fields(head)
    assert msg_id(fields["message-id"]) == MsgId(own, True)
    assert msg_ids(fields["in-reply-to"]) == [parent]  # never an encoded word around an id
    assert msg_ids(fields.get("references")) == chain
    email = parse_message(data, attachments=InMemoryAttachmentStore()).email
    assert (email.message_id, email.in_reply_to, email.references) == (own, parent, tuple(chain))


def _fields(head: bytes) -> dict[str, str]:
    """The header fields of a header block, unfolded (RFC 5322 §2.2.3), by lower-cased name."""
    unfolded = re.sub(rb"\r\n(?=[ \t])", b"", head).decode("ascii")
    return {
        name.lower(): value.strip()
        for name, _, value in (line.partition(":") for line in unfolded.split("\r\n"))
    }


# --------------------------------------------------------------------------- References


def test_bound_references() -> None:
    ids = [f"<m{i}@x>" for i in range(30)]
    assert MAX_REFERENCES == 20
    kept = bound_references(ids)
    assert len(kept) == MAX_REFERENCES
    assert kept == ids[:1] + ids[-(MAX_REFERENCES - 1) :]
    assert bound_references(ids, 3) == ["<m0@x>", "<m28@x>", "<m29@x>"]
    assert bound_references(ids, 2) == ["<m0@x>", "<m29@x>"]
    assert bound_references(ids, 1) == ["<m29@x>"]
    assert bound_references(ids, 0) == []
    assert bound_references(ids, -1) == []
    assert bound_references(ids[:5]) == ids[:5]
    assert bound_references((), 5) == []
    assert bound_references(tuple(ids[:3]), 3) == ids[:3]


@given(ids=st.lists(st.integers(0, 10**6).map(str), max_size=60), limit=st.integers(-2, 40))
@SETTINGS
def test_bound_references_keeps_the_first_and_the_newest(ids: list[str], limit: int) -> None:
    kept = bound_references(ids, limit)
    assert len(kept) == min(len(ids), max(limit, 0))
    if kept and len(ids) > limit >= 2:
        assert kept[0] == ids[0]
        assert kept[1:] == ids[len(ids) - (limit - 1) :]
    if kept:
        assert kept[-1] == ids[-1]
    if len(ids) <= limit:
        assert kept == ids


# --------------------------------------------------------------------------- encoded words


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("plain", "plain"),
        ("=?utf-8?q?caf=C3=A9?=", "café"),
        ("=?UTF-8?B?0L7RgtGH0ZHRgi50eHQ=?=", "отчёт.txt"),
        ("=?utf-8?b?0L7RgtGH0ZHRgi50eHQ?=", "отчёт.txt"),  # padding dropped
        ("=?utf-8?q?a_b?= =?utf-8?q?c?=", "a bc"),  # adjacent words joined (§6.2)
        ("=?utf-8?q?=C3?= =?utf-8?q?=A9?=", "é"),  # a character split across two words
        ("x =?iso-8859-1*fr?q?caf=E9?= y", "x café y"),  # RFC 2231 language suffix
        ("=?x-unknown?q?abc?=", "abc"),  # unknown charset: UTF-8
        ("=?utf-8?b?!!!?=", "=?utf-8?b?!!!?="),  # malformed: kept as written
        ("=?bad?=", "=?bad?="),
    ],
)
def test_decode_encoded_words(value: str, expected: str) -> None:
    assert decode_encoded_words(value) == expected


def test_no_surrogates() -> None:
    assert no_surrogates("plain é") == "plain é"
    escaped = b"caf\xc3\xa9".decode("ascii", "surrogateescape")
    assert escaped != "café"
    assert no_surrogates(escaped) == "café"
    assert no_surrogates(b"\xff".decode("utf-8", "surrogateescape")) == "\ufffd"
    assert no_surrogates("a\ud800b") == "a\ufffd\ufffd\ufffdb"  # a lone surrogate: never raises


# --------------------------------------------------------------------------- file names


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\x\\evil.exe", "evil.exe"),
        ("dir/", "attachment"),
        ("..", "attachment"),
        ("", "attachment"),
        ("  . hidden .  ", "hidden"),
        (". a .", "a"),
        ("evil\u202efdp.exe\x00.txt", "evilfdp.exe.txt"),  # bidi override and NUL removed
        ("tab\tand\nnewline", "tabandnewline"),
        ("Résumé v2.pdf", "Résumé v2.pdf"),
        # Not decoded by default, but defused: a MIME writer would decode it into a header.
        ("=?utf-8?q?na=C3=AFve?=.txt", "= ?utf-8?q?na=C3=AFve?=.txt"),
    ],
)
def test_safe_filename(name: str, expected: str) -> None:
    assert safe_filename(name) == expected


def test_safe_filename_of_a_received_mime_parameter() -> None:
    assert safe_filename("=?utf-8?q?na=C3=AFve?=.txt", mime_parameter=True) == "naïve.txt"
    escaped = b"caf\xc3\xa9.txt".decode("ascii", "surrogateescape")  # as the parser keeps it
    assert safe_filename(escaped, mime_parameter=True) == "café.txt"
    assert safe_filename(escaped) == "caf.txt"  # surrogates are not printable: removed
    latin1 = b"caf\xe9.txt".decode("ascii", "surrogateescape")
    assert safe_filename(latin1, mime_parameter=True) == "caf\ufffd.txt"
    assert safe_filename("=?utf-8?q?a/b.txt?=", mime_parameter=True) == "b.txt"


def test_safe_filename_fallbacks() -> None:
    assert safe_filename("..") == "attachment"
    assert safe_filename("..", number=3) == "attachment-3"
    assert safe_filename("..", content_type="application/pdf") == "attachment.pdf"
    assert safe_filename("", content_type="image/PNG", number=2) == "attachment-2.png"
    assert safe_filename("", content_type="x-unknown/thing", number=1) == "attachment-1.bin"
    assert safe_filename("a.pdf", content_type="image/png", number=1) == "a.pdf"


def test_safe_filename_limit_keeps_the_extension() -> None:
    assert MAX_FILENAME_BYTES == 255
    assert safe_filename("a" * 255) == "a" * 255
    assert safe_filename("a" * 300) == "a" * 255
    assert safe_filename("a" * 300 + ".pdf") == "a" * 251 + ".pdf"
    assert safe_filename("a" * 300 + ".verylongextension") == "a" * 255
    long = safe_filename("é" * 200 + ".txt")  # 2 octets each: cut by octets, not characters
    assert long == "é" * 125 + ".txt"
    assert len(long.encode("utf-8")) == 254
    # A cut never leaves a trailing space or dot.
    assert safe_filename("a" * 254 + " " + "b" * 10) == "a" * 254
    assert safe_filename("a" * 253 + ". " + "b" * 20) == "a" * 253


@given(name=st.text(max_size=400))
@SETTINGS
def test_safe_filename_properties(name: str) -> None:
    for result in (safe_filename(name), safe_filename(name, mime_parameter=True)):
        assert result
        assert "/" not in result and "\\" not in result
        assert all(c.isprintable() for c in result)
        assert result[0] not in " ." and result[-1] not in " ."
        assert len(result.encode("utf-8")) <= MAX_FILENAME_BYTES
        assert safe_filename(result) == result  # idempotent
