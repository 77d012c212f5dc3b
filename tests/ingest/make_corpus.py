"""The hostile / malformed mail corpus for ``parse_message``.

Run once: ``.venv/bin/python tests/ingest/make_corpus.py`` writes the small cases to
``tests/ingest/corpus/*.eml`` (kept in git). The big cases (thousands of parts, deep nesting,
a 100 KB header line, an oversized message) are generated at test time by the functions in
``GENERATED`` instead of being stored.

``EXPECTED`` says, for every case, what must come out: the problem notes (substrings) that must
be present, a refusal kind, or an automatic-mail reason. The corpus test fails for a stored file
with no entry here, so a new file cannot be added without saying what it is for.
"""

from __future__ import annotations

import base64
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

CORPUS = Path(__file__).with_name("corpus")

HEAD = (
    "From: Customer <customer@example.org>\n"
    "To: support@example.com\n"
    "Subject: Help\n"
    "Date: Mon, 05 Jan 2026 10:00:00 +0000\n"
    "Message-ID: <case@example.org>\n"
)


def crlf(text: str) -> bytes:
    """Text with ``\\n`` → CRLF bytes (latin-1, so ``\\xNN`` escapes are single octets)."""
    return text.replace("\n", "\r\n").encode("latin-1")


def b64_word(text: str) -> str:
    """``text`` as one RFC 2047 B-encoded UTF-8 word."""
    return "=?utf-8?b?" + base64.b64encode(text.encode("utf-8")).decode("ascii") + "?="


def lenient_b64_word(text: str) -> str:
    """An encoded word whose base64 holds a stray "*": strict decoders (ours) leave it as it
    is, the stdlib's header parser and writer skip the "*" and decode it."""
    data = base64.b64encode(text.encode("utf-8")).decode("ascii")
    return "=?utf-8?b?" + data[:4] + "*" + data[4:] + "?="


@dataclass(frozen=True)
class Expect:
    problems: tuple[str, ...] = ()  # substrings that must each appear in some problem note
    refused: str | None = None  # MessageRefused kind
    automatic: str | None = None  # substring of the automatic reason
    clean: bool = False  # no problem at all
    checks: dict[str, str] = field(default_factory=dict)  # EmailContent field → substring
    # EmailContent address field (``from_`` too) → exactly these (addr, display name) pairs
    addresses: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)
    names: tuple[str, ...] | None = None  # exactly these attachment names, in order


# --------------------------------------------------------------------------- stored cases


def plain_ok() -> bytes:
    return crlf(HEAD + "MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\nHello.\n")


def empty() -> bytes:
    return b""


def whitespace_only() -> bytes:
    return b"\r\n\r\n   \r\n"


def not_a_mail() -> bytes:
    return b"\r\n\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR binary garbage with no header at all\r\n"


def unknown_charset() -> bytes:
    return crlf(HEAD + "Content-Type: text/plain; charset=x-foo\n\ncaf\xe9 cr\xe8me\n")


def non_text_codec_charset() -> bytes:
    return crlf(HEAD + 'Content-Type: text/plain; charset="base64"\n\nYWJj\n')


def invalid_utf8_body() -> bytes:
    return crlf(HEAD + "Content-Type: text/plain; charset=utf-8\n\nbad \xc3\x28 bytes \xff\n")


def eight_bit_in_ascii_part() -> bytes:
    return crlf(HEAD + "Content-Type: text/plain; charset=us-ascii\n\nna\xefve \xff\n")


def bad_base64() -> bytes:
    return crlf(
        HEAD + "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n\n"
        "SGVsbG8g!!d29y#bGQ\n"
    )


def bad_quoted_printable() -> bytes:
    return crlf(
        HEAD + "Content-Type: text/plain; charset=utf-8\n"
        "Content-Transfer-Encoding: quoted-printable\n\nsoft=\nbreak =ZZ bad =C3=A9 end=\n"
    )


