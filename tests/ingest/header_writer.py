"""What the stdlib's header writer reads back from a text it is given: the check, independent of
the code under test, that a display name, a Subject or a file name kept by ingestion can be
written into a reply or a forward as it is.

The MIME builder hands display names, the Subject and file names to ``email`` (``policy.default``),
which parses them again before folding them into header lines, and that parse decodes RFC 2047
encoded words, in a quoted display name and in a quoted parameter too: a text holding
``=?utf-8?q?a=0D=0ABcc=3A_x?=`` is written as two header lines.
"""

from __future__ import annotations

import re
from email.headerregistry import Address, AddressHeader, HeaderRegistry
from email.message import EmailMessage

from interactions_core.model import HEADER_BREAKS

_REGISTRY = HeaderRegistry()
_SUBJECT = _REGISTRY["subject"]

# Never in a kept display name: line breaks, the other controls but TAB, bidi embeddings,
# overrides and isolates (the rule of ``rfc5322.safe_header_text``, written out again here).
UNSAFE_IN_NAME = re.compile(
    f"[{HEADER_BREAKS}\\x01-\\x08\\x0a-\\x1f\\x7f-\\x9f\u202a-\u202e\u2066-\u2069]"
)


def written_name(name: str) -> str:
    """The display name the writer puts in the header for ``name``."""
    mailbox = str(Address(display_name=name, username="x", domain="example.invalid"))
    return AddressHeader.value_parser(mailbox).all_mailboxes[0].display_name or ""


def written_subject(subject: str) -> str:
    """The Subject the writer puts in the header for ``subject``."""
    return str(_SUBJECT("subject", subject))


def written_filename(name: str) -> str:
    """The ``filename`` parameter the writer puts in Content-Disposition for ``name``."""
    msg = EmailMessage()
    msg.set_content("x")
    msg.add_attachment(b"a", maintype="application", subtype="octet-stream", filename=name)
    part = next(msg.iter_attachments())
    return part.get_filename() or ""
