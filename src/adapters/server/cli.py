"""The ``interactions`` command: serve, migrate, agents add, diagram, send-test-mail.

Exit status: 0 done; 1 the database (or the SMTP server of ``send-test-mail``) could not be
reached, which may pass; 2 the configuration or the arguments are wrong.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import logging.config
import smtplib
import sys
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from interactions_core.diagram import main as diagram_main
from interactions_core.errors import InteractionsError

from .agents import AgentDirectoryError, add_agent
from .database import CannotOpenDatabase, describe
from .settings import ConfigurationError, Settings, load_settings, reachable_host

if TYPE_CHECKING:
    import uvicorn
    from starlette.types import ASGIApp

    from adapters.cometd import BayeuxServer

_log = logging.getLogger("adapters.server.cli")  # also when run as ``python -m``


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="interactions", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the server (HTTP API + CometD + SMTP)")
    serve.add_argument("--config", type=Path, help="a JSON or TOML settings file")
    serve.add_argument("--data-dir", type=Path, help="where the database and outbox live")
    serve.add_argument("--host", help="HTTP listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="HTTP port (default 8080)")
    serve.add_argument("--smtp-port", type=int, help="inbound SMTP port (default 2525)")
    serve.add_argument(
        "--node-id",
        help="this process's name in a cluster, in every log line and GET /health"
        " (default <host>-<HTTP port>)",
    )
    serve.add_argument("--log-level", default="info")
    serve.add_argument(
        "--log-format",
        choices=("text", "json"),
        help="text (default, or the log_format setting): one line per record; json: one JSON"
        " object per line, with the records' structured fields, for log shippers",
    )
    serve.add_argument("--access-log", action="store_true", help="log every HTTP request")

    migrate = commands.add_parser(
        "migrate",
        help="apply the schema migrations to the configured database, or (--from) move a"
        " SQLite installation into the configured PostgreSQL database",
        description="Without --from: bring the configured database (SQLite or PostgreSQL) to"
        " the latest schema and print its version before and after. With --from sqlite:PATH:"
        " copy that SQLite installation (interactions with their versions, pending mail,"
        " unpublished notifications, attachment files) into the configured PostgreSQL"
        " database, which must hold no interaction; the SQLite file is only read.",
    )
    migrate.add_argument("--config", type=Path, help="a JSON or TOML settings file")
    migrate.add_argument("--data-dir", type=Path, help="where the database and outbox live")
    migrate.add_argument(
        "--from",
        dest="source",
        metavar="sqlite:PATH",
        help="the SQLite database file to move into the configured PostgreSQL database",
    )
    migrate.add_argument(
        "--attachments",
        type=Path,
        metavar="DIR",
        help="with --from: the SQLite installation's attachments directory"
        " (default: attachments/ beside PATH)",
    )

    agents = commands.add_parser("agents", help="manage the agents file")
    agent_commands = agents.add_subparsers(dest="agents_command", required=True)
    add = agent_commands.add_parser("add", help="add or replace an agent")
    add.add_argument("agent_id")
    add.add_argument("--file", type=Path, required=True, help="the agents file (JSON)")
    add.add_argument("--name", default="")
    add.add_argument("--password", help="default: asked on the terminal or read from stdin")
    add.add_argument("--skill", action="append", default=[])
    add.add_argument("--mailbox", action="append", default=[])
    add.add_argument("--address", action="append", default=[])
    add.add_argument("--capacity", type=int, default=5)

    diagram = commands.add_parser("diagram", help="the lifecycle as Mermaid")
    diagram.add_argument(
        "file", nargs="?", help="write a Markdown page here (e.g. docs/lifecycle.md)"
    )

    mail = commands.add_parser(
        "send-test-mail",
        help="deliver a sample mail over SMTP to the server's receiver",
        description="Deliver a sample customer mail to the inbound SMTP receiver that serve"
        " runs with the same configuration (--config or INTERACTIONS_CONFIG, then the"
        " INTERACTIONS_* variables): to its listen address and port, for the first configured"
        " mailbox. The options given win.",
    )
    mail.add_argument("--config", type=Path, help="a JSON or TOML settings file (as serve's)")
    mail.add_argument(
        "--host", help="the SMTP server (default: smtp_listen_host; loopback for a wildcard)"
    )
    mail.add_argument("--port", type=int, help="the SMTP port (default: smtp_listen_port)")
    mail.add_argument("--to", help="the recipient (default: the first of the mailboxes)")
    mail.add_argument("--sender", default='"Cee Customer" <customer@example.org>')
    mail.add_argument("--cc", default="colleague@example.org")
    mail.add_argument("--subject", default="Where is my order?")
    mail.add_argument("--text", default="Hello,\n\nmy order 42 has not arrived yet.\n\nCee")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    if args.command == "migrate":
        return migrate(args)
    if args.command == "agents":
        return agents_add(args)
    if args.command == "diagram":
        return diagram_main([args.file] if args.file else [])
    return send_test_mail(args)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The command's options that override settings (those it has)."""
    overrides: dict[str, Any] = {}
    for option, name in (
        ("data_dir", "data_dir"),
        ("host", "http_host"),
        ("port", "http_port"),
        ("smtp_port", "smtp_listen_port"),
        ("node_id", "node_id"),
        ("log_format", "log_format"),
    ):
        if getattr(args, option, None) is not None:
            overrides[name] = getattr(args, option)
    return overrides