def unknown_transfer_encoding() -> bytes:
    return crlf(HEAD + "Content-Type: text/plain\nContent-Transfer-Encoding: x-base65\n\nabc\n")


def latin1_in_headers() -> bytes:
    return crlf(
        "From: J\xf6rg <jorg@example.de>\nTo: support@example.com\nSubject: Gr\xfc\xdfe\n"
        "Date: Mon, 05 Jan 2026 10:00:00 +0000\nMessage-ID: <l1@example.de>\n\nHallo\n"
    )


def utf8_headers_rfc6532() -> bytes:
    head = (
        "From: Jörg <jörg@bücher.example>\nTo: support@example.com\nSubject: Grüße\n"
        "Date: Mon, 05 Jan 2026 10:00:00 +0000\nMessage-ID: <u1@example.de>\n"
        "Content-Type: text/plain; charset=utf-8\n\nHallo\n"
    )
    return head.replace("\n", "\r\n").encode("utf-8")


def duplicate_from() -> bytes:
    return crlf(
        "From: First <first@example.org>\nFrom: Second <second@example.org>\n"
        "To: support@example.com\nSubject: Dup\nDate: Mon, 05 Jan 2026 10:00:00 +0000\n"
        "Message-ID: <d1@example.org>\n\nbody\n"
    )


def duplicate_subject_date_msgid() -> bytes:
    return crlf(
        HEAD + "Subject: Second subject\nDate: Tue, 06 Jan 2026 10:00:00 +0000\n"
        "Message-ID: <other@example.org>\n\nbody\n"
    )


def missing_everything() -> bytes:
    return crlf("X-Mailer: nothing useful\n\njust a body\n")


def broken_addresses() -> bytes:
    return crlf(
        'From: "unterminated <@@>\nTo: a@, <<>>, @@, ;;;, bob@example.org, (comment only)\n'
        "Cc: =?utf-8?q?broken?= <>\nReply-To: :;\nSubject: addr\n"
        "Date: Mon, 05 Jan 2026 10:00:00 +0000\nMessage-ID: <a1@example.org>\n\nbody\n"
    )


def garbage_threading() -> bytes:
    return crlf(
        "From: c@example.org\nTo: support@example.com\nSubject: Re: x\n"
        "Date: Mon, 05 Jan 2026 10:00:00 +0000\nMessage-ID: <t1@example.org>\n"
        'In-Reply-To: Your message of "Monday" <parent@example.com>\n'
        "References: junk <root@example.com> more junk <<>> < mid@example.com > trailing\n"
        "\nbody\n"
    )


def message_id_without_brackets() -> bytes:
    return crlf(
        "From: c@example.org\nTo: support@example.com\nSubject: x\n"
        "Date: Mon, 05 Jan 2026 10:00:00 +0000\nMessage-ID: bare-id@example.org\n\nbody\n"
    )


def message_id_without_at() -> bytes:
    """``<abc>``: not an RFC 5322 msg-id, but the sender's client threads on it."""
    return crlf(
        "From: c@example.org\nTo: support@example.com\nSubject: x\n"
        "Date: Mon, 05 Jan 2026 10:00:00 +0000\nMessage-ID: <abc>\n"
        "In-Reply-To: <parent>\nReferences: <root@example.org> <parent>\n\nbody\n"
    )


def unparseable_date() -> bytes:
    return crlf(
        "From: c@example.org\nTo: support@example.com\nSubject: x\n"
        "Date: the day after tomorrow\nMessage-ID: <dt@example.org>\n\nbody\n"
    )


def long_header_line() -> bytes:
    return crlf(HEAD + "X-Long: " + "x" * 2000 + "\n\nbody\n")


def no_boundary_multipart() -> bytes:
    return crlf(HEAD + "Content-Type: multipart/mixed\n\n--x\nContent-Type: text/plain\n\nhi\n")


def boundary_never_found() -> bytes:
    return crlf(
        HEAD + 'Content-Type: multipart/mixed; boundary="nope"\n\n--other\n'
        "Content-Type: text/plain\n\nhi\n--other--\n"
    )


