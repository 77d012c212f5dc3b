"""``parse_json``, the one strict JSON reader: a key given twice in one object is refused.

Python's ``json`` keeps the last of two equal keys, other readers the first (RFC 8259 §4 leaves
it undefined): ``{"operationName":"UpdateProperties","operationName":"Cancel"}`` cancelled a
draft. Refused at any depth, naming the key and where it is; the other checks still hold.
"""

from __future__ import annotations

import pytest

from interactions_core.errors import InvalidRequest
from interactions_core.operations import parse_json


def refusal(body: str | bytes) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        parse_json(body)
    return caught.value


def test_the_issue_example_is_refused_naming_the_key() -> None:
    error = refusal('{"operationName":"UpdateProperties","operationName":"Cancel"}')
    assert error.kind == "invalid"
    assert error.problems == (
        "operationName: the key 'operationName' is given more than once (RFC 8259 §4)",
    )
    assert "operationName" in error.description


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ('{"userData":{"Priority":1,"Priority":2}}', "userData.Priority"),
        ('{"a":[{"x":1},{"b":{"c":1,"c":2}}]}', "a[1].b.c"),
        ('[{"channel":"/meta/connect"},{"id":"1","id":"2"}]', "[1].id"),
        # Escapes that spell the same key are the same key.
        ('{"email_object":{"text":"a","\\u0074ext":"b"}}', "email_object.text"),
        # The same value twice is still two keys: which one a reader keeps must not matter.
        ('{"operationName":"Accept","operationName":"Accept"}', "operationName"),
    ],
)
def test_a_repeated_key_at_any_depth_is_refused_with_its_path(body: str, where: str) -> None:
    error = refusal(body)
    assert len(error.problems) == 1
    assert error.problems[0].startswith(f"{where}: the key ")


def test_every_repeated_key_of_an_object_is_named_once() -> None:
    error = refusal(b'{"a":1,"b":2,"a":3,"b":4,"a":5}')
    assert error.problems == (
        "a: the key 'a' is given more than once (RFC 8259 §4)",
        "b: the key 'b' is given more than once (RFC 8259 §4)",
    )


def test_a_repeated_key_that_is_not_unicode_is_shown_escaped() -> None:
    error = refusal('{"\\ud800":1,"\\ud800":2}')
    assert "\\ud800" in error.description
    error.description.encode("utf-8")  # the answer can be sent


def test_equal_keys_in_different_objects_are_fine() -> None:
    body = '{"a":{"id":1},"b":{"id":2},"c":[{"id":3},{"id":4}],"id":5}'
    expected = {"a": {"id": 1}, "b": {"id": 2}, "c": [{"id": 3}, {"id": 4}], "id": 5}
    assert parse_json(body) == expected
    assert type(parse_json(body)) is dict
    assert parse_json(b'{"a":1,"A":2}') == {"a": 1, "A": 2}  # keys are case-sensitive


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ('{"x":NaN}', "NaN is not a JSON number"),
        ('{"x":1e999}', "x: inf"),
        ('{"x":"\\udc00"}', "x: a lone UTF-16 surrogate"),
        ("[" * 100 + "]" * 100, "over 64 levels"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"x":', "Malformed JSON"),
        (b"\xff", "Malformed JSON"),
    ],
)
def test_the_other_checks_still_hold(body: str | bytes, problem: str) -> None:
    assert problem in refusal(body).description