def _fail(exc: BaseException, status: int) -> int:
    print(f"interactions: {exc}", file=sys.stderr)
    return status


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .bootstrap import NOTIFICATIONS_PATH, build

    try:
        settings = load_settings(args.config, **_overrides(args))
    except ConfigurationError as exc:
        return _fail(exc, 2)
    # Before anything is built, so that every line the server logs names the node.
    logging.config.dictConfig(logging_config(settings.node_id, args.log_level, settings.log_format))
    try:
        server = build(settings)
    except CannotOpenDatabase as exc:
        return _fail(exc, 1)
    except (ConfigurationError, AgentDirectoryError) as exc:
        return _fail(exc, 2)
    base = f"http://{settings.http_host}:{settings.http_port}"
    lines = [
        "interactions-core server",
        f"  agent desktop  {base}/  (log in as a demo agent below)",
        f"  HTTP API       {base}/api/v2  (OpenAPI: {base}/docs)",
        f"  CometD         {base}{NOTIFICATIONS_PATH}  (channel /me/interactions)",
        f"  inbound SMTP   {settings.smtp_listen_host}:{settings.smtp_listen_port}  "
        f"(mailboxes: {', '.join(settings.mailboxes)})",
        f"  database       {describe(settings)}",
        f"  node           {settings.node_id}  (health: {base}/health)",
    ]
    if settings.relay is None:
        lines.append(f"  outgoing mail  Maildir {settings.maildir_path}/new  (no relay configured)")
    else:
        lines.append(f"  outgoing mail  relay {settings.relay.host}:{settings.relay.port}")
    if server.demo_passwords:
        lines.append(
            "  demo agents    "
            + ", ".join(
                f"{agent} / {password}" for agent, password in server.demo_passwords.items()
            )
        )
    else:
        lines.append(f"  agents         {settings.agents_file}")
    if settings.trusted_proxies:
        lines.append(
            f"  proxies        {', '.join(settings.trusted_proxies)}  (X-Forwarded-For trusted)"
        )
    print("\n".join(lines), flush=True)
    _log_start(settings)
    config = uvicorn_config(
        server.asgi,
        settings,
        log_level=args.log_level,
        access_log=args.access_log,
        cometd=server.cometd,
    )

    class _Server(uvicorn.Server):
        async def shutdown(self, sockets: Any = None) -> None:
            # Answer held CometD connects first, or the graceful shutdown waits on them.
            await server.cometd.stop()
            await super().shutdown(sockets)

    # Server.run picks the event loop (uvloop when installed) the way uvicorn's own CLI does.
    _Server(config).run()
    return 0


