"""interactions-core: the e-mail interaction domain of a GWS-style contact-centre agent API.

Framework-free: no web framework, database driver or SMTP library is imported here. ``Engine``
runs the core (service, router, outbox draining, timers) on ports (``interactions_core.ports``);
``interactions_core.memory`` implements every port in memory; ``interactions_core.testing`` has
the ``Harness`` for unit tests and, in ``testing.contracts``, the contract suites that prove an
adapter (they need pytest: ``pip install interactions-core[testing]``).
"""

from .engine import Engine, PumpReport, SyncReport, TickReport
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
from .handlers import Context
from .intake import IngestResult
from .lifecycle import Lifecycle, State, capabilities, to_mermaid
from .model import (
    Address,
    Attachment,
    AttachmentInfo,
    EmailContent,
    EmailObject,
    Interaction,
    InteractionStateMessage,
)
from .operations import Operation, OperationModel, parse_operation
from .outbox import OutboxContractError, RetryPolicy
from .ports import Agent, Notification, OutgoingMail
from .registry import OperationRegistry, OperationSpec
from .results import OperationResult, Result
from .routing import RoutingConfig
from .service import InteractionService, ServiceConfig
from .wire import InteractionMessage

__all__ = [
    "Address",
    "Agent",
    "Attachment",
    "AttachmentInfo",
    "ConcurrencyConflict",
    "Context",
    "EmailContent",
    "EmailObject",
    "Engine",
    "IngestResult",
    "Interaction",
    "InteractionMessage",
    "InteractionNotFound",
    "InteractionService",
    "InteractionStateMessage",
    "InteractionsError",
    "InvalidAddress",
    "InvalidRequest",
    "Lifecycle",
    "NotFound",
    "Notification",
    "Operation",
    "OperationModel",
    "OperationNotAllowed",
    "OperationRegistry",
    "OperationResult",
    "OperationSpec",
    "OutboxContractError",
    "OutgoingMail",
    "PumpReport",
    "Refused",
    "Result",
    "RetryPolicy",
    "RoutingConfig",
    "ServiceConfig",
    "State",
    "SyncReport",
    "TickReport",
    "TooLarge",
    "capabilities",
    "parse_operation",
    "to_mermaid",
]