def missing_close_boundary() -> bytes:
    return crlf(
        HEAD + 'Content-Type: multipart/mixed; boundary="b"\n\n--b\n'
        "Content-Type: text/plain\n\nfirst part, then the message stops\n"
    )


def header_starts_with_continuation() -> bytes:
    return crlf(" folded first line\n" + HEAD + "\nbody\n")


def no_header_body_separator() -> bytes:
    return crlf(HEAD + "this line is not a header\nand the body goes on\n")


def misplaced_mbox_from() -> bytes:
    return crlf(
        "From: c@example.org\nFrom someone@example.org Mon Jan  5 10:00:00 2026\n"
        "To: support@example.com\nSubject: x\n\nbody\n"
    )


def mixed_line_endings() -> bytes:
    return (
        b"From: c@example.org\nTo: support@example.com\r\nSubject: mixed\r"
        b"\nDate: Mon, 05 Jan 2026 10:00:00 +0000\r\nMessage-ID: <ml@example.org>\n\r\n"
        b"line one\rline two\r\nline three\n"
    )


def nul_in_body() -> bytes:
    return crlf(HEAD + "Content-Type: text/plain\n\nbefore\x00after\n")


def nested_message_rfc822() -> bytes:
    inner = (
        "From: orig@example.net\nTo: c@example.org\nSubject: Original\n"
        "Date: Sun, 04 Jan 2026 10:00:00 +0000\n\nthe forwarded text\n"
    )
    return crlf(
        HEAD + 'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="b"\n\n'
        "--b\nContent-Type: text/plain\n\nsee below\n"
        "--b\nContent-Type: message/rfc822\nContent-Disposition: attachment\n\n" + inner + "--b--\n"
    )


def inline_image_content_id() -> bytes:
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n fake").decode()
    return crlf(
        HEAD + 'MIME-Version: 1.0\nContent-Type: multipart/related; boundary="r"\n\n'
        '--r\nContent-Type: text/html; charset=utf-8\n\n<p>logo <img src="cid:logo@x"></p>\n'
        "--r\nContent-Type: image/png\nContent-ID: <logo@x>\nContent-Disposition: inline\n"
        "Content-Transfer-Encoding: base64\n\n" + png + "\n--r--\n"
    )


def rfc2231_continuations() -> bytes:
    return crlf(
        HEAD + 'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="b"\n\n'
        "--b\nContent-Type: text/plain\n\nbody\n"
        "--b\nContent-Type: application/pdf\n"
        "Content-Disposition: attachment;\n filename*0*=utf-8''R%C3%A9sum%C3%A9%20;\n"
        ' filename*1="de Jos";\n filename*2*=%C3%A9.pdf\n'
        "Content-Transfer-Encoding: base64\n\nJVBERi0=\n--b--\n"
    )


def encoded_word_filename() -> bytes:
    return crlf(
        HEAD + 'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="b"\n\n'
        "--b\nContent-Type: text/plain\n\nbody\n"
        '--b\nContent-Type: application/octet-stream; name="=?UTF-8?B?0L7RgtGH0ZHRgi50eHQ=?="\n'
        "Content-Disposition: attachment\n\nabc\n--b--\n"
    )


def hostile_filenames() -> bytes:
    return crlf(
        HEAD + 'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="b"\n\n'
        "--b\nContent-Type: text/plain\n\nbody\n"
        '--b\nContent-Type: application/octet-stream\nContent-Disposition: attachment; filename="'
        '../../etc/passwd"\n\nroot\n'
        "--b\nContent-Type: application/octet-stream\nContent-Disposition: attachment;"
        " filename*=utf-8''evil%E2%80%AEfdp.exe%00.txt\n\nx\n"
        "--b\nContent-Type: application/octet-stream\n"
        'Content-Disposition: attachment; filename=".."\n\ny\n--b--\n'
    )


