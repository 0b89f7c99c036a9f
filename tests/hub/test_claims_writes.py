"""The hub's own claim holds (a parked or flagged agent) are written behind; a database outage delays them and
never loses them or stops the loop that writes them (a crashed loop stops the hub)."""

from __future__ import annotations

import asyncio

from potluck._shared.clock import ManualClock
from potluck.hub.access import AccessMap
from potluck.hub.accounting import Accounting
from potluck.hub.claims import Change, Claims, ClaimView
from potluck.hub.groups import Groups
from potluck.hub.ledger import Ledger
from potluck.hub.receipts import HubSigner
from potluck.hub.registry import Registry
from potluck.hub.scheduler import Scheduler
from potluck.protocol.accounts import HoldKind, UserRole
from potluck.store.database import Store
from testing.postgres import PostgresServer


async def _discard(txns: object, receipts: object) -> None:
    return None


def _claims(store: Store, clock: ManualClock, access: AccessMap) -> Claims:
    scheduler = Scheduler(clock)
    registry = Registry(scheduler, clock, heartbeat_timeout=1.5, access=access)
    accounting = Accounting(Ledger(_discard), HubSigner.generate(), access, scheduler, clock=clock)
    groups = Groups(store, access, registry, accounting)
    return Claims(store, ClaimView(), access, registry, groups, clock, retry_interval=1.0)


async def test_a_hold_taken_while_the_database_is_down_is_written_once_it_is_back(
    postgres: PostgresServer, postgres_url: str
) -> None:
    store = await Store.open(postgres_url)
    clock = ManualClock()
    access = AccessMap("admin", "default")
    claims = _claims(store, clock, access)
    runner = asyncio.create_task(claims.run())
    try:
        user = await store.users.create("olga", None, UserRole.USER)
        group = await store.groups.create("market", user.id)
        agent = await store.agents.enrol((await store.agents.create_token("t")).token, b"A" * 32, "gpu")

        postgres.halt()
        try:
            claims.hold(group.id, agent.id, "llama", HoldKind.PARKED, "slow")
            async with asyncio.timeout(5):
                while not clock.pending:  # the write failed and a retry is due
                    assert not runner.done(), runner
                    await asyncio.sleep(0.01)
            assert claims.unsaved == 1
        finally:
            postgres.resume()

        clock.advance(1.0)
        async with asyncio.timeout(5):
            while claims.unsaved:
                assert not runner.done(), runner
                await asyncio.sleep(0.01)
        assert [(h.agent_id, h.kind, h.reason) for h in await store.claims.holds()] == [
            (agent.id, HoldKind.PARKED, "slow")
        ]
        # Its owner reads the event from the database; one not written yet is shown too, and only once.
        access.agent_owner = {agent.id: user.id}
        assert [(e.change, e.kind) for e in await claims.events_of(user)] == [(Change.HELD, HoldKind.PARKED)]
        claims.release(group.id, agent.id, "llama", HoldKind.PARKED)
        shown = [(e.change, e.kind) for e in await claims.events_of(user)]
        assert shown == [(Change.LIFTED, HoldKind.PARKED), (Change.HELD, HoldKind.PARKED)]
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await store.close()
