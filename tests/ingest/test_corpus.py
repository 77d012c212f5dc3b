"""Every hostile / malformed mail of the corpus: never a crash, the expected notes, raw untouched.

Stored cases are the files in ``corpus/`` (written by ``make_corpus.py``); the big ones are
generated here by the functions in ``make_corpus.GENERATED``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from interactions_core.ingest import MessageRefused, ParsedMessage, parse_message
from interactions_core.model import EmailContent
from interactions_core.testing import InMemoryAttachmentStore

from .header_writer import UNSAFE_IN_NAME, written_filename, written_name, written_subject
from .make_corpus import CORPUS, EXPECTED, GENERATED, STORED, Expect

FILES = sorted(CORPUS.glob("*.eml"))


def _check(name: str, raw: bytes) -> None:
    expect = EXPECTED.get(name)
    assert expect is not None, f"{name}: no entry in make_corpus.EXPECTED"
    copy = bytearray(raw)
    store = InMemoryAttachmentStore()
    try:
        result = parse_message(copy, attachments=store)
    except MessageRefused as exc:
        assert bytes(copy) == raw, "the raw bytes were changed"
        assert expect.refused == exc.kind, f"{name}: unexpected refusal {exc.description!r}"
        assert exc.description
        return
    assert bytes(copy) == raw, "the raw bytes were changed"
    assert expect.refused is None, f"{name}: expected a refusal, got {result.problems}"
    _check_result(name, expect, result, store)


def _check_result(
    name: str, expect: Expect, result: ParsedMessage, store: InMemoryAttachmentStore
) -> None:
    if expect.clean:
        assert result.problems == (), result.problems
        assert "ParseProblems" not in result.user_data
    for wanted in expect.problems:
        assert any(wanted in p for p in result.problems), (wanted, result.problems)
    if result.problems:
        assert result.user_data["ParseProblems"].startswith(result.problems[0][:50])
    if expect.automatic is None:
        assert result.automatic is None, result.automatic
    else:
        assert result.automatic is not None and expect.automatic in result.automatic
        assert result.user_data["AutoSubmitted"] == result.automatic
    for field, wanted in expect.checks.items():
        value = getattr(result.email, field)
        assert wanted in str(value), (field, wanted, value)
    for field, pairs in expect.addresses.items():
        assert _pairs(result.email, field) == pairs, (field, _pairs(result.email, field))
    if expect.names is not None:
        assert tuple(a.name for a in result.email.attachments) == expect.names
    for attachment in result.email.attachments:
        assert len(store.get(attachment.id)) == attachment.size
        assert attachment.name and "/" not in attachment.name and "\\" not in attachment.name
        assert attachment.name not in (".", "..")
        assert all(c.isprintable() for c in attachment.name)
        assert written_filename(attachment.name) == attachment.name, attachment.name
    _check_header_text(result.email)
    assert all(isinstance(v, str) and len(v) <= 1000 for v in result.user_data.values())


_ADDRESS_FIELDS = ("from_", "to", "cc", "bcc", "reply_to", "mail_reply_to", "mail_followup_to")


def _pairs(email: EmailContent, field: str) -> tuple[tuple[str, str], ...]:
    value = getattr(email, field)
    addresses = (value,) if field == "from_" and value is not None else value or ()
    return tuple((a.addr, a.name) for a in addresses)


def _check_header_text(email: EmailContent) -> None:
    """What any case gives: display names with no line break, control or bidi override, that
    a reply writes into its headers as they are (no encoded word left for the writer to decode
    into a line break), and a Subject the writer keeps as it is too."""
    for field in _ADDRESS_FIELDS:
        for addr, name in _pairs(email, field):
            assert not UNSAFE_IN_NAME.search(name), (field, addr, name)
            assert written_name(name) == name, (field, addr, name, written_name(name))
    assert written_subject(email.subject) == email.subject, email.subject


def test_every_stored_case_has_a_builder_and_a_file() -> None:
    assert {f.stem for f in FILES} == set(STORED)
    assert len(FILES) >= 25


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_stored_case(path: Path) -> None:
    _check(path.stem, path.read_bytes())


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_generated_case(name: str) -> None:
    _check(name, GENERATED[name]())


def test_stored_files_match_their_builders() -> None:
    """The files in git are what the generator writes (re-run make_corpus.py after a change)."""
    for path in FILES:
        assert path.read_bytes() == STORED[path.stem](), path.name