def rfc2231_unknown_charset_filename() -> bytes:
    return crlf(
        HEAD + 'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="b"\n\n'
        "--b\nContent-Type: text/plain\n\nbody\n"
        "--b\nContent-Type: application/octet-stream\n"
        "Content-Disposition: attachment; filename*=x-nope''caf%E9.txt\n\nz\n--b--\n"
    )


def deep_nesting_small() -> bytes:
    return nested(30)


def delivery_status_report() -> bytes:
    return crlf(
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.org>\nTo: support@example.com\n"
        "Subject: Undelivered Mail Returned to Sender\nDate: Mon, 05 Jan 2026 10:00:00 +0000\n"
        "Message-ID: <dsn@mx.example.org>\nMIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="r"\n\n'
        "--r\nContent-Type: text/plain\n\nYour message could not be delivered.\n"
        "--r\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.org\n\n"
        "Final-Recipient: rfc822; nobody@example.net\nAction: failed\nStatus: 5.1.1\n"
        "--r\nContent-Type: text/rfc822-headers\n\nFrom: support@example.com\nSubject: Hi\n"
        "--r--\n"
    )


def auto_replied_with_comment() -> bytes:
    return crlf(HEAD + "Auto-Submitted: Auto-Replied (vacation)\n\nI am away.\n")


def html_only_with_script() -> bytes:
    return crlf(
        HEAD + "Content-Type: text/html; charset=utf-8\n\n<html><head><style>p{color:red}</style>"
        "<script>alert('x')</script></head><body><p>Visible &amp; kept</p>"
        "<div>second</div></body></html>\n"
    )


def unclosed_html() -> bytes:
    return crlf(
        HEAD + "Content-Type: text/html\n\n<p>open <b>bold <a href='https://x.example/'>link"
        "<script>never closed\n"
    )


def many_duplicate_content_types() -> bytes:
    return crlf(
        HEAD + "Content-Type: text/plain; charset=utf-8\nContent-Type: text/html\n"
        "Content-Type: image/png\n\nwhich one?\n"
    )


def invalid_content_type() -> bytes:
    return crlf(HEAD + "Content-Type: ;;;===\n\nbody\n")


def comment_bomb_address() -> bytes:
    return crlf(
        "From: " + "(" * 400 + "x" + ")" * 400 + " c@example.org\nTo: support@example.com\n"
        "Subject: comments\nDate: Mon, 05 Jan 2026 10:00:00 +0000\nMessage-ID: <cb@example.org>"
        "\n\nbody\n"
    )


def encoded_word_garbage_subject() -> bytes:
    return crlf(
        "From: c@example.org\nTo: support@example.com\n"
        "Subject: =?x-unknown?B?////?= =?utf-8?B?not base64!?= =?utf-8?Q?caf=C3=A9?=\n"
        "Date: Mon, 05 Jan 2026 10:00:00 +0000\nMessage-ID: <ew@example.org>\n\nbody\n"
    )


def flowed_text() -> bytes:
    return crlf(
        HEAD + "Content-Type: text/plain; charset=utf-8; format=flowed\n\n"
        "This is a long line that was \nsoft-broken by the sender.\n> Quoted and \n> flowed.\n"
        "-- \nSignature\n"
    )


# The hostile display names of issue 12 (item 7): a decoded name holding a line break used to
# cost the whole header (the stdlib refuses to build the address), so From and ContactID were
# empty and a reply had no recipient.
NESTED_NAME = "=?utf-8?q?Nested=0D=0ABcc=3A_n=40evil=2Eorg?="  # the name of a nested word


def hostile_display_name_from() -> bytes:
    return crlf(
        "From: =?utf-8?q?Evil=0D=0ABcc=3A_x=40evil=2Eorg?= <c@example.org>\n"
        "To: support@example.com\nSubject: Help\nDate: Mon, 05 Jan 2026 10:00:00 +0000\n"
        "Message-ID: <hostile-from@example.org>\n\nbody\n"
    )


