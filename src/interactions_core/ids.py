"""Production defaults for the clock and id ports (no I/O: the system clock and randomness)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32: no I, L, O, U


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class RandomIds:
    """16-character alphanumeric ids, like Interaction Server's (e.g. ``00009a8T8Y13002S``)."""

    def interaction_id(self) -> str:
        n = secrets.randbits(80)
        return "".join(_ALPHABET[(n >> (5 * k)) & 31] for k in range(16))

    def message_id(self, domain: str) -> str:
        # RFC 5322 §3.6.4: globally unique, a domain on the right; 128 random bits suffice.
        return f"<{secrets.token_hex(16)}@{domain}>"
