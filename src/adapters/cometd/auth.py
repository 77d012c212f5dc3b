"""A simple authenticator (HTTP Basic against a fixed table), for tests and demos.

The composition root passes the HTTP API's own authenticator in production; this one shows the
contract: look at the request (or the handshake ``ext``), return the agent id or ``None``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping

from .server import AuthRequest


class BasicAuthenticator:
    """Accepts ``Authorization: Basic ...`` or the same value in the handshake ``ext``.

    The ``ext`` form (``{"ext": {"authorization": "Basic ..."}}``) exists because a websocket
    opened by a browser or by some clients cannot carry an ``Authorization`` header.
    """

    def __init__(self, users: Mapping[str, str]) -> None:
        self._users = dict(users)

    async def __call__(self, request: AuthRequest) -> str | None:
        value = request.headers.get("authorization")
        if value is None:
            from_ext = request.ext.get("authorization")
            value = from_ext if isinstance(from_ext, str) else None
        if value is None:
            return None
        return self.check(value)

    def check(self, header: str) -> str | None:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, sep, password = decoded.partition(":")
        expected = self._users.get(user)
        if not sep or expected is None:
            return None
        if hmac.compare_digest(expected.encode(), password.encode()):
            return user
        return None


def basic_header(user: str, password: str) -> str:
    """The ``Authorization`` value for ``user``/``password`` (for clients and tests)."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
