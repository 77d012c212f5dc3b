"""SMTP adapters: MIME building, the outbound transport and outbox dispatcher, the Maildir
default, and the inbound receiver. See ``docs/smtp.md``."""

from .base import AsyncMailTransport, DeliveryReport
from .dispatcher import DispatchStats, MailDispatcher
from .maildir import MaildirTransport
from .mime import BuiltMessage, HeaderInjection, MimeError, build_message
from .receiver import MaildirPoller, ReceiverConfig, RecipientMap, SmtpReceiver
from .transport import RelayConfig, SmtpTransport

__all__ = [
    "AsyncMailTransport",
    "BuiltMessage",
    "DeliveryReport",
    "DispatchStats",
    "HeaderInjection",
    "MailDispatcher",
    "MaildirPoller",
    "MaildirTransport",
    "MimeError",
    "ReceiverConfig",
    "RecipientMap",
    "RelayConfig",
    "SmtpReceiver",
    "SmtpTransport",
    "build_message",
]
