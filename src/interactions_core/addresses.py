"""Address lists at the input edge: parse, refuse header injection, validate, normalise.

Header injection is refused in both its forms: a line break in the text given, and a display
name that the MIME writer would decode (RFC 2047) into one, such as
``"=?utf-8?q?Evil=0D=0ABcc:_x@evil.org?=" <a@b>``: the stdlib decodes encoded words in a
display name, even a quoted one, when it writes the header.

Validation uses email-validator offline (``check_deliverability=False``) and is cached, because
the same customer and mailbox addresses come back again and again. Data loaded from storage is
never passed through here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from email.headerregistry import Address as HeaderAddress
from email.headerregistry import AddressHeader
from email.utils import getaddresses
from functools import lru_cache

from email_validator import EmailNotValidError, validate_email

from .errors import InvalidAddress
from .model import Address, has_line_break

MAX_ADDRESS_LIST = 500
MAX_FIELD_LENGTH = 64 * 1024


def refuse_line_breaks(field: str, value: str) -> None:
    """A CR or LF in a header value would start a new header (header injection)."""
    if has_line_break(value):
        raise InvalidAddress(f"{field}: line breaks and NUL are not allowed in a header value")


@lru_cache(maxsize=65536)
def _normalise(addr: str) -> str:
    try:
        result = validate_email(
            addr, check_deliverability=False, allow_smtputf8=True, test_environment=True
        )
    except EmailNotValidError as exc:
        raise InvalidAddress(f"{addr!r} is not a valid e-mail address: {exc}") from None
    # Keep the local part as written (it may be case-sensitive); domain lower-cased, IDNA as
    # Unicode (the MIME builder turns it into A-labels).
    return result.normalized


def validate_address(addr: str, name: str = "", *, field: str = "address") -> Address:
    refuse_line_breaks(field, addr)
    refuse_line_breaks(field, name)
    if "=?" in name:
        written = _written_name(name)
        if written is None or has_line_break(written):
            raise InvalidAddress(
                f"{field}: the display name {name!r} decodes (RFC 2047) to a line break, "
                "which is not allowed in a header value"
            )
    return Address(addr=_normalise(addr.strip()), name=name.strip())


def _written_name(name: str) -> str | None:
    """``name`` as the stdlib's header writer reads it when it writes the mail (encoded words
    decoded, in a quoted name too); None when it can't be written at all."""
    try:
        mailbox = str(HeaderAddress(display_name=name, username="x", domain="example.invalid"))
        return AddressHeader.value_parser(mailbox).all_mailboxes[0].display_name or ""
    except Exception:  # whatever the stdlib parser raises: the name can't be written
        return None


def parse_address_list(
    value: str | Sequence[str] | None, *, field: str = "address"
) -> tuple[Address, ...]:
    """Parse ``"A <a@x>, b@y"`` or ``["A <a@x>", "b@y"]`` into validated addresses."""
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else list(value)
    if len(items) > MAX_ADDRESS_LIST:
        raise InvalidAddress(f"{field}: more than {MAX_ADDRESS_LIST} addresses")
    result: list[Address] = []
    for item in items:
        if not isinstance(item, str):
            raise InvalidAddress(f"{field}: every address must be a string")
        if len(item) > MAX_FIELD_LENGTH:
            raise InvalidAddress(f"{field}: longer than {MAX_FIELD_LENGTH} characters")
        refuse_line_breaks(field, item)
        if not item.strip():
            continue
        for name, addr in getaddresses([item]):
            if not addr:
                raise InvalidAddress(f"{field}: {item!r} holds no address")
            result.append(validate_address(addr, name, field=field))
        if len(result) > MAX_ADDRESS_LIST:
            raise InvalidAddress(f"{field}: more than {MAX_ADDRESS_LIST} addresses")
    return tuple(result)


# RFC 5322 §3.4.1 dot-atom local part (RFC 6532: UTF-8 allowed); anything else is quoted.
_DOT_ATOM = re.compile(r"[\w!#$%&'*+/=?^`{|}~-]+(?:\.[\w!#$%&'*+/=?^`{|}~-]+)*")


def _local_part(username: str) -> str:
    """The local part as it must be written: the stdlib hands it back unquoted."""
    if _DOT_ATOM.fullmatch(username):
        return username
    return '"' + username.replace("\\", "\\\\").replace('"', '\\"') + '"'


@lru_cache(maxsize=65536)
def received_address(addr: str) -> str | None:
    """An address mail came with, normalised as input addresses are; None when it is not a
    valid address (a reply to it could never be written or delivered). Quoted local parts
    are valid here (RFC 5322 §3.4.1)."""
    try:
        result = validate_email(
            addr,
            check_deliverability=False,
            allow_smtputf8=True,
            allow_quoted_local=True,
            test_environment=True,
        )
    except EmailNotValidError:
        return None
    return result.normalized


def addresses_from_header(header: object) -> tuple[Address, ...]:
    """Addresses of a parsed stdlib header (``policy.default``), without re-validation.

    Used for mail that came in: what the sender wrote is kept as received; malformed entries
    (no addr-spec) are dropped rather than crashing.
    """
    if not isinstance(header, AddressHeader):
        return ()
    found = (
        mailbox_address(a.display_name or "", a.username or "", a.domain or "")
        for a in header.addresses
    )
    return tuple(a for a in found if a is not None)


def mailbox_address(display_name: str, local_part: str, domain: str) -> Address | None:
    """One mailbox of a received address header, as the stdlib parser split it (the local
    part unquoted), without re-validation; None when it has no plausible addr-spec."""
    # A plausible domain: no '@', '<' or '>' and at least one character besides dots.
    if local_part and domain.strip(".") and not set(domain) & {"@", "<", ">", " "}:
        return Address(addr=f"{_local_part(local_part)}@{domain}", name=display_name)
    return None


def dedupe(addresses: Iterable[Address], exclude: Iterable[str] = ()) -> tuple[Address, ...]:
    """Keep the first of each address (case-insensitive), minus the excluded keys."""
    return unseen(addresses, {e.casefold() for e in exclude})


def unseen(addresses: Iterable[Address], seen: set[str]) -> tuple[Address, ...]:
    """``dedupe`` against keys already casefolded; ``seen`` gains the keys it keeps."""
    out: list[Address] = []
    for a in addresses:
        key = a.addr.casefold()
        if key not in seen:
            seen.add(key)
            out.append(a)
    return tuple(out)