def hostile_display_names_every_field() -> bytes:
    return crlf(
        "From: Customer <customer@example.org>\n"
        f"To: {b64_word('Evil' + chr(13) + chr(10) + 'Bcc: to@evil.org')} <to@example.org>,"
        f" Bob <bob@example.org>, {b64_word(NESTED_NAME)} <nested@example.org>\n"
        'Cc: "=?utf-8?q?In_quotes=0D=0AX-Evil=3A_1?=" <cc@example.org>,\n'
        " =?utf-8?q?Bell=07_and_ESC=1B[31m?= <bell@example.org>,\n"
        " <=?utf-8?q?lp=0D=0A?=@example.org>\n"
        "Bcc: =?utf-8?q?NUL=00here?= <bcc@example.org>\n"
        "Reply-To: =?utf-8?q?Invoice=E2=80=AEfdp.exe?= <rt@example.org>\n"
        "Mail-Reply-To: =?utf-8?q?Line=E2=80=A8Sep=C2=85NEL?= <mrt@example.org>\n"
        f"Mail-Followup-To: {lenient_b64_word('x' + chr(13) + chr(10) + 'Bcc: y@evil.org')}"
        ' <mft@example.org>, "Raw\xe2\x80\xa8Break" <raw@example.org>\n'
        "Subject: every field\nDate: Mon, 05 Jan 2026 10:00:00 +0000\n"
        "Message-ID: <hostile-fields@example.org>\n\nbody\n"
    )


def hostile_subject_encoded_words() -> bytes:
    lenient = lenient_b64_word("s" + chr(13) + chr(10) + "Bcc: s@evil.org")
    nested = b64_word("=?utf-8?q?t=0D=0ABcc=3A_t=40evil=2Eorg?=")
    return crlf(
        f"From: c@example.org\nTo: support@example.com\nSubject: {lenient} and {nested}\n"
        "Date: Mon, 05 Jan 2026 10:00:00 +0000\nMessage-ID: <hostile-subject@example.org>\n"
        "\nbody\n"
    )


def encoded_line_breaks_in_filenames() -> bytes:
    crlf_ = chr(13) + chr(10)
    parts = [
        'Content-Type: text/plain; name="=?utf-8?q?q=0D=0ABcc=3A_x.txt?="\n'
        "Content-Disposition: attachment",
        f'Content-Type: text/plain\nContent-Disposition: attachment; filename="'
        f'{b64_word("b" + crlf_ + "Bcc: y.txt")}"',
        "Content-Type: text/plain\n"
        "Content-Disposition: attachment; filename*=utf-8''r%0D%0ABcc%3A%20z.txt",
        "Content-Type: text/plain\nContent-Disposition: attachment; filename="
        f'"{lenient_b64_word("l" + crlf_ + "Bcc: w.txt")}"',
        "Content-Type: text/plain\nContent-Disposition: attachment; filename="
        f'"{b64_word("=?utf-8?q?n=0D=0ABcc=3A_v.txt?=")}"',
        # The stdlib decodes the outer word, ``safe_filename`` the next: what is left is an
        # encoded word a MIME writer would still decode.
        "Content-Type: text/plain\nContent-Disposition: attachment; filename="
        f'"{b64_word(lenient_b64_word("m" + crlf_ + "Bcc: u.txt"))}"',
        "Content-Type: text/plain\nContent-Disposition: attachment; filename="
        f'"{b64_word(b64_word("=?utf-8?q?k=0D=0ABcc=3A_t.txt?="))}"',
    ]
    body = "".join(f"--b\n{headers}\n\npart {i}\n" for i, headers in enumerate(parts))
    return crlf(
        HEAD + 'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="b"\n\n'
        "--b\nContent-Type: text/plain\n\nbody\n" + body + "--b--\n"
    )