def _log_start(settings: Settings) -> None:
    """The banner's facts as one log line (the banner goes to stdout, the log to stderr),
    without the demo passwords."""
    http = f"{settings.http_host}:{settings.http_port}"
    smtp = f"{settings.smtp_listen_host}:{settings.smtp_listen_port}"
    relay = settings.relay
    outgoing = (
        f"maildir:{settings.maildir_path}" if relay is None else f"relay:{relay.host}:{relay.port}"
    )
    fields = {
        "http": http,
        "smtp": smtp,
        "database": describe(settings),
        "outgoing": outgoing,
        "mailboxes": list(settings.mailboxes),
    }
    _log.info(
        "starting: http=%s smtp=%s database=%s outgoing=%s mailboxes=%s",
        http,
        smtp,
        fields["database"],
        outgoing,
        ",".join(settings.mailboxes),
        extra=fields,
    )


class NodeFilter(logging.Filter):
    """Gives every record a ``node`` attribute (``%(node)s`` in the format): the node id."""

    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node

    def filter(self, record: logging.LogRecord) -> bool:
        record.node = self.node
        return True


LOG_FORMAT = "%(levelname)s [%(node)s] %(name)s: %(message)s"


def logging_config(node_id: str, level: str = "info", log_format: str = "text") -> dict[str, Any]:
    """``serve``'s logging (``logging.config.dictConfig``): one handler on stderr, its filter
    adding the node id to every record, whoever logs it (the server's modules, uvicorn,
    libraries). uvicorn's loggers propagate to it (``uvicorn_config`` then leaves the logging
    alone), its access lines included. ``log_format``: ``text`` (``LOG_FORMAT``) or ``json``
    (``logs.JsonFormatter``: one object per line)."""
    formatter: dict[str, Any] = (
        {"()": "adapters.server.logs.JsonFormatter"}
        if log_format == "json"
        else {"format": LOG_FORMAT}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"node": {"()": NodeFilter, "node": node_id}},
        "formatters": {"node": formatter},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "node",
                "filters": ["node"],
            }
        },
        "root": {"handlers": ["stderr"], "level": level.upper()},
        "loggers": {
            **{
                name: {"handlers": [], "propagate": True}
                for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
            },
            # Libraries' per-step chatter at INFO (a line per state callback, a line per SMTP
            # command): their warnings and errors only, whatever the level.
            **{name: {"level": "WARNING"} for name in ("transitions", "mail.log")},
        },
    }


def uvicorn_config(
    app: ASGIApp,
    settings: Settings,
    *,
    log_level: str = "info",
    access_log: bool = False,
    log_config: dict[str, Any] | None = None,
    cometd: BayeuxServer | None = None,
) -> uvicorn.Config:
    """How ``serve`` runs ``app``. Forwarded headers are believed only from
    ``settings.trusted_proxies``: uvicorn's default would trust 127.0.0.1 and ::1 (or the
    ``FORWARDED_ALLOW_IPS`` variable), so the trust is always given explicitly, empty when none
    is configured. With proxies, uvicorn rewrites the client (for its logs and
    ``X-Forwarded-Proto``) by the same rule ``HttpAuth`` applies again (``client_address``).
    ``log_config``: given to uvicorn, which then configures the logging with it; None (what
    ``serve`` passes, having configured it with ``logging_config``) leaves the logging alone.
    ``cometd``: the server ``app`` mounts at ``NOTIFICATIONS_PATH``; with it (and
    ``cometd.fast_long_polling``), its long-polling requests are read below ASGI
    (``adapters.cometd.http11``)."""
    import uvicorn

    from .bootstrap import NOTIFICATIONS_PATH

    http: Any = "auto"
    if cometd is not None and settings.cometd.fast_long_polling:
        from adapters.cometd.http11 import long_polling_protocol

        http = long_polling_protocol(cometd, NOTIFICATIONS_PATH)

    return uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_level=log_level,
        lifespan="on",
        access_log=access_log,
        timeout_graceful_shutdown=10,
        log_config=log_config,
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=list(settings.trusted_proxies),
        http=http,
    )


