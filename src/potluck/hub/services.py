"""The hub's services, built once by the composition root (app.py) and shared by the adapters."""

from __future__ import annotations

from dataclasses import dataclass

from potluck._shared.clock import Clock
from potluck.hub.access import AccessMap
from potluck.hub.accounting import Accounting
from potluck.hub.accounts import Accounts
from potluck.hub.auth import AdminAuth, KeyCache
from potluck.hub.gate import AgentGate
from potluck.hub.lifecycle import Lifecycle
from potluck.hub.limits import RateLimiter
from potluck.hub.metering import UsageJournal
from potluck.hub.metrics import HubMetrics
from potluck.hub.registry import Registry
from potluck.hub.requests import RequestOwner
from potluck.hub.settings import HubSettings
from potluck.store.database import Store


@dataclass(slots=True)
class HubServices:
    settings: HubSettings
    clock: Clock
    store: Store
    keys: KeyCache
    admin: AdminAuth
    registry: Registry
    requests: RequestOwner
    gate: AgentGate
    lifecycle: Lifecycle
    journal: UsageJournal
    metrics: HubMetrics
    accounts: Accounts
    access: AccessMap
    limiter: RateLimiter
    accounting: Accounting