STORED: dict[str, Callable[[], bytes]] = {
    f.__name__: f
    for f in (
        plain_ok,
        empty,
        whitespace_only,
        not_a_mail,
        unknown_charset,
        non_text_codec_charset,
        invalid_utf8_body,
        eight_bit_in_ascii_part,
        bad_base64,
        bad_quoted_printable,
        unknown_transfer_encoding,
        latin1_in_headers,
        utf8_headers_rfc6532,
        duplicate_from,
        duplicate_subject_date_msgid,
        missing_everything,
        broken_addresses,
        garbage_threading,
        message_id_without_brackets,
        message_id_without_at,
        unparseable_date,
        long_header_line,
        no_boundary_multipart,
        boundary_never_found,
        missing_close_boundary,
        header_starts_with_continuation,
        no_header_body_separator,
        misplaced_mbox_from,
        mixed_line_endings,
        nul_in_body,
        nested_message_rfc822,
        inline_image_content_id,
        rfc2231_continuations,
        encoded_word_filename,
        hostile_filenames,
        rfc2231_unknown_charset_filename,
        deep_nesting_small,
        delivery_status_report,
        auto_replied_with_comment,
        html_only_with_script,
        unclosed_html,
        many_duplicate_content_types,
        invalid_content_type,
        comment_bomb_address,
        encoded_word_garbage_subject,
        flowed_text,
        hostile_display_name_from,
        hostile_display_names_every_field,
        hostile_subject_encoded_words,
        encoded_line_breaks_in_filenames,
    )
}

# --------------------------------------------------------------------------- generated cases


def nested(depth: int) -> bytes:
    """``depth`` multipart/mixed levels around one text part."""
    parts = [HEAD, 'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="b0"\n\n']
    for i in range(depth):
        parts.append(f'--b{i}\nContent-Type: multipart/mixed; boundary="b{i + 1}"\n\n')
    parts.append(f"--b{depth}\nContent-Type: text/plain\n\ninnermost\n--b{depth}--\n")
    parts.extend(f"--b{i}--\n" for i in reversed(range(depth)))
    return crlf("".join(parts))


def zip_bomb_attachments(count: int = 5000) -> bytes:
    parts = [HEAD, 'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="z"\n\n']
    parts.append("--z\nContent-Type: text/plain\n\nmany files\n")
    for i in range(count):
        parts.append(
            f"--z\nContent-Type: application/octet-stream\n"
            f'Content-Disposition: attachment; filename="f{i}.bin"\n\n{i}\n'
        )
    parts.append("--z--\n")
    return crlf("".join(parts))


def header_line_100kb() -> bytes:
    return crlf(
        "From: c@example.org\nTo: support@example.com\nSubject: "
        + "y" * 100_000
        + "\nDate: Mon, 05 Jan 2026 10:00:00 +0000\nMessage-ID: <big@example.org>\n\nbody\n"
    )


def nesting_200() -> bytes:
    return nested(200)


def nesting_beyond_parser() -> bytes:
    return nested(1500)


def oversized() -> bytes:
    return crlf(HEAD + "\n") + b"x" * (25 * 1024 * 1024)


def many_recipients() -> bytes:
    to = ", ".join(f"user{i}@example.org" for i in range(5000))
    return crlf(
        "From: c@example.org\nTo: " + to + "\nSubject: spam\n"
        "Date: Mon, 05 Jan 2026 10:00:00 +0000\nMessage-ID: <mr@example.org>\n\nbody\n"
    )


def huge_references() -> bytes:
    refs = " ".join(f"<r{i}@example.org>" for i in range(3000))
    return crlf(HEAD + "References: " + refs + "\n\nbody\n")


GENERATED: dict[str, Callable[[], bytes]] = {
    f.__name__: f
    for f in (
        zip_bomb_attachments,
        header_line_100kb,
        nesting_200,
        nesting_beyond_parser,
        oversized,
        many_recipients,
        huge_references,
    )
}

# --------------------------------------------------------------------------- expectations