def migrate(args: argparse.Namespace) -> int:
    """``interactions migrate [--from sqlite:PATH [--attachments DIR]]``: parsing and printing
    only; the work is ``database.run_migrations`` and ``transfer.move_sqlite_to_postgres``."""
    from .database import run_migrations
    from .transfer import TransferError, move_sqlite_to_postgres

    if args.attachments is not None and args.source is None:
        return _fail(ValueError("--attachments DIR goes with --from sqlite:PATH"), 2)
    source: Path | None = None
    if args.source is not None:
        scheme, colon, rest = args.source.partition(":")
        if not colon or scheme.lower() != "sqlite" or not rest:
            return _fail(
                ValueError(
                    f"--from {args.source!r}: give sqlite:PATH (the SQLite database file to move)"
                ),
                2,
            )
        source = Path(rest)
    try:
        settings = load_settings(args.config, **_overrides(args))
        if source is None:
            print(run_migrations(settings), flush=True)
            return 0
        report = move_sqlite_to_postgres(
            settings,
            source,
            args.attachments,
            progress=lambda line: print(line, flush=True),
        )
    except CannotOpenDatabase as exc:
        return _fail(exc, 1)
    except (ConfigurationError, TransferError) as exc:
        return _fail(exc, 2)
    print("\n".join(report.lines()), flush=True)
    return 0


def agents_add(args: argparse.Namespace) -> int:
    password = args.password
    if password is None:
        password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline()
        password = password.rstrip("\n")
    if not password:
        print("interactions: an empty password is not allowed", file=sys.stderr)
        return 2
    try:
        record = add_agent(
            args.file,
            args.agent_id,
            password,
            name=args.name,
            skills=args.skill,
            mailboxes=args.mailbox,
            addresses=args.address,
            capacity=args.capacity,
        )
    except (AgentDirectoryError, InteractionsError, ValueError) as exc:
        print(f"interactions: {exc}", file=sys.stderr)
        return 2
    print(f"agent {record.id} written to {args.file}")
    return 0


def sample_mail_target(args: argparse.Namespace) -> tuple[str, int, str]:
    """Where ``send-test-mail`` delivers: (host, port, recipient), each from its option or else
    from the settings ``serve`` reads (``ConfigurationError`` when they are invalid or name
    no usable port or mailbox)."""
    host, port, to = args.host, args.port, args.to
    if host is None or port is None or to is None:
        settings = load_settings(args.config)
        if host is None:
            host = reachable_host(settings.smtp_listen_host)
        if port is None:
            port = settings.smtp_listen_port
            if port == 0:
                raise ConfigurationError(
                    "smtp_listen_port is 0 (the server picks a free port at start): give --port"
                )
        if to is None:
            if not settings.mailboxes:
                raise ConfigurationError("no mailbox is configured (mailboxes): give --to")
            to = next(iter(settings.mailboxes))
    return host, port, to


def send_test_mail(args: argparse.Namespace) -> int:
    try:
        host, port, to = sample_mail_target(args)
    except ConfigurationError as exc:
        return _fail(exc, 2)
    message = EmailMessage()
    message["From"] = args.sender
    message["To"] = to
    if args.cc:
        message["Cc"] = args.cc
    message["Subject"] = args.subject
    message["Date"] = formatdate(localtime=True)
    message["Message-ID"] = make_msgid(domain="example.org")
    message.set_content(args.text)
    try:
        with smtplib.SMTP(host, port, timeout=30) as smtp:
            smtp.send_message(message)
    except (OSError, smtplib.SMTPException) as exc:
        print(f"interactions: could not deliver to {host}:{port}: {exc}", file=sys.stderr)
        return 1
    print(f"delivered {message['Message-ID']} to {to} via {host}:{port}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
