"""interactions-core: the e-mail interaction domain of a GWS-style contact-centre agent API.

Framework-free: no web framework, database driver or SMTP library is imported here. Adapters
plug into the ports (``interactions_core.ports``); ``interactions_core.testing`` has in-memory
ones and a ``Harness`` for unit tests.
"""

from .errors import (
    ConcurrencyConflict,
    InteractionNotFound,
    InteractionsError,
    InvalidAddress,
    InvalidRequest,
    NotFound,
    OperationNotAllowed,
    Refused,
    TooLarge,
)
from .lifecycle import State, capabilities, to_mermaid
from .model import (
    Address,
    Attachment,
    AttachmentInfo,
    EmailContent,
    EmailObject,
    Interaction,
    InteractionStateMessage,
)
from .operations import Operation, parse_operation
from .ports import Agent, Notification, OutgoingMail
from .service import InteractionService, OperationResult, ServiceConfig

__all__ = [
    "Address",
    "Agent",
    "Attachment",
    "AttachmentInfo",
    "ConcurrencyConflict",
    "EmailContent",
    "EmailObject",
    "Interaction",
    "InteractionNotFound",
    "InteractionService",
    "InteractionStateMessage",
    "InteractionsError",
    "InvalidAddress",
    "InvalidRequest",
    "NotFound",
    "Notification",
    "Operation",
    "OperationNotAllowed",
    "OperationResult",
    "OutgoingMail",
    "Refused",
    "ServiceConfig",
    "State",
    "TooLarge",
    "capabilities",
    "parse_operation",
    "to_mermaid",
]