EXPECTED: dict[str, Expect] = {
    "plain_ok": Expect(clean=True, checks={"text": "Hello."}),
    "empty": Expect(refused="invalid"),
    "whitespace_only": Expect(refused="invalid"),
    "not_a_mail": Expect(refused="invalid"),
    "unknown_charset": Expect(
        problems=("undecodable charset 'x-foo'",), checks={"text": "caf\xe9 cr\xe8me"}
    ),
    "non_text_codec_charset": Expect(problems=("undecodable charset 'base64'",)),
    "invalid_utf8_body": Expect(problems=("invalid bytes for charset 'utf-8'",)),
    "eight_bit_in_ascii_part": Expect(problems=("8-bit bytes in a us-ascii",)),
    "bad_base64": Expect(problems=("base64",)),
    "bad_quoted_printable": Expect(checks={"text": "softbreak"}),
    "unknown_transfer_encoding": Expect(problems=("unknown Content-Transfer-Encoding",)),
    "latin1_in_headers": Expect(
        problems=("not UTF-8",), checks={"subject": "Grüße", "from_": "Jörg"}
    ),
    "utf8_headers_rfc6532": Expect(clean=True, checks={"subject": "Grüße", "from_": "Jörg"}),
    "duplicate_from": Expect(problems=("duplicate From header",), checks={"from_": "first@"}),
    "duplicate_subject_date_msgid": Expect(
        problems=("duplicate Subject", "duplicate Date", "duplicate Message-ID"),
        checks={"subject": "Help"},
    ),
    "missing_everything": Expect(problems=("missing From", "missing Date", "missing Message-ID")),
    "broken_addresses": Expect(checks={"to": "bob@example.org"}),
    "garbage_threading": Expect(
        checks={
            "in_reply_to": "<parent@example.com>",
            "references": "('<root@example.com>', '<mid@example.com>')",
        }
    ),
    "message_id_without_brackets": Expect(
        problems=("without angle brackets",), checks={"message_id": "<bare-id@example.org>"}
    ),
    "message_id_without_at": Expect(
        problems=(
            "Message-ID <abc> is not an RFC 5322 msg-id",
            "In-Reply-To holds 1 id(s) that are not RFC 5322 msg-ids: kept",
            "References holds 1 id(s) that are not RFC 5322 msg-ids: kept",
        ),
        checks={
            "message_id": "<abc>",
            "in_reply_to": "<parent>",
            "references": "('<root@example.org>', '<parent>')",
        },
    ),
    "unparseable_date": Expect(problems=("unparseable Date",)),
    "long_header_line": Expect(problems=("header line over 998 octets",)),
    "no_boundary_multipart": Expect(problems=("without a boundary",), checks={"text": "hi"}),
    "boundary_never_found": Expect(problems=("boundary never found",)),
    "missing_close_boundary": Expect(problems=("not closed",), checks={"text": "first part"}),
    "header_starts_with_continuation": Expect(problems=("continuation",)),
    "no_header_body_separator": Expect(problems=("not a header field",)),
    "misplaced_mbox_from": Expect(problems=("mbox 'From ' line",)),
    "mixed_line_endings": Expect(checks={"subject": "mixed"}),
    "nul_in_body": Expect(problems=("NUL characters",)),
    "nested_message_rfc822": Expect(checks={"attachments": "message/rfc822"}),
    "inline_image_content_id": Expect(checks={"attachments": "image/png", "text": "logo"}),
    "rfc2231_continuations": Expect(checks={"attachments": "Résumé de José.pdf"}),
    "encoded_word_filename": Expect(checks={"attachments": "отчёт.txt"}),
    "hostile_filenames": Expect(checks={"attachments": "'passwd'"}),
    "rfc2231_unknown_charset_filename": Expect(checks={"attachments": "application/octet"}),
    "deep_nesting_small": Expect(problems=("MIME nesting deeper than 20",)),
    "delivery_status_report": Expect(
        automatic="delivery report (multipart/report; report-type=delivery-status)",
        checks={"text": "could not be delivered"},
    ),
    "auto_replied_with_comment": Expect(automatic="Auto-Submitted: auto-replied"),
    "html_only_with_script": Expect(checks={"text": "Visible & kept\n\nsecond"}),
    "unclosed_html": Expect(checks={"text": "open bold link"}),
    "many_duplicate_content_types": Expect(
        problems=("duplicate Content-Type header (3)",), checks={"text": "which one?"}
    ),
    "invalid_content_type": Expect(checks={"text": "body"}),
    "comment_bomb_address": Expect(),
    "encoded_word_garbage_subject": Expect(checks={"subject": "café"}),
    "flowed_text": Expect(
        checks={
            "text": "This is a long line that was soft-broken by the sender.\n"
            "> Quoted and flowed.\n-- \nSig"
        }
    ),
    "hostile_display_name_from": Expect(
        problems=(
            "From: the display name of c@example.org held line breaks, control or bidi "
            "characters or an undecoded encoded word: neutralised",
        ),
        addresses={"from_": (("c@example.org", "Evil Bcc: x@evil.org"),)},
    ),
    "hostile_display_names_every_field": Expect(
        problems=(
            "To: the display name of to@example.org held line breaks",
            "To: the display name of nested@example.org",
            "Cc: the display name of cc@example.org",
            "Cc: the display name of bell@example.org",
            "Cc: 1 malformed address(es) dropped",  # the local part decoded to a line break
            "Bcc: the display name of bcc@example.org",
            "Reply-To: the display name of rt@example.org",
            "Mail-Reply-To: the display name of mrt@example.org",
            "Mail-Followup-To: the display name of mft@example.org",
            "Mail-Followup-To: the display name of raw@example.org",
        ),
        addresses={
            "from_": (("customer@example.org", "Customer"),),
            "to": (
                ("to@example.org", "Evil Bcc: to@evil.org"),
                ("bob@example.org", "Bob"),
                ("nested@example.org", "= ?" + NESTED_NAME[2:]),
            ),
            "cc": (
                ("cc@example.org", "In quotes X-Evil: 1"),
                ("bell@example.org", "Bell and ESC [31m"),
            ),
            "bcc": (("bcc@example.org", "NUL here"),),
            "reply_to": (("rt@example.org", "Invoicefdp.exe"),),
            "mail_reply_to": (("mrt@example.org", "Line Sep NEL"),),
            "mail_followup_to": (
                ("mft@example.org", "x Bcc: y@evil.org"),
                ("raw@example.org", "Raw Break"),
            ),
        },
    ),
    "hostile_subject_encoded_words": Expect(
        problems=("Subject held an undecoded encoded word: its '=?' written '= ?'",),
        checks={
            "subject": "= ?utf-8?b?cw0K*QmNjOiBzQGV2aWwub3Jn?= and "
            "= ?utf-8?q?t=0D=0ABcc=3A_t=40evil=2Eorg?="
        },
    ),
    "encoded_line_breaks_in_filenames": Expect(
        clean=True,
        names=(
            "qBcc: x.txt",
            "bBcc: y.txt",
            "rBcc: z.txt",
            "lBcc: w.txt",
            "nBcc: v.txt",
            "= ?utf-8?b?bQ0K*QmNjOiB1LnR4dA==?=",
            "= ?utf-8?q?k=0D=0ABcc=3A_t.txt?=",
        ),
    ),
    # generated
    "zip_bomb_attachments": Expect(problems=("too many attachments: kept 100 of at least",)),
    "header_line_100kb": Expect(
        problems=("header line over 998 octets", "Subject over 2000 characters")
    ),
    "nesting_200": Expect(problems=("MIME nesting deeper than 20",)),
    "nesting_beyond_parser": Expect(problems=("too deep for the parser",)),
    "oversized": Expect(refused="too_large"),
    "many_recipients": Expect(problems=("more than 500 addresses",)),
    "huge_references": Expect(problems=("References holds 3000 ids",)),
}


def main() -> None:
    CORPUS.mkdir(exist_ok=True)
    for old in CORPUS.glob("*.eml"):
        old.unlink()
    for name, build in STORED.items():
        (CORPUS / f"{name}.eml").write_bytes(build())
    print(f"wrote {len(STORED)} files to {CORPUS}", file=sys.stderr)


if __name__ == "__main__":
    main()
