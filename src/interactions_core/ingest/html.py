"""Text bodies: RFC 3676 ``format=flowed`` and HTML to plain text."""

from __future__ import annotations

import html as _html
import re
from html.parser import HTMLParser

__all__ = ["html_to_text", "unflow"]

# --------------------------------------------------------------------------- format=flowed


def unflow(text: str, delsp: bool = False) -> str:
    """Join the soft line breaks of RFC 3676 ``format=flowed`` text (§4.1-§4.5).

    Quote depth is the number of leading ``>``; one space-stuffing space is removed; a line
    ending in a space continues on the next line of the same depth; the signature separator
    ``-- `` is never flowed. Quoted lines come back as ``>>`` + one space (mutt's style).
    """
    out: list[str] = []
    para: str | None = None
    para_depth = 0

    def prefix(depth: int) -> str:
        return ">" * depth + " " if depth else ""

    for line in text.split("\n"):
        stripped = line.lstrip(">")
        depth = len(line) - len(stripped)
        if stripped.startswith(" "):
            stripped = stripped[1:]
        flowed = stripped.endswith(" ") and stripped != "-- "
        if flowed and delsp:
            stripped = stripped[:-1]
        if para is not None and depth == para_depth:
            para += stripped
        else:
            if para is not None:
                out.append(prefix(para_depth) + para)
            para, para_depth = stripped, depth
        if not flowed:
            out.append(prefix(para_depth) + para)
            para = None
    if para is not None:
        out.append(prefix(para_depth) + para)
    return "\n".join(out)


# --------------------------------------------------------------------------- HTML → text

_BLOCK_TAGS = frozenset(
    [
        "address",
        "article",
        "aside",
        "center",
        "dd",
        "div",
        "dl",
        "dt",
        "fieldset",
        "figcaption",
        "figure",
        "footer",
        "form",
        "header",
        "hr",
        "main",
        "nav",
        "ol",
        "section",
        "table",
        "tbody",
        "thead",
        "tfoot",
        "tr",
        "ul",
        "br",
    ]
)
_PARAGRAPH_TAGS = frozenset(["p", "h1", "h2", "h3", "h4", "h5", "h6", "pre"])
_SKIP_TAGS = frozenset(["script", "style", "template", "title", "noscript", "svg"])
_BLANK_LINES = re.compile(r"\n{3,}")
_TRAILING_SPACE = re.compile(r"[ \t]+\n")
_TAG = re.compile(r"<[^>]*>")


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skip = 0
        self.pre = 0
        self.quote = 0
        self.line_start = True
        self.pending_space = False
        self.link: tuple[str, int] | None = None
        self.trailing = 0  # newlines at the end of ``out``

    def newline(self, count: int = 1) -> None:
        if self.out:  # never at the very start
            for _ in range(max(0, count - self.trailing)):
                self.out.append("\n")
            self.trailing = max(self.trailing, count)
        self.line_start = True
        self.pending_space = False

    def write(self, text: str) -> None:
        if not text:
            return
        if self.line_start:
            if self.quote:
                self.out.append("> " * self.quote)
            self.line_start = False
        elif self.pending_space:
            self.out.append(" ")
        self.pending_space = False
        self.out.append(text)
        self.trailing = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            self.skip += 1
            return
        if self.skip:
            return
        if tag in _PARAGRAPH_TAGS:
            self.newline(2)
            if tag == "pre":
                self.pre += 1
        elif tag == "blockquote":
            self.newline(1)
            self.quote += 1
        elif tag == "li":
            self.newline(1)
            self.write("- ")
        elif tag in _BLOCK_TAGS:
            self.newline(1)
        elif tag in ("td", "th"):
            self.pending_space = True
        elif tag == "a":
            href = dict(attrs).get("href") or ""
            if href.startswith(("http://", "https://", "mailto:")):
                self.link = (href, len(self.out))

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self.skip = max(0, self.skip - 1)
            return
        if self.skip:
            return
        if tag in _PARAGRAPH_TAGS:
            if tag == "pre":
                self.pre = max(0, self.pre - 1)
            self.newline(2)
        elif tag == "blockquote":
            self.quote = max(0, self.quote - 1)
            self.newline(1)
        elif tag in _BLOCK_TAGS or tag == "li":
            self.newline(1)
        elif tag == "a" and self.link is not None:
            href, start = self.link
            self.link = None
            label = "".join(self.out[start:]).strip()
            target = href[7:] if href.startswith("mailto:") else href
            if label and label != target and label != href:
                self.pending_space = True
                self.write(f"<{href}>")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            return
        self.handle_starttag(tag, attrs)
        if tag not in _PARAGRAPH_TAGS and tag != "blockquote":
            return
        self.handle_endtag(tag)

    def handle_data(self, data: str) -> None:
        if self.skip or not data:
            return
        if self.pre:
            lines = data.split("\n")
            for i, line in enumerate(lines):
                if i:
                    self.out.append("\n")
                    self.trailing += 1
                    self.line_start = True
                self.write(line)
            return
        if data[0].isspace() and not self.line_start:
            self.pending_space = True
        words = data.split()
        if words:
            self.write(" ".join(words))
            if data[-1].isspace():
                self.pending_space = True


def html_to_text(html: str) -> str:
    """Plain text from HTML (stdlib ``html.parser``): scripts and styles dropped, block elements
    on their own lines, entities decoded, blockquotes quoted with ``> ``. Never raises."""
    try:
        parser = _TextExtractor()
        parser.feed(html)
        parser.close()
        text = "".join(parser.out)
    except Exception:
        text = _html.unescape(_TAG.sub(" ", html))
    text = _TRAILING_SPACE.sub("\n", text.replace("\xa0", " "))
    return _BLANK_LINES.sub("\n\n", text).strip()
