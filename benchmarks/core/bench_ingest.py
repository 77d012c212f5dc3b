"""Benchmark: ``parse_message`` against the bare stdlib parse of the same messages.

Run: ``.venv/bin/python benchmarks/core/bench_ingest.py``. Not part of the pytest run.

A realistic mix is generated here (seeded): plain text, text + HTML alternatives, and mails
with 1-3 attachments (PDF-like binary, PNG-like binary, CSV text), 2-200 KB each. Printed, in
one run, as messages per second (median of several rounds):

* bare: ``email.message_from_bytes(raw, policy=policy.default)`` and ``msg.walk()`` over every
  part (no header access, no decoding) — the baseline of the target;
* bare + decode: the same, plus ``get_content()`` of every leaf part (for context);
* ``parse_message`` with an in-memory attachment store (SHA-256 per attachment included).

Target: ``parse_message`` at least 0.5x the bare rate.
"""

from __future__ import annotations

import gc
import random
import statistics
import time
from collections.abc import Callable
from email import message_from_bytes, policy
from email.message import EmailMessage

from interactions_core.ingest import parse_message
from interactions_core.testing import InMemoryAttachmentStore

_VOCABULARY = (
    "order invoice delivery refund account password help broken please thanks urgent "
    "customer number tracking package received damaged replace subscription cancel café "
    "Grüße naïve résumé"
)
WORDS = _VOCABULARY.split()


def _text(rng: random.Random, size: int) -> str:
    words: list[str] = []
    length = 0
    while length < size:
        w = rng.choice(WORDS)
        words.append(w)
        length += len(w) + 1
    lines = [" ".join(words[i : i + 12]) for i in range(0, len(words), 12)]
    return "\n".join(lines) + "\n"


def _message(rng: random.Random, i: int) -> bytes:
    target = rng.randint(2_000, 200_000)
    kind = rng.choice(("plain", "html", "attachments"))
    m = EmailMessage()
    m["From"] = f'"Customer {i}" <customer{i}@example.org>'
    m["To"] = "Support <support@example.com>"
    if rng.random() < 0.3:
        m["Cc"] = f"colleague{i}@example.org, =?utf-8?q?J=C3=B6rg?= <j{i}@example.de>"
    m["Subject"] = f"Re: =?utf-8?q?Bestellung_Nr=2E_{i}_=E2=80=93_Gr=C3=BC=C3=9Fe?="
    m["Date"] = "Mon, 05 Jan 2026 10:00:00 +0100"
    m["Message-ID"] = f"<msg{i}@example.org>"
    if rng.random() < 0.5:
        m["In-Reply-To"] = f"<sent{i}@support.example.com>"
        m["References"] = f"<root{i}@support.example.com> <sent{i}@support.example.com>"
    for n in range(rng.randint(3, 12)):  # trace headers, as real mail has
        m["Received"] = f"from mx{n}.example.net by mx.example.com with ESMTPS id {i}-{n}"
    body_size = target if kind != "attachments" else rng.randint(500, 5_000)
    text = _text(rng, body_size // (3 if kind == "html" else 1))
    m.set_content(text)
    if kind == "html":
        paragraphs = "".join(f"<p>{line}</p>\n" for line in text.splitlines())
        m.add_alternative(f"<html><body>{paragraphs}</body></html>", subtype="html")
    if kind == "attachments":
        remaining = max(1_000, (target - body_size) * 3 // 4)  # base64 grows it by 4/3
        count = rng.randint(1, 3)
        for n in range(count):
            size = remaining // count
            choice = rng.choice(("pdf", "png", "csv"))
            if choice == "csv":
                rows = "\n".join(f"{k};{rng.choice(WORDS)};{k * 3}" for k in range(size // 20))
                m.add_attachment(rows, subtype="csv", filename=f"export-{n}.csv")
            else:
                data = rng.randbytes(size)
                sub = "pdf" if choice == "pdf" else "png"
                main = "application" if choice == "pdf" else "image"
                m.add_attachment(data, maintype=main, subtype=sub, filename=f"Résumé-{n}.{sub}")
    return m.as_bytes()


def bare(raws: list[bytes]) -> None:
    for raw in raws:
        msg = message_from_bytes(raw, policy=policy.default)
        for _part in msg.walk():
            pass


def bare_decode(raws: list[bytes]) -> None:
    for raw in raws:
        msg = message_from_bytes(raw, policy=policy.default)
        for part in msg.walk():
            if not part.is_multipart():
                part.get_content()  # type: ignore[attr-defined]


def ingest(raws: list[bytes]) -> None:
    store = InMemoryAttachmentStore()
    for raw in raws:
        parse_message(raw, attachments=store)


def rate(fn: Callable[[list[bytes]], None], raws: list[bytes], rounds: int = 5) -> float:
    fn(raws[:20])  # warm-up
    results = []
    for _ in range(rounds):
        gc.collect()
        start = time.perf_counter()
        fn(raws)
        results.append(len(raws) / (time.perf_counter() - start))
    return statistics.median(results)


def main() -> None:
    rng = random.Random(20260105)
    raws = [_message(rng, i) for i in range(300)]
    sizes = sorted(len(r) for r in raws)
    print(
        f"{len(raws)} messages, {sum(sizes) / 1e6:.1f} MB, "
        f"size min/median/max {sizes[0] / 1e3:.0f}/{sizes[len(sizes) // 2] / 1e3:.0f}/"
        f"{sizes[-1] / 1e3:.0f} KB"
    )
    r_bare = rate(bare, raws)
    r_decode = rate(bare_decode, raws)
    r_ingest = rate(ingest, raws)
    print(f"bare parse + walk:            {r_bare:8.0f} msg/s")
    print(f"bare parse + walk + decode:   {r_decode:8.0f} msg/s")
    print(f"parse_message:                {r_ingest:8.0f} msg/s")
    print(f"ratio parse_message / bare:          {r_ingest / r_bare:.2f}x (target >= 0.5x)")
    print(f"ratio parse_message / bare + decode: {r_ingest / r_decode:.2f}x")


if __name__ == "__main__":
    main()
