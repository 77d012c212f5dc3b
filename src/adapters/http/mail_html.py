"""Customer HTML made safe to show: sanitised with nh3 (the Rust Ammonia library), then wrapped
in a document served under its own strict Content-Security-Policy (docs/desktop.md).

What ``sanitize`` does to a mail's ``text/html`` part:

* keeps only Ammonia's allow-list of formatting tags and attributes (``<script>``, ``<style>``,
  ``<svg>``, ``<math>``, ``<form>``, ``<iframe>``, ``<object>``... and every ``on*=`` handler
  are gone; the content of ``<script>`` and ``<style>`` too);
* allows the ``style`` attribute with a short list of harmless properties, and drops every
  declaration whose value could fetch or run anything (``url(``, ``expression(``,
  ``javascript:``, ``@import``, escapes);
* links keep only ``http:``, ``https:`` and ``mailto:`` targets, open in a new tab
  (``target="_blank"``) and carry ``rel="noopener noreferrer"``; ``javascript:``, ``data:``
  and relative links lose their ``href``;
* ``<img src="cid:...">`` becomes the URL of the interaction's attachment with that
  Content-ID (RFC 2392); ``data:image/...`` stays; a remote (``http:``/``https:``) image loses
  its ``src`` unless ``remote_images`` is true, and is counted either way, so the page can offer
  "show images".

The result is put in a small HTML document that ``document_headers`` serves with
``default-src 'none'``, images from this origin and ``data:`` only (plus remote ones when asked),
no script at all, a CSP ``sandbox`` without ``allow-scripts`` and ``Referrer-Policy:
no-referrer``: even if a sanitiser bug let markup through, nothing in it could run or call
home.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote, unquote

import nh3

_TAGS: Final = frozenset(nh3.ALLOWED_TAGS) | {"font", "center"}
_ATTRIBUTES: Final[dict[str, set[str]]] = {
    **{tag: set(attrs) for tag, attrs in nh3.ALLOWED_ATTRIBUTES.items()},
    "*": {"style", "title", "lang", "dir"},
    "font": {"color", "face", "size"},
    "table": {
        "align",
        "summary",
        "charoff",
        "char",
        "width",
        "border",
        "cellpadding",
        "cellspacing",
    },
    "td": {"align", "rowspan", "charoff", "headers", "colspan", "char", "width", "valign"},
    "th": {"align", "rowspan", "scope", "charoff", "headers", "colspan", "char", "width", "valign"},
}
_STYLE_PROPERTIES: Final = frozenset(
    {
        "color",
        "background-color",
        "font",
        "font-family",
        "font-size",
        "font-style",
        "font-weight",
        "text-align",
        "text-decoration",
        "text-indent",
        "text-transform",
        "line-height",
        "letter-spacing",
        "white-space",
        "vertical-align",
        "width",
        "max-width",
        "height",
        "margin",
        "margin-top",
        "margin-bottom",
        "margin-left",
        "margin-right",
        "padding",
        "padding-top",
        "padding-bottom",
        "padding-left",
        "padding-right",
        "border",
        "border-top",
        "border-bottom",
        "border-left",
        "border-right",
        "border-collapse",
        "border-color",
        "border-style",
        "border-width",
        "list-style-type",
    }
)
# A declaration value that could load or run something, in any browser.
_DANGEROUS_VALUE: Final = re.compile(
    r"url\s*\(|expression|javascript|vbscript|behavior|binding|@import|image-set|\\", re.I
)
_LINK_SCHEMES: Final = ("http:", "https:", "mailto:")
_REMOTE: Final = re.compile(r"^\s*(?:https?:)?//", re.I)


@dataclass(frozen=True)
class SafeHtml:
    """``body``: the sanitised fragment; ``remote_images``: how many remote images it has
    (blocked, or kept when they were asked for)."""

    body: str
    remote_images: int


def attachment_url(interaction_id: str, attachment_id: str) -> str:
    """The API path that serves one attachment of an interaction (docs/http.md)."""
    return (
        f"/api/v2/me/interactions/{quote(interaction_id, safe='')}"
        f"/attachments/{quote(attachment_id, safe='')}"
    )


def _clean_style(value: str) -> str | None:
    kept = [
        declaration.strip()
        for declaration in value.split(";")
        if declaration.strip() and not _DANGEROUS_VALUE.search(declaration)
    ]
    return "; ".join(kept) or None


def sanitize(
    source: str,
    interaction_id: str,
    content_ids: Mapping[str, str],
    *,
    remote_images: bool = False,
) -> SafeHtml:
    """``source`` (a mail's HTML) made safe; ``content_ids``: Content-ID -> attachment id of
    the interaction's attachments, for ``cid:`` images."""
    remote = 0
    own = {attachment_url(interaction_id, a) for a in content_ids.values()}

    def attribute(tag: str, name: str, value: str) -> str | None:
        nonlocal remote
        if name == "style":
            return _clean_style(value)
        if tag == "img" and name == "src":
            lowered = value.strip().lower()
            if lowered.startswith("cid:"):
                found = content_ids.get(_unquote_cid(value.strip()[4:]))
                return attachment_url(interaction_id, found) if found else None
            if lowered.startswith("data:image/") and not lowered.startswith("data:image/svg"):
                return value
            if _REMOTE.match(value) or lowered.startswith(("http:", "https:")):
                remote += 1
                return value if remote_images and not value.strip().startswith("//") else None
            return None
        if name == "href":
            return value if value.strip().lower().startswith(_LINK_SCHEMES) else None
        if name in ("src", "cite", "longdesc", "background"):
            return None
        return value

    def relative(url: str) -> str | None:
        # Only the attachment URLs this function wrote itself are relative and allowed.
        return url if url in own else None

    cleaned = nh3.clean(
        source,
        tags=set(_TAGS),
        attributes={tag: set(attrs) for tag, attrs in _ATTRIBUTES.items()},
        attribute_filter=attribute,
        url_schemes={"http", "https", "mailto", "cid", "data"},
        url_relative=relative,
        link_rel="noopener noreferrer",
        set_tag_attribute_values={"a": {"target": "_blank"}},
        filter_style_properties=set(_STYLE_PROPERTIES),
        strip_comments=True,
    )
    return SafeHtml(cleaned, remote)


def _unquote_cid(value: str) -> str:
    return unquote(value).strip().strip("<>")


_DOCUMENT_STYLE: Final = (
    "html{color-scheme:light}"
    "body{margin:0;padding:12px 16px;font:15px/1.5 system-ui,sans-serif;color:#1b1f24;"
    "background:#fff;overflow-wrap:anywhere}"
    "img{max-width:100%;height:auto}"
    "table{max-width:100%}"
    "blockquote{margin:0 0 0 .5em;padding-left:.8em;border-left:3px solid #c8ced6;color:#3d4651}"
    "a{color:#0b57d0}"
    "pre{white-space:pre-wrap}"
)


def document(safe: SafeHtml, title: str = "") -> str:
    """The sanitised fragment as a whole HTML document (for the sandboxed iframe)."""
    return (
        '<!doctype html><html><head><meta charset="utf-8">'
        '<meta name="referrer" content="no-referrer">'
        f"<title>{html.escape(title)}</title>"
        f"<style>{_DOCUMENT_STYLE}</style>"
        '<base target="_blank">'
        f"</head><body>{safe.body}</body></html>"
    )


SANDBOX: Final = "allow-same-origin allow-popups allow-popups-to-escape-sandbox"
"""What the mail document may do: be read by the desktop (same origin, so it can size the
frame and the images it shows from this origin carry the session cookie) and open links in a
new tab. Never ``allow-scripts``, ``allow-forms`` or ``allow-top-navigation``."""


def document_headers(*, remote_images: bool) -> dict[str, str]:
    """The headers the mail document is served with: no script, no plugin, no form, no
    request anywhere but this origin (and remote images once the agent asked for them)."""
    images = "'self' data: http: https:" if remote_images else "'self' data:"
    return {
        "Content-Security-Policy": (
            f"default-src 'none'; img-src {images}; style-src 'unsafe-inline'; "
            "font-src 'none'; form-action 'none'; base-uri 'none'; "
            f"frame-ancestors 'self'; sandbox {SANDBOX}"
        ),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "private, no-store",
    }
