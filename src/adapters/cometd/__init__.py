"""CometD (Bayeux 1.0) server adapter: agent notifications over long-polling and websocket.

Usage (composition root)::

    server = BayeuxServer(authenticator, CometdSettings())
    app = CometdApp(server, app, "/api/v2/notifications")    # in front of the FastAPI app
    # or: app.router.routes.extend(cometd_routes(server, ...)) (more memory per held connect)
    notifier = server.notifier                                 # the core's Notifier port
    # lifespan: await server.start() ... await server.stop()

See docs/cometd.md for the protocol behaviour and the settings.
"""

from .auth import BasicAuthenticator, basic_header
from .config import CometdSettings, OverflowPolicy
from .notifier import CometdNotifier
from .server import AGENT_CHANNELS, Authenticator, AuthRequest, BayeuxServer, echo_service
from .transports import CometdApp, cometd_routes, create_app

__all__ = [
    "AGENT_CHANNELS",
    "AuthRequest",
    "Authenticator",
    "BasicAuthenticator",
    "BayeuxServer",
    "CometdApp",
    "CometdNotifier",
    "CometdSettings",
    "OverflowPolicy",
    "basic_header",
    "cometd_routes",
    "create_app",
    "echo_service",
]
