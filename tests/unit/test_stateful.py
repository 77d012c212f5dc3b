"""Stateful property test: three agents drive the in-memory harness through every operation.

Hypothesis picks sequences of agent operations (well-formed or not, allowed now or not), mail
arriving (new, customer answers, automatic, duplicates), readiness changes, time passing and
delivery failures, and checks after every step what the docs promise: the wire shape of every
answer, a consistent store, what each agent is notified of and may read, the mail that goes out,
and routing that follows its rules and never leaves work idle while an agent could take it.

Why: test_simulation moves much work with well-formed moves only; the bugs hide in odd
sequences. This machine found a customer's answer, rejected by the agent it preferred, offered
back to that agent forever while another agent was free (regression test in
test_ingest_service.py). Any call raising is a failure too.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from interactions_core import lifecycle
from interactions_core.errors import InteractionNotFound
from interactions_core.lifecycle import STATES, WAITING_STATES, State
from interactions_core.model import Direction, Interaction, SubType, has_line_break
from interactions_core.ports import (
    TOPIC_INTERACTIONS,
    TOPIC_WORKBINS,
    Agent,
    PermanentMailError,
    TransientMailError,
)
from interactions_core.routing import RoutingConfig
from interactions_core.service import ServiceConfig
from interactions_core.testing import Harness, inbound_email

SUPPORT, BILLING = "support@example.com", "billing@example.com"
AGENTS = (
    Agent(
        id="alice",
        skills=frozenset({"billing"}),
        capacity=2,
        mailboxes=(SUPPORT,),
        addresses=("alice@example.com",),
    ),
    Agent(id="bob", skills=frozenset({"tech"}), capacity=1, mailboxes=(BILLING,)),
    Agent(
        id="carol", skills=frozenset({"billing", "tech"}), capacity=3, mailboxes=(SUPPORT, BILLING)
    ),
)
AGENT = {a.id: a for a in AGENTS}
CONFIG = ServiceConfig(
    mailbox_queues={SUPPORT: "Support", BILLING: "Billing"},
    queues=frozenset({"Support", "Billing", "Tier2", "Automatic"}),
    shared_workbins={"Team": frozenset({"alice", "carol"})},
)
ROUTING = RoutingConfig(
    offer_timeout=timedelta(seconds=30), queue_skills={"Billing": "billing", "Tier2": "tech"}
)
OWNED_STATES = frozenset({State.ACCEPTED, State.REPLY_CREATED, State.FAILED})
# What moves work along, favoured when an agent acts on its own work.
PROGRESS = frozenset({"Accept", "Reply", "Send", "StopProcessing"})
# Operations whose success answer names the interaction they created.
CREATING = frozenset({"Reply", "ReplyAll", "Forward", "CreateEmail"})

agent_ids = st.sampled_from(sorted(AGENT))
mailboxes = st.sampled_from([SUPPORT, BILLING])
queue_names = st.sampled_from(["Support", "Billing", "Tier2", "Automatic", "Inbound", "Nope", ""])
recipients = st.sampled_from(
    ["x@example.org", "y@example.net", "bad address", "", SUPPORT, "a@b.c\r\nBcc: evil@x"]
)
from_addresses = st.sampled_from([SUPPORT, BILLING, "other@example.com", "not-an-address"])


def body(operation: str, **fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({"operationName": st.just(operation), **fields})


# Any body an agent's client might send: allowed now or not, well-formed or not.
any_body: st.SearchStrategy[dict[str, Any]] = st.one_of(
    st.sampled_from(
        ["Accept", "Reject", "Reply", "ReplyAll", "CancelReply", "Pull", "StopProcessing"]
    ).map(lambda operation: {"operationName": operation}),
    body("Transfer", agentId=st.sampled_from([*sorted(AGENT), "zed"])),
    body("Transfer", skill=st.sampled_from(["billing", "tech", "sales"])),
    body("Transfer", queueName=queue_names),
    body("StopProcessing", queueName=queue_names),
    body("PlaceInQueue", queueName=queue_names),
    st.fixed_dictionaries(
        {"operationName": st.just("PlaceInWorkbin")},
        optional={"workbinName": st.sampled_from(["Personal", "Team", "Nope"])},
    ),
    body("Forward", toAddress=recipients, text=st.just("fyi")),
    st.fixed_dictionaries(
        {"operationName": st.just("Send")},
        optional={
            "email_object": st.fixed_dictionaries(
                {},
                optional={
                    "toAddress": recipients,
                    "fromAddress": from_addresses,
                    "subject": st.sampled_from(["ok", "bad\nsubject"]),
                },
            )
        },
    ),
    body("UpdateProperties", userData=st.fixed_dictionaries({"k": st.integers(0, 3)})),
    body("LinkAttachment", attachmentId=st.sampled_from(["nope", "x" * 64])),
)


def raw_mail(
    number: int, mailbox: str, *, message_id: str, in_reply_to: str, automatic: bool = False
) -> bytes:
    headers = (
        f"From: cust{number}@example.org\r\nTo: {mailbox}\r\nSubject: Re: thing\r\n"
        f"Message-ID: {message_id}\r\nDate: Mon, 05 Jan 2026 09:00:00 +0000\r\n"
        f"In-Reply-To: {in_reply_to}\r\nReferences: {in_reply_to}\r\n"
    )
    if automatic:
        headers += "Auto-Submitted: auto-replied\r\n"
    return (headers + "\r\nthanks\r\n").encode()


@dataclass(frozen=True)
class RouterOffer:
    """An offer the router made, with who could have taken the interaction at that moment."""

    interaction: Interaction
    invitee: str
    skill: str
    could_take: frozenset[str]  # Ready, under capacity before this offer, with the skill


@settings(
    max_examples=100,
    stateful_step_count=50,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
class Machine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.h = Harness(agents=AGENTS, config=CONFIG, routing=ROUTING)
        self.access = {a: {w["workbinId"] for w in self.h.service.workbins(a)} for a in AGENT}
        self.ready: set[str] = set()
        self.numbers = itertools.count(1)
        # Seen at every commit: the interactions, their versions, who ever held one (owner or
        # invitee) or handled it last, and the offers the router made.
        self.seen: dict[str, Interaction] = {}
        self.versions: dict[str, list[int]] = defaultdict(list)
        self.involved: dict[str, set[str]] = defaultdict(set)
        self.router_offers: list[RouterOffer] = []
        # What agents were answered, how often each draft was sent, and who sent each message.
        self.responses: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
        self.sends: Counter[str] = Counter()
        self.sender: dict[str, str] = {}
        self.h.service.subscribe(self._on_commit)

    # ------------------------------------------------------------------ observing

    def _on_commit(self, changed: Sequence[Interaction]) -> None:
        for i in changed:
            before = self.seen.get(i.id)
            self.seen[i.id] = i
            self.versions[i.id].append(i.version)
            offer = i.offer
            invitee = offer.agent_id if offer is not None else None
            self.involved[i.id].update(a for a in (i.owner, i.last_agent, invitee) if a)
            if offer is None or offer.returns_to is not None:
                continue  # no offer, or a transfer to a named agent (not the router's choice)
            if before is None or before.offer != offer:
                skill = self._skill(i)
                loads = self._loads(r for r in self._rows() if r.id != i.id)
                self.router_offers.append(
                    RouterOffer(
                        interaction=i,
                        invitee=offer.agent_id,
                        skill=skill,
                        could_take=frozenset(
                            a
                            for a in self.ready
                            if loads[a] < AGENT[a].capacity
                            and (not skill or skill in AGENT[a].skills)
                        ),
                    )
                )

    def _rows(self) -> list[Interaction]:
        return sorted(self.h.store._all(), key=lambda i: i.id)

    @staticmethod
    def _loads(rows: Iterable[Interaction]) -> Counter[str]:
        """Inbound work counted against each agent's capacity: offered to it, else owned by it."""
        loads: Counter[str] = Counter()
        for i in rows:
            holder = i.offer.agent_id if i.offer is not None else i.owner
            if i.direction is Direction.INBOUND and holder is not None:
                loads[holder] += 1
        return loads

    @staticmethod
    def _skill(i: Interaction) -> str:
        return i.required_skill or ROUTING.queue_skills.get(i.current_queue or "", "")

    def _entitled(self, agent_id: str, i: Interaction) -> bool:
        """The owner; the invitee while Invited; agents with access to the workbin while there."""
        if i.state == State.INVITED:
            return i.offer is not None and i.offer.agent_id == agent_id
        if i.state == State.IN_WORKBIN:
            return i.workbin in self.access[agent_id]
        return i.owner == agent_id

    def _work(self) -> list[tuple[str, Interaction]]:
        """Each agent's own work: what it owns, is offered, or finds in its workbins."""
        return [(a, i) for i in self._rows() for a in sorted(AGENT) if self._entitled(a, i)]

    def _latest(self, agent_id: str, topic: str, key: str) -> dict[str, dict[str, Any]]:
        """The agent's last message on ``topic`` about each interaction."""
        return {n[key]: n for n in self.h.messages(agent_id, topic)}

    def _execute(self, agent_id: str, iid: str | None, request: dict[str, Any]) -> dict[str, Any]:
        response = self.h.execute(agent_id, iid, request)
        self.responses.append((agent_id, request, response))
        if iid is not None and request["operationName"] == "Send" and response["status"] == "ok":
            self.sends[iid] += 1
            message_id = self.h.interaction(iid).email.message_id
            if message_id is not None:
                self.sender[message_id] = agent_id
        return response

    # ------------------------------------------------------------------ rules

    @initialize(ready=st.sets(agent_ids))
    def agents_log_in(self, ready: set[str]) -> None:
        for agent_id in sorted(ready):
            self.set_channel(agent_id, "Ready")

    @rule(agent_id=agent_ids, operation=st.sampled_from(["Ready", "Ready", "NotReady", "Bogus"]))
    def set_channel(self, agent_id: str, operation: str) -> None:
        # Updated first: becoming Ready routes before the call returns.
        if operation == "Ready":
            self.ready.add(agent_id)
        elif operation == "NotReady":
            self.ready.discard(agent_id)
        response = self.h.set_channel(agent_id, operation)
        self.responses.append((agent_id, {"operationName": operation}, response))

    @rule(mailbox=mailboxes, own_queue=st.booleans())
    def mail_is_delivered(self, mailbox: str, own_queue: bool) -> None:
        n = next(self.numbers)
        email = inbound_email(
            sender=f"c{n}@example.org",
            to=mailbox,
            subject=f"Case {n}",
            text="help",
            message_id=f"<case{n}@example.org>",
        )
        self.h.deliver(email, queue=CONFIG.mailbox_queues[mailbox] if own_queue else None)

    @rule(mailbox=mailboxes, kind=st.sampled_from(["follow-up", "automatic", "duplicate"]))
    def mail_is_ingested(self, mailbox: str, kind: str) -> None:
        """A follow-up to a customer's own mail (not ours), an auto-reply, or a duplicate."""
        n = next(self.numbers)
        previous = f"<case{n - 1}@example.org>"
        message_id = previous if kind == "duplicate" else f"<case{n}@example.org>"
        self.h.ingest(
            raw_mail(
                n,
                mailbox,
                message_id=message_id,
                in_reply_to=previous,
                automatic=kind == "automatic",
            )
        )

    @precondition(lambda self: bool(self.h.sent_mail))
    @rule(mailbox=mailboxes, data=st.data())
    def customer_answers_our_mail(self, mailbox: str, data: st.DataObject) -> None:
        answered = data.draw(st.sampled_from([m.message_id for m in self.h.sent_mail]))
        n = next(self.numbers)
        self.h.ingest(
            raw_mail(n, mailbox, message_id=f"<case{n}@example.org>", in_reply_to=answered)
        )

    @precondition(lambda self: bool(self.seen))
    @rule(data=st.data())
    def agent_tries_any_operation(self, data: st.DataObject) -> None:
        iid = data.draw(st.sampled_from(sorted(self.seen)), label="interaction")
        self._execute(data.draw(agent_ids, label="agent"), iid, data.draw(any_body, label="body"))

    @precondition(lambda self: bool(self._work()))
    @rule(data=st.data())
    def agent_uses_a_capability(self, data: st.DataObject) -> None:
        """What a client would do: an operation the agent is offered, on its own work."""
        agent_id, i = data.draw(st.sampled_from(self._work()), label="work")
        capabilities = self.h.service.allowed_operations(agent_id, i)
        progress = [c for c in capabilities if c in PROGRESS] or capabilities
        operation = data.draw(st.sampled_from(capabilities) | st.sampled_from(progress))
        request: dict[str, Any] = {"operationName": operation}
        if operation == "Transfer":
            request = data.draw(
                st.sampled_from(
                    [{"operationName": "Transfer", "agentId": a} for a in AGENT if a != agent_id]
                    + [
                        {"operationName": "Transfer", "skill": "tech"},
                        {"operationName": "Transfer", "queueName": "Support"},
                    ]
                )
            )
        elif operation == "PlaceInQueue":
            request["queueName"] = data.draw(
                st.sampled_from(["Support", "Billing", "Tier2", "Automatic"])
            )
        elif operation == "PlaceInWorkbin":
            request["workbinName"] = data.draw(st.sampled_from(["Personal", "Team"]))
        elif operation == "Send" and data.draw(st.booleans()):
            request["email_object"] = {"toAddress": "cust@example.org"}
        elif operation == "UpdateProperties":
            request["userData"] = {"k": data.draw(st.integers(0, 3))}
        elif operation == "LinkAttachment":
            request["attachmentId"] = "nope"
        self._execute(agent_id, i.id, request)

    @precondition(lambda self: any(i.state == State.INVITED for i in self._rows()))
    @rule(data=st.data())
    def agent_answers_an_offer(self, data: st.DataObject) -> None:
        """Accept, Reply and Send in a row: the happy path, so that mail goes out."""
        offered = [(a, i) for a, i in self._work() if i.state == State.INVITED]
        agent_id, i = data.draw(st.sampled_from(offered), label="offer")
        if self._execute(agent_id, i.id, {"operationName": "Accept"})["status"] == "ok":
            reply = self._execute(agent_id, i.id, {"operationName": "Reply"})
            if reply["status"] == "ok":
                self._execute(agent_id, reply["replyInteractionId"], {"operationName": "Send"})

    @rule(
        agent_id=agent_ids,
        from_address=st.none() | from_addresses,
        with_parent=st.booleans(),
        queue=st.sampled_from([None, "Drafts", "Nope"]),
    )
    def agent_creates_an_email(
        self, agent_id: str, from_address: str | None, with_parent: bool, queue: str | None
    ) -> None:
        request: dict[str, Any] = {"operationName": "CreateEmail"}
        if from_address is not None:
            request["fromAddress"] = from_address
        if queue is not None:
            request["queueName"] = queue
        if with_parent and self.seen:
            request["parentId"] = max(self.seen)
        self._execute(agent_id, None, request)

    @rule(seconds=st.sampled_from([0, 1, 29, 31, 120]))
    def time_passes(self, seconds: int) -> None:
        self.h.tick(seconds)

    @precondition(lambda self: not self.h.transport.fail_next)
    @rule(permanent=st.booleans(), count=st.integers(1, 2))
    def next_deliveries_fail(self, permanent: bool, count: int) -> None:
        for _ in range(count):
            self.h.transport.fail_next.append(
                PermanentMailError("550 no such user")
                if permanent
                else TransientMailError("421 busy")
            )

    @rule()
    def outbox_drains(self) -> None:
        self.h.drain()

    # ------------------------------------------------------------------ invariants

    @invariant()
    def answers_have_the_wire_shape(self) -> None:
        for agent_id, request, response in self.responses:
            operation = request["operationName"]
            if response.get("status") == "ok":
                expected = {"status", "replyInteractionId"} if operation in CREATING else {"status"}
                assert set(response) == expected, (
                    f"{agent_id} {request}: expected keys {sorted(expected)}, got {response}"
                )
                if operation in CREATING:
                    assert response["replyInteractionId"] in self.seen, (
                        f"{agent_id} {request}: answered an unknown id, {response}"
                    )
            else:
                description = response.get("errorDescription")
                assert (
                    set(response) == {"status", "errorDescription"}
                    and response["status"] == "error"
                    and isinstance(description, str)
                    and description.strip()
                ), f"{agent_id} {request}: expected ok or an error with a description: {response}"

    @invariant()
    def the_routers_load_is_the_stores(self) -> None:
        """GET /me answers the leader's indexed load: it must be what the store holds."""
        for agent_id in AGENT:
            indexed = self.h.engine.router.agent_state(agent_id, indexed_load=True)["load"]
            stored = self.h.engine.router.agent_state(agent_id, indexed_load=False)["load"]
            assert indexed == stored, f"{agent_id}: indexed load {indexed}, stored {stored}"

    @invariant()
    def interactions_persist_and_versions_only_grow(self) -> None:
        stored = {i.id: i.version for i in self._rows()}
        assert set(stored) == set(self.versions), (
            f"stored {sorted(stored)}, committed {sorted(self.versions)}"
        )
        for iid, versions in self.versions.items():
            assert versions == sorted(set(versions)), (
                f"{iid}: committed versions should only grow, saw {versions}"
            )
            assert stored[iid] == versions[-1], (
                f"{iid}: stored version {stored[iid]}, last committed {versions[-1]}"
            )

    @invariant()
    def stored_state_is_consistent(self) -> None:
        """As test_simulation checks, extended to drafts and to moves it never makes: refused
        input, delivery failures, customer answers, transfers to an agent, shared workbins."""
        rows = self._rows()
        for i in rows:
            assert i.state in STATES, f"{i.id}: unknown state {i.state!r}"
            assert (i.owner is not None) == (i.state in OWNED_STATES), (
                f"{i.id}: {i.state} with owner {i.owner!r}; owned exactly in {sorted(OWNED_STATES)}"
            )
            assert (i.offer is not None) == (i.state == State.INVITED), (
                f"{i.id}: in {i.state} with offer {i.offer}; an offer exists exactly while Invited"
            )
            assert (i.workbin is not None) == (i.state == State.IN_WORKBIN), (
                f"{i.id}: in {i.state} with workbin {i.workbin!r}; one exactly while InWorkbin"
            )
        loads = self._loads(rows)
        for agent_id in AGENT:
            router = self.h.router.presence(agent_id).load
            stored = loads[agent_id]
            assert router == stored, (
                f"{agent_id}: router counts a load of {router}, the store says {stored}"
            )

    @invariant()
    def entitled_agents_are_notified_of_the_current_state(self) -> None:
        """Members of a shared workbin hear of it on /me/workbins only (the next invariant), so
        of what waits in a workbin only the agent who put it there has a fresh /me/interactions
        message."""
        for agent_id in AGENT:
            latest = self._latest(agent_id, TOPIC_INTERACTIONS, "id")
            for i in self._rows():
                if not self._entitled(agent_id, i):
                    continue
                if i.state == State.IN_WORKBIN and i.last_agent != agent_id:
                    continue
                n = latest.get(i.id)
                assert n is not None, f"{agent_id} may act on {i.id} ({i.state}) but was never told"
                seen = (n["state"], n["capabilities"], n["userData"], n["currentQueue"])
                stored = (
                    i.state,
                    list(lifecycle.capabilities(i.state)),
                    dict(i.user_data),
                    i.current_queue,
                )
                assert seen == stored, (
                    f"{agent_id}'s last message on {i.id} shows (state, capabilities, userData, "
                    f"currentQueue) = {seen}, stored {stored}"
                )
                assert n["agentId"] == i.owner, (
                    f"{agent_id}'s last message on {i.id} names {n['agentId']}, owner is {i.owner}"
                )

    @invariant()
    def workbin_members_hear_of_what_waits_in_their_workbins(self) -> None:
        for agent_id in AGENT:
            latest = self._latest(agent_id, TOPIC_WORKBINS, "interactionId")
            for i in self._rows():
                if i.state != State.IN_WORKBIN or i.workbin not in self.access[agent_id]:
                    continue
                n = latest.get(i.id)
                seen = None if n is None else (n["change"], n["workbinId"], n["state"])
                expected = ("PlaceInWorkbin", i.workbin, State.IN_WORKBIN)
                assert seen == expected, (
                    f"{agent_id} may use workbin {i.workbin} holding {i.id}; its last /me/workbins "
                    f"message on it should be {expected}, got {seen}"
                )

    @invariant()
    def no_one_else_is_offered_capabilities(self) -> None:
        """Leaving a shared workbin is told on /me/workbins: an InWorkbin message may stay last."""
        for agent_id in AGENT:
            latest = self._latest(agent_id, TOPIC_INTERACTIONS, "id")
            for i in self._rows():
                n = latest.get(i.id)
                if n is None or self._entitled(agent_id, i) or n["state"] == State.IN_WORKBIN:
                    continue
                assert n["capabilities"] == [], (
                    f"{agent_id} may not act on {i.id} ({i.state}, owner {i.owner}), yet its last "
                    f"message shows it {n['state']} with capabilities {n['capabilities']}"
                )

    @invariant()
    def agents_read_only_what_they_may_see(self) -> None:
        """Owned, offered, in a workbin the agent may use, or handled last (read-only)."""
        for agent_id in AGENT:
            for i in self._rows():
                may_see = (
                    agent_id in (i.owner, i.last_agent)
                    or (i.offer is not None and i.offer.agent_id == agent_id)
                    or i.workbin in self.access[agent_id]
                )
                try:
                    view = self.h.service.get_interaction(agent_id, i.id)
                except InteractionNotFound:
                    assert not may_see, f"{agent_id} should read {i.id} ({i.state}) but got 404"
                    continue
                assert may_see, (
                    f"{agent_id} reads {i.id} ({i.state}, owner {i.owner}, last agent "
                    f"{i.last_agent}, workbin {i.workbin})"
                )
                expected = (
                    list(lifecycle.capabilities(i.state)) if self._entitled(agent_id, i) else []
                )
                assert (view["state"], view["capabilities"]) == (i.state, expected), (
                    f"{agent_id} reads {i.id} as {view['state']} {view['capabilities']}, "
                    f"expected {i.state} {expected}"
                )

    @invariant()
    def agents_list_only_what_they_hold(self) -> None:
        for agent_id in AGENT:
            listed = sorted(v["id"] for v in self.h.service.list_interactions(agent_id))
            held = sorted(
                i.id
                for i in self._rows()
                if i.owner == agent_id or (i.offer is not None and i.offer.agent_id == agent_id)
            )
            assert listed == held, f"{agent_id} lists {listed}, owns or is offered {held}"

    @invariant()
    def notifications_reach_only_agents_involved(self) -> None:
        for agent_id in AGENT:
            for n in self.h.notifications(agent_id):
                assert agent_id in self.involved[n["id"]], (
                    f"{agent_id} was told about {n['id']}, which only "
                    f"{sorted(self.involved[n['id']])} ever held or handled"
                )
            for n in self.h.messages(agent_id, TOPIC_WORKBINS):
                assert n["workbinId"] in self.access[agent_id], (
                    f"{agent_id} was told about workbin {n['workbinId']}, may use only "
                    f"{sorted(self.access[agent_id])}"
                )

    @invariant()
    def router_offers_go_to_an_agent_who_could_take_them(self) -> None:
        """Ready, under capacity, with the skill; the agent who handled the conversation first."""
        for offer in self.router_offers:
            i = offer.interaction
            assert offer.invitee in offer.could_take or (
                offer.invitee in i.rejected_by and not offer.could_take
            ), (
                f"{i.id} (skill {offer.skill!r}) offered to {offer.invitee}; "
                f"could take it: {sorted(offer.could_take)}"
            )
            preferred = i.preferred_agent
            if preferred in offer.could_take and preferred not in i.rejected_by:
                assert offer.invitee == preferred, (
                    f"{i.id} offered to {offer.invitee}, though {preferred} who handled the "
                    "conversation could take it"
                )

    @invariant()
    def a_refused_offer_goes_to_someone_else_first(self) -> None:
        for offer in self.router_offers:
            i = offer.interaction
            if offer.invitee not in i.rejected_by:
                continue
            others = sorted(offer.could_take - set(i.rejected_by))
            assert not others, (
                f"{i.id} offered again to {offer.invitee}, who rejected it "
                f"(rejected by {i.rejected_by}), while {others} could take it"
            )

    @invariant()
    def routing_never_leaves_work_idle(self) -> None:
        rows = self._rows()
        loads = self._loads(rows)
        for i in rows:
            if i.state not in WAITING_STATES or i.current_queue in {
                *ROUTING.unrouted_queues,
                CONFIG.automatic_queue,
            }:
                continue
            skill = self._skill(i)
            idle = [
                a
                for a in sorted(self.ready)
                if loads[a] < AGENT[a].capacity and (not skill or skill in AGENT[a].skills)
            ]
            assert not idle, (
                f"{i.id} waits in {i.current_queue} ({i.state}, skill {skill!r}) "
                f"while {idle} could take it"
            )

    @invariant()
    def each_send_mails_at_most_once(self) -> None:
        sent = self.h.sent_mail
        message_ids = Counter(m.message_id for m in sent)
        twice = sorted(mid for mid, count in message_ids.items() if count > 1)
        assert not twice, f"Message-IDs should be unique, {twice} went out more than once"
        mailed = Counter(m.interaction_id for m in sent)
        for iid, count in mailed.items():
            assert count <= self.sends[iid], (
                f"{iid} was mailed {count} times after {self.sends[iid]} successful Sends"
            )

    @invariant()
    def sent_mail_is_well_formed(self) -> None:
        for mail in self.h.sent_mail:
            i = self.h.interaction(mail.interaction_id)
            assert mail.to or mail.cc or mail.bcc, f"{i.id} was mailed with no recipient"
            assert mail.message_id == i.email.message_id, (
                f"{i.id} went out as {mail.message_id}, its Message-ID is {i.email.message_id}"
            )
            sender = self.sender.get(mail.message_id)
            assert sender is not None, (
                f"{i.id} went out as {mail.message_id}, a Message-ID no successful Send fixed"
            )
            allowed = {m.casefold() for m in AGENT[sender].mailboxes} | {i.mailbox.casefold()}
            assert mail.from_.addr.casefold() in allowed, (
                f"{sender} sent {i.id} from {mail.from_.addr}, may send only from {sorted(allowed)}"
            )
            headers = [mail.subject] + [
                part
                for a in (mail.from_, *mail.to, *mail.cc, *mail.bcc)
                for part in (a.addr, a.name)
            ]
            assert not any(has_line_break(h) for h in headers), (
                f"{i.id} went out with a line break in a header: {headers}"
            )
            if i.interaction_subtype == SubType.OUTBOUND_REPLY:
                assert i.parent_id is not None, f"reply {i.id} has no parent"
                parent = self.h.interaction(i.parent_id).email.message_id
                assert mail.in_reply_to == parent, (
                    f"reply {i.id} has In-Reply-To {mail.in_reply_to}, its parent is {parent}"
                )


TestLifecycle = Machine.TestCase
