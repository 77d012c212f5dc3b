"""Who may handshake, subscribe and publish on which channels: the server's security policy.

CometD's servers take a ``SecurityPolicy`` (``canHandshake``, ``canSubscribe``,
``canPublish``); ``BayeuxServer(policy=...)`` takes one of these. Each check returns ``None``
to allow, or the Bayeux error to answer (``"403::..."``, ``"404::..."``: the
``protocol.ERR_*`` constants or one of the policy's own), so a refusal says why.

Whatever the policy, the server keeps three rules of its own, because the product's isolation
depends on them and no policy should be able to lose it by accident:

* the agent channels (``/me/**`` and ``/v2/me/**``) carry only the subscribing agent's own
  notifications (``BayeuxServer.deliver``); nobody broadcasts on them, neither a client
  (``403::publish denied``) nor server code (``ValueError``);
* ``/meta/**`` is the protocol's own: never subscribed to or published on;
* a ``/service/**`` publish goes to its registered service (``404`` when there is none), never
  to subscribers.

``AgentPolicy`` is the product's (the default): an agent subscribes to its own channels and the
services, and publishes to the services only. ``BroadcastPolicy`` opens every other channel
to subscriptions and publishes, for servers that add channels of their own (a supervisor's
queue board, a team channel); subclass it (or write a policy of your own) to decide per agent.
"""

from __future__ import annotations

from typing import Any, Final, Protocol

from .protocol import (
    ERR_PUBLISH_DENIED,
    ERR_SUBSCRIBE_DENIED,
    ERR_UNKNOWN_CHANNEL,
    is_service,
    is_wildcard,
)

__all__ = [
    "AGENT_CHANNELS",
    "AgentPolicy",
    "BroadcastPolicy",
    "SecurityPolicy",
    "is_agent_channel",
]

AGENT_CHANNELS: Final = frozenset(
    {
        "/me/interactions",
        "/me/channels",
        "/me/workbins",
        "/v2/me/interactions",
        "/v2/me/channels",
        "/v2/me/workbins",
    }
)
"""Exact channels an agent may subscribe to; each only ever carries that agent's own data."""

_AGENT_BASES: Final = ("/me", "/v2/me")
"""``/me/*``, ``/me/**`` and their ``/v2`` forms only cover the agent's own channels."""


def is_agent_channel(name: str) -> bool:
    """``/me``, ``/v2/me`` or a channel (or pattern) under them: per-agent, never broadcast."""
    return any(name == base or name.startswith(base + "/") for base in _AGENT_BASES)


class SecurityPolicy(Protocol):
    """The checks, each ``None`` (allowed) or the error to answer. ``agent_id`` is the
    authenticated agent (the ``Authenticator`` has already said who it is)."""

    def can_handshake(self, agent_id: str) -> str | None:
        """May this agent open a session at all? (Refused: ``403::Handshake denied``.)"""
        ...

    def can_subscribe(self, agent_id: str, pattern: str) -> str | None:
        """May it subscribe to ``pattern`` (a channel, or a ``*``/``**`` wildcard)? Never
        asked for ``/meta/**``, which the server refuses itself."""
        ...

    def can_publish(self, agent_id: str, channel: str, data: Any) -> str | None:
        """May it publish ``data`` on ``channel`` (a ``/service/**`` request, or a broadcast)?"""
        ...


class AgentPolicy:
    """The product's policy: agents listen on their own channels and talk to services."""

    def can_handshake(self, agent_id: str) -> str | None:
        return None

    def can_subscribe(self, agent_id: str, pattern: str) -> str | None:
        if is_service(pattern) or pattern in AGENT_CHANNELS:
            return None
        if is_wildcard(pattern):
            if pattern.rsplit("/", 1)[0] in _AGENT_BASES:
                return None
            return ERR_SUBSCRIBE_DENIED  # would cover channels that are not the agent's
        return ERR_UNKNOWN_CHANNEL

    def can_publish(self, agent_id: str, channel: str, data: Any) -> str | None:
        # Agents only listen; nothing a client publishes is broadcast, least of all /me/**.
        return None if is_service(channel) else ERR_PUBLISH_DENIED


class BroadcastPolicy(AgentPolicy):
    """``AgentPolicy``, and every other channel open to subscriptions and publishes
    (wildcards included: ``/**`` then receives every broadcast; an agent's own notifications
    still reach only that agent's sessions)."""

    def can_subscribe(self, agent_id: str, pattern: str) -> str | None:
        return None

    def can_publish(self, agent_id: str, channel: str, data: Any) -> str | None:
        return None
