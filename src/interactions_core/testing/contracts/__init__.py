"""Contract test suites, one per port: prove an adapter of your own with the tests ours pass.

Each is an abstract pytest class with a factory method; subclass it in a test module under a
``Test...`` name and every ``test_*`` method runs against your implementation::

    from interactions_core.testing.contracts import StoreContract

    class TestMyStore(StoreContract):
        def make_store(self, clock: ManualClock) -> Store:
            return MyStore(dsn, clock=clock)

* ``StoreContract`` (``ports.Store``): ``make_store(clock)``.
* ``AttachmentStoreContract`` (``ports.AttachmentStore``): ``make_attachment_store(max_size)``.
* ``MailTransportContract`` (``ports.MailTransport``) and ``AsyncMailTransportContract``
  (``AsyncMailTransport``): ``make_transport(attachments)``,
  ``make_unreachable_transport(attachments)`` and ``delivered()`` (what arrived at the peer,
  as ``DeliveredMail``).
* ``NotifierContract`` (``ports.Notifier``): ``make_notifier()``, ``subscribe(agent_id)`` and
  ``received(agent_id, count)`` (what arrived for the agent, as ``Observed``).

The abstract bases have no ``Test`` prefix, so pytest collects only your subclasses. The
objects under test are made on first use inside each test (so your own fixtures, e.g. a
server, are set up by then: store them on ``self`` from an autouse fixture) and closed after
it. Needs pytest (the ``testing`` extra); the asynchronous suite needs no pytest plugin.
"""

import pytest

# Plain ``assert`` statements report their operands only in modules pytest rewrites: these.
pytest.register_assert_rewrite(
    "interactions_core.testing.contracts.attachments",
    "interactions_core.testing.contracts.notifier",
    "interactions_core.testing.contracts.store",
    "interactions_core.testing.contracts.transport",
)

from .attachments import AttachmentStoreContract  # noqa: E402
from .notifier import TOPICS, NotifierContract, Observed  # noqa: E402
from .store import StoreContract  # noqa: E402
from .transport import (  # noqa: E402
    AsyncMailTransport,
    AsyncMailTransportContract,
    DeliveredMail,
    MailTransportContract,
)

__all__ = [
    "TOPICS",
    "AsyncMailTransport",
    "AsyncMailTransportContract",
    "AttachmentStoreContract",
    "DeliveredMail",
    "MailTransportContract",
    "NotifierContract",
    "Observed",
    "StoreContract",
]
