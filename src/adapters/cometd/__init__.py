"""CometD (Bayeux 1.0) server adapter: agent notifications over long-polling and websocket.

Usage (composition root)::

    server = BayeuxServer(authenticator, CometdSettings())
    app = CometdApp(server, app, "/api/v2/notifications")    # in front of the FastAPI app
    # or: app.router.routes.extend(cometd_routes(server, ...)) (more memory per held connect)
    notifier = server.notifier                                 # the core's Notifier port
    server.publish("/team/board", data)                        # broadcast (policy.py)
    # lifespan: await server.start() ... await server.stop()

See docs/cometd.md for the protocol behaviour and the settings.
"""

from .auth import BasicAuthenticator, basic_header
from .config import CometdSettings, OverflowPolicy
from .notifier import CometdNotifier
from .policy import AgentPolicy, BroadcastPolicy, SecurityPolicy
from .server import AGENT_CHANNELS, Authenticator, AuthRequest, BayeuxServer, echo_service
from .transports import CometdApp, cometd_routes, create_app

__all__ = [
    "AGENT_CHANNELS",
    "AgentPolicy",
    "AuthRequest",
    "Authenticator",
    "BasicAuthenticator",
    "BayeuxServer",
    "BroadcastPolicy",
    "CometdApp",
    "CometdNotifier",
    "CometdSettings",
    "OverflowPolicy",
    "SecurityPolicy",
    "basic_header",
    "cometd_routes",
    "create_app",
    "echo_service",
]
