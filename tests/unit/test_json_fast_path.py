"""``parse_json`` skips the walk over the parsed value when the text shows it has nothing to
refuse; it must answer exactly as the walk would, for any body, hostile ones first."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from interactions_core.errors import InvalidRequest
from interactions_core.operations import (
    MAX_JSON_DEPTH,
    _not_json,
    _object,
    parse_json,
    refuse_unrepresentable,
)


def reference(body: bytes | str) -> Any:
    """What ``parse_json`` answered before the fast path: parse, then always walk."""
    try:
        value = json.loads(body, parse_constant=_not_json, object_pairs_hook=_object)
    except RecursionError:
        raise InvalidRequest("Malformed JSON: nested too deeply") from None
    except ValueError as exc:
        raise InvalidRequest(f"Malformed JSON: {str(exc)[:200]}") from None
    refuse_unrepresentable(value)
    return value


def outcome(parse: Any, body: bytes | str) -> tuple[str, Any]:
    try:
        return "ok", parse(body)
    except InvalidRequest as exc:
        return "refused", str(exc)


HOSTILE = [
    b'{"a": 1e999}',
    b'{"a": -1E400}',
    b"[" + b"9" * 310 + b".0]",
    b'{"a": "\\ud800"}',
    b'["ok", {"b": "\\udfff x"}]',
    b'{"a": 1, "a": 2}',
    b'{"x": {"k": [1, {"k": 1, "k": 2}]}}',
    b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1),
    b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH,
    b"[" * 2000 + b"]" * 2000,
    json.dumps({"a": "\ud800"}).encode(),
    '{"a": "\ud800"}',  # a str body holding a raw lone surrogate
    json.dumps({"a": "\\ud800", "deep": "x"}, ensure_ascii=False).encode("utf-16"),
    '{"a": "\\ud800"}'.encode("utf-32"),
    '{"a": 1e999}'.encode("utf-16-le"),
    b'{"a": NaN}',
    b"[Infinity]",
    b'{"a": 1.5e3, "b": "1e999"}',
    b'{"\xc3\xa9": "caf\xc3\xa9", "n": 12.5}',
    b"\xed\xa0\x80",  # a surrogate written raw in UTF-8: not UTF-8
    b"",
    b"{",
    "\ufeff{}",  # a str's BOM: refused, as json.loads refuses it
    b"\xef\xbb\xbf{}",  # UTF-8's BOM in bytes: read, as json.loads reads it
    '{"a": 1}'.encode("utf-16-be"),
    b'[{"a": 1, "a": 2}, ',  # a repeated key, then malformed: malformed is the answer
    b'[{"a": 1, "a": 2}, {"b": 1e999}]',  # both: the first place is named
    b'[{"b": 1e999}, {"a": 1, "a": 2}]',
    bytearray(b'{"a": [1, 2.5, "x"]}'),  # bytes-like, as json.loads takes it
]


@pytest.mark.parametrize("body", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_bodies_answered_as_the_walk_answers(body: bytes | str) -> None:
    assert outcome(parse_json, body) == outcome(reference, body)


def test_the_walk_is_what_refuses_the_hostile_ones() -> None:
    # Holds the fast path honest: most of the bodies above are refused, so it cannot be
    # passing them through unchecked.
    refused = [body for body in HOSTILE if outcome(parse_json, body)[0] == "refused"]
    assert len(refused) >= 17


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None)
@given(json_values, st.booleans(), st.sampled_from(["utf-8", "utf-16", "str"]))
def test_any_body_answered_as_the_walk_answers(value: Any, ascii_only: bool, form: str) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only)
    body: bytes | str = text if form == "str" else text.encode(form, "surrogatepass")
    assert outcome(parse_json, body) == outcome(reference, body)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet='{}[]":,0123456789eE.-\\ud8ax ', max_size=80))
def test_any_text_answered_as_the_walk_answers(text: str) -> None:
    assert outcome(parse_json, text) == outcome(reference, text)
    body = text.encode()
    assert outcome(parse_json, body) == outcome(reference, body)
