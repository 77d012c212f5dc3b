"""Hostile display names (issue 12, item 7): the address is kept, the name neutralised, noted.

A decoded display name holding a line break used to cost the whole header: the stdlib refuses
to build such an address, so ``From: =?utf-8?q?Evil=0D=0ABcc...?= <c@example.org>`` gave no
From, no ContactID and a reply with no recipient. Also here: the same text in a Subject and a
file name, the rule itself (``rfc5322.safe_header_text``) against the stdlib's header writer,
and addresses given by an agent.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from interactions_core.addresses import parse_address_list, validate_address
from interactions_core.errors import InvalidAddress
from interactions_core.ingest import ParsedMessage, parse_message
from interactions_core.model import Address, has_line_break
from interactions_core.rfc5322 import defuse_encoded_words, safe_filename, safe_header_text
from interactions_core.testing import InMemoryAttachmentStore

from .header_writer import UNSAFE_IN_NAME, written_filename, written_name, written_subject
from .make_corpus import b64_word, lenient_b64_word

INJECTION = "Evil\r\nBcc: x@evil.org"
NEUTRALISED = "Evil Bcc: x@evil.org"
NESTED = "=?utf-8?q?Evil=0D=0ABcc=3A_x=40evil=2Eorg?="  # an encoded word, as decoded text
RTL_NAME = "שלום \u200fכהן"  # with a RIGHT-TO-LEFT MARK: a mark is kept


def parse(headers: str) -> ParsedMessage:
    raw = (
        headers + "Date: Mon, 05 Jan 2026 10:00:00 +0000\r\nMessage-ID: <h@example.org>\r\n"
        "\r\nbody\r\n"
    ).encode("utf-8")
    return parse_message(raw, attachments=InMemoryAttachmentStore())


def mail_with(field: str, value: str) -> ParsedMessage:
    others = {"From": "From: a@example.org\r\n", "To": "To: support@example.com\r\n"}
    others.pop(field, None)
    return parse("".join(others.values()) + f"{field}: {value}\r\nSubject: s\r\n")


def test_the_issue_mail_keeps_its_sender_and_notes_the_name() -> None:
    result = parse(
        "From: =?utf-8?q?Evil=0D=0ABcc...?= <c@example.org>\r\nTo: support@example.com\r\n"
        "Subject: hi\r\n"
    )
    assert result.email.from_ == Address(addr="c@example.org", name="Evil Bcc...")
    note = (
        "From: the display name of c@example.org held line breaks, control or bidi characters "
        "or an undecoded encoded word: neutralised"
    )
    assert result.problems == (note,)
    assert note in result.user_data["ParseProblems"]


FIELDS = {
    "From": "from_",
    "To": "to",
    "Cc": "cc",
    "Bcc": "bcc",
    "Reply-To": "reply_to",
    "Mail-Reply-To": "mail_reply_to",
    "Mail-Followup-To": "mail_followup_to",
}
NAMES = {
    "q": ("=?utf-8?q?Evil=0D=0ABcc=3A_x=40evil=2Eorg?=", NEUTRALISED),
    "b": (b64_word(INJECTION), NEUTRALISED),
    # strict base64 refuses the "*"; the stdlib decodes it, and so would its writer
    "lenient-b": (lenient_b64_word(INJECTION), NEUTRALISED),
    "quoted": ('"=?utf-8?q?Evil=0D=0ABcc=3A_x=40evil=2Eorg?="', NEUTRALISED),
    "split-over-two-words": (
        "=?utf-8?q?Evil=0D?= =?utf-8?q?=0ABcc=3A_x=40evil=2Eorg?=",
        NEUTRALISED,
    ),
    "unicode-breaks": ("=?utf-8?q?Evil=E2=80=A8Bcc=C2=85x?=", "Evil Bcc x"),
    "controls": ("=?utf-8?q?Evil=07_=1B[0m?=", "Evil [0m"),
    "bidi-override": ("=?utf-8?q?Invoice=E2=80=AEfdp.exe?=", "Invoicefdp.exe"),
    "nested-encoded-word": (b64_word(NESTED), "= ?" + NESTED[2:]),
}


@pytest.mark.parametrize("written", NAMES.values(), ids=list(NAMES))
@pytest.mark.parametrize("field", FIELDS)
def test_a_hostile_display_name_costs_the_name_never_the_address(
    field: str, written: tuple[str, str]
) -> None:
    name, expected = written
    result = mail_with(field, f"{name} <c@example.org>")
    got = getattr(result.email, FIELDS[field])
    addresses = (got,) if field == "From" else got
    assert addresses == (Address(addr="c@example.org", name=expected),)
    assert any(p.startswith(f"{field}: the display name of c@example.org") for p in result.problems)
    assert written_name(expected) == expected  # a reply writes it as it is


def test_the_rest_of_the_header_is_kept() -> None:
    result = mail_with(
        "To",
        f"{b64_word(INJECTION)} <c@example.org>, Bob <bob@example.org>,"
        " <=?utf-8?q?lp=0D=0A?=@example.org>",
    )
    assert result.email.to == (
        Address(addr="c@example.org", name=NEUTRALISED),
        Address(addr="bob@example.org", name="Bob"),
    )
    # The stdlib decodes an encoded word in a local part too: that address is dropped.
    assert "To: 1 malformed address(es) dropped" in result.problems


@pytest.mark.parametrize(
    ("value", "name"),
    [
        ('"Jörg, Müller" <j@example.org>', "Jörg, Müller"),
        ("=?utf-8?q?Caf=C3=A9?= <j@example.org>", "Café"),
        (b64_word(RTL_NAME) + " <j@example.org>", RTL_NAME),
        ("Jane\r\n\tDoe <j@example.org>", "Jane Doe"),  # folded: not a hostile break
        ('"Tab\tinside" <j@example.org>', "Tab\tinside"),
        ('"Is 2+2=?" <j@example.org>', "Is 2+2=?"),
    ],
)
def test_ordinary_names_are_kept_without_a_note(value: str, name: str) -> None:
    result = mail_with("From", value)
    assert result.email.from_ == Address(addr="j@example.org", name=name)
    assert result.problems == ()


def test_a_subject_keeps_its_line_breaks_but_no_encoded_word_is_left_for_the_writer() -> None:
    """Line breaks in a Subject stay as they came (the composer puts a reply's Subject on one
    line); an encoded word left in it would be decoded when a reply writes it: defused."""
    kept = parse("From: a@example.org\r\nSubject: =?utf-8?q?Order=E2=80=A842?=\r\n")
    assert kept.email.subject == "Order\u202842" and kept.problems == ()
    for subject in (lenient_b64_word("s\r\nBcc: s@evil.org"), b64_word(NESTED)):
        result = parse(f"From: a@example.org\r\nSubject: Re: {subject}\r\n")
        assert result.email.subject.startswith("Re: = ?utf-8?")
        assert not has_line_break(written_subject(result.email.subject))
        assert result.problems == (
            "Subject held an undecoded encoded word: its '=?' written '= ?'",
        )
    plain = parse("From: a@example.org\r\nSubject: Is 2+2=? =?bad?=\r\n")
    assert plain.email.subject == "Is 2+2=? =?bad?=" and plain.problems == ()


def test_the_auto_submitted_reason_holds_no_control_character() -> None:
    result = parse("From: a@example.org\r\nAuto-Submitted: auto-replied\x0bx\u202e\r\n")
    assert result.automatic == "Auto-Submitted: auto-replied x"
    assert result.user_data["AutoSubmitted"] == "Auto-Submitted: auto-replied x"


# --------------------------------------------------------------------------- the rule


@pytest.mark.parametrize(
    ("text", "safe"),
    [
        ("Evil\r\nBcc: x", "Evil Bcc: x"),
        ("a \r\n \r\n b", "a b"),
        ("\x00lead\x7f\x85trail\u2029", "lead trail"),
        ("x\u202ey\u2066z\u2069", "xyz"),
        ("keeps\u200fmarks\tand tabs", "keeps\u200fmarks\tand tabs"),
        ("=?utf-8?q?a?= and =?x?B?", "= ?utf-8?q?a?= and = ?x?B?"),
        ("=?utf-8?q?=0D", "= ?utf-8?q?=0D"),  # the stdlib needs no "?=" after "=XX"
        ("=? x ?q?=0D", "= ? x ?q?=0D"),  # a charset with white space is read too
        ("Is 2+2=? ", "Is 2+2=? "),  # nothing to change: not even stripped
        ("a=?b?=", "a=?b?="),
        ("Ordinary Name", "Ordinary Name"),
    ],
)
def test_safe_header_text(text: str, safe: str) -> None:
    assert safe_header_text(text) == safe
    assert safe_header_text(safe) == safe


def test_safe_filename_defuses_an_encoded_word_left_in_a_received_name() -> None:
    nested = b64_word(NESTED + ".txt")  # decoded once: an encoded word is left
    assert safe_filename(nested, mime_parameter=True) == "= ?" + NESTED[2:] + ".txt"
    assert safe_filename("=?utf-8?q?na=C3=AFve?=.txt", mime_parameter=True) == "naïve.txt"


TOKENS = [
    "=?", "?=", "?", "=", "utf-8", "q", "Q", "b", "B", "=0D", "=0A", "=0d", "DQo", "DQoK",
    "YQ0K", "Cg", "*", " ", "\t", "_", '"', "\\", "a", "(", ")", ",", ":", "<", ">", "\r\n",
    "\u2028", "\u202e", "\x07", "=?utf-8?q?", "=?utf-8?b?", "?q?", "?B?", "=3F", "=?=?",
]  # fmt: skip
TEXTS = st.lists(st.sampled_from(TOKENS), max_size=14).map("".join)
WRITER = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)


@WRITER
@given(TEXTS)
def test_a_safe_display_name_is_written_on_one_line(text: str) -> None:
    safe = safe_header_text(text)
    assert not UNSAFE_IN_NAME.search(safe)
    assert safe_header_text(safe) == safe
    assert not has_line_break(written_name(safe)), (text, safe)


@WRITER
@given(TEXTS.filter(lambda t: not has_line_break(t)))
def test_a_defused_subject_is_written_on_one_line(text: str) -> None:
    assert not has_line_break(written_subject(defuse_encoded_words(text)))


@WRITER
@given(TEXTS)
def test_a_received_file_name_is_written_on_one_line(text: str) -> None:
    assert not has_line_break(written_filename(safe_filename(text, mime_parameter=True)))


# --------------------------------------------------------------------------- agents' input


@pytest.mark.parametrize(
    "given_address",
    [
        '"Evil\r\nBcc: x@evil.org" <a@example.org>',
        '"=?utf-8?q?Evil=0D=0ABcc=3A_x=40evil=2Eorg?=" <a@example.org>',
        "=?utf-8?q?Evil=0D=0ABcc=3A_x=40evil=2Eorg?= <a@example.org>",
        f"{lenient_b64_word(INJECTION)} <a@example.org>",
    ],
)
def test_an_agent_given_name_that_would_be_written_as_two_lines_is_refused(
    given_address: str,
) -> None:
    with pytest.raises(InvalidAddress) as info:
        parse_address_list(given_address, field="toAddress")
    assert info.value.kind == "invalid"
    assert info.value.description.startswith("toAddress: ")
    assert "line break" in info.value.description


def test_an_agent_given_encoded_name_is_accepted_when_it_decodes_to_one_line() -> None:
    assert parse_address_list("=?utf-8?q?J=C3=B6rg?= <j@example.org>") == (
        Address(addr="j@example.org", name="=?utf-8?q?J=C3=B6rg?="),  # the writer decodes it
    )
    with pytest.raises(InvalidAddress):
        validate_address("a@example.org", "=?utf-8?q?x=0A?=")
